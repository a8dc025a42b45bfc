"""Predictions: what each logical extent of an anchored VHD LV must look like.

From the BAT, every allocated block's bitmap sits at a known LV offset, so for each LE we know at
which offsets inside the extent a bitmap sector must start (and whether the batmap says that
block is full, i.e. the bitmap is all ones), and which block crosses into the next extent (a
block is 2 MiB + 512 B, an extent 4 MiB: blocks straddle extents). Where the VHD's own footer
must be is known for packed (qemu) layouts (right after the last block); an LVHD footer is in
the LV's last 512 bytes, whose LE is only known once that extent is found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.match.anchors import VhdAnchor
from core.structs import vhd as S
from core.structs.lvhd import (LVHD_BLOCK_STRIDE_BYTES, LVHD_EXTENT_BYTES, LVHD_FIRST_BITMAP_BYTES,
                               lvhd_inflated_bytes)
from core.structs.vhd import VHD_BLOCK_BYTES

SECTOR = 512


@dataclass
class Straddle:
    """A block whose bitmap is in LE `le` and whose data continues into LE `le + 1`."""

    bitmap_offset: int        # inside LE `le`
    first_sector: int         # index (in the block) of the first data sector in LE le+1
    sectors: int              # data sectors of this block that lie in LE le+1 (from offset 0)


@dataclass
class SlotPrediction:
    """What LE `le` of a VHD LV must hold."""

    le: int
    bitmap_offsets: np.ndarray          # in-extent byte offsets of bitmap sectors (int64)
    full: np.ndarray                    # int8 per bitmap: 1 batmap says full, 0 not full, -1 ?
    straddle_out: Straddle | None = None
    spill_in: bool = False              # data of the previous LE's last block continues here
    le1_batmap: bool = False            # the `tdbatmap` header sits at +1536 of this extent
    # with le1_batmap: bool per block, allocated in the BAT (a batmap bit may only be set there)
    batmap_allowed: np.ndarray | None = None
    bat_tail: bool = False              # the extent starts with the rest of the BAT
    footer_offset: int | None = None    # a footer with the VHD's unique id at this in-extent offset
    lv_end_possible: bool = False       # LVHD: the LV may end here (its footer in the last sector)
    # where the next blocks' bitmaps would be, past the VHD's data (its last data LE): a bitmap
    # there belongs to a VHD with more blocks, e.g. another VDI's extent at the same LE
    absent_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # the LV can only end here (sm's inflated size ends here too, or the layout is not sm's):
    # then the VHD's own footer in the last sector says "this is that LE"
    lv_end_certain: bool = True
    # the block whose data covers this extent's last sector: (index into bitmap_offsets, that
    # sector's bit in its bitmap); None where no block of the VHD covers it
    tail_cover: tuple[int, int] | None = None

    @property
    def footer_bonus(self) -> bool:
        """Does our own footer in this extent's last sector support it as this LE? Yes where
        the LV may end here and either bitmaps tie the extent to this LE or no longer LV
        (sm's inflated size) could end in that footer instead."""
        return self.lv_end_possible and (bool(len(self.bitmap_offsets)) or self.lv_end_certain)

    @property
    def has_content(self) -> bool:
        return bool(len(self.bitmap_offsets)) or self.spill_in or self.le1_batmap or \
            self.footer_offset is not None

    @property
    def searchable(self) -> bool:
        """Something in it can be looked for in every PE (not only continuity)."""
        return bool(len(self.bitmap_offsets)) or self.le1_batmap or \
            self.footer_offset is not None or self.lv_end_possible


@dataclass
class VhdPrediction:
    anchor: VhdAnchor
    extent_bytes: int
    slots: dict[int, SlotPrediction] = field(default_factory=dict)
    last_data_le: int = 0
    footer_le: int | None = None        # known for packed layouts; None: at the (unknown) LV end

    @property
    def data_les(self) -> list[int]:
        return sorted(j for j, s in self.slots.items() if s.has_content)


def sm_inflated_bytes(anchor: VhdAnchor, extent_bytes: int) -> int | None:
    """The LV size sm gives an inflated (thick) VHD LV, before rounding up to the extent
    (lvhdutil.calcSizeVHDLV, formats.md 3.1: metadata overhead + virtual size + 4 KiB per
    virtual block); None where the layout is not sm's (2 MiB blocks, 4 MiB extents)."""
    if anchor.block_size != VHD_BLOCK_BYTES or extent_bytes != LVHD_EXTENT_BYTES:
        return None
    return lvhd_inflated_bytes(anchor.current_size)


def predict(anchor: VhdAnchor, extent_bytes: int) -> VhdPrediction:
    E = extent_bytes
    pred = VhdPrediction(anchor, E)
    span = anchor.block_span
    bm = span - anchor.block_size
    offs = anchor.bitmap_offsets
    les = offs // E
    last_le = max(0, (anchor.data_end - 1) // E)
    pred.last_data_le = int(last_le)
    full_all = np.full(len(offs), -1, dtype=np.int8)
    if anchor.batmap is not None and len(offs):
        full_all = anchor.batmap[anchor.blocks].astype(np.int8)
    slots: dict[int, SlotPrediction] = {}

    def slot(j: int) -> SlotPrediction:
        if j not in slots:
            slots[j] = SlotPrediction(j, np.zeros(0, np.int64), np.zeros(0, np.int8))
        return slots[j]

    # bitmaps per LE (offs is sorted)
    if len(offs):
        bounds = np.nonzero(np.diff(les))[0] + 1
        for idx in np.split(np.arange(len(offs)), bounds):
            j = int(les[idx[0]])
            s = slot(j)
            s.bitmap_offsets = offs[idx] - j * E
            s.full = full_all[idx]
            last = int(idx[-1])
            end = int(offs[last]) + span
            first_data_abs = int(offs[last]) + bm
            tail = (j + 1) * E - SECTOR
            if first_data_abs <= tail < first_data_abs + anchor.block_size:
                s.tail_cover = (len(idx) - 1, (tail - first_data_abs) // SECTOR)
            if end > (j + 1) * E:
                first_in_next = max(0, ((j + 1) * E - first_data_abs) // SECTOR)
                sectors = min(anchor.block_size // SECTOR - first_in_next,
                              (end - (j + 1) * E) // SECTOR)
                s.straddle_out = Straddle(int(offs[last]) - j * E, first_in_next, sectors)
                # data only, no bitmap of its own in the next LE(s): still VHD content
                for k in range(j + 1, (end - 1) // E + 1):
                    slot(k).spill_in = True
    for j in range(1, last_le + 1):
        slot(j)
    if anchor.has_batmap and anchor.batmap_offset:
        s = slot(anchor.batmap_offset // E)
        if s.le > 0:
            s.le1_batmap = anchor.batmap_offset % E == 1536
            if s.le1_batmap and len(anchor.bat):
                s.batmap_allowed = np.asarray(anchor.bat) != S.DD_BLK_UNUSED
    tab_end = anchor.table_offset + 4 * anchor.max_entries
    if tab_end > E:
        slot(1).bat_tail = True
    if anchor.lvhd:
        last = slot(int(last_le))
        last.lv_end_possible = True
        # blktap puts the next block one LVHD stride after the last one (formats.md 4.5)
        nxt = int(offs[-1]) + LVHD_BLOCK_STRIDE_BYTES if len(offs) else LVHD_FIRST_BITMAP_BYTES
        lim = (int(last_le) + 1) * E - SECTOR
        if anchor.block_size == VHD_BLOCK_BYTES and nxt >= anchor.data_end:
            last.absent_offsets = np.arange(nxt, lim, LVHD_BLOCK_STRIDE_BYTES,
                                           dtype=np.int64) - last_le * E
        inflated = sm_inflated_bytes(anchor, E)
        if inflated is not None:
            # sm's inflated LV size: a longer LV may end in this VHD's footer ... except for a
            # hidden VHD: sm deflates a snapshot's base copy to its data
            # (LVHDSR._createSnapshot -> lvhdutil.deflate), so its LV ends after its data
            last.lv_end_certain = -(-inflated // E) - 1 <= last_le or bool(anchor.hidden)
    else:
        # packed (qemu) layout: footer right after the last block
        f = anchor.data_end
        pred.footer_le = f // E
        slot(f // E).footer_offset = f % E
    pred.slots = slots
    return pred
