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

import numpy as np

from core.findings import Finding
from core.match import zerofill
from core.match.features import PeFeatures, SectorReader
from core.match.score import Score, Scorer
from core.progress import Ticker
from core.match.board import (  # noqa: F401  (re-exported: callers import them here)
    ACCEPT, ADJACENCY_ONLY, BETWEEN, CONTESTED, CONTINUES, FITS, FREE, GAP_CONFIDENCE,
    RESERVED, SIZED, SURE, TIED, WALKED, BoardMixin, Placement, VdiState)
from core.match.footers import FooterMixin
from core.match.guest import GuestMixin
from core.match.review import ReviewMixin
from core.match.search import SearchMixin, _softmax_best  # noqa: F401
from core.match.walks import WalkMixin


SETTLE_ROUNDS = 16     # withdraw / review / claim passes at most (each must change the board)


class Solver(BoardMixin, WalkMixin, SearchMixin, ReviewMixin, FooterMixin, GuestMixin):
    """The solver's state; its steps live in the mixins (board, walks, search, review,
    footers), each in its own module."""

    def __init__(self, reader: SectorReader, data_offset: int, extent_bytes: int, pe_count: int,
                 features: PeFeatures, vdis: list[VdiState], owner: np.ndarray,
                 ticker: Ticker | None = None) -> None:
        self.reader = reader
        self.D, self.E, self.N = data_offset, extent_bytes, pe_count
        self.f = features
        self.vdis = vdis
        self.owner = owner
        self.scorer = Scorer(reader, data_offset, extent_bytes, None)
        self.scorer.anchored_uids = {v.anchor.uid for v in vdis if v.anchor is not None}
        # VHDs whose current footer ends more than one extent (sm's inflate and deflate
        # leave copies where the LV ended before): any copy may be a leftover
        self.scorer.repeated_ends = {v.anchor.uid for v in vdis if v.anchor is not None
                                     and self.repeated_end(v)}
        self.ticker = ticker
        self.findings: list[Finding] = []
        self.sig_good: np.ndarray | None = None
        self.sig_ones: np.ndarray | None = None
        self.sig_done: np.ndarray | None = None
        self._open: dict[int, set[int]] = {}     # LE -> indices of VDIs looking for it
        self._scores: dict[tuple, Score] = {}     # memo of score()
        self._verdicts: dict[tuple, tuple] = {}   # memo of guest-less walk steps' verdicts
        self._careful = False                     # second look: contested walks stop
        self.zero: dict[int, zerofill.ZeroFill] = {}   # measured zero fill per VDI index

    def _rounds(self, limit: int) -> None:
        rounds = 0
        while rounds < limit:
            rounds += 1
            self._tick()
            self.guest_refresh()
            n = self.walk_all()
            n += self.search_round()
            if n == 0:
                n = self.island_round()
            if n == 0:
                break

    # -- driver --------------------------------------------------------------------------------
    def _board(self) -> frozenset:
        return frozenset((v.index, le, pl.pe) for v in self.vdis for le, pl in v.placed.items())

    def settle(self, limit: int = SETTLE_ROUNDS) -> None:
        """On a disk with a previous life: withdraw what rests on priors, review what stays
        against the extents that freed, and let the guests' file systems claim what their own
        structures tie to them, until the board stops changing. Every withdrawal frees
        extents that may fit what stays placed as well: a placement is only as sure as no free
        extent fits it as well. Then walk on from what stays placed: what the review took
        back in the same pass is not walked onto again (walks._take_step), and a board seen
        before ends the passes (a walk and the review undoing each other in turn) with the
        review's word."""
        seen = set()
        for _ in range(limit):
            before = self._board()
            seen.add(before)
            self.withdrawn = set()
            self.withdraw_strangers()
            self.learn_ends()       # (strangers' footers: leftovers)
            self.withdraw_guesses()
            self.review_confidence()
            self.withdraw_guesses()
            self.yield_stale_heads()
            self.guest_review()
            self.place_footers(retry=True)
            # from what stays placed (a footer placed now, back to the data before it), as
            # LVM allocates; not for an older VHD the SR does not name (its walks rest on
            # nothing: withdraw_strangers takes them back)
            self.walk_all(skip=self.stranger)
            # and the extents withdrawals freed, for the open LEs next to what stays (an
            # older VHD's LE withdrawn from the extent a live disk's LE holds: resized 23)
            self.search_round(skip=self.stranger, barrier=self.withdrawn)
            self.fill_gaps()        # (a footer placed now closes a run from the head)
            after = self._board()
            if after == before:
                return
            if after in seen:
                break
        self.withdraw_guesses()

    def solve(self, max_rounds: int | None = None) -> None:
        limit = max_rounds if max_rounds is not None else 4 * self.N + 16
        # first without trusting zeros anywhere; then, where the placed extents show that
        # unwritten sectors read zero, with that evidence too
        self._rounds(limit)
        changed = self.measure_zero_fill()
        if self.image_stale() and self.scorer.distrust_past_data():
            self._scores.clear()
            changed = True
        if changed:
            self._rounds(limit)
        self.second_look(limit)
        for _ in range(2):          # the guest's view of the end may undo an early placement
            if not self.guest_review():
                break
            self._rounds(limit)
        self.place_footers()
        if self.learn_ends():       # an LV's older ends no longer count against extents
            self._rounds(limit)
            self.place_footers(retry=True)
        self.fill_gaps()
        self.review_confidence()
        if self.image_stale():
            self.settle()
        self.uncross()
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
