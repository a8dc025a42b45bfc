"""Units of the LVM area: CRC, structures, text parser and writer, ring scan, model; hypothesis
throws garbage at every parser (label, mda header, ring, text)."""

from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_bytes
from core.lvm.crc import INITIAL_CRC, lvm_crc
from core.lvm.label import build_label_sector, find_label, format_pv_uuid, parse_label_sector
from core.lvm.mda import (RawLocn, build_mda_header, parse_mda_header, read_slot_text,
                          ring_write_offset, scan_ring)
from core.lvm.model import LogicalVolume, MetadataError, PVMetadata, Segment, VGMetadata, try_parse
from core.lvm.textformat import ConfigSyntaxError, parse_config
from core.lvm.writer import format_vg_metadata
from core.spaces import BytesSpace
from core.xen_names import lv_kind, lv_vdi_uuid
from core.structs import lvm as S

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def crc_reference(data: bytes, crc: int = INITIAL_CRC) -> int:
    """lvm2 lib/misc/crc.c calc_crc, bit by bit (independent of zlib)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


@given(st.binary(max_size=300))
@FAST
def test_crc_matches_lvm2_algorithm(data):
    assert lvm_crc(data) == crc_reference(data)


def test_crc_is_not_zlib_crc():
    import zlib
    assert lvm_crc(b"LVM2") != zlib.crc32(b"LVM2")
    # chaining = one pass (wrapped copies are checksummed across both parts)
    assert lvm_crc(b"world", lvm_crc(b"hello ")) == lvm_crc(b"hello world")


@pytest.fixture(scope="module")
def pv203() -> bytes:
    """First 64 KiB of a PV written by lvm2 2.03.06 (dfvfs lvm.qcow2, unpacked)."""
    return fixture_bytes("lvm/derived/lvm.qcow2.raw.gz")[:65536]


def test_label_parse_and_rebuild_byte_identical(pv203):
    sector = pv203[512:1024]
    label = parse_label_sector(sector, 512)
    assert label.crc_ok and label.sector == 1 and label.pv_start == 0
    assert label.pv_uuid == "K994MB-Sn1r-7rpS-hQEW-DgUP-87Dr-9d0MFa"
    assert format_pv_uuid(sector[32:64]) == label.pv_uuid
    assert label.device_size == 8 << 20
    assert label.data_areas == [(1 << 20, 0)]
    assert label.metadata_areas == [(4096, (1 << 20) - 4096)]
    assert label.ext_version == 2 and label.ext_flags == S.PV_EXT_USED
    rebuilt = build_label_sector(label.pv_uuid, label.device_size, 1 << 20,
                                 label.metadata_areas)
    assert rebuilt == sector
    assert find_label(BytesSpace(pv203), 0).offset == 512


def test_label_in_wrong_sector_ignored_and_bad_crc_reported(pv203):
    sector = bytearray(pv203[512:1024])
    moved = bytes(512) * 2 + bytes(sector)          # label claiming sector 1 found in sector 2
    assert find_label(BytesSpace(moved + bytes(2048)), 0) is None
    sector[100] ^= 0xFF
    label = parse_label_sector(bytes(sector), 512)
    assert label is not None and not label.crc_ok
    assert [f.kind for f in label.findings] == ["lvm-label-crc"]


def test_mda_header_parse_and_rebuild(pv203):
    hdr = parse_mda_header(pv203[4096:4608], 4096)
    assert hdr.crc_ok and hdr.usable and hdr.start == 4096 and hdr.size == (1 << 20) - 4096
    assert [(r.offset, r.size) for r in hdr.raw_locns][0][0] == 5632 - 4096
    assert build_mda_header(hdr.start, hdr.size, hdr.raw_locns) == pv203[4096:4608]


@given(st.binary(min_size=0, max_size=600), st.integers(0, 4))
@FAST
def test_label_parser_survives_garbage(data, where):
    sector = (S.LABEL_ID + data)[:512] if where else data
    parse_label_sector(sector, 0)
    find_label(BytesSpace(bytes(512) * where + sector + bytes(64)), 0)


@given(st.binary(min_size=512, max_size=512))
@FAST
def test_mda_header_parser_survives_garbage(data):
    sector = data[:4] + S.FMTT_MAGIC + data[20:]
    hdr = parse_mda_header(sector, 4096)
    assert hdr is not None and len(hdr.raw_locns) <= 8
    for rl in hdr.raw_locns:
        read_slot_text(bytes(4096), rl)


# -- text ------------------------------------------------------------------------------------------
def test_parse_config_syntax():
    root = parse_config('# comment\na = 1\nb = -2.5\ns = "x \\"q\\" \\\\ y" # trailing\n'
                        "arr = [1, \"two\", 3.0]\nempty = []\nsec {\n inner { k = 'sq' }\n}\n"
                        "a = 99\n")
    assert root["a"] == 1 and root.duplicates == [("a", 99)]
    assert root["b"] == -2.5 and root["s"] == 'x "q" \\ y'
    assert root["arr"] == [1, "two", 3.0] and root["empty"] == []
    assert root["sec"]["inner"]["k"] == "sq"


@pytest.mark.parametrize("text,line", [
    ("a = 1\nb = \n", 3), ("a {\nb = 1\n", 3), ("}\n", 1), ("a = [1 2]\n", 1),
    ('a = "unterminated\n', 1), ("a b\n", 1), ("= 3", 1), ("x = [[1]]", 1), ("a = word\n", 1),
])
def test_parse_config_errors_name_the_line(text, line):
    with pytest.raises(ConfigSyntaxError) as exc:
        parse_config(text)
    assert exc.value.line == line and f"line {line}" in str(exc.value)


def test_parse_config_bounds_depth_and_size():
    with pytest.raises(ConfigSyntaxError, match="deeper"):
        parse_config("a {" * 1000 + "}" * 1000)
    with pytest.raises(ConfigSyntaxError, match="exceeds"):
        parse_config(b"#" * (65 << 20))


@given(st.text(alphabet='abc{}[]=,"#\\ \n\t0123456789.-_\'', max_size=400))
@FAST
def test_parse_config_garbage_only_raises_syntax_error(text):
    try:
        parse_config(text)
    except ConfigSyntaxError:
        pass


@given(st.binary(max_size=400))
@FAST
def test_try_parse_garbage_gives_reason(data):
    meta, reason = try_parse(data)
    assert (meta is None) == (reason is not None)


def sample_meta(n_lvs: int = 3, seqno: int = 7) -> VGMetadata:
    lvs = {"MGT": LogicalVolume("MGT", "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa", creation_time=1700000000,
                                creation_host="xs", segments=[Segment(0, 1, stripes=[("pv0", 0)])])}
    pe = 1
    for i in range(n_lvs):
        name = f"VHD-{i:08d}-0000-4000-8000-000000000000"
        lvs[name] = LogicalVolume(name, f"lv{i:04d}-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa",
                                  tags=["hidden"] if i == 1 else [], creation_time=1700000000 + i,
                                  creation_host="xs",
                                  segments=[Segment(0, 2, stripes=[("pv0", pe)]),
                                            Segment(2, 1, stripes=[("pv0", 50 + i)])])
        pe += 2
    return VGMetadata("VG_XenStorage-6b1e2c86-1a3d-4b6e-9f00-0a1b2c3d4e5f",
                      "vgvgvg-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa", seqno,
                      pvs=[PVMetadata("pv0", "pvpvpv-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa", "/dev/sdb",
                                      dev_size=2097152, pe_start=22528, pe_count=250)],
                      lvs=lvs)


@pytest.mark.parametrize("form", ["raw", "backup"])
def test_writer_round_trip(form):
    meta = sample_meta()
    text = format_vg_metadata(meta, form, description='Write from "x"', creation_host="xs",
                              creation_time=1700000100)
    back = VGMetadata.from_text(text)
    assert back.header["description"] == 'Write from "x"'
    assert back.header["contents"] == "Text Format Volume Group" and back.header["version"] == 1
    back.header = meta.header = {}
    assert back == meta
    if form == "raw":
        assert text.index("VG_XenStorage") < text.index("# Generated by LVM2 version")
        assert text.endswith("\n\n") and "\t" not in text.split("# Generated")[0]
    else:
        assert text.startswith("# Generated by LVM2 version")
        assert "\tid = " in text


def test_writer_reproduces_lvm2_203_vg_block(pv203):
    hdr = parse_mda_header(pv203[4096:4608], 4096)
    rl = hdr.raw_locns[0]
    text = pv203[4096 + rl.offset: 4096 + rl.offset + rl.size - 1]
    meta = VGMetadata.from_text(text)
    out = format_vg_metadata(meta, "raw").encode()
    cut = text.index(b"# Generated")
    assert out[:cut] == text[:cut]
    assert out[cut:].split(b"\n")[2:6] == text[cut:].split(b"\n")[2:6]   # contents .. description


def test_unknown_keys_are_kept():
    meta = sample_meta(1)
    text = format_vg_metadata(meta, "raw").replace(
        'metadata_copies = 0\n', 'metadata_copies = 0\nfuture_key = "v"\nfuture_sec {\nx = 1\n}\n')
    back = VGMetadata.from_text(text)
    assert back.extra == {"future_key": "v", "future_sec": {"x": 1}}
    again = VGMetadata.from_text(format_vg_metadata(back, "raw"))
    assert again.extra == back.extra


def test_model_maps_and_kinds():
    meta = sample_meta(2)
    lv = meta.lvs["VHD-00000001-0000-4000-8000-000000000000"]
    assert lv_kind(lv.name) == "vhd"
    assert lv_vdi_uuid(lv.name) == "00000001-0000-4000-8000-000000000000"
    assert lv.pes() == [3, 4, 51] and lv.map_runs == [[0, 3, 2], [2, 51, 1]]
    assert lv.map_runs_pv() == [[0, 3, 2, "pv0"], [2, 51, 1, "pv0"]]
    assert lv_kind("MGT") == "mgt" and lv_kind("LV-x") == "raw" and lv_kind("foo") == "other"
    assert lv_vdi_uuid("VHD-not-a-uuid") is None and lv_vdi_uuid("MGT") is None
    striped = LogicalVolume("s", segments=[Segment(0, 4, stripe_count=2, stripe_size=128,
                                                    stripes=[("pv0", 0), ("pv1", 0)])])
    assert striped.pes() == [None] * 4 and striped.map_runs == []


def test_model_rejects_absurd_values():
    text = format_vg_metadata(sample_meta(1), "raw")
    for bad in (text.replace("extent_count = 2", "extent_count = 99999999999999"),
                text.replace("seqno = 7", 'seqno = "x"'),
                text.replace('"pv0", 1', '"pv0"')):
        meta, reason = try_parse(bad.encode())
        assert meta is None and reason
    with pytest.raises(MetadataError, match="no volume group section"):
        VGMetadata.from_text("a = 1\nb { c = 2 }\n")


# -- the ring --------------------------------------------------------------------------------------
def build_ring(texts: list[bytes], mda_size: int) -> tuple[bytes, list[tuple[int, int]]]:
    """An mda (header + ring) written with lvm2's placement rule; (bytes, [(rel offset, size)])."""
    area = bytearray(mda_size - 512)
    placed = []
    prev = (0, 0)
    for t in texts:
        data = t + b"\0"
        off = ring_write_offset(prev[0], prev[1], mda_size, len(data))
        for i, b in enumerate(data):   # wrap from the end of the area to its start
            area[(off - 512 + i) % len(area)] = b
        placed.append((off, len(data)))
        prev = (off, len(data))
    last = placed[-1]
    rl = RawLocn(last[0], last[1], lvm_crc(texts[-1] + b"\0"), 0)
    return build_mda_header(4096, mda_size, [rl]) + bytes(area), placed


def intact_copies(placed, mda_size):
    """(rel offset, seqno, wrapped) of copies no later write overlapped."""
    n = mda_size - 512
    def cells(off, size):
        return {(off - 512 + i) % n for i in range(size)}
    out = []
    for i, (off, size) in enumerate(placed):
        mine = cells(off, size)
        if not any(mine & cells(o, s) for o, s in placed[i + 1:]):
            out.append((off, i + 1, off + size > mda_size))
    return out


@pytest.mark.parametrize("mda_size", [24576, 30720, 40960])
def test_scan_ring_finds_every_copy_including_wrapped(mda_size):
    texts = [format_vg_metadata(sample_meta(n % 7 + 1, seqno=n), "raw").encode()
             for n in range(1, 40)]
    mda, placed = build_ring(texts, mda_size)
    copies = scan_ring(mda[512:], 4096 + 512)
    found = {(c.offset - 4096, c.seqno): c for c in copies}
    intact = intact_copies(placed, mda_size)
    assert any(w for _, _, w in intact), "parameters must leave an intact wrapped copy"
    for off, seq, wrapped in intact:
        c = found[(off, seq)]
        assert not c.partial and c.text == texts[seq - 1] and c.wrapped == wrapped
        assert c.checksum == lvm_crc(texts[seq - 1] + b"\0")
    for c in copies:
        if not c.partial:
            assert c.text == texts[c.seqno - 1]
        else:
            assert texts[c.seqno - 1].startswith(c.text)


def test_scan_ring_reports_overwritten_copy_as_partial():
    old = format_vg_metadata(sample_meta(6, seqno=1), "raw").encode()
    new = format_vg_metadata(sample_meta(1, seqno=2), "raw").encode()
    area = bytearray(16384)
    area[0:len(old) + 1] = old + b"\0"
    area[1024:1024 + len(new) + 1] = new + b"\0"    # a newer write over the old copy's tail
    copies = {c.seqno: c for c in scan_ring(bytes(area), 4608)}
    assert copies[2].text == new and not copies[2].partial
    assert copies[1].partial and copies[1].text == old[:1024]


@given(st.binary(max_size=4096), st.integers(0, 7))
@FAST
def test_scan_ring_survives_garbage(data, pos):
    head = b"vg {\nid = \"x\"\nseqno = 5\n"
    area = bytearray(data.ljust(4096, b"\0"))
    area[pos * 512: pos * 512 + len(head)] = head
    for c in scan_ring(bytes(area), 0):
        assert c.length <= len(area) + 1


def test_committed_slot_copy_found_even_when_the_line_rule_misses_it():
    """A copy at an offset that is not on a 512 boundary (not what lvm2 writes, but what a
    raw_locn may say): the scan's line rule skips it, the committed slot still finds it."""
    from core.lvm.analyse import Area, _scan_area
    from core.progress import Ticker
    text = format_vg_metadata(sample_meta(1), "raw").encode()
    mda_size = 16384
    area = bytearray(mda_size - 512)
    area[100:100 + len(text) + 1] = text + b"\0"
    hdr_bytes = build_mda_header(4096, mda_size, [RawLocn(612, len(text) + 1,
                                                          lvm_crc(text + b"\0"), 0)])
    disk = bytes(4096) + hdr_bytes + bytes(area)
    assert scan_ring(bytes(area), 4608) == []
    found, findings = [], []
    _scan_area(BytesSpace(disk), Area(0, 4096, mda_size, parse_mda_header(hdr_bytes, 4096)),
               found, findings, Ticker(1))
    assert len(found) == 1 and found[0].copy.slot == "committed" and found[0].copy.crc_ok
    assert found[0].copy.offset == 4096 + 612 and found[0].seqno == 7
    assert found[0].text == text


def test_huge_lv_costs_its_segments_not_its_extents():
    """An LV of 2^31 extents (garbage, or a 8 PiB LV): maps and claimed_by stay cheap; the per-LE
    list is refused with a one-line error instead of allocating gigabytes."""
    from core.lvm.generations import compare_generations
    from core.lvm.model import Generation, VolumeGroup
    old, new = sample_meta(1, seqno=1), sample_meta(1, seqno=2)
    big = LogicalVolume("big", segments=[Segment(0, 1 << 31, stripes=[("pv0", 10)])])
    old.lvs["big"] = big
    new.lvs["taker"] = LogicalVolume("taker", segments=[Segment(0, 3, stripes=[("pv0", 20)])])
    g2, g1 = Generation(2, b"", new), Generation(1, b"", old)
    vg = VolumeGroup("vg", "id", generations=[g2, g1], current=g2)
    compare_generations(vg)
    assert big.map_runs == [[0, 10, 1 << 31]]
    assert big.status == "deleted" and big.claimed_by == {
        20: "taker", 21: "taker", 22: "taker", 50: "VHD-00000000-0000-4000-8000-000000000000"}
    with pytest.raises(MetadataError, match="extents"):
        big.pes()
