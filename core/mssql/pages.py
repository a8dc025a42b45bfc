"""The pages of one database's data files: read-only access by (file id, page id), one
verification pass per file (checksum or torn bits, as each page's m_flagBits says), and the
walk of an allocation unit's pages through its IAM chain, its page linkage and the page headers.

A page is *present* when its header names it (m_pageId, m_fileId) and its protection holds;
*bad* when it names itself but its checksum / torn bits fail (SQL Server would raise error 824
on it); *missing* otherwise (zeros, another page's content, past the end of the file). Rows are
only ever read from present pages.

Torn-page protection replaces the low 2 bits of the last byte of each 512-byte sector with the
write pattern; the original bits are kept in m_tornBits, 2 bits per sector at bit 2*sector
(formats.md 5.3 describes sectors 1..15 that way; the 32 bits hold exactly 16 sectors, so sector
0's are taken at bits 0-1 [U: no torn-protected page among the shared fixtures]) and are put
back before records are read.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.carve.mssql import analyse_batch, file_header_size_pages, iam_pages
from core.mssql.records import record_at
from core.progress import ProgressFn, Ticker
from core.source import Evidence
from core.structs.mssql import (
    IAM_START_PAGE_OFFSET, PAGE_HEADER_DTYPE, PAGE_HEADER_SIZE, PAGE_SIZE, PFS_ALLOCATED,
    PFS_INTERVAL, SECTORS_PER_PAGE, TYPE_DATA, TYPE_IAM, TYPE_PFS,
)

CHUNK_PAGES = 512               # 4 MiB read at a time by the verification pass
CACHE_PAGES = 512               # decoded pages kept (4 MiB)
MAX_LISTED = 1000               # page numbers listed per finding

# What the verification pass keeps per page (numpy, 25 bytes a page: a 100 GiB data file
# takes 330 MB).
PAGE_INFO_DTYPE = np.dtype([
    ("present", "?"), ("bad", "?"), ("protection", "u1"), ("type", "u1"), ("level", "u1"),
    ("au", "<u8"), ("slots", "<u2"), ("ghosts", "<u2"), ("next_page", "<u4"),
    ("next_file", "<u2"), ("file", "<u2"),
])
PROTECTION_NAMES = ("none", "checksum", "torn")


def alloc_unit_id(obj_id: int, index_id: int) -> int:
    """Allocation unit id from a page header: (m_indexId << 48) | (m_objId << 16)
    (formats.md 5.1) [V: both shared fixtures' catalog pages against sysallocunits]."""
    return (index_id << 48) | (obj_id << 16)


def restore_torn_bits(page: bytes) -> bytes:
    """The page with the low 2 bits of the last byte of every sector put back from m_tornBits
    (module docstring)."""
    buf = bytearray(page)
    torn = int.from_bytes(buf[60:64], "little")
    step = PAGE_SIZE // SECTORS_PER_PAGE
    for sector in range(SECTORS_PER_PAGE):
        pos = sector * step + step - 1
        buf[pos] = (buf[pos] & 0xFC) | ((torn >> (2 * sector)) & 3)
    return bytes(buf)


@dataclass
class DataFile:
    """One .mdf/.ndf opened read-only, verified page by page."""

    path: str
    space: Evidence
    file_id: int
    pages: int
    info: np.ndarray                        # PAGE_INFO_DTYPE per page
    binding_id: str | None                  # file header variable column 0 (database GUID)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def verification(self) -> dict[str, Any]:
        """Per-protection counts and the pages whose checksum / torn bits fail."""
        info = self.info
        named = info["present"] | info["bad"]
        out: dict[str, Any] = {"pages": self.pages,
                               "pages_missing_or_empty": int((~named).sum())}
        for code, name in enumerate(PROTECTION_NAMES):
            sel = named & (info["protection"] == code)
            out[name] = {"pages": int(sel.sum()), "failed": int((sel & info["bad"]).sum())}
        bad = np.flatnonzero(info["bad"] & (info["protection"] == 1))
        torn = np.flatnonzero(info["bad"] & (info["protection"] == 2))
        out["bad_checksum_pages"] = bad[:MAX_LISTED].tolist()
        out["torn_pages"] = torn[:MAX_LISTED].tolist()
        return out


def open_data_file(path: str, cancel: threading.Event | None = None,
                   progress: ProgressFn | None = None) -> DataFile:
    """Open and verify one data file: each page's header and protection, read once."""
    space = Evidence(path)
    try:
        n = space.size // PAGE_SIZE
        info = np.zeros(n, dtype=PAGE_INFO_DTYPE)
        file_ids: dict[int, int] = {}
        ticker = Ticker(n, f"verifying {path}", progress, cancel)
        for first in range(0, n, CHUNK_PAGES):
            ticker.tick(first)
            k = min(CHUNK_PAGES, n - first)
            raw = np.frombuffer(space.read(first * PAGE_SIZE, k * PAGE_SIZE), dtype=np.uint8)
            pages = raw.reshape(k, PAGE_SIZE)
            recs = analyse_batch(pages, np.arange(first, first + k) * PAGE_SIZE)
            heads = np.ascontiguousarray(pages[:, :PAGE_HEADER_SIZE]).view(
                PAGE_HEADER_DTYPE).reshape(k)
            names_itself = (heads["m_headerVersion"] == 1) \
                & (heads["m_pageId"] == np.arange(first, first + k))
            for fid, count in zip(*np.unique(heads["m_fileId"][names_itself], return_counts=True)):
                file_ids[int(fid)] = file_ids.get(int(fid), 0) + int(count)
            part = info[first: first + k]
            part["present"] = names_itself & recs["valid"]
            part["bad"] = names_itself & ~recs["valid"]
            part["protection"] = recs["protection"]
            part["type"] = heads["m_type"]
            part["level"] = heads["m_level"]
            part["au"] = (heads["m_indexId"].astype(np.uint64) << np.uint64(48)) \
                | (heads["m_objId"].astype(np.uint64) << np.uint64(16))
            part["slots"] = heads["m_slotCnt"]
            part["ghosts"] = heads["m_ghostRecCnt"]
            part["next_page"] = heads["m_nextPage_page"]
            part["next_file"] = heads["m_nextPage_file"]
            part["file"] = heads["m_fileId"]
        ticker.done()
        file_id = max(file_ids, key=file_ids.get) if file_ids else 0
        df = DataFile(path, space, file_id, n, info, None)
        # pages naming another file id are not this file's: missing here
        other = info["file"] != file_id
        info["present"] &= ~other
        info["bad"] &= ~other
        if not file_ids:
            df.findings.append({"kind": "mdf-not-a-data-file", "message":
                                f"{path}: no page of it names itself as SQL Server pages do "
                                f"(m_pageId = its place in the file): not a data file"})
        if space.size % PAGE_SIZE:
            df.findings.append({"kind": "mdf-partial-page", "message":
                                f"{path}: {space.size % PAGE_SIZE} bytes after the last whole "
                                f"page ignored"})
        head = space.read(0, PAGE_SIZE) if n and info["present"][0] else None
        if head is not None and head[1] == 15:
            df.binding_id = _binding_id(head)
            declared = file_header_size_pages(head)
            if declared is not None and declared > n:
                df.findings.append({"kind": "mdf-truncated", "message":
                                    f"{path}: the file header says {declared} pages, the file "
                                    f"has {n}: pages {n}-{declared - 1} are missing",
                                    "declared_pages": declared})
        return df
    except BaseException:
        space.close()
        raise


def _binding_id(page: bytes) -> str | None:
    """The database GUID of the file header (variable column 0, 16 bytes: BindingId, the first
    field DBCC FILEHEADER lists; the same in every file of one database) [U: no multi-file
    sample here]."""
    rec = record_at(page, 0)
    col = rec.var(0) if rec is not None else None
    if col is None or len(col.data) != 16:
        return None
    return str(uuid.UUID(bytes_le=col.data)).upper()


class Database:
    """The data files of one database, by file id, with a small page cache."""

    def __init__(self, files: list[DataFile]) -> None:
        self.files = {f.file_id: f for f in files}
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def state(self, file_id: int, page_id: int) -> str:
        """"ok", "bad" (checksum / torn bits fail) or "missing"."""
        f = self.files.get(file_id)
        if f is None or not 0 <= page_id < f.pages:
            return "missing"
        rec = f.info[page_id]
        return "ok" if rec["present"] else ("bad" if rec["bad"] else "missing")

    def info(self, file_id: int, page_id: int) -> np.void | None:
        f = self.files.get(file_id)
        if f is None or not 0 <= page_id < f.pages:
            return None
        return f.info[page_id]

    def page(self, file_id: int, page_id: int) -> bytes | None:
        """A present page (torn bits restored), None otherwise."""
        if self.state(file_id, page_id) != "ok":
            return None
        key = (file_id, page_id)
        data = self._cache.get(key)
        if data is None:
            f = self.files[file_id]
            data = f.space.read(page_id * PAGE_SIZE, PAGE_SIZE)
            if f.info[page_id]["protection"] == 2:
                data = restore_torn_bits(data)
            self._cache[key] = data
            if len(self._cache) > CACHE_PAGES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return data

    def damaged_page_rows(self, file_id: int, page_id: int) -> int:
        """Live rows a page failing its verification seems to hold, counted - never decoded -
        from its slot array: slots pointing into the body at a primary record or a
        forwarding stub (ghosts and emptied slots left out)."""
        f = self.files.get(file_id)
        if f is None or not 0 <= page_id < f.pages:
            return 0
        page = f.space.read(page_id * PAGE_SIZE, PAGE_SIZE)
        slots = min(int.from_bytes(page[22:24], "little"), (PAGE_SIZE - PAGE_HEADER_SIZE) // 2)
        live = 0
        for i in range(slots):
            off = int.from_bytes(page[PAGE_SIZE - 2 * (i + 1):PAGE_SIZE - 2 * i], "little")
            if PAGE_HEADER_SIZE <= off < PAGE_SIZE and (page[off] >> 1) & 7 in (0, 2):
                live += 1
        return live

    def pfs_allocated(self, file_id: int, page_id: int) -> bool | None:
        """The PFS byte's allocated bit for a page (None: its PFS page is not readable)."""
        pfs_id = 1 if page_id < PFS_INTERVAL else (page_id // PFS_INTERVAL) * PFS_INTERVAL
        pfs = self.page(file_id, pfs_id)
        if pfs is None or pfs[1] != TYPE_PFS:
            return None
        pos = PAGE_HEADER_SIZE + 4 + page_id % PFS_INTERVAL
        return bool(pfs[pos] & PFS_ALLOCATED) if pos < PAGE_SIZE else None

    def close(self) -> None:
        for f in self.files.values():
            f.space.close()


@dataclass
class UnitPages:
    """The data pages of one allocation unit, and what could not be read."""

    pages: list[tuple[int, int]]            # (file, page) present leaf data pages, in order
    lost: list[tuple[int, int, str]]        # (file, page, "missing" | "bad") expected pages
    iam_ok: bool                            # the IAM chain was read to its end
    chain_ok: bool                          # the page linkage was followed to its end
    lost_rows_hint: int = 0                 # rows counted on failing pages naming the unit
    unallocated_ignored: int = 0            # pages naming the unit that are not allocated


def unit_pages(db: Database, au: int, first: tuple[int, int], first_iam: tuple[int, int],
               max_pages: int = 1 << 31) -> UnitPages:
    """Every leaf data page of allocation unit `au`, gathered so that one damaged path does not
    lose the others' pages:

    * the m_nextPage linkage from `first` (a clustered index's leaf level in key order; a
      heap's first page);
    * the IAM chain from `first_iam`: the pages its extents and single-page slots map that the
      PFS marks allocated and whose header names the unit;
    * when the IAM chain is missing or broken: every present page whose header names the unit
      and that the PFS marks allocated (or whose PFS page is lost).

    A page naming the unit that its allocation pages say is free is a leftover of deleted or
    moved rows (SQL Server does not read it): it is counted, not read. Expected pages (mapped
    and allocated, or linked, or naming the unit with a failing checksum) that are missing or
    fail verification are `lost`."""
    linked: list[tuple[int, int]] = []
    lost: dict[tuple[int, int], str] = {}
    seen: set[tuple[int, int]] = set()
    chain_ok = True
    cur = first
    while cur[1] != 0:
        if cur in seen or len(seen) >= max_pages:
            chain_ok = False          # a loop in the linkage, or far too long
            break
        seen.add(cur)
        st = db.state(*cur)
        info = db.info(*cur)
        if st != "ok":
            lost[cur] = st
            chain_ok = False
            break
        if int(info["au"]) != au or int(info["type"]) != TYPE_DATA:
            chain_ok = False
            break
        linked.append(cur)
        cur = (int(info["next_file"]), int(info["next_page"]))
    mapped: set[tuple[int, int]] = set()
    iam_ok = first_iam[1] != 0
    cur, iams = first_iam, set()
    while cur[1] != 0 and cur not in iams and len(iams) < 100_000:
        iams.add(cur)
        page = db.page(*cur)
        if page is None or page[1] != TYPE_IAM:
            iam_ok = False
            lost[cur] = db.state(*cur) if page is None else "missing"
            break
        f = db.files.get(int.from_bytes(page[IAM_START_PAGE_OFFSET + 4:
                                             IAM_START_PAGE_OFFSET + 6], "little"))
        if f is not None:
            for p in iam_pages(page, f.file_id, f.pages + PFS_INTERVAL):
                mapped.add((f.file_id, p))
        info = db.info(*cur)
        cur = (int(info["next_file"]), int(info["next_page"]))
    naming: set[tuple[int, int]] = set()          # present data pages whose header names the unit
    hint = 0
    for fid, f in db.files.items():
        mine = (f.info["au"] == np.uint64(au)) & (f.info["type"] == TYPE_DATA)
        naming.update((fid, int(p)) for p in np.flatnonzero(f.info["present"] & mine))
        for p in np.flatnonzero(f.info["bad"] & mine).tolist():
            if db.pfs_allocated(fid, p) is not False:
                lost.setdefault((fid, p), "bad")
                hint += db.damaged_page_rows(fid, p)
    have = set(linked)
    if iam_ok:
        candidates = mapped & naming
    else:
        candidates = naming
    extra, unallocated = [], 0
    for key in sorted(candidates - have):
        if db.pfs_allocated(*key) is False:
            unallocated += 1
        else:
            extra.append(key)
    unallocated += len(naming - candidates - have)
    for key in sorted(mapped):
        if key in have or key in naming or key in lost:
            continue
        st = db.state(*key)
        if st == "ok":
            continue                 # an index page, or a page of another unit: not ours
        if db.pfs_allocated(*key) is False:
            continue                 # an unused page of a uniform extent
        lost[key] = st
    return UnitPages(linked + extra, [(f, p, s) for (f, p), s in sorted(lost.items())], iam_ok,
                     chain_ok, hint, unallocated)
