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

import numpy as np

from core.guestfs import GuestFs, open_guest
from core.match.board import SURE, VdiState
from core.match.features import SECTOR

BAT_UNUSED = 0xFFFFFFFF
GUEST_CONFLICT = -6.0       # written where the guest's file system says free
GUEST_AGREE = 3.0           # written only where it holds data, a stranger would have missed
AGREE_EXPECTED = 8.0        # ... by this many sectors at least (expected misses of a stranger)
CONFLICT_MIN = 8            # sectors written into free space before it counts (and 5 %)
LANDMARK_FOUND, LANDMARK_WRONG = 4.0, -6.0
LANDMARK_CAP = 12.0
GUEST_TIES = 2.0            # |evidence| from which it ties an extent to (or off) a VDI


class GuestMixin:
    """Solver steps (mixed into core.match.assign.Solver; state lives there)."""

    # -- the guest's file system, read through sure placements -----------------------------------
    def guest_refresh(self) -> bool:
        """(Re)read every VDI's guest file system where its sure placements changed; True when
        some VDI's guest view changed (its scores must be recomputed)."""
        if not hasattr(self, "_guest"):
            self._guest: dict[int, tuple[frozenset, GuestFs | None]] = {}
        changed = False
        for v in self.vdis:
            if v.anchor is None or v.pred is None or v.metadata_map:
                continue
            sure = frozenset((le, pl.pe) for le, pl in v.placed.items()
                             if pl.confidence >= SURE)
            old = self._guest.get(v.index)
            if old is not None and old[0] == sure:
                continue
            fs = open_guest(lambda off, n, v=v: self.read_virtual(v, off, n),
                            int(v.anchor.current_size))
            self._guest[v.index] = (sure, fs)
            if fs is not None or (old is not None and old[1] is not None):
                changed = True      # scores memoised with the old view are stale
        if changed:
            self._scores.clear()
        return changed

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
        """LV bytes of v through its sure placements; None where any is not placed surely."""
        out = bytearray()
        while n > 0:
            le, rel = divmod(off, self.E)
            take = min(n, self.E - rel)
            pl = v.placed.get(le)
            if pl is None or pl.confidence < SURE:
                return None
            data = self.reader.space.read(self.D + pl.pe * self.E + rel, take)
            if len(data) != take:
                return None
            out += data
            off += take
            n -= take
        return bytes(out)

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

    # -- evidence for one candidate ---------------------------------------------------------
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
                    total += _allocation_llr(bits, np.asarray(alloc, dtype=bool))
            for lm in fs.landmarks(vstart, (s1 - s0) * SECTOR):
                r0 = (lm.offset - vstart) // SECTOR
                r1 = -(-(lm.offset + lm.size - vstart) // SECTOR)
                if r0 < 0 or r1 > len(bits) or not bits[r0:r1].all():
                    continue        # not written in this VHD: the structure is elsewhere
                got = self.reader.space.read(base + a0 - lo + (lm.offset - vstart), lm.size)
                marks += LANDMARK_FOUND if lm.check(got) else LANDMARK_WRONG
        return total + float(np.clip(marks, -LANDMARK_CAP, LANDMARK_CAP))


def _allocation_llr(written: np.ndarray, allocated: np.ndarray) -> float:
    """A block's written sectors against what the guest's file system holds there."""
    nw = int(written.sum())
    if nw == 0:
        return 0.0
    wrong = int((written & ~allocated).sum())
    if wrong >= max(CONFLICT_MIN, nw // 20):
        return GUEST_CONFLICT
    free_share = float((~allocated).mean())
    if wrong == 0 and nw * free_share >= AGREE_EXPECTED:
        return GUEST_AGREE
    return 0.0
