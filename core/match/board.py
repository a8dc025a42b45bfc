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
from core.match.score import CONT_CAP, LV_END_FOOTER, Score
from core.spaces import extent_space
from dataclasses import dataclass, field

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
LATTICE_CELLS = 1 << 21     # (PE, slot, bitmap) cells scored at once from the signatures
SEARCH_ROWS_MIN = 1024      # pending PEs searched at once at least
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
    # the search for twins stopped at the first (no guest to decide then): more may exist
    twins_open: bool = field(default=False, compare=False)


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
        """Full evidence for LE `le` of v on `pe`; left/right: PEs assumed for le-1 / le+1
        (scores_many of one PE)."""
        return self.scores_many(v, le, [pe], left, right)[0]

    def scores_many(self, v: VdiState, le: int, pes, left: int | None = None,
                    right: int | None = None, floor: float | None = None
                    ) -> list[Score | None]:
        """Full evidence for LE `le` of v on each of `pes`, the neighbours where they are
        (or at left/right). A pure function of its arguments and the prediction: memoised
        (searches rescore the same undecided candidates round after round); callers get
        copies to adjust. What is not known is read and scored in one batch. With `floor`,
        a PE whose score, adjacency aside, cannot reach it once its content and the
        continuity from the left are known comes back as None (not scored further)."""
        left = v.pe(le - 1) if left is None else left
        right = v.pe(le + 1) if right is None else right
        return self.scores_rows([(v, le, int(pe), left, right) for pe in pes],
                                None if floor is None else [floor] * len(pes))

    def scores_rows(self, rows: list[tuple], floors: list[float | None] | None = None
                    ) -> list[Score | None]:
        """scores_many over rows (v, le, pe, left, right) of any VDIs and LEs at once, each
        with its own floor (or none): rows alike (the same LE of alike VDIs: the same kind
        of slot, the same straddling block) are read and scored together. The twin review
        of a large SR of alike VDIs scores a few candidates for each of thousands of
        placements: one batch per kind, not per placement."""
        out: list[Score | None] = []
        todo: list[int] = []
        keys = []
        for k, (v, le, pe, left, right) in enumerate(rows):
            key = (v.index, id(v.pred), le, pe, left, right, self.zw(v))
            hit = self._scores.get(key)
            out.append(hit)
            if hit is None:
                todo.append(k)
                keys.append(key)
        if todo:
            if len(self._scores) > SCORE_CACHE:
                self._scores.clear()
            fresh = self._scores_of([rows[k] for k in todo],
                                    None if floors is None else [floors[k] for k in todo])
            for k, key, sc in zip(todo, keys, fresh):
                if sc is not None:
                    self._scores[key] = sc
                out[k] = sc
        return [None if hit is None else hit.copy() for hit in out]

    def reachable(self, parts: list[tuple]) -> list[np.ndarray]:
        """Per part (v, le, pes, floor): could LE `le` of v on each of `pes`, its neighbours
        where they are placed, score `floor` or more, adjacency aside (scores_rows gives
        None where not)? From the continuity from the left, first with the most content the
        slot allows (Scorer.content_cap), then, where that does not refute a PE, with its
        content. All parts in arrays, those whose left neighbours spill alike in one batch:
        the twin review refutes most candidates of thousands of placements this way."""
        k = len(parts)
        lens = np.array([len(pes) for _, _, pes, _ in parts], np.int64)
        part = np.repeat(np.arange(k), lens)       # each candidate's part, in order
        pes = np.array([q for _, _, qs, _ in parts for q in qs], np.int64)
        # per part: its left neighbour, the kind of block spilling from it, the most the
        # slot's content and the continuity to the right can add (None: a guest may)
        left = np.zeros(k, np.int64)
        cap, best = np.zeros(k), np.zeros(k)
        floor = np.array([f for *_, f in parts], float)
        bounded = np.zeros(k, bool)
        kinds: dict[tuple, int] = {}
        kind = np.full(k, -1, np.int64)
        caps: dict[int, float] = {}
        for i, (v, le, qs, _) in enumerate(parts):
            slot = v.pred.slots.get(le)
            nb = v.pe(le - 1)
            key = self._spill_in(v, le) if nb is not None else None
            if key is not None and len(qs):
                left[i] = nb
                kind[i] = kinds.setdefault(key, len(kinds))
            most = None if slot is None else self._right_most(v, slot, v.pe(le + 1))
            if most is not None:
                if id(slot) not in caps:
                    caps[id(slot)] = self.scorer.content_cap(slot)
                cap[i], best[i], bounded[i] = caps[id(slot)], most, True
        cont = np.zeros(len(pes))
        row_kind = kind[part]
        order = np.argsort(row_kind, kind="stable")
        cuts = np.searchsorted(row_kind[order], np.arange(len(kinds) + 1))
        for key, g in kinds.items():
            rows = order[cuts[g]: cuts[g + 1]]
            v, le = parts[int(part[rows[0]])][:2]
            c, inf, _, _ = self.scorer.continuity_many(
                v.pred.slots[le - 1].straddle_out, left[part[rows]], pes[rows], *key[3:],
                memo=False)
            cont[rows] += np.where(inf, c, 0.0)
        alive = np.ones(len(pes), bool)
        ours = bounded[part]
        alive[ours] = (cap[part] + cont + best[part] >= floor[part])[ours]
        # the content is read only where its bound did not refute
        todo = np.flatnonzero(ours & alive)
        if len(todo):
            rows = [(parts[i][0], parts[i][1], q)
                    for i, q in zip(part[todo].tolist(), pes[todo].tolist())]
            content = self.content_rows(rows, [r[0].pred.slots[r[1]] for r in rows])
            at = part[todo]
            alive[todo] = content + cont[todo] + best[at] >= floor[at]
        return np.split(alive, np.cumsum(lens)[:-1])

    def _spill_in(self, v: VdiState, le: int) -> tuple | None:
        """The kind of block that spills from LE le-1 into LE `le` of v (its straddle, the
        block size and layout, the sectors past the data, the zero-fill weight: what its
        continuity depends on but the PEs), or None where none does."""
        prev = v.pred.slots.get(le - 1)
        st = None if prev is None else prev.straddle_out
        if st is None or st.sectors <= 0:
            return None
        return (st.bitmap_offset, st.first_sector, st.sectors, v.anchor.block_size,
                v.anchor.lvhd, self._beyond(v, le), self.zw(v))

    def _right_most(self, v: VdiState, slot, right: int | None) -> float | None:
        """The most the continuity to the right (and a guest) can add to a score of `slot`
        of v, its right neighbour on `right`; None where a guest may add anything."""
        if self.guest_of(v) is not None:
            return None
        spills_right = right is not None and slot.straddle_out is not None \
            and slot.straddle_out.sectors > 0
        # the continuity to the right adds at most CONT_CAP, and nothing where unwritten
        # sectors cannot be trusted to read zero (zero_weight 0: only "no" is possible); the
        # footer check in _scores_of only takes away
        return CONT_CAP if spills_right and self.zw(v) > 0 else 0.0

    def content_rows(self, rows: list[tuple], slots: list) -> np.ndarray:
        """Content evidence per row (v, le, pe, ...) as its slot predicts (0 without one):
        rows of one kind of slot (Scorer.slot_kind) in one batch."""
        content = np.zeros(len(rows))
        by_kind: dict[tuple, list[int]] = {}
        for k, slot in enumerate(slots):
            if slot is not None:
                by_kind.setdefault(self.scorer.slot_kind(slot, self.f), []).append(k)
        for ks in by_kind.values():
            content[ks] = self.scorer.content_many(
                slots[ks[0]], [rows[k][2] for k in ks], [rows[k][0].anchor.uid for k in ks],
                self.f)
        return content

    def _left_rows(self, rows: list[tuple], slots: list) -> tuple[np.ndarray, ...]:
        """(content, continuity from the left where informative, informative, empty, seen)
        per row (v, le, pe, left, right) with a slot: rows of one kind of slot, and rows
        whose left neighbour spills the same way, each scored in one batch."""
        return (self.content_rows(rows, slots),) + self._left_continuity(rows, slots)

    def _left_continuity(self, rows: list[tuple], slots: list) -> tuple[np.ndarray, ...]:
        """_left_rows without the content: (continuity from the left where informative,
        informative, empty, seen) per row."""
        n = len(rows)
        pes = np.array([r[2] for r in rows], np.int64)
        cont = np.zeros(n)
        informative, empty, seen = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        by_spill: dict[tuple, list[int]] = {}
        spill_of: dict[tuple, tuple | None] = {}     # (VDI, LE) -> its spill's kind
        for k, ((v, le, pe, left, right), slot) in enumerate(zip(rows, slots)):
            if slot is None or left is None:
                continue
            key = spill_of.get((v.index, le), ())
            if key == ():
                key = spill_of[(v.index, le)] = self._spill_in(v, le)
            if key is not None:
                by_spill.setdefault(key, []).append(k)
        for key, ks in by_spill.items():
            v, le = rows[ks[0]][:2]
            c, inf, empty[ks], seen[ks] = self.scorer.continuity_many(
                v.pred.slots[le - 1].straddle_out, [rows[k][3] for k in ks], pes[ks],
                *key[3:])
            cont[ks] += np.where(inf, c, 0.0)
            informative[ks] |= inf
        return cont, informative, empty, seen

    def _alive_rows(self, rows: list[tuple], slots: list, so_far: np.ndarray,
                    floors: list[float | None] | None) -> np.ndarray:
        """Which rows' scores (content and the continuity from the left: `so_far`) can still
        reach their floor once the continuity to the right is added (a row without a floor,
        or whose VDI's guest may add evidence, always)."""
        alive = np.ones(len(rows), bool)
        if floors is None:
            return alive
        most: dict[tuple, float | None] = {}    # (VDI, LE, right placed) -> best to the right
        for k, ((v, le, pe, left, right), slot, floor) in enumerate(zip(rows, slots, floors)):
            if floor is None or slot is None:
                continue
            key = (v.index, le, right is not None)
            if key not in most:
                most[key] = self._right_most(v, slot, right)
            best = most[key]
            if best is not None:
                alive[k] = so_far[k] + best >= floor
        return alive

    def _scores_of(self, rows: list[tuple], floors: list[float | None] | None
                   ) -> list[Score | None]:
        """Scores of rows (v, le, pe, left, right), those below their floor None."""
        n = len(rows)
        slots = [v.pred.slots.get(le) for v, le, *_ in rows]
        pes = np.array([r[2] for r in rows], np.int64)
        content, cont, informative, empty, seen = self._left_rows(rows, slots)
        adjacency = np.zeros(n)
        alive = self._alive_rows(rows, slots, content + cont, floors)
        by_spill: dict[tuple, list[int]] = {}
        for k, ((v, le, pe, left, right), slot) in enumerate(zip(rows, slots)):
            if slot is None:
                continue
            if left is not None:
                adjacency[k] += pe == left + 1
            if right is None:
                continue
            adjacency[k] += pe == right - 1
            st = slot.straddle_out
            if st is not None and st.sectors > 0 and alive[k]:
                by_spill.setdefault((st.bitmap_offset, st.first_sector, st.sectors,
                                     v.anchor.block_size, v.anchor.lvhd, 0, self.zw(v)),
                                    []).append(k)
        for key, ks in by_spill.items():
            v, le = rows[ks[0]][:2]
            c, inf, _, _ = self.scorer.continuity_many(
                v.pred.slots[le].straddle_out, pes[ks], [rows[k][4] for k in ks], *key[3:])
            cont[ks] += np.where(inf, c, 0.0)
            informative[ks] |= inf
        out: list[Score | None] = []
        for k, ((v, le, pe, left, right), slot) in enumerate(zip(rows, slots)):
            if slot is None:
                out.append(Score())
                continue
            if not alive[k]:
                out.append(None)
                continue
            s = Score(content=float(content[k]), continuity=float(cont[k]),
                      informative=bool(informative[k]), adjacency=min(float(adjacency[k]), 1.0),
                      empty_spill=bool(empty[k]), data_seen=bool(seen[k]))
            self.add_guest(s, v, le, pe)
            if s.empty_spill and slot.footer_bonus and not len(slot.bitmap_offsets) \
                    and self._own_tail(v, pe):
                s.content -= LV_END_FOOTER   # the LV's end, but the data that must be here is not
            out.append(s)
        return out

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

    def run_from_head_fits(self, w: VdiState, le: int, head: int, memo: dict | None = None,
                           held_pass: bool = False) -> bool:
        """Do w's LEs 1..le fit the PEs after its head on `head` by content (data-only LEs
        pass): is the run lvcreate gave w still there, up to LE `le`? With `held_pass`, an
        extent of that run another VDI holds now passes too (a later LV took it: an older
        VHD's run is overwritten piece by piece). `memo`: the caller's, for one look at the
        board (content scores change as the solver learns)."""
        key = (w.index, le, head, held_pass)
        if memo is not None and key in memo:
            return memo[key]
        fits = head + le < self.N and all(
            j not in w.pred.slots or not len(w.pred.slots[j].bitmap_offsets)
            or held_pass and self.owner[head + j] not in (FREE, w.index)
            or self.scorer.content(w.pred.slots[j], head + j, w.anchor.uid, self.f)
            >= ACCEPT for j in range(1, le + 1))
        if memo is not None:
            memo[key] = fits
        return fits

    def pending(self) -> np.ndarray:
        return np.nonzero((self.owner == FREE) & self.f.has_data)[0]
