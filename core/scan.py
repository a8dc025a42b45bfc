"""The one-pass signature scan: every registered kind (core.kinds) found together.

One pass over the evidence with `Evidence.windows()` (holes of sparse files skipped). In each
window three vectorised searches produce candidates:

* magic kinds aligned to a multiple of 512 B: the window is viewed as rows of 512 bytes and the
  magic's bytes at `magic_offset` are read as one integer column (one strided view per distinct
  column, e.g. an 8-byte column as uint64) and compared for all rows at once;
* magic kinds at any byte (align 1, e.g. RAR signatures inside SFX archives): a magic of L
  bytes at any offset covers an aligned word of W bytes whatever its start, when L >= 2W - 1.
  So the window is compared as aligned uint32 words (magics of 7+ bytes: one value per start
  residue) or uint16 words (3..6 bytes: the rarest byte pair of each parity), in cache-sized
  chunks; the rare hits are checked against the whole magic, vectorised;
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

from core.errors import SrsalvageError
from core.kinds import BUILTIN_KIND_MODULES, KINDS, Kind, Verdict
from core.progress import ProgressFn, Ticker
from core.source import Evidence

SECTOR = 512
DEFAULT_WINDOW = 4 << 20         # windows are copied (pread): small ones reuse the same memory
BYTE_CHUNK = 1 << 20              # align-1 search works on chunks that stay in the CPU cache
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
class _WordGroup:
    """Compare the window as aligned words of `width` bytes against `values`; a hit at word
    k means a magic starts at k * width - shift."""

    width: int
    values: np.ndarray
    shifts: np.ndarray
    masks: np.ndarray               # compare (word & mask) == value; all ones for most


@dataclass
class _Plan:
    columns: list[_Column]
    byte_kinds: list[Kind]          # magic kinds searched at every byte
    word_groups: list["_WordGroup"]  # aligned-word searches (uint32 for long magics, uint16)
    short_first_bytes: list[int]    # magics shorter than 3 bytes: plain byte compare
    prefilter_kinds: list[Kind]
    overlap: int
    # comparison buffers reused by every window of one scan: no per-window allocations that
    # would fragment the heap under the window buffers
    scratch: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _pair_commonness(pair: bytes) -> int:
    """How often a byte pair occurs in ordinary data (text, zeros, 0xff padding): lower is
    rarer. Control characters other than NUL/TAB/LF/CR are rare in text and in binary."""
    score = 0
    for b in pair:
        if b in (0, 0xFF):
            score += 3
        elif 0x20 <= b < 0x7F or b in (9, 10, 13):
            score += 2
    return score


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
    # A magic of L bytes at any offset covers an aligned word of W bytes at each residue
    # r (mod W) of its start when L >= 2W - 1: words of 4 bytes for magics of 7+ bytes (RAR
    # signatures; almost never a hit in other data, so most chunks end after one `any`),
    # words of 2 bytes (the rarest pair of each parity) for magics of 3..6 bytes.
    groups: dict[int, dict[tuple[int, int], None]] = {4: {}, 2: {}}
    short: list[int] = []
    for k in byte_kinds:
        m = k.magic or b""
        if len(m) >= 7:
            for r in range(4):                  # the prefix-based window: shared by magics
                groups[4][(int.from_bytes(m[r:r + 4], "little"), r)] = None   # with one prefix
        elif len(m) >= 3:
            for parity in (0, 1):
                i = min(range(parity, len(m) - 1, 2), key=lambda j: _pair_commonness(m[j:j + 2]))
                groups[2][(int.from_bytes(m[i:i + 2], "little"), i)] = None
        else:
            short.append(m[0])
    word_groups = []
    for width, found in groups.items():
        if not found:
            continue
        full = (1 << (8 * width)) - 1
        entries: dict[tuple[int, int, int], None] = {}
        for value, shift in found:
            # magics that differ only in their last byte here (RAR 4 / RAR 5 at residue 3)
            # share one compare on the bytes before it; the whole magic is checked afterwards
            low = full >> 8
            twins = [v for v, sh in found if sh == shift and v != value and v & low == value & low]
            entries[(value & low, shift, low) if twins else (value, shift, full)] = None
        word_groups.append(_WordGroup(
            width, np.array([v for v, _, _ in entries], dtype=_DTYPES[width]),
            np.array([sh for _, sh, _ in entries], dtype=np.int64),
            np.array([m for _, _, m in entries], dtype=_DTYPES[width])))
    overlap = -(-reach // SECTOR) * SECTOR
    return _Plan(list(columns.values()), byte_kinds, word_groups, sorted(set(short)),
                 prefilter_kinds, overlap)


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


def _byte_candidates(plan: _Plan, view: np.ndarray, pos: int) -> Iterable[tuple[int, Kind]]:
    """(window-relative start, kind) for magics that may start at any byte."""
    if not plan.byte_kinds:
        return
    n = len(view)
    hits: list[np.ndarray] = []
    for group in plan.word_groups:
        width = group.width
        words_all = view[: n - n % width].view(_DTYPES[width])
        chunk_words = BYTE_CHUNK // width
        if width not in plan.scratch or len(plan.scratch[width][0]) != chunk_words:
            plan.scratch[width] = (np.empty(chunk_words, dtype=bool),
                                   np.empty(chunk_words, dtype=bool),
                                   np.empty(chunk_words, dtype=_DTYPES[width]))
        eq, acc, masked = plan.scratch[width]
        full = (1 << (8 * width)) - 1
        tests = list(zip(group.values.tolist(), group.masks.tolist(), group.shifts.tolist()))
        for w0 in range(0, len(words_all), chunk_words):
            words = words_all[w0:w0 + chunk_words]
            a, e, t = acc[:len(words)], eq[:len(words)], masked[:len(words)]
            for i, (v, m, _) in enumerate(tests):
                target = a if i == 0 else e
                if m == full:
                    np.equal(words, v, out=target)
                else:
                    np.bitwise_and(words, m, out=t)
                    np.equal(t, v, out=target)
                if i:
                    np.logical_or(a, e, out=a)
            if a.any():
                idx = np.flatnonzero(a) + w0
                for v, m, shift in tests:
                    sel = idx[(words_all[idx] & m) == v]
                    if sel.size:
                        hits.append(sel * width - shift)
    for b in plan.short_first_bytes:
        hits.append(np.flatnonzero(view == b))
    if not hits:
        return
    starts = np.unique(np.concatenate(hits))
    starts = starts[starts >= 0]
    for kind in plan.byte_kinds:
        magic = np.frombuffer(kind.magic or b"", dtype=np.uint8)
        cand = starts[starts + len(magic) <= n]
        for j, byte in enumerate(magic.tolist()):       # whole magic, vectorised
            if cand.size == 0:
                break
            cand = cand[view[cand + j] == byte]
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


class ScanPass:
    """The scan's work on consecutive windows: candidates, verification, findings.

    `scan()` feeds it windows of its own; the evidence index (core.evidence_index) feeds it the
    windows of its one pass over the evidence, shared with the other consumers. `feed` takes a
    window view at absolute `pos` and looks at structures starting in [lo, own_end); the view
    must run at least `overlap` bytes past own_end (clipped at the image end) so a structure
    straddling the edge is seen whole.
    """

    def __init__(self, kinds: Iterable[str | Kind] | None, read: Callable[[int, int], bytes],
                 max_findings: int = DEFAULT_MAX_FINDINGS) -> None:
        self.chosen = resolve_kinds(kinds)
        self.plan = _plan(self.chosen)
        self.read = read
        self.max_findings = max_findings
        self.findings: list[ScanFinding] = []
        self.counts: dict[str, int] = {}
        self.truncated = False
        self.verifies = 0

    @property
    def overlap(self) -> int:
        return self.plan.overlap

    def feed(self, pos: int, view: np.ndarray, lo: int, own_end: int,
             ticker: Ticker | None = None, done: int = 0) -> None:
        view = view[: own_end - pos + self.plan.overlap]     # exactly scan()'s own window
        candidates: list[tuple[int, Kind]] = []
        for source in (_sector_candidates, _prefilter_candidates, _byte_candidates):
            for rel, kind in source(self.plan, view, pos):
                if lo <= pos + rel < own_end:
                    candidates.append((rel, kind))
        candidates.sort(key=lambda c: (c[0], c[1].name))
        for rel, kind in candidates:
            abs_off = pos + rel
            if rel + kind.length <= len(view):
                data = view[rel:rel + kind.length].tobytes()
            else:
                data = self.read(abs_off, kind.length)
            verdict = _safe_verify(kind, data, abs_off, self.read)
            self.verifies += 1
            if ticker is not None and self.verifies % 256 == 0:
                ticker.tick(done + (abs_off - pos))
            if verdict is None:
                continue
            self.counts[kind.name] = self.counts.get(kind.name, 0) + 1
            if len(self.findings) < self.max_findings:
                self.findings.append(ScanFinding(kind.name, abs_off, int(verdict.length),
                                                 bool(verdict.valid), dict(verdict.details)))
            else:
                self.truncated = True


def finish_findings(findings: list[ScanFinding], read: Callable[[int, int], bytes],
                    ticker: Ticker | None = None) -> list[ScanFinding]:
    """Sorted by offset (then kind), then the post-scan hooks (cross-checks between findings)."""
    findings = sorted(findings, key=lambda f: (f.offset, f.kind))
    for hook in POST_SCAN_HOOKS:
        if ticker is not None:
            ticker.check()
        findings = hook(findings, read)
    return findings


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
    size = ev.size
    end = size if end is None else min(int(end), size)
    start = min(max(0, int(start)), end)      # a range past the image end scans nothing
    if window <= 0 or window % SECTOR:
        raise ValueError("window must be a positive multiple of 512")
    work = ScanPass(kinds, ev.read, max_findings)
    ticker = Ticker(end - start, "scan", progress, cancel)
    done = 0

    for rstart, rend in ev.data_ranges(start, end):
        wstart = rstart - rstart % SECTOR           # windows on the absolute 512 grid
        wins = ev.windows(wstart, min(size, rend + work.overlap), window=window,
                          overlap=work.overlap, skip_holes=False)
        view = None
        try:
            for pos, view in wins:
                if pos >= rend:
                    break
                own_end = min(pos + window, rend)
                work.feed(pos, view, max(pos, rstart), own_end, ticker, done)
                done += own_end - max(pos, rstart)
                ticker.tick(done)
        finally:
            # no window view outlives the pass (a mapped window would pin the evidence open)
            view = None
            wins.close()
    findings = finish_findings(work.findings, ev.read, ticker)
    ticker.done()
    unreadable = [(a, b) for a, b in ev.unreadable if b > start and a < end]
    return ScanResult(findings, work.counts, unreadable, time.monotonic() - t0, (start, end),
                      size, [k.name for k in work.chosen], work.truncated)


__all__ = ["ScanFinding", "ScanResult", "UnknownKindError", "scan", "resolve_kinds", "ScanPass",
           "finish_findings",
           "available_kinds", "post_scan_hook", "POST_SCAN_HOOKS", "DEFAULT_WINDOW"]
