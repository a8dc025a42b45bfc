"""SQL Server page carving against the shared real data files (SQL Server 2008 R2 and 2012):
pages scattered through an image, out of order, 512-aligned but not 8 KiB aligned, with stale
copies (older LSN, or a bad checksum) and junk between them, come back as the original file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
from contextlib import redirect_stdout

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_bytes
from core.carve.mssql import (
    carve_mdf, choose_copies, file_header_size_pages, find_pages, iam_pages, page_prefilter,
    pfs_allocated, read_boot_page, verify_page,
)
from core.source import Evidence
from core.spaces import BytesSpace, extent_space
from core.structs.mssql import (
    FLAG_CHECKSUM, PAGE_HEADER_DTYPE, PAGE_SIZE, boot_record, page_checksum, page_checksums,
    page_header, torn_bits_consistent,
)

FIXTURES = {
    # relative path: (sha256, pages, database name, dbi_version, dbi_createVersion) - PROVENANCE.md
    "mdf/dotnetnuke/Database.mdf.gz": (
        "d618685038e6ee92215c1b38e8378a49b9eae4b0b04d75284d9eb86983cc4bd4", 280,
        r"C:\INETPUB\WWWROOT\DOTNETNUKE\APP_DATA\DATABASE.MDF", 661, 611),
    "mdf/ITHelpdesk/Database.mdf.gz": (
        "702a80297aa2c1aacfe6bf67f5092ac684d30bb091f87d99029be25574d7e298", 400,
        r"C:\USERS\JOE\DOCUMENTS\COLLEGE\HELPDESK WORK\HELPDESK\APP_DATA\DATABASE.MDF", 706, 661),
}


def _pages(data: bytes) -> list[bytes]:
    return [data[i: i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)]


def _reseal(page: bytes) -> bytes:
    """Recompute the checksum of a modified page (so it is a valid, different version)."""
    buf = bytearray(page)
    struct.pack_into("<I", buf, 60, page_checksum(bytes(buf)))
    return bytes(buf)


def _older_copy(page: bytes) -> bytes:
    """A valid older version: lower LSN, different body, checksum recomputed."""
    buf = bytearray(page)
    vlf = struct.unpack_from("<I", buf, 40)[0]
    struct.pack_into("<I", buf, 40, max(0, vlf - 1))
    buf[4000] ^= 0x5A
    return _reseal(bytes(buf))


def _bad_copy(page: bytes) -> bytes:
    """A copy with a higher LSN whose checksum no longer holds (a torn / rotten write)."""
    buf = bytearray(page)
    vlf = struct.unpack_from("<I", buf, 40)[0]
    struct.pack_into("<I", buf, 40, vlf + 7)
    buf[5000] ^= 0xFF
    return bytes(buf)


def scatter(data: bytes, seed: int, drop: set[int] = frozenset(), stale: int = 6,
            bad: int = 6) -> tuple[bytes, dict]:
    """Disk image with the file's non-zero pages out of order at 512-aligned offsets, stale and
    bad-checksum copies, random junk between; returns (image, what was planted)."""
    rng = random.Random(seed)
    pages = _pages(data)
    live = [i for i, p in enumerate(pages) if p.count(0) != PAGE_SIZE and i not in drop]
    checksummed = [i for i in live
                   if struct.unpack_from("<H", pages[i], 4)[0] & FLAG_CHECKSUM and i != 9]
    stale_ids = set(rng.sample(checksummed, stale))
    bad_ids = set(rng.sample(sorted(set(checksummed) - stale_ids), bad))
    items = [pages[i] for i in live]
    items += [_older_copy(pages[i]) for i in stale_ids]
    items += [_bad_copy(pages[i]) for i in bad_ids]
    rng.shuffle(items)
    out = bytearray(rng.randbytes(3 * 512))
    for it in items:
        out += it
        out += rng.randbytes(512 * rng.choice([0, 1, 3, 5, 16]))
    out += rng.randbytes(1000)
    return bytes(out), {"stale": stale_ids, "bad": bad_ids}


@pytest.fixture(params=sorted(FIXTURES), ids=["ithelpdesk-2012", "dotnetnuke-2008R2"])
def mdf(request):
    rel = request.param
    return fixture_bytes(rel), FIXTURES[rel]


def test_fixture_facts_checksums_and_file_header(mdf):
    data, (sha, npages, name, version, create) = mdf
    assert hashlib.sha256(data).hexdigest() == sha
    pages = np.frombuffer(data, dtype=np.uint8).reshape(-1, PAGE_SIZE)
    heads = np.ascontiguousarray(pages[:, :96]).view(PAGE_HEADER_DTYPE).ravel()
    flagged = (heads["m_flagBits"] & FLAG_CHECKSUM) != 0
    sums = page_checksums(pages.view("<u4").reshape(-1, 16, 128))
    assert flagged.sum() > 100
    assert (sums[flagged] == heads["m_tornBits"][flagged]).all()
    assert file_header_size_pages(data[:PAGE_SIZE]) == npages
    boot = read_boot_page(data[9 * PAGE_SIZE: 10 * PAGE_SIZE])
    assert boot["database"] == name and boot["dbi_version"] == version
    assert boot["dbi_createVersion"] == create
    # construct declarations parse and build the real bytes
    assert page_header.build(page_header.parse(data[:96])) == data[:96]
    rec = data[9 * PAGE_SIZE + 96: 9 * PAGE_SIZE + 96 + boot_record.sizeof()]
    assert boot_record.build(boot_record.parse(rec)) == rec


def test_prefilter_finds_every_page_and_little_else(mdf):
    data, _ = mdf
    nonzero = {i * PAGE_SIZE for i, p in enumerate(_pages(data)) if p.count(0) != PAGE_SIZE}
    hits = set(page_prefilter(np.frombuffer(data, dtype=np.uint8)).tolist())
    assert nonzero <= hits
    noise = np.random.default_rng(5).integers(0, 256, 16 << 20, dtype=np.uint8)
    assert page_prefilter(noise).size < 20          # ~1e-5 per sector of random data


def test_scattered_pages_reassemble_identically(mdf, tmp_path):
    data, (sha, npages, name, version, _) = mdf
    image, planted = scatter(data, seed=11)
    img = tmp_path / "disk.img"
    img.write_bytes(image)
    with Evidence(str(img)) as ev:
        result = carve_mdf(ev, str(tmp_path / "out"), evidence_paths=[str(img)], window=1 << 20)
    assert len(result.files) == 1
    f = result.files[0]
    assert hashlib.sha256(open(f.path, "rb").read()).hexdigest() == sha
    assert f.sha256 == sha and f.length == npages * PAGE_SIZE
    assert f.database == name and f.sql_server_version == version
    assert f.missing_pages == []
    assert f.bad_checksum_copies == len(planted["bad"])
    # the stale valid copies are different versions: reported, the newer one chosen
    assert {c.page for c in f.conflicting_pages} == planted["stale"]
    assert all(c.reason == "newer-lsn" and c.copies == 2 for c in f.conflicting_pages)
    (rng,) = f.allocation_ranges
    assert rng["pfs_found"] and rng["missing"] == 0 and rng["conflicting"] == len(planted["stale"])
    assert rng["pages_found"] == f.pages_written
    assert f.path.endswith(".mdf") and os.path.dirname(f.path) == str(tmp_path / "out")


def test_removed_pages_are_named_with_their_owner(mdf, tmp_path):
    data, (sha, npages, *_rest) = mdf
    allocated = pfs_allocated(data[PAGE_SIZE: 2 * PAGE_SIZE], 0, npages)
    rng = random.Random(3)
    drop = set(rng.sample([p for p in allocated if p > 20], 7))
    image, _ = scatter(data, seed=4, drop=drop, stale=2, bad=2)
    result = carve_mdf(BytesSpace(image), str(tmp_path / "out"))
    f = result.files[0]
    assert f.missing_pages == sorted(drop)
    assert f.allocation_ranges[0]["missing"] == len(drop)
    assert hashlib.sha256(open(f.path, "rb").read()).hexdigest() != sha
    # every owner named agrees with the dropped page's own header (the truth we hid)
    for owner in f.missing_owners:
        hdr = page_header.parse(data[owner["page"] * PAGE_SIZE:])
        assert (owner["m_objId"], owner["m_indexId"]) == (hdr.m_objId, hdr.m_indexId)
        assert owner["source"] == "iam"


def test_iam_pages_agree_with_page_headers(mdf):
    """What the IAM bitmaps and single-page slots map matches each page's own header."""
    data, (_, npages, *_r) = mdf
    chosen, _, _ = choose_copies(list(find_pages(BytesSpace(data))))
    allocated = set(pfs_allocated(data[PAGE_SIZE: 2 * PAGE_SIZE], 0, npages))
    mapped = 0
    for c in chosen.values():
        if c.page_type != 10:
            continue
        # pages the PFS calls free may hold a dropped object's leftovers: only allocated ones
        for p in allocated & iam_pages(data[c.page_id * PAGE_SIZE:(c.page_id + 1) * PAGE_SIZE],
                                       1, npages):
            h = chosen.get(p)
            if h is None:       # a never-written page of an allocated extent: all zeros
                assert data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE].count(0) == PAGE_SIZE
                continue
            assert (h.obj_id, h.index_id) == (c.obj_id, c.index_id), p
            mapped += 1
    assert mapped > 80


def test_damaged_copy_names_owner_when_no_valid_copy(tmp_path):
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    allocated = pfs_allocated(data[PAGE_SIZE: 2 * PAGE_SIZE], 0, len(data) // PAGE_SIZE)
    victim = next(p for p in allocated if p > 100
                  and struct.unpack_from("<H", data, p * PAGE_SIZE + 4)[0] & FLAG_CHECKSUM)
    pages = _pages(data)
    pages[victim] = _bad_copy(pages[victim])            # only a damaged copy survives
    result = carve_mdf(BytesSpace(b"".join(pages)), str(tmp_path / "o"))
    f = result.files[0]
    assert f.missing_pages == [victim]
    assert f.missing_owners[0]["page"] == victim
    hdr = page_header.parse(data[victim * PAGE_SIZE:])
    assert f.missing_owners[0]["m_objId"] == hdr.m_objId


def test_inside_a_vhd_inside_shuffled_extents(tmp_path):
    """Pages inside a VDI: a VHD (core.vhd.build) whose virtual disk holds the pages, laid in
    an LV whose extents are out of order on the disk; carved through the virtual disk."""
    vhd_build = pytest.importorskip("core.vhd.build")
    reader = pytest.importorskip("core.vhd.reader")
    data = fixture_bytes("mdf/dotnetnuke/Database.mdf.gz")
    sha = FIXTURES["mdf/dotnetnuke/Database.mdf.gz"][0]
    payload, _ = scatter(data, seed=21, stale=2, bad=2)
    block = 2 << 20
    virtual = -(-(len(payload) + 4096) // block) * block
    disk = bytearray(virtual)
    disk[4096: 4096 + len(payload)] = payload           # 4 KiB aligned like a partition
    blocks = {i: bytes(disk[i * block:(i + 1) * block]) for i in range(virtual // block)
              if any(disk[i * block:(i + 1) * block])}
    built = vhd_build.build_vhd(virtual, blocks, layout="qemu")
    vhd = built.data
    extent = 1 << 20
    n = -(-len(vhd) // extent)
    vhd = vhd + bytes(n * extent - len(vhd))
    order = list(range(n))
    random.Random(2).shuffle(order)                     # LE i lives at PE order[i]
    lvdisk = bytearray(os.urandom(extent)) + bytearray(n * extent)
    for le, pe in enumerate(order):
        lvdisk[extent + pe * extent: extent + (pe + 1) * extent] = vhd[le * extent:(le + 1) * extent]
    base = BytesSpace(bytes(lvdisk))
    lv = extent_space(base, extent, extent, order, name="VHD-test")
    # the footer sits at the VHD end, not the LV end: hand the reader the VHD's own length
    from core.spaces import RunList
    lv_exact = RunList(base, lv.runs, size=len(built.data))
    space = reader.VhdImage.open(lv_exact, name="VHD-test").virtual_space()
    result = carve_mdf(space, str(tmp_path / "out"))
    assert hashlib.sha256(open(result.files[0].path, "rb").read()).hexdigest() == sha


def test_cli_json_contract_and_refusals(tmp_path):
    from app.cli import main
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    image, _ = scatter(data, seed=8, drop={100, 101}, stale=1, bad=1)
    img = tmp_path / "disk.img"
    img.write_bytes(image)
    out = tmp_path / "carved"
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["carve-mdf", str(img), "-o", str(out), "--json"])
    assert rc == 0
    doc = json.loads(buf.getvalue())
    f = doc["files"][0]
    for key in ("database", "file_id", "path", "pages_written", "sql_server_version",
                "missing_pages", "conflicting_pages", "bad_checksum_copies"):
        assert key in f
    assert f["file_id"] == 1 and f["sql_server_version"] == 706
    assert os.path.exists(f["path"])
    allocated = set(pfs_allocated(data[PAGE_SIZE: 2 * PAGE_SIZE], 0, 400))
    assert f["missing_pages"] == sorted({100, 101} & allocated)
    assert f["bad_checksum_copies"] == 1
    assert set(f["conflicting_pages"][0]) >= {"page", "copies", "chosen_offset"}
    # a second run would overwrite the data file: refused, exit 3
    with redirect_stdout(io.StringIO()):
        assert main(["carve-mdf", str(img), "-o", str(out), "--json"]) == 3
    # the output directory may not be the evidence
    assert main(["carve-mdf", str(img), "-o", str(img)]) == 3


# -- garbage never raises ---------------------------------------------------------------------
hot_offsets = st.one_of(st.integers(0, 200), st.integers(8100, PAGE_SIZE - 1),
                       st.integers(0, PAGE_SIZE - 1))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 1, 9, 12, 26, 108, 150]),
       st.lists(st.tuples(hot_offsets, st.integers(0, 255)), max_size=30))
def test_hypothesis_page_parsers_total(page_id, mutations):
    """Real file-header, PFS, boot and IAM pages with bytes changed (slot arrays, record
    headers, column offsets): the parsers answer or return None, never raise."""
    data = _FIX_CACHE.setdefault("i", fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz"))
    buf = bytearray(data[page_id * PAGE_SIZE:(page_id + 1) * PAGE_SIZE])
    for off, val in mutations:
        buf[off] = val
    page = bytes(buf)
    verify_page(page, 0, lambda o, n: b"")
    verify_page(page[:700], 0, lambda o, n: b"")
    read_boot_page(page)
    file_header_size_pages(page)
    pfs_allocated(page, 0, 8088)
    iam_pages(page, 1, 1 << 20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, PAGE_SIZE * 3), st.integers(0, 255)), max_size=40),
       st.integers(0, 2))
def test_hypothesis_mutated_images_carve_without_error(tmp_path_factory, mutations, cut):
    data = _FIX_CACHE.setdefault("d", fixture_bytes("mdf/dotnetnuke/Database.mdf.gz"))
    image = bytearray(data[: PAGE_SIZE * 24])
    for off, val in mutations:
        if off < len(image):
            image[off] = val
    image = bytes(image[: len(image) - cut * 1000])
    out = tmp_path_factory.mktemp("m")
    result = carve_mdf(BytesSpace(image), str(out))
    for f in result.files:
        assert os.path.getsize(f.path) == f.length


_FIX_CACHE: dict[str, bytes] = {}


def test_torn_page_protection():
    """Flag 0x100: the 2-bit write pattern at the end of every sector must agree."""
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    page = bytearray(data[100 * PAGE_SIZE:101 * PAGE_SIZE])
    struct.pack_into("<H", page, 4, 0x0100)              # torn-page protected, no checksum
    for s in range(16):
        page[s * 512 + 511] = (page[s * 512 + 511] & ~3) | 1
    good = bytes(page)
    page[7 * 512 + 511] ^= 3                              # sector 7 from another write
    torn = bytes(page)
    image = b"".join([bytes(4096), good, bytes(512), torn, bytes(4096)])
    copies = list(find_pages(BytesSpace(image)))
    assert [(c.protection, c.valid) for c in copies] == [("torn", True), ("torn", False)]
    assert torn_bits_consistent(good) and not torn_bits_consistent(torn)


def test_two_databases_in_one_image_are_reported_not_hidden(tmp_path):
    a = fixture_bytes("mdf/dotnetnuke/Database.mdf.gz")
    b = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    result = carve_mdf(BytesSpace(a + bytes(4096) + b), str(tmp_path / "o"))
    (f,) = result.files
    names = {f.database, *f.other_databases}
    assert names == {FIXTURES["mdf/dotnetnuke/Database.mdf.gz"][2],
                     FIXTURES["mdf/ITHelpdesk/Database.mdf.gz"][2]}
    assert len(f.conflicting_pages) > 50                 # both files' pages 0..n collide


def test_no_pages_no_files(tmp_path):
    junk = random.Random(0).randbytes(1 << 20)
    result = carve_mdf(BytesSpace(junk), str(tmp_path / "o"))
    assert result.files == [] and not os.path.exists(tmp_path / "o")


def test_same_lsn_versions_are_a_conflict_the_lsn_cannot_settle(tmp_path):
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    pages = _pages(data)
    victim = 120
    twin = bytearray(pages[victim])
    twin[6000] ^= 0x11                                     # same LSN, other content, valid
    twin = _reseal(bytes(twin))
    image = b"".join(pages) + bytes(512) + twin
    result = carve_mdf(BytesSpace(image), str(tmp_path / "o"))
    f = result.files[0]
    (c,) = f.conflicting_pages
    assert (c.page, c.copies, c.reason) == (victim, 2, "same-lsn")
    assert c.chosen_offset == victim * PAGE_SIZE          # the earlier copy, said as such


# -- the vectorised choice against a plain reference -------------------------------------------
copy_rows = st.lists(st.tuples(st.integers(0, 6),          # page id
                               st.integers(0, 3), st.integers(0, 3), st.integers(0, 2),  # lsn
                               st.booleans(),               # valid
                               st.integers(0, 2)),          # content version
                     max_size=40)


@settings(max_examples=150, deadline=None)
@given(copy_rows)
def test_hypothesis_choose_matches_reference(rows):
    from core.carve.mssql import COPY_DTYPE, choose
    recs = np.zeros(len(rows), dtype=COPY_DTYPE)
    for i, (page, a, b, c, valid, version) in enumerate(rows):
        recs[i]["offset"] = 1000 + i * 512
        recs[i]["page_id"], recs[i]["file_id"], recs[i]["valid"] = page, 1, valid
        recs[i]["lsn_vlf"], recs[i]["lsn_block"], recs[i]["lsn_slot"] = a, b, c
        recs[i]["digest"] = version
    ch = choose(recs)
    # reference: per page the valid copy with the highest (vlf, block, slot), earliest offset
    best: dict[int, int] = {}
    for i, (page, a, b, c, valid, _v) in enumerate(rows):
        if not valid:
            continue
        j = best.get(page)
        if j is None or (a, b, c) > rows[j][1:4]:
            best[page] = i
    assert ch.pages.tolist() == sorted(best)
    assert [int(r) for r in ch.rows] == [best[p] for p in sorted(best)]
    assert ch.bad == sum(1 for r in rows if not r[4])
    versions = {p: {r[5] for r in rows if r[0] == p and r[4]} for p in best}
    assert sorted(c.page for c in ch.conflicts) == sorted(p for p, v in versions.items()
                                                          if len(v) > 1)
    for c in ch.conflicts:
        chosen = rows[best[c.page]]
        tie = any(r[0] == c.page and r[4] and r[1:4] == chosen[1:4] and r[5] != chosen[5]
                  for r in rows)
        assert c.reason == ("same-lsn" if tie else "newer-lsn")
        assert c.chosen_offset == 1000 + best[c.page] * 512


def test_without_file_header_length_is_highest_page(tmp_path):
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    pages = _pages(data)
    pages[0] = bytes(PAGE_SIZE)                      # the file header page is gone
    result = carve_mdf(BytesSpace(b"".join(pages)), str(tmp_path / "o"))
    f = result.files[0]
    last = max(i for i, p in enumerate(pages) if p.count(0) != PAGE_SIZE)
    assert f.length == (last + 1) * PAGE_SIZE < len(data)
    assert 0 in f.missing_pages                      # PFS says page 0 is allocated


def test_secondary_file_gets_its_own_ndf(tmp_path):
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    moved = []
    for p in _pages(data)[100:110]:
        if p.count(0) == PAGE_SIZE:
            continue
        buf = bytearray(p)
        struct.pack_into("<H", buf, 36, 3)            # m_fileId 3
        moved.append(_reseal(bytes(buf)) if struct.unpack_from("<H", buf, 4)[0]
                     & FLAG_CHECKSUM else bytes(buf))
    result = carve_mdf(BytesSpace(data + b"".join(moved)), str(tmp_path / "o"))
    by_id = {f.file_id: f for f in result.files}
    assert set(by_id) == {1, 3}
    assert by_id[3].path.endswith("_file3.ndf") and by_id[3].pages_written == len(moved)
    assert hashlib.sha256(open(by_id[1].path, "rb").read()).hexdigest() == \
        FIXTURES["mdf/ITHelpdesk/Database.mdf.gz"][0]


@pytest.mark.slow
def test_cli_bad_sources_are_one_line(tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cmd in ("carve-mdf", "carve-rar"):
        for source in (str(tmp_path / "nope.img"), str(tmp_path)):
            p = subprocess.run([sys.executable, "-m", "app.cli", cmd, source, "-o",
                                str(tmp_path / "out")], cwd=root, capture_output=True, text=True)
            assert p.returncode == 1, p.stderr
            assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        p = subprocess.run([sys.executable, "-m", "app.cli", cmd, str(tmp_path)], cwd=root,
                           capture_output=True, text=True)
        assert p.returncode == 2                       # -o is required: usage error


def test_cancel_while_writing_leaves_nothing(tmp_path):
    import threading
    from core.errors import Cancelled
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    cancel = threading.Event()

    def progress(update):
        if update.label.startswith("writing"):
            cancel.set()                                  # the technician presses Esc now

    out = tmp_path / "o"
    with pytest.raises(Cancelled):
        carve_mdf(BytesSpace(data), str(out), cancel=cancel, progress=progress)
    assert list(out.iterdir()) == []                      # no data file, no .part left over
