"""Searches: where a walk stops, the next LE is a frontier slot. Every free PE holding data is
scored against all frontier slots at once (4 KiB-lattice signatures of each PE, numpy), the
candidates are scored fully with continuity, adjacency and what follows them as priors, and
placed by confidence: slots that compete for the same PEs are chosen together
(core.match.joint), the others one by one against every slot wanting the same PE. Islands: an
LE whose flags fit exactly one extent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.match import joint
from core.match.board import (
    FREE, ACCEPT, TIED, FITS, SURE, MIN_CONFIDENCE, ADJACENCY_ONLY, RIVAL_VDIS_NOTE,
    SEARCH_SECTORS, SIG_BATCH, MAX_CANDIDATES, RUN_INTERIOR, ISLAND_SLOTS, ISLAND_CONTENT,
    ISLAND_CONFIDENCE, LATTICE_CELLS, SEARCH_ROWS_MIN, TIED_CONTINUITY, RUN_SUPPORT_MAX, RUN_NEXT,
    SPILL_PREFILTER, SPILL_ACCEPT, VdiState)
from core.match.features import SECTOR, bitmap_likeness
from core.match.score import (
    BATMAP_HDR, BATMAP_HDR_MISSING, BITMAP_BAD, BITMAP_GOOD, FULL_BAD, FULL_OK,
    NOT_FULL_BAD, LV_END_FOOTER, Score, bitmap_llr, continuity_llr, sample_sectors)
from core.structs.lvhd import LVHD_LATTICE_SLOTS


@dataclass
class LatticeKinds:
    """The kinds of lattice slot one search scores (SearchMixin._lattice_kinds)."""
    kind_of: np.ndarray      # per slot, its kind
    cols: np.ndarray         # the lattice columns looked at
    bpos: np.ndarray         # per kind, its bitmaps' positions in `cols` (padded)
    bmask: np.ndarray        # 1 where bpos is a real bitmap, 0 padding
    f1: np.ndarray           # per bitmap, added where the sector is all ones (batmap "full")
    f0: np.ndarray           # per bitmap, added where it is not
    xpos: np.ndarray         # per kind, positions of bitmaps past its data (padded)
    xw: np.ndarray           # their weight (extra_bitmap; 0 padding)
    cells: int               # bitmaps scored per PE, over all kinds


class SearchMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

    # -- search --------------------------------------------------------------------------------
    def frontier(self, skip=None) -> list[tuple[VdiState, int]]:
        """Open LEs next to a placed one (or reached by a placed one's spill); not of the
        VDIs `skip` names."""
        out = []
        for v in self.vdis:
            if v.pred is None or skip is not None and skip(v):
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

    # lattice signatures: computed once per PE, only for PEs a search looks at
    def ensure_sigs(self, pes: np.ndarray) -> None:
        """For each PE, which 4 KiB-lattice sectors (7 mod 8: where LVHD bitmaps sit) look like
        bitmaps and which are all ones: 2 x 128 bytes per PE, read once (holes skipped)."""
        if self.sig_good is None:
            self.sig_good = np.zeros((self.N, LVHD_LATTICE_SLOTS // 8), np.uint8)
            self.sig_ones = np.zeros((self.N, LVHD_LATTICE_SLOTS // 8), np.uint8)
            self.sig_done = np.zeros(self.N, bool)
        todo = pes[~self.sig_done[pes]]
        lattice = (np.arange(LVHD_LATTICE_SLOTS, dtype=np.int64) * 8 + 7) * SECTOR
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
            like = like.reshape(len(chunk), LVHD_LATTICE_SLOTS)
            ones = ones.reshape(len(chunk), LVHD_LATTICE_SLOTS)
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
        lat_slots, other = self._split_lattice(front)
        self._spill_hits(front, pending, result)
        kinds = self._lattice_kinds(lat_slots) if lat_slots else None
        if kinds is not None:
            self.ensure_sigs(pending)
        accepted: dict[tuple[int, int], int] = {}
        # the pending PEs in chunks, in PE order (memory bounded whatever the disk: per row,
        # a cell per bitmap of each kind of lattice slot, one per other slot)
        cells = len(other) + (kinds.cells if kinds is not None else 0)
        step = max(SEARCH_ROWS_MIN, LATTICE_CELLS // max(1, cells))
        for lo in range(0, len(pending), step):
            chunk = pending[lo: lo + step]
            columns: list[tuple[np.ndarray, np.ndarray | None]] = []
            if kinds is not None:
                sc, extra = self._lattice_scores(kinds, chunk)
                # (one column per kind, shared by its slots: _accepted_hits reads it once)
                per_kind = [(sc[:, j], extra[:, j]) for j in range(sc.shape[1])]
                columns.extend(per_kind[j] for j in kinds.kind_of.tolist())
            for v, le, sl in other:
                col = np.zeros(len(chunk))
                self._gathered_scores(sl, chunk, col)
                columns.append((col, None))
            self._accepted_hits(lat_slots + other, columns, chunk, result, accepted)
        return result

    def search_chunks(self, slots: list[tuple[VdiState, int]], pool: np.ndarray,
                      size: int = ISLAND_SLOTS):
        """search_candidates over any number of slots, `size` at a time, yielding (the chunk,
        its candidates). Alike slots go into one chunk (sorted by LE: the same LE of alike
        VDIs is one kind of lattice slot, scored once per chunk of pending PEs): in VDI order
        each chunk held some 500 kinds, and every chunk scored all of them against every
        pending PE (at 1 TiB, 38 chunks x 52k pending PEs). A slot's candidates depend on it
        and the pool alone, so the chunking changes no answer."""
        order = sorted(slots, key=lambda s: (s[1], s[0].index))
        for lo in range(0, len(order), size):
            part = order[lo: lo + size]
            yield part, self.search_candidates(part, pool)

    def search_all(self, slots: list[tuple[VdiState, int]], pool: np.ndarray,
                   size: int = ISLAND_SLOTS) -> dict[tuple[int, int], list[int]]:
        """Every slot's candidates in `pool`: search_chunks' answers in one dict."""
        found: dict[tuple[int, int], list[int]] = {}
        for _, part in self.search_chunks(slots, pool, size):
            found.update(part)
        return found

    def _split_lattice(self, front: list[tuple[VdiState, int]]) -> tuple[list, list]:
        """Frontier slots whose bitmaps all sit on the 4 KiB lattice (scored from the
        signatures) and the others (gathered per slot), each as (v, le, slot)."""
        lat_slots, other = [], []
        for v, le in front:
            slot = v.pred.slots[le]
            offs = slot.bitmap_offsets
            if len(offs) and ((offs // SECTOR) % 8 == 7).all() \
                    and self.E == LVHD_LATTICE_SLOTS * 8 * SECTOR:
                lat_slots.append((v, le, slot))
            else:
                other.append((v, le, slot))
        return lat_slots, other

    def _lattice_kinds(self, lat_slots: list) -> LatticeKinds:
        """What scoring lattice slots from the packed signatures needs, once per search: the
        kinds of slot (slots alike, the same LE of alike VDIs with the same lattice columns
        and flags, score alike), each slot's kind (`kind_of`), and per kind its bitmaps'
        and its past-the-data bitmaps' positions among the lattice columns looked at, padded
        to one width (`cells`: bitmaps scored per PE)."""
        index: dict[bytes, int] = {}
        kind_of = np.empty(len(lat_slots), dtype=np.int64)
        unique = []
        for k, (_, _, sl) in enumerate(lat_slots):
            key = b"|".join((sl.bitmap_offsets.astype(np.int64).tobytes(),
                             np.asarray(sl.full, np.int8).tobytes(),
                             sl.absent_offsets.astype(np.int64).tobytes()))
            if key not in index:
                index[key] = len(unique)
                unique.append(sl)
            kind_of[k] = index[key]
        bit_cols, f_one, f_other, past_cols = [], [], [], []
        for sl in unique:
            full = np.asarray(sl.full)
            bit_cols.append((sl.bitmap_offsets // SECTOR) // 8)
            # the batmap's "full" flag against the sector being all ones
            f_one.append(np.where(full == 1, FULL_OK, np.where(full == 0, NOT_FULL_BAD, 0.0)))
            f_other.append(np.where(full == 1, FULL_BAD, 0.0))
            absent = sl.absent_offsets // SECTOR
            past_cols.append(absent // 8 if len(absent) and (absent % 8 == 7).all()
                             else np.zeros(0, np.int64))
        cols = np.unique(np.concatenate(bit_cols + past_cols)).astype(np.int64)
        bpos, bmask = _padded(bit_cols, cols)
        xpos, xmask = _padded(past_cols, cols)
        return LatticeKinds(kind_of=kind_of, cols=cols, bpos=bpos, bmask=bmask,
                               f1=_padded(f_one, None)[0], f0=_padded(f_other, None)[0],
                               xpos=xpos, xw=xmask * self.scorer.extra_bitmap,
                               cells=len(unique) * (bpos.shape[1] + xpos.shape[1]))

    def _lattice_scores(self, kinds: LatticeKinds, pes: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(len(pes), kinds of slot) content scores from the packed signatures, and the part
        of them that counts bitmaps where the VHD has none (past its data): each gathered
        from the kind's few lattice columns alone (a dense product over every column cost
        pending x 1024 x slots)."""
        good = self._sig_bits(self.sig_good, pes, kinds.cols)
        ones = self._sig_bits(self.sig_ones, pes, kinds.cols)
        g, o = good[:, kinds.bpos], ones[:, kinds.bpos]
        sc = (np.where(g, BITMAP_GOOD, BITMAP_BAD) * kinds.bmask
              + np.where(o, kinds.f1, kinds.f0)).sum(axis=2)
        extra = (good[:, kinds.xpos] * kinds.xw).sum(axis=2) if kinds.xpos.shape[1] \
            else np.zeros_like(sc)
        return sc + extra, extra

    def _gathered_scores(self, sl, pending: np.ndarray, out: np.ndarray) -> None:
        """Content scores of one slot whose bitmaps are off the lattice (packed layouts): its
        bitmap sectors gathered from every pending PE, in batches, written into `out`."""
        if len(sl.bitmap_offsets):
            for lo in range(0, len(pending), SEARCH_SECTORS // len(sl.bitmap_offsets)):
                pes = pending[lo: lo + SEARCH_SECTORS // len(sl.bitmap_offsets)]
                bases = self.D + pes.astype(np.int64) * self.E
                secs = self.reader.gather((bases[:, None] + sl.bitmap_offsets[None, :])
                                          .reshape(-1), SECTOR)
                full = np.tile(sl.full, len(pes))
                out[lo: lo + len(pes)] = bitmap_llr(secs, full).reshape(
                    len(pes), -1).sum(axis=1)

    def _spill_hits(self, front: list[tuple[VdiState, int]], pending: np.ndarray,
                    result: dict[tuple[int, int], list[int]]) -> None:
        """Data-only slots without a footer: candidates from the pattern of the block that
        spills into them (spill_candidates), added to `result`."""
        for v, le in front:
            sl = v.pred.slots[le]
            if not len(sl.bitmap_offsets) and sl.footer_offset is None and sl.spill_in:
                found = self.spill_candidates(v, le, pending)
                if found:
                    result.setdefault((v.index, le), []).extend(found)

    def _accepted_hits(self, order: list, columns: list, pending: np.ndarray,
                       result: dict[tuple[int, int], list[int]],
                       accepted: dict[tuple[int, int], int]) -> None:
        """Per slot (its column of content scores in `columns`, with the lattice's count of
        bitmaps past the VHD's data, or None off the lattice): add the batmap header and
        LV-end footer evidence, keep the PEs scoring >= ACCEPT (a footer-only slot keeps
        them all: checked fully afterwards) in `result`, MAX_CANDIDATES per slot at most
        over the chunks of pending PEs (`accepted` counts them). Slots of one kind share a
        column: where nothing of the slot's own is added, its hits are the column's."""
        shared: dict[int, np.ndarray] = {}
        for (v, le, sl), (sc, extra) in zip(order, columns):
            room = MAX_CANDIDATES - accepted.get((v.index, le), 0)
            if room <= 0:
                continue
            plain = not sl.le1_batmap and not sl.lv_end_possible
            column = id(sc)
            hits = shared.get(column) if plain else None
            if hits is None:
                if sl.le1_batmap:
                    sc = sc + np.where(self.f.head_batmap[pending], BATMAP_HDR,
                                       BATMAP_HDR_MISSING)
                if sl.lv_end_possible:
                    own = self.f.tail_footer[pending] & (self.f.tail_uid[pending]
                                                         == np.frombuffer(v.anchor.uid,
                                                                          dtype=np.uint8)
                                                         ).all(axis=1)
                    if sl.footer_bonus:
                        sc = sc + np.where(own, LV_END_FOOTER, 0.0)
                    if extra is not None:   # our own footer: bitmaps past the data are stale
                        sc = sc - np.where(own, extra, 0.0)
                hits = pending[sc >= ACCEPT]
                if plain:
                    shared[column] = hits
            if sl.footer_offset is not None and not len(sl.bitmap_offsets):
                hits = pending   # checked fully afterwards (one sector each)
            if len(hits):
                result.setdefault((v.index, le), []).extend(hits[:room].tolist())
                accepted[(v.index, le)] = accepted.get((v.index, le), 0) + min(room, len(hits))

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

    def search_round(self, skip=None, barrier: set | frozenset = frozenset()) -> int:
        """Search the open LEs next to placed ones (not `skip`'s VDIs) and place what the
        evidence decides; never (VDI, LE, PE) in `barrier` (settle: what the review took back
        in this pass)."""
        front = self.frontier(skip)
        if not front:
            return 0
        cands = self.search_candidates(front, self.pending())
        by_slot = self._scored_slots(front, cands)
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
        decisions = self._joint_decisions(small, by_slot, totals, content)
        decisions += self._single_decisions(large, by_slot)
        decisions.sort(key=lambda d: (-d[0], -d[1], d[2], d[3]))
        if barrier:
            decisions = [d for d in decisions if (d[2], d[3], d[4]) not in barrier]
        return self._place_decisions(decisions)

    def _scored_slots(self, front: list[tuple[VdiState, int]],
                      cands: dict[tuple[int, int], list[int]]
                      ) -> dict[tuple[int, int], list[tuple[int, Score]]]:
        """Every frontier slot's candidates (the search's, and the free PEs next to its placed
        neighbours) scored in full, with the run priors (run_interior, run_support when few)."""
        by_slot: dict[tuple[int, int], list[tuple[int, Score]]] = {}
        todo = []
        for v, le in front:
            pes = set(cands.get((v.index, le), []))
            for nb, d in ((v.pe(le - 1), 1), (v.pe(le + 1), -1)):
                if nb is not None and self.free(nb + d) and self.f.has_data[nb + d]:
                    pes.add(nb + d)
            few = len(pes) <= RUN_SUPPORT_MAX   # more candidates: what follows cannot choose
            if self._careful and not few:
                continue    # the second look settles small contests; this one stays as it was
            todo.append((v, le, sorted(pes), few))
        # every slot's candidates scored in one batch (scores_rows: alike slots together)
        rows = [(v, le, p, v.pe(le - 1), v.pe(le + 1)) for v, le, pes, _ in todo for p in pes]
        every = iter(self.scores_rows(rows))
        for v, le, pes, few in todo:
            scored = []
            for p in pes:
                s = next(every)
                if self.run_interior(v, le, p):
                    s.adjacency += RUN_INTERIOR
                if few:
                    s.adjacency += self.run_support(v, le, p)
                if s.total > -20:
                    scored.append((p, s))
            if scored:
                by_slot[(v.index, le)] = scored
        return by_slot

    @staticmethod
    def _joint_decisions(small: list[list[tuple[int, int]]], by_slot: dict, totals: dict,
                         content: dict) -> list[tuple]:
        """Slots competing for the same PEs, chosen together (core.match.joint): per slot
        (confidence, total, vdi, le, pe, score, rivals)."""
        decisions = []
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
        return decisions

    @staticmethod
    def _single_decisions(large: list[tuple[int, int]], by_slot: dict) -> list[tuple]:
        """The rest one by one: the best candidate of its slot, against every slot wanting it
        (same tuples as _joint_decisions)."""
        decisions = []
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
        return decisions

    def _place_decisions(self, decisions: list[tuple]) -> int:
        """Place the decisions, most confident first, or mark their slots ambiguous; returns
        the extents placed."""
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
            tied = (s.informative and s.continuity >= TIED_CONTINUITY) \
                or (slot.le1_batmap and len(slot.bitmap_offsets) > 0) \
                or slot.footer_offset is not None \
                or (slot.lv_end_possible and self._own_tail(v, p))
            src = "vhd-match" if s.content >= ACCEPT or s.informative else "adjacency"
            cap = TIED if tied else FITS
            if getattr(s, "adjacency_decided", False):
                src, cap = "adjacency", ADJACENCY_ONLY
            note = None
            if src == "adjacency":
                note = (f"content fits PEs {sorted(rivals)} as well; chosen by adjacency (LVM "
                        f"allocates runs)" if rivals else RIVAL_VDIS_NOTE)
            self.place(v, le, p, min(conf, cap), src, note, weak=not tied)
            if src == "adjacency" and rivals:
                v.placed[le].twins = tuple(sorted(rivals))
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
        unsure = [pl.pe for w in self.vdis for pl in w.placed.values() if pl.confidence < SURE]
        pool = np.union1d(pending, np.asarray(unsure, dtype=pending.dtype))
        cands = self.search_all(slots, pool)
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


def _softmax_best(values: np.ndarray, none: float | None, best: float | None = None) -> float:
    """Share of the best value among alternatives (log-odds scores), with an optional 'none'."""
    if len(values) == 0:
        return 0.0
    top = float(values.max()) if best is None else best
    m = max(float(values.max()), top, none if none is not None else -math.inf)
    den = float(np.exp(values - m).sum()) + (math.exp(none - m) if none is not None else 0.0)
    return math.exp(top - m) / den


def _padded(rows: list[np.ndarray], cols: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-slot lists as one (slots, widest) array, padded with 0, and the mask of the
    real entries; with `cols`, the entries (lattice columns) become positions in `cols`."""
    width = max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), width), dtype=np.int64 if cols is not None else float)
    mask = np.zeros((len(rows), width))
    for k, r in enumerate(rows):
        out[k, :len(r)] = np.searchsorted(cols, r) if cols is not None else r
        mask[k, :len(r)] = 1.0
    return out, mask
