"""NTFS on-disk structures (what a guest's Windows file system holds).

Field names are ntfs-3g's `include/ntfs-3g/layout.h` (NTFS_BOOT_SECTOR / BIOS_PARAMETER_BLOCK,
MFT_RECORD, ATTR_RECORD, FILE_NAME_ATTR, INDEX_ROOT, INDEX_HEADER, INDEX_BLOCK, INDEX_ENTRY),
which follow Microsoft's "NTFS on-disk structures" as documented by the Linux-NTFS project;
all integers little-endian.
"""

from __future__ import annotations

from construct import Bytes, Int8sl, Int8ul, Int16ul, Int32ul, Int64sl, Int64ul, Struct

NTFS_OEM_ID = b"NTFS    "          # layout.h magicNTFS ("NTFS" + four spaces)
NTFS_BLOCK_SIZE = 512              # layout.h: the USA protects every 512-byte stride
MAGIC_FILE = b"FILE"               # layout.h magic_FILE
MAGIC_INDX = b"INDX"               # layout.h magic_INDX
MFT_REF_MASK = (1 << 48) - 1       # layout.h MFT_REF_MASK_CPU: record number; the top 16 bits
                                   # hold the sequence number

# system files (layout.h NTFS_SYSTEM_FILES)
FILE_MFT, FILE_MFTMIRR, FILE_LOGFILE, FILE_VOLUME, FILE_ATTRDEF, FILE_ROOT, FILE_BITMAP = range(7)
FILE_FIRST_USER = 16

# MFT_RECORD_FLAGS
MFT_RECORD_IN_USE = 0x0001
MFT_RECORD_IS_DIRECTORY = 0x0002

# ATTR_TYPES
AT_STANDARD_INFORMATION = 0x10
AT_ATTRIBUTE_LIST = 0x20
AT_FILE_NAME = 0x30
AT_DATA = 0x80
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
AT_BITMAP = 0xB0
AT_END = 0xFFFFFFFF

# INDEX_ENTRY_FLAGS / INDEX_HEADER_FLAGS
INDEX_ENTRY_NODE = 0x01
INDEX_ENTRY_END = 0x02
LARGE_INDEX = 0x01

NTFS_BOOT_SECTOR = Struct(
    "jump" / Bytes(3),
    "oem_id" / Bytes(8),                 # 0x03
    # BIOS_PARAMETER_BLOCK
    "bytes_per_sector" / Int16ul,        # 0x0B
    "sectors_per_cluster" / Int8ul,      # 0x0D: > 0x80 means 2^(256 - n) (large clusters)
    "reserved_sectors" / Int16ul,
    "fats" / Int8ul,
    "root_entries" / Int16ul,
    "sectors" / Int16ul,
    "media_type" / Int8ul,               # 0x15
    "sectors_per_fat" / Int16ul,
    "sectors_per_track" / Int16ul,
    "heads" / Int16ul,
    "hidden_sectors" / Int32ul,          # 0x1C: the partition's start (mkntfs -p)
    "large_sectors" / Int32ul,
    # end of BPB
    "physical_drive" / Int8ul,           # 0x24
    "current_head" / Int8ul,
    "extended_boot_signature" / Int8ul,
    "reserved2" / Int8ul,
    "number_of_sectors" / Int64sl,       # 0x28: the volume, without the backup boot sector
    "mft_lcn" / Int64sl,                 # 0x30
    "mftmirr_lcn" / Int64sl,             # 0x38
    "clusters_per_mft_record" / Int8sl,  # 0x40: negative n means 2^-n bytes
    "reserved0" / Bytes(3),
    "clusters_per_index_record" / Int8sl,  # 0x44
    "reserved1" / Bytes(3),
    "volume_serial_number" / Int64ul,    # 0x48
    "checksum" / Int32ul,                # 0x50
    "bootstrap" / Bytes(426),            # 0x54
    "end_of_sector_marker" / Int16ul,    # 0x1FE: 0xAA55
)
BOOT_IDENTITY_END = 0x54                 # jump .. checksum: what identifies the volume

MFT_RECORD = Struct(
    "magic" / Bytes(4),                  # "FILE"
    "usa_ofs" / Int16ul,                 # 0x04: update sequence array
    "usa_count" / Int16ul,               # 0x06: 1 + number of 512-byte strides
    "lsn" / Int64ul,                     # 0x08
    "sequence_number" / Int16ul,         # 0x10
    "link_count" / Int16ul,
    "attrs_offset" / Int16ul,            # 0x14
    "flags" / Int16ul,                   # 0x16 MFT_RECORD_FLAGS
    "bytes_in_use" / Int32ul,            # 0x18
    "bytes_allocated" / Int32ul,         # 0x1C
    "base_mft_record" / Int64ul,         # 0x20: MFT_REF of the base record (extension records)
    "next_attr_instance" / Int16ul,      # 0x28
    "reserved" / Int16ul,                # 0x2A
    "mft_record_number" / Int32ul,       # 0x2C: NTFS 3.1+: this record's own number
)
MFT_RECORD_NUMBER_OFFSET = 0x2C

ATTR_RECORD = Struct(                    # the common header
    "type" / Int32ul,
    "length" / Int32ul,                  # 0x04
    "non_resident" / Int8ul,             # 0x08
    "name_length" / Int8ul,
    "name_offset" / Int16ul,
    "flags" / Int16ul,                   # 0x0C
    "instance" / Int16ul,
)
ATTR_RECORD_RESIDENT = Struct(           # follows ATTR_RECORD when resident
    "value_length" / Int32ul,            # 0x10
    "value_offset" / Int16ul,            # 0x14
    "resident_flags" / Int8ul,
    "reservedR" / Int8ul,
)
ATTR_RECORD_NON_RESIDENT = Struct(       # follows ATTR_RECORD when non-resident
    "lowest_vcn" / Int64sl,              # 0x10
    "highest_vcn" / Int64sl,             # 0x18
    "mapping_pairs_offset" / Int16ul,    # 0x20
    "compression_unit" / Int8ul,
    "reserved1" / Bytes(5),
    "allocated_size" / Int64sl,          # 0x28
    "data_size" / Int64sl,               # 0x30
    "initialized_size" / Int64sl,        # 0x38
)
ATTR_HEADER_SIZE = 0x10

FILE_NAME_ATTR = Struct(
    "parent_directory" / Int64ul,        # MFT_REF
    "creation_time" / Int64sl,           # 0x08 (100 ns since 1601)
    "last_data_change_time" / Int64sl,
    "last_mft_change_time" / Int64sl,
    "last_access_time" / Int64sl,
    "allocated_size" / Int64sl,          # 0x28
    "data_size" / Int64sl,
    "file_attributes" / Int32ul,         # 0x38
    "reparse_point_tag" / Int32ul,
    "file_name_length" / Int8ul,         # 0x40: in UTF-16 units
    "file_name_type" / Int8ul,
)
FILE_NAME_HEADER_SIZE = 0x42             # the name (UTF-16LE) follows

INDEX_HEADER = Struct(
    "entries_offset" / Int32ul,          # from the start of this header
    "index_length" / Int32ul,
    "allocated_size" / Int32ul,
    "ih_flags" / Int8ul,
    "reserved" / Bytes(3),
)
INDEX_ROOT = Struct(
    "type" / Int32ul,                    # AT_FILE_NAME for directories
    "collation_rule" / Int32ul,
    "index_block_size" / Int32ul,        # 0x08
    "clusters_per_index_block" / Int8ul,
    "reserved" / Bytes(3),
    "index" / INDEX_HEADER,              # 0x10
)
INDEX_BLOCK = Struct(                    # "INDX": one block of $INDEX_ALLOCATION
    "magic" / Bytes(4),
    "usa_ofs" / Int16ul,
    "usa_count" / Int16ul,
    "lsn" / Int64ul,                     # 0x08
    "index_block_vcn" / Int64sl,         # 0x10: where this block sits in the allocation
    "index" / INDEX_HEADER,              # 0x18
)
INDEX_BLOCK_HEADER_OFFSET = 0x18
INDEX_ENTRY = Struct(                    # INDEX_ENTRY_HEADER of a file name index entry
    "indexed_file" / Int64ul,            # MFT_REF
    "length" / Int16ul,                  # 0x08
    "key_length" / Int16ul,
    "ie_flags" / Int16ul,                # 0x0C
    "reserved" / Int16ul,
)
INDEX_ENTRY_HEADER_SIZE = 0x10           # the key (FILE_NAME_ATTR) follows
