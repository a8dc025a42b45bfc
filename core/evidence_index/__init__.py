"""The evidence index: one sequential read of the evidence serves every command.

A technician's evidence is a 1-16 TB disk read at 150-250 MB/s: what matters on site is how
many times it is read. `lvm`, `scan`, `reconstruct`, `carve-mdf` and `carve-rar` each used to
read it whole (reconstruct two to four times). The index is made by ONE sequential pass
(`build`) at large aligned reads (`WINDOW` = 32 MiB, posix_fadvise SEQUENTIAL, O_DIRECT on an
image file where its file system takes it -- nothing reads those bytes from the page cache
again -- the next windows read by a helper thread while numpy works on the current one; the byte searches for metadata
text markers and RAR signatures run in two more threads beside the numpy work, as libc's memmem
and numpy's loops release the GIL: the pass uses both cores), where every consumer sees each
window once:

* the LVM disk pass (core.lvm.analyse.window_hits: labels, mda headers, MGT headers, metadata
  text markers in and out of the rings);
* the signature scan with every default kind (core.scan.ScanPass: partition tables, LVM, VHD
  footers/headers/batmaps, MGT) -- findings kept before the post-scan hooks, which run when a
  command asks;
* SQL Server page records (core.carve.mssql.page_records_in_window) and RAR signatures
  (core.carve.rar.signatures_in_window) for the carvers;
* the sector facts extent reconstruction reads (core.evidence_index.sectors: VHD cookies at
  sector starts, the 4 KiB lattice's bitmap and all-ones bits).

After the pass the commands make only small targeted reads (partition tables, metadata rings,
a BAT, bitmaps, the pages and archives they write out).

The modules: this one (the index, its identity, making, keeping and finding it), `windows`
(the pass's reads, window by window, and the nonzero runs of a window), `sectors` (the
sector facts).

API (the house style: long work takes `cancel` and `progress`):

    idx, how = EvidenceIndex.load_or_build(ev, path, cancel, progress)   # path None: memory only
    analyse_disk(ev, hits=idx.disk_hits(text=True))
    idx.scan_result(ev, kinds, start, end)           # a ScanResult, or None: scan afresh
    idx.page_records(), idx.rar_signatures()         # None: the carver searches itself
    reconstruct(ev, index=idx)                       # cookie pairs, PE features, lattice sigs

**Where it lives**: beside the case, never in the evidence (`index_path`:
`IMAGE.srsalvage-index.npz` beside the image, or `CASE.index.npz` beside `--case CASE`), written
as `*.part` then renamed. **Which evidence it belongs to** (`identity`): the evidence's size,
device and inode, real path and mtime (of every segment of a split or EWF image), and a sha256
over sampled sectors spread over the whole image (core.case.evidence_identity: the first 64 KiB,
32 windows of 4 KiB, the last 4 KiB). An index whose identity differs in any of these is stale
or foreign: it is rebuilt, never trusted. What the identity cannot see: a sector changed outside
the samples whose writer then restored the file's mtime (or a block device written behind our
back: its node's mtime does not move) -- `--no-index` reads afresh. An index made by other code (any
change to the engine's source, `code_key`) is rebuilt too: a fixed parser's answer is not the
old one's.

**Memory and size**: bounded by the window and by what is found, not by the image: findings
(capped), page records (capped), cookie offsets (capped), lattice bits only for 4 MiB chunks
holding a bitmap-like or all-ones sector (384 bytes per such chunk). A capped part says so and
the command that needs it reads for itself. Evidence over several images (an SR over several
PVs) is not indexed.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from core.errors import SrsalvageError
from core.evidence_index.windows import SECTOR, _subtract, nonzero_runs, pass_windows
from core.progress import ProgressFn, Ticker

FORMAT = "srsalvage-evidence-index"
VERSION = 1
SUFFIX = ".srsalvage-index.npz"
WINDOW = 32 << 20                # one read; numpy over it in the caches' reach is not needed
MAX_SCAN_FINDINGS = 200_000      # beyond: `scan` scans afresh (ScanFinding objects are ~0.5 KB)
MAX_PAGE_RECORDS = 2_000_000     # 43 bytes each; beyond: carve-mdf searches itself
MAX_RAR_SIGNATURES = 1_000_000


# -- where, and which evidence ---------------------------------------------------------------
def index_path(image_path: str, case_path: str | None = None) -> str:
    """Beside the case: `CASE.index.npz` for `--case CASE`, else `IMAGE.srsalvage-index.npz`
    beside the image (for a block device: in the current directory, as the case). With
    SRSALVAGE_INDEX_DIR set (evidence on a read-only share, a lab's index store), in that
    directory under a name made of the evidence's real path."""
    where = os.environ.get("SRSALVAGE_INDEX_DIR")
    if where:
        import hashlib
        real = os.path.realpath(case_path or image_path)
        tag = hashlib.sha256(real.encode()).hexdigest()[:16]
        return os.path.join(os.path.abspath(where),
                            f"{os.path.basename(real)}-{tag}{SUFFIX}")
    if case_path:
        base = case_path[:-5] if case_path.endswith(".json") else case_path
        return os.path.abspath(base + ".index.npz")
    from core.case import CASE_SUFFIX, default_case_path
    return default_case_path(image_path)[: -len(CASE_SUFFIX)] + SUFFIX


def _segment_paths(ev) -> list[str]:
    for attr in ("segments", "paths"):
        segs = getattr(ev, attr, None)
        if segs:
            return [os.fspath(getattr(s, "path", s)) for s in segs]
    return [ev.path]


def identity(ev) -> dict[str, Any]:
    """What binds an index to its evidence (see the module docstring)."""
    from core.case import evidence_identity
    files = []
    for path in _segment_paths(ev):
        st = os.stat(path)
        files.append({"path": os.path.realpath(path), "dev": st.st_dev, "ino": st.st_ino,
                      "mtime_ns": st.st_mtime_ns, "bytes": st.st_size})
    doc = evidence_identity(ev)
    doc["files"] = files
    doc["format"] = getattr(ev, "format", "raw")
    # the reader that read it: another one (a test's failing-disk double, a new reader of a
    # format) may read other bytes or meet other unreadable sectors
    doc["reader"] = f"{type(ev).__module__}.{type(ev).__qualname__}"
    return doc


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """A sha256 over the engine's source (every core/**/*.py): an index made by other code (a
    scan kind added or changed, a parser fixed) is not this code's answer and is rebuilt."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, root).encode() + b"\0")
                with open(path, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def identity_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when the same evidence, else what differs (one line)."""
    if a.get("bytes") != b.get("bytes"):
        return f"size {a.get('bytes')} != {b.get('bytes')}"
    if a.get("scheme") != b.get("scheme") or a.get("sample_sha256") != b.get("sample_sha256"):
        return "sampled sectors differ (other bytes)"
    fa, fb = a.get("files") or [], b.get("files") or []
    if len(fa) != len(fb):
        return "other segments"
    for x, y in zip(fa, fb):
        for key, what in (("path", "path"), ("dev", "device"), ("ino", "inode"),
                          ("bytes", "file size"), ("mtime_ns", "modification time")):
            if x.get(key) != y.get(key):
                return f"{what} of {y.get('path')} changed"
    if a.get("format") != b.get("format") or a.get("reader") != b.get("reader"):
        return "evidence format or reader differs"
    return None


@dataclass
class EvidenceIndex:
    """Everything the commands need from a whole-evidence read (see the module docstring)."""

    identity: dict[str, Any]
    size: int
    hits: Any                                 # core.lvm.analyse.DiskHits, sector hits only
    text_hits: Any                            # DiskHits: metadata text markers only
    scan_kinds: list[str]
    scan_findings: list[Any]                  # ScanFinding, before the post-scan hooks
    scan_counts: dict[str, int]
    scan_truncated: bool
    pages: np.ndarray | None                  # COPY_DTYPE records (None: capped)
    rar: list[tuple[int, int]] | None         # (offset, version) (None: capped)
    sectors: Any                              # core.evidence_index.sectors.SectorFacts
    unreadable: list[tuple[int, int]] = field(default_factory=list)
    timed_out: list[tuple[int, int]] = field(default_factory=list)
    data_bytes: int = 0                       # bytes the pass read (holes of sparse files not)
    seconds: float = 0.0
    created: float = 0.0
    path: str | None = None                   # where it is kept (None: memory only)

    # -- answers -------------------------------------------------------------------------------
    def disk_hits(self, text: bool = True):
        """core.lvm.analyse.disk_pass's result (text: with metadata text markers)."""
        from core.lvm.analyse import DiskHits
        h, t = self.hits, self.text_hits
        return DiskHits(list(h.labels), list(h.mda_headers),
                        list(t.seqno_marks) if text else [],
                        list(t.contents_marks) if text else [], list(h.mgt_headers),
                        h.truncated or (text and t.truncated))

    def scan_result(self, ev, kinds: Iterable[str] | None, start: int, end: int | None,
                    max_findings: int | None = None, cancel=None, progress=None):
        """core.scan.scan(ev, ...)'s result from the index, or None when it cannot say (a kind
        it did not scan for, its findings were capped). `ev` is the evidence it was found to
        fit (its unreadable ranges are the answer's; the post-scan hooks read through it)."""
        from core.scan import DEFAULT_MAX_FINDINGS, ScanResult, finish_findings, resolve_kinds
        t0 = time.monotonic()
        chosen = resolve_kinds(kinds)
        names = [k.name for k in chosen]
        if self.scan_truncated or not set(names) <= set(self.scan_kinds):
            return None
        end = self.size if end is None else min(int(end), self.size)
        start = min(max(0, int(start)), end)
        cap = DEFAULT_MAX_FINDINGS if max_findings is None else max_findings
        wanted = set(names)
        sel = [f for f in self.scan_findings if f.kind in wanted and start <= f.offset < end]
        counts: dict[str, int] = {}
        for f in sel:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        truncated = len(sel) > cap
        ticker = Ticker(1, "scan", progress, cancel)
        findings = finish_findings(sel[:cap], ev.read, ticker)
        ticker.done()
        unreadable = [(a, b) for a, b in ev.unreadable if b > start and a < end]
        return ScanResult(findings, counts, unreadable, time.monotonic() - t0, (start, end),
                          self.size, names, truncated)

    def page_records(self) -> np.ndarray | None:
        return None if self.pages is None else self.pages.copy()

    def rar_signatures(self) -> list[tuple[int, int]] | None:
        return None if self.rar is None else list(self.rar)

    def apply_unreadable(self, ev) -> None:
        """The unreadable ranges the pass met, recorded on `ev` (a warm index reads nothing,
        but the commands still say where the evidence could not be read)."""
        for a, b in self.unreadable:
            ev._record_unreadable(a, b)
        for r in self.timed_out:
            if r not in ev.timed_out:
                ev.timed_out.append(r)

    # -- making it ----------------------------------------------------------------------------
    @classmethod
    def build(cls, ev, cancel: threading.Event | None = None,
              progress: ProgressFn | None = None, window: int = WINDOW) -> "EvidenceIndex":
        """One sequential pass over `ev` (holes of sparse files skipped)."""
        from core.carve.mssql import PAGE_OVERLAP, page_records_in_window
        from core.carve.rar import SIG_OVERLAP, signatures_in_window
        from core.evidence_index.sectors import SectorFacts, first_words
        from core.lvm.analyse import OVERLAP as LVM_OVERLAP, DiskHits, window_hits
        from core.scan import ScanPass, resolve_kinds

        t0 = time.monotonic()
        ident = identity(ev)
        size = int(ev.size)
        ranges = ev.data_ranges(0, size)
        total = sum(b - a for a, b in ranges)
        ticker = Ticker(max(1, total), "index: reading the evidence", progress, cancel)
        ticker.tick(0, force=True)
        hits, text_hits = DiskHits(), DiskHits()
        lock = threading.Lock()            # every ev.read of the pass, one at a time

        def read(offset: int, length: int) -> bytes:
            """ev.read for the consumers, one at a time: the scan (in a helper thread) and
            the page records may both read past a window, and ev.read records unreadable
            ranges in a list it replaces."""
            with lock:
                return ev.read(offset, length)

        scan = ScanPass(None, read, MAX_SCAN_FINDINGS)
        facts = SectorFacts()
        pages: list[np.ndarray] | None = []
        n_pages = 0
        rar: list[tuple[int, int]] | None = []
        overlap = max(scan.overlap, PAGE_OVERLAP, SIG_OVERLAP, LVM_OVERLAP, facts.overlap)
        overlap = -(-overlap // SECTOR) * SECTOR
        done = 0
        old_cancel = getattr(ev, "cancel", None)
        # the cancel point of guarded reads (a hanging read gives up there): the job's cancel,
        # or the pass stopping (an error, SIGTERM) -- then a read left hanging in a helper
        # thread (the read-ahead, a scan's verify) gives up too instead of holding the exit
        stop = threading.Event()
        ev.cancel = _Either(cancel, stop)
        known = list(ev.unreadable)      # said at open (a ddrescue mapfile): not the pass's
        wins = pass_windows(ev, ranges, window, overlap, lock, stop)

        # The byte searches (libc memmem through ctypes, which releases the GIL) and the
        # signature scan run in three helper threads while this one does the rest of the
        # numpy work on the same window (numpy's loops release the GIL too): the pass uses
        # the second core. Each owns its results and the window is waited for before the
        # next, so the index is the same as a one-thread pass, in the same order.
        def text_search(own: np.ndarray, lo: int, runs: list[tuple[int, int]]) -> None:
            for a, b in runs:
                window_hits(text_hits, own[a:], lo + a, b - a, text=True, sectors=False)

        def rar_search(own: np.ndarray, lo: int, runs: list[tuple[int, int]]
                       ) -> list[tuple[int, int]]:
            found: list[tuple[int, int]] = []
            for a, b in runs:
                found.extend(signatures_in_window(lo + a, own[a:], b - a))
            return found

        # the scan's verification of many candidates in one window (a flood of VHD-footer
        # look-alikes) must stop on cancel too: its own ticker checks the job's cancel (and
        # the pass stopping) without reporting (progress stays this thread's)
        scan_cancel = Ticker(max(1, total), "index: reading the evidence", None,
                             _Either(cancel, stop))
        searches = ThreadPoolExecutor(3, thread_name_prefix="index-search")
        pending: list[Future] = []
        try:
            for pos, view, lo, own_end in wins:
                own = view[lo - pos:]
                words = first_words(view)      # shared by the zero blocks and the facts
                # the byte searches only where the bytes are not all zero: a marker or
                # signature starts with a nonzero byte, so none starts in a zero block
                runs = nonzero_runs(own, own_end - lo, words=words[(lo - pos) // SECTOR:]
                                    if (lo - pos) % SECTOR == 0 else None)
                pending = [searches.submit(text_search, own, lo, runs),
                           # the signature scan too (numpy, its progress is this loop's)
                           searches.submit(scan.feed, pos, view, lo, own_end, scan_cancel,
                                           done)]
                if rar is not None:
                    pending.append(searches.submit(rar_search, own, lo, runs))
                window_hits(hits, own, lo, own_end - lo, text=False)
                if pages is not None:
                    for batch in page_records_in_window(read, lo, own, own_end - lo, ticker):
                        pages.append(batch)
                        n_pages += len(batch)
                    if n_pages > MAX_PAGE_RECORDS:
                        pages = None
                facts.feed(pos, view, lo, own_end, runs, words)
                pending[0].result()
                pending[1].result()
                if rar is not None:
                    rar.extend(pending[2].result())
                    if len(rar) > MAX_RAR_SIGNATURES:
                        rar = None
                pending = []
                done += own_end - lo
                ticker.tick(done)
                view = own = words = None
        finally:
            stop.set()                   # reads hanging in the helpers give up
            for fut in pending:          # never leave a search reading a window being reused
                fut.cancel() or fut.exception()
            searches.shutdown(wait=True)
            wins.close()
            ev.cancel = old_cancel
        facts.finish()
        page_arr = None
        if pages is not None:
            from core.carve.mssql import COPY_DTYPE
            page_arr = np.concatenate(pages) if pages else np.zeros(0, COPY_DTYPE)
        ticker.done()
        return cls(ident, size, hits, text_hits, [k.name for k in resolve_kinds(None)],
                   scan.findings, dict(scan.counts), scan.truncated, page_arr, rar, facts,
                   _subtract(ev.unreadable, known), list(getattr(ev, "timed_out", [])), total,
                   time.monotonic() - t0, time.time())

    # -- keeping it ------------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        h, t = self.hits, self.text_hits
        return {
            "format": FORMAT, "version": VERSION, "code": code_key(),
            "identity": self.identity, "size": self.size,
            "created": self.created, "seconds": round(self.seconds, 3),
            "data_bytes": self.data_bytes,
            "hits": {"labels": h.labels, "mda_headers": h.mda_headers,
                     "mgt_headers": h.mgt_headers, "truncated": h.truncated},
            "text_hits": {"seqno_marks": t.seqno_marks, "contents_marks": t.contents_marks,
                          "truncated": t.truncated},
            "scan": {"kinds": self.scan_kinds, "counts": self.scan_counts,
                     "truncated": self.scan_truncated,
                     "findings": [f.to_json() for f in self.scan_findings]},
            "rar": self.rar, "pages_capped": self.pages is None,
            "sectors_truncated": bool(self.sectors.truncated),
            "unreadable": [list(r) for r in self.unreadable],
            "timed_out": [list(r) for r in self.timed_out],
        }

    def save(self, path: str, evidence_paths: Iterable[str] = ()) -> None:
        """Write to `path.part`, then rename (never over the evidence: core.output)."""
        from core.output import AtomicOutput
        meta = json.dumps(self._meta(), separators=(",", ":")).encode()
        arrays = dict(self.sectors.arrays())
        arrays["meta"] = np.frombuffer(meta, dtype=np.uint8)
        if self.pages is not None:
            arrays["pages"] = self.pages
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with AtomicOutput(path, list(evidence_paths), overwrite=True) as out:
            out.write(buf.getbuffer())
        self.path = path

    @classmethod
    def load(cls, path: str) -> "EvidenceIndex":
        """The index kept at `path` (IndexUnusable when it is not one of ours, or damaged)."""
        from core.evidence_index.sectors import SectorFacts
        from core.lvm.analyse import DiskHits
        from core.scan import ScanFinding
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes())
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise IndexUnusable(f"{path} is not a srsalvage evidence index", ours=False)
                if meta.get("version") != VERSION or meta.get("code") != code_key():
                    raise IndexUnusable(f"{path} was made by another version of srsalvage")
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except IndexUnusable:
            raise
        except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError) as exc:
            raise IndexUnusable(f"{path}: unreadable index ({type(exc).__name__})",
                                ours=False) from None
        try:
            h, t, sc = meta["hits"], meta["text_hits"], meta["scan"]
            hits = DiskHits(list(h["labels"]), list(h["mda_headers"]), [], [],
                            list(h["mgt_headers"]), bool(h["truncated"]))
            text_hits = DiskHits([], [], list(t["seqno_marks"]), list(t["contents_marks"]), [],
                                 bool(t["truncated"]))
            findings = [ScanFinding(d["kind"], int(d["offset"]), int(d["bytes"]),
                                    bool(d["valid"]), dict(d["details"]))
                        for d in sc["findings"]]
            pages = None if meta["pages_capped"] else arrays.pop("pages")
            facts = SectorFacts.from_arrays(arrays, bool(meta["sectors_truncated"]))
            rar = None if meta["rar"] is None else [(int(o), int(v)) for o, v in meta["rar"]]
            return cls(meta["identity"], int(meta["size"]), hits, text_hits, list(sc["kinds"]),
                       findings, dict(sc["counts"]), bool(sc["truncated"]), pages, rar, facts,
                       [(int(a), int(b)) for a, b in meta["unreadable"]],
                       [(int(a), int(b)) for a, b in meta["timed_out"]],
                       int(meta["data_bytes"]), float(meta["seconds"]), float(meta["created"]),
                       path)
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexUnusable(f"{path}: damaged index ({type(exc).__name__}: {exc})") from None

    @classmethod
    def find(cls, ev, path: str | None) -> tuple["EvidenceIndex | None", str, bool]:
        """(index, why, replaceable): the index kept at `path` when it is this evidence's
        (its unreadable ranges then recorded on `ev`), else None with the reason; replaceable
        False when the file there is not one of ours (never overwritten)."""
        if path is None or not os.path.exists(path):
            return None, "no index yet", True
        try:
            idx = cls.load(path)
        except IndexUnusable as exc:
            return None, str(exc), exc.ours
        diff = identity_difference(idx.identity, identity(ev))
        if diff is not None:
            return None, f"index {path} is of other evidence or stale ({diff})", True
        idx.apply_unreadable(ev)
        return idx, f"index {path} used (made {_when(idx.created)})", True

    @classmethod
    def load_or_build(cls, ev, path: str | None, cancel: threading.Event | None = None,
                      progress: ProgressFn | None = None, *, save: bool = True,
                      say: Callable[[str], None] | None = None
                      ) -> tuple["EvidenceIndex", str]:
        """(index, how): the index kept at `path` when it is this evidence's, else a fresh
        one built by one pass and kept at `path` (unless save is False or path is None).
        `how` says which, and why an index found there was not used; `say` hears, before a
        pass starts, how much it will read."""
        idx, why, replaceable = cls.find(ev, path)
        if idx is not None:
            return idx, why
        if say is not None:
            say(f"building the evidence index: one read of {_human(_data_bytes(ev))} "
                f"({why}); the time left follows the measured rate")
        idx = cls.build(ev, cancel, progress)
        how = f"index built in {idx.seconds:.1f} s ({why})"
        if path is not None and save and not replaceable:
            how += f"; {path} is not ours: not replaced, the index is kept in memory only"
        elif path is not None and save:
            try:
                idx.save(path, _segment_paths(ev))
                how += f", kept at {path}"
            except (SrsalvageError, OSError) as exc:
                how += f"; not kept: {exc}"
        return idx, how


class _Either:
    """A cancel point set when either event is (the job's cancel may be None)."""

    def __init__(self, first: threading.Event | None, second: threading.Event) -> None:
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.second.is_set() or (self.first is not None and self.first.is_set())


class IndexUnusable(SrsalvageError):
    """An index file that cannot be used; `ours` False: not one of ours (never replaced)."""

    def __init__(self, message: str, ours: bool = True) -> None:
        super().__init__(message)
        self.ours = ours


def _data_bytes(ev) -> int:
    try:
        return sum(b - a for a, b in ev.data_ranges(0, ev.size))
    except OSError:
        return int(ev.size)


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "?"


def indexable(ev) -> bool:
    """One image or device (an EvidenceSet of several images is read as before)."""
    return getattr(ev, "members", None) is None and hasattr(ev, "data_ranges") and \
        hasattr(ev, "path")


__all__ = ["EvidenceIndex", "IndexUnusable", "identity", "identity_difference", "index_path",
           "indexable", "pass_windows", "WINDOW"]
