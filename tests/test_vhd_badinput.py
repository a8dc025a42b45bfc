"""Bad input: truncated VHDs, BAT entries past the end or into metadata, max_table_entries of
2^32-1, block sizes that are not powers of two, garbage: findings and one-line errors, with
bounded memory and time."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import SrsalvageError
from core.spaces import BytesSpace
from core.structs import vhd as S
from core.vhd.build import blktap_parent, build_vhd
from core.vhd.checks import check_vhd
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdError, VhdImage
from core.vhd.repair import plan_repair

MIB = 1 << 20
FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_rng = np.random.default_rng(21)
SMALL_QEMU = build_vhd(3 * 2 * MIB, {0: _rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
                                     2: b"tail" * 256}, layout="qemu").data
PARTIAL = np.zeros(4096, dtype=bool)
PARTIAL[3:40] = True
SMALL_TAP = build_vhd(2 * 2 * MIB, {1: (b"\x5a" * (2 * MIB), PARTIAL)}, layout="blktap",
                      max_entries=64).data

SMALL_CHILD = build_vhd(2 * 2 * MIB, {0: (b"\x11" * (2 * MIB), PARTIAL)}, layout="blktap",
                        max_entries=64,
                        parent=blktap_parent("3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
                                             "VHD-0b7e4c62-93a5-4c0e-9a47-5f0d0c4b3f11",
                                             bytes(range(16)))).data


@FAST
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=16))
def test_corrupted_differencing_header_and_locators(flips):
    data = bytearray(SMALL_CHILD)
    for pos, val in flips:
        data[512 + pos % 4096] = val     # dynamic header, locator table, BAT, batmap, locators
    _exercise(bytes(data))


def _patch_header(data: bytes, **fields) -> bytes:
    hdr = S.parse_header(data[512:1536])
    d = {k: v for k, v in hdr.items() if not k.startswith("_")}
    d.update(fields)
    d["loc"] = [dict((k, v) for k, v in l.items() if not k.startswith("_")) for l in d["loc"]]
    return data[:512] + S.build_header(**d) + data[1536:]


def _exercise(data: bytes) -> None:
    """Open, check, and read a bounded part of the virtual disk: only VhdError may escape."""
    try:
        img = VhdImage.open(BytesSpace(data))
    except VhdError as exc:
        assert "\n" not in str(exc)
        return
    findings = check_vhd(img, find_parent=lambda uid: None)
    assert all(f.kind.startswith("vhd-") for f in findings)
    plan = plan_repair(img)                      # repairs plan over garbage: bounded, no crash
    assert len(plan.footer) == 512
    try:
        vs = img.virtual_space()
    except VhdError:
        return
    for off in (0, max(0, vs.size - 4096), vs.size // 2):
        vs.read(off, 8192)


@FAST
@given(st.integers(min_value=0, max_value=len(SMALL_QEMU)))
def test_truncated_qemu_vhd(cut):
    _exercise(SMALL_QEMU[:cut])


@FAST
@given(st.integers(min_value=0, max_value=len(SMALL_TAP)))
def test_truncated_blktap_vhd(cut):
    _exercise(SMALL_TAP[:cut])


@FAST
@given(st.lists(st.tuples(st.integers(0, 4 * 4096), st.integers(0, 255)), max_size=24))
def test_corrupted_metadata_bytes(flips):
    data = bytearray(SMALL_TAP[:5 * 4096] + SMALL_TAP[5 * 4096:])
    for pos, val in flips:
        data[pos % len(data)] = val
    _exercise(bytes(data))
    tail = bytearray(SMALL_QEMU)
    for pos, val in flips:
        tail[-1 - pos % 600] = val
    _exercise(bytes(tail))


@FAST
@given(st.binary(min_size=0, max_size=4096))
def test_garbage_is_a_one_line_error(blob):
    _exercise(blob)
    _exercise(blob + SMALL_QEMU[-512:])  # a valid-looking footer over garbage


@FAST
@given(st.lists(st.integers(0, 0xFFFFFFFF), min_size=3, max_size=3))
def test_random_bat_entries_give_findings_and_bounded_reads(entries):
    data = bytearray(SMALL_QEMU)
    for i, e in enumerate(entries):
        data[1536 + 4 * i:1540 + 4 * i] = e.to_bytes(4, "big")
    img = VhdImage.open(BytesSpace(bytes(data)))
    findings = check_vhd(img)
    ok_sector = 4
    for e in entries:
        if e != S.DD_BLK_UNUSED and e < ok_sector:
            assert "vhd-bat-entry-in-metadata" in {f.kind for f in findings}
        if e != S.DD_BLK_UNUSED and e * 512 > len(data):
            assert "vhd-bat-entry-past-end" in {f.kind for f in findings}
    img.virtual_space().read(0, 6 * MIB)


def test_max_table_entries_2_32_minus_1_does_not_allocate_16_gib():
    data = _patch_header(SMALL_QEMU, max_bat_size=0xFFFFFFFF)
    tracemalloc.start()
    try:
        img = VhdImage.open(BytesSpace(data))
        findings = check_vhd(img)
        img.virtual_space().read(0, 4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * MIB
    assert len(img.bat) == 3                     # capped to what current_size needs
    assert img.bat_entries_declared == 0xFFFFFFFF
    assert not any(f.kind == "vhd-size-exceeds-bat" for f in findings)


def test_huge_current_size_with_huge_table_is_capped():
    footer = S.parse_footer(SMALL_QEMU[-512:])
    fd = {k: v for k, v in footer.items() if not k.startswith("_")}
    fd["curr_size"] = fd["orig_size"] = 1 << 60
    fd["crtr_app"] = b"tap\0"
    new_footer = S.build_footer(**fd)
    data = _patch_header(new_footer + SMALL_QEMU[512:-512] + new_footer, max_bat_size=0xFFFFFFFF)
    tracemalloc.start()
    try:
        img = VhdImage.open(BytesSpace(data))
        findings = check_vhd(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MIB
    kinds = {f.kind for f in findings}
    assert "vhd-size-implausible" in kinds
    assert kinds & {"vhd-bat-capped", "vhd-truncated"}
    with pytest.raises(SrsalvageError):
        export_raw(img, "/nonexistent-dir-never-created/x.raw")


@pytest.mark.parametrize("block_size,kind", [(3 * MIB, "vhd-block-size-not-power-of-two"),
                                             (1000, "vhd-block-size"),
                                             (0, "vhd-block-size")])
def test_block_size_not_a_power_of_two(block_size, kind, tmp_path):
    data = _patch_header(SMALL_QEMU, block_size=block_size)
    img = VhdImage.open(BytesSpace(data))
    assert kind in {f.kind for f in check_vhd(img)}
    if block_size % 512 or block_size == 0:
        with pytest.raises(VhdError):
            img.virtual_space()
        with pytest.raises(SrsalvageError):
            export_raw(img, str(tmp_path / "x.raw"))
    else:
        img.virtual_space().read(0, 4096)  # still readable, reported


def test_no_footer_anywhere_is_a_clear_error():
    with pytest.raises(VhdError, match="no VHD footer"):
        VhdImage.open(BytesSpace(bytes(64 * 1024)))
    with pytest.raises(VhdError, match="too small"):
        VhdImage.open(BytesSpace(b"conectix"))


def test_header_cookie_damaged_makes_image_unusable_with_finding(tmp_path):
    data = bytearray(SMALL_QEMU)
    data[512:520] = b"XXXXXXXX"
    img = VhdImage.open(BytesSpace(bytes(data)))          # only the header: rebuilt
    assert {"vhd-header-cookie", "vhd-header-rebuilt"} <= {f.kind for f in check_vhd(img)}
    assert img.usable
    data[1536:1540] = (1).to_bytes(4, "big")              # and a BAT that contradicts the layout
    img = VhdImage.open(BytesSpace(bytes(data)))
    kinds = {f.kind for f in check_vhd(img)}
    assert "vhd-header-cookie" in kinds and "vhd-header-rebuilt" not in kinds
    with pytest.raises(VhdError):
        img.virtual_space()
    with pytest.raises(VhdError):
        export_vhd(img, str(tmp_path / "y.vhd"))


# -- exports of damaged headers: bounded output, never a VHD other tools reject ------------------
def _virtual(data: bytes) -> bytes:
    return VhdImage.open(BytesSpace(data)).virtual_space().read(0, 3 * 2 * MIB)


@pytest.mark.parametrize("base", ["qemu", "tap"])
def test_export_with_max_table_entries_2_32_minus_1_is_bounded_and_valid(base, tmp_path):
    """The table the header declares would be 16 GiB: the VHD export used to write all of it
    (minutes, then ENOSPC); raw export lost every block (all were 'in the metadata')."""
    good = SMALL_QEMU if base == "qemu" else SMALL_TAP
    data = _patch_header(good, max_bat_size=0xFFFFFFFF)
    img = VhdImage.open(BytesSpace(data))
    r = export_raw(img, str(tmp_path / "x.raw"))
    assert (tmp_path / "x.raw").read_bytes() == _virtual(good)[:r.bytes] and r.unrepaired == []
    out = tmp_path / "x.vhd"
    rv = export_vhd(img, str(out))
    assert out.stat().st_size <= len(data)
    assert any("max table entries 4294967295" in x for x in rv.repairs)
    again = VhdImage.open(BytesSpace(out.read_bytes()))
    assert again.bat_entries_declared == len(img.bat)
    assert not [f for f in check_vhd(again) if f.severity == "error"]
    assert _virtual(out.read_bytes()) == _virtual(good)


def test_export_with_table_offset_past_the_end_is_refused_or_warned(tmp_path):
    data = _patch_header(SMALL_QEMU, table_offset=1 << 62)
    img = VhdImage.open(BytesSpace(data))
    with pytest.raises(VhdError, match="past the end"):
        export_vhd(img, str(tmp_path / "x.vhd"))
    assert not (tmp_path / "x.vhd").exists() and not (tmp_path / "x.vhd.part").exists()
    r = export_raw(img, str(tmp_path / "x.raw"))          # zeros, but said, not silent
    assert any("only 0 of the 3 BAT entries" in u for u in r.unrepaired)


def test_export_vhd_of_an_unusable_block_size_is_refused(tmp_path):
    """A checksum recomputed over a header with a block size of 1000 bytes is not a repair."""
    img = VhdImage.open(BytesSpace(_patch_header(SMALL_QEMU, block_size=1000)))
    with pytest.raises(VhdError, match="too damaged"):
        export_vhd(img, str(tmp_path / "x.vhd"))
    assert not (tmp_path / "x.vhd").exists()


# -- the vhd-util check catalogue: each damage a named finding at its offset, none masking others
def _with_batmap(data: bytes, first_byte: int, fix_checksum: bool) -> bytes:
    img = VhdImage.open(BytesSpace(data))
    off, hoff = int(img.batmap_header.batmap_offset), img.batmap_header_offset
    out = bytearray(data)
    out[off] = first_byte
    if fix_checksum:
        csum = S.batmap_checksum(bytes(out[off:off + 512]))
        out[hoff + 24:hoff + 28] = csum.to_bytes(4, "big")   # tdbatmap checksum field
    return bytes(out)


def test_catalogue_overlap_footer_mismatch_and_batmap_findings():
    # two BAT entries pointing at the same block: overlapping blocks
    img = VhdImage.open(BytesSpace(SMALL_QEMU))
    table = int(img.header.table_offset)
    data = bytearray(SMALL_QEMU)
    data[table + 8:table + 12] = data[table:table + 4]            # entry 2 := entry 0
    f = {x.kind: x for x in check_vhd(VhdImage.open(BytesSpace(bytes(data))))}
    assert "vhd-bat-overlap" in f
    # a footer copy with a good checksum that disagrees with the primary (another unique id)
    copy = bytearray(SMALL_QEMU[:512])
    copy[68:84] = bytes(range(100, 116))                          # footer uuid field
    copy[64:68] = S.footer_checksum(bytes(copy)).to_bytes(4, "big")
    f = {x.kind: x for x in check_vhd(VhdImage.open(BytesSpace(bytes(copy) + SMALL_QEMU[512:])))}
    assert "vhd-footer-mismatch" in f and f["vhd-footer-mismatch"].offset == 0
    # blktap batmap: damaged bytes (checksum), a bit for an unallocated block, a bit for a
    # partially written block
    good_kinds = {x.kind for x in check_vhd(VhdImage.open(BytesSpace(SMALL_TAP)))}
    assert not good_kinds & {"vhd-batmap-checksum", "vhd-batmap-unallocated",
                             "vhd-batmap-bitmap-mismatch"}
    kinds = {x.kind for x in check_vhd(VhdImage.open(BytesSpace(_with_batmap(SMALL_TAP, 0x80, False))))}
    assert "vhd-batmap-checksum" in kinds
    kinds = {x.kind for x in check_vhd(VhdImage.open(BytesSpace(_with_batmap(SMALL_TAP, 0x80, True))))}
    assert "vhd-batmap-unallocated" in kinds and "vhd-batmap-checksum" not in kinds
    kinds = {x.kind for x in check_vhd(VhdImage.open(BytesSpace(_with_batmap(SMALL_TAP, 0x40, True))))}
    assert "vhd-batmap-bitmap-mismatch" in kinds
