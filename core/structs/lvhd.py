"""The LVHD lattice: where XenServer's sm and blktap put a VHD's pieces inside an LV, and how
big sm makes the LV (formats.md 3.1 and 4.5). One place for these numbers; units in the names.

Sources: xapi-project/sm `libs/sm/lvhdutil.py` (MSIZE_MB: metadata preallocated for 2 TiB,
calcSizeVHDLV), `libs/sm/vhdutil.py` (calcOverheadEmpty, calcOverheadBitmap, VHD_BLOCK_SIZE),
`libs/sm/lvutil.py` (LVM_SIZE_INCREMENT); xapi-project/blktap `vhd/lib/libvhd.c` (the batmap
after the BAT, blocks placed so their data starts on 4 KiB). The arithmetic of the fixed layout
is in formats.md 4.5: footer copy 0, header 512, BAT 1536 (1,048,576 entries), `tdbatmap`
header 4,195,840 (+1536 of the LV's second extent), batmap, parent locators, first block bitmap
at sector 8455, then one block every 4104 sectors.
"""

from __future__ import annotations

from core.structs.vhd import SECTOR, VHD_BLOCK_BYTES, roundup

LVHD_EXTENT_BYTES = 4 << 20            # sm never passes -s to vgcreate: lvm's default extent,
                                       # and every LV size a multiple of it (LVM_SIZE_INCREMENT)
SM_PE_START_BYTES = 11 << 20           # sm: pvcreate --metadatasize 10M gives pe_start 11 MiB
LVHD_MAX_VIRTUAL_BYTES = 2 << 40       # metadata preallocated for 2 TiB (lvhdutil MSIZE_MB)
LVHD_BAT_ENTRIES = LVHD_MAX_VIRTUAL_BYTES // VHD_BLOCK_BYTES   # 1,048,576
LVHD_BAT_OFFSET_BYTES = 1536           # after the footer copy (512) and the dynamic header (1024)
LVHD_BATMAP_HEADER_OFFSET_BYTES = LVHD_BAT_OFFSET_BYTES + 4 * LVHD_BAT_ENTRIES   # 4,195,840
LVHD_FIRST_BITMAP_BYTES = 8455 * SECTOR    # 4,328,960: the first block's bitmap sector
LVHD_BLOCK_STRIDE_BYTES = VHD_BLOCK_BYTES + 4096   # 4104 sectors: bitmap, 4 KiB alignment, data
LVHD_OVERHEAD_BYTES = 4_329_472        # sm vhdutil.calcOverheadEmpty for 2 TiB: where data starts
LVHD_BLOCK_OVERHEAD_BYTES = 4096       # sm vhdutil.calcOverheadBitmap: bitmap + alignment gap
LVHD_LATTICE_SLOTS = LVHD_EXTENT_BYTES // 4096     # 4 KiB-aligned bitmap positions per extent
LVHD_LATTICE_PERIOD_BLOCKS = 1024      # the bitmap positions inside an extent repeat every
LVHD_LATTICE_PERIOD_LES = 513          # 1024 blocks = 513 extents (1024 * 4104 = 513 * 8192)


def lvhd_inflated_bytes(virtual_size: int) -> int:
    """Bytes sm needs for an inflated (thick) VHD of `virtual_size`, before rounding up to the
    extent (lvhdutil.calcSizeVHDLV): the 2 TiB metadata overhead, the virtual size and 4 KiB per
    virtual block."""
    return (LVHD_OVERHEAD_BYTES + virtual_size
            + (-(-virtual_size // VHD_BLOCK_BYTES)) * LVHD_BLOCK_OVERHEAD_BYTES)


def lvhd_lv_size(virtual_size: int, allocated_blocks: int, thick: bool = False) -> int:
    """LV size sm gives a VHD VDI (lvhdutil.calcSizeVHDLV): 4 MiB-rounded overhead for 2 TiB of
    metadata plus 4 KiB per block (plus the whole virtual size when thick)."""
    size = LVHD_OVERHEAD_BYTES + allocated_blocks * (VHD_BLOCK_BYTES + LVHD_BLOCK_OVERHEAD_BYTES)
    if thick:
        size = lvhd_inflated_bytes(virtual_size)
    return roundup(size, LVHD_EXTENT_BYTES)
