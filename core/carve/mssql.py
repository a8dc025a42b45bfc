"""SQL Server page carving and data-file reassembly.

Pages are found by header plausibility (formats.md 5.3 carving hint) at every 512-byte boundary
of a space - the disk, an LV or a VDI's virtual disk: a page inside a VHD is 8 KiB aligned in
the virtual disk but, with 4 KiB aligned VHD blocks, not necessarily on the disk. The test runs
vectorised over each window (`page_prefilter`); only candidates are decoded, and their checksums
are computed for a whole batch at once with numpy.

Copies are kept as compact numpy records (COPY_DTYPE, 43 bytes each) and chosen with numpy
sorts, so a disk full of pages does not become millions of Python objects. Reassembly groups
the copies by m_fileId, picks per page the best copy (a copy whose checksum or
torn bits hold, then the highest m_lsn), and writes each page at m_pageId * 8192 of a new data
file, holes zero-filled, as long as its highest page or as its file header says. The report
gives the database name and version from the boot page (1:9), the pages its PFS pages mark
allocated that no valid copy was found for, per PFS range, the allocation unit those missing
pages belonged to where an IAM page or a damaged copy says so, and the pages for which several
different valid copies were found.

Several databases on one disk all have a file 1 and page headers do not name their database:
their pages cannot be told apart, and show up as conflicts (and several boot pages are reported).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from core.carve.windows import DEFAULT_WINDOW, space_windows
from core.kinds import Kind, Verdict, register
from core.errors import Cancelled, SrsalvageError, UnsafeError
from core.output import AtomicOutput, hash_file
from core.progress import ProgressFn, Ticker
from core.spaces import ByteSpace
from core.structs.mssql import (
    BOOT_PAGE_ID, BOOT_RECORD_SIZE, FILE_HEADER_SIZE_COLUMN, FLAG_CHECKSUM, FLAG_TORN_PAGE,
    GAM_INTERVAL, IAM_BITMAP_BYTES, IAM_START_PAGE_OFFSET, PAGE_HEADER_DTYPE,
    PAGE_HEADER_SIZE, PAGE_SIZE, PAGE_TYPES, PFS_ALLOCATED, PFS_INTERVAL, SECTORS_PER_PAGE,
    SQL_VERSIONS, TYPE_BOOT, TYPE_FILE_HEADER, TYPE_IAM, TYPE_PFS, boot_record, decode_dbname,
    iam_header, page_checksums,
)

SCAN_ALIGN = 512
UNVERIFIED_REACH = 65536       # pages (512 MiB) an unprotected page may lie past the verified end

_TYPE_OK = np.zeros(256, dtype=bool)
_TYPE_OK[list(PAGE_TYPES)] = True


# -- finding candidates ------------------------------------------------------------------------
def page_prefilter(window: np.ndarray, base: int = 0) -> np.ndarray:
    """Window-relative offsets (multiples of 512) where an 8 KiB page header is plausible:
    m_headerVersion 1, a known m_type, 96 <= m_freeData <= 8192 and the slot array fitting
    (m_slotCnt * 2 + m_freeData <= 8192). No Python loop: one pass of numpy over the window."""
    rows = len(window) // SCAN_ALIGN
    if rows == 0:
        return np.zeros(0, dtype=np.int64)
    view = window[: rows * SCAN_ALIGN].reshape(rows, SCAN_ALIGN)
    first = view[:, 0]
    hit = np.flatnonzero(first == 1)
    if hit.size == 0:
        return hit.astype(np.int64)
    hit = hit[_TYPE_OK[view[hit, 1]]]
    if hit.size == 0:
        return hit.astype(np.int64)
    heads = view[hit, 22:32].astype(np.uint32)
    slot_cnt = heads[:, 0] | (heads[:, 1] << 8)
    free_data = heads[:, 8] | (heads[:, 9] << 8)
    ok = (free_data >= PAGE_HEADER_SIZE) & (free_data <= PAGE_SIZE) \
        & (slot_cnt * 2 + free_data <= PAGE_SIZE)
    return (hit[ok] * SCAN_ALIGN).astype(np.int64)


@dataclass(frozen=True, slots=True)
class PageCopy:
    """One copy of a page found in the space."""

    offset: int                 # in the scanned space
    file_id: int
    page_id: int
    page_type: int
    lsn: tuple[int, int, int]
    flag_bits: int
    protection: str             # "checksum" | "torn" | "none"
    valid: bool                 # checksum / torn bits hold (always True with "none")
    digest: bytes               # of the content, for pages found more than once (fill_digests)
    obj_id: int
    index_id: int

    @property
    def alloc_unit_id(self) -> int:
        # (idInd << 48) | (idObj << 16) - formats.md 5.1 [U]
        return (self.index_id << 48) | (self.obj_id << 16)


# One page copy as a numpy record: 43 bytes, so millions of copies stay small in memory.
COPY_DTYPE = np.dtype([
    ("offset", "<u8"), ("file_id", "<u2"), ("page_id", "<u4"), ("page_type", "u1"),
    ("lsn_vlf", "<u4"), ("lsn_block", "<u4"), ("lsn_slot", "<u2"), ("flag_bits", "<u2"),
    ("protection", "u1"), ("valid", "?"), ("digest", "<u8"), ("obj_id", "<u4"),
    ("index_id", "<u2"),
])
PROTECTIONS = ("none", "checksum", "torn")


def copy_of_record(rec: np.void) -> PageCopy:
    """One record (COPY_DTYPE) as a PageCopy."""
    return PageCopy(
        offset=int(rec["offset"]), file_id=int(rec["file_id"]), page_id=int(rec["page_id"]),
        page_type=int(rec["page_type"]),
        lsn=(int(rec["lsn_vlf"]), int(rec["lsn_block"]), int(rec["lsn_slot"])),
        flag_bits=int(rec["flag_bits"]), protection=PROTECTIONS[int(rec["protection"])],
        valid=bool(rec["valid"]), digest=int(rec["digest"]).to_bytes(8, "little"),
        obj_id=int(rec["obj_id"]), index_id=int(rec["index_id"]))


def records_of(copies: Iterable[PageCopy]) -> np.ndarray:
    """PageCopy objects back to records (for callers holding a list of copies)."""
    rows = [(c.offset, c.file_id, c.page_id, c.page_type, *c.lsn, c.flag_bits,
             PROTECTIONS.index(c.protection), c.valid, int.from_bytes(c.digest, "little"),
             c.obj_id, c.index_id) for c in copies]
    return np.array(rows, dtype=COPY_DTYPE) if rows else np.zeros(0, dtype=COPY_DTYPE)


def _analyse_batch(pages: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode and verify a (k, 8192) batch of candidate pages into k records."""
    k = pages.shape[0]
    out = np.zeros(k, dtype=COPY_DTYPE)
    if k == 0:
        return out
    heads = np.ascontiguousarray(pages[:, :PAGE_HEADER_SIZE]).view(PAGE_HEADER_DTYPE).reshape(k)
    words = pages.view("<u4").reshape(k, SECTORS_PER_PAGE, 128)
    stored = heads["m_tornBits"]
    checksum_ok = page_checksums(words) == stored
    # Totopolis leaves the reserved bytes 64..95 out; the same unless they are non-zero
    odd = np.flatnonzero(~checksum_ok & pages[:, 64:96].any(axis=1))
    if odd.size:
        checksum_ok[odd] = page_checksums(words[odd], skip_reserved=True) == stored[odd]
    marks = pages[:, PAGE_SIZE // SECTORS_PER_PAGE - 1::PAGE_SIZE // SECTORS_PER_PAGE] & 3
    torn_ok = (marks == marks[:, :1]).all(axis=1) & ((marks[:, 0] == 1) | (marks[:, 0] == 2))
    flags = heads["m_flagBits"]
    has_sum = (flags & FLAG_CHECKSUM) != 0
    has_torn = ~has_sum & ((flags & FLAG_TORN_PAGE) != 0)
    out["offset"] = offsets
    out["file_id"] = heads["m_fileId"]
    out["page_id"] = heads["m_pageId"]
    out["page_type"] = heads["m_type"]
    out["lsn_vlf"] = heads["m_lsn_vlf"]
    out["lsn_block"] = heads["m_lsn_block"]
    out["lsn_slot"] = heads["m_lsn_slot"]
    out["flag_bits"] = flags
    out["protection"] = np.where(has_sum, 1, np.where(has_torn, 2, 0))
    out["valid"] = np.where(has_sum, checksum_ok, np.where(has_torn, torn_ok, True))
    out["obj_id"] = heads["m_objId"]
    out["index_id"] = heads["m_indexId"]
    # "digest" stays 0 here: only pages found more than once need one (fill_digests)
    return out


# the verification of a batch of pages, also used on whole data files (core.mssql.pages)
analyse_batch = _analyse_batch


PAGE_OVERLAP = PAGE_SIZE - SCAN_ALIGN     # a window runs this far past its own part


def page_records_in_window(read: Callable[[int, int], bytes], base: int, view: np.ndarray,
                           own: int, ticker: Ticker | None = None) -> Iterator[np.ndarray]:
    """Batches (COPY_DTYPE) of the plausible page copies starting in view[:own] (the view at
    absolute `base` runs PAGE_OVERLAP further, clipped at the end of the space). One window of
    find_page_records, also fed by the evidence index's one pass (core.evidence_index)."""
    view = view[: own + PAGE_OVERLAP]
    rel = page_prefilter(view, base)
    rel = rel[rel < own]                        # later hits belong to the next window
    if rel.size == 0:
        return
    whole = rel[rel + PAGE_SIZE <= len(view)]
    if whole.size:
        nrows = (len(view) - PAGE_SIZE) // SCAN_ALIGN + 1
        strided = np.lib.stride_tricks.as_strided(
            view, shape=(nrows, PAGE_SIZE), strides=(SCAN_ALIGN, 1), writeable=False)
        for chunk in range(0, whole.size, 2048):    # bounded batch memory (16 MiB)
            if ticker is not None:
                ticker.check()
            sel = whole[chunk: chunk + 2048]
            pages = np.ascontiguousarray(strided[sel // SCAN_ALIGN])
            yield _analyse_batch(pages, base + sel)
    # a page cut off by the end of the space: decoded (its tail reads as zeros) but never
    # valid
    for r in rel[rel + PAGE_SIZE > len(view)]:
        data = read(base + int(r), PAGE_SIZE)
        page = np.frombuffer(data + bytes(PAGE_SIZE - len(data)), dtype=np.uint8)
        rec = _analyse_batch(page.reshape(1, PAGE_SIZE), np.array([base + int(r)]))
        rec["valid"] = False
        yield rec


def find_page_records(space: ByteSpace, start: int = 0, end: int | None = None,
                      cancel: threading.Event | None = None,
                      progress: ProgressFn | None = None,
                      window: int = DEFAULT_WINDOW) -> Iterator[np.ndarray]:
    """Batches (COPY_DTYPE arrays) of every plausible page copy in [start, end), in offset
    order. Candidates come from `page_prefilter`; checksums are computed per batch."""
    end = space.size if end is None else min(end, space.size)
    ticker = Ticker(max(0, end - start), "mssql pages", progress, cancel)
    overlap = PAGE_OVERLAP
    for base, view, own in space_windows(space, start, end, window=window, overlap=overlap):
        ticker.tick(max(0, base - start))
        yield from page_records_in_window(space.read, base, view, own, ticker)
    ticker.done()


def find_pages(space: ByteSpace, start: int = 0, end: int | None = None,
               cancel: threading.Event | None = None, progress: ProgressFn | None = None,
               window: int = DEFAULT_WINDOW) -> Iterator[PageCopy]:
    """Every plausible page copy in [start, end) of `space`, in offset order (as objects)."""
    for batch in find_page_records(space, start, end, cancel, progress, window):
        for rec in batch:
            yield copy_of_record(rec)


# -- the scan kind -------------------------------------------------------------------------------
def verify_page(data: bytes, offset: int, read: Callable[[int, int], bytes]) -> Verdict | None:
    """Kind verify: one candidate page (data holds up to 8192 bytes from the candidate)."""
    if len(data) < PAGE_SIZE:
        data = data + read(offset + len(data), PAGE_SIZE - len(data))
    if len(data) < PAGE_HEADER_SIZE:
        return None
    arr = np.frombuffer(data[:PAGE_SIZE] + bytes(max(0, PAGE_SIZE - len(data))), dtype=np.uint8)
    if page_prefilter(arr[:SCAN_ALIGN]).size == 0:
        return None
    rec = _analyse_batch(arr.reshape(1, PAGE_SIZE), np.array([offset]))
    if len(data) < PAGE_SIZE:
        rec["valid"] = False
    copy = copy_of_record(rec[0])
    return Verdict(copy.valid, PAGE_SIZE, {
        "page_id": copy.page_id, "file_id": copy.file_id,
        "type": PAGE_TYPES.get(copy.page_type, str(copy.page_type)),
        "lsn": "%d:%d:%d" % copy.lsn, "protection": copy.protection,
        "obj_id": copy.obj_id, "index_id": copy.index_id})


MSSQL_PAGE = register(Kind(
    name="mssql-page",
    description="SQL Server 8 KiB data-file page (header plausibility, checksum verified)",
    verify=verify_page, prefilter=page_prefilter, align=SCAN_ALIGN, length=PAGE_SIZE,
    default=False, group="carve"))


# -- reading records inside a page ------------------------------------------------------------
def slot_offset(page: bytes, slot: int) -> int | None:
    """Offset of record `slot` from the slot array at the page end, or None if implausible."""
    pos = PAGE_SIZE - 2 * (slot + 1)
    if pos < PAGE_HEADER_SIZE or len(page) < PAGE_SIZE:
        return None
    off = struct.unpack_from("<H", page, pos)[0]
    return off if PAGE_HEADER_SIZE <= off < PAGE_SIZE else None


def read_boot_page(page: bytes) -> dict[str, Any] | None:
    """Database name and versions from the boot page record (slot 0)."""
    off = slot_offset(page, 0)
    if off is None or off + BOOT_RECORD_SIZE > PAGE_SIZE:
        return None
    rec = boot_record.parse(page[off: off + BOOT_RECORD_SIZE])
    return {"database": decode_dbname(rec.dbi_dbname), "dbi_version": rec.dbi_version,
            "dbi_createVersion": rec.dbi_createVersion, "dbi_dbid": rec.dbi_dbid}


def file_header_size_pages(page: bytes) -> int | None:
    """File size in pages from the file header record (variable column 4; formats.md 5.2 note),
    None when the record does not parse. Every offset is bounded by the page."""
    rec = slot_offset(page, 0)
    if rec is None or rec + 4 > PAGE_SIZE:
        return None
    fixed_end = struct.unpack_from("<H", page, rec + 2)[0]
    pos = rec + fixed_end
    if fixed_end < 4 or pos + 2 > PAGE_SIZE:
        return None
    ncols = struct.unpack_from("<H", page, pos)[0]
    pos += 2 + (ncols + 7) // 8
    if pos + 2 > PAGE_SIZE:
        return None
    nvar = struct.unpack_from("<H", page, pos)[0]
    col = FILE_HEADER_SIZE_COLUMN
    if nvar <= col or pos + 2 + 2 * nvar > PAGE_SIZE:
        return None
    ends = struct.unpack_from("<%dH" % nvar, page, pos + 2)
    begin = pos + 2 + 2 * nvar - rec if col == 0 else ends[col - 1] & 0x7FFF
    stop = ends[col] & 0x7FFF
    if stop - begin != 4 or rec + stop > PAGE_SIZE:
        return None
    return struct.unpack_from("<I", page, rec + begin)[0]


def pfs_allocated(page: bytes, first_page: int, count: int) -> list[int] | None:
    """Pages the PFS page marks allocated, for the `count` pages from `first_page`."""
    off = slot_offset(page, 0)
    if off is None:
        return None
    body = page[off + 4: off + 4 + count]
    return [first_page + i for i, b in enumerate(body) if b & PFS_ALLOCATED]


def iam_pages(page: bytes, file_id: int, limit: int) -> set[int]:
    """Pages of file `file_id` (below `limit`) an IAM page maps: its single-page slots and every
    page of the extents set in its bitmap."""
    head = iam_header.parse(page[IAM_START_PAGE_OFFSET: IAM_START_PAGE_OFFSET + iam_header.sizeof()])
    out = {p.m_pageId for p in head.single_pages if p.m_fileId == file_id and 0 < p.m_pageId < limit}
    bitmap_record = slot_offset(page, 1)
    if head.start_pg.m_fileId != file_id or bitmap_record is None:
        return out
    # the extent bitmap is record (slot) 1 after its 4-byte record header: at 194 in the
    # InternalsViewer layout, at 196 in some pages of the shared fixtures - follow the slot
    start = bitmap_record + 4
    bitmap = np.frombuffer(page[start: min(PAGE_SIZE, start + IAM_BITMAP_BYTES)], np.uint8)
    bits = np.flatnonzero(np.unpackbits(bitmap, bitorder="little"))
    first_extent = head.start_pg.m_pageId // 8
    for extent in bits[: GAM_INTERVAL // 8]:
        base = (first_extent + int(extent)) * 8
        if base >= limit:
            break
        out.update(range(base, min(limit, base + 8)))
    return out


# -- reassembly ---------------------------------------------------------------------------------
@dataclass
class Conflict:
    page: int
    copies: int                     # distinct valid versions found
    chosen_offset: int
    reason: str                     # "newer-lsn" | "same-lsn"

    def to_json(self) -> dict[str, Any]:
        return {"page": self.page, "copies": self.copies, "chosen_offset": self.chosen_offset,
                "reason": self.reason}


@dataclass
class FileReport:
    file_id: int
    database: str | None
    path: str
    pages_written: int
    sql_server_version: int | None
    create_version: int | None
    length: int
    sha256: str
    missing_pages: list[int]
    conflicting_pages: list[Conflict]
    bad_checksum_copies: int
    allocation_ranges: list[dict[str, Any]]
    missing_owners: list[dict[str, Any]]
    other_databases: list[str] = field(default_factory=list)
    ignored_unverified_pages: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database, "file_id": self.file_id, "path": self.path,
            "pages_written": self.pages_written, "sql_server_version": self.sql_server_version,
            "sql_server_release": SQL_VERSIONS.get(self.sql_server_version or -1),
            "create_version": self.create_version,
            "missing_pages": self.missing_pages,
            "conflicting_pages": [c.to_json() for c in self.conflicting_pages],
            "bad_checksum_copies": self.bad_checksum_copies,
            "bytes": self.length, "sha256": self.sha256,
            "allocation_ranges": self.allocation_ranges,
            "missing_owners": self.missing_owners,
            "other_databases": self.other_databases,
            "ignored_unverified_pages": self.ignored_unverified_pages,
        }


@dataclass
class Choice:
    """The best copy of each page of one file, as arrays (millions of pages stay small)."""

    records: np.ndarray             # every copy of the file (COPY_DTYPE)
    pages: np.ndarray               # chosen page ids, ascending (uint32)
    rows: np.ndarray                # index into `records` of each chosen copy
    conflicts: list[Conflict]
    bad: int                        # copies whose checksum / torn bits fail

    def row_of(self, page_id: int) -> int | None:
        i = int(np.searchsorted(self.pages, page_id))
        if i < len(self.pages) and int(self.pages[i]) == page_id:
            return int(self.rows[i])
        return None

    def copy_of(self, page_id: int) -> PageCopy | None:
        row = self.row_of(page_id)
        return None if row is None else copy_of_record(self.records[row])

    def keep(self, mask: np.ndarray) -> None:
        self.pages, self.rows = self.pages[mask], self.rows[mask]


def choose(records: np.ndarray) -> Choice:
    """Best copy per page id: valid copies only, the highest LSN, ties by the earliest offset.
    A page with several different valid versions is a conflict (reason "newer-lsn" when the LSN
    decided, "same-lsn" when it could not)."""
    valid_rows = np.flatnonzero(records["valid"])
    bad = int(len(records) - len(valid_rows))
    if valid_rows.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Choice(records, empty.astype(np.uint32), empty, [], bad)
    v = records[valid_rows]
    order = np.lexsort((v["offset"], -v["lsn_slot"].astype(np.int64),
                        -v["lsn_block"].astype(np.int64), -v["lsn_vlf"].astype(np.int64),
                        v["page_id"]))
    sorted_pages = v["page_id"][order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_pages[1:] != sorted_pages[:-1]
    pages = sorted_pages[first]
    rows = valid_rows[order[first]]
    # versions per page: distinct (page, digest) pairs among the valid copies
    pairs = np.unique(np.stack([v["page_id"].astype(np.uint64), v["digest"]], axis=1), axis=0)
    ids, counts = np.unique(pairs[:, 0], return_counts=True)
    conflicts = []
    for page_id, n in zip(ids[counts > 1].tolist(), counts[counts > 1].tolist()):
        best = records[rows[np.searchsorted(pages, page_id)]]
        group = v[v["page_id"] == page_id]
        same_lsn = (group["lsn_vlf"] == best["lsn_vlf"]) & (group["lsn_block"] == best["lsn_block"]) \
            & (group["lsn_slot"] == best["lsn_slot"]) & (group["digest"] != best["digest"])
        conflicts.append(Conflict(int(page_id), int(n), int(best["offset"]),
                                  "same-lsn" if same_lsn.any() else "newer-lsn"))
    return Choice(records, pages.astype(np.uint32), rows.astype(np.int64), conflicts, bad)


def choose_copies(copies: Iterable[PageCopy]) -> tuple[dict[int, PageCopy], list[Conflict], int]:
    """choose() for a list of PageCopy objects: ({page id: chosen copy}, conflicts, bad)."""
    c = choose(records_of(copies))
    return ({int(p): copy_of_record(c.records[r]) for p, r in zip(c.pages, c.rows)},
            c.conflicts, c.bad)


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:100] or "database"


@dataclass
class MdfCarveResult:
    files: list[FileReport]
    pages_found: int
    scanned: int
    failed: list[dict[str, Any]] = field(default_factory=list)   # files that could not be written

    def to_json(self) -> dict[str, Any]:
        return {"files": [f.to_json() for f in self.files], "pages_found": self.pages_found,
                "scanned": self.scanned, "failed": self.failed}


def fill_digests(space: ByteSpace, recs: np.ndarray) -> None:
    """Content digests (blake2b, 8 bytes) of the valid copies of pages found more than once:
    they tell identical copies from different versions. Pages found once need none, so a
    disk of pages is not hashed twice."""
    valid = np.flatnonzero(recs["valid"])
    if valid.size < 2:
        return
    key = (recs["file_id"][valid].astype(np.uint64) << np.uint64(32)) \
        | recs["page_id"][valid].astype(np.uint64)
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    for row in valid[counts[inverse] > 1].tolist():
        data = space.read(int(recs["offset"][row]), PAGE_SIZE)
        recs["digest"][row] = int.from_bytes(
            hashlib.blake2b(data, digest_size=8).digest(), "little")


def collect_records(batches: Iterable[np.ndarray]) -> np.ndarray:
    """All copies in offset order, without the false hits inside a checksum-valid page: a page
    whose checksum holds is real (a false match is ~2^-32), so a candidate starting inside it is
    row data that happens to look like a header."""
    parts = [b for b in batches if len(b)]
    if not parts:
        return np.zeros(0, dtype=COPY_DTYPE)
    recs = np.concatenate(parts)
    recs = recs[np.argsort(recs["offset"], kind="stable")]
    real = recs["offset"][recs["valid"] & (recs["protection"] == 1)]
    if real.size:
        j = np.searchsorted(real, recs["offset"], side="left") - 1
        inside = (j >= 0) & (recs["offset"] < real[np.maximum(j, 0)] + PAGE_SIZE)
        recs = recs[~inside]
    return recs


def carve_mdf(space: ByteSpace, out_dir: str, evidence_paths: Iterable[str] = (),
              cancel: threading.Event | None = None, progress: ProgressFn | None = None,
              start: int = 0, end: int | None = None, window: int = DEFAULT_WINDOW,
              max_pages: int = 1 << 31,
              copies: Iterable[PageCopy] | np.ndarray | None = None) -> MdfCarveResult:
    """Scan `space` for pages and write one reassembled data file per file id into `out_dir`.

    `copies` (records or PageCopy objects from an earlier scan of the same space) skips the
    scan. Memory: 43 bytes per page copy found, whatever the size of the space.
    """
    evidence_paths = list(evidence_paths)
    if copies is None:
        recs = collect_records(find_page_records(space, start, end, cancel, progress, window))
    elif isinstance(copies, np.ndarray):
        recs = collect_records([copies])
    else:
        recs = collect_records([records_of(copies)])
    fill_digests(space, recs)
    scanned = (space.size if end is None else min(end, space.size)) - start
    file_ids = [int(f) for f in np.unique(recs["file_id"])
                if recs["valid"][recs["file_id"] == f].any()]   # no valid copy: noise
    if not file_ids:
        return MdfCarveResult([], len(recs), scanned)
    os.makedirs(out_dir, exist_ok=True)
    names_used: set[str] = set()
    boot_info = _boot_pages(space, recs[recs["file_id"] == 1])
    reports, failed = [], []
    for fid in file_ids:
        try:
            reports.append(_assemble_file(space, out_dir, fid, recs[recs["file_id"] == fid],
                                          boot_info, names_used, evidence_paths, cancel,
                                          progress, max_pages))
        except (Cancelled, UnsafeError):
            raise
        except SrsalvageError as exc:      # one file that cannot be written stops no other
            failed.append({"file_id": fid, "error": str(exc)})
    return MdfCarveResult(reports, len(recs), scanned, failed)


def _boot_pages(space: ByteSpace, file1: np.ndarray) -> list[tuple[PageCopy, dict]]:
    """Every valid boot page copy of file 1 with what it says, newest first."""
    out = []
    sel = file1[(file1["page_id"] == BOOT_PAGE_ID) & (file1["page_type"] == TYPE_BOOT)
                & file1["valid"]]
    for rec in sel[:1000]:
        c = copy_of_record(rec)
        info = read_boot_page(space.read(c.offset, PAGE_SIZE))
        if info is not None:
            out.append((c, info))
    out.sort(key=lambda t: tuple(-x for x in t[0].lsn))
    return out


def _assemble_file(space: ByteSpace, out_dir: str, file_id: int, recs: np.ndarray,
                   boot_info: list[tuple[PageCopy, dict]], names_used: set[str],
                   evidence_paths: list[str], cancel: threading.Event | None,
                   progress: ProgressFn | None, max_pages: int) -> FileReport:
    ch = choose(recs)
    ch.keep(ch.pages < max_pages)
    database = version = create_version = None
    others: list[str] = []
    if boot_info and file_id == 1:
        database = boot_info[0][1]["database"]
        version = boot_info[0][1]["dbi_version"]
        create_version = boot_info[0][1]["dbi_createVersion"]
        others = sorted({i["database"] for _, i in boot_info} - {database})
    elif boot_info:
        database = boot_info[0][1]["database"]      # file n of the same database, presumably
        version = boot_info[0][1]["dbi_version"]
    header_pages = None
    head = ch.copy_of(0)
    if head is not None and head.page_type == TYPE_FILE_HEADER:
        header_pages = file_header_size_pages(space.read(head.offset, PAGE_SIZE))
        if header_pages is not None and header_pages > max_pages:
            header_pages = None
    # A page without checksum or torn bits is only plausible: one far past everything verified
    # (a damaged page id) would make a huge sparse file. Keep those within 512 MiB of the
    # verified end and report the rest.
    prot = recs["protection"][ch.rows]
    verified_end = int(ch.pages[prot != 0].max()) + 1 if (prot != 0).any() else 0
    reach = max(header_pages or 0, verified_end) + UNVERIFIED_REACH
    # Even a verified page id is bounded by the evidence: a data file is not larger than twice
    # the space its pages were found in (or than its file header says), so one checksum-valid
    # page with m_pageId 0x7FFFFFFF cannot make a 16 TiB file (issue 11 item 7)
    reach = min(reach, max(header_pages or 0, 2 * (space.size // PAGE_SIZE)) + UNVERIFIED_REACH)
    out_of_range = ch.pages[ch.pages >= reach].tolist()
    ch.keep(ch.pages < reach)
    n_pages = max(int(ch.pages[-1]) + 1 if len(ch.pages) else 0, header_pages or 0)
    length = n_pages * PAGE_SIZE

    base_name = _safe_name(database) if database else "database"
    name = base_name if file_id == 1 else f"{base_name}_file{file_id}"
    stem, i = name, 2
    while name in names_used:
        name = f"{stem}-{i}"
        i += 1
    names_used.add(name)
    path = os.path.join(out_dir, name + (".mdf" if file_id == 1 else ".ndf"))

    ticker = Ticker(len(ch.pages), f"writing file {file_id}", progress, cancel)
    offsets = recs["offset"][ch.rows]
    with AtomicOutput(path, evidence_paths) as out:
        for n, (page_id, offset) in enumerate(zip(ch.pages.tolist(), offsets.tolist())):
            ticker.tick(n)
            data = space.read(offset, PAGE_SIZE)
            out.file.seek(page_id * PAGE_SIZE)
            out.file.write(data)
        out.file.truncate(length)        # holes read as zeros (sparse where the fs allows)
    _, digest = hash_file(path)

    missing, ranges = _missing_pages(space, ch, n_pages)
    conflict_pages = np.asarray([c.page for c in ch.conflicts], dtype=np.int64)
    for entry in ranges:
        entry["conflicting"] = int(((conflict_pages >= entry["first_page"])
                                    & (conflict_pages <= entry["last_page"])).sum())
    owners = _missing_owners(space, missing, ch, file_id, n_pages)
    return FileReport(file_id=file_id, database=database, path=path,
                      pages_written=len(ch.pages), sql_server_version=version,
                      create_version=create_version, length=length, sha256=digest,
                      missing_pages=missing, conflicting_pages=ch.conflicts,
                      bad_checksum_copies=ch.bad, allocation_ranges=ranges,
                      missing_owners=owners, other_databases=others,
                      ignored_unverified_pages=out_of_range[:1000])


def _missing_pages(space: ByteSpace, ch: Choice,
                   n_pages: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Pages the PFS pages mark allocated without a valid copy, with a summary per PFS range."""
    missing: list[int] = []
    ranges = []
    for first in range(0, max(n_pages, 1), PFS_INTERVAL):
        last = min(n_pages, first + PFS_INTERVAL) - 1
        pfs_id = 1 if first == 0 else first
        found = int(np.searchsorted(ch.pages, last, side="right")
                    - np.searchsorted(ch.pages, first, side="left"))
        entry: dict[str, Any] = {"first_page": first, "last_page": last, "pfs_page": pfs_id,
                                 "pages_found": found}
        pfs = ch.copy_of(pfs_id)
        allocated = None
        if pfs is not None and pfs.page_type == TYPE_PFS:
            allocated = pfs_allocated(space.read(pfs.offset, PAGE_SIZE), first, last - first + 1)
        if allocated is None:
            entry.update(pfs_found=False, allocated=None, missing=None)
        else:
            alloc = np.asarray(allocated, dtype=np.int64)
            gone = alloc[~np.isin(alloc, ch.pages)].tolist()
            missing.extend(gone)
            entry.update(pfs_found=True, allocated=len(allocated), missing=len(gone))
        ranges.append(entry)
    return missing, ranges


def _missing_owners(space: ByteSpace, missing: list[int], ch: Choice, file_id: int,
                    n_pages: int) -> list[dict[str, Any]]:
    """Which allocation unit each missing page belonged to, where something says so: a damaged
    copy of the page itself (its header usually survives a bad checksum) or an IAM page that maps
    it. Pages nothing speaks for are left out."""
    if not missing:
        return []
    want = set(missing)
    owners: dict[int, dict[str, Any]] = {}
    recs = ch.records
    damaged = recs[~recs["valid"] & np.isin(recs["page_id"], np.asarray(missing, np.int64))]
    for rec in damaged:
        c = copy_of_record(rec)
        if c.page_id not in owners:
            owners[c.page_id] = {"page": c.page_id, "m_objId": c.obj_id, "m_indexId": c.index_id,
                                 "alloc_unit_id": c.alloc_unit_id, "source": "damaged-copy",
                                 "copy_offset": c.offset}
    iam_rows = ch.rows[recs["page_type"][ch.rows] == TYPE_IAM]
    for row in iam_rows.tolist():
        if not (want - owners.keys()):
            break
        c = copy_of_record(recs[row])
        mapped = iam_pages(space.read(c.offset, PAGE_SIZE), file_id, n_pages)
        for p in sorted(mapped & (want - owners.keys())):
            owners[p] = {"page": p, "m_objId": c.obj_id, "m_indexId": c.index_id,
                         "alloc_unit_id": c.alloc_unit_id, "source": "iam",
                         "iam_page": c.page_id}
    return [owners[p] for p in sorted(owners)]


__all__ = ["PageCopy", "COPY_DTYPE", "page_prefilter", "find_page_records", "find_pages",
           "verify_page", "carve_mdf", "analyse_batch", "collect_records", "choose", "Choice", "MdfCarveResult",
           "FileReport", "choose_copies", "read_boot_page", "file_header_size_pages",
           "pfs_allocated", "iam_pages", "MSSQL_PAGE"]
