"""MBR (DOS) partition table structures (formats.md 1.1).

Layout from util-linux `libfdisk/src/dos.c` / `include/pt-mbr.h` (struct dos_partition) and
fox-it/dissect.volume `dissect/volume/disk/schemes/mbr.py`; all integers little-endian
(note: a well-known construct gallery mbr.py wrongly declares them big-endian).
"""

from __future__ import annotations

from construct import Array, Bytes, Const, Int8ul, Int16ul, Int32ul, Struct

MBR_SIGNATURE = 0xAA55            # bytes 55 AA at 510 (pt-mbr.h MBR_PT_BOOTBITS_SIZE / 0xAA55)
PARTITION_TABLE_OFFSET = 0x1BE    # pt-mbr.h MBR_PT_OFFSET
TYPE_EMPTY = 0x00
TYPE_LINUX_LVM = 0x8E             # util-linux include/pt-mbr-partnames.h "Linux LVM"
TYPE_GPT_PROTECTIVE = 0xEE        # pt-mbr-partnames.h "GPT"
EXTENDED_TYPES = (0x05, 0x0F, 0x85)  # DOS extended, W95 extended (LBA), Linux extended
# boot-sector OEM ids that mean "this 55AA sector is a file system's VBR, not an MBR"
# (dissect.volume mbr.py)
VBR_MARKERS = (b"NTFS", b"MSDOS", b"MSWIN", b"FAT", b"EXFAT", b"-FVE-FS-", b"SYSLINUX")

# struct dos_partition (pt-mbr.h)
dos_partition = Struct(
    "boot_ind" / Int8ul,        # 0x80 active
    "bh" / Int8ul, "bs" / Int8ul, "bc" / Int8ul,   # CHS of first sector
    "sys_ind" / Int8ul,         # partition type
    "eh" / Int8ul, "es" / Int8ul, "ec" / Int8ul,   # CHS of last sector
    "start_sect" / Int32ul,     # first LBA (relative, for EBR entries)
    "nr_sects" / Int32ul,       # number of sectors
)

mbr = Struct(
    "bootstrap" / Bytes(440),
    "disk_signature" / Int32ul,
    "unused" / Int16ul,
    "partitions" / Array(4, dos_partition),
    "signature" / Const(MBR_SIGNATURE, Int16ul),
)
