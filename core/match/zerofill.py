"""Do a VDI's allocated blocks read zero where the guest never wrote? Measured, never assumed.

tapdisk zero-fills a block when it allocates it only where it pre-allocates, and it does not on
LVM SRs (xapi-project/blktap drivers/block-vhd.c `_vhd_open`: "pre-allocate for all but NFS and
LVM storage" sets VHD_FLAG_OPEN_PREALLOCATE; without it `schedule_data_write` -> `update_bat` ->
`schedule_zero_bm_write` zeroes the alignment gap and the bitmap sector only). libvhd's own
`vhd_io_write` (used by `vhd-util coalesce`) does zero-fill. So on one SR some VDIs' blocks read
zero where unwritten and others hold whatever the extent held before.

The measurement looks at blocks whose every extent is already placed with certainty
(metadata, the technician, or bitmaps that fit, with zeros not yet trusted): its bitmap says
which sectors the guest never wrote, and those are read. A VDI whose measured blocks all read zero where
unwritten (at least MIN_BLOCKS of them) gets weight 1 and the continuity evidence that rests on
zeros (core.match.score.continuity_llr) counts for it; any stale byte seen, or too little
measured, gives weight 0: zeros then say nothing. Stale bytes seen in ANY VDI give every VDI
weight 0: what a tapdisk block on LVM shows where the guest never wrote is what the extent held
before, and a few clean blocks may only have sat on extents that held zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.match.features import SECTOR, SectorReader, bitmap_likeness
from core.match.score import sample_sectors

MIN_BLOCKS = 2            # blocks measured before zeros are trusted for a VDI on its own
MIN_IMAGE_BLOCKS = 6      # ... or for a VDI with fewer, over the whole image (none stale)
MAX_BLOCKS = 24           # enough to see a mix of zero-filled and stale blocks
SAMPLES = 8               # unwritten sectors read per block
TRUSTED = 0.75            # placements this sure (or from metadata / by hand) may be measured


@dataclass
class ZeroFill:
    """What was measured for one VDI."""

    blocks: int = 0       # partly written blocks measured
    stale: int = 0        # of them, blocks with data in some unwritten sector

    image_clean: bool = False   # the whole image measured clean (MIN_IMAGE_BLOCKS, none stale)
    image_stale: bool = False   # some VDI of the image showed stale bytes

    @property
    def weight(self) -> float:
        """How far unwritten sectors may be taken to read zero (0 or 1): the VDI's own
        measurement, or where it measured too few blocks (none stale), the image's."""
        if self.stale or self.image_stale:
            # stale bytes anywhere: the extents had a previous life, and a clean measurement
            # may only say that the measured extents held zeros before (a tapdisk block on LVM
            # keeps what was there, zeros or not): zeros then say nothing for any VDI
            return 0.0
        return 1.0 if self.blocks >= MIN_BLOCKS or self.image_clean else 0.0

    def to_json(self) -> dict:
        return {"blocks_measured": self.blocks, "stale_blocks": self.stale,
                "zeros_trusted": bool(self.weight)}


def pool(measured: dict) -> None:
    """Tell every measurement whether the image as a whole measured clean."""
    blocks = sum(z.blocks for z in measured.values())
    stale = any(z.stale for z in measured.values())
    clean = blocks >= MIN_IMAGE_BLOCKS and not stale
    for z in measured.values():
        z.image_clean = clean
        z.image_stale = stale


def trusted(placement) -> bool:
    return placement.source in ("metadata", "manual") or (
        placement.source == "vhd-match" and placement.confidence >= TRUSTED)


def measure(reader: SectorReader, data_offset: int, extent_bytes: int, v) -> ZeroFill:
    """Measure VDI `v` (a VdiState with an anchor and a prediction) over its trusted extents."""
    out = ZeroFill()
    a, pred = v.anchor, v.pred
    if a is None or pred is None:
        return out
    nbits = a.block_size // SECTOR
    bm_bytes = a.block_span - a.block_size
    E = extent_bytes
    sure = {le: pl.pe for le, pl in v.placed.items() if trusted(pl)}
    cand: list[tuple[int, int]] = []           # (LV offset of the bitmap, absolute offset)
    for off in a.bitmap_offsets:
        off = int(off)
        first, last = off // E, (off + a.block_span - 1) // E
        if bm_bytes == SECTOR and all(le in sure for le in range(first, last + 1)):
            cand.append((off, data_offset + sure[first] * E + off % E))
        if len(cand) >= 4 * MAX_BLOCKS:
            break
    if not cand:
        return out
    bms = reader.gather(np.array([c[1] for c in cand], dtype=np.int64), SECTOR)
    like = bitmap_likeness(bms)
    offs, labels = [], []
    for k, ((lv_off, _), row) in enumerate(zip(cand, bms)):
        if like[k] < 0.95:
            continue
        bits = np.unpackbits(row)[:nbits].astype(bool)
        if bits.all() or not bits.any():
            continue                # nothing unwritten to look at (or no bitmap at all)
        idx = sample_sectors(~bits, per_class=SAMPLES)
        idx = idx[~bits[idx]]
        lv = lv_off + bm_bytes + SECTOR * idx.astype(np.int64)
        les = lv // E
        offs.append(data_offset + np.array([sure[int(j)] for j in les], dtype=np.int64) * E
                    + lv % E)
        labels.append(np.full(len(idx), len(labels)))
        if len(labels) >= MAX_BLOCKS:
            break
    if not labels:
        return out
    data = reader.gather(np.concatenate(offs), SECTOR)
    stale = np.bincount(np.concatenate(labels), weights=data.any(axis=1), minlength=len(labels))
    out.blocks = len(labels)
    out.stale = int((stale > 0).sum())
    return out
