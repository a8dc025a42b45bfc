"""Per-PE evidence for extent reconstruction, read once and kept compact.

The matcher never reads whole extents on its hot path. It reads, for every physical extent (PE),
the first 2 KiB (a VHD head: footer copy + `cxsparse`; or the `tdbatmap` header at +1536 that
marks an LVHD VHD's second extent) and the last sector (the LVHD footer in an LV's last 512
bytes), and later, for candidate PEs only, the few sectors a prediction points at (block
bitmaps, data sectors sampled for continuity). `SectorReader.gather` does those reads, nearby
pieces coalesced into one read and sliced with numpy, skipping the holes of sparse images
(they read as zeros without touching the file): the cost follows the sectors asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.progress import Ticker
from core.structs import vhd as S

SECTOR = 512
HEAD_BYTES = 2048           # footer copy (512) + dynamic header (1024) + tdbatmap at 1536
CHUNK_PES = 2048            # PEs whose heads are held in memory at once (4 MiB of heads)
COALESCE_GAP = 64 << 10     # pieces closer than this are read together
MAX_READ = 8 << 20          # ... in reads of at most this

_COOKIE_HD = np.frombuffer(S.HD_COOKIE, dtype="<u8")[0]
_COOKIE_DD = np.frombuffer(S.DD_COOKIE, dtype="<u8")[0]
_COOKIE_BATMAP = np.frombuffer(S.BATMAP_COOKIE, dtype="<u8")[0]
_XSSM = np.frombuffer(b"XSSM:", dtype=np.uint8)     # sm libs/sm/metadata.py HDR_STRING + ':'


class SectorReader:
    """Reads many small pieces of a ByteSpace at arbitrary offsets, as one numpy array.

    Pieces close to each other are read with one `read()` (the evidence's own, which survives
    I/O errors) and sliced with numpy; holes of sparse files are known from `data_ranges` and
    never read. Works over any ByteSpace.
    """

    WINDOW = 64 << 20

    def __init__(self, space, start: int = 0, end: int | None = None) -> None:
        self.space = space
        self.size = int(space.size)
        end = self.size if end is None else min(end, self.size)
        ranges: list[tuple[int, int]] = [(start, end)]
        if hasattr(space, "data_ranges"):
            try:
                ranges = list(space.data_ranges(start, end))
            except OSError:
                ranges = [(start, end)]
        self._rs = np.array([r[0] for r in ranges], dtype=np.int64)
        self._re = np.array([r[1] for r in ranges], dtype=np.int64)
        self.reads = 0           # pieces actually read (statistics for the bench)
        # (offsets) -> (known, nonzero) or None: which sectors are not all zero, from the
        # evidence index's one pass (core.evidence_index.sectors.sectors_nonzero)
        self.nonzero_facts = None

    def has_data(self, offsets: np.ndarray, length: int) -> np.ndarray:
        """True where [off, off+length) overlaps a data range (False: entirely in a hole)."""
        offsets = np.asarray(offsets, dtype=np.int64)
        if len(self._rs) == 0:
            return np.zeros(len(offsets), dtype=bool)
        # the last range starting before the piece's end; overlap if it ends after the start
        i = np.searchsorted(self._rs, offsets + length, side="left") - 1
        ok = i >= 0
        ic = np.clip(i, 0, None)
        return ok & (self._re[ic] > offsets)

    def gather(self, offsets, length: int = SECTOR, with_valid: bool = False,
               valid: np.ndarray | None = None):
        """(n, length) uint8: the bytes at each offset (zeros past the end and in holes);
        with_valid, also the bool mask of the pieces that were really read. `valid` may be
        given when the caller already knows which pieces hold data."""
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        out = np.zeros((len(offsets), length), dtype=np.uint8)
        if valid is None:
            valid = self.has_data(offsets, length)
        valid = valid & (offsets >= 0) & (offsets + length <= self.size)
        idx = np.nonzero(valid)[0]
        self._fill(out, offsets, idx, length)
        return (out, valid) if with_valid else out

    def nonzero(self, offsets) -> np.ndarray:
        """Per 512-byte piece at each offset: not all zero (gather(...).any(axis=1)); what
        the evidence index knows is not read again."""
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        got = self.nonzero_facts(offsets) if self.nonzero_facts is not None else None
        if got is None:
            return self.gather(offsets, SECTOR).any(axis=1)
        known, out = got
        if not known.all():
            out[~known] = self.gather(offsets[~known], SECTOR).any(axis=1)
        return out

    def _fill(self, out: np.ndarray, offsets: np.ndarray, idx: np.ndarray, length: int) -> None:
        """Read the pieces `idx`: nearby pieces are coalesced into one read (a 4 MiB extent's
        lattice sectors become one pread), far ones are read alone. One Python step per read,
        numpy slicing for the pieces inside it."""
        if len(idx) == 0:
            return
        order = idx[np.argsort(offsets[idx], kind="stable")]
        offs = offsets[order]
        self.reads += len(order)
        gap = offs[1:] - (offs[:-1] + length)
        cut = np.nonzero(gap > COALESCE_GAP)[0] + 1
        if len(cut) == len(offs) - 1:
            # every piece alone (heads of extents, one bitmap each): the plain loop
            for k, off in zip(order, offs):
                data = self.space.read(int(off), length)
                out[k, : len(data)] = np.frombuffer(data, dtype=np.uint8)
            return
        starts = np.r_[0, cut]
        stops = np.r_[cut, len(offs)]
        for a, b in zip(starts, stops):
            lo = int(a)
            while lo < b:       # clusters are cut at MAX_READ
                base = int(offs[lo])
                if b - lo == 1:
                    data = self.space.read(base, length)
                    out[order[lo], : len(data)] = np.frombuffer(data, dtype=np.uint8)
                    lo += 1
                    continue
                hi = int(np.searchsorted(offs, base + MAX_READ - length, side="right"))
                hi = max(lo + 1, min(int(b), hi))
                span = int(offs[hi - 1]) + length - base
                buf = np.frombuffer(self.space.read(base, span), dtype=np.uint8)
                if len(buf) < span:
                    buf = np.concatenate([buf, np.zeros(span - len(buf), np.uint8)])
                rel = offs[lo:hi] - base
                out[order[lo:hi]] = buf[rel[:, None] + np.arange(length)]
                lo = hi

    def covered(self, bases: np.ndarray, rel: np.ndarray, length: int) -> np.ndarray:
        """(len(bases), len(rel)) bool: piece base+rel overlaps data (not a hole). Painted
        from the data ranges (a few per extent) instead of one search per piece. `bases` and
        `rel` must be sorted."""
        out = np.zeros((len(bases), len(rel)), dtype=bool)
        if len(bases) == 0 or len(rel) == 0 or len(self._rs) == 0:
            return out
        lo, hi = int(bases[0] + rel[0]), int(bases[-1] + rel[-1] + length)
        i0 = int(np.searchsorted(self._re, lo, side="right"))
        i1 = int(np.searchsorted(self._rs, hi, side="left"))
        for rs, re in zip(self._rs[i0:i1].tolist(), self._re[i0:i1].tolist()):
            b0 = int(np.searchsorted(bases, rs - int(rel[-1]) - length, side="right"))
            b1 = int(np.searchsorted(bases, re - int(rel[0]), side="left"))
            for b in range(b0, b1):
                base = int(bases[b])
                r0 = int(np.searchsorted(rel, rs - base - length, side="right"))
                r1 = int(np.searchsorted(rel, re - base, side="left"))
                out[b, r0:r1] = True
        return out


@dataclass
class PeFeatures:
    """Compact per-PE features (arrays of length pe_count)."""

    pe_count: int
    has_data: np.ndarray          # bool: some byte of the PE is not in a hole
    head_anchor: np.ndarray       # bool: `conectix` at 0 and `cxsparse` at 512
    head_batmap: np.ndarray       # bool: `tdbatmap` at 1536 (LVHD second extent)
    head_ff: np.ndarray           # bool: bytes 0..1535 all 0xFF (the unused tail of a 2 TiB BAT)
    tail_footer: np.ndarray       # bool: `conectix` in the last sector
    tail_uid: np.ndarray          # (n, 16) uint8: the unique id of that footer (zeros otherwise)
    head_uid: np.ndarray          # (n, 16) uint8: the unique id of the head footer copy
    any_footer: np.ndarray        # bool: a footer cookie at the start (head) of the PE
    head_xssm: np.ndarray | None = None   # bool: `XSSM:` at 0, the header of sm's MGT volume


def compute_pe_features(reader: SectorReader, data_offset: int, extent_bytes: int,
                        pe_count: int, cancel=None, progress=None) -> PeFeatures:
    """Read heads and tails of every PE (holes skipped) in chunks; keep only flags and ids."""
    n = pe_count
    if not 0 <= data_offset <= reader.size - extent_bytes:
        n, data_offset = 0, 0   # nothing of the evidence lies there (issue 11: bounded
        #                         by its real size before anything is allocated)
    n = min(n, max(0, (reader.size - data_offset) // extent_bytes))
    f = PeFeatures(n, np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool),
                   np.zeros(n, bool), np.zeros((n, 16), np.uint8), np.zeros((n, 16), np.uint8),
                   np.zeros(n, bool), np.zeros(n, bool))
    ticker = Ticker(n, "extent heads", progress, cancel)
    bases_all = data_offset + np.arange(n, dtype=np.int64) * extent_bytes
    f.has_data[:] = reader.has_data(bases_all, extent_bytes)
    for lo in range(0, n, CHUNK_PES):
        ticker.tick(lo)
        hi = min(n, lo + CHUNK_PES)
        bases = bases_all[lo:hi]
        heads = reader.gather(bases, HEAD_BYTES)
        tails = reader.gather(bases + extent_bytes - SECTOR, SECTOR)
        h8 = heads.view("<u8")                         # (m, 256) words
        f.any_footer[lo:hi] = h8[:, 0] == _COOKIE_HD
        f.head_anchor[lo:hi] = f.any_footer[lo:hi] & (h8[:, 64] == _COOKIE_DD)
        f.head_batmap[lo:hi] = h8[:, 192] == _COOKIE_BATMAP
        f.head_ff[lo:hi] = (heads[:, :1536] == 0xFF).all(axis=1)
        f.head_uid[lo:hi] = heads[:, 68:84]
        f.head_xssm[lo:hi] = (heads[:, :5] == _XSSM).all(axis=1)
        t8 = tails.view("<u8")
        f.tail_footer[lo:hi] = t8[:, 0] == _COOKIE_HD
        f.tail_uid[lo:hi] = np.where(f.tail_footer[lo:hi, None], tails[:, 68:84], 0)
    ticker.done()
    return f


# -- what a sector looks like ----------------------------------------------------------------
def bitmap_likeness(sectors: np.ndarray) -> np.ndarray:
    """Per sector (rows of 512 bytes): how much it looks like a VHD block bitmap, 0..1.

    blktap sets bits only for written sectors, in runs, and qemu sets them all: a bitmap is
    almost only 0x00 and 0xFF bytes, with at least one bit set. Random or compressed data has
    ~1% such bytes; an all-zero sector (a hole, a never-written extent) is no bitmap evidence.
    """
    sectors = np.asarray(sectors, dtype=np.uint8).reshape(-1, SECTOR)
    # x + 1 (mod 256) is 0 for 0xFF and 1 for 0x00: one compare instead of two
    extreme = np.count_nonzero((sectors + np.uint8(1)) <= 1, axis=1) / SECTOR
    nonzero = np.count_nonzero(sectors, axis=1) > 0
    return np.where(nonzero, extreme, 0.0)


def all_ones(sectors: np.ndarray) -> np.ndarray:
    return (np.asarray(sectors).reshape(-1, SECTOR) == 0xFF).all(axis=1)


def nonzero_rows(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows).reshape(len(rows), -1).any(axis=1)


def find_cookie_pairs(reader: SectorReader, start: int, end: int, limit: int = 64,
                      window: int = 64 << 20, ticker: Ticker | None = None) -> list[int]:
    """Offsets (512-aligned) of `conectix` followed by `cxsparse` one sector later, found by a
    vectorised pass over [start, end) (holes skipped): used only when no metadata states where
    the PEs are, to learn the extent grid from where VHD heads sit."""
    found: list[int] = []
    space = reader.space
    if not hasattr(space, "windows"):
        data = np.frombuffer(space.read(start, end - start), dtype=np.uint8)
        views = [(start, data)]
    else:
        views = space.windows(start, end, window=window, overlap=1024)
    for off, view in views:
        if ticker is not None:
            ticker.tick(off - start)
        n = (len(view) // SECTOR) * SECTOR
        if n < 2 * SECTOR:
            continue
        words = view[:n].view("<u8").reshape(-1, SECTOR // 8)[:, 0]
        hits = np.nonzero((words[:-1] == _COOKIE_HD) & (words[1:] == _COOKIE_DD))[0]
        for h in hits:
            pos = off + int(h) * SECTOR
            if pos >= off + window:
                continue
            found.append(pos)
            if len(found) >= limit:
                return found
    return found

