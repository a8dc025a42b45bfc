"""The shared LVM and MBR/GPT fixtures parse with the values their PROVENANCE.md documents."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

import realtools
from conftest import fixture_bytes
from core.lvm.analyse import analyse_disk
from core.partitions import read_partition_table
from core.source import Evidence
from core.spaces import BytesSpace
from core.structs.gpt import gpt_crc32, gpt_header


def analyse_fixture(fixture_file, rel):
    path = fixture_file(rel)
    with Evidence(str(path)) as ev:
        return path, analyse_disk(ev)


def segments(gen):
    return {name: len(lv.segments) for name, lv in gen.lvs.items()}


def test_dfvfs_lvm_raw(fixture_file):
    path, rep = analyse_fixture(fixture_file, "lvm/derived/lvm.qcow2.raw.gz")
    assert [vg.name for vg in rep.volume_groups] == ["test_volume_group"]
    vg = rep.volume_groups[0]
    assert [g.seqno for g in vg.generations] == [2, 1]
    assert vg.current is vg.generations[0] and vg.current.crc_ok
    lv = vg.current.lvs["test_logical_volume"]
    assert lv.le_count * vg.extent_bytes == 4 << 20 and lv.map_runs == [[0, 0, 1]]
    assert vg.pvs[0].offset == 0 and vg.pvs[0].label_found
    assert "2.03.06" in vg.current.text.decode()


def test_dfvfs_lvmtest_raw(fixture_file):
    path, rep = analyse_fixture(fixture_file, "lvm/derived/lvmtest.qcow2.raw.gz")
    vg = rep.volume_groups[0]
    assert vg.name == "vg_test"
    assert [g.seqno for g in vg.generations] == [3, 2, 1]
    cur = vg.current
    assert {n: lv.le_count for n, lv in cur.lvs.items()} == {"lv_test1": 2, "lv_test2": 1}
    assert "2.02.116" in cur.text.decode()


@pytest.mark.parametrize("rel,pv_offset", [
    ("lvm/derived/lvm2.vhdx.pv_first_1MiB.bin.gz", 0),
    ("lvm/derived/lvm2.vhdx.disk_first_2MiB.bin.gz", 1 << 20),
])
def test_discutils_lvm2_eighteen_generations(fixture_file, rel, pv_offset):
    path, rep = analyse_fixture(fixture_file, rel)
    vg = rep.volume_groups[0]
    assert vg.name == "test"
    assert [g.seqno for g in vg.generations] == list(range(18, 0, -1))
    assert all(g.crc_ok for g in vg.generations)
    assert vg.current.seqno == 18
    assert segments(vg.current) == {"vol01": 2, "fat": 3, "ntfs": 2}
    assert vg.pvs[0].offset == pv_offset and vg.pvs[0].pe_start == 1 << 20
    assert vg.data_offset == pv_offset + (1 << 20)
    assert "2.02.98" in vg.current.text.decode()
    # LVs that existed in older generations and not in the newest are deleted
    deleted = {lv.name for g in vg.generations for lv in g.lvs.values() if lv.status == "deleted"}
    assert deleted and not deleted & set(vg.current.lvs)
    if pv_offset:
        assert [(p.index, p.scheme, p.offset, p.type) for p in rep.partitions] == \
            [(1, "gpt", 1 << 20, "lvm")]
        assert rep.partitions[0].bytes == (20971486 - 2048 + 1) * 512
    if realtools.have("pvck"):
        pv_file = path
        if pv_offset:   # pvck wants the PV itself: cut the partition out
            pv_file = path.with_suffix(".pv")
            pv_file.write_bytes(path.read_bytes()[pv_offset:])
        truth = {(c["offset"] + pv_offset, c["seqno"]) for c in realtools.pvck_generations(str(pv_file))}
        ours = {(c.offset, g.seqno) for g in vg.generations for c in g.copies}
        assert truth == ours


def test_gpt_fixture_crcs():
    data = fixture_bytes("lvm/derived/lvm2.vhdx.disk_first_2MiB.bin.gz")
    hdr = gpt_header.parse(data[512:1024])
    check = bytearray(data[512:512 + hdr.size])
    check[16:20] = bytes(4)
    assert gpt_crc32(bytes(check)) == hdr.crc32
    array = data[hdr.partition_entry_lba * 512:][: hdr.npartition_entries * hdr.sizeof_partition_entry]
    assert gpt_crc32(array) == hdr.partition_entry_array_crc32
    table = read_partition_table(BytesSpace(data))
    assert table.scheme == "gpt"
    assert table.details["primary_header_crc_ok"] and table.details["primary_array_crc_ok"]
    assert table.partitions[0].details["type_guid"] == "e6d6d379-f507-44c2-a23c-238f2a3df928"
    assert table.partitions[0].name == "Linux LVM"


def _mbr_image(rel: str) -> bytes:
    data = fixture_bytes(rel)
    return data


def test_mbr_fixture_tsk_volume_system():
    t = read_partition_table(BytesSpace(fixture_bytes("mbr_gpt/dfvfs/tsk_volume_system.raw.gz")))
    assert t.scheme == "mbr"
    assert [(p.index, p.offset // 512, p.bytes // 512, p.type) for p in t.partitions] == \
        [(1, 1, 350, "0x83"), (5, 352, 2528, "0x83")]
    assert t.partitions[1].details["ebr"] == 351 * 512


def test_mbr_fixture_dfvfs_mbr():
    import gzip
    data = fixture_bytes("mbr_gpt/dfvfs/mbr.raw.gz")
    if data[:2] == b"\x1f\x8b":  # stored as the upstream .gz: the image is inside
        data = gzip.decompress(data)
    assert len(data) == 4 << 20
    t = read_partition_table(BytesSpace(data))
    assert [(p.index, p.offset // 512, p.bytes // 512, p.type) for p in t.partitions] == \
        [(1, 1, 129, "0x83"), (5, 131, 129, "0x83")]
    assert t.partitions[1].details["ebr"] == 130 * 512


def test_cli_json_on_fixture(fixture_file):
    from app.cli import main
    path = fixture_file("lvm/derived/lvm2.vhdx.disk_first_2MiB.bin.gz")
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["lvm", str(path), "--json"]) == 0
    doc = json.loads(buf.getvalue())
    assert doc["image"] == {"path": str(path), "bytes": 2 << 20}
    assert doc["partitions"] == [{"index": 1, "scheme": "gpt", "offset": 1 << 20,
                                  "bytes": (20971486 - 2048 + 1) * 512, "type": "lvm"}]
    vg = doc["volume_groups"][0]
    assert vg["name"] == "test" and vg["sr_uuid"] is None and vg["extent_bytes"] == 4 << 20
    assert vg["data_offset"] == 2 << 20
    assert vg["pvs"][0]["offset"] == 1 << 20 and vg["pvs"][0]["label_found"] is True
    gens = vg["generations"]
    assert [g["seqno"] for g in gens] == list(range(18, 0, -1))
    assert [g["current"] for g in gens] == [True] + [False] * 17
    g18 = gens[0]
    assert g18["source"] == "mda" and g18["crc_ok"] is True
    assert g18["copies"][0]["slot"] == "committed"
    lvs = {lv["name"]: lv for lv in g18["logical_volumes"]}
    assert lvs["vol01"]["map"] == [[0, 0, 256], [256, 512, 50]]
    assert lvs["vol01"]["kind"] == "other" and lvs["vol01"]["vdi_uuid"] is None
    old = [lv for g in gens for lv in g["logical_volumes"] if lv["status"] == "deleted"]
    assert old and all(isinstance(k, str) for lv in old for k in lv["claimed_by"])
    assert any(lv["claimed_by"] for lv in old)
