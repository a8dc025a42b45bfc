"""SQL Server data-file (.mdf/.ndf) structures: the 96-byte page header, the boot page record,
the PFS byte map, the IAM header, the FixedVar record layout, and the page checksum.

Field names follow OrcaMDF (`improvedk/OrcaMDF: src/OrcaMDF.Core/Engine/Pages/PageHeader.cs`,
`src/OrcaMDF.RawCore/RawPageHeader.cs`) and Totopolis (`Totopolis/dataserver:
dataserver/system/page_head.h`, `dataserver/sysobj/boot_page.h`); offsets are in
shared/docs/formats.md section 5. All integers are little-endian.

Declared once here with construct (parse and build); `PAGE_HEADER_DTYPE` is the same layout as a
numpy structured dtype so a window of candidate pages is decoded without a Python loop.
"""

from __future__ import annotations

import numpy as np
from construct import Bytes, Int8ul, Int16sl, Int16ul, Int32sl, Int32ul, Int64sl, Struct, this

PAGE_SIZE = 8192           # every page is 8 KiB; page n of a file is at byte n * 8192 (RawPage.cs)
PAGE_HEADER_SIZE = 96
# The slot array: one u16 record offset per slot, growing backwards from the page end (slot 0 at
# 8190) (RawPage.cs; formats.md 5): SLOT_ARRAY_ENTRY[n] parses / builds n of them.
SLOT_ARRAY_ENTRY = Int16ul
SECTORS_PER_PAGE = 16      # checksum / torn bits work on 16 sectors of 512 bytes

# m_flagBits (PageHeader.cs / page_head.h): which protection the page carries in m_tornBits
FLAG_TORN_PAGE = 0x0100
FLAG_CHECKSUM = 0x0200

# m_type values (OrcaMDF PageType.cs; 14 from Totopolis page_type.h; 18-20 from Paul Randal,
# "Inside the Storage Engine: Anatomy of a page": 18 = page deallocated by DBCC CHECKDB repair,
# 19 = temporary page of ALTER INDEX ... REORGANIZE for LOB compaction, 20 = page preallocated by a
# bulk load). Type 19 occurs in the shared dotnetnuke fixture, so it must be carved too.
PAGE_TYPES = {
    1: "data", 2: "index", 3: "text-mix", 4: "text-tree", 7: "sort", 8: "gam", 9: "sgam",
    10: "iam", 11: "pfs", 13: "boot", 14: "server-config", 15: "file-header", 16: "diff-map",
    17: "ml-map", 18: "deallocated", 19: "reorg-lob", 20: "bulk-prealloc",
}
TYPE_DATA, TYPE_IAM, TYPE_PFS, TYPE_BOOT, TYPE_FILE_HEADER = 1, 10, 11, 13, 15

# Fixed places (formats.md 5.1): page 0 file header, 1 PFS (repeats every 8088 pages),
# 9 boot page of file 1.
PFS_INTERVAL = 8088
BOOT_PAGE_ID = 9
GAM_INTERVAL = 511232      # pages covered by one GAM/SGAM/IAM bitmap (63,904 extents)
PFS_ALLOCATED = 0x40       # PFS byte bit: page allocated [V on the shared fixtures]

pageid = Struct("m_pageId" / Int32ul, "m_fileId" / Int16ul)   # 6-byte page pointer (page, file)

page_header = Struct(
    "m_headerVersion" / Int8ul,        # always 1
    "m_type" / Int8ul,
    "m_typeFlagBits" / Int8ul,
    "m_level" / Int8ul,
    "m_flagBits" / Int16ul,
    "m_indexId" / Int16ul,             # AllocUnitId.idInd
    "m_prevPage" / pageid,
    "pminlen" / Int16ul,
    "m_nextPage" / pageid,
    "m_slotCnt" / Int16ul,
    "m_objId" / Int32ul,               # AllocUnitId.idObj
    "m_freeCnt" / Int16ul,
    "m_freeData" / Int16ul,
    "m_pageId" / Int32ul,
    "m_fileId" / Int16ul,
    "m_reservedCnt" / Int16ul,
    "m_lsn" / Struct("vlf" / Int32ul, "block" / Int32ul, "slot" / Int16ul),
    "m_xactReserved" / Int16ul,
    "m_xdesId" / Struct("part2" / Int32ul, "part1" / Int16ul),
    "m_ghostRecCnt" / Int16ul,
    "m_tornBits" / Int32ul,            # checksum (flag 0x200) or torn bits (flag 0x100)
    "reserved" / Bytes(32),
)
assert page_header.sizeof() == PAGE_HEADER_SIZE

# The same layout for numpy (np.frombuffer(..., dtype=PAGE_HEADER_DTYPE)).
PAGE_HEADER_DTYPE = np.dtype([
    ("m_headerVersion", "u1"), ("m_type", "u1"), ("m_typeFlagBits", "u1"), ("m_level", "u1"),
    ("m_flagBits", "<u2"), ("m_indexId", "<u2"),
    ("m_prevPage_page", "<u4"), ("m_prevPage_file", "<u2"), ("pminlen", "<u2"),
    ("m_nextPage_page", "<u4"), ("m_nextPage_file", "<u2"), ("m_slotCnt", "<u2"),
    ("m_objId", "<u4"), ("m_freeCnt", "<u2"), ("m_freeData", "<u2"),
    ("m_pageId", "<u4"), ("m_fileId", "<u2"), ("m_reservedCnt", "<u2"),
    ("m_lsn_vlf", "<u4"), ("m_lsn_block", "<u4"), ("m_lsn_slot", "<u2"),
    ("m_xactReserved", "<u2"), ("m_xdesId_part2", "<u4"), ("m_xdesId_part1", "<u2"),
    ("m_ghostRecCnt", "<u2"), ("m_tornBits", "<u4"), ("reserved", "V32"),
])
assert PAGE_HEADER_DTYPE.itemsize == PAGE_HEADER_SIZE

# Boot page (1:9) record: offsets relative to the record start, 4-byte record header included
# (Totopolis boot_page.h; OrcaMDF BootPage.cs gives the same minus 4). formats.md 5.2.
boot_record = Struct(
    "record_header" / Bytes(4),
    "dbi_version" / Int16ul,           # 661 = 2008 R2, 706 = 2012 ... (see SQL_VERSIONS)
    "dbi_createVersion" / Int16ul,
    "unknown_08" / Bytes(0x24 - 0x08),
    "dbi_status" / Int32ul,
    "dbi_nextid" / Int32ul,
    "dbi_crdate" / Bytes(8),
    "dbi_dbname" / Bytes(256),         # nchar(128) UTF-16LE, padded (0x0020 or 0x20 bytes)
    "unknown_134" / Bytes(0x138 - 0x134),
    "dbi_dbid" / Int16ul,
)
BOOT_RECORD_SIZE = boot_record.sizeof()

# dbi_version -> release. 611/661/706 and 869 from formats.md 5.2; 539/655/782/852/904/957 are
# the commonly published internal database versions [U: no sample files of those here].
SQL_VERSIONS = {
    539: "SQL Server 2000", 611: "SQL Server 2005", 612: "SQL Server 2005 (vardecimal)",
    655: "SQL Server 2008", 661: "SQL Server 2008 R2", 706: "SQL Server 2012",
    782: "SQL Server 2014", 852: "SQL Server 2016", 869: "SQL Server 2017",
    904: "SQL Server 2019", 957: "SQL Server 2022",
}

# IAM page (type 10): page-absolute offsets of the IAM header fields and the extent bitmap, from
# SQLServerInternals InternalsViewer `Pages/AllocationPage.cs` (StartPageOffset 136,
# SinglePageSlotOffset 142, AllocationArrayOffset 194); bit j of byte i = extent
# start_pg/8 + 8*i + j (Totopolis `sysobj/iam_page.cpp` allocated_extents loop).
IAM_START_PAGE_OFFSET = 136
IAM_SINGLE_PAGE_OFFSET = 142
IAM_SINGLE_PAGE_SLOTS = 8
IAM_BITMAP_OFFSET = 194
IAM_BITMAP_BYTES = GAM_INTERVAL // 8 // 8   # 63,904 extents = 7,988 bytes

iam_header = Struct(
    "start_pg" / pageid,
    "single_pages" / pageid[IAM_SINGLE_PAGE_SLOTS],
)

# File header (page 0, type 15): one record with a NULL bitmap and variable-length columns whose
# meaning is only partly public (Totopolis sysobj/file_header.h). Variable column 4 holds the file
# size in pages [V: 280 and 400 in the two shared fixtures, equal to their lengths / 8192].
FILE_HEADER_SIZE_COLUMN = 4

# PFS byte bits besides PFS_ALLOCATED (Paul Randal, "Inside The Storage Engine: GAM, SGAM, PFS and
# other allocation maps"): bits 0-2 how full the page is (4 = 96-100 %), 0x08 ghost records,
# 0x10 IAM page, 0x20 page of a mixed extent [V on the ITHelpdesk fixture: 0x70 on IAM pages,
# 0x60 on data pages in mixed extents, 0x44 on the file header and allocation pages, 0x64 on the
# boot page].
PFS_FULLNESS_MASK = 0x07
PFS_FULL = 0x04
PFS_GHOST_RECORDS = 0x08
PFS_IAM_PAGE = 0x10
PFS_MIXED_EXTENT = 0x20

# A record in FixedVar format (OrcaMDF `src/OrcaMDF.RawCore/Records/RawRecord.cs`,
# `RawPrimaryRecord.cs`, `src/OrcaMDF.Core/Engine/Records/Record.cs`): status byte A (bits 1-3
# record type, 0x10 NULL bitmap present, 0x20 variable-length columns present), status byte B,
# the offset of the column count (= 4 + fixed-length data), the fixed-length data; then, when the
# status bits say so, the column count with the NULL bitmap and the variable-length column end
# offsets (from the record start; high bit = complex column). The records of the PFS, GAM/SGAM/
# IAM and boot pages are fixed-length only: their third field is the record length [V: 0x1f9c
# PFS, 0x005e / 0x1f38 GAM, 0x05e0 boot record in the ITHelpdesk fixture].
RECORD_HAS_NULL_BITMAP = 0x10
RECORD_HAS_VARIABLE_COLUMNS = 0x20
RECORD_COMPLEX_COLUMN = 0x8000

record_header = Struct(
    "RawStatusByteA" / Int8ul,
    "RawStatusByteB" / Int8ul,
    "NullBitmapPointer" / Int16ul,
)
RECORD_HEADER_SIZE = record_header.sizeof()

null_bitmap = Struct(
    "NullBitmapColumnCount" / Int16ul,
    "NullBitmapRawBytes" / Bytes((this.NullBitmapColumnCount + 7) // 8),
)

variable_length_offsets = Struct(
    "NumberOfVariableLengthOffsetArrayEntries" / Int16ul,
    "VariableLengthOffsetArray" / Int16ul[this.NumberOfVariableLengthOffsetArrayEntries],
)

# datetime columns and dbi_crdate: clock ticks of 1/300 s since midnight, then days since
# 1900-01-01 (OrcaMDF `src/OrcaMDF.RawCore/Types/RawDatetime.cs`: CLOCK_TICK_MS = 10 / 3).
SQL_DATETIME_TICKS_PER_SECOND = 300
sql_datetime = Struct(
    "time" / Int32sl,
    "date" / Int32sl,
)


def page_checksum(page: bytes | np.ndarray, skip_reserved: bool = False) -> int:
    """The SQL Server page checksum (flag 0x200) of one 8 KiB page (formats.md 5.3)."""
    arr = np.frombuffer(bytes(page), dtype="<u4").reshape(1, SECTORS_PER_PAGE, 128)
    return int(page_checksums(arr, skip_reserved)[0])


def page_checksums(words: np.ndarray, skip_reserved: bool = False) -> np.ndarray:
    """Checksums of k pages given as a (k, 16, 128) little-endian uint32 array.

    Each sector's 128 words are XORed (the checksum word at byte 60 counted as 0), the result of
    sector i is rotated left by 15 - i bits, and the 16 results are XORed (Totopolis
    page_head.cpp page_head::checksum). skip_reserved also leaves out bytes 64..95 as Totopolis
    does (identical when they are zero). Works on a read-only view: no copy of the pages.
    """
    x = np.bitwise_xor.reduce(words, axis=2).astype(np.uint64)          # (k, 16)
    fix = words[:, 0, 15]                        # XOR the stored checksum word back out
    if skip_reserved:
        fix = fix ^ np.bitwise_xor.reduce(words[:, 0, 16:24], axis=1)
    x[:, 0] ^= fix.astype(np.uint64)
    shift = (15 - np.arange(SECTORS_PER_PAGE, dtype=np.uint64))[None, :]
    rotated = ((x << shift) | (x >> (np.uint64(32) - shift))) & np.uint64(0xFFFFFFFF)
    return np.bitwise_xor.reduce(rotated, axis=1).astype(np.uint32)


def torn_bits_consistent(page: bytes | np.ndarray) -> bool:
    """Torn-page protection (flag 0x100): the low 2 bits of the last byte of every 512-byte
    sector carry the same write pattern (01 or 10 alternating per write); a sector whose pattern
    differs was not written with the others (formats.md 5.3, [U] beyond the fixtures)."""
    arr = np.frombuffer(bytes(page), dtype=np.uint8)
    marks = arr[511::512] & 3
    return bool((marks == marks[0]).all() and marks[0] in (1, 2))


def decode_dbname(raw: bytes) -> str:
    """dbi_dbname: UTF-16LE nchar(128) padded with U+0020 or - as in the shared fixtures - with
    0x20 bytes that read as U+2020 (formats.md 5.2 pitfall). Padding and NULs are stripped."""
    text = raw[: len(raw) - len(raw) % 2].decode("utf-16-le", errors="replace")
    return text.rstrip("\u2020\u0020\u0000").rstrip()


# -- the system base tables (core.mssql.catalog) -----------------------------------------------
# The boot record's pointer to the first page of sys.sysallocunits, the entry point of the
# catalog: offset 0x204 of the boot record, record header included (Totopolis
# `dataserver/sysobj/boot_page.h`, bootpage_row::dbi_firstSysIndexes; formats.md 5.2)
# [V: (1:20) in dotnetnuke, (1:16) in ITHelpdesk, both type 1 pages of object 7].
BOOT_FIRST_SYS_INDEXES = 0x204

# Object ids of the system base tables (OrcaMDF `src/OrcaMDF.Core/MetaData/Enumerations/
# SystemObject.cs`). Their rowsets are found in sysrowsets by (idmajor = object id, idminor = 1);
# sysrowsets itself by its fixed allocation unit id 327680 = 5 << 16
# (OrcaMDF `FixedSystemObjectAllocationUnits.cs`, `BaseTableData.cs` parseSysrowsets).
SYSRSCOLS, SYSROWSETS, SYSALLOCUNITS, SYSSCHOBJS, SYSCOLPARS, SYSOBJVALUES, SYSCLSOBJS = (
    3, 5, 7, 34, 41, 60, 64)
SYSROWSETS_AUID = 327680

# The fixed-length part of each base table's records, after the 4-byte record header, in the
# column order of OrcaMDF `src/OrcaMDF.Core/MetaData/BaseTables/*.cs` (2008 R2) and
# `src/OrcaMDF.RawCore/Utilities/SQL2012/*.cs` (2012). Versions only append columns at the end
# (dbfragid, scope_id, status2), so these leading fields sit at the same offsets in both
# [V: both shared fixtures]. Variable-length columns are listed in the comment after each.
sysallocunits_fixed = Struct(
    "auid" / Int64sl, "type" / Int8ul, "ownerid" / Int64sl, "status" / Int32sl,
    "fgid" / Int16sl, "pgfirst" / pageid, "pgroot" / pageid, "pgfirstiam" / pageid,
    "pcused" / Int64sl, "pcdata" / Int64sl, "pcreserved" / Int64sl,
)                                                          # no variable-length columns
sysrowsets_fixed = Struct(
    "rowsetid" / Int64sl, "ownertype" / Int8ul, "idmajor" / Int32sl, "idminor" / Int32sl,
    "numpart" / Int32sl, "status" / Int32sl, "fgidfs" / Int16sl, "rcrows" / Int64sl,
    "cmprlevel" / Int8ul, "fillfact" / Int8ul, "maxnullbit" / Int16sl, "maxleaf" / Int32sl,
    "maxint" / Int16sl, "minleaf" / Int16sl, "minint" / Int16sl,
)                                                          # var: rsguid, lockres
sysschobjs_fixed = Struct(
    "id" / Int32sl, "nsid" / Int32sl, "nsclass" / Int8ul, "status" / Int32sl,
    "type" / Bytes(2), "pid" / Int32sl, "pclass" / Int8ul, "intprop" / Int32sl,
    "created" / sql_datetime, "modified" / sql_datetime,
)                                                          # var: name
syscolpars_fixed = Struct(
    "id" / Int32sl, "number" / Int16sl, "colid" / Int32sl, "xtype" / Int8ul, "utype" / Int32sl,
    "length" / Int16sl, "prec" / Int8ul, "scale" / Int8ul, "collationid" / Int32ul,
    "status" / Int32sl, "maxinrow" / Int16sl, "xmlns" / Int32sl, "dflt" / Int32sl,
    "chk" / Int32sl,
)                                                          # var: name, idtval
sysrscols_fixed = Struct(
    "rsid" / Int64sl, "rscolid" / Int32sl, "hbcolid" / Int32sl, "rcmodified" / Int64sl,
    "ti" / Int32sl, "cid" / Int32sl, "ordkey" / Int16sl, "maxinrowlen" / Int16sl,
    "status" / Int32sl, "offset" / Int32sl, "nullbit" / Int32sl, "bitpos" / Int16sl,
)                                                          # var: colguid
# sys.sysclsobjs (schemas are its class 50 rows: the definition of sys.schemas): class, id,
# name, status, type, intprop, created, modified (Microsoft Learn, "sys.sysclsobjs (Transact-SQL)"
# system base tables page); the fixed ones in that order [V: 31 bytes, the 'dbo' / 'sys' rows of
# both shared fixtures].
sysclsobjs_fixed = Struct(
    "class" / Int8ul, "id" / Int32sl, "status" / Int32sl, "type" / Bytes(2),
    "intprop" / Int32sl, "created" / sql_datetime, "modified" / sql_datetime,
)                                                          # var: name
CLASS_SCHEMA = 50

# sysrscols.status bits (OrcaMDF `MetaData/DMVs/SystemInternalsPartitionColumn.cs`).
RSCOL_DROPPED = 0x02
RSCOL_UNIQUEIFIER = 0x10
RSCOL_NOT_NULL = 0x80
RSCOL_SPARSE = 0x100
# syscolpars.status bits (OrcaMDF `MetaData/DMVs/Column.cs`): 1 = NOT NULL, 0x10 computed,
# 0x1000000 sparse, 0x2000000 column set.
COLPAR_NOT_NULL = 0x01
COLPAR_COMPUTED = 0x10
COLPAR_SPARSE = 0x1000000
COLPAR_COLUMN_SET = 0x2000000

# sysallocunits.type (OrcaMDF `MetaData/Enumerations/AllocationUnitType.cs`).
AU_IN_ROW_DATA, AU_LOB_DATA, AU_ROW_OVERFLOW_DATA = 1, 2, 3

# Record types in bits 1-3 of status byte A (OrcaMDF `Engine/Records/RecordType.cs`); 0x40 =
# 14 bytes of versioning information appended to the record (SQL Server 2008 Internals ch. 5).
RECORD_PRIMARY, RECORD_FORWARDED, RECORD_FORWARDING_STUB, RECORD_INDEX = 0, 1, 2, 3
RECORD_BLOB_FRAGMENT, RECORD_GHOST_INDEX, RECORD_GHOST_DATA, RECORD_GHOST_VERSION = 4, 5, 6, 7
RECORD_HAS_VERSIONING = 0x40

# ROW/PAGE compressed records (CD format) start with a header byte: bit 0 = CD format, bit 1
# versioning, bits 2-4 record type (0 primary, 1 ghost empty, 2 forwarding stub, 3 ghost data,
# 4 forwarded, 5 ghost forwarded, 6 index, 7 ghost index) (OrcaMDF
# `Engine/Records/Compression/CompressedRecord.cs` parseHeader, `CompressedRecordType.cs`).
CD_RECORD = 0x01
CD_PRIMARY, CD_FORWARDING = 0, 2

# A forwarding stub: status byte A, then the 8-byte RID of the forwarded record (page u32, file
# u16, slot u16) (OrcaMDF `Engine/SqlTypes/SqlRID.cs`; improve.dk "Anatomy of a forwarded
# record").
rid = Struct("page" / Int32ul, "file" / Int16ul, "slot" / Int16ul)
FORWARDING_STUB_SIZE = 9

# Complex column (high bit of its var offset) payloads, told apart by their first byte(s)
# (OrcaMDF `Engine/Records/Record.cs` ParseVariableLengthColumns): 2 row-overflow pointer,
# 4 BLOB inline root, 5 sparse vector, 0x0400 forwarded-record back pointer; a 16-byte one is a
# text pointer (text/ntext/image).
COMPLEX_ROW_OVERFLOW, COMPLEX_BLOB_INLINE_ROOT, COMPLEX_SPARSE_VECTOR = 2, 4, 5
COMPLEX_BACK_POINTER = 0x0400
# A row-overflow pointer / BLOB inline root: 12-byte head, then 12-byte entries (SQL Server 2008
# Internals table 7-1 via OrcaMDF `VariableLengthDataProxies/BlobInlineRootProxy.cs`); each
# entry ends at a cumulative byte count and points at a blob fragment record.
blob_inline_root = Struct(
    "type" / Int8ul, "index_level" / Int16ul, "unused" / Int8ul, "sequence" / Int32ul,
    "timestamp" / Int32ul,
)
blob_inline_entry = Struct("length" / Int32ul, "page" / Int32ul, "file" / Int16ul,
                           "slot" / Int16ul)
# A blob fragment's DATA structure (type 3): blob id, type, then the bytes (OrcaMDF
# `Engine/Records/LobStructures/Data.cs`).
lob_data_head = Struct("blob_id" / Int64sl, "type" / Int16ul)
LOB_DATA = 3
# The other LOB structures a text pointer or a LOB entry may lead to (OrcaMDF
# `Engine/Records/LobStructures/SmallRoot.cs`, `LargeRootYukon.cs`, `Internal.cs`,
# `InternalLobSlotPointer.cs`): SMALL_ROOT (type 0, up to 64 bytes inline from offset 16),
# INTERNAL (type 2, links of offset + slot pointer from 16), LARGE_ROOT_YUKON (type 5, links
# like the inline root's entries from 20).
LOB_SMALL_ROOT, LOB_INTERNAL, LOB_LARGE_ROOT_YUKON = 0, 2, 5
lob_small_root = Struct("blob_id" / Int64sl, "type" / Int16ul, "length" / Int16ul,
                        "unknown" / Bytes(4))
lob_links_head = Struct("blob_id" / Int64sl, "type" / Int16ul, "maxlinks" / Int16ul,
                        "curlinks" / Int16ul, "level" / Int16ul)
LOB_LARGE_ROOT_LINKS = 20
lob_internal_link = Struct("offset" / Int64sl, "page" / Int32ul, "file" / Int16ul,
                           "slot" / Int16ul)
# A text pointer (text / ntext / image in the record): 8 bytes (timestamp, unknown), then the
# slot pointer of the LOB root (OrcaMDF `VariableLengthDataProxies/TextPointerProxy.cs`).
text_pointer = Struct("timestamp" / Int32ul, "unknown" / Int32ul, "page" / Int32ul,
                      "file" / Int16ul, "slot" / Int16ul)
