"""The demo SR builder (core.demo) checked with other people's tools: pvck lists the generations
it wrote, lvs reports the manifest's maps, qemu-img reads the VHDs taken out of the LV bytes,
and each damage option damages what it says."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

import realtools
from core.demo import DemoManifest, build_demo
from core.scan import scan
from core.source import Evidence
from core.spaces import extent_space

MIB = 1 << 20


@pytest.fixture(scope="module")
def demo_gpt(tmp_path_factory) -> DemoManifest:
    path = str(tmp_path_factory.mktemp("demo") / "gpt-none.img")
    return build_demo(path, damage="none", seed=0, layout="gpt")


@pytest.fixture(scope="module")
def demo_whole(tmp_path_factory) -> DemoManifest:
    path = str(tmp_path_factory.mktemp("demo") / "whole-none.img")
    return build_demo(path, damage="none", seed=3, layout="whole-disk")


def lv_bytes(m: DemoManifest, key: str) -> bytes:
    v = m.vdi(key)
    with open(m.path, "rb") as f:
        out = []
        for pe in v.pes:
            f.seek(m.data_offset + pe * m.extent_bytes)
            out.append(f.read(m.extent_bytes))
    return b"".join(out)


# -- the image -----------------------------------------------------------------------------------
def test_image_is_sparse_and_manifest_complete(demo_gpt):
    st = os.stat(demo_gpt.path)
    assert st.st_size == demo_gpt.image_bytes == 1536 * MIB
    assert st.st_blocks * 512 < 300 * MIB                       # well under 300 MiB of data
    assert demo_gpt.seqnos == list(range(1, len(demo_gpt.seqnos) + 1))
    assert len(demo_gpt.seqnos) >= 50
    assert demo_gpt.pv_offset == MIB and demo_gpt.pe_start == 11 * MIB
    assert demo_gpt.data_offset == 12 * MIB and demo_gpt.mda_size == 11_530_240
    layouts = {v.key: (v.layout, v.disk_type, v.status) for v in demo_gpt.vdis}
    assert layouts["appliance"] == ("qemu", "dynamic", "live")
    assert layouts["scratch"] == ("raw", None, "live")
    assert layouts["vm"] == ("blktap", "differencing", "live")
    assert layouts["backup"][2] == layouts["export"][2] == "deleted"
    export, logs, backup = (demo_gpt.vdi(k) for k in ("export", "logs", "backup"))
    assert set(export.claimed_by) == set(export.pes) & set(logs.pes) != set()
    assert set(export.claimed_by.values()) == {logs.lv_name}
    assert backup.claimed_by == {}
    # grown in turns: the two first VDIs' extents interleave
    web, sql = demo_gpt.vdi("web"), demo_gpt.vdi("sql")
    assert len(web.map) > 1 and len(sql.map) > 1
    assert min(web.pes) < min(sql.pes) < max(web.pes)
    assert demo_gpt.mgt_pes == [0]
    doc = json.loads(json.dumps(demo_gpt.to_json()))
    assert doc["vdis"][0]["sha256"] == demo_gpt.vdis[0].sha256


def test_deterministic_for_a_seed(tmp_path, demo_whole):
    again = build_demo(str(tmp_path / "again.img"), damage="none", seed=3, layout="whole-disk")
    a, b = demo_whole.to_json(), again.to_json()
    a.pop("path"), b.pop("path")
    assert a == b
    for off, n in ((0, 64 * 1024), (demo_whole.data_offset, 8 * MIB)):
        with open(demo_whole.path, "rb") as f1, open(again.path, "rb") as f2:
            f1.seek(off), f2.seek(off)
            assert f1.read(n) == f2.read(n)
    other = build_demo(str(tmp_path / "other.img"), damage="none", seed=4, layout="whole-disk")
    assert other.sr_uuid != demo_whole.sr_uuid


def test_virtual_disk_content_names_vdi_and_sector(demo_gpt):
    data = lv_bytes(demo_gpt, "scratch")
    v = demo_gpt.vdi("scratch")
    assert hashlib.sha256(data).hexdigest() == v.sha256
    sector = data[777 * 512:778 * 512]
    assert sector.startswith(f"install-iso-scratch | VDI {v.vdi_uuid} | sector 0000000777 |".encode())


# -- real tools ----------------------------------------------------------------------------------
@pytest.mark.realtools
def test_pvck_lists_every_generation(demo_whole):
    if not realtools.have("pvck"):
        pytest.skip("lvm2 not installed")
    found = realtools.pvck_generations(demo_whole.path)
    assert [(g["offset"], g["seqno"], int(g["crc"], 16), g["vg"]) for g in found] == \
        [(g.offset, g.seqno, g.checksum, demo_whole.vg_name) for g in demo_whole.generations]


@pytest.mark.realtools
def test_lvs_reports_the_manifest_maps(demo_gpt):
    realtools.need_lvm()
    with realtools.loop_device(demo_gpt.path, offset=demo_gpt.pv_offset,
                               sizelimit=demo_gpt.pv_bytes) as dev:
        maps = realtools.lvs_segments(demo_gpt.vg_name, devices=[dev])
    expected = {v.lv_name: sorted(tuple(r) for r in v.map)
                for v in demo_gpt.vdis if v.status == "live"}
    expected["MGT"] = [(0, 0, 1)]
    assert maps == expected


@pytest.mark.realtools
def test_qemu_img_reads_the_vhds_out_of_the_lvs(demo_gpt, tmp_path):
    realtools.need_qemu_img()
    checked = 0
    for v in demo_gpt.vdis:
        if v.disk_type != "dynamic" or v.claimed_by:
            continue
        vhd = tmp_path / f"{v.key}.vhd"
        vhd.write_bytes(lv_bytes(demo_gpt, v.key)[:v.vhd_bytes])
        raw = tmp_path / f"{v.key}.raw"
        realtools.run("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(raw))
        data = raw.read_bytes()
        assert len(data) == v.virtual_bytes
        if v.stale_sectors:
            # qemu ignores the sector bitmap: it shows the stale bytes the bitmap hides
            arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, 512).copy()
            for first, count in v.stale_sectors:
                assert all(bytes(arr[s]).startswith(b"STALE") for s in range(first, first + count))
                arr[first:first + count] = 0
            data = arr.tobytes()
        assert hashlib.sha256(data).hexdigest() == v.sha256, v.key
        checked += 1
    assert checked >= 5


def test_chain_flattens_to_the_manifest_sha(demo_gpt):
    from core.vhd.reader import VhdImage

    with Evidence(demo_gpt.path) as ev:
        spaces = {k: extent_space(ev, demo_gpt.data_offset, demo_gpt.extent_bytes,
                                  demo_gpt.vdi(k).pes, k) for k in ("golden", "vm")}
        base, child = VhdImage.open(spaces["golden"]), VhdImage.open(spaces["vm"])
        assert base.hidden and child.parent_unique_id == base.unique_id
        assert child.parent_lv_hint == demo_gpt.vdi("golden").lv_name
        disk = child.virtual_space(parent=base.virtual_space())
        h = hashlib.sha256()
        for off in range(0, disk.size, 8 * MIB):
            h.update(disk.read(off, min(8 * MIB, disk.size - off)))
    assert h.hexdigest() == demo_gpt.vdi("vm").sha256


@pytest.mark.realtools
def test_payloads_land_at_their_virtual_offsets(tmp_path):
    realtools.need_qemu_img()
    page = bytes(range(256)) * 32                       # 8 KiB
    payloads = {"sql-server-data": [(5 * MIB + 8192, page), (100 * MIB, b"far away" * 100)]}
    m = build_demo(str(tmp_path / "p.img"), damage="none", seed=1, payloads=payloads)
    v = m.vdi("sql")
    assert 50 in v.allocated_blocks                      # 100 MiB = block 50, allocated for it
    vhd = tmp_path / "sql.vhd"
    vhd.write_bytes(lv_bytes(m, "sql"))
    raw = tmp_path / "sql.raw"
    realtools.run("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(raw))
    data = raw.read_bytes()
    assert data[5 * MIB + 8192:5 * MIB + 16384] == page
    assert data[100 * MIB:100 * MIB + 800] == b"far away" * 100
    assert hashlib.sha256(data).hexdigest() == v.sha256
    with pytest.raises(ValueError, match="not a demo VDI"):
        build_demo(str(tmp_path / "q.img"), payloads={"nope": [(0, b"x")]})


@pytest.mark.realtools
def test_small_ring_wraps_like_lvm2(tmp_path):
    if not realtools.have("pvck"):
        pytest.skip("lvm2 not installed")
    m = build_demo(str(tmp_path / "ring.img"), damage="none", seed=2, layout="whole-disk",
                   mda_size=96 * 1024, attach_cycles=30)
    assert any(g.wrapped for g in m.generations)
    assert not m.generations[0].intact
    found = {(g["offset"], g["seqno"], int(g["crc"], 16)) for g in realtools.pvck_generations(m.path)}
    intact = {(g.offset, g.seqno, g.checksum) for g in m.generations if g.intact}
    assert intact <= found                       # every surviving copy, wrapped ones included
    assert any(g.wrapped and (g.offset, g.seqno, g.checksum) in found for g in m.generations)
    assert max(s for _, s, _ in found) == m.seqnos[-1]


# -- damage --------------------------------------------------------------------------------------
def _read(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def test_partition_table_damage(tmp_path, demo_gpt):
    m = build_demo(str(tmp_path / "pt.img"), seed=0)            # the default damage
    assert m.damage == ["partition-table"]
    assert _read(m.path, 0, 34 * 512) == bytes(34 * 512)
    assert _read(m.path, m.image_bytes - 33 * 512, 33 * 512) == bytes(33 * 512)
    assert _read(demo_gpt.path, 512, 8) == b"EFI PART"          # undamaged twin has it
    with Evidence(m.path) as ev:
        res = scan(ev, ["mbr", "gpt-header", "lvm-label", "lvm-mda-header"])
    assert [(f.kind, f.offset, f.valid) for f in res.findings] == [
        ("lvm-label", m.pv_offset + 512, True), ("lvm-mda-header", m.pv_offset + 4096, True)]
    assert res.findings[0].details["pv_uuid"] == m.pv_uuid


@pytest.mark.realtools
def test_label_damage(tmp_path):
    realtools.need_lvm()
    m = build_demo(str(tmp_path / "label.img"), damage="label", seed=0, layout="whole-disk")
    assert _read(m.path, 512, 512) == bytes(512)
    assert realtools.pvck_generations(m.path) == []             # pvck needs the label ...
    found = realtools.pvck_generations(
        m.path, settings=f"mda_offset=4096 mda_size={m.mda_size}")  # ... unless told where
    assert [g["seqno"] for g in found] == m.seqnos
    with realtools.loop_device(m.path) as dev:
        out = realtools.lvm("pvs", "--noheadings", "-o", "pv_name", devices=[dev], check=False)
    assert dev not in out.stdout


def test_metadata_damage(tmp_path):
    m = build_demo(str(tmp_path / "md.img"), damage=["metadata", "label"], seed=0)
    assert m.damage == ["metadata", "label"]
    ring_end = max(g.offset + g.bytes for g in m.generations)
    assert _read(m.path, m.mda_offset, ring_end - m.mda_offset) == bytes(ring_end - m.mda_offset)
    with Evidence(m.path) as ev:
        res = scan(ev)
    kinds = {f.kind for f in res.findings}
    assert not kinds & {"lvm-label", "lvm-mda-header", "lvm-metadata"}
    assert {"vhd-header", "vhd-footer", "xen-mgt", "gpt-header"} <= kinds   # VHDs survive


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown damage"):
        build_demo(str(tmp_path / "a.img"), damage="fire")
    with pytest.raises(ValueError, match="needs layout 'gpt'"):
        build_demo(str(tmp_path / "b.img"), damage="partition-table", layout="whole-disk")
    with pytest.raises(ValueError, match="unknown layout"):
        build_demo(str(tmp_path / "c.img"), layout="floppy")
    from core.errors import UnsafeError
    (tmp_path / "exists.img").write_bytes(b"x")
    with pytest.raises(UnsafeError):
        build_demo(str(tmp_path / "exists.img"))
    assert (tmp_path / "exists.img").read_bytes() == b"x"
