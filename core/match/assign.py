"""Assignment: which PE is which logical extent of which VHD LV, each PE used at most once.

Seeds are hard constraints (surviving metadata, the technician's fixed pairs) and the anchors
(a VHD head is LE 0 of its LV). From every placed extent the solver *walks*: LE j+1 on PE p+1 is
tried first, as LVM allocates runs, and accepted while the content fits the prediction (bitmaps
where the BAT puts them, the `tdbatmap` of LE 1, the packed footer) and the block that straddles
the boundary continues consistently. Where a walk stops, the next LE is a *frontier* slot: every
free PE holding data is scored against all frontier slots at once (numpy over the few predicted
bitmap sectors of each PE), the candidates are scored fully (continuity with the placed
neighbours, adjacency and what follows each candidate as priors) and placed by confidence:
slots that compete for the same PEs are chosen together (core.match.joint: the marginal
probability of each pairing over all joint assignments), the others one by one against every
slot wanting the same PE. Two equally good candidates give 0.5 each and neither is placed —
ambiguity is reported, not guessed. Then the walks resume; when nothing moves, *islands* (an LE
whose flags fit exactly one extent) restart them. Rounds stop when nothing more can be placed.

A walk step that nothing but adjacency supports (`weak`) stops where the next PE is clearly
another VDI's next LE, and is marked contested when another VDI looking for the same LE fits it
as well. After the rounds, a *second look* takes back every low-confidence or contested
placement and decides it again with everything certain in place (contested walks now stop and
the joint search decides); what it cannot decide gets its first placement back. A final review
lowers the confidence of any content-only placement that a rival VDI or a free twin extent fits
as well.

Extents that hold no VHD data (the gap of an inflated LV between the last block and the footer)
are never matched by content: they are inferred only when they are the exact free PE run between
two placed extents, and reported as `adjacency` with low confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from core.findings import Finding
from core.match import joint
from core.match.anchors import VhdAnchor, complete_bat, read_batmap, revalidate
from core.match.features import SECTOR, PeFeatures, SectorReader, bitmap_likeness
from core.match.predict import VhdPrediction, predict, sm_inflated_bytes
from core.match import zerofill
from core.match.score import (BATMAP_HDR, BATMAP_HDR_MISSING, BITMAP_BAD, BITMAP_GOOD,
                              CONT_CAP, EXTRA_BITMAP, FOOTER_BAD, FOOTER_OK, FULL_BAD, FULL_OK,
                              NOT_FULL_BAD, OTHER_BATMAP, LV_END_FOOTER, OTHER_FOOTER, Score, Scorer, bitmap_llr,
                              continuity_llr, sample_sectors)
from core.structs import vhd as S
from core.progress import Ticker

FREE, RESERVED = -1, -2
ACCEPT = 3.0            # minimum total evidence to place anything
MIN_CONFIDENCE = 0.6
ADJACENCY_ONLY = 0.7    # content fits several VDIs; the physical neighbour decided
CONTESTED = 0.6         # a walked step another VDI's open LE would fit just as well
CONTESTED_NOTE = ("fits another VDI's next extent as well (same LE, no telling data); "
                  "placed because it follows the previous extent on disk")
WALK_NOTE = ("nothing in it tells (the tail of a block, no footer that fixes the LE): placed "
             "because it follows the neighbouring extent on disk")
GAP_CONFIDENCE = 0.4    # data-less extents inferred from the free PE run between two placed ones
ALLOCATION_GUESS = 0.55  # a footer extent's LE told only by LVM's allocation order
GUESS_BELOW = 0.75      # below this a placement rests on a prior (withdrawn on reused disks)
SEARCH_SECTORS = 1 << 17   # sectors gathered per search batch (64 MiB)
LATTICE = 1024             # 4 KiB-aligned bitmap positions per 4 MiB extent
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


class Solver:
    def __init__(self, reader: SectorReader, data_offset: int, extent_bytes: int, pe_count: int,
                 features: PeFeatures, vdis: list[VdiState], owner: np.ndarray,
                 ticker: Ticker | None = None) -> None:
        self.reader = reader
        self.D, self.E, self.N = data_offset, extent_bytes, pe_count
        self.f = features
        self.vdis = vdis
        self.owner = owner
        self.scorer = Scorer(reader, data_offset, extent_bytes, None)
        self.ticker = ticker
        self.findings: list[Finding] = []
        self.sig_good: np.ndarray | None = None
        self.sig_ones: np.ndarray | None = None
        self.sig_done: np.ndarray | None = None
        self._open: dict[int, set[int]] = {}     # LE -> indices of VDIs looking for it
        self._scores: dict[tuple, Score] = {}     # memo of score()
        self._careful = False                     # second look: contested walks stop
        self.zero: dict[int, zerofill.ZeroFill] = {}   # measured zero fill per VDI index

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
        out = bytearray()
        while n > 0:
            le, rel = divmod(off, self.E)
            take = min(n, self.E - rel)
            pe = v.pe(le)
            if pe is None:
                out += bytes(take)
            else:
                data = self.reader.space.read(self.D + pe * self.E + rel, take)
                out += data + bytes(take - len(data))
            off += take
            n -= take
        return bytes(out)

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

    @staticmethod
    def _walk_verdict(slot, s: Score) -> tuple[bool, float, str]:
        """Accept a walked step? (accept, confidence, source)."""
        if s.informative and s.continuity < 0:
            return False, 0.0, ""
        strong = slot.footer_offset is not None or slot.le1_batmap
        if len(slot.bitmap_offsets) or strong:
            if s.content < ACCEPT:
                return False, 0.0, ""
            if s.informative or strong:
                return True, 0.97, "vhd-match"
            return True, 0.8, "vhd-match"
        # data-only extent (the tail of a block that started in the previous LE)
        if s.content < 0:
            return False, 0.0, ""       # e.g. it ends with another VHD's footer
        if s.content >= ACCEPT:
            return True, 0.97, "vhd-match"   # its own footer in the last sector
        if s.informative and s.continuity > 0:
            return True, 0.9, "vhd-match"
        return True, 0.6, "adjacency"

    # -- walks ---------------------------------------------------------------------------------
    def walk(self, v: VdiState, start_le: int, step: int) -> int:
        """Extend the run through `start_le` in direction `step` (+1/-1); returns LEs placed."""
        placed = 0
        le, pe = start_le, v.pe(start_le)
        while True:
            nle, npe = le + step, pe + step
            slot = v.pred.slots.get(nle)
            if slot is None or not slot.has_content or nle in v.placed or not self.free(npe) \
                    or not self.f.has_data[npe] or nle < 0:
                return placed
            if step > 0:
                s = self.score(v, nle, npe, left=pe)
            else:
                s = self.score(v, nle, npe, right=pe)
            ok, conf, src = self._walk_verdict(slot, s)
            if not ok:
                return placed
            if conf < 0.9 and self._rival_follows(v, nle + step, npe + step):
                return placed
            if not self._take_step(v, nle, npe, conf, src):
                return placed
            placed += 1
            le, pe = nle, npe
            if placed % 256 == 0:
                self._tick()

    def score_steps(self, v: VdiState, les: list[int], pes: list[int]) -> list[Score]:
        """Scores of a forward walk's steps at once: LE les[k] on PE pes[k], LE les[k]-1 on
        PE pes[k]-1 (placed, or the previous step). One gather for all predicted bitmaps,
        one for the straddling blocks' bitmaps, one for the continuity samples."""
        pred, f, K = v.pred, self.f, len(les)
        slots = [pred.slots[j] for j in les]
        pes_a = np.asarray(pes, dtype=np.int64)
        content = np.zeros(K)
        # bitmaps
        offs, step, full = [], [], []
        for k, sl in enumerate(slots):
            if len(sl.bitmap_offsets):
                offs.append(self.D + pes[k] * self.E + sl.bitmap_offsets)
                step.append(np.full(len(sl.bitmap_offsets), k))
                full.append(sl.full)
        if offs:
            secs = self.reader.gather(np.concatenate(offs), SECTOR)
            llr = bitmap_llr(secs, np.concatenate(full))
            content += np.bincount(np.concatenate(step), weights=llr, minlength=K)
        # cheap per-PE features
        uid = np.frombuffer(v.anchor.uid, dtype=np.uint8)
        tail = f.tail_footer[pes_a]
        own = tail & (f.tail_uid[pes_a] == uid).all(axis=1)
        lv_end = np.array([sl.lv_end_possible for sl in slots])
        for k, sl in enumerate(slots):
            if len(sl.absent_offsets) and not (own[k] and lv_end[k]):
                # the last data LE: no bitmap past the data (unless it ends with our footer)
                secs = self.reader.gather(self.D + pes[k] * self.E + sl.absent_offsets, SECTOR)
                content[k] += EXTRA_BITMAP * int((bitmap_likeness(secs) >= 0.95).sum())
        le1 = np.array([sl.le1_batmap for sl in slots])
        content += np.where(tail & ~own, OTHER_FOOTER, 0.0)
        bonus = np.array([sl.footer_bonus for sl in slots])
        content += np.where(own & bonus, LV_END_FOOTER, 0.0)
        content += np.where(f.head_batmap[pes_a] & ~le1, OTHER_BATMAP, 0.0)
        content += np.where(le1, np.where(f.head_batmap[pes_a], BATMAP_HDR, BATMAP_HDR_MISSING),
                            0.0)
        for k, sl in enumerate(slots):
            if sl.footer_offset is not None:
                ftr = self.reader.gather(np.array([self.D + pes[k] * self.E + sl.footer_offset]),
                                         SECTOR)[0]
                ok = ftr[:8].tobytes() == S.HD_COOKIE and ftr[68:84].tobytes() == v.anchor.uid
                content[k] += FOOTER_OK if ok else FOOTER_BAD
        # continuity with the extent before each step
        cont = np.zeros(K)
        informative = np.zeros(K, dtype=bool)
        strad = [pred.slots.get(j - 1) for j in les]
        ks = [k for k, sl in enumerate(strad) if sl is not None and sl.straddle_out is not None
              and sl.straddle_out.sectors > 0]
        if ks:
            bm_offs = np.array([self.D + (pes[k] - 1) * self.E + strad[k].straddle_out.bitmap_offset
                                for k in ks])
            bms = self.reader.gather(bm_offs, SECTOR)
            nbits = v.anchor.block_size // SECTOR
            bits = np.unpackbits(bms, axis=1)[:, :nbits].astype(bool)
            s_off, s_k, s_bit = [], [], []
            for row, k in enumerate(ks):
                st = strad[k].straddle_out
                window = bits[row, st.first_sector: st.first_sector + st.sectors]
                idx = sample_sectors(window)
                s_off.append(self.D + pes[k] * self.E + idx * SECTOR)
                s_k.append(np.full(len(idx), k))
                s_bit.append(window[idx])
            data = self.reader.gather(np.concatenate(s_off), SECTOR)
            present = np.count_nonzero(data, axis=1) > 0
            written = np.concatenate(s_bit)
            kk = np.concatenate(s_k)
            n_dis = np.bincount(kk, weights=~written & present, minlength=K)
            n_w = np.bincount(kk, weights=written, minlength=K)
            n_unw = np.bincount(kk, weights=~written, minlength=K)
            mixed = (n_w > 0) & (n_unw > 0)
            telling = mixed | v.anchor.lvhd     # see Scorer.continuity
            zw = self.zw(v)
            llr = continuity_llr(written, present, telling[kk], zw)
            cont = np.clip(np.bincount(kk, weights=llr, minlength=K), -CONT_CAP, CONT_CAP)
            n_wp = np.bincount(kk, weights=written & present, minlength=K)
            informative = (((n_dis > 0) | mixed) & (zw > 0)) \
                | (v.anchor.lvhd & (n_w > 0) & (n_wp == 0))
            n_written = np.bincount(kk, weights=written, minlength=K)
            n_seen = np.bincount(kk, weights=written & present, minlength=K)
            empty = (n_written > 0) & (n_seen == 0)
            nobm = np.array([not len(sl.bitmap_offsets) for sl in slots])
            content -= np.where(empty & nobm & own & bonus, LV_END_FOOTER, 0.0)
        return [Score(float(content[k]), float(cont[k]) if informative[k] else 0.0,
                      bool(informative[k]), 1.0) for k in range(K)]

    def walk_forward(self, v: VdiState, le: int) -> int:
        """Batched forward walk from placed LE `le`: LE le+k on PE pe+k while the content fits."""
        placed = 0
        pe = v.pe(le)
        while True:
            les, pes = [], []
            j, p = le, pe
            while len(les) < WALK_BATCH:
                j, p = j + 1, p + 1
                slot = v.pred.slots.get(j)
                if slot is None or not slot.has_content or j in v.placed or not self.free(p):
                    break
                if not self.f.has_data[p] and (len(slot.bitmap_offsets) or slot.le1_batmap):
                    break       # a hole cannot hold the bitmaps this LE must have
                les.append(j)
                pes.append(p)
            if not les:
                return placed
            pred = v.pred
            scores = self.score_steps(v, les, pes)
            verdicts = [self._walk_verdict(pred.slots[j], sc) for j, sc in zip(les, scores)]
            for i, (j, p) in enumerate(zip(les, pes)):
                ok, conf, src = verdicts[i]
                if not ok:
                    return placed
                if conf < 0.9 and i + 1 < len(les) and not verdicts[i + 1][0] \
                        and self._rival_follows(v, les[i + 1], pes[i + 1]):
                    return placed
                if not self._take_step(v, j, p, conf, src):
                    return placed
                placed += 1
                le, pe = j, p
                if v.pred is not pred:      # the batmap was read: later steps rescored
                    break
            self._tick()

    def _take_step(self, v: VdiState, le: int, pe: int, conf: float, src: str) -> bool:
        """Place an accepted walk step; a step nothing but adjacency supports that another VDI
        wants as well is placed as contested, or (second look) not taken: False stops the
        walk."""
        note = WALK_NOTE if src == "adjacency" else None
        if conf < 0.9 and self._contested(v, le, pe):
            if self._careful:
                return False
            conf, src, note = CONTESTED, "adjacency", CONTESTED_NOTE
        self.place(v, le, pe, conf, src, note, weak=conf < 0.9)
        return True

    def _rival_follows(self, v: VdiState, le: int, pe: int) -> bool:
        """After a step nothing but adjacency supports: is the next PE in the same direction
        someone's LE `le` (bitmaps exactly where LE `le` has them) that does not fit v's (its
        batmap flags or a bitmap past v's data say no)? Then another VDI's run goes on right
        there, and the PE just stepped onto most likely starts (ends) that run rather than
        ending (starting) v's: the walk stops and the search weighs both VDIs' claims."""
        slot = v.pred.slots.get(le)
        if slot is None or not len(slot.bitmap_offsets) or not 0 <= pe < self.N \
                or not self.free(pe) or not self.f.has_data[pe]:
            return False
        secs = self.reader.gather(self.D + pe * self.E + slot.bitmap_offsets, SECTOR)
        if not (bitmap_likeness(secs) >= 0.95).all():
            return False
        return self.scorer.content(slot, pe, v.anchor.uid, self.f) < ACCEPT

    def _contested(self, v: VdiState, le: int, pe: int) -> bool:
        """Is another VDI looking for its LE `le` right now (unplaced, its LE le-1 or le+1
        placed), and would `pe` fit it as well (same bitmap places, its flags, no foreign
        footer)? Then an extent that only fits v's LE `le` by layout and adjacency could as
        well be that VDI's: LVM may have extended the other LV right after this one. The walk
        takes it (LVM allocates runs) but says so: source adjacency, low confidence."""
        slot = v.pred.slots[le]
        for wi in self._open.get(le, ()):
            w = self.vdis[wi]
            if w is v or le in w.placed:
                continue
            other = w.pred.slots.get(le)
            if other is not None and np.array_equal(other.bitmap_offsets, slot.bitmap_offsets) \
                    and self.scorer.content(other, pe, w.anchor.uid, self.f) >= ACCEPT:
                return True
        return False

    def _open_update(self, v: VdiState, le: int) -> None:
        """Keep the live frontier (LE -> VDIs looking for it) as extents are placed."""
        self._open.get(le, set()).discard(v.index)
        for nle in (le - 1, le + 1):
            sl = v.pred.slots.get(nle) if v.pred is not None else None
            if nle > 0 and nle not in v.placed and sl is not None and sl.has_content:
                self._open.setdefault(nle, set()).add(v.index)

    def walk_all(self) -> int:
        """Walk on from the ends of every placed run (forward in batches, backward by step)."""
        self._open = {}
        for w, le in self.frontier():
            self._open.setdefault(le, set()).add(w.index)
        total = 0
        for v in self.vdis:
            if v.pred is None:
                continue
            for le in sorted(v.placed):
                if (le + 1) not in v.placed and (le + 1) in v.pred.slots:
                    total += self.walk_forward(v, le)
            for le in sorted(v.placed, reverse=True):
                if le > 0 and (le - 1) not in v.placed:
                    total += self.walk(v, le, -1)
        return total

    # -- search --------------------------------------------------------------------------------
    def frontier(self) -> list[tuple[VdiState, int]]:
        out = []
        for v in self.vdis:
            if v.pred is None:
                continue
            for le, slot in v.pred.slots.items():
                if le in v.placed or le == 0 or not slot.has_content:
                    continue
                if ((le - 1) in v.placed or (le + 1) in v.placed) and slot.searchable:
                    out.append((v, le))
                elif slot.spill_in and (le - 1) in v.placed:
                    out.append((v, le))     # found by the pattern of its spill (spill_candidates)
        return out

    def spill_window(self, v: VdiState, le: int) -> tuple[np.ndarray, int] | None:
        """The written/unwritten bits of the block that spills from LE le-1 (placed) into LE
        `le`, and the first of those sectors' index in the block; None if nothing spills."""
        prev = v.pred.slots.get(le - 1)
        left = v.pe(le - 1)
        if prev is None or left is None or prev.straddle_out is None \
                or prev.straddle_out.sectors <= 0:
            return None
        st = prev.straddle_out
        bm = self.scorer.sector(self.D + left * self.E + st.bitmap_offset)
        bits = np.unpackbits(bm)[: v.anchor.block_size // SECTOR].astype(bool)
        return bits[st.first_sector: st.first_sector + st.sectors], st.first_sector

    def spill_candidates(self, v: VdiState, le: int, pending: np.ndarray) -> list[int]:
        """PEs whose start holds data exactly where the block spilling into LE `le` wrote
        sectors, and zeros where it did not. Only when that block's bitmap mixes written and
        unwritten sectors in the spill: such a pattern tells one extent from every other
        (all written or none written would fit any data or any empty extent). A few sampled
        sectors per pending PE, numpy over all of them; the survivors are scored in full."""
        got = self.spill_window(v, le)
        if got is None or len(pending) == 0 or self.zw(v) <= 0:
            return []       # the pattern is data where written AND zeros where not
        window, _ = got
        beyond = 0 if (window.any() and (~window).any()) else self._beyond(v, le)
        if beyond:
            # past the last block's data: expected zero (a fresh gap; stale data there makes
            # this extent unfindable this way, never wrongly found)
            window = np.concatenate([window, np.zeros(beyond, bool)])
        if not (window.any() and (~window).any()):
            return []
        idx = sample_sectors(window, per_class=SPILL_PREFILTER)
        written = window[idx]
        rel = idx.astype(np.int64) * SECTOR
        out: list[int] = []
        per = max(1, SEARCH_SECTORS // len(idx))
        for lo in range(0, len(pending), per):
            if self.ticker is not None:
                self.ticker.check()
            pes = pending[lo: lo + per]
            bases = self.D + pes.astype(np.int64) * self.E
            secs = self.reader.gather((bases[:, None] + rel[None, :]).reshape(-1), SECTOR)
            present = secs.any(axis=1).reshape(len(pes), len(idx))
            llr = continuity_llr(written, present, True, self.zw(v)).sum(axis=1)
            seen = (present & written).any(axis=1)
            out.extend(int(p) for p in pes[(llr > 0) & seen])
            if len(out) >= MAX_CANDIDATES:
                break
        return out[:MAX_CANDIDATES]

    def pending(self) -> np.ndarray:
        return np.nonzero((self.owner == FREE) & self.f.has_data)[0]

    # lattice signatures: computed once per PE, only for PEs a search looks at
    def ensure_sigs(self, pes: np.ndarray) -> None:
        """For each PE, which 4 KiB-lattice sectors (7 mod 8: where LVHD bitmaps sit) look like
        bitmaps and which are all ones: 2 x 128 bytes per PE, read once (holes skipped)."""
        if self.sig_good is None:
            self.sig_good = np.zeros((self.N, LATTICE // 8), np.uint8)
            self.sig_ones = np.zeros((self.N, LATTICE // 8), np.uint8)
            self.sig_done = np.zeros(self.N, bool)
        todo = pes[~self.sig_done[pes]]
        lattice = (np.arange(LATTICE, dtype=np.int64) * 8 + 7) * SECTOR
        todo = np.sort(todo)
        for lo in range(0, len(todo), SIG_BATCH):
            if self.ticker is not None:
                self.ticker.check()
            chunk = todo[lo: lo + SIG_BATCH]
            bases = self.D + chunk.astype(np.int64) * self.E
            valid = self.reader.covered(bases, lattice, SECTOR).reshape(-1)
            secs = self.reader.gather((bases[:, None] + lattice[None, :]).reshape(-1), SECTOR,
                                      valid=valid)
            like = np.zeros(len(secs))
            ones = np.zeros(len(secs), dtype=bool)
            rows = np.nonzero(valid)[0]         # holes are no bitmaps: skip them
            if len(rows):
                sub = secs[rows]
                like[rows] = bitmap_likeness(sub)
                ones[rows] = np.count_nonzero(sub != 0xFF, axis=1) == 0
            like = like.reshape(len(chunk), LATTICE)
            ones = ones.reshape(len(chunk), LATTICE)
            self.sig_good[chunk] = np.packbits(like >= 0.95, axis=1)
            self.sig_ones[chunk] = np.packbits(ones, axis=1)
            self.sig_done[chunk] = True

    def _sig_bits(self, sig: np.ndarray, pes: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(pes), len(cols)) bool from packed signatures."""
        byte = sig[pes][:, cols >> 3]
        return ((byte >> (7 - (cols & 7)).astype(np.uint8)) & 1).astype(bool)

    def search_candidates(self, front: list[tuple[VdiState, int]], pending: np.ndarray
                          ) -> dict[tuple[int, int], list[int]]:
        """For every frontier slot, which of `pending` fit its prediction (content only):
        bitmaps on the 4 KiB lattice come from the signatures (bit operations over all PEs at
        once); other offsets (packed qemu layouts) are gathered per slot."""
        result: dict[tuple[int, int], list[int]] = {}
        if len(pending) == 0 or not front:
            return result
        lat_slots, other = [], []
        for v, le in front:
            slot = v.pred.slots[le]
            offs = slot.bitmap_offsets
            if len(offs) and ((offs // SECTOR) % 8 == 7).all() and self.E == LATTICE * 8 * SECTOR:
                lat_slots.append((v, le, slot))
            else:
                other.append((v, le, slot))
        scores = np.zeros((len(pending), len(front)))
        order = []
        if lat_slots:
            self.ensure_sigs(pending)
            cols = np.unique(np.concatenate(
                [(sl.bitmap_offsets // SECTOR) // 8 for _, _, sl in lat_slots]
                + [(sl.absent_offsets // SECTOR) // 8 for _, _, sl in lat_slots
                   if ((sl.absent_offsets // SECTOR) % 8 == 7).all()]))
            pos = {int(c): i for i, c in enumerate(cols)}
            good = self._sig_bits(self.sig_good, pending, cols)
            ones = self._sig_bits(self.sig_ones, pending, cols)
            W = np.zeros((len(cols), len(lat_slots)))
            X = np.zeros_like(W)      # a bitmap where the VHD has none (past its data)
            F1 = np.zeros_like(W)     # added where the sector is all ones
            F0 = np.zeros_like(W)     # added where it is not
            for k, (v, le, sl) in enumerate(lat_slots):
                for off, full in zip(sl.bitmap_offsets, sl.full):
                    c = pos[int(off // SECTOR // 8)]
                    W[c, k] += 1
                    if full == 1:
                        F1[c, k] += FULL_OK
                        F0[c, k] += FULL_BAD
                    elif full == 0:
                        F1[c, k] += NOT_FULL_BAD
                for off in sl.absent_offsets:
                    c = pos.get(int(off // SECTOR // 8))
                    if c is not None:
                        X[c, k] += EXTRA_BITMAP
            llr = np.where(good, BITMAP_GOOD, BITMAP_BAD)
            extra = good @ X
            sc = llr @ W + ones @ F1 + (~ones) @ F0 + extra
            scores[:, :len(lat_slots)] = sc
            order.extend(lat_slots)
        for k, (v, le, sl) in enumerate(other):
            col = len(order)
            order.append((v, le, sl))
            if len(sl.bitmap_offsets):
                for lo in range(0, len(pending), SEARCH_SECTORS // len(sl.bitmap_offsets)):
                    pes = pending[lo: lo + SEARCH_SECTORS // len(sl.bitmap_offsets)]
                    bases = self.D + pes.astype(np.int64) * self.E
                    secs = self.reader.gather((bases[:, None] + sl.bitmap_offsets[None, :])
                                              .reshape(-1), SECTOR)
                    full = np.tile(sl.full, len(pes))
                    scores[lo: lo + len(pes), col] = bitmap_llr(secs, full).reshape(
                        len(pes), -1).sum(axis=1)
        for v, le in front:
            sl = v.pred.slots[le]
            if not len(sl.bitmap_offsets) and sl.footer_offset is None and sl.spill_in:
                found = self.spill_candidates(v, le, pending)
                if found:
                    result.setdefault((v.index, le), []).extend(found)
        for k, (v, le, sl) in enumerate(order):
            sc = scores[:, k]
            if sl.le1_batmap:
                sc = sc + np.where(self.f.head_batmap[pending], BATMAP_HDR, BATMAP_HDR_MISSING)
            if sl.lv_end_possible:
                own = self.f.tail_footer[pending] & (self.f.tail_uid[pending] == np.frombuffer(
                    v.anchor.uid, dtype=np.uint8)).all(axis=1)
                if sl.footer_bonus:
                    sc = sc + np.where(own, LV_END_FOOTER, 0.0)
                if k < len(lat_slots):      # our own footer: bitmaps past the data are stale
                    sc = sc - np.where(own, extra[:, k], 0.0)
            hits = pending[sc >= ACCEPT]
            if sl.footer_offset is not None and not len(sl.bitmap_offsets):
                hits = pending   # checked fully afterwards (one sector each)
            if len(hits):
                result.setdefault((v.index, le), []).extend(int(p) for p in hits[:MAX_CANDIDATES])
        return result

    def run_interior(self, v: VdiState, le: int, pe: int) -> bool:
        """Does `pe` continue the run of unplaced extents before it? True when the PE before it
        is pending and holds bitmaps exactly where an LE `le - 1` would (the LVHD lattice is
        the same for every VDI): then `pe` is most likely the next extent of *that* run, not
        the first extent of a run of v's. LVM allocates runs; a run starts after a PE that
        does not lead into it."""
        prev = pe - 1
        slot = v.pred.slots.get(le - 1)
        if (le - 1) not in v.placed:
            return False    # v's own LE le-1 may be that PE: run_support weighs it
        if prev < 0 or self.owner[prev] != FREE or not self.f.has_data[prev] or slot is None \
                or not len(slot.bitmap_offsets) or self.sig_done is None \
                or not self.sig_done[prev]:
            return False
        offs = slot.bitmap_offsets // SECTOR
        if not ((offs % 8) == 7).all():
            return False
        return bool(self._sig_bits(self.sig_good, np.array([prev]), offs // 8).all())

    def run_support(self, v: VdiState, le: int, pe: int) -> float:
        """Does the run go on? With LE `le` of v on `pe`, the free PE after it (before it) is
        looked at as v's unplaced LE le+1 (le-1): +RUN_NEXT if its content fits that LE too
        (LVM allocates runs), -RUN_NEXT if it holds the bitmaps of an LE le+1 (le-1) that are
        not v's (flags, a bitmap past v's data: another VDI's extent follows), 0 if it says
        nothing. Candidates that fit one LE equally well are told apart by what follows them."""
        pred, uid, total = v.pred, v.anchor.uid, 0.0
        for step in (1, -1):
            nle, q = le + step, pe + step
            nslot = pred.slots.get(nle)
            if nle in v.placed or nle <= 0 or nslot is None or not nslot.has_content \
                    or not self.free(q) or not self.f.has_data[q]:
                continue
            c = self.scorer.content(nslot, q, uid, self.f)
            first, second = (pe, q) if step > 0 else (q, pe)
            out = (pred.slots.get(le) if step > 0 else nslot).straddle_out
            cont, inf = 0.0, False
            if out is not None:
                cont, inf, _, _ = self.scorer.continuity(out, first, second,
                                                         v.anchor.block_size, v.anchor.lvhd,
                                                         0, self.zw(v))
            if c >= ACCEPT and not (inf and cont < 0):
                total += RUN_NEXT
            elif len(nslot.bitmap_offsets):
                secs = self.reader.gather(self.D + q * self.E + nslot.bitmap_offsets, SECTOR)
                if (bitmap_likeness(secs) >= 0.95).all():
                    total -= RUN_NEXT
        return total

    def search_round(self) -> int:
        front = self.frontier()
        if not front:
            return 0
        cands = self.search_candidates(front, self.pending())
        by_slot: dict[tuple[int, int], list[tuple[int, Score]]] = {}
        for v, le in front:
            pes = set(cands.get((v.index, le), []))
            for nb, d in ((v.pe(le - 1), 1), (v.pe(le + 1), -1)):
                if nb is not None and self.free(nb + d) and self.f.has_data[nb + d]:
                    pes.add(nb + d)
            few = len(pes) <= RUN_SUPPORT_MAX   # more candidates: what follows cannot choose
            if self._careful and not few:
                continue    # the second look settles small contests; this one stays as it was
            scored = []
            for p in sorted(pes):
                s = self.score(v, le, p)
                if self.run_interior(v, le, p):
                    s.adjacency += RUN_INTERIOR
                if few:
                    s.adjacency += self.run_support(v, le, p)
                if s.total > -20:
                    scored.append((p, s))
            if scored:
                by_slot[(v.index, le)] = scored
        decisions = []
        totals = {k: [(p, sc.total) for p, sc in lst] for k, lst in by_slot.items()}
        content = {k: [(p, sc.total - sc.adjacency) for p, sc in lst]
                   for k, lst in by_slot.items()}
        small: list[list[tuple[int, int]]] = []
        large: list[tuple[int, int]] = []
        for comp in joint.components(totals):
            if len(comp) > 1 and joint.size_of(comp, totals) <= joint.MAX_ASSIGNMENTS:
                small.append(comp)
            else:
                large.extend(comp)
        # slots competing for the same PEs: chosen together (core.match.joint)
        for comp in small:
            best, marg = joint.marginals(comp, totals)
            _, marg_c = joint.marginals(comp, content)
            for key in comp:
                lst = by_slot[key]
                p = best[key]
                if p is None:
                    p = max(lst, key=lambda t: t[1].total)[0]
                s = dict(lst)[p]
                if s.total < ACCEPT:
                    continue
                conf = marg[key].get(p, 0.0)
                if marg_c[key].get(p, 0.0) < MIN_CONFIDENCE:
                    s.adjacency_decided = True
                rivals = [q for q, t in lst if q != p
                          and t.total - t.adjacency >= s.total - s.adjacency - 2.0]
                decisions.append((conf, s.total, key[0], key[1], p, s, rivals))
        # the rest one by one: the best candidate of its slot, against every slot wanting it
        by_pe: dict[int, list[float]] = {}
        by_pe_noadj: dict[int, list[float]] = {}
        for key in large:
            for p, s in by_slot[key]:
                by_pe.setdefault(p, []).append(s.total)
                by_pe_noadj.setdefault(p, []).append(s.total - s.adjacency)
        for (vi, le) in large:
            lst = by_slot[(vi, le)]
            vals = np.array([s.total for _, s in lst])
            best_i = int(np.argmax(vals))
            p, s = lst[best_i]
            if s.total < ACCEPT:
                continue
            row = _softmax_best(vals, none=0.0)
            col = _softmax_best(np.array(by_pe[p]), none=None, best=s.total)
            conf = min(row, col)
            # would the content alone (no adjacency prior) still pick it?
            noadj = np.array([t.total - t.adjacency for _, t in lst])
            by_content = min(_softmax_best(noadj, none=0.0, best=s.total - s.adjacency),
                             _softmax_best(np.array(by_pe_noadj[p]), none=None,
                                           best=s.total - s.adjacency))
            if by_content < MIN_CONFIDENCE:
                s.adjacency_decided = True
            # rivals: what fits by content about as well, whatever the adjacency prior says
            rivals = [q for q, t in lst if q != p
                      and t.total - t.adjacency >= s.total - s.adjacency - 2.0]
            decisions.append((conf, s.total, vi, le, p, s, rivals))
        decisions.sort(key=lambda d: (-d[0], -d[1], d[2], d[3]))
        placed = 0
        for conf, total, vi, le, p, s, rivals in decisions:
            v = self.vdis[vi]
            if le in v.placed:
                continue
            slot = v.pred.slots[le]
            if not len(slot.bitmap_offsets) and s.content < ACCEPT \
                    and not (s.informative and s.data_seen and s.continuity >= SPILL_ACCEPT):
                # far from its neighbours, a data-only extent needs its footer, or the telling
                # pattern of the block that spills into it
                continue
            if not len(slot.bitmap_offsets) and slot.lv_end_possible and not s.data_seen \
                    and not (s.informative and s.continuity > 0) and self._inflated_le(v) > le:
                # the footer says "the LV's end", but an inflated LV ends later: this extent
                # may as well be the last of a longer LV (its data-only LE elsewhere)
                v.ambiguous[le] = sorted([p] + rivals)
                continue
            if conf < MIN_CONFIDENCE:
                v.ambiguous[le] = sorted([p] + rivals)
                continue
            if not self.free(p):
                continue
            # tied to this VDI: continuity with its neighbours that says yes, its batmap
            # header, its own footer; fitting bitmaps alone fit any VDI with the same flags
            tied = (s.informative and s.continuity >= TIED_CONTINUITY) or slot.le1_batmap \
                or slot.footer_offset is not None \
                or (slot.lv_end_possible and self._own_tail(v, p))
            src = "vhd-match" if s.content >= ACCEPT or s.informative else "adjacency"
            cap = 0.97 if tied else 0.8
            if getattr(s, "adjacency_decided", False):
                src, cap = "adjacency", ADJACENCY_ONLY
            note = None
            if src == "adjacency":
                note = ("content fits " + (f"PEs {sorted(rivals)} " if rivals else
                                           "other VDIs' extents ")
                        + "as well; chosen by adjacency (LVM allocates runs)")
            self.place(v, le, p, min(conf, cap), src, note, weak=not tied)
            placed += 1
        return placed

    def island_round(self) -> int:
        """When walks and searches are stuck: an unplaced LE of any VDI (not only next to a
        placed one) whose bitmaps and batmap flags fit exactly one pending PE, which fits no
        other open LE, is placed there (low confidence: nothing but its own content ties it
        to this VDI). Its neighbours are then found from it by continuity."""
        slots = []
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            for le, sl in v.pred.slots.items():
                if le > 0 and le not in v.placed and len(sl.bitmap_offsets) \
                        and (sl.full >= 0).all():
                    slots.append((v, le))
        pending = self.pending()
        if not slots or not len(pending):
            return 0
        # PEs placed with low confidence count as rivals too: an island is unique among every
        # extent that might be it, not only among the free ones
        unsure = [pl.pe for w in self.vdis for pl in w.placed.values() if pl.confidence < 0.75]
        pool = np.union1d(pending, np.asarray(unsure, dtype=pending.dtype))
        cands: dict[tuple[int, int], list[int]] = {}
        for lo in range(0, len(slots), ISLAND_SLOTS):
            cands.update(self.search_candidates(slots[lo: lo + ISLAND_SLOTS], pool))
        wanted: dict[int, int] = {}
        for pes in cands.values():
            for p in set(pes):
                wanted[p] = wanted.get(p, 0) + 1
        placed = 0
        for v, le in slots:
            pes = sorted(set(cands.get((v.index, le), [])))
            if len(pes) != 1 or wanted[pes[0]] != 1 or not self.free(pes[0]):
                continue
            p = pes[0]
            if self.scorer.content(v.pred.slots[le], p, v.anchor.uid, self.f) < ISLAND_CONTENT:
                continue
            self.place(v, le, p, ISLAND_CONFIDENCE, "vhd-match",
                       "no placed neighbour: the one free extent whose bitmaps and batmap flags "
                       "fit this LE, and no other", weak=True)
            placed += 1
        return placed

    def _unsure_by_le(self) -> dict[int, list[VdiState]]:
        """LE -> VDIs whose LE is open to doubt: unplaced, or placed with low confidence."""
        out: dict[int, list[VdiState]] = {}
        for w in self.vdis:
            if w.pred is None or w.metadata_map:
                continue
            for le, sl in w.pred.slots.items():
                pl = w.placed.get(le)
                if len(sl.bitmap_offsets) and (pl is None or pl.confidence < 0.75):
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
                    and self.scorer.content(wslot, pe, w.anchor.uid, self.f) >= ACCEPT:
                return w
        return None

    def review_confidence(self) -> None:
        """A placement nothing ties to its VDI but content and adjacency (`weak`) is only as
        sure as it is unique: if another VDI has the same LE open (unplaced, or placed with
        low confidence) and the extent fits that LE as well, it is marked contested (low
        confidence, source adjacency), and named among that VDI's candidates. Any placement
        from content is marked so when a free extent fits its LE as well."""
        unsure = self._unsure_by_le()
        still: list[tuple[VdiState, int]] = []
        for v in self.vdis:
            for le, pl in v.placed.items():
                if not pl.weak or pl.confidence < 0.75:
                    continue
                w = self._rival(v, le, pl.pe, unsure)
                if w is None:
                    continue
                pl.confidence, pl.source, pl.note = CONTESTED, "adjacency", CONTESTED_NOTE
                if le not in w.placed:
                    w.ambiguous[le] = sorted(set(w.ambiguous.get(le, [])) | {pl.pe})
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            for le, pl in v.placed.items():
                sl = v.pred.slots.get(le)
                if le > 0 and pl.confidence >= 0.75 and pl.source == "vhd-match" \
                        and sl is not None and sl.searchable:
                    still.append((v, le))
        # every placement from content is only as sure as no free extent fits it as well (a
        # copy left behind by pvmove, a stale twin): one batched search over the pending PEs
        pending = self.pending()
        if not still or not len(pending):
            return
        for lo in range(0, len(still), ISLAND_SLOTS):
            part = still[lo: lo + ISLAND_SLOTS]
            cands = self.search_candidates(part, pending)
            for v, le in part:
                others = sorted(set(cands.get((v.index, le), [])))
                if not others:
                    continue
                pl = v.placed[le]
                mine = self.score(v, le, pl.pe)
                bar = mine.total - mine.adjacency - 1.0
                slot = v.pred.slots[le]
                twins = []
                for q in others:
                    if self.scorer.content(slot, q, v.anchor.uid, self.f) + CONT_CAP * 2 < bar:
                        continue        # even perfect continuity could not make it a twin
                    t = self.score(v, le, q)
                    if t.total - t.adjacency >= bar:
                        twins.append(q)
                        if len(twins) >= 4:
                            break
                if twins:
                    pl.confidence, pl.source = CONTESTED, "adjacency"
                    pl.note = (f"free PEs {twins} fit as well; chosen because it follows the "
                               f"neighbouring extents on disk")

    def _rounds(self, limit: int) -> None:
        rounds = 0
        while rounds < limit:
            rounds += 1
            self._tick()
            n = self.walk_all()
            n += self.search_round()
            if n == 0:
                n = self.island_round()
            if n == 0:
                break

    def second_look(self, limit: int) -> None:
        """The first pass decides undecided extents by adjacency as it meets them, before the
        extents around them are known. Here every placement made with low confidence is taken
        back and decided again with everything certain in place: walks stop where another VDI
        wants the same LE, and the search chooses such slots together, with continuity into
        the neighbours now placed. What is still undecided gets its first-pass placement back,
        so the second look can only correct, never lose, a placement."""
        released: list[tuple[VdiState, int, Placement]] = []
        unsure = self._unsure_by_le()
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            for le, pl in list(v.placed.items()):
                if le == 0 or pl.source not in ("adjacency", "vhd-match"):
                    continue
                if pl.confidence < 0.75 or (pl.weak and self._rival(v, le, pl.pe, unsure)):
                    released.append((v, le, pl))
        for v, le, pl in released:
            del v.placed[le]
            self.owner[pl.pe] = FREE
        if not released:
            return
        self._careful = True
        try:
            self._rounds(limit)
        finally:
            self._careful = False
        for v, le, pl in released:
            if le not in v.placed and self.free(pl.pe):
                self.owner[pl.pe] = v.index
                v.placed[le] = pl
                v.ambiguous.pop(le, None)

    # -- footers and gaps ----------------------------------------------------------------------
    def footer_candidates(self, v: VdiState) -> tuple[list[int], list[int]]:
        """(PEs placed for v, free PEs) whose last sector is a footer of v's unique id that
        describes the disk as the copy at offset 0 does (same current size, checksum right).
        A footer with another size is an old one (vhd-util resize leaves it where the LV used
        to end): never the LV's end. Footers of the same size can still be old ones (sm's
        inflate moves the footer and leaves the old copy): callers weigh that."""
        a = v.anchor
        uid = np.frombuffer(a.uid, dtype=np.uint8)
        cands = np.nonzero(self.f.tail_footer & (self.f.tail_uid == uid).all(axis=1))[0]
        if not len(cands):
            return [], []
        tails = self.reader.gather(self.D + cands.astype(np.int64) * self.E + self.E - SECTOR,
                                   SECTOR)
        own, free, old = [], [], []
        for p, raw in zip(cands.tolist(), tails):
            raw = raw.tobytes()
            ftr = S.parse_footer(raw)
            if S.footer_checksum(raw) != ftr.checksum or int(ftr.curr_size) != a.current_size:
                old.append(p)
                continue
            if self.owner[p] == v.index:
                own.append(p)
            elif self.owner[p] == FREE:
                free.append(p)
        if old:
            self.findings.append(Finding(
                "vhd-old-footer", self.D + old[0] * self.E + self.E - SECTOR, "info",
                f"VHD {a.uid_str}: PEs {old[:8]} end with an older footer of it (another size "
                f"or damaged): where the LV ended before a resize, not its end",
                {"vhd_uuid": a.uid_str, "pes": old[:16]}))
        return own, free

    def place_footers(self) -> None:
        for v in self.vdis:
            a = v.anchor
            if a is None or v.pred is None or v.metadata_map or not a.lvhd:
                continue
            last = v.pred.last_data_le
            own, free = self.footer_candidates(v)
            if v.pe(last) is not None and v.pe(last) in own:
                # the LV can end right after its data with this footer, as sm leaves a deflated
                # VDI: a valid LV holding every block. Free extents ending with the same footer
                # are named: an inflated end (the footer at the data's end then an old one) or
                # extents a deflate freed - content cannot tell, so none is claimed
                v.le_count = last + 1
                v.footer_pe = v.pe(last)
                if free:
                    self.findings.append(Finding(
                        "vhd-footer-elsewhere", self.D + free[0] * self.E, "info",
                        f"VHD {a.uid_str}: free PEs {free[:8]} also end with its footer (an "
                        f"inflated end, or extents freed by a deflate); the LV is taken to end "
                        f"after its data (LE {last})", {"vhd_uuid": a.uid_str, "pes": free[:16]}))
                continue
            if not free:
                if not own:
                    self.findings.append(Finding(
                        "vhd-footer-not-found", None, "warning",
                        f"VHD {a.uid_str}: no extent ends with its footer; the LV's length "
                        f"is unknown (the footer copy at offset 0 still describes the disk)",
                        {"vhd_uuid": a.uid_str}))
                continue
            if own:
                # a placed extent and a free one both end with this VHD's footer: one of them
                # is an old end (sm's inflate leaves the old footer; a deflate frees extents
                # that still end with it). Which is the LV's end is not for content to say.
                self._footer_unplaced(v, free, "a placed extent ends with the same footer "
                                               "(one of them is an old end)")
                continue
            if len(free) > 1:
                self._footer_unplaced(v, free, "several extents end with its footer")
                continue
            self._place_footer(v, last, free)

    def _footer_unplaced(self, v: VdiState, free: list[int], why: str) -> None:
        """Footer extents whose LE cannot be told: named (and suggested for the LE sm's
        sizing gives, if any), never claimed."""
        a = v.anchor
        self.findings.append(Finding(
            "vhd-footer-extent-unplaced", self.D + free[0] * self.E, "warning",
            f"VHD {a.uid_str}: PEs {free[:8]} end with its footer; {why}: the LV's length "
            f"and that extent's LE are not decided", {"vhd_uuid": a.uid_str, "pes": free[:16]}))
        le = self._inflated_le(v)
        if le > v.pred.last_data_le and le not in v.placed:
            v.ambiguous[le] = sorted(set(v.ambiguous.get(le, [])) | set(free[:16]))

    def _place_footer(self, v: VdiState, last: int, free: list[int]) -> None:
        """The one free extent that ends with v's footer (none of v's placed ones does)."""
        a = v.anchor
        p_last = v.pe(last)
        chosen = None
        if p_last is not None:
            # the LV continues in the same run up to the footer: every PE between is free
            for q in sorted(free, reverse=True):
                if q > p_last and all(self.free(x) for x in range(p_last + 1, q)):
                    chosen = q
                    break
        sized = self._footer_by_sizing(v, free)
        if chosen is not None and sized is not None:
            contiguous_le = last + (chosen - p_last)
            if sized[1] < contiguous_le:
                # the free run up to the footer would make the LV longer than sm ever makes
                # it: an LV not sized by sm's rule (an older VDI's) or a run that is not this
                # LV's. Neither is evidence enough: both readings suggested, nothing placed
                for le in (contiguous_le, sized[1]):
                    v.ambiguous[le] = sorted(set(v.ambiguous.get(le, [])) | {chosen})
                self.findings.append(Finding(
                    "vhd-footer-extent-suggested", self.D + chosen * self.E, "warning",
                    f"VHD {a.uid_str}: PE {chosen} ends with its footer; the free run after "
                    f"its data makes it LE {contiguous_le}, sm's LV sizing LE {sized[1]}: "
                    f"not placed", {"vhd_uuid": a.uid_str, "pe": chosen,
                                    "les": [contiguous_le, sized[1]]}))
                return
            if sized[1] != contiguous_le:
                chosen = None      # sm's sizing says the LV is longer: the gap lies elsewhere
        if chosen is None:
            if sized is not None:
                q, footer_le, conf, src, note = sized
                self.place(v, footer_le, q, conf, src, note)
                v.le_count = footer_le + 1
                v.footer_pe = q
                return
            self._footer_unplaced(v, free, "its LE number cannot be told from content")
            return
        n_gap = chosen - p_last - 1
        footer_le = last + n_gap + 1
        for k in range(1, n_gap + 1):
            self.place(v, last + k, p_last + k, GAP_CONFIDENCE, "adjacency",
                       "no VHD data: inferred from the free run up to the footer")
        self.place(v, footer_le, chosen, 0.97 if n_gap == 0 else 0.6,
                   "vhd-match" if n_gap == 0 else "adjacency",
                   None if n_gap == 0 else "footer extent; its LE number inferred from "
                   "the free run after the last data extent")
        v.le_count = footer_le + 1
        v.footer_pe = chosen

    def _inflated_le(self, v: VdiState) -> int:
        """The last LE of v's LV if sm inflated it (thick size), -1 if not an sm layout."""
        inflated = sm_inflated_bytes(v.anchor, self.E)
        return -1 if inflated is None else -(-inflated // self.E) - 1

    def _footer_by_sizing(self, v: VdiState, free: list[int]):
        """sm sizes a VHD LV by rule (formats.md 3.1): inflated = roundup4M(4,329,472 + virtual
        + 4096 per virtual block), deflated = roundup4M(end of data + footer). When exactly one
        of those lengths fits (its last LE is after the data and still unplaced), the footer
        extent is that LE. Only for the 2 MiB-block, 4 MiB-extent LVHD layout."""
        inflated = sm_inflated_bytes(v.anchor, self.E)
        if len(free) != 1 or inflated is None:
            return None
        sizes = {"inflated": inflated, "deflated": v.anchor.data_end + 512}
        fits = {}
        for rule, size in sizes.items():
            le = -(-size // self.E) - 1
            if le >= v.pred.last_data_le and le not in v.placed:
                fits.setdefault(le, rule)
        if len(fits) == 2:
            return self._footer_by_allocation(v, free[0], min(fits), max(fits))
        if len(fits) != 1:
            return None
        le, rule = next(iter(fits.items()))
        if le == v.pred.last_data_le and v.pe(le - 1) is not None:
            return None   # then it would have been found as the last data extent
        q = free[0]
        return q, le, 0.7, "vhd-match", \
            f"ends with the VHD footer; LE number from sm's LV sizing ({rule})"

    def _footer_by_allocation(self, v: VdiState, q: int, deflated: int, inflated: int):
        """Both of sm's sizes fit the one footer extent `q`: the LV ends at LE `deflated`
        (right after the data, as sm leaves a deflated VDI) or at LE `inflated` (sm's full size,
        the LEs between holding no data). Content cannot tell: the deflated reading puts only
        zeros (unwritten sectors of the last block) where the other reading puts gap, and the
        virtual disk is the same either way. LVM's allocation order can: it takes a free area
        from its start, and extends an LV at the next free extent. So
        * every PE between LE deflated-1's PE and q is in use: q is the next free extent after
          the data, the LV's deflated end (lvextend by one extent);
        * the PE before q is free: q is not the start of a free area, so it was allocated
          together with the PE before it, the end of a run of gap extents: the inflated end.
        Otherwise, or if the last data LE's predecessor is not placed, it stays unplaced.
        Low confidence, source adjacency: an allocation prior, not content."""
        left = v.pe(deflated - 1)
        if left is None or deflated != v.pred.last_data_le:
            return None
        if q > left + 1 and all(self.owner[x] != FREE for x in range(left + 1, q)):
            return q, deflated, ALLOCATION_GUESS, "adjacency", (
                f"ends with the VHD footer; fits sm's deflated size (LE {deflated}) and inflated "
                f"size (LE {inflated}): deflated, as it is the next free extent after LE "
                f"{deflated - 1}")
        if q > 0 and q - 1 != left and self.owner[q - 1] == FREE:
            return q, inflated, ALLOCATION_GUESS, "adjacency", (
                f"ends with the VHD footer; fits sm's deflated size (LE {deflated}) and inflated "
                f"size (LE {inflated}): inflated, as the extent before it is free (an "
                f"allocation starts a free area: it ends a run of gap extents)")
        return None

    def fill_gaps(self) -> None:
        """Unplaced LEs between two placed ones whose PE distance matches and whose PEs are free."""
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            les = sorted(v.placed)
            for a, b in zip(les, les[1:]):
                if b - a <= 1:
                    continue
                pa, pb = v.pe(a), v.pe(b)
                if pb - pa != b - a or not all(self.free(x) for x in range(pa + 1, pb)):
                    continue
                for k in range(1, b - a):
                    slot = v.pred.slots.get(a + k)
                    has = slot is not None and slot.has_content
                    self.place(v, a + k, pa + k, 0.5 if has else GAP_CONFIDENCE, "adjacency",
                               "between two placed extents" + ("" if has else "; no VHD data"))

    # -- precision first on images with a previous life -----------------------------------------
    def image_stale(self) -> bool:
        """Did any VDI's blocks show stale bytes where the guest never wrote (core.match.
        zerofill)? Then its extents were used before: remnants of older VHDs (same sm layout,
        same 4 MiB grid, same bitmap lattice) can fit any LE by layout alone."""
        return any(z.stale for z in self.zero.values())

    def withdraw_guesses(self) -> None:
        """On an image with a previous life, the priors that place extents nothing ties to
        their VDI (LVM's allocation order, sm's sizing, islands, data-less gaps) land on an
        older VHD's remnants as readily as on the VDI's own extents (issue 10). Such
        placements are withdrawn and listed as the LE's candidates; so is every weak
        placement (content that fits any VDI with that LE open) no longer connected, through a
        run of placed neighbours on consecutive PEs, to one that evidence ties to the VDI.
        What stays is what evidence placed; the rest is for the technician (`--fix`)."""
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            drop = set()
            for le, pl in v.placed.items():
                if le == 0 or pl.source in ("metadata", "manual"):
                    continue
                rule = pl.note is not None and ("sizing" in pl.note or "no placed neighbour"
                                                in pl.note or "no VHD data" in pl.note
                                                or "allocation" in pl.note
                                                or "free run" in pl.note)
                contested = pl.note == CONTESTED_NOTE
                if rule or contested:
                    drop.add(le)
            changed = True
            while changed:
                changed = False
                for le, pl in v.placed.items():
                    if le in drop or le == 0 or not pl.weak:
                        continue
                    if le - 1 not in drop and le + 1 not in drop:
                        continue        # its neighbours did not lead to it by a guess
                    held = False
                    for d in (-1, 1):
                        nb = v.placed.get(le + d)
                        if nb is not None and le + d not in drop and nb.pe == pl.pe + d \
                                and (not nb.weak or le + d == 0):
                            held = True
                    if not held and not self._run_to_strong(v, le, drop):
                        drop.add(le)
                        changed = True
            for le in sorted(drop):
                pl = v.placed.pop(le)
                if self.owner[pl.pe] == v.index:
                    self.owner[pl.pe] = FREE
                v.ambiguous[le] = sorted(set(v.ambiguous.get(le, [])) | {pl.pe})
            if drop:
                if v.le_count is not None and max(drop) >= v.le_count - 1:
                    v.le_count, v.footer_pe = None, None
                self.findings.append(Finding(
                    "placements-withdrawn", None, "info",
                    f"{v.lv_name or v.anchor.uid_str}: LEs {sorted(drop)[:16]} were placed by "
                    f"layout and allocation order alone; this disk had a previous life (stale "
                    f"bytes measured), so they are listed as candidates, not placed",
                    {"les": sorted(drop)}))

    @staticmethod
    def _run_to_strong(v: VdiState, le: int, drop: set[int]) -> bool:
        """Is LE `le` joined, through placed LEs on consecutive PEs (none withdrawn), to a
        placement evidence ties to v (not weak, or LE 0)?"""
        for d in (-1, 1):
            j, pe = le, v.placed[le].pe
            while True:
                nb = v.placed.get(j + d)
                if nb is None or j + d in drop or nb.pe != pe + d:
                    break
                j, pe = j + d, nb.pe
                if not nb.weak or j == 0:
                    return True
        return False

    # -- driver --------------------------------------------------------------------------------
    def solve(self, max_rounds: int | None = None) -> None:
        limit = max_rounds if max_rounds is not None else 4 * self.N + 16
        # first without trusting zeros anywhere; then, where the placed extents show that
        # unwritten sectors read zero, with that evidence too
        self._rounds(limit)
        if self.measure_zero_fill():
            self._rounds(limit)
        self.second_look(limit)
        self.place_footers()
        self.fill_gaps()
        self.review_confidence()
        if self.image_stale():
            self.withdraw_guesses()
        for v in self.vdis:
            for le, pes in sorted(v.ambiguous.items()):
                elsewhere = {pl.pe for pl in v.placed.values()}
                pes = [p for p in pes if self.owner[p] == FREE
                       or (self.owner[p] == v.index and p not in elsewhere)]
                if le in v.placed or not pes:
                    v.ambiguous.pop(le, None)
                    continue
                v.ambiguous[le] = pes
                self.findings.append(Finding(
                    "extent-ambiguous", None, "warning",
                    f"{v.lv_name or v.anchor.uid_str} LE {le}: no clear candidate (closest: PEs {pes}); "
                    f"not placed", {"le": le, "candidates": pes}))


def _is_guess(pl: Placement) -> bool:
    """A placement that rests on a prior (LVM's allocation order, sm's sizing rule, "the one
    extent that fits") rather than on evidence tying the extent to its VDI."""
    return pl.source not in ("metadata", "manual") and (
        pl.confidence < GUESS_BELOW or pl.source == "adjacency")


def _softmax_best(values: np.ndarray, none: float | None, best: float | None = None) -> float:
    """Share of the best value among alternatives (log-odds scores), with an optional 'none'."""
    if len(values) == 0:
        return 0.0
    top = float(values.max()) if best is None else best
    m = max(float(values.max()), top, none if none is not None else -math.inf)
    den = float(np.exp(values - m).sum()) + (math.exp(none - m) if none is not None else 0.0)
    return math.exp(top - m) / den
