"""Footers and gaps: which extent ends the LV. Footers of the VDI's unique id that describe
another size are old ones (vhd-util resize); of several of the same size (sm's inflate, a
deflate's freed extents) the end is the one sm's geometry points at (right after the data, or
paired with its inflate's copy), else they are named, not chosen; one free footer extent is
placed by the free run after the data or by sm's LV sizing (lvhdutil.calcSizeVHDLV), or LVM's
allocation order where both of sm's sizes fit. Data-less extents between two placed ones on a
matching PE run.
"""

from __future__ import annotations

import numpy as np

from core.findings import Finding
from core.match.board import (
    ACCEPT, FREE, SURE, TIED, FITS, SIZED, WALKED, BETWEEN, GAP_CONFIDENCE, ALLOCATION_GUESS,
    VdiState)
from core.match.features import SECTOR
from core.match.predict import sm_inflated_bytes
from core.structs import vhd as S

# a footer extent whose LE two independent rules agree on (not a prior alone: kept on disks
# with a previous life, see review.withdraw_guesses)
FOOTER_AGREED_NOTE = ("ends with the VHD footer; sm's inflated LV size and the unused run after "
                      "the data put the LV's end here")
# the LV's end among several copies of its footer, told by geometry sm and LVM leave (kept on
# disks with a previous life: not a prior; see _end_among_copies)
PAIRED_ENDS_NOTE = ("ends with the VHD footer; another copy of it lies {gap} extents further on "
                    "(PE {partner}), where sm's inflate ended the LV grown from here: the LV's "
                    "end, LE {le}")
FULL_SIZE_END_NOTE = ("ends with the VHD footer, the one copy that can be the LV's end: a thick "
                      "SR's VDI, no snapshot, whose LV sm keeps at its full size "
                      "(calcSizeVHDLV): LE {le}")
HIDDEN_END_NOTE = ("ends with the VHD footer, the one copy that says hidden as its head does: a "
                   "base copy sm deflated (LVHDVDI._snapshot, the GC), so the LV's end at its "
                   "deflated size, LE {le}")
NEXT_EXTENT_END_NOTE = ("ends with the VHD footer, on the extent right after LE {prev}: the LV's "
                        "end, LE {le} (its other copies are older ends)")


class FooterMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

    # -- footers and gaps ----------------------------------------------------------------------
    def footer_candidates(self, v: VdiState) -> tuple[list[int], list[int], list[int]]:
        """(PEs placed for v, free PEs, every PE whoever holds it) whose last sector is a
        footer of v's unique id that describes the disk as the copy at offset 0 does
        (`_footer_copies`). A footer with
        another size is an old one (vhd-util resize leaves it where the LV used to end):
        never the LV's end. Footers of the same size can still be old ones (sm's inflate
        moves the footer and leaves the old copy): callers weigh that."""
        a = v.anchor
        same, old = self._footer_copies(v)
        own, free = [], []
        for p in same:
            if self.owner[p] == v.index:
                own.append(p)
            elif self.owner[p] == FREE or self._stale_head_at(p, a.uid) is not None:
                free.append(p)      # (an older VHD's head our footer overwrote: ours to take)
        if old:
            self.findings.append(Finding(
                "vhd-old-footer", self.D + old[0] * self.E + self.E - SECTOR, "info",
                f"VHD {a.uid_str}: PEs {old[:8]} end with an older footer of it (another size "
                f"or damaged): where the LV ended before a resize, not its end",
                {"vhd_uuid": a.uid_str, "pes": old[:16]}))
        return own, free, same

    def _footer_copies(self, v: VdiState) -> tuple[list[int], list[int]]:
        """(PEs ending with a footer of v's unique id that describes the disk as the copy at
        offset 0 does: same current size, checksum right; PEs ending with one of another size
        or damaged), whoever holds the PE now."""
        a = v.anchor
        uid = np.frombuffer(a.uid, dtype=np.uint8)
        # (the PEs ending with any footer, found once: each VDI's are among them)
        if getattr(self, "_footer_tails", None) is None:
            self._footer_tails = np.flatnonzero(self.f.tail_footer)
        tails = self._footer_tails
        cands = tails[(self.f.tail_uid[tails] == uid).all(axis=1)]
        if not len(cands):
            return [], []
        tails = self.reader.gather(self.D + cands.astype(np.int64) * self.E + self.E - SECTOR,
                                   SECTOR)
        same, old = [], []
        for p, raw in zip(cands.tolist(), tails):
            raw = raw.tobytes()
            ftr = S.parse_footer(raw)
            if S.footer_checksum(raw) != ftr.checksum or int(ftr.curr_size) != a.current_size:
                old.append(p)
            else:
                same.append(p)
        return same, old

    def repeated_end(self, v: VdiState) -> bool:
        """Does v's current footer (as the copy at offset 0 describes the disk, which libvhd
        writes with it: `vhd_write_footer`) end more than one extent? All but one are older
        ends of its LV (sm's inflate and deflate leave them; the footer holds no physical
        size). A copy of another size is older by its size (`vhd-util resize`,
        _footer_copies), one of another hidden flag by that flag (sm hides a snapshot's base
        copy, `vhd-util set -f hidden`, and every footer written after says so)."""
        same, _ = self._footer_copies(v)
        if len(same) < 2:
            return False
        return sum(h == v.anchor.hidden for h in self._hidden_flags(same)) > 1

    def _hidden_flags(self, pes: list[int]) -> list[bool]:
        """The hidden flag of the footer ending each of `pes` (each known to end with one)."""
        tails = self.reader.gather(self.D + np.asarray(pes, np.int64) * self.E + self.E - SECTOR,
                                   SECTOR)
        return [bool(S.parse_footer(t.tobytes()).hidden) for t in tails]

    def _full_size_end(self, v: VdiState, copies: list[int], before: set[int]) -> int | None:
        """A VDI whose LV sm keeps at its full size whose current footer ends exactly one
        extent outside its LEs before the last data LE: that extent is its LV's end, LE
        inflated (sm's calcSizeVHDLV). Full size: a thick SR's VDI named after a record that
        is no snapshot (reconstruct._full_size_vdis); not a VHD the SR does not name, even one
        whose guest reads and that no differencing disk is: an older VHD of a previous life
        is as likely (2 placements wrong on thick seeds 1 and 21 when tried). Not where that
        extent lies right after LE deflated-1 (geometry makes it the deflated end)."""
        if v.index not in getattr(self, "full_size", ()):
            return None
        le, deflated = self._inflated_le(v), self._deflated_le(v)
        q = self._sole_current_end(v, copies, before, le)
        if q is not None and deflated < le and v.pe(deflated - 1) is not None \
                and q == v.pe(deflated - 1) + 1:
            return None     # right after LE deflated-1: the deflated end (_footer_by_allocation)
        return q

    def _hidden_end(self, v: VdiState, copies: list[int], before: set[int]) -> int | None:
        """A hidden VHD (a snapshot's base copy) whose current footer (hidden, as the copy at
        offset 0 says) ends exactly one extent outside its LEs before the last data LE: that
        extent is its LV's end, at sm's deflated size. sm shrinks the base copy to the
        minimum when it snapshots (LVHDSR.py LVHDVDI._snapshot: `lvhdutil.deflate(...,
        lvSizeBase)`) and the GC deflates a parent again after coalescing into it (cleanup.py
        LVHDVDI.deflate); copies written before it was hidden say hidden 0 (older ends). A
        crash between the GC's inflate and deflate leaves two hidden copies: then nothing
        is decided here."""
        if not v.anchor.hidden:
            return None
        return self._sole_current_end(v, copies, before, self._deflated_le(v))

    def _sole_current_end(self, v: VdiState, copies: list[int], before: set[int], le: int
                          ) -> int | None:
        """The one extent among `copies` (ending with v's footer of the current size) whose
        footer has the hidden flag of v's copy at offset 0 and that is none of v's LEs before
        its last data LE, if it can be LE `le` (at or after the last data LE): not v's
        placement of another LE, LE `le` not placed elsewhere, content not against it (its
        bitmaps), not another VDI's extent (but an older VHD's head our footer overwrote).
        None otherwise."""
        if le < v.pred.last_data_le:
            return None
        ends = [p for p, h in zip(copies, self._hidden_flags(copies))
                if h == v.anchor.hidden and p not in before]
        if len(ends) != 1:
            return None
        q = ends[0]
        if (le in v.placed and v.placed[le].pe != q) \
                or any(pl.pe == q and j != le for j, pl in v.placed.items()) \
                or self._lacks_data_of(v, le, q) \
                or (self.owner[q] != FREE and self.owner[q] != v.index
                    and self._stale_head_at(q, v.anchor.uid) is None):
            return None
        return q

    def _stale_head_at(self, p: int, uid: bytes) -> VdiState | None:
        """The VDI whose LE 0 is placed on `p` by its structure alone, where the footer of
        VHD `uid` has overwritten that head's BAT (reconstruct._overwritten_heads)."""
        if getattr(self, "overwritten_heads", {}).get(p) != uid or self.owner[p] < 0:
            return None
        w = self.vdis[int(self.owner[p])]
        if w.metadata_map or w.placed.get(0) is None or w.placed[0].pe != p:
            return None
        return w

    def _claim(self, v: VdiState, le: int, pe: int, confidence: float, source: str,
               note: str | None = None) -> None:
        """Place v's footer extent, taking it from an older VHD's head it overwrote."""
        w = self._stale_head_at(pe, v.anchor.uid)
        if w is not None and w is not v:
            del w.placed[0]
            self.owner[pe] = FREE
        self.place(v, le, pe, confidence, source, note)

    def place_footers(self, retry: bool = False) -> None:
        """Decide each VDI's footer extent (and so its LV's length). `retry`: again, for the
        VDIs still without one, after withdrawals freed extents (an older VHD's stale LE that
        held the footer extent, remnants inside the free run after the data); a finding
        already made is not made twice."""
        made = len(self.findings)
        self._footer_retry = retry
        try:
            self._place_footers(retry)
        finally:
            self._footer_retry = False
        if retry:
            seen = {(f.kind, f.message) for f in self.findings[:made]}
            new = []
            for f in self.findings[made:]:
                if (f.kind, f.message) not in seen:
                    seen.add((f.kind, f.message))
                    new.append(f)
            self.findings[made:] = new

    def learn_ends(self) -> bool:
        """Tell the scorer where each VDI's LV ends, as far as placed by evidence (the footer
        extent of a known LE count, SURE): that VHD's footer in another extent's last sector
        is then an older end of its LV, not a sign the extent is its (score.other_footer);
        and which VHDs may be older ones the SR no longer names (review.stranger), whose
        footers are leftovers. True when that changed (scores must be recomputed)."""
        ends = {}
        for v in self.vdis:
            if v.anchor is None or v.footer_pe is None or v.le_count is None:
                continue
            pl = v.placed.get(v.le_count - 1)
            if pl is not None and pl.pe == v.footer_pe and pl.confidence >= SURE:
                ends[v.anchor.uid] = v.footer_pe
        strangers = {v.anchor.uid for v in self.vdis
                     if v.anchor is not None and self.stranger(v)}
        if ends == self.scorer.ended and strangers == self.scorer.stale_uids:
            return False
        self.scorer.ended, self.scorer.stale_uids = ends, strangers
        self.scorer.forget_content()
        self._scores.clear()
        return True

    def _place_footers(self, retry: bool) -> None:
        for v in self.vdis:
            a = v.anchor
            if a is None or v.pred is None or v.metadata_map or not a.lvhd:
                continue
            if retry and (v.footer_pe is not None or v.le_count is not None):
                continue
            last = v.pred.last_data_le
            own, free, copies = self.footer_candidates(v)
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
            # placed extents before the last data extent are not the LV's end, whatever their
            # last sector says: ends of the LV before its data grew (deflated then), whose
            # footer sector no block has covered since
            before = {pl.pe for le, pl in v.placed.items() if le < last}
            # (copies another VDI holds now count: a deflate freed them, another LV took them
            # and left our footer where its guest never wrote, seed snapshots-41)
            full_end = self._full_size_end(v, copies, before)
            if full_end is not None:
                le = self._inflated_le(v)
                self._claim(v, le, full_end, FITS, "vhd-match", FULL_SIZE_END_NOTE.format(le=le))
                v.le_count, v.footer_pe = le + 1, full_end
                continue
            hidden_end = self._hidden_end(v, copies, before)
            if hidden_end is not None:
                le = self._deflated_le(v)
                self._claim(v, le, hidden_end, FITS, "vhd-match",
                            HIDDEN_END_NOTE.format(le=le))
                v.le_count, v.footer_pe = le + 1, hidden_end
                continue
            end = self._end_among_copies(v, free, set(copies) - before) \
                if (len(free) > 1 or own or len(set(copies) - before) > 1) \
                and all(p in before for p in own) else None
            if end is not None:
                q, deflated, note = end
                self._claim(v, deflated, q, FITS, "vhd-match", note)
                v.le_count, v.footer_pe = deflated + 1, q
                others = sorted(set(free + own) - {q} - {v.pe(le) for le in v.placed})
                if others:
                    self.findings.append(Finding(
                        "vhd-footer-elsewhere", self.D + others[0] * self.E, "info",
                        f"VHD {a.uid_str}: PEs {others[:8]} also end with its footer (older "
                        f"ends of its LV); PE {q} is its end, LE {deflated}",
                        {"vhd_uuid": a.uid_str, "pes": others[:16]}))
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

    def _end_among_copies(self, v: VdiState, free: list[int], copies: set[int]
                          ) -> tuple[int, int, str] | None:
        """Free extents end with v's footer, all of the current size, and none of v's placed
        extents from the last data LE on does (`copies`: every PE ending with that footer but
        v's PEs of LEs before its last data LE, older deflated ends): the LV's end and older
        ends, which sm leaves in pairs.
        lvhdutil.inflate extends the LV to its full size and writes the footer at the new end,
        leaving the old one; deflate cuts the LV back to the data's end and writes the footer
        there: the deflated LV is a prefix of the inflated one. lvm2 tries its allocation
        policies from `contiguous` up to the one asked for (lib/metadata/lv_manip.c
        `_allocate`), so an extension continues the LV's last segment where the extents after
        it are free. The deflated end (LE D) is then
        * the free copy on the extent right after LE D-1's PE: read as an inflated end, the
          LEs between would lie elsewhere with the last one right after LE D-1, which no
          lvextend does; or
        * the one free copy with a partner exactly (inflated LE - D) extents further on (an
          inflate that took the extents after it in one run left its footer there), where no
          other copy has one and none lies that far before it: copies 22, 33 and 44 apart by
          that distance (seed reused-23, whose end is 33) are no pair. Partners are any of
          `copies`, whoever holds them now.
        Only where D is the last data LE or after it, content does not rule the extent out as
        LE D, and it does rule it out as every unplaced LE before D (lacks that LE's bitmaps):
        an unplaced LE's extent may be an older deflated end (seed label-gone-22: LE 4's, whose
        footer sector its blocks never covered, exactly the inflated distance before the LV's
        end). (q, D, note), or None."""
        deflated, inflated = self._deflated_le(v), self._inflated_le(v)
        if deflated < v.pred.last_data_le or inflated <= deflated or deflated in v.placed:
            return None
        after = v.pe(deflated - 1) + 1 if deflated > 0 and v.pe(deflated - 1) is not None \
            else -1
        if after in free and deflated == v.pred.last_data_le:
            q, note = after, NEXT_EXTENT_END_NOTE.format(prev=deflated - 1, le=deflated)
        else:
            gap = inflated - deflated
            paired = [q for q in free if q + gap in copies]
            if len(paired) != 1 or paired[0] - gap in copies:
                return None     # a chain of copies that far apart (seed reused-23): no pair
            q, note = paired[0], PAIRED_ENDS_NOTE.format(gap=gap, partner=paired[0] + gap,
                                                         le=deflated)
        if self._lacks_data_of(v, deflated, q):
            return None
        if any(le not in v.placed and not self._lacks_data_of(v, le, q)
               for le in range(deflated)):
            return None     # q may be an unplaced LE's own extent (an older deflated end)
        return q, deflated, note

    def _footer_unplaced(self, v: VdiState, free: list[int], why: str) -> None:
        """Footer extents whose LE cannot be told: named (and suggested for the LE sm's
        sizing gives, if any), never claimed. Said once, by the first pass (not a retry)."""
        if getattr(self, "_footer_retry", False):
            return
        a = v.anchor
        self.findings.append(Finding(
            "vhd-footer-extent-unplaced", self.D + free[0] * self.E, "warning",
            f"VHD {a.uid_str}: PEs {free[:8]} end with its footer; {why}: the LV's length "
            f"and that extent's LE are not decided", {"vhd_uuid": a.uid_str, "pes": free[:16]}))
        # suggested for both of sm's ends: its inflated size, and the deflated one right after
        # the data (a detached thin VDI's: the LE a `--fix` names when the map says the LV
        # ends there and that LE is missing)
        for le in {self._inflated_le(v), self._deflated_le(v)}:
            if le >= v.pred.last_data_le and le >= 0 and le not in v.placed:
                v.ambiguous[le] = sorted(set(v.ambiguous.get(le, [])) | set(free[:16]))

    def _place_footer(self, v: VdiState, last: int, free: list[int]) -> None:
        """The one free extent that ends with v's footer (none of v's placed ones does). On a
        retry (after withdrawals on a disk with a previous life): only what evidence decides,
        never a prior the withdrawal would take back again."""
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
        floor = SURE if getattr(self, "_footer_retry", False) else 0.0
        if chosen is None:
            if sized is not None:
                q, footer_le, conf, src, note = sized
                if conf < floor:
                    return
                self._claim(v, footer_le, q, conf, src, note)
                v.le_count = footer_le + 1
                v.footer_pe = q
                return
            self._footer_unplaced(v, free, "its LE number cannot be told from content")
            return
        n_gap = chosen - p_last - 1
        footer_le = last + n_gap + 1
        if n_gap and sized is None and WALKED < floor:
            return
        for k in range(1, n_gap + 1):
            self.place(v, last + k, p_last + k, GAP_CONFIDENCE, "adjacency",
                       "no VHD data: inferred from the free run up to the footer")
        if n_gap == 0:
            self._claim(v, footer_le, chosen, TIED, "vhd-match")
        elif sized is not None:
            # v's own footer (its unique id, its current size) fixes the VDI; two independent
            # rules fix the LE: sm's LV sizing (the only one of sm's sizes that fits) and
            # LVM's allocation of the free run after the data. A stale copy of the same footer
            # (a deflate's freed end) would have to sit exactly where both put the LV's end.
            self._claim(v, footer_le, chosen, FITS, "vhd-match", FOOTER_AGREED_NOTE)
        else:
            self._claim(v, footer_le, chosen, WALKED, "adjacency",
                       "footer extent; its LE number inferred from the free run after the "
                       "last data extent")
        v.le_count = footer_le + 1
        v.footer_pe = chosen

    def _inflated_le(self, v: VdiState) -> int:
        """The last LE of v's LV if sm inflated it (thick size), -1 if not an sm layout."""
        inflated = sm_inflated_bytes(v.anchor, self.E)
        return -1 if inflated is None else -(-inflated // self.E) - 1

    def _deflated_le(self, v: VdiState) -> int:
        """The last LE of v's LV as sm's deflate leaves it (roundup4M of the data's end and the
        footer: lvhdutil.deflate), -1 if not an sm layout."""
        if sm_inflated_bytes(v.anchor, self.E) is None:
            return -1
        return -(-(v.anchor.data_end + 512) // self.E) - 1

    def _footer_by_sizing(self, v: VdiState, free: list[int]):
        """sm sizes a VHD LV by rule (formats.md 3.1): inflated = roundup4M(4,329,472 + virtual
        + 4096 per virtual block), deflated = roundup4M(end of data + footer). When exactly one
        of those lengths fits (its last LE is after the data and still unplaced), the footer
        extent is that LE. Only for the 2 MiB-block, 4 MiB-extent LVHD layout."""
        if len(free) != 1 or sm_inflated_bytes(v.anchor, self.E) is None:
            return None
        fits = {}
        for rule, le in (("inflated", self._inflated_le(v)), ("deflated", self._deflated_le(v))):
            if le >= v.pred.last_data_le and le not in v.placed \
                    and not self._lacks_data_of(v, le, free[0]):
                fits.setdefault(le, rule)
        if len(fits) == 2:
            return self._footer_by_allocation(v, free[0], min(fits), max(fits))
        if len(fits) != 1:
            return None
        le, rule = next(iter(fits.items()))
        if le == v.pred.last_data_le and v.pe(le - 1) is not None:
            return None   # then it would have been found as the last data extent
        q = free[0]
        if v.lv_name is not None or self.guest_of(v) is not None:
            # a VHD the SR names, or whose guest reads through its placements: sm made its LV,
            # so sm's rule gives its length (an older VHD of unknown origin need not follow
            # it: an extent that once held its footer is as likely)
            return q, le, FITS, "vhd-match", \
                f"ends with the VHD footer; sm sized this VDI's LV ({rule}): LE {le}"
        return q, le, SIZED, "vhd-match", \
            f"ends with the VHD footer; LE number from sm's LV sizing ({rule})"

    def _lacks_data_of(self, v: VdiState, le: int, q: int) -> bool:
        """Would LE `le` of v hold blocks (tapdisk writes a block's bitmap when it allocates
        it, on any storage) that extent q does not show? Then q cannot be that LE: content,
        not a prior, rules that reading of the footer extent out."""
        slot = v.pred.slots.get(le)
        if slot is None or not slot.has_content or not len(slot.bitmap_offsets):
            return False
        return self.scorer.content(slot, q, v.anchor.uid, self.f) < ACCEPT

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
        if q == left + 1:
            # right after LE deflated-1: read as the inflated end, the LEs between would lie
            # elsewhere and the LV's last extent right after them, which no lvcreate or
            # lvextend does; and an inflated LV would end with this footer too (one footer
            # extent only here). Geometry, not an allocation prior: the LV ends here
            return q, deflated, FITS, "vhd-match", (
                f"ends with the VHD footer right after LE {deflated - 1}: the LV ends here "
                f"(sm's deflated size, LE {deflated})")
        head = v.pe(0)
        if head is not None and q == head + inflated and all(
                self.owner[x] == FREE or v.pe(x - head) == x
                or self._older_head_inside(v, x - head, x) for x in range(head + 1, q)):
            # exactly sm's full length after the head, nothing of another VDI between (but
            # an older VHD's head left where v never wrote): one run from head to footer, as
            # lvcreate allocates an LV in one free area. Read as the deflated end, the LV's
            # last extent would sit exactly that far away by chance with the extents between
            # unused. Geometry, not an allocation prior
            return q, inflated, FITS, "vhd-match", (
                f"ends with the VHD footer {inflated} extents after the head: one run from "
                f"head to footer, sm's full length (LE {inflated})")
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

    def _older_head_inside(self, v: VdiState, le: int, pe: int) -> bool:
        """Is `pe` held only as the head of an older VHD the SR does not name (review.stranger),
        where v's LE `le` has nothing (past its data: a gap extent sm never writes) or its
        bitmaps? tapdisk on LVM writes only what the guest writes, so such a head survives
        in v's extent (issue 10 premise 1)."""
        if self.owner[pe] < 0:
            return False
        w = self.vdis[self.owner[pe]]
        if w is v or w.pe(0) != pe or not self.stranger(w):
            return False
        sl = v.pred.slots.get(le)
        return sl is None or not len(sl.bitmap_offsets) \
            or self.scorer.content(sl, pe, v.anchor.uid, self.f) >= ACCEPT

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
                    self.place(v, a + k, pa + k, BETWEEN if has else GAP_CONFIDENCE, "adjacency",
                               "between two placed extents" + ("" if has else "; no VHD data"))
