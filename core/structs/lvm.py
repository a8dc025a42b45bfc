"""LVM2 on-disk binary structures: label sector, PV header, mda header (formats.md 2.1-2.3).

Declared once with `construct`, field names as lvm2 names them:
  * `label_header`            lvm2 lib/label/label.h (struct label_header)
  * `pv_header`, `disk_locn`, `pv_header_extension`
                              lvm2 lib/format_text/layout.h
  * `mda_header`, `raw_locn`  lvm2 lib/format_text/layout.h
All integers are little-endian (`_xl` = "on-disk little-endian" in lvm2's naming).
They parse and build: the demo builder writes PV labels and mda headers with them.
The lists terminated by an all-zero entry are parsed with RepeatUntil inside one 512-byte
sector, so a list without its terminator ends in a StreamError instead of running on.
"""

from __future__ import annotations

from construct import Bytes, Int32ul, Int64ul, Padding, RepeatUntil, Struct, this

SECTOR_SIZE = 512            # lvm2 lib/label/label.h SECTOR_SIZE
LABEL_SIZE = SECTOR_SIZE     # label.h LABEL_SIZE: one sector
LABEL_SCAN_SECTORS = 4       # label.h LABEL_SCAN_SECTORS: the label may sit in sectors 0..3
DEFAULT_LABELSECTOR = 1      # lib/config/defaults.h DEFAULT_LABELSECTOR
LABEL_ID = b"LABELONE"       # label.h LABEL_ID
LVM2_LABEL = b"LVM2 001"     # lib/format_text/layout.h LVM2_LABEL
ID_LEN = 32                  # lib/uuid/uuid.h ID_LEN: PV/VG/LV uuids are 32 chars, no dashes
# layout.h FMTT_MAGIC, the mda header magic " LVM2 x[5A%r0N*>"
FMTT_MAGIC = b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e"
FMTT_VERSION = 1             # layout.h FMTT_VERSION
MDA_HEADER_SIZE = 512        # layout.h MDA_HEADER_SIZE
RAW_LOCN_IGNORED = 0x00000001  # layout.h RAW_LOCN_IGNORED (raw_locn.flags bit 0)
PV_HEADER_EXTENSION_VSN = 2  # layout.h PV_HEADER_EXTENSION_VSN
PV_EXT_USED = 0x00000001     # layout.h PV_EXT_USED: the PV belongs to a VG
DEFAULT_MDA_OFFSET = 4096    # mda1 starts 4096 bytes into the PV (format-text.c, [V])

# struct label_header (label.h): 32 bytes at the start of the label sector
label_header = Struct(
    "id" / Bytes(8),            # LABELONE
    "sector_xl" / Int64ul,      # sector number of this label (must equal where it was found)
    "crc_xl" / Int32ul,         # lvm_crc of bytes 20..511 of the sector (from offset_xl on)
    "offset_xl" / Int32ul,      # offset of pv_header from the start of the sector (32)
    "type" / Bytes(8),          # LVM2 001
)

# struct disk_locn (layout.h): one data area, metadata area or bootloader area
disk_locn = Struct(
    "offset" / Int64ul,         # bytes from the PV start
    "size" / Int64ul,           # bytes; 0 for a data area means "to the end of the device"
)


def _is_terminator(obj, lst, ctx) -> bool:
    return obj["offset"] == 0 and obj["size"] == 0  # dicts when building, Containers parsing


# struct pv_header (layout.h): disk_areas_xl holds two zero-terminated lists, data areas then
# metadata areas; lvm2 walks them in place.  They are declared as two lists here.
pv_header = Struct(
    "pv_uuid" / Bytes(ID_LEN),
    "device_size_xl" / Int64ul,  # bytes
    "data_areas" / RepeatUntil(_is_terminator, disk_locn),
    "metadata_areas" / RepeatUntil(_is_terminator, disk_locn),
)

# struct pv_header_extension (layout.h), right after the metadata-area list's terminator
pv_header_extension = Struct(
    "version" / Int32ul,
    "flags" / Int32ul,
    "bootloader_areas" / RepeatUntil(_is_terminator, disk_locn),
)

# struct raw_locn (layout.h): where one metadata text copy is inside the mda
raw_locn = Struct(
    "offset" / Int64ul,         # bytes from the mda start (the header), >= 512
    "size" / Int64ul,           # bytes of text including the trailing NUL
    "checksum" / Int32ul,       # lvm_crc of those bytes (both parts when it wraps)
    "flags" / Int32ul,          # RAW_LOCN_IGNORED
)


def _raw_locn_end(obj, lst, ctx) -> bool:
    return not (obj["offset"] or obj["size"] or obj["checksum"] or obj["flags"])


# struct mda_header (layout.h): one sector at the start of each metadata area
mda_header = Struct(
    "checksum_xl" / Int32ul,    # lvm_crc of bytes 4..511
    "magic" / Bytes(16),        # FMTT_MAGIC
    "version" / Int32ul,        # FMTT_VERSION
    "start" / Int64ul,          # absolute byte offset of this header on the PV
    "size" / Int64ul,           # bytes of the whole mda, header included
    "raw_locns" / RepeatUntil(_raw_locn_end, raw_locn),  # [0] committed, [1] precommitted
)

# The label sector as lvm2 writes it (text_label.c _text_write): label_header at 0, pv_header at
# offset_xl (= 32), then the extension.  Used to build whole sectors.
label_sector_head = Struct(
    "label_header" / label_header,
    Padding(this.label_header.offset_xl - 32),
    "pv_header" / pv_header,
    "pv_header_extension" / pv_header_extension,
)
