"""Review: a second look that takes back every low-confidence placement and decides it again
with everything certain in place; a final review that lowers the confidence of content-only
placements a rival VDI or a free twin fits as well; and, on disks with a previous life (stale
bytes measured), the withdrawal of placements that rest on a prior alone (issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.findings import Finding
from core.match.board import (
    ACCEPT, FREE, FITS, GAP_CONFIDENCE, SURE, TIED, CONTESTED, CONTESTED_NOTE, RIVAL_VDIS_NOTE,
    TIED_CONTINUITY, WALK_NOTE, Placement, VdiState)
from core.match.guest import GUEST_TIES

STALE_HEAD_NOTE = ("an older VHD's head survived in sectors its guest never wrote; inside "
                   "its run, its bitmaps, continuity and guest tie it")
STALE_HEAD_RUN_NOTE = ("an older VHD's head survived in sectors its guest never wrote; its "
                       "bitmaps there, inside its LV's one run from head to footer")
UNCROSSED_NOTE = ("swapped with {other}'s LE {le}: two alike disks fit each other's extents by "
                  "content and continuity; each extent lies between its own VDI's neighbours")
FITS_ANY_REACH = 8          # LEs on either side _fits_any_le asks
SECOND_LOOK_ROUNDS = 12     # careful rounds of the second look at most
TWINS_KEPT = 4              # twins a guest must outdo that are looked for per placement
TWIN_BATCH = 4              # candidates scored at once when looking for twins, at first


class ReviewMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

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
                if not pl.weak or pl.confidence < SURE:
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
                if le > 0 and pl.confidence >= SURE and pl.source == "vhd-match" \
                        and sl is not None and sl.searchable:
                    still.append((v, le))
        # every placement from content is only as sure as no free extent fits it as well (a
        # copy left behind by pvmove, a stale twin): one batched search over the pending PEs
        pending = self.pending()
        if not still or not len(pending):
            return
        for part, cands in self.search_chunks(still, pending):
            # only a guest can take a contested placement back (_outfits), and it must
            # outdo every twin: without one, the first twin settles it (a large SR of
            # alike guest-less VDIs scored some forty candidates per placement)
            jobs = [(v, le, v.placed[le], cands.get((v.index, le), []),
                     TWINS_KEPT if self.guest_of(v) is not None else 1) for v, le in part]
            for (v, le, pl, _, need), twins in zip(jobs, self._twins_many(jobs)):
                if twins:
                    pl.confidence, pl.source = CONTESTED, "adjacency"
                    pl.twins, pl.twins_open = tuple(twins), len(twins) >= need
                    pl.note = (f"free PEs {twins} fit as well; chosen because it follows the "
                               f"neighbouring extents on disk")

    def _twins(self, v: VdiState, le: int, pl: Placement, candidates: list[int],
               need: int) -> list[int]:
        """Which of `candidates` (free PEs the search found for LE `le` of v) fit it as well
        as pl.pe does, adjacency aside: up to `need` of them (_twins_many of one)."""
        return self._twins_many([(v, le, pl, candidates, need)])[0]

    def _twins_many(self, jobs: list[tuple]) -> list[list[int]]:
        """_twins of each job (v, le, pl, candidates, need): the first `need` candidates, in
        PE order, that fit LE `le` of v as well as pl.pe does, adjacency aside. Candidates
        found no twin before in the same context (the placement, its neighbours' PEs, the
        zero-fill weight, the guest's view: all a score depends on) are not scored again
        when settle reviews again: only extents freed since are new (a large SR of alike
        VDIs re-scored every candidate at every review). Every step runs over all jobs at
        once, rows alike scored together (scores_rows): the same LE of alike VDIs has the
        same kind of slot and the same candidates, and a 1 TiB SR of them reviewed some
        twenty thousand placements one by one. Each job's answer is its own."""
        if not hasattr(self, "_not_twins"):
            self._not_twins: dict[tuple, set[int]] = {}
        out: list[list[int]] = [[] for _ in jobs]
        live = []
        for j, (v, le, pl, candidates, need) in enumerate(jobs):
            view = getattr(self, "_guest", {}).get(v.index)
            context = (v.index, le, pl.pe, v.pe(le - 1), v.pe(le + 1), self.zw(v),
                       None if view is None else (hash(view[0]), view[1] is None))
            seen = self._not_twins.setdefault(context, set())
            others = sorted(set(candidates) - seen - {pl.pe})
            if others:
                live.append(_TwinJob(j, v, le, need, seen, others))
        if not live:
            return out
        mines = self.scores_rows([(t.v, t.le, jobs[t.j][2].pe, t.v.pe(t.le - 1),
                                   t.v.pe(t.le + 1)) for t in live])
        for t, mine in zip(live, mines):
            t.bar = mine.total - mine.adjacency - 1.0
        # in PE order, in growing batches, until enough are found: a twin is most often
        # among the first few (the same LE of an alike VDI). In each batch the content and
        # the continuity from the left neighbour's block refute most candidates first (it
        # wrote sectors that read empty in every other extent of this LE), for all
        # placements at once; only those they leave are scored in full
        active, size = live, TWIN_BATCH
        while active:
            parts = [(t, t.rest[t.lo: t.lo + size]) for t in active]
            can = self.reachable([(t.v, t.le, part, t.bar) for t, part in parts])
            left = []
            for (t, part), ok in zip(parts, can):
                ok = ok.tolist()
                t.seen.update(q for q, c in zip(part, ok) if not c)
                left.append((t, [q for q, c in zip(part, ok) if c]))
            self._twin_batch(left)
            for t in active:
                t.lo += size
            active = [t for t in active if len(t.twins) < t.need and t.lo < len(t.rest)]
            size *= 4
        for t in live:
            out[t.j] = t.twins[:t.need]
        return out

    def _twin_batch(self, parts: list[tuple]) -> None:
        """Score each job's part (a list of its candidates) in full against its bar, all in
        one batch: twins are kept in order, the others known not to be."""
        parts = [(t, part) for t, part in parts if part]
        scores = self.scores_rows([t.row(q) for t, part in parts for q in part],
                                  [t.bar for t, part in parts for _ in part])
        at = 0
        for t, part in parts:
            for q, sc in zip(part, scores[at: at + len(part)]):
                if sc is not None and sc.total - sc.adjacency >= t.bar \
                        and not self._bytes_not_le(t.v, t.le, q):
                    t.twins.append(q)
                else:
                    t.seen.add(q)
            at += len(part)

    def _bytes_not_le(self, v: VdiState, le: int, q: int) -> bool:
        """Is q's fit to v's LE `le` only its bytes' (_fits_any_le), where v's placement of
        that LE is not so itself? Then q is no alternative to it."""
        if not self._fits_any_le(v, le, q):
            return False
        pl = v.placed.get(le)
        return not (pl is not None and self._fits_any_le(v, le, pl.pe))

    def _fits_any_le(self, v: VdiState, le: int, q: int) -> bool:
        """Does q's content fit another LE of v as well (LE 1, or one of the nearest on either
        side), one whose bitmaps lie at other offsets (each LE of an LVHD VHD has its own
        lattice phase)? Then q holds bytes that pass for any bitmap (a head's BAT, a previous
        life's run of 0xff: reused seeds 11 and 20), not LE `le`'s: its fit says nothing of
        that LE and it is no twin. A real LE's extent holds guest data, not bitmaps, at every
        other LE's bitmap offsets."""
        own = set(v.pred.slots[le].bitmap_offsets.tolist())
        # (LE 1 and the nearest FITS_ANY_REACH on each side: a large VDI has thousands of
        # LEs, and the review asks this for every twin)
        near = [le + d * k for k in range(1, FITS_ANY_REACH + 1) for d in (-1, 1)]
        for j in [1] + near:
            sl = v.pred.slots.get(j)
            if j == le or sl is None or not len(sl.bitmap_offsets) \
                    or own & set(sl.bitmap_offsets.tolist()):
                continue
            if self.scorer.content(sl, q, v.anchor.uid, self.f) >= ACCEPT:
                return True
        return False

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
                if pl.confidence < SURE or (pl.weak and self._rival(v, le, pl.pe, unsure)):
                    released.append((v, le, pl))
        for v, le, pl in released:
            del v.placed[le]
            self.owner[pl.pe] = FREE
        if not released:
            return
        self._careful = True
        try:
            # bounded: on a large SR of alike VDIs each careful round settles a few small
            # contests and the rounds repeat the whole frontier's search (1 TiB, 100 VDIs: 64
            # rounds of 3 placements); what is still undecided keeps its first-pass placement
            self._rounds(min(limit, SECOND_LOOK_ROUNDS))
        finally:
            self._careful = False
        for v, le, pl in released:
            if le not in v.placed and self.free(pl.pe):
                self.owner[pl.pe] = v.index
                v.placed[le] = pl
                v.ambiguous.pop(le, None)

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
        wanted = self._wanted_elsewhere()
        unsure = self._unsure_by_le()
        self._review_starts = self._run_starts()     # (for _fits_elsewhere, as the pass began)
        mirrored = self._mirrored_runs()
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            drop = set()
            for le, pl in v.placed.items():
                if le == 0 or pl.source in ("metadata", "manual"):
                    continue
                # another VDI's open LE or other extents fit as well: only the guest can decide
                # (its own allocation or structures, by a margin); consistency is not enough
                if pl.note == CONTESTED_NOTE or pl.note == RIVAL_VDIS_NOTE:
                    if self._rival(v, le, pl.pe, unsure):
                        drop.add(le)
                        continue
                    if self._uncontested(v, le, pl):
                        continue
                    # no rival left, its guest silent: judged below as any walk step
                if pl.twins:
                    if not self._outfits(v, le, pl) and (v.index, le) not in mirrored:
                        drop.add(le)
                    continue
                if pl.note == WALK_NOTE and wanted.get(pl.pe, v.index) != v.index:
                    drop.add(le)        # a walked tail another VDI's open LE fits by content
                    continue
                rule = pl.note is not None and ("sizing" in pl.note or "no placed neighbour"
                                                in pl.note or "no VHD data" in pl.note
                                                or "allocation" in pl.note
                                                or "fits sm's deflated size" in pl.note
                                                or "between two placed" in pl.note
                                                or "free run" in pl.note)
                if rule and not self.guest_checked(v, le, pl.pe):
                    drop.add(le)
                    continue
                if pl.weak and self._alone(v, le, pl) \
                        and self.guest_llr(v, le, pl.pe) < GUEST_TIES \
                        and (self.guest_of(v) is None or self._fits_elsewhere(v, le, pl)):
                    # bitmaps where this LE has them, away from its neighbours on disk, and
                    # its guest silent: an older VHD's remnant on the same lattice fits as
                    # well, and the extent that is this LE may be held by a stale head
                    drop.add(le)
            drop -= {le for le in drop if self._inside_run(v, le, drop)}
            changed = True
            while changed:
                changed = False
                for le, pl in v.placed.items():
                    if le in drop or le == 0 or not pl.weak:
                        continue
                    if not any(le + d in drop and v.placed[le + d].pe == pl.pe + d
                               for d in (-1, 1)):
                        continue        # no withdrawn guess next to it on disk led to it
                    if self.guest_llr(v, le, pl.pe) >= GUEST_TIES:
                        continue        # its guest's allocation or structures tie it
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
                self._withdraw(v, le)
            if drop:
                if v.le_count is not None and max(drop) >= v.le_count - 1:
                    v.le_count, v.footer_pe = None, None
                self.findings.append(Finding(
                    "placements-withdrawn", None, "info",
                    f"{v.lv_name or v.anchor.uid_str}: LEs {sorted(drop)[:16]} were placed by "
                    f"layout and allocation order alone; this disk had a previous life (stale "
                    f"bytes measured), so they are listed as candidates, not placed",
                    {"les": sorted(drop)}))

    def _fits_elsewhere(self, v: VdiState, le: int, pl: Placement) -> bool:
        """Does another extent of the disk, whoever holds it (a stale head's VHD, another VDI,
        nobody), hold LE `le`'s bitmaps about as well as pl.pe, without v's guest denying it?
        Bitmaps only: the extent that is this LE may still begin with an older VHD's head and
        end with its footer (tapdisk on LVM never overwrote them), which the full content
        score counts against it. An extent whose reading as LE `le` v's guest denies (its
        own structures inconsistent there, by GUEST_TIES or more: an older VHD's remnant with
        the same full bitmaps, seed thin-4) is no alternative, unless the guest denies pl.pe
        as well; nor, where pl.pe ends with v's own older footer (_older_end_of), an extent
        that is the same LE of another VHD's run from its head. Where none is left, pl.pe is
        the only extent of the disk with this LE's bitmaps that its guest allows. An extent
        whose bytes fit another LE's bitmaps as well is no alternative (_bytes_not_le)."""
        pool = np.flatnonzero(self.f.has_data)
        pool = pool[pool != pl.pe]
        found = self.search_candidates([(v, le)], pool).get((v.index, le), [])
        if not found:
            return False
        fit = self.scorer.bitmap_fit(v.pred.slots[le], np.array([pl.pe, *found], np.int64))
        # (not an extent whose bytes pass for any LE's bitmaps: a head's BAT, all 0xff for
        # the entries past the disk's size, a previous life's 0xff run)
        alike = [q for q, f in zip(found, fit[1:].tolist())
                 if f >= fit[0] - 1.0 and not self._bytes_not_le(v, le, q)]
        # nor an extent on another VDI's evidence-placed run at this LE's distance, that
        # VDI's LE open or there, where pl.pe is on no such run of another: two alike disks
        # each fit the other's extent, and only that pairing keeps the other's run (thin 8)
        starts = getattr(self, "_review_starts", None)
        if alike and starts is not None \
                and not self._on_anothers_placed_run(v, le, pl.pe, starts):
            alike = [q for q in alike if not self._on_anothers_placed_run(v, le, q, starts)]
        if alike and self._older_end_of(v, le, pl.pe):
            # pl.pe was v's (its own older footer ends it); an alternative on another VHD's run
            # from its head, at that VHD's own LE, is that VHD's (as in _mirrored_runs)
            by_head, fits = {h: i for i, h in self._heads().items()}, {}
            alike = [q for q in alike if not self._on_anothers_run(v, le, q, by_head, fits)]
        if not alike or self.guest_of(v) is None \
                or self.guest_llr(v, le, pl.pe) <= -GUEST_TIES:
            return bool(alike)
        return any(self.guest_llr(v, le, q) > -GUEST_TIES for q in alike)

    def _older_end_of(self, v: VdiState, le: int, pe: int) -> bool:
        """Does `pe`, placed as LE `le` before v's LV end, end with v's own footer: an older
        end of v's LV (sm's deflate cuts the LV back to its data, `vhd-util resize` and
        inflate move the footer on; issue 10 premise 2)? Then the extent was v's, which no
        older VHD's remnant on the same lattice can say. Not which LE it was: an inflated
        end a deflate freed holds stale bytes, and an lvextend may take it again. So it only
        settles twins another VHD's run explains (_mirrored_runs)."""
        if not self.f.tail_footer[pe] or v.footer_pe == pe \
                or v.le_count is not None and le >= v.le_count - 1:
            return False
        return bytes(self.f.tail_uid[pe]) == v.anchor.uid

    @staticmethod
    def _alone(v: VdiState, le: int, pl: Placement) -> bool:
        """Is LE `le`'s extent away from both of v's neighbouring LEs on disk (neither placed
        on the PE next to it)?"""
        return all(v.placed.get(le + d) is None or v.placed[le + d].pe != pl.pe + d
                   for d in (-1, 1))

    def _inside_run(self, v: VdiState, le: int, drop: set[int]) -> bool:
        """Is LE `le` inside a run of v's own extents: the LEs on both sides placed on the PEs
        at the matching distance up to a placement evidence made (SURE, not withdrawn; LE 0
        counts), v a disk whose guest reads (not an older VHD's remnants lining up), and its
        guest not against? LVM gave v that run of PEs; another LV's extents would have to sit
        inside it at exactly the distance v's own LEs need (an lvextend takes the next free
        extent, which is not how such a gap is filled). What contested it (an alike VDI's
        open LE, a free twin) is stale bytes in v's extent."""
        pl = v.placed[le]
        if self.guest_of(v) is None or self.guest_llr(v, le, pl.pe) <= -GUEST_TIES:
            return False
        for d in (-1, 1):
            j = le + d
            while True:
                nb = v.placed.get(j)
                if nb is None or nb.pe != pl.pe + (j - le):
                    return False
                if j == 0 or (j not in drop and nb.confidence >= SURE
                              and nb.source != "adjacency"):
                    break
                j += d
        return True

    def _uncontested(self, v: VdiState, le: int, pl: Placement) -> bool:
        """A walk step contested before the guests were read (core.match.walks), whose every
        rival is now dismissed by its own guest or is an older VHD that does not need the
        extent (guest.no_rival): the contest is over. When v's guest finds its own allocation
        or structures there (GUEST_TIES), the placement is v's by evidence (True); otherwise
        it is a walk step like any other: content fits and adjacency chose (weak, FITS),
        for withdraw_guesses to judge (False)."""
        pl.confidence, pl.source, pl.note = FITS, "vhd-match", None
        if self.guest_llr(v, le, pl.pe) >= GUEST_TIES:
            return True
        pl.weak = True
        return False

    def _outfits(self, v: VdiState, le: int, pl: Placement) -> bool:
        """A placement other PEs fitted as well (pl.twins): does v's guest now find its own
        allocation or structures on it (GUEST_TIES) and on none of them nearly as much? Then
        the guest decided between them, not LVM's allocation order."""
        mine = self.guest_llr(v, le, pl.pe)
        if mine < GUEST_TIES:
            return False
        self._complete_twins(v, le, pl)     # its guest must outdo all of them
        if any(self.guest_llr(v, le, q) > mine - GUEST_TIES for q in pl.twins):
            return False
        pl.confidence, pl.source, pl.note, pl.twins = FITS, "vhd-match", None, ()
        pl.twins_open = False
        return True

    def _complete_twins(self, v: VdiState, le: int, pl: Placement) -> None:
        """Where one twin was looked for (v had no guest then), look for the rest, up to
        TWINS_KEPT: whatever decides between twins must explain all of them."""
        if not pl.twins_open or len(pl.twins) >= TWINS_KEPT:
            return
        found = self.search_candidates([(v, le)], self.pending()).get((v.index, le), [])
        more = self._twins(v, le, pl, [q for q in found if q not in pl.twins],
                           TWINS_KEPT - len(pl.twins))
        pl.twins = pl.twins + tuple(more)
        pl.twins_open = len(pl.twins) >= TWINS_KEPT

    def uncross(self) -> int:
        """Two VDIs whose same LE sits each on the extent between the other's neighbours:
        v's LE l-1 and l+1 on PEs a and a+2, w's LE l on a+1, and w's LE l-1 and l+1 around
        v's LE l. Alike disks (one tool formatted both: the same structures at the same
        virtual sectors, the same allocation order) fit each other's extents by bitmaps and by
        continuity, so which VDI's search ran first decided (seed reused-23, crossed at 0.97
        while a stale head held one of the extents). LVM gave each its run; the crossed
        reading leaves both a gap at exactly the other's PE. Swapped where each extent's
        content fits the other LE as well; returns the pairs swapped."""
        held = {pl.pe: (v, le) for v in self.vdis for le, pl in v.placed.items()}
        swapped = 0
        for v in self.vdis:
            if v.pred is None or v.metadata_map:
                continue
            for le in sorted(v.placed):
                pl = v.placed.get(le)
                q = self._between_neighbours(v, le)
                if pl is None or q is None or q == pl.pe or pl.source in ("metadata", "manual"):
                    continue
                w, wle = held.get(q, (None, None))
                if w is None or w is v or wle != le or w.metadata_map \
                        or w.placed[le].source in ("metadata", "manual") \
                        or self._between_neighbours(w, le) != pl.pe:
                    continue
                if self.scorer.content(v.pred.slots[le], q, v.anchor.uid, self.f) < ACCEPT \
                        or self.scorer.content(w.pred.slots[le], pl.pe, w.anchor.uid,
                                               self.f) < ACCEPT:
                    continue
                mine, theirs = pl, w.placed[le]
                for x, p, old, y in ((v, q, mine, w), (w, mine.pe, theirs, v)):
                    x.placed.pop(le)
                    self.place(x, le, p, old.confidence, old.source, UNCROSSED_NOTE.format(
                        other=y.lv_name or y.anchor.uid_str, le=le), weak=old.weak)
                held[q], held[mine.pe] = (v, le), (w, le)
                swapped += 1
        return swapped

    def _between_neighbours(self, v: VdiState, le: int) -> int | None:
        """The PE between v's LE le-1 and LE le+1 where they lie two PEs apart, else None."""
        a, b = v.pe(le - 1), v.pe(le + 1)
        return a + 1 if a is not None and b is not None and b == a + 2 else None

    def _wanted_elsewhere(self) -> dict[int, int]:
        """PE -> a VDI with an open LE (bitmaps predicted, not placed) that the PE fits by
        content, for the PEs placed by walking alone (WALK_NOTE): one search over them."""
        walked = sorted({pl.pe for v in self.vdis for pl in v.placed.values()
                         if pl.note == WALK_NOTE})
        if not walked:
            return {}
        slots = [(v, le) for v in self.vdis if v.pred is not None and not v.metadata_map
                 for le, sl in v.pred.slots.items()
                 if le > 0 and le not in v.placed and len(sl.bitmap_offsets)]
        pool = np.asarray(walked, dtype=np.int64)
        found = self.search_all(slots, pool)
        out: dict[int, int] = {}
        for v, le in slots:              # the first slot that wants a PE names its VDI
            for p in found.get((v.index, le), []):
                out.setdefault(int(p), v.index)
        return out

    def withdraw_strangers(self) -> None:
        """On a disk with a previous life and more visible VHDs than the MGT volume has live
        VDIs (reconstruct sets `strangers_possible`), a VHD the SR does not name, in no chain,
        whose guest cannot be read (an older VHD whose head survived in sectors a live guest
        never wrote, typically) keeps its LE 1 only where continuity ties it: an LE 1's batmap
        header and bitmap phases are every sm VHD's, and an older VHD's own LE 1 (the first
        blocks its guest wrote) is most often another VDI's extent now, with another old VHD's
        LE 1 left elsewhere. What was walked from it goes with it (withdraw_guesses)."""
        if not getattr(self, "strangers_possible", False):
            return
        for v in self.vdis:
            if v.pred is None or not self.stranger(v):
                continue        # named by the SR, or in a chain, or its guest read
            drop = []
            pl = v.placed.get(1)
            if pl is not None and pl.source not in ("metadata", "manual"):
                s = self.score(v, 1, pl.pe)
                if not (s.informative and s.continuity >= TIED_CONTINUITY):
                    drop.append(1)
            # its content-only placements (bitmaps at the lattice phases every sm VHD has,
            # nothing tying them to it) are as likely another older VHD's remnants
            drop += [le for le, p in v.placed.items()
                     if le > 1 and p.weak and p.source not in ("metadata", "manual")]
            for le in drop:
                self._withdraw(v, le)
            self._yield_stale_head(v)
            if drop:
                self.findings.append(Finding(
                    "placements-withdrawn", None, "info",
                    f"{v.lv_name or v.anchor.uid_str}: no guest file system read in it (an older "
                    f"VHD?): LEs {sorted(drop)[:16]} fit its layout but nothing ties them to it; "
                    f"listed as candidates, not placed", {"les": sorted(drop)}))

    def yield_stale_heads(self) -> None:
        """Every stranger's head a live VDI's LE may hold (_yield_stale_head), asked again
        after the review withdrew what rested on priors: the LE it would be was placed on
        another extent when withdraw_strangers asked (thin seed 29). And the head of any VHD
        the SR does not name (a deleted snapshot in a chain, whose guest still reads through
        it) inside a live VDI's LV known to be one run from its head to its footer: no other
        LV's extent lies inside that run now (snapshots seed 1)."""
        for w in self.vdis:
            if w.pred is None:
                continue
            if getattr(self, "strangers_possible", False) and self.stranger(w):
                self._yield_stale_head(w)
            elif w.lv_name is None:
                self._yield_stale_head(w, run_only=True)

    def _yield_stale_head(self, w: VdiState, run_only: bool = False) -> None:
        """A stranger's head (an older VHD's first sectors: footer copy, header, BAT) on PE p,
        next to a live VDI v's placed LE on either side (LE l-1 on p-1, or LE l+1 on p+1), LE
        l open, p holding LE l's bitmaps with v's data continuing into it across the block
        boundary and v's guest agreeing; or v's LV one run from its head to its footer (sm's
        full length, placed by geometry) with p at LE l's distance, its bitmaps there and v's
        guest not against. tapdisk on LVM writes only what the guest writes (issue 10 premise
        1), so an older VHD's head survives in the sectors of v's block that v's guest never
        wrote: p is v's LE l, the head is stale. Continuity and the guest's own structures
        read through p tie it to v; the neighbour on the next PE says which LE (LVM extends an
        LV from its last extent where the next one is free: thin seed 14, reused seed 16).
        The stranger's placements go with its head. `run_only`: only inside v's one run (w
        is no stranger: in a chain, or its guest read)."""
        head = w.placed.get(0)
        if head is None or head.source in ("metadata", "manual"):
            return
        p = head.pe
        for v in self.vdis:
            if v is w or v.pred is None or v.metadata_map or self.stranger(v) \
                    or (v.lv_name is None and self.guest_of(v) is None):
                continue
            run = self._one_run(v)
            if run is not None and run[0] < p < run[1]:
                les = [(p - run[0], STALE_HEAD_RUN_NOTE,
                        "inside its LV's one run from head to footer; its bitmaps there")]
            elif run_only:
                continue
            else:
                les = [(j - d, STALE_HEAD_NOTE,
                        f"next to its LE {j} on PE {p + d}; its bitmaps, the data continuing "
                        f"from LE {j - d - 1} and its guest agree")
                       for d in (-1, 1) for j, q in v.placed.items() if q.pe == p + d]
            for le, note, tie in les:
                if self._stale_head_is(v, le, p, inside_run=note == STALE_HEAD_RUN_NOTE):
                    conf, source = TIED, "vhd-match"
                    break
                if note == STALE_HEAD_NOTE and self._stale_head_only_fit(v, le, p):
                    conf, source = FITS, "vhd-match"
                    tie = (f"next to its LE {le - 1 if v.pe(le - 1) == p - 1 else le + 1}, "
                           f"placed by evidence; the only extent of the disk with LE {le}'s "
                           f"bitmaps")
                    break
                if note == STALE_HEAD_RUN_NOTE and self._holds_no_data(v, le):
                    # an extent of the run sm never writes (no block there): the head is
                    # stale whatever its bytes (thick seed 11, where it kept the run's gap
                    # extents from being filled)
                    conf, source = GAP_CONFIDENCE, "adjacency"
                    tie = "inside its LV's one run from head to footer, where it holds no data"
                    break
            else:
                continue
            for j in sorted(w.placed):
                if w.placed[j].source not in ("metadata", "manual"):
                    self._withdraw(w, j)
            self.place(v, le, p, conf, source, note)
            self.findings.append(Finding(
                "vhd-head-stale", self.D + p * self.E, "info",
                f"VHD {w.anchor.uid_str}: its head on PE {p} is an older VHD's, left in "
                f"sectors {v.lv_name or v.anchor.uid_str}'s guest never wrote: PE {p} is "
                f"that VDI's LE {le} ({tie})",
                {"vhd_uuid": w.anchor.uid_str, "pe": p, "le": le}))
            return

    def _stale_head_only_fit(self, v: VdiState, le: int, p: int) -> bool:
        """Is p, holding a stranger's head, the only extent of the disk with v's LE `le`'s
        bitmaps (_fits_elsewhere: none other fits as well but bytes that fit any LE, another
        VDI's run, or what v's guest denies), its fit LE `le`'s own (not bytes that pass for
        any LE's bitmaps: a BAT's 0xff), next to v's LE le-1 or le+1 on the next PE placed
        by evidence, and v's guest not against? Where stale bytes silence continuity (resized
        seed 9): the head's VHD is older, its sectors left where v's guest never wrote."""
        if not self._open_with_bitmaps(v, le):
            return False
        if not any((nb := v.placed.get(le + d)) is not None and nb.pe == p + d
                   and nb.confidence >= SURE for d in (-1, 1)):
            return False
        if self.score(v, le, p).content < ACCEPT or self.guest_llr(v, le, p) <= -GUEST_TIES \
                or self._fits_any_le(v, le, p):
            return False
        return not self._fits_elsewhere(v, le, Placement(p, FITS, "vhd-match"))

    @staticmethod
    def _open_with_bitmaps(v: VdiState, le: int) -> bool:
        """Is v's LE `le` (after its head) open, with bitmaps predicted in it (blocks of v
        there, whose bitmaps an extent can show)?"""
        sl = v.pred.slots.get(le)
        return le > 0 and sl is not None and le not in v.placed and len(sl.bitmap_offsets) > 0

    @staticmethod
    def _holds_no_data(v: VdiState, le: int) -> bool:
        """Is v's LE `le` open and without VHD data (no block of v lies there)?"""
        sl = v.pred.slots.get(le)
        return le > 0 and le not in v.placed and (sl is None or not sl.has_content)

    def _stale_head_is(self, v: VdiState, le: int, p: int, inside_run: bool) -> bool:
        """Is p (holding a stranger's head) v's LE `le` (_yield_stale_head)? Its bitmaps fit;
        inside v's one run, unless v's guest denies it; else v's data continues into it from
        LE le-1 (informative continuity) and v's guest agrees, both by a margin."""
        if not self._open_with_bitmaps(v, le):
            return False
        s = self.score(v, le, p)
        if s.content < ACCEPT:
            return False
        if inside_run:
            return self.guest_llr(v, le, p) > -GUEST_TIES
        return s.informative and s.continuity >= TIED_CONTINUITY \
            and self.guest_llr(v, le, p) >= GUEST_TIES

    def _one_run(self, v: VdiState) -> tuple[int, int] | None:
        """(head PE, footer PE) where v's LV is known to be one run of PEs: its footer extent
        placed by evidence exactly LE count - 1 extents after its head (sm's full length:
        lvcreate allocates a thick LV in one free area; footers._footer_by_allocation)."""
        h = v.placed.get(0)
        if h is None or v.le_count is None or v.footer_pe is None \
                or v.footer_pe != h.pe + v.le_count - 1:
            return None
        end = v.placed.get(v.le_count - 1)
        if end is None or end.pe != v.footer_pe or end.confidence < SURE:
            return None
        return h.pe, v.footer_pe

    def _withdraw(self, v: VdiState, le: int) -> None:
        """Take LE `le` of v back: its PE freed (if still v's) and named among the LE's
        candidates, with the free PEs that fitted it as well (its twins); no walk takes it
        again (walks._take_step: settle would place and withdraw it in turn)."""
        pl = v.placed.pop(le)
        if not hasattr(self, "withdrawn"):
            self.withdrawn: set[tuple[int, int, int]] = set()
        self.withdrawn.add((v.index, le, pl.pe))
        if self.owner[pl.pe] == v.index:
            self.owner[pl.pe] = FREE
        v.ambiguous[le] = sorted(set(v.ambiguous.get(le, [])) | {pl.pe} | set(pl.twins))

    def stranger(self, v: VdiState) -> bool:
        """Is v possibly an older VHD the SR no longer knows (withdraw_strangers): the MGT
        volume lists fewer VDIs than there are unnamed visible VHDs, and v is unnamed, in no
        chain, and no guest file system could be read through it?"""
        if not getattr(self, "strangers_possible", False) or v.anchor is None \
                or v.metadata_map or v.lv_name is not None or self.guest_of(v) is not None \
                or any(v.anchor.parent_uid):
            return False
        return not any(w.anchor is not None and w.anchor.parent_uid == v.anchor.uid
                       for w in self.vdis)

    def _mirrored_runs(self) -> set[tuple[int, int]]:
        """(VDI, LE) of placements on an unbroken run of PEs that starts at their own VHD's
        head, or joins them to a placement evidence ties to their VDI (_run_to_strong: a
        resized VDI's run after an lvextend), or on an older end of their own LV
        (_older_end_of), whose every twin is the same LE of another
        VHD's run from its own head (that
        VHD's extents after its head fit its LEs by content, up to the twin). Two VHDs with
        blocks at the same LE indices fit each other's extents equally (the lattice phase is
        the LE's; stale bytes silence continuity), but only one pairing keeps both runs whole:
        each extent the one that follows its own head, where lvcreate put it. The crossed
        pairing would leave both VHDs a gap at exactly the other's offset. Typically a live
        VDI beside an older VHD's remnants whose head survived in extents nothing reused
        (that VHD itself may have been withdrawn as a stranger: its run still explains the
        twin). And placements at their LE's distance inside an LV known to be one run from
        its head to its footer (_one_run), whatever their twins are."""
        heads = self._heads()
        by_head = {h: i for i, h in heads.items()}
        fits: dict[tuple, bool] = {}
        # (a head's run is _on_anothers_run's: every LE up to the twin must fit there)
        starts = self._run_starts()
        out = set()
        for v in self.vdis:
            head = heads.get(v.index)
            run = self._one_run(v)
            for le, pl in v.placed.items():
                if not pl.twins:
                    continue
                if run is not None and run[0] < pl.pe == run[0] + le < run[1]:
                    # its LV one run from head to footer: no other LV's extent inside it,
                    # whoever's remnant the twins are (snapshots seed 30)
                    out.add((v.index, le))
                    continue
                self._complete_twins(v, le, pl)     # (a disk with no guest: one was looked for)
                if pl.twins_open or not all(
                        self._on_anothers_run(v, le, q, by_head, fits)
                        or self._on_anothers_placed_run(v, le, q, starts) for q in pl.twins):
                    continue
                from_head = head is not None and pl.pe == head + le and all(
                    j in v.placed and v.placed[j].pe == head + j for j in range(1, le))
                if from_head or self._run_to_strong(v, le, set()) \
                        or self._older_end_of(v, le, pl.pe):
                    out.add((v.index, le))
        return out

    def _run_starts(self) -> dict[int, dict[int, set[int]]]:
        """Run start (the PE of a virtual LE 0) -> VDI index -> its LEs after LE 0 placed by
        evidence (SURE or more) on that run: whose run an extent lies on
        (_on_anothers_placed_run)."""
        starts: dict[int, dict[int, set[int]]] = {}
        for w in self.vdis:
            for j, p in w.placed.items():
                if j > 0 and p.confidence >= SURE:
                    starts.setdefault(p.pe - j, {}).setdefault(w.index, set()).add(j)
        return starts

    def _heads(self) -> dict[int, int]:
        """VDI index -> the PE of its head: LE 0 placed, or a head another VHD's footer
        overwrote, its extent since taken by that footer, which still says where that older
        VHD's run began (core.match.footers._claim)."""
        stale = getattr(self, "overwritten_heads", {})
        return {v.index: v.placed[0].pe if 0 in v.placed else v.anchor.pe
                for v in self.vdis if v.pred is not None and v.anchor is not None
                and (0 in v.placed or v.anchor.pe in stale)}

    def _on_anothers_run(self, v: VdiState, le: int, q: int, by_head: dict[int, int],
                         fits: dict) -> bool:
        """Is `q` LE `le` of another VHD's run from its own head (`by_head`: head PE -> VDI
        index; that VHD's LEs 1..le fit the PEs after its head by content, or are held by a
        later LV that took them: label-gone seed 19): explained as that VHD's, where lvcreate
        put it?"""
        i = by_head.get(q - le)
        w = None if i is None else self.vdis[i]
        return w is not None and w is not v \
            and self.run_from_head_fits(w, le, q - le, fits, held_pass=True)

    def _on_anothers_placed_run(self, v: VdiState, le: int, q: int,
                                starts: dict[int, dict[int, set[int]]]) -> bool:
        """Is `q` LE `le` of another VDI w by its run: at that LE's distance from one of
        w's LEs evidence placed (`starts`: run start -> such VDIs), w's LE `le` open (or on
        `q`), and `q` fitting it by content? Two LVs extended in turns (resized seed 17):
        each LE's extent fits both by layout, and each VDI's own run says which is whose."""
        for i, les in starts.get(q - le, {}).items():
            w = self.vdis[i]
            if w is v or not les - {le} or w.pred is None or w.metadata_map \
                    or le not in w.pred.slots or (le in w.placed and w.placed[le].pe != q):
                continue
            if self.scorer.content(w.pred.slots[le], q, w.anchor.uid, self.f) >= ACCEPT:
                return True
        return False

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


@dataclass
class _TwinJob:
    """One placement's search for twins (ReviewMixin._twins_many)."""
    j: int                  # its job's index
    v: VdiState
    le: int
    need: int
    seen: set[int]          # candidates known not to be twins in its context
    rest: list[int]         # candidates still to be looked at, in PE order
    bar: float = 0.0        # what a twin scores at least, adjacency aside
    lo: int = 0             # rest[:lo] scored
    twins: list[int] = field(default_factory=list)

    def row(self, q: int) -> tuple:
        """The scores_rows row of candidate q, v's neighbours where they are placed."""
        return (self.v, self.le, q, self.v.pe(self.le - 1), self.v.pe(self.le + 1))
