"""Walks: from every placed extent, LE j+1 on PE p+1 (LVM allocates runs) while the content
fits the prediction and the block straddling the boundary continues consistently; a step that
nothing but adjacency supports stops where another VDI's run goes on, or is marked contested
(core.match.assign drives the rounds).
"""

from __future__ import annotations

import numpy as np

from core.match.board import (
    ACCEPT, TIED, CONTINUES, FITS, WALKED, CONTESTED, CONTESTED_NOTE, WALK_NOTE, WALK_BATCH,
    SCORE_CACHE, VdiState)

WALK_FIRST = 8      # a guest-less VDI's walk steps scored at first (then as many again)
from core.match.features import SECTOR, bitmap_likeness
from core.match.score import (
    BATMAP_HDR, BATMAP_HDR_MISSING, CONT_CAP, FOOTER_BAD, FOOTER_OK,
    LV_END_FOOTER, Score, Scorer, bitmap_llr, continuity_llr,
    sample_rows)
from core.structs import vhd as S


class WalkMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

    @staticmethod
    def _walk_verdict(slot, s: Score) -> tuple[bool, float, str]:
        """Accept a walked step? (accept, confidence, source)."""
        if s.informative and s.continuity < 0:
            return False, 0.0, ""
        # the batmap header ties LE 1 only with blocks of the VHD there to check
        strong = slot.footer_offset is not None or (slot.le1_batmap and len(slot.bitmap_offsets))
        if len(slot.bitmap_offsets) or strong:
            if s.content < ACCEPT:
                return False, 0.0, ""
            if s.informative or strong:
                return True, TIED, "vhd-match"
            return True, FITS, "vhd-match"
        # data-only extent (the tail of a block that started in the previous LE)
        if s.content < 0:
            return False, 0.0, ""       # e.g. it ends with another VHD's footer
        if s.content >= ACCEPT:
            return True, TIED, "vhd-match"   # its own footer in the last sector
        if s.informative and s.continuity > 0:
            return True, CONTINUES, "vhd-match"
        return True, WALKED, "adjacency"

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
            if conf < CONTINUES and self._rival_follows(v, nle + step, npe + step):
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
        K = len(les)
        slots = [v.pred.slots[j] for j in les]
        pes_a = np.asarray(pes, dtype=np.int64)
        content = np.zeros(K)
        self._steps_bitmaps(slots, pes, content)
        own, bonus = self._steps_features(v, slots, pes, pes_a, content)
        # continuity with the extent before each step
        cont = np.zeros(K)
        informative = np.zeros(K, dtype=bool)
        got = self._steps_continuity(v, les, pes)
        if got is not None:
            cont, informative, empty = got
            nobm = np.array([not len(sl.bitmap_offsets) for sl in slots])
            content -= np.where(empty & nobm & own & bonus, LV_END_FOOTER, 0.0)
        out = [Score(float(content[k]), float(cont[k]) if informative[k] else 0.0,
                     bool(informative[k]), 1.0) for k in range(K)]
        for k, sc in enumerate(out):
            self.add_guest(sc, v, les[k], pes[k])     # core.match.guest
        return out

    def _steps_bitmaps(self, slots: list, pes: list[int], content: np.ndarray) -> None:
        """Add to `content` each step's bitmap log-odds: one gather for all predicted bitmaps."""
        K = len(slots)
        offs, step, full = [], [], []
        for k, sl in enumerate(slots):
            if len(sl.bitmap_offsets):
                offs.append(self.D + pes[k] * self.E + sl.bitmap_offsets)
                step.append(np.full(len(sl.bitmap_offsets), k))
                full.append(sl.full)
        if offs:
            # (through the scorer's memo of bitmap sectors: every VDI with this LE open
            # scores the same extents' bitmaps)
            secs = self.scorer.sectors(np.concatenate(offs))
            llr = bitmap_llr(secs, np.concatenate(full))
            content += np.bincount(np.concatenate(step), weights=llr, minlength=K)

    def _steps_features(self, v: VdiState, slots: list, pes: list[int], pes_a: np.ndarray,
                        content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add to `content` the cheap per-PE features (bitmaps past the data, footers at the
        tail, batmap headers, the footer a slot predicts); returns (ends with our own footer,
        the slot earns the LV-end footer bonus) per step."""
        f = self.f
        uid = np.frombuffer(v.anchor.uid, dtype=np.uint8)
        tail = f.tail_footer[pes_a]
        own = tail & (f.tail_uid[pes_a] == uid).all(axis=1)
        lv_end = np.array([sl.lv_end_possible for sl in slots])
        for k, sl in enumerate(slots):
            if len(sl.absent_offsets) and not (own[k] and lv_end[k]):
                # the last data LE: no bitmap past the data (unless it ends with our footer)
                secs = self.reader.gather(self.D + pes[k] * self.E + sl.absent_offsets, SECTOR)
                content[k] += self.scorer.extra_bitmap * int((bitmap_likeness(secs) >= 0.95).sum())
        le1 = np.array([sl.le1_batmap for sl in slots])
        for k, sl in enumerate(slots):
            if tail[k] and not own[k]:
                content[k] += self.scorer.other_footer(sl, pes_a[k:k + 1], np.ones(1, bool),
                                                       f.tail_uid[pes_a[k:k + 1]])[0]
        bonus = np.array([sl.footer_bonus for sl in slots])
        content += np.where(own & bonus, LV_END_FOOTER, 0.0)
        content += np.where(f.head_batmap[pes_a] & ~le1, self.scorer.other_batmap, 0.0)
        content += np.where(le1, np.where(f.head_batmap[pes_a], BATMAP_HDR, BATMAP_HDR_MISSING),
                            0.0)
        for k, sl in enumerate(slots):
            if le1[k] and f.head_batmap[pes[k]]:
                content[k] += self.scorer.batmap_llr(sl, pes[k])
        for k, sl in enumerate(slots):
            if sl.footer_offset is not None:
                ftr = self.reader.gather(np.array([self.D + pes[k] * self.E + sl.footer_offset]),
                                         SECTOR)[0]
                ok = ftr[:8].tobytes() == S.HD_COOKIE and ftr[68:84].tobytes() == v.anchor.uid
                content[k] += FOOTER_OK if ok else FOOTER_BAD
        return own, bonus

    def _steps_continuity(self, v: VdiState, les: list[int], pes: list[int]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Continuity of each step with the extent before it (the block straddling the
        boundary): (capped log-odds, informative, the straddling block's written sectors all
        read empty) per step, or None when no step has a straddling block."""
        pred, K = v.pred, len(les)
        strad = [pred.slots.get(j - 1) for j in les]
        ks = [k for k, sl in enumerate(strad) if sl is not None and sl.straddle_out is not None
              and sl.straddle_out.sectors > 0]
        if not ks:
            return None
        bm_offs = np.array([self.D + (pes[k] - 1) * self.E + strad[k].straddle_out.bitmap_offset
                            for k in ks])
        bms = self.scorer.sectors(bm_offs)
        nbits = v.anchor.block_size // SECTOR
        bits = np.unpackbits(bms, axis=1)[:, :nbits].astype(bool)
        # each step's window (the straddling block's sectors in its extent), padded to one
        # width, sampled in one call
        first = np.array([strad[k].straddle_out.first_sector for k in ks], np.int64)
        length = np.array([strad[k].straddle_out.sectors for k in ks], np.int64)
        width = int(length.max())
        # (a view of every row's windows of that width, one picked per row: no index array
        # per sector)
        padded = np.zeros((len(ks), max(nbits, int(first.max())) + width), bool)
        padded[:, :nbits] = bits
        view = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)
        valid = np.arange(width)[None, :] < np.minimum(length, nbits - first)[:, None]
        windows = view[np.arange(len(ks)), first] & valid
        counts, idx = sample_rows(windows, valid)
        rows = np.repeat(np.arange(len(ks)), counts)
        kk = np.asarray(ks, np.int64)[rows]
        written = windows[rows, idx]
        offsets = self.D + np.asarray(pes, np.int64)[kk] * self.E + idx * SECTOR
        if self.zw(v) > 0:
            present = self.reader.nonzero(offsets)
        else:
            # unwritten sectors tell nothing where zeros are not trusted (Scorer.
            # _continuity_of): only the written ones are read
            present = np.zeros(len(rows), bool)
            present[written] = self.reader.nonzero(offsets[written])
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
        return cont, informative, empty

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
            # without a guest, a step's score does not depend on the steps placed before it
            # (a guest reads through them: core.match.guest): then the steps are scored a
            # few at a time, as far as the walk goes (most walks on a large SR of alike
            # VDIs stop after a few of WALK_BATCH steps)
            verdicts: list[tuple] = []
            lone = self.guest_of(v) is None
            ahead = WALK_FIRST if lone else len(les)

            def upto(n: int) -> None:
                got = len(verdicts)
                if n > got:
                    n = min(len(les), max(n, got + max(ahead, got)))
                    verdicts.extend(self._step_verdicts(v, les[got:n], pes[got:n], lone))

            for i, (j, p) in enumerate(zip(les, pes)):
                upto(i + 1)
                ok, conf, src = verdicts[i]
                if not ok:
                    return placed
                if conf < CONTINUES and i + 1 < len(les):
                    upto(i + 2)
                    if not verdicts[i + 1][0] \
                            and self._rival_follows(v, les[i + 1], pes[i + 1]):
                        return placed
                if not self._take_step(v, j, p, conf, src):
                    return placed
                placed += 1
                le, pe = j, p
                if v.pred is not pred:      # the batmap was read: later steps rescored
                    break
            self._tick()

    def _first_steps(self, v: VdiState) -> None:
        """For a VDI without a guest, the verdicts of the first steps of every forward walk
        walk_all is about to start from its run ends, scored in one batch and kept
        (_step_verdicts), and the scores of every backward walk's first step (score's
        memo): each walk then finds them instead of scoring its own (a large SR of alike
        VDIs starts some fifteen hundred walks each way a round, most of them stopping at
        once). Without a guest a score depends on nothing placed but what its key names.
        Scoring is all this does; the walks decide."""
        if self.guest_of(v) is not None:
            return
        les, pes = [], []
        for le in sorted(v.placed):
            if (le + 1) in v.placed or (le + 1) not in v.pred.slots:
                continue
            j, p = le, v.placed[le].pe
            for _ in range(WALK_FIRST):
                j, p = j + 1, p + 1
                slot = v.pred.slots.get(j)
                if slot is None or not slot.has_content or j in v.placed or not self.free(p) \
                        or (not self.f.has_data[p]
                            and (len(slot.bitmap_offsets) or slot.le1_batmap)):
                    break
                les.append(j)
                pes.append(p)
        if les:
            self._step_verdicts(v, les, pes, True)
        # and the first step of every backward walk (walk), into score's memo
        rows = []
        for le in sorted(v.placed, reverse=True):
            nle, npe = le - 1, v.placed[le].pe - 1
            slot = v.pred.slots.get(nle)
            if le > 0 and nle not in v.placed and slot is not None and slot.has_content \
                    and self.free(npe) and self.f.has_data[npe]:
                rows.append((v, nle, npe, v.pe(nle - 1), v.placed[le].pe))
        if rows:
            self.scores_rows(rows)

    def _step_verdicts(self, v: VdiState, les: list[int], pes: list[int], lone: bool
                       ) -> list[tuple]:
        """_walk_verdict of each step (LE les[k] on PE pes[k]) from score_steps. For a VDI
        without a guest (`lone`) a step's verdict depends on nothing placed but what the
        scorer knows: it is kept (with the prediction it was made with, the zero-fill
        weight and the scorer's generation: its weights, the LV ends and strangers it
        knows) and not scored again when the next round walks from the same run end (a
        large SR of alike VDIs walks from some fifteen hundred run ends a round, most
        stopping at once)."""
        keys = [(v.index, j, p, self.zw(v), self.scorer.generation)
                for j, p in zip(les, pes)]
        out: list[tuple | None] = [None] * len(les)
        if lone:
            for k, key in enumerate(keys):
                hit = self._verdicts.get(key)
                if hit is not None and hit[0] is v.pred:
                    out[k] = hit[1]
        todo = [k for k, got in enumerate(out) if got is None]
        if todo:
            scores = self.score_steps(v, [les[k] for k in todo], [pes[k] for k in todo])
            if len(self._verdicts) > SCORE_CACHE:
                self._verdicts.clear()
            for k, sc in zip(todo, scores):
                out[k] = self._walk_verdict(v.pred.slots[les[k]], sc)
                if lone:
                    self._verdicts[keys[k]] = (v.pred, out[k])
        return out

    def _take_step(self, v: VdiState, le: int, pe: int, conf: float, src: str) -> bool:
        """Place an accepted walk step; a step nothing but adjacency supports that another VDI
        wants as well is placed as contested, or (second look) not taken; one the review
        withdrew (review._withdraw) is not taken again: False stops the walk."""
        note = WALK_NOTE if src == "adjacency" else None
        if (v.index, le, pe) in getattr(self, "withdrawn", ()):
            return False        # the review took it back: a walk is the prior it rested on
        if conf < CONTINUES and self._contested(v, le, pe):
            if self._careful:
                return False
            conf, src, note = CONTESTED, "adjacency", CONTESTED_NOTE
        self.place(v, le, pe, conf, src, note, weak=conf < CONTINUES)
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
        secs = self.scorer.sectors(self.D + pe * self.E + slot.bitmap_offsets)
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
                    and self.scorer.content(other, pe, w.anchor.uid, self.f) >= ACCEPT \
                    and not self.no_rival(v, w, le, pe):
                return True
        return False

    def _open_update(self, v: VdiState, le: int) -> None:
        """Keep the live frontier (LE -> VDIs looking for it) as extents are placed."""
        self._open.get(le, set()).discard(v.index)
        for nle in (le - 1, le + 1):
            sl = v.pred.slots.get(nle) if v.pred is not None else None
            if nle > 0 and nle not in v.placed and sl is not None and sl.has_content:
                self._open.setdefault(nle, set()).add(v.index)

    def walk_all(self, skip=None) -> int:
        """Walk on from the ends of every placed run (forward in batches, backward by step);
        not for the VDIs `skip(v)` names."""
        self._open = {}
        for w, le in self.frontier():
            self._open.setdefault(le, set()).add(w.index)
        total = 0
        for v in self.vdis:
            if v.pred is None or skip is not None and skip(v):
                continue
            self._first_steps(v)
            for le in sorted(v.placed):
                if (le + 1) not in v.placed and (le + 1) in v.pred.slots:
                    total += self.walk_forward(v, le)
            for le in sorted(v.placed, reverse=True):
                if le > 0 and (le - 1) not in v.placed:
                    total += self.walk(v, le, -1)
        return total
