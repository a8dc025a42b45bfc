"""Guest evidence: the guest's own file system, read through the placements made so far, says
which extent is which (issue 10).

On a disk with a previous life several extents can fit one LE by VHD layout alone: another
VDI allocated the same way has its bitmaps at the same lattice phases, and so do an older SR's
remnants. The guest's file system (core.guestfs) tells them apart, because it describes the
VIRTUAL disk, which the BAT ties to LV offsets:

* a block's bitmap says which of its sectors the guest wrote; the guest wrote (almost) only
  where its file system holds something. A candidate whose bitmaps say "written" where the file
  system says "free" carries another disk's bitmaps (`GUEST_CONFLICT`); one whose written
  sectors all fall where the file system has data, when a stranger's bitmap would have hit
  free space many times over, carries this disk's (`GUEST_AGREE`);
* self-identifying structures (ext4 metadata with checksums seeded by its uuid and numbered by
  inode or group, NTFS MFT records numbered by their position, INDX records by VCN) that the
  file system places inside the LE's virtual range are either in the candidate or not
  (`LANDMARK_FOUND` / `LANDMARK_WRONG`).

The file system is read only through placements the solver is sure of (confidence >= SURE), so
a guess never feeds the evidence that judges guesses. The evidence is VDI-specific: it ties an
extent to one VDI as continuity does (the solver adds it to the continuity term).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from core.guestfs import GuestFs, open_guest
from core.findings import Finding
from core.match.board import ACCEPT, FREE, SURE, TIED, TIED_CONTINUITY, Placement, VdiState
from core.match.features import SECTOR

BAT_UNUSED = 0xFFFFFFFF
GUEST_CONFLICT = -6.0       # written where the guest's file system says free
GUEST_AGREE = 3.0           # written only where it holds data, a stranger would have missed
AGREE_EXPECTED = 8.0        # ... by this many sectors at least (expected misses of a stranger)
CONTENT_MIN = 64            # content sectors in a block before their being unwritten counts
SHARE_SAMPLES = 32          # written-but-free sectors read to see whether they hold data
CONFLICT_MIN = 8            # sectors written into free space before it counts (and 5 %)
LANDMARK_FOUND, LANDMARK_WRONG = 4.0, -6.0
# weaker landmarks: (found, wrong) by `Landmark.what`. A file's last block reads zero past its
# end (a stranger's bytes there rarely do: strong when not), with data just before it (often,
# but a file may end in zeros: no evidence against when not)
LANDMARK_WEIGHTS = {"file-tail-zero": (0.5, -6.0), "file-tail-data": (2.0, 0.0)}
LANDMARK_CAP = 12.0
REVIEW_SLOTS = 512         # placements judged against the candidates at once
GUEST_CLAIM = 8.0           # structures of its own found: enough to take an extent
GUEST_TIES = 2.0            # |evidence| from which it ties an extent to (or off) a VDI
GUEST_PROBE_STEPS = 4       # unplaced LEs a guest reading is probed through at most
GUEST_PROBE_CANDIDATES = 16  # free extents tried per such LE (more: too ambiguous to probe)
NEAREST_REACH = 64          # LEs looked across for the run an LE would lie on (no_rival)


class GuestMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

    # -- the guest's file system, read through sure placements -----------------------------------
    def guest_refresh(self) -> bool:
        """(Re)read every VDI's guest file system where the placements of its chain changed;
        True when some VDI's guest view changed (its scores must be recomputed). The view is
        read through sure placements; where they do not reach the file system's own metadata,
        through every placement (a wrong one fails the file system's checksums and gives no
        view, or an UNKNOWN part of one)."""
        if not hasattr(self, "_guest"):
            self._guest: dict[int, tuple[frozenset, GuestFs | None]] = {}
        changed = False
        for v in self.vdis:
            if v.anchor is None or v.pred is None or v.metadata_map:
                continue
            key = frozenset((w.index, le, pl.pe, pl.confidence >= SURE)
                            for w in self._chain(v) for le, pl in w.placed.items())
            old = self._guest.get(v.index)
            if old is not None and old[0] == key:
                continue
            fs = None
            for floor in (SURE, 0.0):
                self._floor = floor
                fs = open_guest(lambda off, n, v=v: self.read_virtual(v, off, n),
                                int(v.anchor.current_size))
                if fs is not None:
                    break
            self._floor = SURE
            if fs is None:
                fs = self._guest_by_run(v, key)
            if fs is None:
                fs = self._guest_by_candidates(v, key)
            self._guest[v.index] = (key, fs)
            if fs is not None or (old is not None and old[1] is not None):
                changed = True      # scores memoised with the old view are stale
        if changed:
            self._scores.clear()
        return changed

    def _guest_by_run(self, v: VdiState, key: frozenset) -> GuestFs | None:
        """No guest reads through v's placements (the extents holding its first blocks are
        not placed: an older VHD's remnants fit them as well): read it through the run LVM
        most often gives an LV, LE k on the PE k after its head, where those PEs are free or
        held by content alone for a possible stranger. The view is kept only when the guest's
        own self-identifying structures verify in those extents (GUEST_CLAIM): a random
        or stale extent holds no boot sector and MFT or checksummed ext4 metadata of this
        guest at the places its file system says. Parentless VHDs only (a child reads its
        parent's blocks, which a run of its own says nothing about)."""
        a = v.anchor
        p0 = v.pe(0)
        if p0 is None or (a.parent_uid is not None and any(a.parent_uid)):
            return None
        hypo = {le: replace(pl, confidence=1.0) for le, pl in v.placed.items()}
        probe = []
        for le, sl in sorted(v.pred.slots.items()):
            q = p0 + le
            if le in hypo or not 0 <= q < self.N or not sl.has_content:
                continue
            holder = int(self.owner[q])
            if holder != FREE:
                w = self.vdis[holder] if holder >= 0 else None
                held = None if w is None else next(
                    (pl for pl in w.placed.values() if pl.pe == q), None)
                if w is None or w is v or held is None or not held.weak \
                        or not self.stranger(w):
                    continue
            hypo[le] = Placement(q, 1.0, "probe")
            probe.append(le)
        if not probe:
            return None
        fs, _ = self._open_through(v, hypo)
        return self._verified(v, key, fs, hypo, probe)

    def _verified(self, v: VdiState, key: frozenset, fs: GuestFs | None, hypo: dict,
                  probe: list[int]) -> GuestFs | None:
        """`fs`, read through the hypothetical placements `hypo`, if the guest's own
        self-identifying structures verify in the probed LEs' extents (GUEST_CLAIM over
        them): a random or stale extent holds none of this guest's at the places its file
        system says. Else None."""
        if fs is None or not probe:
            return None
        self._guest[v.index] = (key, fs)
        found = sum(max(0.0, self.guest_llr(v, le, hypo[le].pe)) for le in probe)
        self._guest.pop(v.index, None)
        return fs if found >= GUEST_CLAIM else None

    def _guest_by_candidates(self, v: VdiState, key: frozenset) -> GuestFs | None:
        """No guest reads through v's placements, nor through its run from the head: the
        reading stops at an LE not placed (the extent holding its MFT or group descriptors
        fits that LE as well as an older VHD's remnant does). Each extent holding data that
        fits that LE by content, whoever holds it, is tried in turn (at most
        GUEST_PROBE_CANDIDATES); where exactly one opens the file system (else exactly one
        lets it read on to a later LE), it is taken, up to GUEST_PROBE_STEPS LEs. The view is kept
        only when the guest's own self-identifying structures verify in the extents so
        chosen (GUEST_CLAIM), as for _guest_by_run. VHDs in no chain only: a parent's file
        system lives on in its children's blocks (their extents hold newer copies of the
        same records, which verify as well), and a child reads its parent's."""
        a = v.anchor
        if v.pe(0) is None or (a.parent_uid is not None and any(a.parent_uid)) \
                or any(w.anchor is not None and w.anchor.parent_uid == a.uid for w in self.vdis):
            return None
        # (through what evidence placed: a weak placement on an older VHD's remnant would
        # only make the reading fail where nothing says which LE is wrong)
        hypo = {le: replace(pl, confidence=1.0) for le, pl in v.placed.items()
                if le == 0 or not pl.weak}
        fs, missing = self._open_through(v, hypo)
        # once per question (the search over the extents is not repeated while the
        # placements it starts from are the same)
        asked = (frozenset((le, pl.pe) for le, pl in hypo.items()), missing)
        if not hasattr(self, "_probed"):
            self._probed: dict[int, tuple] = {}
            self._probe_crowded: set[tuple[int, int, int]] = set()
        if fs is not None or missing is None or self._probed.get(v.index) == asked:
            return None
        self._probed[v.index] = asked
        probe: list[int] = []
        # every extent holding data, whoever holds it now: an alike disk's extent opens an
        # alike file system as well (NTFS records are numbered by place, not by volume), so
        # only one that opens among all of them is taken, the true one held by another VDI
        # included (seed reused-23)
        pool = np.setdiff1d(np.flatnonzero(self.f.has_data), np.array(
            [pl.pe for pl in hypo.values()], np.int64))
        for _ in range(GUEST_PROBE_STEPS):
            if fs is not None or missing is None or missing in hypo \
                    or missing not in v.pred.slots or not len(pool):
                break
            # (which extents fit the LE hardly depends on the board, only on the scorer's
            # weights: too many once, too many until they change, and a large SR of alike
            # guest-less VDIs is not searched again round after round)
            crowded = (v.index, missing, self.scorer.generation)
            if crowded in self._probe_crowded:
                return None
            found = self.search_candidates([(v, missing)], pool).get((v.index, missing), [])
            if len(found) > GUEST_PROBE_CANDIDATES:
                self._probe_crowded.add(crowded)
            if not 0 < len(found) <= GUEST_PROBE_CANDIDATES:
                return None
            opened, onward = [], []
            for q in found:
                trial = dict(hypo)
                trial[missing] = Placement(int(q), 1.0, "probe")
                got, then = self._open_through(v, trial)
                if got is not None:
                    opened.append((int(q), got, None))
                elif then is not None and then != missing and then not in trial:
                    onward.append((int(q), None, then))
            # several open it (alike disks: NTFS records are numbered by place, not by
            # volume): not one another VDI holds by evidence and reads its own guest through
            # (its file system's extent, label-gone seed 22), if that leaves one whose file
            # system is none of theirs (an ext4 snapshot's backup superblock in its parent's
            # extent opens the parent's file system again: snapshots seed 26)
            if len(opened) > 1:
                held = [self._read_by_another(v, o[0]) for o in opened]
                mine = [o for o, ident in zip(opened, held) if ident is None]
                if len(mine) == 1 and mine[0][1].identity is not None \
                        and mine[0][1].identity not in held:
                    opened = mine
            # the one extent that opens it; else the one that lets the reading go on (a
            # stranger's bytes there most often end it: zeros, or no structure at all)
            ok = opened if opened else onward
            if len(ok) != 1:
                return None
            q, fs, missing_next = ok[0]
            hypo[missing] = Placement(q, 1.0, "probe")
            probe.append(missing)
            pool = pool[pool != q]
            missing = missing_next
        return self._verified(v, key, fs, hypo, probe)

    def _read_by_another(self, v: VdiState, q: int) -> bytes | None:
        """The identity of the guest file system (GuestFs.identity) of another VDI that holds
        `q` by evidence (SURE or more) and reads that file system through its placements;
        None if there is none (or it has no identity)."""
        holder = int(self.owner[q])
        if holder < 0 or holder == v.index:
            return None
        w = self.vdis[holder]
        fs = self.guest_of(w)
        if fs is None or not any(pl.pe == q and pl.confidence >= SURE
                                 for pl in w.placed.values()):
            return None
        return fs.identity

    def _open_through(self, v: VdiState, placed: dict) -> tuple[GuestFs | None, int | None]:
        """The guest file system read through `placed` (v's LEs as given, whatever their
        confidence), and the first LE it needed that `placed` does not hold (None if none)."""
        h = copy.copy(v)
        h.placed = placed
        self._missing_le = None
        fs = open_guest(lambda off, n: self.read_virtual(h, off, n), int(v.anchor.current_size))
        missing, self._missing_le = self._missing_le, None
        return fs, missing

    def _chain(self, v: VdiState) -> list[VdiState]:
        out, x = [], v
        while x is not None and len(out) < 32 and x not in out:
            out.append(x)
            x = self._parent_state(x)
        return out

    def guest_of(self, v: VdiState) -> GuestFs | None:
        g = getattr(self, "_guest", {}).get(v.index)
        return None if g is None else g[1]

    def _parent_state(self, v: VdiState) -> VdiState | None:
        uid = v.anchor.parent_uid
        if not uid or not any(uid):
            return None
        for w in self.vdis:
            if w.anchor is not None and w.anchor.uid == uid:
                return w
        return None

    def _sure_lv(self, v: VdiState, off: int, n: int) -> bytes | None:
        """LV bytes of v through its placements at or above the current floor (sure ones
        unless guest_refresh falls back), read by the solver's one LV path (read_lv); None
        where any LE the read touches is not placed so, or the evidence ends short."""
        if n <= 0:
            return b""
        floor = getattr(self, "_floor", SURE)
        for le in range(off // self.E, (off + n - 1) // self.E + 1):
            pl = v.placed.get(le)
            if pl is None or pl.confidence < floor:
                if getattr(self, "_missing_le", None) is None:
                    self._missing_le = le       # (the first a reading lacked: _open_through)
                return None
        data = self.read_lv(v, off, n)
        return data if len(data) == n else None

    def read_virtual(self, v: VdiState, off: int, n: int, depth: int = 0) -> bytes | None:
        """The virtual disk of v (its chain where the parent is being rebuilt too), through
        sure placements only; None where any byte is unknown. VHD semantics: a sector whose
        bitmap bit is clear reads as the parent's (differencing) or zero (dynamic)."""
        a = v.anchor
        size = int(a.current_size)
        if off < 0 or n < 0 or off + n > size or depth > 16:
            return None
        bs = a.block_size
        diff = a.parent_uid is not None and any(a.parent_uid)
        parent = self._parent_state(v) if diff else None
        out = bytearray(n)
        pos = off
        while pos < off + n:
            b, rel = divmod(pos, bs)
            take = min(off + n - pos, bs - rel)
            entry = int(a.bat[b]) if b < len(a.bat) else BAT_UNUSED
            if entry == BAT_UNUSED:
                if diff:
                    if parent is None:
                        return None
                    chunk = self.read_virtual(parent, pos, take, depth + 1)
                    if chunk is None:
                        return None
                    out[pos - off: pos - off + take] = chunk
                pos += take
                continue
            lv_off = entry * SECTOR
            bm = self._sure_lv(v, lv_off, SECTOR)
            data = self._sure_lv(v, lv_off + (a.block_span - bs) + rel, take)
            if bm is None or data is None:
                return None
            s0 = rel // SECTOR
            s1 = -(-(rel + take) // SECTOR)
            bits = np.unpackbits(np.frombuffer(bm, np.uint8))[s0:s1].astype(bool)
            if not bits.all():
                base = None
                if diff:
                    if parent is None:
                        return None
                    base = self.read_virtual(parent, s0 * SECTOR + b * bs,
                                             (s1 - s0) * SECTOR, depth + 1)
                    if base is None:
                        return None
                # the requested bytes in a sector-aligned buffer, masked per sector
                lead = rel - s0 * SECTOR
                full = np.zeros((s1 - s0) * SECTOR, np.uint8)
                full[lead: lead + take] = np.frombuffer(data, np.uint8)
                mask = np.repeat(bits, SECTOR)
                repl = np.zeros_like(full) if base is None else np.frombuffer(base, np.uint8)
                full = np.where(mask, full, repl)
                data = full[lead: lead + take].tobytes()
            out[pos - off: pos - off + take] = data
            pos += take
        return bytes(out)

    def guest_review(self) -> int:
        """Placements made while the guest's file system was still partly unread are judged
        again with the view of the end: one that another extent fits better by GUEST_TIES (the
        guest's structures and allocation say so) is taken back and both are named as the
        LE's candidates; the rounds that follow may place the better one. Returns how many
        were taken back."""
        self.guest_refresh()
        slots = []
        for v in self.vdis:
            if v.pred is None or v.metadata_map or self.guest_of(v) is None:
                continue
            for le, pl in v.placed.items():
                sl = v.pred.slots.get(le)
                if le > 0 and pl.source not in ("metadata", "manual") and sl is not None \
                        and len(sl.bitmap_offsets):
                    slots.append((v, le))
        if not slots:
            return 0
        # rivals: free extents, and extents placed by evidence other than metadata or by hand
        taken = [pl.pe for w in self.vdis for pl in w.placed.values()
                 if pl.source not in ("metadata", "manual")]
        pool = np.union1d(self.pending(), np.asarray(taken, dtype=np.int64))
        cands = self.search_all(slots, pool, REVIEW_SLOTS)
        back = 0
        for v, le in slots:
            pl = v.placed.get(le)
            if pl is None:
                continue
            own = self.guest_llr(v, le, pl.pe)
            rivals = [(self.guest_llr(v, le, q), q) for q in set(cands.get((v.index, le), []))
                      if q != pl.pe]
            best, q = max(rivals, default=(-np.inf, None))
            beaten = q is not None and best >= GUEST_TIES and best >= own + GUEST_TIES
            # content alone placed it (weak) and the guest's file system says it is not this
            # disk's: taken back even when no other extent fits the LE's bitmaps (the one
            # that does may hold bits the prediction did not expect)
            denied = pl.weak and own <= -GUEST_TIES
            if beaten or denied:
                del v.placed[le]
                if self.owner[pl.pe] == v.index:
                    self.owner[pl.pe] = FREE
                v.ambiguous[le] = sorted({pl.pe} | ({q} if beaten else set()))
                back += 1
        back += self.guest_claims(pool)
        if back:
            self._scores.clear()
        return back

    def guest_claims(self, pool: np.ndarray) -> int:
        """An open LE whose guest finds its own checksummed structures in one extent
        (evidence >= GUEST_CLAIM) and nowhere else takes it: a free extent is placed; one held
        by a VDI that cannot back its claim with its own guest (a stale head of an older VHD
        that the live VDI's data overwrote) is taken from it. Returns how many changed."""
        slots = []
        for v in self.vdis:
            if v.pred is None or v.metadata_map or self.guest_of(v) is None:
                continue
            for le, sl in v.pred.slots.items():
                if le > 0 and le not in v.placed and len(sl.bitmap_offsets):
                    slots.append((v, le))
        if not slots:
            return 0
        cands = self.search_all(slots, pool, REVIEW_SLOTS)
        changed = 0
        for v, le in slots:
            scored = sorted(((self.guest_llr(v, le, q), q)
                             for q in set(cands.get((v.index, le), []))), reverse=True)
            if not scored or scored[0][0] < GUEST_TIES:
                continue
            g, q = scored[0]
            if len(scored) > 1 and scored[1][0] > min(0.0, g - GUEST_CLAIM):
                continue            # another extent fits as well, or nearly: not decided here
            holder = int(self.owner[q])
            if holder >= 0 and holder != v.index:
                if g < GUEST_CLAIM:
                    continue        # taking an extent from another VDI needs its structures
                w = self.vdis[holder]
                wle = next((j for j, p in w.placed.items() if p.pe == q), None)
                if wle is None or w.placed[wle].source in ("metadata", "manual") \
                        or self._same_chain(v, w) \
                        or self.scorer.content(v.pred.slots[le], q, v.anchor.uid, self.f) < ACCEPT \
                        or (self.guest_of(w) is not None
                            and self.guest_llr(w, wle, q) >= GUEST_TIES):
                    continue        # the holder's claim stands on evidence of its own
                self._overrule(w, wle, q, v, le)
            elif holder != FREE:
                continue
            self.place(v, le, q, TIED, "vhd-match",
                       "the guest's file system finds its own structures here", weak=False)
            changed += 1
        return changed

    def _same_chain(self, v: VdiState, w: VdiState) -> bool:
        """Is one of v, w an ancestor of the other (they share the guest's structures)?"""
        for a, b in ((v, w), (w, v)):
            x, seen = a, 0
            while x is not None and seen < 32:
                if x is b:
                    return True
                x, seen = self._parent_state(x), seen + 1
        return False

    def _overrule(self, w: VdiState, wle: int, q: int, v: VdiState, le: int) -> None:
        """PE q holds v's bitmaps and v's own checksummed file-system structures where w's LE
        `wle` was read: v's data was written over w's, so w's reading of q is stale. When that
        was w's head (LE 0), w is an older VHD whose metadata survived in the sectors v's guest
        never wrote: all its placements go (nothing of it is this SR's any more)."""
        les = sorted(j for j, p in w.placed.items()
                     if p.source not in ("metadata", "manual")) if wle == 0 else [wle]
        for j in les:
            pl = w.placed.pop(j)
            if self.owner[pl.pe] == w.index:
                self.owner[pl.pe] = FREE
            w.ambiguous.pop(j, None)
        if wle == 0:
            w.ambiguous.clear()
            w.pred = None          # no longer rebuilt: every solver step skips it
        name = w.lv_name or w.anchor.uid_str
        self.findings.append(Finding(
            "placement-overruled", None, "info",
            f"{name} LE {wle}: PE {q} holds the bitmaps and the file system of "
            f"{v.lv_name or v.anchor.uid_str} (its own checksummed structures, LE {le}), written "
            f"over it; " + (f"{name} is an older VHD whose head survived in sectors the guest "
                            f"never wrote: LEs {les} are not placed" if wle == 0 else
                            "what was read there as this VHD's is stale"),
            {"le": wle, "pe": q, "les": les}))

    # -- evidence for one candidate ---------------------------------------------------------
    def guest_denies(self, w: VdiState, le: int, pe: int) -> bool:
        """Does w's own guest file system say `pe` is not its LE `le` (its allocation or its
        structures against, by GUEST_TIES)? Then w is no rival for that extent: two alike VDIs
        (same size, same sm layout) fit each other's extents by layout, never by their guests."""
        return self.guest_of(w) is not None and self.guest_llr(w, le, pe) <= -GUEST_TIES

    def no_rival(self, v: VdiState, w: VdiState, le: int, pe: int) -> bool:
        """Is w no rival of v for `pe` as LE `le`? w's own guest says no, or the data of
        w's placed LE le-1 does (continuity against, label-gone seed 1); or w is a possible
        stranger (an older VHD with no guest of its own, review.stranger) and v's guest finds
        its allocation or structures there (GUEST_TIES): v is a disk whose file system reads,
        and this extent is where its file system says its data is; or v's guest finds its own
        structures there and w's, read too, finds far less."""
        if self.guest_denies(w, le, pe):
            return True
        mine = self.guest_llr(v, le, pe)
        if self.stranger(w) and mine >= GUEST_TIES:
            return True
        if self.stranger(w) and not self._on_run_of(w, le, pe) and self.guest_checked(v, le, pe):
            # an older VHD with nothing of its own around `pe` (no head, no extent at the
            # distance its LE numbers need), against v whose guest finds its writes there
            return True
        if self.stranger(w) and not self._on_run_of(w, le, pe) and mine > -GUEST_TIES \
                and 0 in w.placed and w.placed[0].pe + le != pe \
                and w.placed[0].pe + le < self.N \
                and (self.owner[w.placed[0].pe + le] == FREE or self._on_own_run(v, le, pe)) \
                and self.run_from_head_fits(w, le, w.placed[0].pe, held_pass=True):
            # an older VHD whose run from its head is still there up to LE `le` (what no
            # later LV took fits its LEs; its LE `le` free, where lvcreate put it, or taken
            # by a later LV while v's own run reaches `pe`): `pe`, away from that run, is not
            # its LE `le` (resized seed 29)
            return True
        if self.stranger(w) and mine > -GUEST_TIES and not self._on_run_of(w, le, pe) \
                and self._on_own_run(v, le, pe) and self._alone_fits(v, le, pe):
            # an older VHD with nothing of its own around `pe` and no guest, against a live
            # disk whose evidence-placed run reaches `pe` at its LE's distance, and no free
            # extent fitting that LE as well: where else the live LE would be, no free
            # extent says (resized seeds 4, 23 and 28)
            return True
        if mine > -GUEST_TIES and self._on_own_run(v, le, pe) \
                and (w.anchor is None or w.anchor.pe != pe - le) \
                and self._own_run_extent(w, le, pe) is not None:
            # each on its own run: v's evidence-placed LE at pe's distance, and w's LE `le`
            # where its own placed LEs put it, free and fitting there (two LVs extended in
            # turns, each LE fitting both by layout: resized seed 17)
            return True
        # both guests read (two alike disks, or a parent and its child whose bitmaps sit at
        # the same places): v's finds its own structures there (GUEST_CLAIM), w's far less
        if self.guest_of(w) is not None and mine >= GUEST_CLAIM \
                and self.guest_llr(w, le, pe) <= mine - GUEST_CLAIM:
            return True
        return self._continuity_against(w, le, pe)

    def _continuity_against(self, w: VdiState, le: int, pe: int) -> bool:
        """Does the block of w's LE le-1, placed, not go on into `pe` (its data continuity,
        informative, says no, with data there)? Asked once per neighbour and scorer
        generation (the review asks again and again)."""
        nb = w.placed.get(le - 1)
        prev = None if w.pred is None or nb is None else w.pred.slots.get(le - 1)
        if prev is None or prev.straddle_out is None:
            return False        # no block of w goes on from a placed neighbour into `pe`
        left = nb.pe
        if not hasattr(self, "_against"):
            self._against: dict[tuple, bool] = {}
        key = (w.index, le, pe, left, self.scorer.generation)
        hit = self._against.get(key)
        if hit is None:
            if len(self._against) > 1 << 16:
                self._against.clear()
            cont, informative, empty, _ = self._left_continuity([(w, le, pe, left, None)],
                                                                [w.pred.slots.get(le)])
            # (not where the spill reads all zeros: a guest writes zeros too, resized seed
            # 43's true extent reads so)
            hit = self._against[key] = bool(informative[0] and not empty[0]
                                            and cont[0] <= -TIED_CONTINUITY)
        return hit

    @staticmethod
    def _nearest_placed(v: VdiState, le: int) -> list[tuple[int, Placement]]:
        """v's nearest placed LE below `le` and above it (within NEAREST_REACH LEs): the run
        `le` would lie on. (Not every placed LE: the review asks this for every rival of
        every contested placement, and a large SR has many.)"""
        out = []
        if not v.placed:
            return out
        lo, hi = min(v.placed), max(v.placed)
        for j in range(le - 1, max(lo, le - NEAREST_REACH) - 1, -1):
            if j in v.placed:
                out.append((j, v.placed[j]))
                break
        for j in range(le + 1, min(hi, le + NEAREST_REACH) + 1):
            if j in v.placed:
                out.append((j, v.placed[j]))
                break
        return out

    def _on_own_run(self, v: VdiState, le: int, pe: int) -> bool:
        """Is `pe` at LE `le`'s distance from v's nearest LE below or above it, placed by
        evidence (SURE or more, or its head)?"""
        return any(p.pe - j == pe - le and (j == 0 or p.confidence >= SURE)
                   for j, p in self._nearest_placed(v, le))

    def _own_run_extent(self, w: VdiState, le: int, pe: int) -> int | None:
        """A free extent other than `pe` (or w's own already) at LE `le`'s distance from w's
        nearest placed LE below or above it, whose content fits w's LE `le`: where w's own
        run puts that LE (its content the evidence; the run, placed by walks as often, only
        says where). None too where `pe` itself lies on that run."""
        slot = None if w.pred is None else w.pred.slots.get(le)
        if slot is None:
            return None
        near = self._nearest_placed(w, le)
        if any(p.pe - j == pe - le for j, p in near):
            return None
        for j, p in near:
            q = p.pe + le - j
            if q == pe or not 0 <= q < self.N or self.owner[q] not in (FREE, w.index):
                continue
            if self.scorer.content(slot, q, w.anchor.uid, self.f) >= ACCEPT:
                return q
        return None

    def _alone_fits(self, v: VdiState, le: int, pe: int) -> bool:
        """Is v's LE `le` placed on `pe` with no free extent found fitting it as well (no
        twins, none left unlooked for), and is v a live disk (named by the SR or its guest
        read, no stranger)?"""
        pl = v.placed.get(le)
        return pl is not None and pl.pe == pe and not pl.twins and not pl.twins_open \
            and not self.stranger(v) and (v.lv_name is not None or self.guest_of(v) is not None)

    @staticmethod
    def _on_run_of(w: VdiState, le: int, pe: int) -> bool:
        """Could `pe` be LE `le` of w on a run of w's own: w's head, or any of its placed
        extents, at the distance their LE numbers need?"""
        start = pe - le
        if w.anchor is not None and w.anchor.pe == start:
            return True
        return any(p.pe - j == start for j, p in w.placed.items())

    def guest_checked(self, v: VdiState, le: int, pe: int) -> bool:
        """Was a placement checked against its guest's file system and found consistent? The
        guest says where it wrote content in the LE's blocks (CONTENT_MIN sectors at least, a
        stranger's bitmaps would leave much of it unwritten) and nothing counts against."""
        fs = self.guest_of(v)
        if fs is None or v.anchor.parent_uid is not None and any(v.anchor.parent_uid):
            return False
        if self.guest_llr(v, le, pe) < 0:
            return False
        a, E = v.anchor, self.E
        gap = a.block_span - a.block_size
        lo, hi = le * E, (le + 1) * E
        offs = a.bitmap_offsets
        for i in np.nonzero((offs >= lo) & (offs < hi))[0]:
            d0 = int(offs[i]) + gap
            s1 = (min(d0 + a.block_size, hi) - d0) // SECTOR
            if s1 <= 0:
                continue
            c = fs.content_state(int(a.blocks[i]) * a.block_size, s1 * SECTOR)
            if int((c == 1).sum()) >= CONTENT_MIN:
                return True
        return False

    def _data_share(self, start: int, sectors: np.ndarray) -> float:
        """Share of the sectors (indices from absolute offset `start`) that are not all zero,
        from at most SHARE_SAMPLES of them spread evenly."""
        if not len(sectors):
            return 1.0
        pick = sectors[np.linspace(0, len(sectors) - 1, min(SHARE_SAMPLES, len(sectors)))
                       .astype(np.int64)]
        data = self.reader.gather(start + pick.astype(np.int64) * SECTOR, SECTOR)
        return float(data.any(axis=1).mean())

    def add_guest(self, s, v: VdiState, le: int, pe: int) -> None:
        """Add the guest's evidence to a Score: like continuity, it ties an extent to one VDI
        (or off it) once it is decisive."""
        g = self.guest_llr(v, le, pe)
        if g:
            s.continuity += g
            s.guest = g
            if abs(g) >= GUEST_TIES:
                s.informative = True

    def guest_llr(self, v: VdiState, le: int, pe: int) -> float:
        """Evidence from v's guest file system for LE `le` of v on `pe` (0: nothing known)."""
        fs = self.guest_of(v)
        if fs is None:
            return 0.0
        a = v.anchor
        bs, E = a.block_size, self.E
        gap = a.block_span - bs
        lo, hi = le * E, (le + 1) * E
        offs = a.bitmap_offsets
        if not len(offs):
            return 0.0
        data_lo = offs + gap
        data_hi = data_lo + bs
        sel = np.nonzero((data_lo < hi) & (data_hi > lo))[0]
        base = self.D + pe * E
        total, marks = 0.0, 0.0
        diff = a.parent_uid is not None and any(a.parent_uid)
        for i in sel:
            bo = int(offs[i])
            vb = int(a.blocks[i])
            a0, a1 = max(int(data_lo[i]), lo), min(int(data_hi[i]), hi)
            s0, s1 = (a0 - int(data_lo[i])) // SECTOR, (a1 - int(data_lo[i])) // SECTOR
            if s1 <= s0:
                continue
            own_bitmap = lo <= bo < hi
            if own_bitmap:
                bm = self.reader.space.read(base + bo - lo, SECTOR)
            else:
                nb = v.placed.get(bo // E)
                if nb is None:
                    continue
                bm = self.reader.space.read(self.D + nb.pe * E + bo % E, SECTOR)
            if len(bm) != SECTOR:
                continue
            bits = np.unpackbits(np.frombuffer(bm, np.uint8))[s0:s1].astype(bool)
            vstart = vb * bs + s0 * SECTOR
            if own_bitmap:
                alloc = fs.allocation(vstart, (s1 - s0) * SECTOR)
                if alloc is not None and len(alloc) == len(bits):
                    alloc = np.asarray(alloc, dtype=bool)
                    total += _allocation_llr(bits, alloc, self._data_share(
                        base + a0 - lo, np.flatnonzero(bits & ~alloc)))
                if not diff:
                    content = fs.content_state(vstart, (s1 - s0) * SECTOR)
                    if len(content) == len(bits):
                        total += _content_llr(bits, content)
            for lm in fs.landmarks(vstart, (s1 - s0) * SECTOR) \
                    + fs.file_tails(vstart, (s1 - s0) * SECTOR):
                r0 = (lm.offset - vstart) // SECTOR
                r1 = -(-(lm.offset + lm.size - vstart) // SECTOR)
                if r0 < 0 or r1 > len(bits) or not bits[r0:r1].all():
                    continue        # not written in this VHD: the structure is elsewhere
                got = self.reader.space.read(base + a0 - lo + (lm.offset - vstart), lm.size)
                found, wrong = LANDMARK_WEIGHTS.get(lm.what, (LANDMARK_FOUND, LANDMARK_WRONG))
                marks += found if lm.check(got) else wrong
        return total + float(np.clip(marks, -LANDMARK_CAP, LANDMARK_CAP))


def _content_llr(written: np.ndarray, content: np.ndarray) -> float:
    """A block of a VHD with no parent against where its guest's file system says something
    was written (core.guestfs content_state: 1 content, 0 none, -1 unknown): most of the
    content left unwritten means another disk's bitmap (a file's all-zero pages are never
    written, so some is expected)."""
    c = content == 1
    nc = int(c.sum())
    if nc < CONTENT_MIN:
        return 0.0
    missing = int((c & ~written).sum())
    return GUEST_CONFLICT if missing * 2 > nc else 0.0


def _allocation_llr(written: np.ndarray, allocated: np.ndarray, data_share: float = 1.0
                    ) -> float:
    """A block's written sectors against what the guest's file system holds there.
    `data_share`: the share of the written-but-free sectors that hold data (a guest writes
    zeros to free space: a wipe, a discard emulated by writing zeros; those say nothing)."""
    nw = int(written.sum())
    if nw == 0:
        return 0.0
    wrong = int(round(int((written & ~allocated).sum()) * data_share))
    if wrong >= max(CONFLICT_MIN, nw // 20):
        return GUEST_CONFLICT
    free_share = float((~allocated).mean())
    if wrong == 0 and nw * free_share >= AGREE_EXPECTED:
        return GUEST_AGREE
    return 0.0
