"""The placements board: which PE is which LE of which VHD LV, each PE used at most once.

`Placement` and `VdiState` (one VHD LV being rebuilt), the named confidence levels, and the
bookkeeping every step of the solver shares (core.match.assign): placing an extent (reading
the rest of the BAT and the batmap when LE 1 / the batmap's extent is placed), reading an LV
through what is placed, the zero-fill measurement per VDI (core.match.zerofill), and the full
score of a candidate (content, continuity with its placed neighbours, adjacency).
"""

from __future__ import annotations

import numpy as np

from core.match import zerofill
from core.match.anchors import VhdAnchor, complete_bat, read_batmap, revalidate
from core.match.features import SECTOR
from core.match.predict import VhdPrediction, predict
from core.match.score import LV_END_FOOTER, Score
from core.spaces import extent_space
from dataclasses import dataclass, field, replace

FREE, RESERVED = -1, -2
ACCEPT = 3.0            # minimum total evidence to place anything
# named confidence levels (what a placement's confidence says about how it was decided)
TIED = 0.97             # content fits and something ties it to this VDI (continuity, own
#                         footer, batmap header)
CONTINUES = 0.9         # a data-only extent that continues its neighbour's block
FITS = 0.8              # content fits; nothing ties it to this VDI rather than another
SURE = 0.75             # at and above: decided by evidence; below: a prior helped
SIZED = 0.7             # a footer extent's LE from sm's LV sizing rule
WALKED = 0.6            # placed because it follows its neighbour on disk (LVM runs)
BETWEEN = 0.5           # an extent between two placed ones, PE distance matching
MIN_CONFIDENCE = 0.6
ADJACENCY_ONLY = 0.7    # content fits several VDIs; the physical neighbour decided
CONTESTED = 0.6         # a walked step another VDI's open LE would fit just as well
CONTESTED_NOTE = ("fits another VDI's next extent as well (same LE, no telling data); "
                  "placed because it follows the previous extent on disk")
RIVAL_VDIS_NOTE = ("content fits other VDIs' extents as well; chosen by adjacency (LVM "
                   "allocates runs)")
WALK_NOTE = ("nothing in it tells (the tail of a block, no footer that fixes the LE): placed "
             "because it follows the neighbouring extent on disk")
GAP_CONFIDENCE = 0.4    # data-less extents inferred from the free PE run between two placed ones
ALLOCATION_GUESS = 0.55  # a footer extent's LE told only by LVM's allocation order
SEARCH_SECTORS = 1 << 17   # sectors gathered per search batch (64 MiB)
SIG_BATCH = 64             # PEs whose lattice sectors are gathered at once (32 MiB)
MAX_CANDIDATES = 64        # per slot and round: beyond that a slot is hopelessly ambiguous
WALK_BATCH = 128
SCORE_CACHE = 1 << 18      # memoised scores kept at most (cleared when full)
RUN_INTERIOR = -5.0        # a search candidate that continues the pending run before it
ISLAND_SLOTS = 512         # open LEs scored against the pending PEs at once (island search)
ISLAND_CONTENT = 6.0       # an island needs two fitting bitmaps' worth of content
ISLAND_CONFIDENCE = 0.6
TIED_CONTINUITY = 2.0      # continuity that ties an extent to its placed neighbour
RUN_SUPPORT_MAX = 8        # candidates per slot beyond which run support is not weighed
RUN_NEXT = 1.0             # the free PE after (before) a candidate fits the next (previous) LE
SPILL_PREFILTER = 3        # sectors per class (written, unwritten) sampled to find spill candidates
SPILL_ACCEPT = 4.0         # continuity that places a data-only extent away from its neighbours


@dataclass
class Placement:
    pe: int
    confidence: float
    source: str             # metadata | vhd-match | adjacency | manual
    note: str | None = None
    # content fits, but nothing ties it to this VDI rather than another with the same LE open
    # (no continuity, no own footer or batmap header): checked against the others at the end
    weak: bool = field(default=False, compare=False)
    # other PEs its content fits as well when it was placed (free twins, search rivals): the
    # guest's file system may tell them apart later (review._outfits)
    twins: tuple[int, ...] = field(default=(), compare=False)


@dataclass
class VdiState:
    """One VHD LV being rebuilt (or a metadata LV carried through)."""

    index: int
    anchor: VhdAnchor | None
    pred: VhdPrediction | None
    lv_name: str | None = None
    placed: dict[int, Placement] = field(default_factory=dict)
    le_count: int | None = None          # known from metadata or from the footer extent
    footer_pe: int | None = None
    ambiguous: dict[int, list[int]] = field(default_factory=dict)
    metadata_map: bool = False           # the whole map came from metadata

    def pe(self, le: int) -> int | None:
        p = self.placed.get(le)
        return None if p is None else p.pe


class BoardMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

    # -- bookkeeping ---------------------------------------------------------------------------
    def place(self, v: VdiState, le: int, pe: int, confidence: float, source: str,
              note: str | None = None, weak: bool = False) -> None:
        self.owner[pe] = v.index
        v.placed[le] = Placement(pe, round(float(confidence), 3), source, note, weak)
        v.ambiguous.pop(le, None)
        self._open_update(v, le)
        a = v.anchor
        if a is None or v.pred is None:
            return
        changed = False
        if le == 1 and not a.bat_complete:
            complete_bat(a, lambda off, n: self.reader.space.read(self.D + pe * self.E + off, n))
            revalidate(a, self.N * self.E)
            changed = True
        if a.has_batmap and a.batmap is None and a.batmap_offset // self.E == le:
            read_batmap(a, lambda off, n: self.read_lv(v, off, n), self.E)
            changed = a.batmap is not None
        if changed:
            v.pred = predict(a, self.E)

    def zw(self, v: VdiState) -> float:
        """How far v's unwritten sectors may be taken to read zero (measured; 0 unmeasured)."""
        z = self.zero.get(v.index)
        return 0.0 if z is None else z.weight

    def measure_zero_fill(self) -> bool:
        """Measure every VDI's zero fill over its trusted extents (core.match.zerofill);
        True when some VDI's weight changed (its scores must be recomputed)."""
        before = {v.index: self.zw(v) for v in self.vdis}
        for v in self.vdis:
            if v.anchor is not None and v.pred is not None:
                self.zero[v.index] = zerofill.measure(self.reader, self.D, self.E, v)
        zerofill.pool(self.zero)
        changed = any(self.zw(v) != before[v.index] for v in self.vdis)
        if changed:
            self._scores.clear()
        return changed

    def read_lv(self, v: VdiState, off: int, n: int) -> bytes:
        """Bytes [off, off+n) of VDI `v` as placed so far (unplaced LEs read as zeros), through
        the one LV-as-bytes path (core.spaces.extent_space) over the LEs the read touches."""
        if n <= 0:
            return b""
        first, last = off // self.E, (off + n - 1) // self.E
        pes = [v.pe(le) for le in range(first, last + 1)]
        return extent_space(self.reader.space, self.D, self.E, pes).read(off - first * self.E, n)

    def free(self, pe: int) -> bool:
        return 0 <= pe < self.N and self.owner[pe] == FREE

    def _tick(self) -> None:
        if self.ticker is not None:
            self.ticker.tick(int((self.owner != FREE).sum()))

    # -- scoring -------------------------------------------------------------------------------
    def score(self, v: VdiState, le: int, pe: int, left: int | None = None,
              right: int | None = None) -> Score:
        """Full evidence for LE `le` of v on `pe`; left/right: PEs assumed for le-1 / le+1.
        A pure function of its arguments and the prediction: memoised (searches rescore the
        same undecided candidates round after round); callers get a copy to adjust."""
        left = v.pe(le - 1) if left is None else left
        right = v.pe(le + 1) if right is None else right
        key = (v.index, id(v.pred), le, pe, left, right, self.zw(v))
        hit = self._scores.get(key)
        if hit is None:
            if len(self._scores) > SCORE_CACHE:
                self._scores.clear()
            hit = self._scores[key] = self._score(v, le, pe, left, right)
        return replace(hit)

    def _score(self, v: VdiState, le: int, pe: int, left: int | None,
               right: int | None) -> Score:
        pred = v.pred
        slot = pred.slots.get(le)
        s = Score()
        if slot is None:
            return s
        s.content = self.scorer.content(slot, pe, v.anchor.uid, self.f)
        bs = v.anchor.block_size
        if left is not None:
            prev = pred.slots.get(le - 1)
            if prev is not None and prev.straddle_out is not None:
                c, inf, empty, seen = self.scorer.continuity(prev.straddle_out, left, pe, bs,
                                                             v.anchor.lvhd,
                                                             self._beyond(v, le), self.zw(v))
                s.empty_spill, s.data_seen = empty, seen
                if inf:
                    s.continuity += c
                    s.informative = True
            if pe == left + 1:
                s.adjacency += 1.0
        if right is not None:
            if slot.straddle_out is not None:
                c, inf, _, _ = self.scorer.continuity(slot.straddle_out, pe, right, bs,
                                                      v.anchor.lvhd, 0, self.zw(v))
                if inf:
                    s.continuity += c
                    s.informative = True
            if pe == right - 1:
                s.adjacency += 1.0
        s.adjacency = min(s.adjacency, 1.0)
        self.add_guest(s, v, le, pe)
        if s.empty_spill and slot.footer_bonus and not len(slot.bitmap_offsets) \
                and self._own_tail(v, pe):
            s.content -= LV_END_FOOTER   # the LV's end, but the data that must be here is not
        return s

    def _beyond(self, v: VdiState, le: int) -> int:
        """Sectors of LE `le` past the end of the block that spills into it, when that block is
        the VHD's last (LVHD: the rest of the LE is gap, up to a possible footer sector)."""
        prev = v.pred.slots.get(le - 1)
        slot = v.pred.slots.get(le)
        if not v.anchor.lvhd or le != v.pred.last_data_le or prev is None \
                or prev.straddle_out is None or slot is None or len(slot.bitmap_offsets):
            return 0        # only a data-only last LE: the spill, then nothing of the VHD
        return max(0, self.E // SECTOR - 1 - prev.straddle_out.sectors)

    def _own_tail(self, v: VdiState, pe: int) -> bool:
        return bool(self.f.tail_footer[pe]) and self.f.tail_uid[pe].tobytes() == v.anchor.uid

    def _unsure_by_le(self) -> dict[int, list[VdiState]]:
        """LE -> VDIs whose LE is open to doubt: unplaced, or placed with low confidence."""
        out: dict[int, list[VdiState]] = {}
        for w in self.vdis:
            if w.pred is None or w.metadata_map:
                continue
            for le, sl in w.pred.slots.items():
                pl = w.placed.get(le)
                if len(sl.bitmap_offsets) and (pl is None or pl.confidence < SURE):
                    out.setdefault(le, []).append(w)
        return out

    def _rival(self, v: VdiState, le: int, pe: int, unsure: dict[int, list[VdiState]]
               ) -> VdiState | None:
        """Another VDI whose LE `le` is open to doubt and which `pe` fits as well."""
        slot = v.pred.slots.get(le)
        if slot is None:
            return None
        for w in unsure.get(le, ()):
            if w is v:
                continue
            wslot = w.pred.slots[le]
            if np.array_equal(wslot.bitmap_offsets, slot.bitmap_offsets) \
                    and self.scorer.content(wslot, pe, w.anchor.uid, self.f) >= ACCEPT \
                    and not self.no_rival(v, w, le, pe):
                return w
        return None

    def pending(self) -> np.ndarray:
        return np.nonzero((self.owner == FREE) & self.f.has_data)[0]
