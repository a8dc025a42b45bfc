"""GPT header and partition entry structures (formats.md 1.2).

Field names from util-linux `libfdisk/src/gpt.c` (struct gpt_header, struct gpt_entry); the
UEFI specification (chapter 5, "GUID Partition Table Disk Layout") defines the same layout.
Integers little-endian; GUIDs are stored Microsoft-style (first three groups little-endian).
"""

from __future__ import annotations

import uuid
import zlib

from construct import Bytes, Int32ul, Int64ul, Struct

GPT_HEADER_SIGNATURE = b"EFI PART"  # gpt.c GPT_HEADER_SIGNATURE 0x5452415020494645
GPT_HEADER_REVISION_V1_00 = 0x00010000  # gpt.c GPT_HEADER_REVISION_V1_00
GPT_HEADER_MINSIZE = 92             # gpt.c sizeof(struct gpt_header) without reserved2
GPT_ENTRY_SIZE = 128                # UEFI: sizeof(EFI_PARTITION_ENTRY)
GPT_NPARTITIONS = 128               # gpt.c FDISK_GPT_NPARTITIONS_DEFAULT
# util-linux libfdisk/src/gpt.c gpt_parttypes "Linux LVM"
LINUX_LVM_GUID = uuid.UUID("E6D6D379-F507-44C2-A23C-238F2A3DF928")

# struct gpt_header (gpt.c)
gpt_header = Struct(
    "signature" / Bytes(8),
    "revision" / Int32ul,
    "size" / Int32ul,                 # header size, normally 92
    "crc32" / Int32ul,                # over `size` bytes with this field zero
    "reserved1" / Int32ul,
    "my_lba" / Int64ul,
    "alternative_lba" / Int64ul,
    "first_usable_lba" / Int64ul,
    "last_usable_lba" / Int64ul,
    "disk_guid" / Bytes(16),
    "partition_entry_lba" / Int64ul,
    "npartition_entries" / Int32ul,
    "sizeof_partition_entry" / Int32ul,
    "partition_entry_array_crc32" / Int32ul,
)

# struct gpt_entry (gpt.c)
gpt_entry = Struct(
    "type" / Bytes(16),               # partition type GUID, mixed-endian
    "partition_guid" / Bytes(16),
    "lba_start" / Int64ul,
    "lba_end" / Int64ul,              # inclusive
    "attrs" / Int64ul,
    "name" / Bytes(72),               # UTF-16LE
)


def gpt_crc32(data: bytes) -> int:
    """The ordinary zlib/IEEE CRC-32 (gpt.c count_crc32)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def guid_from_disk(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(raw))
