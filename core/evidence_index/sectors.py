"""Sector-level facts the extent reconstruction reads, recorded during the one pass.

The matcher (core.match) reads, for every physical extent, its first 2 KiB and last sector
(`compute_pe_features`) and, for the PEs a search looks at and for orphan PEs, the sectors of
the 4 KiB lattice (sector 8k+7 of the extent, where blktap puts LVHD block bitmaps) to tell
which look like bitmaps (`bitmap_likeness` >= 0.95) and which are all ones (`ensure_sigs`).
Before the LVM analysis nobody knows where PE 0 is, so the pass records them for the whole
disk, in forms whose size follows what was found, not the disk:

* the offsets of every sector starting with `conectix` (with the footer's unique id),
  `cxsparse`, `tdbatmap` or `XSSM:` (sorted int64 arrays; a few per VHD);
* for each 4 KiB cell of the disk (absolute sectors 8c..8c+7) three facts: sector 8c+7 looks
  like a bitmap, it is all 0xFF, and sectors 8c, 8c+1, 8c+2 are all 0xFF (the unused tail of
  a 2 TiB BAT, `PeFeatures.head_ff`). Kept as the sorted numbers of the cells where they hold
  (8 bytes each): nothing for holes, zeros or random data, about two per 4 MiB of VHD data
  (one bitmap per 2 MiB block). A disk full of 0xFF would hold one per cell: past MAX_CELLS
  the facts are cut short and the matcher reads for itself.

* which sectors are not all zero, as the sorted runs of such sectors ([start, end) sector
  numbers, 16 bytes a run): the matcher's continuity checks (core.match.score `_continuity_of`,
  core.match.walks `_steps_continuity`) ask only that of the sectors they sample at the start
  of a candidate extent, and reading them was most of what `reconstruct` read after the pass
  (0.14x of a 1 GiB non-sparse image: ~32 sectors a check, spread over 2 MiB, read as spans).
  Data, log text and file-system blocks are long runs: ~100 runs per GiB on the bench image.
  Past MAX_RUNS runs the rest of the disk is left out (`nz_until`): those sectors are read.

From these, for any grid whose PE 0 and extent size are 4 KiB multiples (lvm2 and sm always
place them so), `pe_features` and `lattice_signatures` give exactly what the matcher would
have read. Another grid returns None and the matcher reads for itself, as before.
"""

from __future__ import annotations

import numpy as np

from core.match.features import HEAD_BYTES, SECTOR, PeFeatures
from core.structs import vhd as S

CELL = 4096                        # the lattice: one bitmap position per 4 KiB
CELL_SECTORS = CELL // SECTOR
FACTS = ("good", "ones", "ff3")    # the cell facts
MAX_COOKIES = 1 << 20              # per cookie kind; more: the features are read, not indexed
MAX_CELLS = 8 << 20                # per cell fact (64 MiB); more: likewise
MAX_RUNS = 2 << 20                 # runs of nonzero sectors (32 MiB); more: read past the cut
LIKE_MIN = 0.95                    # core.match.board.ensure_sigs: like >= 0.95, that is
MAX_OTHER = SECTOR - int(np.ceil(LIKE_MIN * SECTOR))   # at most 25 bytes not 0x00/0xFF

_U64 = np.dtype("<u8")
COOKIES = {
    "conectix": int.from_bytes(S.HD_COOKIE, "little"),
    "cxsparse": int.from_bytes(S.DD_COOKIE, "little"),
    "tdbatmap": int.from_bytes(S.BATMAP_COOKIE, "little"),
}
_XSSM = int.from_bytes(b"XSSM:", "little")          # sm libs/sm/metadata.py HDR_STRING + ':'
_XSSM_MASK = (1 << 40) - 1
_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
NZ_ALL = np.iinfo(np.int64).max
ZERO_BLOCK = 64 << 10              # core.evidence_index.nonzero_runs's block


def first_words(view: np.ndarray) -> np.ndarray:
    """The first 8 bytes of every whole sector of `view` as little-endian uint64 (one strided
    copy: 1/64 of the bytes, a cache line per sector)."""
    return np.ndarray((len(view) // SECTOR,), _U64, view, 0, (SECTOR,)).copy()


class SectorFacts:
    """Accumulates the sector facts of the pass (`feed`), then answers the matcher."""

    overlap = CELL                   # a cell's sector 8c+7 lies 3.5 KiB past its start

    def __init__(self) -> None:
        self._cookies: dict[str, list[np.ndarray]] = {k: [] for k in (*COOKIES, "xssm")}
        self._uids: list[np.ndarray] = []
        self._cells: dict[str, list[np.ndarray]] = {k: [] for k in FACTS}
        self._n_cells = dict.fromkeys(FACTS, 0)
        self.truncated = False
        self.cookies: dict[str, np.ndarray] = {}
        self.cells: dict[str, np.ndarray] = {}
        self.uids = np.zeros((0, 16), np.uint8)
        self._nz: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_nz = 0
        self.nz_start = np.zeros(0, np.int64)        # runs of nonzero sectors: [start, end)
        self.nz_end = np.zeros(0, np.int64)
        self.nz_until = NZ_ALL                       # sectors from here on: not recorded

    # -- the pass --------------------------------------------------------------------------
    def feed(self, pos: int, view: np.ndarray, lo: int, own_end: int,
             runs: list[tuple[int, int]] | None = None,
             words: np.ndarray | None = None) -> None:
        """Sectors starting in [lo, own_end) (512-aligned absolute), the view at `pos`.
        `runs`: the 64 KiB blocks of the own part holding a nonzero byte, relative to `lo`
        (core.evidence_index.nonzero_runs; None: not known, every sector is looked at).
        `words`: first_words(view) when the caller has it already."""
        if lo % SECTOR or pos % SECTOR:
            self.truncated = True    # a data range off the sector grid: say nothing rather
            return                   # than something incomplete
        first = (lo - pos) // SECTOR
        n_own = max(0, (own_end - lo + SECTOR - 1) // SECTOR)
        n_all = len(view) // SECTOR
        if n_own == 0 or n_all <= first:
            return
        rows = view[: n_all * SECTOR].reshape(n_all, SECTOR)
        # the first 8 bytes of every sector, as one strided integer column
        if words is None or len(words) != n_all:
            words = first_words(view)
        own = words[first: first + n_own]
        s0 = lo // SECTOR                                   # absolute sector of own[0]
        for name, value in COOKIES.items():
            hit = np.flatnonzero(own == value)
            if len(hit):
                self._add(name, (hit + s0) * SECTOR)
                if name == "conectix":
                    self._uids.append(rows[hit + first, 68:84].copy())
        hit = np.flatnonzero((own & np.uint64(_XSSM_MASK)) == _XSSM)
        if len(hit):
            self._add("xssm", (hit + s0) * SECTOR)
        self._lattice(rows, words, first, n_own, s0)
        self._nonzero(rows, own, first, s0, runs)

    def _nonzero(self, rows: np.ndarray, own: np.ndarray, first: int, s0: int,
                 runs: list[tuple[int, int]] | None) -> None:
        """Record the runs of own sectors that are not all zero (whole sectors only: a partial
        last sector is never one, as SectorReader.gather reads none past the end)."""
        if self.nz_until != NZ_ALL or not len(own):
            return
        nz = own != 0                                  # the first word already says: most data
        maybe = np.flatnonzero(~nz)
        if runs is not None and len(maybe):
            # sectors in a zero 64 KiB block are zero: only the others are looked at whole
            per = ZERO_BLOCK // SECTOR
            blk = np.zeros(-(-len(own) // per), bool)
            for a, b in runs:
                blk[a // ZERO_BLOCK: -(-b // ZERO_BLOCK)] = True
            maybe = maybe[blk[maybe // per]]
        if len(maybe):
            nz[maybe] = rows[maybe + first].view(_U64).any(axis=1)
        edges = np.flatnonzero(np.diff(nz.view(np.int8), prepend=0, append=0))
        if not len(edges):
            return
        starts, ends = edges[0::2] + s0, edges[1::2] + s0
        if self._n_nz + len(starts) > MAX_RUNS:
            self.nz_until = s0               # what lies before this window is complete
            return
        self._nz.append((starts.astype(np.int64), ends.astype(np.int64)))
        self._n_nz += len(starts)

    def _add(self, name: str, offsets: np.ndarray) -> None:
        have = sum(len(a) for a in self._cookies[name])
        if have + len(offsets) > MAX_COOKIES:
            self.truncated = True
            offsets = offsets[: max(0, MAX_COOKIES - have)]
        self._cookies[name].append(offsets.astype(np.int64))

    def _lattice(self, rows: np.ndarray, words: np.ndarray, first: int, n_own: int,
                 s0: int) -> None:
        # cells whose first sector lies in the own part: sector 8c (ff3) and 8c+7 (bitmaps)
        c_lo = -(-s0 // CELL_SECTORS)
        c_hi = (s0 + n_own + CELL_SECTORS - 1) // CELL_SECTORS
        if c_hi <= c_lo:
            return
        cells = np.arange(c_lo, c_hi, dtype=np.int64)
        r0 = cells * CELL_SECTORS - s0 + first            # row of sector 8c
        n_rows = len(words)
        good = np.zeros(len(cells), bool)
        ones = np.zeros(len(cells), bool)
        ff3 = np.zeros(len(cells), bool)
        r7 = r0 + 7
        n7 = int(np.count_nonzero(r7 < n_rows))          # a prefix: r7 rises by 8
        if n7:
            # core.match.features.bitmap_likeness >= 0.95: a nonzero sector with at most 25
            # bytes other than 0x00/0xFF. Zero sectors out first (a strided view, no copy),
            # then an exact prefilter: more than 25 such bytes in its first 64 already rule
            # a sector out (random data: nearly all of them); the rest counted in full.
            lat_all = rows[int(r7[0]): int(r7[n7 - 1]) + 1: CELL_SECTORS]
            nzi = np.flatnonzero(lat_all.view(_U64).any(axis=1))
            if len(nzi):
                head = lat_all[nzi, :64]
                maybe = nzi[np.count_nonzero((head + np.uint8(1)) > 1, axis=1) <= MAX_OTHER]
                if len(maybe):
                    lat = lat_all[maybe]
                    is_good = np.count_nonzero((lat + np.uint8(1)) > 1, axis=1) <= MAX_OTHER
                    good[maybe] = is_good
                    sel = maybe[is_good]
                    if len(sel):
                        ones[sel] = (lat[is_good] == 0xFF).all(axis=1)
        ok3 = r0 + 2 < n_rows
        if ok3.any():
            idx = np.flatnonzero(ok3)
            cand = idx[(words[r0[idx]] == _ONES) & (words[r0[idx] + 1] == _ONES)
                       & (words[r0[idx] + 2] == _ONES)]
            if len(cand):
                r = r0[cand]
                full = ((rows[r] == 0xFF).all(axis=1) & (rows[r + 1] == 0xFF).all(axis=1)
                        & (rows[r + 2] == 0xFF).all(axis=1))
                ff3[cand[full]] = True
        for name, flags in (("good", good), ("ones", ones), ("ff3", ff3)):
            hit = cells[flags]
            if not len(hit):
                continue
            if self._n_cells[name] + len(hit) > MAX_CELLS:
                self.truncated = True
                continue
            self._cells[name].append(hit)
            self._n_cells[name] += len(hit)

    def finish(self) -> None:
        for name, parts in self._cookies.items():
            arr = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            self.cookies[name] = arr
        self.uids = np.concatenate(self._uids) if self._uids else np.zeros((0, 16), np.uint8)
        for name, parts in self._cells.items():
            self.cells[name] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if self._nz:
            starts = np.concatenate([a for a, _ in self._nz])
            ends = np.concatenate([b for _, b in self._nz])
            keep = np.r_[True, starts[1:] != ends[:-1]]     # runs split by a window's edge
            self.nz_start = starts[keep]
            self.nz_end = ends[np.r_[keep[1:], True]]
        self._nz = []
        self._cookies = {k: [] for k in self._cookies}
        self._uids = []
        self._cells = {k: [] for k in FACTS}

    # -- storage ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"cookie_{k}": v for k, v in self.cookies.items()}
        out.update({f"cells_{k}": v for k, v in self.cells.items()})
        out["conectix_uid"] = self.uids
        out["nonzero_runs"] = np.stack([self.nz_start, self.nz_end], axis=1)
        out["nonzero_until"] = np.array([self.nz_until], np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays, truncated: bool) -> "SectorFacts":
        f = cls()
        f.cookies = {k: np.asarray(arrays[f"cookie_{k}"], dtype=np.int64).reshape(-1)
                     for k in (*COOKIES, "xssm")}
        f.cells = {k: np.asarray(arrays[f"cells_{k}"], dtype=np.int64).reshape(-1)
                   for k in FACTS}
        f.uids = np.asarray(arrays["conectix_uid"], dtype=np.uint8).reshape(-1, 16)
        if len(f.uids) != len(f.cookies["conectix"]):
            raise ValueError("footer ids do not match the footer offsets")
        runs = np.asarray(arrays["nonzero_runs"], dtype=np.int64).reshape(-1, 2)
        f.nz_start, f.nz_end = runs[:, 0].copy(), runs[:, 1].copy()
        until = np.asarray(arrays["nonzero_until"], dtype=np.int64).reshape(-1)
        if len(until) != 1:
            raise ValueError("no cut of the nonzero sector runs")
        f.nz_until = int(until[0])
        if (np.any(f.nz_end <= f.nz_start) or np.any(f.nz_start[1:] <= f.nz_end[:-1])):
            raise ValueError("nonzero sector runs out of order")
        f.truncated = truncated
        return f

    @property
    def nbytes(self) -> int:
        return (sum(a.nbytes for a in self.cookies.values()) + self.uids.nbytes
                + sum(a.nbytes for a in self.cells.values())
                + self.nz_start.nbytes + self.nz_end.nbytes)

    # -- answers ---------------------------------------------------------------------------
    def cookie_pairs(self, limit: int = 64) -> list[int] | None:
        """core.match.features.find_cookie_pairs over the whole disk: `conectix` followed by
        `cxsparse` one sector later, in offset order."""
        if self.truncated:
            return None
        hd, dd = self.cookies["conectix"], self.cookies["cxsparse"]
        hits = hd[np.isin(hd + SECTOR, dd)]
        return [int(x) for x in hits[:limit]]

    def sectors_nonzero(self, offsets: np.ndarray, size: int
                        ) -> tuple[np.ndarray, np.ndarray] | None:
        """(known, nonzero) per 512-byte piece at each offset: is it not all zero, as
        SectorReader.gather(offsets, 512).any(axis=1) would read it (a piece off the image,
        past its end or in a hole of a sparse file: zero). `known` is False for pieces off
        the sector grid or past a cut (`nz_until`): those are read. None: nothing known."""
        if self.truncated:
            return None
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        s = offsets // SECTOR
        known = (offsets % SECTOR == 0) & (s < self.nz_until)
        i = np.searchsorted(self.nz_start, s, side="right") - 1
        nz = (i >= 0) & (self.nz_end[np.clip(i, 0, None)] > s) if len(self.nz_start) \
            else np.zeros(len(offsets), bool)
        nz &= (offsets >= 0) & (offsets + SECTOR <= size)
        return known, nz

    def _grid_ok(self, D: int, E: int) -> bool:
        return not self.truncated and D % CELL == 0 and E % CELL == 0 and E >= HEAD_BYTES

    def pe_features(self, D: int, E: int, N: int, has_data: np.ndarray) -> PeFeatures | None:
        """What compute_pe_features reads, from the recorded facts (None: grid off the
        lattice, or the facts were cut short)."""
        if not self._grid_ok(D, E):
            return None
        n = len(has_data)
        bases = D + np.arange(n, dtype=np.int64) * E
        hd = self.cookies["conectix"]

        def at(name: str, offs: np.ndarray) -> np.ndarray:
            return np.isin(offs, self.cookies[name]) & has_data

        f = PeFeatures(n, has_data.copy(), np.zeros(n, bool), np.zeros(n, bool),
                       np.zeros(n, bool), np.zeros(n, bool), np.zeros((n, 16), np.uint8),
                       np.zeros((n, 16), np.uint8), np.zeros(n, bool), np.zeros(n, bool))
        f.any_footer[:] = at("conectix", bases)
        f.head_anchor[:] = f.any_footer & at("cxsparse", bases + SECTOR)
        f.head_batmap[:] = at("tdbatmap", bases + 3 * SECTOR)
        f.head_xssm[:] = at("xssm", bases)
        f.head_ff[:] = np.isin(bases // CELL, self.cells["ff3"]) & has_data
        tails = bases + E - SECTOR
        f.tail_footer[:] = at("conectix", tails)
        order = np.argsort(hd, kind="stable")
        for flags, offs, out in ((f.any_footer, bases, f.head_uid),
                                 (f.tail_footer, tails, f.tail_uid)):
            idx = np.flatnonzero(flags)
            if len(idx):
                j = order[np.searchsorted(hd[order], offs[idx])]
                out[idx] = self.uids[j]
        return f

    def lattice_signatures(self, D: int, E: int, N: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(sig_good, sig_ones): (N, E/32768) packed bits per PE as
        core.match.board.ensure_sigs computes them (lattice sector 8k+7 of each extent)."""
        if not self._grid_ok(D, E):
            return None
        per = E // CELL
        good = np.zeros((N, per // 8), np.uint8)
        ones = np.zeros((N, per // 8), np.uint8)
        for name, out in (("good", good), ("ones", ones)):
            rel = self.cells[name] - D // CELL
            rel = rel[(rel >= 0) & (rel < N * per)]
            pe, k = np.divmod(rel, per)
            np.bitwise_or.at(out, (pe, k >> 3), np.uint8(0x80) >> (k & 7).astype(np.uint8))
        return good, ones
