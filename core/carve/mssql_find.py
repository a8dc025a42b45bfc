"""Finding SQL Server page copies on a space (core.carve.mssql reassembles data files from them).

Pages are found by header plausibility (formats.md 5.3 carving hint) at every 512-byte boundary
of a space: the test runs vectorised over each window (`page_prefilter`); only candidates are
decoded, and their checksums are computed for a whole batch at once with numpy. Each copy found
is a compact numpy record (COPY_DTYPE, 43 bytes; `PageCopy` is one of them as an object). The
per-window search (`page_records_in_window`) is shared by `find_page_records` and the evidence
index's one pass; `MSSQL_PAGE` is the signature scan's kind.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from core.carve.windows import DEFAULT_WINDOW, space_windows
from core.kinds import Kind, Verdict
from core.progress import ProgressFn, Ticker
from core.spaces import ByteSpace
from core.structs.mssql import (
    FLAG_CHECKSUM, FLAG_TORN_PAGE, PAGE_HEADER_DTYPE, PAGE_HEADER_SIZE, PAGE_SIZE, PAGE_TYPES,
    SECTORS_PER_PAGE, page_checksums,
)

SCAN_ALIGN = 512

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


MSSQL_PAGE = Kind(
    name="mssql-page",
    description="SQL Server 8 KiB data-file page (header plausibility, checksum verified)",
    verify=verify_page, prefilter=page_prefilter, align=SCAN_ALIGN, length=PAGE_SIZE,
    default=False, group="carve")
