"""SQL Server page carving and data-file reassembly.

Pages are found by header plausibility (formats.md 5.3 carving hint) at every 512-byte boundary
of a space - the disk, an LV or a VDI's virtual disk: a page inside a VHD is 8 KiB aligned in
the virtual disk but, with 4 KiB aligned VHD blocks, not necessarily on the disk. The test runs
vectorised over each window (`page_prefilter`); only candidates are decoded, and their checksums
are computed for a whole batch at once with numpy. (The finding is core.carve.mssql_find; its names are
importable from here.)

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
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from core.carve.mssql_find import (  # noqa: F401 (importable from here, as before)
    COPY_DTYPE, MSSQL_PAGE, PAGE_OVERLAP, PROTECTIONS, SCAN_ALIGN, PageCopy,
    analyse_batch, copy_of_record, find_page_records, find_pages, page_prefilter,
    page_records_in_window, records_of, verify_page)
from core.carve.mssql_page import (file_header_size_pages, iam_pages,  # noqa: F401
                                   pfs_allocated, read_boot_page, slot_offset)
from core.carve.windows import DEFAULT_WINDOW
from core.errors import Cancelled, SrsalvageError, UnsafeError
from core.output import AtomicOutput, hash_file
from core.progress import ProgressFn, Ticker
from core.spaces import ByteSpace
from core.structs.mssql import (
    BOOT_PAGE_ID, PAGE_SIZE, PFS_INTERVAL, SQL_VERSIONS, TYPE_BOOT, TYPE_FILE_HEADER, TYPE_IAM,
    TYPE_PFS,
)

UNVERIFIED_REACH = 65536       # pages (512 MiB) an unprotected page may lie past the verified end


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
