"""Each on-disk structure is parsed by one module (issue 13): the owners' entry points that the
scan's kinds, the VHD reader and the reconstruction's anchors now share survive garbage, and
what the scan says about a structure is what its owner says (lvm2's own label and mda header,
blktap's hidden-flag footer, GPT headers, VHD heads under each reader's limits)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_bytes
from core.lvm.crc import lvm_crc
from core.lvm.label import parse_label_sector
from core.lvm.mda import MAX_RAW_LOCNS, RawLocn, build_mda_header, parse_mda_header
from core.match.anchors import ANCHOR_LIMITS, parse_anchor
from core.partitions import parse_gpt_header
from core.scan_kinds import (verify_gpt_header, verify_lvm_label, verify_mda_header,
                             verify_vhd_footer, verify_vhd_header)
from core.spaces import BytesSpace
from core.structs import gpt as G
from core.structs import lvm as L
from core.structs import vhd as S
from core.vhd.build import build_vhd
from core.vhd.head import HEAD_BYTES, parse_head, read_footer
from core.vhd.reader import READER_LIMITS, read_footer_at

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _no_read(off: int, n: int) -> bytes:
    return bytes(max(n, 0))


@pytest.fixture(scope="module")
def pv203() -> bytes:
    """First 64 KiB of a PV written by lvm2 2.03.06 (dfvfs lvm.qcow2, unpacked)."""
    return fixture_bytes("lvm/derived/lvm.qcow2.raw.gz")[:65536]


def _head(block_size: int = S.VHD_BLOCK_BYTES) -> bytes:
    return build_vhd(8 << 20, {0: b"x"}, layout="qemu", block_size=block_size).data[:HEAD_BYTES]


# -- LVM label and mda header: core.lvm parses, the scan reports ---------------------------------
def test_scan_label_is_the_owners_label(pv203):
    sector = pv203[512:1024]
    label = parse_label_sector(sector, 512)
    v = verify_lvm_label(sector, 512, _no_read)
    assert v.valid and label.type_ok and label.pv_header_ok
    assert v.details["pv_uuid"] == label.pv_uuid == "K994MB-Sn1r-7rpS-hQEW-DgUP-87Dr-9d0MFa"
    assert v.details["pe_start"] == label.pe_start == 1 << 20
    assert v.details["metadata_areas"] == [list(a) for a in label.metadata_areas]
    wrong_type = bytearray(sector)
    wrong_type[24:32] = b"LVM1 001"
    assert not parse_label_sector(bytes(wrong_type), 512).type_ok
    assert verify_lvm_label(bytes(wrong_type), 512, _no_read) is None   # not this kind at all


@given(st.binary(min_size=480, max_size=480), st.integers(0, 600))
@FAST
def test_label_owner_and_scan_agree_on_garbage(body, offset_xl):
    sector = bytearray(L.LABEL_ID + bytes(24) + body)[:512]
    sector[20:24] = offset_xl.to_bytes(4, "little")
    sector[24:32] = L.LVM2_LABEL
    label = parse_label_sector(bytes(sector), 1024)
    v = verify_lvm_label(bytes(sector), 1024, _no_read)
    assert label is not None and v is not None
    assert v.details["crc_ok"] == label.crc_ok
    assert ("pv_uuid" in v.details) == label.pv_header_ok
    assert not (v.valid and not label.pv_header_ok)


@given(st.integers(0, 19))
@FAST
def test_mda_header_lists_up_to_its_terminator(n):
    """19 raw_locn slots fit after the 40-byte fixed part; a list that fills them all has no
    terminator inside the sector: lvm2's parse fails, so the scan lists nothing."""
    raw = bytearray(build_mda_header(4096, 1 << 20))
    locns = [RawLocn(512 * (i + 1), 100 + i, i, 0) for i in range(n)]
    for i, r in enumerate(locns):
        raw[40 + 24 * i:64 + 24 * i] = L.raw_locn.build(
            {"offset": r.offset, "size": r.size, "checksum": r.checksum, "flags": r.flags})
    raw[0:4] = lvm_crc(bytes(raw[4:512])).to_bytes(4, "little")
    hdr = parse_mda_header(bytes(raw), 4096)
    fits = n < 19
    assert hdr.crc_ok and hdr.terminated == fits
    assert [r.offset for r in hdr.raw_locns] == [r.offset for r in locns[:MAX_RAW_LOCNS]]
    v = verify_mda_header(bytes(raw), 4096, _no_read)
    assert v.details["crc_ok"] == hdr.crc_ok
    assert (v.details["raw_locns"] is not None) == fits
    assert v.valid == fits


def test_scan_mda_header_is_the_owners(pv203):
    hdr = parse_mda_header(pv203[4096:4608], 4096)
    v = verify_mda_header(pv203[4096:4608], 4096, _no_read)
    assert v.valid and hdr.terminated and hdr.usable
    assert [r["offset"] for r in v.details["raw_locns"]] == [r.offset for r in hdr.raw_locns]


# -- GPT: core.partitions parses both CRCs for the table reader and for the scan ---------------
@given(st.binary(min_size=504, max_size=504), st.integers(1, 40))
@FAST
def test_gpt_header_survives_garbage_and_scan_agrees(body, lba):
    sector = G.GPT_HEADER_SIGNATURE + body
    disk = bytes(lba * 512) + sector + bytes(4096)
    space = BytesSpace(disk)
    info = parse_gpt_header(sector, lba * 512, None, space.read, None, space.size)
    v = verify_gpt_header(sector, lba * 512, space.read)
    assert info is not None and v is not None
    assert v.details["header_crc_ok"] == info.header_crc_ok
    assert v.details["entries_crc_ok"] == (info.array_crc_ok if info.array_read else None)
    assert v.details["disk_start"] == info.disk_start


# -- VHD head: one parser, the limits are the reader's -----------------------------------------
def test_hidden_flag_quirk_is_one_rule_everywhere():
    raw = bytearray(_head()[:512])
    raw[S.FOOTER_HIDDEN_OFFSET] = 1          # set after the checksum, as early blktap did
    footer = read_footer(bytes(raw))
    assert footer.checksum_ok and footer.hidden_checksum_quirk
    assert verify_vhd_footer(bytes(raw), 0, _no_read).details["checksum_ok"]
    cand = read_footer_at(BytesSpace(bytes(raw)), 0, "copy")
    assert cand.checksum_ok and cand.hidden_checksum_quirk
    raw[100] ^= 0xFF                         # now it is simply damaged
    assert not read_footer(bytes(raw)).checksum_ok
    assert not verify_vhd_footer(bytes(raw), 0, _no_read).details["checksum_ok"]


def test_head_limits_decide_not_the_parser():
    odd = _head(block_size=1 << 20)          # 1 MiB blocks: a power of two
    head = parse_head(odd)
    assert head is not None and head.block_bytes == 1 << 20
    assert not head.problems(ANCHOR_LIMITS) and not head.problems(READER_LIMITS)
    raw = bytearray(odd)
    hdr = S.parse_header(bytes(raw[512:1536]))
    raw[512:1536] = S.build_header(**{**{k: v for k, v in hdr.items() if k != "_io"},
                                      "block_size": 3 * 512})
    head = parse_head(bytes(raw))
    assert head.header.checksum_ok
    assert "block_size" in head.problems(ANCHOR_LIMITS)        # anchors: powers of two only
    assert "block_size" not in head.problems(READER_LIMITS)    # VhdImage: multiples of 512
    anchor = parse_anchor(0, lambda o, n: bytes(raw[o:o + n]).ljust(n, b"\0"), 4 << 20, 64 << 20)
    assert anchor is not None and not anchor.plausible
    assert verify_vhd_header(bytes(raw[512:1536]), 512, lambda o, n: bytes(raw[o:o + n])) \
        .valid is False


@given(st.binary(min_size=HEAD_BYTES - 16, max_size=HEAD_BYTES - 16), st.integers(0, 64))
@FAST
def test_head_and_anchor_survive_garbage(body, extents):
    raw = S.HD_COOKIE + body[:504] + S.DD_COOKIE + body[504:]
    head = parse_head(raw)
    assert head is not None
    head.problems(ANCHOR_LIMITS)
    head.problems(READER_LIMITS)
    E = 4 << 20
    anchor = parse_anchor(0, lambda o, n: raw[o:o + n].ljust(n, b"\0"), E, max(1, extents) * E)
    assert anchor is not None
    if not head.footer.checksum_ok:
        assert "vhd-footer-checksum" in [f.kind for f in anchor.findings]


# -- SQL Server slot array: one reader (core.carve.mssql_page) for carving and the table reader --
@given(st.binary(min_size=0, max_size=1024), st.integers(-1, 4100), st.integers(0, 200))
@FAST
def test_one_slot_array_reader(tail, slot, count):
    import struct

    from core.carve.mssql import slot_offset
    from core.mssql.records import slot_offsets
    from core.structs.mssql import PAGE_HEADER_SIZE, PAGE_SIZE
    page = (bytes(PAGE_SIZE) + tail)[-PAGE_SIZE:]     # the slot array is at the page end
    # what carving read before the slot array had one reader: the entry at the page end
    pos = PAGE_SIZE - 2 * (slot + 1)
    raw = struct.unpack_from("<H", page, pos)[0] if PAGE_HEADER_SIZE <= pos < PAGE_SIZE else None
    expected = raw if raw is not None and PAGE_HEADER_SIZE <= raw < PAGE_SIZE else None
    assert slot_offset(page, slot) == expected
    offs = slot_offsets(page, count)
    assert len(offs) == min(count, (PAGE_SIZE - PAGE_HEADER_SIZE) // 2)
    assert all(o == slot_offset(page, s) for s, o in enumerate(offs))
