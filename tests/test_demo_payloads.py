"""The demo's carving payloads (core.demo_payloads): the generated SQL Server data file and RAR 5
archive are what the carvers (core.carve.mssql, core.carve.rar) accept and give back byte for
byte; their allocation pages rebuild the shared ITHelpdesk fixture's pages exactly; and end to
end, `carve-mdf` / `carve-rar` on a freshly built demo SR report exactly what the manifest says
(missing pages, database, one complete and one damaged archive)."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import main
from conftest import fixture_bytes
from core.carve.mssql import carve_mdf, file_header_size_pages, pfs_allocated, read_boot_page
from core.carve.rar import carve_rar, walk_archive
from core.demo import build_demo
from core.demo_payloads import (
    ArchiveMember, allocation_page, backup_members, build_data_file, build_rar_archive,
    demo_carving_plan, fixedvar_record, pfs_page,
)
from core.spaces import BytesSpace
from core.structs.mssql import (
    FLAG_CHECKSUM, IAM_BITMAP_BYTES, PAGE_HEADER_SIZE, PAGE_SIZE, PFS_INTERVAL, TYPE_DATA,
    null_bitmap, page_checksum, page_header, record_header, variable_length_offsets,
)
from core.structs.rar import rar5_block_header

MDF_FIXTURE = "mdf/ITHelpdesk/Database.mdf.gz"


def _junk(n: int, seed: int) -> bytes:
    """Text filler: nothing in it looks like a page header or a RAR signature."""
    line = f"filler line {seed} of the test space, no structure in here at all\n".encode()
    return (line * (n // len(line) + 1))[:n]


# -- the data file ------------------------------------------------------------------------------
def test_data_file_carved_back_whole_from_a_byte_buffer(tmp_path):
    df = build_data_file(0)
    assert len(df.data) == df.pages * PAGE_SIZE == 160 * PAGE_SIZE
    # 512-aligned, not 8 KiB aligned, between text
    space = BytesSpace(_junk(3 * 512, 1) + df.data + _junk(20_000, 2))
    result = carve_mdf(space, str(tmp_path / "out"))
    (f,) = result.files
    assert f.sha256 == df.sha256 == hashlib.sha256(open(f.path, "rb").read()).hexdigest()
    assert (f.database, f.sql_server_version, f.create_version) == ("webshop", 706, 706)
    assert f.to_json()["sql_server_release"] == "SQL Server 2012"
    assert f.missing_pages == [] and f.conflicting_pages == [] and f.bad_checksum_copies == 0
    assert f.pages_written == len(df.allocated) and f.length == len(df.data)


def test_data_file_pages_are_self_consistent():
    """Every allocated page: its id, a valid checksum, m_freeData / m_slotCnt / m_freeCnt adding
    up, a slot array pointing at records that tile [96, m_freeData); data records parse with the
    record structures (variable columns ending where the next record starts); the page chain of
    each table is linked both ways; the PFS marks exactly the non-zero pages allocated."""
    df = build_data_file(0)
    pfs = df.page(1)
    allocated = pfs_allocated(pfs, 0, df.pages)
    nonzero = [p for p in range(df.pages) if any(df.page(p))]
    assert allocated == df.allocated == nonzero
    assert {4, 5} & set(allocated) == set() and max(allocated) == 119
    for p in allocated:
        page = df.page(p)
        h = page_header.parse(page)
        assert (h.m_headerVersion, h.m_pageId, h.m_fileId) == (1, p, 1)
        assert h.m_type == df.page_types[p]
        if h.m_flagBits & FLAG_CHECKSUM:
            assert page_checksum(page) == h.m_tornBits
        assert h.m_freeData + 2 * h.m_slotCnt + h.m_freeCnt == PAGE_SIZE
        slots = list(struct.unpack_from(f"<{h.m_slotCnt}H", page, PAGE_SIZE - 2 * h.m_slotCnt))
        slots.reverse()                                   # slot 0 is at 8190
        assert slots[0] == PAGE_HEADER_SIZE and slots == sorted(slots)
        ends = slots[1:] + [h.m_freeData]
        if h.m_type != TYPE_DATA:
            continue
        assert h.m_indexId == 256 and h.m_objId in (27, 28)
        for start, end in zip(slots, ends):
            rec = page[start:end]
            head = record_header.parse(rec)
            assert head.RawStatusByteA == 0x30 and head.NullBitmapPointer == h.pminlen
            nb = null_bitmap.parse(rec[head.NullBitmapPointer:])
            pos = head.NullBitmapPointer + 2 + len(nb.NullBitmapRawBytes)
            var = variable_length_offsets.parse(rec[pos:])
            assert var.VariableLengthOffsetArray[-1] == len(rec)
    for pages in df.tables.values():
        heads = [page_header.parse(df.page(p)) for p in pages]
        assert heads[0].m_prevPage.m_pageId == 0 and heads[-1].m_nextPage.m_pageId == 0
        for a, b, ha, hb in zip(pages, pages[1:], heads, heads[1:]):
            assert ha.m_nextPage.m_pageId == b and hb.m_prevPage.m_pageId == a


def test_boot_page_and_file_header_say_name_and_size():
    df = build_data_file(0)
    boot = df.page(9)
    info = read_boot_page(boot)
    assert info == {"database": "webshop", "dbi_version": 706, "dbi_createVersion": 706,
                    "dbi_dbid": 5}
    # formats.md 5.2: with the record at 96 the name starts at page byte 148, padded with U+0020
    assert boot[148:148 + 14] == "webshop".encode("utf-16-le") and boot[162:164] == b" \0"
    assert file_header_size_pages(df.page(0)) == 160


def test_allocation_pages_rebuild_the_fixture_pages_byte_for_byte():
    """The builders against what SQL Server wrote: GAM, SGAM, DCM, BCM (no checksum), an IAM page
    and the PFS page of the ITHelpdesk fixture come out identical, checksums included."""
    data = fixture_bytes(MDF_FIXTURE)
    for p in (2, 3, 6, 7, 20):
        real = data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]
        h = page_header.parse(real)
        built = allocation_page(h.m_type, p, real[194:194 + IAM_BITMAP_BYTES],
                                (h.m_lsn.vlf, h.m_lsn.block, h.m_lsn.slot),
                                flag_bits=h.m_flagBits, header_body=real[100:190],
                                obj_id=h.m_objId, index_id=h.m_indexId)
        assert built == real, p
    real = data[PAGE_SIZE:2 * PAGE_SIZE]
    h = page_header.parse(real)
    assert pfs_page(1, real[100:100 + PFS_INTERVAL],
                    (h.m_lsn.vlf, h.m_lsn.block, h.m_lsn.slot)) == real


@settings(max_examples=40, deadline=None)
@given(fixed=st.binary(max_size=40), n_var=st.integers(0, 6), data=st.data())
def test_fixedvar_records_parse_back(fixed, n_var, data):
    columns = data.draw(st.integers(max(1, n_var), n_var + 10))
    values = data.draw(st.lists(st.none() | st.binary(max_size=60), min_size=n_var,
                                max_size=n_var))
    rec = fixedvar_record(fixed, columns, values)
    head = record_header.parse(rec)
    assert rec[4:head.NullBitmapPointer] == fixed
    nb = null_bitmap.parse(rec[head.NullBitmapPointer:])
    assert nb.NullBitmapColumnCount == columns
    bits = int.from_bytes(nb.NullBitmapRawBytes, "little")
    first_var = columns - n_var
    assert [bool(bits >> (first_var + i) & 1) for i in range(n_var)] == [v is None for v in values]
    if n_var:
        pos = head.NullBitmapPointer + 2 + len(nb.NullBitmapRawBytes)
        offs = variable_length_offsets.parse(rec[pos:]).VariableLengthOffsetArray
        starts = [pos + 2 + 2 * n_var] + list(offs[:-1])
        assert [rec[a:b] for a, b in zip(starts, offs)] == [v or b"" for v in values]
        assert offs[-1] == len(rec)


# -- the archive --------------------------------------------------------------------------------
def _stored_data(archive: bytes, header_offset: int) -> bytes:
    """The bytes after a FILE header, as long as its data size says."""
    h = rar5_block_header.parse(archive[header_offset:])
    size_len = 1 if h.header_size < 0x80 else 2
    start = header_offset + 4 + size_len + h.header_size
    return archive[start:start + h.add_size]


def test_rar_archive_listed_exactly_by_the_carver(tmp_path):
    members = backup_members(0)
    archive, header_offsets = build_rar_archive(members)
    at = 5000
    space = BytesSpace(_junk(at, 3) + archive + _junk(7000, 4))
    result = carve_rar(space, str(tmp_path / "rar"))
    (arc,) = result.archives
    assert (arc.offset, arc.bytes, arc.version, arc.complete) == (at, len(archive), 5, True)
    assert arc.first_bad_header is None and not arc.encrypted_headers
    listed = [(f.name, f.size, f.crc32, f.packed) for f in arc.files]
    assert listed == [(m.name, len(m.data), zlib.crc32(m.data), len(m.data)) for m in members]
    assert open(arc.path, "rb").read() == archive
    for m, off in zip(members, header_offsets):          # stored: the data follows its header
        assert _stored_data(archive, off) == m.data
    # the end-of-archive block is the one every RAR 5 writer emits (formats.md 6.2 [V]) and the
    # one libarchive's stored-file test archive ends with
    assert archive[-8:] == bytes.fromhex("1d77565103050400")
    assert archive[-8:] == fixture_bytes("rar/libarchive/test_read_format_rar5_stored.rar")[-8:]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                                blacklist_characters="/\\"),
                                  min_size=1, max_size=30),
                          st.binary(max_size=3000), st.integers(0, 2**32 - 1)),
                min_size=1, max_size=5))
def test_any_stored_archive_round_trips_through_the_carver(items):
    members = [ArchiveMember(name, data, mtime) for name, data, mtime in items]
    archive, _ = build_rar_archive(members)
    arc = walk_archive(lambda o, n: archive[o:o + n], 0, len(archive))
    assert arc.complete and arc.bytes == len(archive)
    assert [(f.name, f.size, f.crc32) for f in arc.files] == \
        [(m.name, len(m.data), zlib.crc32(m.data)) for m in members]


def test_plan_is_deterministic_and_its_damaged_copy_stops_at_the_bad_header():
    a, b = demo_carving_plan(0), demo_carving_plan(0)
    assert a.payloads == b.payloads and a.truth == b.truth
    assert demo_carving_plan(1).payloads["web"] != a.payloads["web"]
    (good_at, good), (bad_at, bad) = a.payloads["web"]
    assert len(good) == len(bad) and sum(x != y for x, y in zip(good, bad)) == 1
    arc = walk_archive(lambda o, n: bad[o:o + n], 0, len(bad))
    truth = a.truth.archives[1]
    assert not arc.complete and arc.bytes == truth.carved_bytes
    assert bad_at + arc.first_bad_header["offset"] == truth.first_bad_header
    assert "CRC" in arc.first_bad_header["reason"]
    assert [f.name for f in arc.files] == [f["name"] for f in truth.files]
    # the data file truth: missing pages zero-filled in the expected sha256
    df, t = build_data_file(0), a.truth.data_file
    expected = bytearray(df.data)
    for p in t.missing_pages:
        expected[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = bytes(PAGE_SIZE)
    assert hashlib.sha256(expected).hexdigest() == t.sha256 != t.sha256_original
    assert set(t.missing_pages) <= set(df.allocated)
    assert not set(t.stale_pages) & set(t.missing_pages)


# -- end to end on the demo SR ------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("payload-demo")
    image = str(root / "demo-sr.img")
    return image, build_demo(image)          # defaults: partition table wiped, payloads on


def _cli(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def test_carve_mdf_in_the_sql_vdi_reports_exactly_the_manifest(demo, capsys, tmp_path):
    image, m = demo
    t = m.carving.data_file
    vdi = m.vdi(t.vdi)
    assert vdi.label == "sql-server-data"
    doc = _cli(capsys, ["carve-mdf", image, "--vdi", vdi.lv_name, "-o", str(tmp_path / "m"),
                        "--json"])
    (f,) = doc["files"]
    assert f["database"] == t.database == "webshop"
    assert f["sql_server_version"] == t.sql_server_version == 706
    assert f["missing_pages"] == t.missing_pages == [30, 31, 32, 75, 76]
    assert f["bad_checksum_copies"] == len(t.damaged_pages) == 1
    assert sorted(c["page"] for c in f["conflicting_pages"]) == t.stale_pages
    assert {c["reason"] for c in f["conflicting_pages"]} == {"newer-lsn"}
    assert f["bytes"] == t.bytes and f["sha256"] == t.sha256
    assert hashlib.sha256(open(f["path"], "rb").read()).hexdigest() == t.sha256
    # the chosen copies are the data file's, not the stale ones
    chosen = {c["page"]: c["chosen_offset"] for c in f["conflicting_pages"]}
    assert all(chosen[p] == t.virtual_offset + p * PAGE_SIZE for p in t.stale_pages)
    owners = {o["page"]: o["source"] for o in f["missing_owners"]}
    assert owners == {30: "damaged-copy", 31: "iam", 32: "iam", 75: "iam", 76: "iam"}


def test_carve_rar_in_the_web_vdi_shows_one_complete_and_one_damaged(demo, capsys, tmp_path):
    image, m = demo
    truths = m.carving.archives
    vdi = m.vdi(truths[0].vdi)
    assert vdi.label == "web01 system disk"
    doc = _cli(capsys, ["carve-rar", image, "--vdi", vdi.vdi_uuid, "-o", str(tmp_path / "r"),
                        "--json"])
    got = sorted(doc["archives"], key=lambda a: a["offset"])
    want = sorted(truths, key=lambda a: a.virtual_offset)
    assert [(a["offset"], a["bytes"], a["complete"]) for a in got] == \
        [(t.virtual_offset, t.carved_bytes, t.complete) for t in want]
    for a, t in zip(got, want):
        assert [{k: f[k] for k in ("name", "size", "crc32")} for f in a["files"]] == t.files
        bad = a["first_bad_header"]
        assert (bad and bad["offset"]) == (t.first_bad_header or None)
    complete = next(a for a in got if a["complete"])
    archive, _ = build_rar_archive(backup_members(m.seed))
    assert open(complete["path"], "rb").read() == archive


def test_whole_image_carve_finds_them_at_the_manifest_disk_offsets(demo, capsys, tmp_path):
    image, m = demo
    doc = _cli(capsys, ["carve-rar", image, "-o", str(tmp_path / "r"), "--json"])
    found = {a["offset"]: a["complete"] for a in doc["archives"]}
    for t in m.carving.archives:
        (start, length), *rest = t.disk_ranges
        assert found.get(start) == t.complete
        assert sum(n for _, n in t.disk_ranges) == t.bytes
    doc = _cli(capsys, ["carve-mdf", image, "-o", str(tmp_path / "m"), "--json"])
    (f,) = doc["files"]
    t = m.carving.data_file
    assert f["missing_pages"] == t.missing_pages and f["sha256"] == t.sha256
    with open(image, "rb") as img:                       # page 9 on disk where the ranges say
        start, length = t.disk_ranges[0]
        assert length > 10 * PAGE_SIZE
        img.seek(start + 9 * PAGE_SIZE)
        assert read_boot_page(img.read(PAGE_SIZE))["database"] == "webshop"


def test_manifest_json_has_the_carving_truth(demo, tmp_path):
    image, m = demo
    m.write_json(str(tmp_path / "m.json"))
    doc = json.load(open(tmp_path / "m.json"))
    assert doc["carving"]["data_file"]["missing_pages"] == [30, 31, 32, 75, 76]
    assert [a["complete"] for a in doc["carving"]["archives"]] == [True, False]


def test_payloads_can_be_turned_off(tmp_path, capsys):
    """carve_payloads=False, and a caller's own payloads, leave the carvers nothing of ours."""
    image = str(tmp_path / "plain.img")
    m = build_demo(image, damage="none", carve_payloads=False, attach_cycles=2)
    assert m.carving is None
    doc = _cli(capsys, ["carve-mdf", image, "--vdi", m.vdi("sql").lv_name,
                        "-o", str(tmp_path / "m"), "--json"])
    assert doc["files"] == []
    doc = _cli(capsys, ["carve-rar", image, "--vdi", m.vdi("web").lv_name,
                        "-o", str(tmp_path / "r"), "--json"])
    assert doc["archives"] == []
    own = build_demo(str(tmp_path / "own.img"), damage="none", attach_cycles=2,
                     payloads={"logs": [(0, b"my own bytes")]})
    assert own.carving is None
