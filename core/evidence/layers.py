"""Unreadable disk ranges carried up the layers: disk -> PV -> LV -> VHD -> virtual disk.

A disk range nobody could read (bad sectors, an EWF chunk failing its checksum, an area a
ddrescue mapfile does not mark finished) reads as zeros. What those zeros stand for in an LV,
and in the virtual disk a VHD in that LV presents, is computed here from the same run lists and
VHD tables the readers use (core.spaces.RunList, core.vhd.reader.VirtualDisk), so exports,
the hex view and the JSON documents all name the same bytes.

In a dynamic/differencing VHD: an unreadable bitmap or BAT entry makes its whole block
unknown; unreadable data bytes are reported at their virtual offsets where the bitmap says the
sector is present (a clear bit reads from the parent or as zeros: the bytes there do not
matter); a parent's unreadable bytes count where the child does not hold the sector.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

Ranges = list[tuple[int, int]]


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, merged, non-empty [start, end) ranges."""
    out: Ranges = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _clip(ranges: Ranges, start: int, end: int) -> Ranges:
    return [(max(a, start), min(b, end)) for a, b in ranges if a < end and b > start]


def unreadable_in(space, disk_ranges: Ranges | None = None) -> Ranges:
    """The [start, end) ranges of `space` whose bytes come from unreadable evidence.

    `space` is the evidence itself, a RunList (partition, LV) over it, or a VHD virtual disk;
    disk_ranges defaults to the evidence's own `unreadable`.
    """
    if disk_ranges is None:
        disk_ranges = _evidence_ranges(space)
    if not disk_ranges:
        return []
    return merge(_ranges(space, merge(disk_ranges)))


def _evidence_ranges(space) -> Ranges:
    seen = 0
    while space is not None and seen < 64:
        if hasattr(space, "unreadable") and hasattr(space, "windows"):
            return list(space.unreadable)
        space = getattr(space, "base", None) or getattr(getattr(space, "img", None), "space", None)
        seen += 1
    return []


def _ranges(space, disk: Ranges) -> Ranges:
    from core.spaces import RunList
    from core.vhd.reader import VirtualDisk

    if isinstance(space, RunList):
        return _runlist(space, _ranges(space.base, disk))
    if isinstance(space, VirtualDisk):
        return _virtual(space, disk)
    if hasattr(space, "unreadable") and hasattr(space, "windows"):  # the evidence itself
        return _clip(disk, 0, space.size)
    return []  # an in-memory space: nothing under it can be unreadable


def _runlist(space, base: Ranges) -> Ranges:
    """Base-space ranges to this space's offsets through its runs."""
    if not base:
        return []
    out: Ranges = []
    starts = [a for a, _ in base]
    import bisect
    for run in space.runs:
        if run.target is None:
            continue
        lo, hi = run.target, run.target + run.length
        i = max(0, bisect.bisect_right(starts, lo) - 1)
        while i < len(base) and base[i][0] < hi:
            a, b = base[i]
            if b > lo:
                out.append((run.start + max(a, lo) - lo, run.start + min(b, hi) - lo))
            i += 1
    return out


def _true_runs(bits: np.ndarray) -> list[tuple[int, int]]:
    """[i, j) index runs where `bits` is True."""
    if not len(bits):
        return []
    padded = np.concatenate(([False], bits.astype(bool), [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(edges[k]), int(edges[k + 1])) for k in range(0, len(edges), 2)]


def _present(vd, block: int, bm_off: int, v0: int, v1: int, want_present: bool) -> Ranges:
    """Parts of virtual [v0, v1) inside `block` whose sectors the child holds (or does not)."""
    img = vd.img
    if img.batmap_valid and block < len(img.batmap) and img.batmap[block]:
        return [(v0, v1)] if want_present else []
    bits = vd._sector_bits(block, bm_off)
    base = block * vd.block_size
    s0, s1 = (v0 - base) // 512, -(-(v1 - base) // 512)
    sel = bits[s0:s1] if want_present else ~bits[s0:s1]
    return _clip([(base + (s0 + i) * 512, base + (s0 + j) * 512) for i, j in _true_runs(sel)],
                 v0, v1)


def _virtual(vd, disk: Ranges) -> Ranges:
    img = vd.img
    lv = merge(_ranges(img.space, disk))
    out: Ranges = []
    if vd.fixed:
        out += _clip(lv, 0, vd.size)
    elif lv:
        bs, bmb = vd.block_size, img.bitmap_bytes
        nblocks = len(img.bat)
        # the BAT: an unreadable entry leaves its block unknown
        if img.header is not None and nblocks:
            table = int(img.header.table_offset)
            for a, b in _clip(lv, table, table + 4 * nblocks):
                for blk in range((a - table) // 4, min(nblocks, -(-(b - table) // 4))):
                    out.append((blk * bs, min(vd.size, (blk + 1) * bs)))
        used = np.flatnonzero(img.bat != 0xFFFFFFFF)
        if len(used):
            offs = img.bat[used].astype(np.int64) * 512
            order = np.argsort(offs)
            used, offs = used[order], offs[order]
            ends = offs + bmb + bs
            for a, b in lv:
                lo = int(np.searchsorted(ends, a, side="right"))
                hi = int(np.searchsorted(offs, b, side="left"))
                for k in range(lo, hi):
                    blk, bm_off = int(used[k]), int(offs[k])
                    vbase = blk * bs
                    if a < bm_off + bmb and b > bm_off:  # the bitmap itself
                        out.append((vbase, min(vd.size, vbase + bs)))
                        continue
                    d0 = max(a, bm_off + bmb) - (bm_off + bmb)
                    d1 = min(b, bm_off + bmb + bs) - (bm_off + bmb)
                    if d1 > d0:
                        out += _present(vd, blk, bm_off, vbase + d0, min(vd.size, vbase + d1),
                                        True)
    if vd.parent is not None:
        for a, b in _ranges(vd.parent, disk):
            out += _not_in_child(vd, a, min(b, vd.size))
    return _clip(merge(out), 0, vd.size)


def _not_in_child(vd, a: int, b: int) -> Ranges:
    """Parts of virtual [a, b) the child does not hold (they read from the parent)."""
    out: Ranges = []
    bs = vd.block_size
    pos = a
    while pos < b:
        blk = pos // bs
        stop = min(b, (blk + 1) * bs)
        bm_off = vd.img.block_bitmap_offset(blk)
        if bm_off is None:
            out.append((pos, stop))
        else:
            out += _present(vd, blk, bm_off, pos, stop, False)
        pos = stop
    return out


def unreadable_findings(ev) -> list:
    """One warning finding when the evidence has unreadable ranges (reconstruction's entry
    guard): zeros nobody read are no evidence of a free extent or a clear bitmap."""
    from core.findings import Finding

    bad = list(getattr(ev, "unreadable", []) or [])
    if not bad:
        return []
    total = sum(b - a for a, b in bad)
    return [Finding("evidence-unreadable", bad[0][0], "warning",
                    f"{len(bad)} unreadable range(s), {total} bytes, read as zeros: extents there "
                    f"are not evidence of free space or of clear bitmaps; placements on them "
                    f"must be checked by hand", {"ranges": [list(r) for r in bad]}, space="disk")]
