"""The structure kinds (core.scan_kinds) on what other people's tools wrote: real lvm2 PVs,
qemu-img VHDs, sgdisk GPTs and the shared fixtures; plus garbage thrown at every verify."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import pytest
from hypothesis import given, settings, strategies as st

import realtools
from conftest import fixture_bytes
from core.scan import available_kinds, scan
from core.source import Evidence

MY_KINDS = ("mbr", "gpt-header", "lvm-label", "lvm-mda-header", "lvm-metadata", "vhd-footer",
            "vhd-header", "vhd-batmap", "xen-mgt")


def kinds_of(result, name):
    return [f for f in result.findings if f.kind == name]


def write_fixture(tmp_path, relative):
    data = fixture_bytes(relative)
    path = tmp_path / os.path.basename(relative).removesuffix(".gz")
    path.write_bytes(data)
    return str(path)


# -- shared fixtures ---------------------------------------------------------------------------
def test_gpt_disk_with_pv_fixture(tmp_path):
    path = write_fixture(tmp_path, "lvm/derived/lvm2.vhdx.disk_first_2MiB.bin.gz")
    with Evidence(path) as ev:
        res = scan(ev)
    (mbr,) = kinds_of(res, "mbr")
    assert mbr.offset == 0 and mbr.valid and mbr.details["protective"]
    (gpt,) = kinds_of(res, "gpt-header")
    assert gpt.offset == 512 and gpt.valid and gpt.details["entries_crc_ok"]
    assert gpt.details["partitions"][0]["type"] == "lvm"
    assert gpt.details["partitions"][0]["start"] == 1048576
    (label,) = kinds_of(res, "lvm-label")
    assert (label.offset, label.valid) == (1048576 + 512, True)
    assert label.details["pv_start"] == 1048576
    assert label.details["pv_uuid"] == "ggfWay-APBB-AUzO-N4Ix-qTdx-vOh1-k09QQs"
    (mda,) = kinds_of(res, "lvm-mda-header")
    assert (mda.offset, mda.valid, mda.details["pv_start"]) == (1048576 + 4096, True, 1048576)
    meta = kinds_of(res, "lvm-metadata")
    assert sorted(m.details["seqno"] for m in meta) == list(range(1, 19))  # PROVENANCE: 18 generations
    assert {m.details["vg"] for m in meta} == {"test"}
    committed = [m for m in meta if m.details.get("slot") == "committed"]
    assert len(committed) == 1 and committed[0].details["seqno"] == 18
    assert committed[0].details["crc_ok"] is True
    assert all(m.offset % 512 == 0 and m.valid for m in meta)


def test_lvm_fixture_generations(tmp_path):
    path = write_fixture(tmp_path, "lvm/derived/lvmtest.qcow2.raw.gz")
    with Evidence(path) as ev:
        res = scan(ev, ["lvm-label", "lvm-mda-header", "lvm-metadata"])
    assert [(f.kind, f.offset) for f in res.findings[:2]] == [("lvm-label", 512),
                                                              ("lvm-mda-header", 4096)]
    meta = kinds_of(res, "lvm-metadata")
    assert [(m.details["vg"], m.details["seqno"]) for m in meta] == [("vg_test", 1), ("vg_test", 2),
                                                                     ("vg_test", 3)]
    assert meta[-1].details["crc_ok"] is True and meta[-1].details["lv_count"] == 2


def test_vhd_fixtures(tmp_path):
    good = write_fixture(tmp_path, "vhd/dfvfs/ext2.vhd.gz")
    with Evidence(good) as ev:
        res = scan(ev)
    assert [(f.kind, f.offset, f.valid) for f in res.findings] == [
        ("vhd-footer", 0, True), ("vhd-header", 512, True), ("vhd-footer", 2099712, True)]
    assert {f.details["unique_id"] for f in res.findings} == {"b61f53ca-a786-4528-90e2-55ba791a1c4c"}
    assert res.findings[0].details["creator"] == "qemu"
    assert res.findings[0].details["current_size"] == 4212736
    # PROVENANCE: the footer uuid was hand-edited without fixing the checksum -> invalid
    bad = write_fixture(tmp_path, "vhd/dfvfs/image.vhd.gz")
    with Evidence(bad) as ev:
        res = scan(ev, ["vhd-footer"])
    assert res.findings and not any(f.valid for f in res.findings)
    assert all(f.details["checksum_ok"] is False for f in res.findings)


def test_mbr_fixture_with_extended_partition(tmp_path):
    path = write_fixture(tmp_path, "mbr_gpt/dfvfs/tsk_volume_system.raw.gz")
    with Evidence(path) as ev:
        res = scan(ev, ["mbr"])
    first = res.findings[0]
    assert first.offset == 0 and first.valid and first.details["extended"]
    assert [p["type"] for p in first.details["partitions"]] == ["0x83", "0x05"]
    # PROVENANCE: the EBR of the logical partition sits at LBA 351
    assert 351 * 512 in [f.offset for f in res.findings]


# -- real tools --------------------------------------------------------------------------------
@pytest.mark.realtools
def test_real_lvm2_pv_at_an_offset(tmp_path):
    realtools.need_lvm()
    path = str(tmp_path / "disk.img")
    pv_off = 3 << 20
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    vg = f"VG_XenStorage-{uuid.uuid4()}"
    with realtools.loop_device(path, offset=pv_off) as dev:
        realtools.lvm("pvcreate", "-y", dev, devices=[dev])
        realtools.lvm("vgcreate", "-s", "4M", vg, dev, devices=[dev])
        realtools.lvm("lvcreate", "-L", "4M", "-n", "MGT", vg, devices=[dev])
        realtools.lvm("lvcreate", "-L", "8M", "-n", f"VHD-{uuid.uuid4()}", vg, devices=[dev])
        realtools.lvm("lvcreate", "-L", "4M", "-n", "LV-x", vg, devices=[dev])
        realtools.lvm("lvremove", f"{vg}/LV-x", devices=[dev])
        pv_uuid = realtools.lvm("pvs", "--noheadings", "-o", "pv_uuid", dev,
                                devices=[dev]).stdout.strip()
        gens = realtools.pvck_generations(dev)
    assert len(gens) >= 5
    with Evidence(path) as ev:
        res = scan(ev)
    (label,) = kinds_of(res, "lvm-label")
    assert (label.offset, label.valid, label.details["pv_uuid"]) == (pv_off + 512, True, pv_uuid)
    (mda,) = kinds_of(res, "lvm-mda-header")
    assert (mda.offset, mda.valid) == (pv_off + 4096, True)
    meta = kinds_of(res, "lvm-metadata")
    assert sorted((m.offset, m.details["seqno"], m.details["crc"]) for m in meta) == \
        sorted((pv_off + g["offset"], g["seqno"], g["crc"]) for g in gens)
    assert all(m.details["vg"] == vg and m.valid for m in meta)
    newest = max(meta, key=lambda m: m.details["seqno"])
    assert newest.details["slot"] == "committed" and newest.details["crc_ok"] is True


@pytest.mark.realtools
def test_qemu_vhd_at_an_odd_sector_offset(tmp_path):
    realtools.need_qemu_img()
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(1 << 20) + bytes(2 << 20) + b"x" * (1 << 20))
    vhd = tmp_path / "disk.vhd"
    realtools.run("qemu-img", "convert", "-f", "raw", "-O", "vpc", str(raw), str(vhd))
    blob = vhd.read_bytes()
    info = realtools.run("qemu-img", "info", "--output=json", str(vhd)).stdout
    virtual = int(re.search(r'"virtual-size": (\d+)', info).group(1))
    base = (5 << 20) + 7 * 512
    img = tmp_path / "img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
        f.seek(base)
        f.write(blob)
    with Evidence(str(img)) as ev:
        res = scan(ev, ["vhd-footer", "vhd-header", "vhd-batmap"])
    assert [(f.kind, f.offset) for f in res.findings] == [
        ("vhd-footer", base), ("vhd-header", base + 512), ("vhd-footer", base + len(blob) - 512)]
    assert all(f.valid for f in res.findings)
    assert res.findings[0].details["header_follows"] and not res.findings[2].details["header_follows"]
    assert res.findings[1].details["vhd_start"] == base
    assert len({f.details["unique_id"] for f in res.findings}) == 1
    assert res.findings[1].details["current_size"] in (virtual, (4 << 20))
    assert res.findings[0].details["creator"] == "qemu"


@pytest.mark.realtools
def test_sgdisk_gpt(tmp_path):
    if not shutil.which("sgdisk"):
        pytest.skip("sgdisk not installed (apt-get install gdisk)")
    path = str(tmp_path / "gpt.img")
    with open(path, "wb") as f:
        f.truncate(32 << 20)
    realtools.run("sgdisk", "-n", "1:2048:0", "-t", "1:8E00", "-c", "1:sr", path)
    out = realtools.run("sgdisk", "-p", path).stdout
    guid = re.search(r"Disk identifier \(GUID\): (\S+)", out).group(1).lower()
    with Evidence(path) as ev:
        res = scan(ev, ["mbr", "gpt-header"])
    mbr, primary, backup = res.findings
    assert (mbr.kind, mbr.offset, mbr.details["protective"]) == ("mbr", 0, True)
    assert (primary.kind, primary.offset, primary.valid) == ("gpt-header", 512, True)
    assert (backup.kind, backup.offset, backup.valid) == ("gpt-header", (32 << 20) - 512, True)
    assert backup.details["backup"] and not primary.details["backup"]
    assert primary.details["disk_guid"] == backup.details["disk_guid"] == guid
    part = primary.details["partitions"][0]
    assert (part["type"], part["first_lba"], part["start"], part["name"]) == ("lvm", 2048, 1 << 20, "sr")


# -- garbage -----------------------------------------------------------------------------------
def _magic_kinds():
    reg = available_kinds()
    return [reg[n] for n in MY_KINDS if n in reg]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_verify_never_raises_on_garbage(data):
    kinds = _magic_kinds()
    kind = data.draw(st.sampled_from(kinds))
    body = bytearray(data.draw(st.binary(min_size=0, max_size=kind.length + 600)))
    if kind.magic is not None and len(body) >= kind.magic_offset + len(kind.magic):
        body[kind.magic_offset:kind.magic_offset + len(kind.magic)] = kind.magic
    elif kind.name == "lvm-metadata":
        body = bytearray(b'vg0 {\nid = "abcdef-abcd-abcd-abcd-abcd-abcd-abcdef"\nseqno = 3\n') + body
    offset = data.draw(st.integers(0, 1 << 40)) // 512 * 512
    blob = bytes(body)

    def read(off, n):
        rel = off - offset
        if rel < 0 or n < 0:
            return bytes(max(n, 0))
        return blob[rel:rel + n]

    verdict = kind.verify(blob[:kind.length], offset, read)   # no try: must not raise
    if verdict is not None:
        assert isinstance(verdict.valid, bool) and verdict.length >= 0
        json.dumps(verdict.details)


def test_registered_kinds_are_mine_and_present():
    reg = available_kinds()
    missing = [n for n in MY_KINDS if n not in reg]
    assert not missing, missing
    for n in MY_KINDS:
        assert reg[n].group == "structure" and reg[n].default


def test_real_structures_across_window_edges(tmp_path):
    """A VHD whose footer copy ends a window and whose header starts the next, and LVM text
    copies cut by window edges: each found once, at its offset, and verified whole."""
    vhd = fixture_bytes("vhd/dfvfs/ext2.vhd.gz")
    pv = fixture_bytes("lvm/derived/lvmtest.qcow2.raw.gz")[:2 << 20]
    window = 1 << 20
    vhd_at = window - 512
    pv_at = 4 * window - 4608 - 512          # the first text copy starts 512 B before an edge
    img = bytearray(pv_at + len(pv))
    img[vhd_at:vhd_at + len(vhd)] = vhd
    img[pv_at:pv_at + len(pv)] = pv
    path = tmp_path / "edges.img"
    path.write_bytes(bytes(img))
    with Evidence(str(path)) as ev:
        small = scan(ev, window=window)
        whole = scan(ev, window=64 << 20)
    assert [(f.kind, f.offset, f.valid, f.details) for f in small.findings] == \
        [(f.kind, f.offset, f.valid, f.details) for f in whole.findings]
    got = [(f.kind, f.offset) for f in small.findings]
    assert ("vhd-footer", vhd_at) in got and ("vhd-header", vhd_at + 512) in got
    meta = [f for f in small.findings if f.kind == "lvm-metadata"]
    assert [m.offset - pv_at for m in meta] == [4608, 5632, 6656] and all(m.valid for m in meta)


_MAGICS = [b"conectix", b"cxsparse", b"tdbatmap", b"LABELONE\x01" + bytes(15) + b"LVM2 001",
           b"\0\0\0\0 LVM2 x[5A%r0N*>\x01\0\0\0", b"EFI PART\0\0\x01\0\x5c\0\0\0", b"XSSM:4096      :1:2",
           b'vg0 {\nid = "abcdef-abcd-abcd-abcd-abcd-abcd-abcdef"\nseqno = 7\n']


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=0, max_size=20000),
       st.lists(st.tuples(st.integers(0, 39), st.sampled_from(_MAGICS)), max_size=10),
       st.sampled_from([4096, 8192]))
def test_scan_of_garbage_with_real_kinds(tmp_path_factory, blob, spots, window):
    """Random bytes with real magics planted at sector starts: the whole scan (every default
    kind, post-scan links included) returns sorted, JSON-serialisable findings, never raises."""
    buf = bytearray(blob)
    for sector, magic in spots:
        off = sector * 512
        if off + len(magic) <= len(buf):
            buf[off:off + len(magic)] = magic
        if off + 512 <= len(buf) and magic.startswith(b"\0\0\0\0 LVM2"):
            buf[off + 510:off + 512] = b"\x55\xaa"
    path = tmp_path_factory.mktemp("garbage") / "g.img"
    path.write_bytes(bytes(buf))
    with Evidence(str(path)) as ev:
        res = scan(ev, window=window)
    offsets = [f.offset for f in res.findings]
    assert offsets == sorted(offsets)
    mine = [f for f in res.findings if f.kind in MY_KINDS]
    assert all("error" not in f.details for f in mine), \
        [f.details["error"] for f in mine if "error" in f.details]
    json.dumps(res.to_json(str(path)))
