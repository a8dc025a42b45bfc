"""The one-pass signature scan: every registered kind (core.kinds) found together.

One pass over the evidence with `Evidence.windows()` (holes of sparse files skipped). In each
window three vectorised searches produce candidates:

* magic kinds aligned to a multiple of 512 B: the window is viewed as rows of 512 bytes and the
  magic's bytes at `magic_offset` are read as one integer column (one strided view per distinct
  column, e.g. an 8-byte column as uint64) and compared for all rows at once;
* magic kinds at any byte (align 1, e.g. RAR signatures inside SFX archives): magics sharing
  a prefix of 4+ bytes (RAR 4 / RAR 5) are searched once, for that prefix, with libc memmem
  (core.bytesearch: ~6 GB/s, no copy of the window), and the rest of each magic is checked on
  the rare hits, vectorised. Should a prefix be dense in the data (a short magic, or zeros), the
  search stops after a bounded number of hits and the window is compared with numpy instead,
  so the Python work stays per rare hit, never per byte;
* prefilter kinds (no magic, e.g. SQL Server pages, LVM metadata text): their own numpy function.

Each candidate is handed to its kind's `verify`, which may read more through `read`. Windows
overlap so a structure whose magic straddles a window edge is seen whole; it is reported only by
the window its start lies in, so it is found exactly once. Memory is bounded by the window; the
findings list is capped (`max_findings`) while counting goes on.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from core.bytesearch import find_all
from core.errors import SrsalvageError
from core.kinds import BUILTIN_KIND_MODULES, KINDS, Kind, Verdict
from core.progress import ProgressFn, Ticker
from core.source import Evidence

SECTOR = 512
DEFAULT_WINDOW = 4 << 20         # windows are copied (pread): small ones reuse the same memory
BYTE_DENSE_HITS = 4096            # more prefix hits than this in a window: numpy compare instead
BYTE_SHARED_PREFIX = 4            # align-1 magics sharing this many first bytes: one search
DEFAULT_MAX_FINDINGS = 1_000_000


class UnknownKindError(SrsalvageError):
    """--kinds named a kind that is not registered (the CLI exits 2 with the valid list)."""


@dataclass(frozen=True)
class ScanFinding:
    """One structure found: absolute offset, bytes it occupies, verdict and identifying fields."""

    kind: str
    offset: int
    bytes: int
    valid: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "bytes": self.bytes,
                "valid": self.valid, "details": self.details}


@dataclass
class ScanResult:
    findings: list[ScanFinding]             # sorted by offset (then kind)
    counts: dict[str, int]                  # per kind, including findings beyond max_findings
    unreadable: list[tuple[int, int]]
    seconds: float
    scanned: tuple[int, int]
    size: int
    kinds: list[str]
    truncated: bool = False                 # more than max_findings: counts are still complete

    def by_kind(self, name: str) -> list[ScanFinding]:
        return [f for f in self.findings if f.kind == name]

    def to_json(self, image_path: str) -> dict[str, Any]:
        """The `scan --json` document of cli-contract.md."""
        doc: dict[str, Any] = {
            "image": {"path": image_path, "bytes": self.size},
            "scanned": [self.scanned[0], self.scanned[1]],
            "seconds": round(self.seconds, 3),
            "unreadable": [[a, b] for a, b in self.unreadable],
            "findings": [f.to_json() for f in self.findings],
            "counts": dict(sorted(self.counts.items())),
        }
        if self.truncated:
            doc["truncated"] = True
        return doc


# -- hooks run after the pass (cross-checks between findings, e.g. metadata CRC via mda) -----
PostScanHook = Callable[[list[ScanFinding], Callable[[int, int], bytes]], list[ScanFinding]]
POST_SCAN_HOOKS: list[PostScanHook] = []


def post_scan_hook(fn: PostScanHook) -> PostScanHook:
    """Register fn(findings, read) -> findings, run once over the sorted findings of a scan."""
    if fn not in POST_SCAN_HOOKS:
        POST_SCAN_HOOKS.append(fn)
    return fn


# -- the registry ----------------------------------------------------------------------------
def available_kinds() -> dict[str, Kind]:
    """Import every kind module that exists yet and return the registry.

    A module that is not written yet (another engineer's) is skipped; an error inside an existing
    module is not hidden.
    """
    for module in BUILTIN_KIND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
    return KINDS


def resolve_kinds(kinds: Iterable[str | Kind] | None) -> list[Kind]:
    """None -> every default kind; names are looked up (UnknownKindError lists valid ones)."""
    registry = available_kinds()
    if kinds is None:
        return [k for k in registry.values() if k.default]
    out: list[Kind] = []
    unknown: list[str] = []
    for item in kinds:
        if isinstance(item, Kind):
            out.append(item)
        elif item in registry:
            out.append(registry[item])
        else:
            unknown.append(str(item))
    if unknown:
        raise UnknownKindError(f"unknown kind(s) {', '.join(unknown)}; valid kinds: "
                               f"{', '.join(sorted(registry))}")
    seen: dict[str, Kind] = {}
    for k in out:
        seen.setdefault(k.name, k)
    return list(seen.values())


# -- the search plan -------------------------------------------------------------------------
def _column_width(col: int) -> int:
    for width in (8, 4, 2, 1):
        if col + width <= SECTOR:
            return width
    return 1


_DTYPES = {8: np.dtype("<u8"), 4: np.dtype("<u4"), 2: np.dtype("<u2"), 1: np.dtype("u1")}


@dataclass
class _SectorMagic:
    kind: Kind
    row_shift: int          # sectors between the structure start and the magic's sector
    value: int              # the magic's first `width` bytes (little-endian integer)
    mask: int


@dataclass
class _Column:
    col: int
    width: int
    magics: list[_SectorMagic]


@dataclass
class _ByteGroup:
    """Align-1 magics searched together: `prefix` (their common first bytes) is searched in the
    window, then each kind's whole magic is checked at the hits."""

    prefix: bytes
    kinds: list[Kind]


@dataclass
class _Plan:
    columns: list[_Column]
    byte_kinds: list[Kind]          # magic kinds searched at every byte
    byte_groups: list[_ByteGroup]   # their searches (one per shared prefix)
    prefilter_kinds: list[Kind]
    overlap: int


def _common_prefix(a: bytes, b: bytes) -> bytes:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _byte_groups(byte_kinds: Sequence[Kind]) -> list[_ByteGroup]:
    """Group align-1 magics by a shared prefix of BYTE_SHARED_PREFIX+ bytes (or a magic that
    is a prefix of another), so RAR 4 and RAR 5 cost one pass over the window, not two."""
    groups: list[_ByteGroup] = []
    for k in sorted(byte_kinds, key=lambda k: (k.magic or b"", k.name)):
        magic = k.magic or b""
        if groups:
            shared = _common_prefix(groups[-1].prefix, magic)
            if len(shared) >= min(BYTE_SHARED_PREFIX, len(magic), len(groups[-1].prefix)) \
                    and shared:
                groups[-1].prefix = shared
                groups[-1].kinds.append(k)
                continue
        groups.append(_ByteGroup(magic, [k]))
    return groups


def _plan(kinds: Sequence[Kind]) -> _Plan:
    columns: dict[int, _Column] = {}
    byte_kinds: list[Kind] = []
    prefilter_kinds: list[Kind] = []
    reach = SECTOR
    for k in kinds:
        if k.prefilter is not None:
            prefilter_kinds.append(k)
            reach = max(reach, k.length)
            continue
        magic = k.magic or b""
        reach = max(reach, k.magic_offset + len(magic))
        if k.align % SECTOR == 0:
            col = k.magic_offset % SECTOR
            width = _column_width(col)
            head = magic[:width]
            value = int.from_bytes(head.ljust(width, b"\0"), "little")
            mask = int.from_bytes(b"\xff" * len(head) + b"\0" * (width - len(head)), "little")
            column = columns.setdefault(col, _Column(col, width, []))
            column.magics.append(_SectorMagic(k, k.magic_offset // SECTOR, value, mask))
        else:
            byte_kinds.append(k)
    overlap = -(-reach // SECTOR) * SECTOR
    return _Plan(list(columns.values()), byte_kinds, _byte_groups(byte_kinds), prefilter_kinds,
                 overlap)


def _sector_candidates(plan: _Plan, view: np.ndarray, pos: int) -> Iterable[tuple[int, Kind]]:
    """(window-relative structure start, kind) for every magic column hit."""
    rows = len(view) // SECTOR
    tail = len(view) - rows * SECTOR      # a partial last sector (an image that ends mid-sector)
    for column in plan.columns:
        width = column.width
        if rows:
            # one strided integer view: element r = bytes [512 r + col, 512 r + col + width),
            # copied once into a contiguous array so the compares below run in the cache
            keys = np.ndarray(shape=(rows,), dtype=_DTYPES[width], buffer=view,
                              offset=column.col, strides=(SECTOR,)).copy()
        for sm in column.magics:
            kind = sm.kind
            magic = kind.magic or b""
            hit_rows: list[int] = []
            if rows:
                if sm.mask == (1 << (8 * width)) - 1:
                    hit_rows = np.flatnonzero(keys == sm.value).tolist()
                else:
                    hit_rows = np.flatnonzero((keys & sm.mask) == sm.value).tolist()
            if tail and column.col + len(magic) <= tail:
                hit_rows.append(rows)            # checked in full below
            for r in hit_rows:
                rel_start = (r - sm.row_shift) * SECTOR
                abs_start = pos + rel_start
                if abs_start < 0 or abs_start % kind.align:
                    continue
                m0 = rel_start + kind.magic_offset
                if (len(magic) > width or r == rows) and \
                        view[m0:m0 + len(magic)].tobytes() != magic:
                    continue
                yield rel_start, kind


def _prefix_hits(view: np.ndarray, prefix: bytes) -> np.ndarray:
    """Every start of `prefix` in `view`: memmem while hits are rare, numpy when they are not."""
    hits = find_all(view, prefix, limit=BYTE_DENSE_HITS)
    if len(hits) < BYTE_DENSE_HITS:
        return hits
    span = len(view) - len(prefix) + 1           # dense: one vectorised compare per byte
    acc = view[:span] == prefix[0]
    for j in range(1, len(prefix)):
        acc &= view[j:j + span] == prefix[j]
    return np.flatnonzero(acc).astype(np.int64)


def _byte_candidates(plan: _Plan, view: np.ndarray, pos: int) -> Iterable[tuple[int, Kind]]:
    """(window-relative start, kind) for magics that may start at any byte."""
    n = len(view)
    for group in plan.byte_groups:
        starts = _prefix_hits(view, group.prefix)
        if starts.size == 0:
            continue
        for kind in group.kinds:
            magic = kind.magic or b""
            cand = starts[starts + len(magic) <= n]
            for j in range(len(group.prefix), len(magic)):     # rest of the magic, vectorised
                if cand.size == 0:
                    break
                cand = cand[view[cand + j] == magic[j]]
            for rel in cand.tolist():
                s = rel - kind.magic_offset
                if s + pos >= 0 and (s + pos) % kind.align == 0:
                    yield s, kind


def _prefilter_candidates(plan: _Plan, view: np.ndarray, pos: int) -> Iterable[tuple[int, Kind]]:
    for kind in plan.prefilter_kinds:
        assert kind.prefilter is not None
        rel = np.asarray(kind.prefilter(view, pos), dtype=np.int64)
        for r in rel.tolist():
            yield r, kind


# -- the scan --------------------------------------------------------------------------------
def _safe_verify(kind: Kind, data: bytes, offset: int,
                 read: Callable[[int, int], bytes]) -> Verdict | None:
    """verify() of one candidate; a verify that trips over garbage is an invalid finding."""
    try:
        return kind.verify(data, offset, read)
    except Exception as exc:  # never a traceback because the bytes were garbage
        return Verdict(False, len(data), {"error": f"{type(exc).__name__}: {exc}"[:200]})


def scan(
    ev: Evidence,
    kinds: Iterable[str | Kind] | None = None,
    start: int = 0,
    end: int | None = None,
    cancel: threading.Event | None = None,
    progress: ProgressFn | None = None,
    window: int = DEFAULT_WINDOW,
    max_findings: int = DEFAULT_MAX_FINDINGS,
) -> ScanResult:
    """Find every structure of `kinds` (default: the registry's default kinds) in [start, end).

    Offsets are absolute; a structure is reported when its start lies in the range.
    """
    t0 = time.monotonic()
    chosen = resolve_kinds(kinds)
    size = ev.size
    end = size if end is None else min(int(end), size)
    start = min(max(0, int(start)), end)      # a range past the image end scans nothing
    if window <= 0 or window % SECTOR:
        raise ValueError("window must be a positive multiple of 512")
    plan = _plan(chosen)
    ticker = Ticker(end - start, "scan", progress, cancel)
    findings: list[ScanFinding] = []
    counts: dict[str, int] = {}
    truncated = False
    done = 0
    read = ev.read
    verifies = 0

    for rstart, rend in ev.data_ranges(start, end):
        wstart = rstart - rstart % SECTOR           # windows on the absolute 512 grid
        wins = ev.windows(wstart, min(size, rend + plan.overlap), window=window,
                          overlap=plan.overlap, skip_holes=False)
        view = None
        try:
            for pos, view in wins:
                if pos >= rend:
                    break
                own_end = min(pos + window, rend)
                lo = max(pos, rstart)
                candidates: list[tuple[int, Kind]] = []
                for source in (_sector_candidates, _prefilter_candidates, _byte_candidates):
                    for rel, kind in source(plan, view, pos):
                        if lo <= pos + rel < own_end:
                            candidates.append((rel, kind))
                candidates.sort(key=lambda c: (c[0], c[1].name))
                for rel, kind in candidates:
                    abs_off = pos + rel
                    if rel + kind.length <= len(view):
                        data = view[rel:rel + kind.length].tobytes()
                    else:
                        data = read(abs_off, kind.length)
                    verdict = _safe_verify(kind, data, abs_off, read)
                    verifies += 1
                    if verifies % 256 == 0:
                        ticker.tick(done + (abs_off - pos))
                    if verdict is None:
                        continue
                    counts[kind.name] = counts.get(kind.name, 0) + 1
                    if len(findings) < max_findings:
                        findings.append(ScanFinding(kind.name, abs_off, int(verdict.length),
                                                    bool(verdict.valid), dict(verdict.details)))
                    else:
                        truncated = True
                done += own_end - max(pos, rstart)
                ticker.tick(done)
        finally:
            # no window view outlives the pass (a mapped window would pin the evidence open)
            view = None
            wins.close()
    findings.sort(key=lambda f: (f.offset, f.kind))
    for hook in POST_SCAN_HOOKS:
        ticker.check()
        findings = hook(findings, read)
    ticker.done()
    unreadable = [(a, b) for a, b in ev.unreadable if b > start and a < end]
    return ScanResult(findings, counts, unreadable, time.monotonic() - t0, (start, end), size,
                      [k.name for k in chosen], truncated)


__all__ = ["ScanFinding", "ScanResult", "UnknownKindError", "scan", "resolve_kinds",
           "available_kinds", "post_scan_hook", "POST_SCAN_HOOKS", "DEFAULT_WINDOW"]
