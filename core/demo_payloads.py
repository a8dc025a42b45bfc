"""What the demo SR gives the carvers: a small SQL Server data file and a RAR 5 archive, both
generated (seeded, deterministic) with the construct structures of `core.structs.mssql` and
`core.structs.rar`, and the plan that places them into the demo's VDIs with the damage of the
classic case - a web server's VDI overwritten in places, its backup RAR archive damaged, but many
SQL Server pages still on disk.

* `build_data_file(seed)`: database "webshop", 160 pages of 8 KiB as SQL Server 2012 (dbi_version
  706) lays them out: page 0 file header (type 15, variable column 4 = size in pages), 1 PFS
  (one byte per page, 0x40 = allocated), 2 GAM, 3 SGAM, 6 DCM, 7 BCM (bitmaps at 194), 8 and 10
  IAM pages of the two tables, 9 boot page (dbi_dbname at record offset 0x34), data pages
  (type 1) of `Customers` (11-15 in a mixed extent, 16-47) and `Orders` (48-119), each with
  FixedVar records, a slot array, m_freeData / m_freeCnt / m_slotCnt, prev/next page links, an
  LSN and the page checksum (m_flagBits 0x200, formats.md 5.3); 4-5 and 120-159 unallocated
  (zeros). Layouts follow the shared ITHelpdesk fixture (its allocation pages are rebuilt byte
  for byte by `allocation_page` / `pfs_page` in the tests).
* `build_rar_archive(files)` (core.demo_rar, importable from here): a RAR 5 archive of stored (method 0) files: signature, MAIN, one
  FILE header per file (data CRC-32, Unix mtime) followed by its bytes, end of archive; every
  header CRC-32 computed over the built header.
* `demo_carving_plan(seed)`: the payloads `core.demo.build_demo` places (`{vdi key: [(virtual
  offset, bytes)]}`, applied in order, later ones overwrite earlier ones) and the truth the
  manifest records (`CarvingTruth`): in the "sql" VDI the data file 8 KiB aligned, then web-log
  text written over pages 30-32 (page 30's header survives with a bad checksum) and 75-76, and
  an older copy (lower LSN, fewer rows) of pages 20-22 elsewhere; in the "web" VDI the archive,
  and a second copy whose second file header has a corrupted CRC.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from construct import Int64sl

from core.demo_rar import (  # noqa: F401 (importable from here, as before)
    ArchiveMember, access_log, backup_members, build_rar_archive, rar5_header)
from core.structs.mssql import (
    BOOT_PAGE_ID, FLAG_CHECKSUM, IAM_BITMAP_BYTES, IAM_SINGLE_PAGE_SLOTS, PAGE_HEADER_SIZE,
    PAGE_SIZE, PFS_ALLOCATED, PFS_FULL, PFS_IAM_PAGE, PFS_INTERVAL, PFS_MIXED_EXTENT,
    RECORD_HAS_NULL_BITMAP, RECORD_HAS_VARIABLE_COLUMNS, RECORD_HEADER_SIZE, SLOT_ARRAY_ENTRY,
    SQL_DATETIME_TICKS_PER_SECOND, TYPE_BOOT, TYPE_DATA, TYPE_FILE_HEADER, TYPE_IAM, TYPE_PFS,
    boot_record, iam_header, null_bitmap, page_checksum, page_header, record_header, sql_datetime,
    variable_length_offsets,
)

# -- SQL Server data file ---------------------------------------------------------------------
TYPE_GAM, TYPE_SGAM, TYPE_DCM, TYPE_BCM = 8, 9, 16, 17     # core.structs.mssql.PAGE_TYPES
EXTENT_PAGES = 8
ALLOCATION_OBJ_ID = 99          # m_objId of the file header, PFS, GAM, SGAM, DCM, BCM and boot
                                # pages [V: both shared fixtures]
ALLOCATION_PMINLEN = 90         # GAM/SGAM/DCM/BCM/IAM: a 94-byte header record, then the bitmap
FILE_HEADER_FLAGS = FLAG_CHECKSUM | 0x0008   # page 0 of both fixtures has 0x208 [V; 0x8 U]
BOOT_RECORD_BYTES = 1504        # boot record length of SQL Server 2012 [V: ITHelpdesk, 0x05e0]
USER_INDEX_ID = 256             # m_indexId of user allocation units [V: both fixtures]
DBI_VERSION = 706               # SQL Server 2012 (formats.md 5.2 [V])
DATA_TYPE_FLAG_BITS = 4         # m_typeFlagBits of data pages [V: both fixtures]
SQL_EPOCH = dt.datetime(1900, 1, 1)

DATABASE = "webshop"
FILE_PAGES = 160
CUSTOMERS_IAM, ORDERS_IAM = 8, 10
CUSTOMERS_MIXED = list(range(11, 16))          # the first pages come from a mixed extent
CUSTOMERS_PAGES = CUSTOMERS_MIXED + list(range(16, 48))
ORDERS_PAGES = list(range(48, 120))
USED_EXTENTS = 120 // EXTENT_PAGES             # extents 0-14 allocated, 15-19 free
CUSTOMERS_OBJ, ORDERS_OBJ = 27, 28             # AllocUnitId.idObj of the two tables

_FIRST = ["Anna", "Ben", "Carla", "David", "Emma", "Felix", "Greta", "Hugo", "Ines", "Jonas",
          "Klara", "Lukas", "Marie", "Noah", "Olga", "Paul", "Rosa", "Simon", "Tina", "Umut"]
_LAST = ["Schmidt", "Meyer", "Novak", "Rossi", "Garcia", "Jensen", "Kowalski", "Dubois",
         "Silva", "Horvat", "Berg", "Lind", "Moreau", "Weber", "Costa", "Fischer"]
_CITIES = ["Berlin", "Hamburg", "Munich", "Vienna", "Zurich", "Prague", "Lyon", "Milan",
           "Porto", "Gdansk", "Aarhus", "Ghent", "Graz", "Basel", "Bremen", "Leipzig"]
_STREETS = ["Hauptstrasse", "Bahnhofstrasse", "Lindenweg", "Rue de la Paix", "Via Roma",
            "Gartenweg", "Marktplatz", "Schillerstrasse", "Kirchgasse", "Am Hafen"]
_NOTES = ["leave at the door", "call before delivery", "gift wrap please", "express",
          "invoice to company", "second attempt", None, None, None, None]


@dataclass(frozen=True)
class DataFile:
    """A generated data file and what is in it (shared by the cache of build_data_file: do not
    change it)."""

    database: str
    data: bytes
    pages: int
    page_types: dict[int, int]           # page id -> m_type, every allocated page
    lsns: dict[int, tuple[int, int, int]]
    tables: dict[str, list[int]]         # table -> its data pages (IAM pages not included)
    allocated: list[int]                 # pages the PFS marks allocated
    sql_server_version: int = DBI_VERSION
    file_id: int = 1
    stale: dict[int, bytes] = field(default_factory=dict)   # page id -> an older valid version

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def page(self, page_id: int) -> bytes:
        return self.data[page_id * PAGE_SIZE:(page_id + 1) * PAGE_SIZE]


def build_page(m_type: int, page_id: int, records: Sequence[bytes], lsn: tuple[int, int, int], *,
               file_id: int = 1, obj_id: int = ALLOCATION_OBJ_ID, index_id: int = 0,
               level: int = 0, type_flag_bits: int = 0, flag_bits: int = FLAG_CHECKSUM,
               pminlen: int = 0, prev_page: tuple[int, int] = (0, 0),
               next_page: tuple[int, int] = (0, 0)) -> bytes:
    """One 8 KiB page: header, the records one after the other from offset 96, the slot array
    at the page end; m_slotCnt, m_freeData and m_freeCnt follow from the records, and with flag
    0x200 the checksum is computed over the finished page (checksum word counted as 0)."""
    free_data = PAGE_HEADER_SIZE + sum(len(r) for r in records)
    slot_cnt = len(records)
    if free_data + 2 * slot_cnt > PAGE_SIZE:
        raise ValueError(f"{slot_cnt} records of {free_data - PAGE_HEADER_SIZE} bytes do not "
                         f"fit a page")
    page = bytearray(PAGE_SIZE)
    offsets, pos = [], PAGE_HEADER_SIZE
    for rec in records:
        page[pos:pos + len(rec)] = rec
        offsets.append(pos)
        pos += len(rec)
    if slot_cnt:
        page[PAGE_SIZE - 2 * slot_cnt:] = SLOT_ARRAY_ENTRY[slot_cnt].build(offsets[::-1])
    header = dict(
        m_headerVersion=1, m_type=m_type, m_typeFlagBits=type_flag_bits, m_level=level,
        m_flagBits=flag_bits, m_indexId=index_id,
        m_prevPage=dict(m_pageId=prev_page[0], m_fileId=prev_page[1]), pminlen=pminlen,
        m_nextPage=dict(m_pageId=next_page[0], m_fileId=next_page[1]), m_slotCnt=slot_cnt,
        m_objId=obj_id, m_freeCnt=PAGE_SIZE - free_data - 2 * slot_cnt, m_freeData=free_data,
        m_pageId=page_id, m_fileId=file_id, m_reservedCnt=0,
        m_lsn=dict(vlf=lsn[0], block=lsn[1], slot=lsn[2]), m_xactReserved=0,
        m_xdesId=dict(part2=0, part1=0), m_ghostRecCnt=0, m_tornBits=0, reserved=bytes(32))
    page[:PAGE_HEADER_SIZE] = page_header.build(header)
    if flag_bits & FLAG_CHECKSUM:
        header["m_tornBits"] = page_checksum(page)
        page[:PAGE_HEADER_SIZE] = page_header.build(header)
    return bytes(page)


def fixed_record(body: bytes) -> bytes:
    """A fixed-length-only record (PFS, allocation bitmaps, boot page): header + body."""
    return record_header.build(dict(RawStatusByteA=0, RawStatusByteB=0,
                                    NullBitmapPointer=RECORD_HEADER_SIZE + len(body))) + body


def fixedvar_record(fixed: bytes, columns: int, variable: Sequence[bytes | None]) -> bytes:
    """A data record: `fixed` holds the fixed-length columns, `variable` the values of the last
    len(variable) columns (None = NULL: its bit set in the NULL bitmap, zero length)."""
    first_var = columns - len(variable)
    bitmap = 0
    for i, value in enumerate(variable):
        if value is None:
            bitmap |= 1 << (first_var + i)
    nb = null_bitmap.build(dict(NullBitmapColumnCount=columns,
                                NullBitmapRawBytes=bitmap.to_bytes((columns + 7) // 8, "little")))
    status = RECORD_HAS_NULL_BITMAP | (RECORD_HAS_VARIABLE_COLUMNS if variable else 0)
    head = record_header.build(dict(RawStatusByteA=status, RawStatusByteB=0,
                                    NullBitmapPointer=RECORD_HEADER_SIZE + len(fixed)))
    if not variable:
        return head + fixed + nb
    end = len(head) + len(fixed) + len(nb) + 2 + 2 * len(variable)
    ends = []
    for value in variable:
        end += len(value or b"")
        ends.append(end)
    offsets = variable_length_offsets.build(dict(
        NumberOfVariableLengthOffsetArrayEntries=len(variable), VariableLengthOffsetArray=ends))
    return head + fixed + nb + offsets + b"".join(v or b"" for v in variable)


def allocation_page(m_type: int, page_id: int, bitmap: bytes, lsn: tuple[int, int, int], *,
                    flag_bits: int = FLAG_CHECKSUM, header_body: bytes | None = None,
                    obj_id: int = ALLOCATION_OBJ_ID, index_id: int = 0,
                    file_id: int = 1) -> bytes:
    """A GAM, SGAM, DCM, BCM or IAM page: a 94-byte header record (slot 0, zeros unless
    `header_body` gives its 90 bytes) and the extent bitmap record (slot 1, bitmap at 194)."""
    body = bytes(ALLOCATION_PMINLEN) if header_body is None else header_body
    if len(body) != ALLOCATION_PMINLEN or len(bitmap) != IAM_BITMAP_BYTES:
        raise ValueError("allocation page: 90-byte header and 7,988-byte bitmap expected")
    return build_page(m_type, page_id, [fixed_record(body), fixed_record(bitmap)], lsn,
                      file_id=file_id, obj_id=obj_id, index_id=index_id, flag_bits=flag_bits,
                      pminlen=ALLOCATION_PMINLEN)


def pfs_page(page_id: int, pfs_bytes: bytes, lsn: tuple[int, int, int], file_id: int = 1) -> bytes:
    """A PFS page: one record of one byte per page of its 8,088-page range."""
    if len(pfs_bytes) != PFS_INTERVAL:
        raise ValueError("a PFS page holds 8,088 bytes")
    return build_page(TYPE_PFS, page_id, [fixed_record(pfs_bytes)], lsn, file_id=file_id)


def extent_bitmap(extents: Sequence[int], invert: bool = False) -> bytes:
    """7,988 bitmap bytes with the given extents set (bit j of byte i = extent 8i + j), or, with
    `invert`, every extent set but those (a GAM marks free extents)."""
    bits = bytearray(b"\xff" * IAM_BITMAP_BYTES if invert else IAM_BITMAP_BYTES)
    for e in extents:
        if invert:
            bits[e // 8] &= ~(1 << (e % 8)) & 0xFF
        else:
            bits[e // 8] |= 1 << (e % 8)
    return bytes(bits)


def sql_datetime_bytes(when: dt.datetime) -> bytes:
    delta = when - SQL_EPOCH
    ticks = (delta.seconds * SQL_DATETIME_TICKS_PER_SECOND
             + delta.microseconds * SQL_DATETIME_TICKS_PER_SECOND // 1_000_000)
    return sql_datetime.build(dict(time=ticks, date=delta.days))


def _nvarchar(text: str) -> bytes:
    return text.encode("utf-16-le")


def _file_header_page(rng: random.Random, pages: int, lsn: tuple[int, int, int]) -> bytes:
    """Page 0: one record with a 4-byte fixed part, a NULL bitmap and variable-length columns of
    the widths the ITHelpdesk fixture has (columns 0-27 of its 46) [V]; what most of them mean is
    not public (formats.md 5.2) so they stay zero, except column 0 (16 bytes, a GUID there),
    2 and 3 (1, 1), 4 (size in pages - the one the carver reads), 5 (max size: -1 = unlimited),
    6 (growth 128 pages), 23 (a GUID there) and 27 (the logical file name)."""
    widths = [16, 0, 2, 2, 4, 4, 4, 4, 10, 10, 10, 0, 4, 4, 4, 4, 10, 28, 10, 10, 10, 16, 10, 16,
              4, 10, 0]
    values = [bytes(w) for w in widths]
    values[0] = rng.randbytes(16)
    values[2] = values[3] = (1).to_bytes(2, "little")
    values[4] = pages.to_bytes(4, "little")
    values[5] = b"\xff\xff\xff\xff"
    values[6] = (128).to_bytes(4, "little")
    values[23] = rng.randbytes(16)
    values.append(_nvarchar(DATABASE))
    rec = fixedvar_record(bytes(4), 1 + len(values), values)
    return build_page(TYPE_FILE_HEADER, 0, [rec], lsn, flag_bits=FILE_HEADER_FLAGS)


def _boot_page(rng: random.Random, lsn: tuple[int, int, int]) -> bytes:
    """Page 9: the boot record (record length 1504 as SQL Server 2012 writes it; the fields
    after dbi_dbid are not modelled and stay zero)."""
    name = _nvarchar(DATABASE)
    fields = dict(
        record_header=record_header.build(dict(RawStatusByteA=0, RawStatusByteB=0,
                                               NullBitmapPointer=BOOT_RECORD_BYTES)),
        dbi_version=DBI_VERSION, dbi_createVersion=DBI_VERSION,
        unknown_08=bytes(0x24 - 0x08), dbi_status=0x00010009,
        dbi_nextid=rng.randrange(1 << 20, 1 << 23),
        dbi_crdate=sql_datetime_bytes(dt.datetime(2023, 3, 14, 9, 26, 53)),
        dbi_dbname=name + " ".encode("utf-16-le") * ((256 - len(name)) // 2),
        unknown_134=bytes(4), dbi_dbid=5)
    rec = boot_record.build(fields)
    rec += bytes(BOOT_RECORD_BYTES - len(rec))
    return build_page(TYPE_BOOT, BOOT_PAGE_ID, [rec], lsn)


def _customer_record(rng: random.Random, cid: int) -> bytes:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    created = dt.datetime(2021, 1, 1) + dt.timedelta(minutes=cid * 397 + rng.randrange(300))
    fixed = cid.to_bytes(4, "little") + sql_datetime_bytes(created) + bytes([rng.random() < 0.9])
    email = f"{first}.{last}{rng.randrange(100)}@example.{rng.choice(['com', 'org', 'net'])}"
    return fixedvar_record(fixed, 6, [_nvarchar(f"{first} {last}"), _nvarchar(email.lower()),
                                      _nvarchar(rng.choice(_CITIES))])


def _order_record(rng: random.Random, oid: int, customers: int) -> bytes:
    placed = dt.datetime(2022, 6, 1) + dt.timedelta(minutes=oid * 61 + rng.randrange(60))
    cents = rng.randrange(499, 250_000)
    fixed = (oid.to_bytes(4, "little") + rng.randrange(1, customers + 1).to_bytes(4, "little")
             + Int64sl.build(cents * 100)            # money: 1/10000 units
             + sql_datetime_bytes(placed) + bytes([rng.choice([1, 2, 2, 3, 3, 3, 4])]))
    address = (f"{rng.choice(_STREETS)} {rng.randrange(1, 180)}, {rng.randrange(1000, 99999)} "
               f"{rng.choice(_CITIES)}")
    note = rng.choice(_NOTES)
    return fixedvar_record(fixed, 7, [_nvarchar(address),
                                      None if note is None else _nvarchar(note)])


def _fill_pages(rng: random.Random, pages: list[int], make: Callable[[int], bytes],
                first_key: int) -> tuple[dict[int, list[bytes]], int]:
    """Rows spread over the table's pages in key order: {page: [records]}, and the next key."""
    out: dict[int, list[bytes]] = {}
    key = first_key
    room = PAGE_SIZE - PAGE_HEADER_SIZE
    for p in pages:
        budget = int(room * rng.uniform(0.62, 0.97))      # fill after page splits and deletes
        recs: list[bytes] = []
        used = 0
        while True:
            rec = make(key)
            if used + len(rec) + 2 > budget:
                break
            recs.append(rec)
            used += len(rec) + 2
            key += 1
        out[p] = recs
    return out, key


@functools.lru_cache(maxsize=4)
def build_data_file(seed: int = 0) -> DataFile:
    """The "webshop" data file (FILE_PAGES pages) for a seed; see the module docstring."""
    rng = random.Random(f"srsalvage-demo-mdf-{seed}")
    data = bytearray(FILE_PAGES * PAGE_SIZE)
    types: dict[int, int] = {}
    lsns: dict[int, tuple[int, int, int]] = {}
    pfs = bytearray(PFS_INTERVAL)

    def lsn(vlf: int) -> tuple[int, int, int]:
        return (vlf, rng.randrange(2, 600) * 8, rng.randrange(1, 400))

    def put(page_id: int, page: bytes, pfs_byte: int) -> None:
        data[page_id * PAGE_SIZE:(page_id + 1) * PAGE_SIZE] = page
        head = page_header.parse(page)
        types[page_id] = head.m_type
        lsns[page_id] = (head.m_lsn.vlf, head.m_lsn.block, head.m_lsn.slot)
        pfs[page_id] = pfs_byte

    system = PFS_ALLOCATED | PFS_FULL
    put(0, _file_header_page(rng, FILE_PAGES, lsn(34)), system)
    put(2, allocation_page(TYPE_GAM, 2, extent_bitmap(range(USED_EXTENTS), invert=True),
                           lsn(44)), system)
    put(3, allocation_page(TYPE_SGAM, 3, extent_bitmap([]), lsn(44)), system)
    put(6, allocation_page(TYPE_DCM, 6, extent_bitmap(range(USED_EXTENTS)), lsn(44)), system)
    # the BCM page carries no checksum and LSN 0:0:1 until a minimally logged operation [V: both
    # fixtures]
    put(7, allocation_page(TYPE_BCM, 7, extent_bitmap([]), (0, 0, 1), flag_bits=0), system)
    put(BOOT_PAGE_ID, _boot_page(rng, lsn(46)), system | PFS_MIXED_EXTENT)

    customers, next_cid = _fill_pages(rng, CUSTOMERS_PAGES,
                                      lambda k: _customer_record(rng, k), 1)
    orders, _ = _fill_pages(rng, ORDERS_PAGES,
                            lambda k: _order_record(rng, k, next_cid - 1), 100_001)
    stale: dict[int, bytes] = {}
    for table, obj, iam, chain in (("Customers", CUSTOMERS_OBJ, CUSTOMERS_IAM, customers),
                                   ("Orders", ORDERS_OBJ, ORDERS_IAM, orders)):
        pages = list(chain)
        for i, p in enumerate(pages):
            prev = (pages[i - 1], 1) if i else (0, 0)
            nxt = (pages[i + 1], 1) if i + 1 < len(pages) else (0, 0)
            recs = chain[p]
            common = dict(obj_id=obj, index_id=USER_INDEX_ID, type_flag_bits=DATA_TYPE_FLAG_BITS,
                          pminlen=record_header.parse(recs[0]).NullBitmapPointer,
                          prev_page=prev, next_page=nxt)
            vlf = 40 + (p * 5) // FILE_PAGES
            page = build_page(TYPE_DATA, p, recs, lsn(vlf), **common)
            mixed = PFS_MIXED_EXTENT if p in CUSTOMERS_MIXED else 0
            put(p, page, PFS_ALLOCATED | mixed)
            if p in DEMO_STALE_PAGES:
                # the same page before its last rows were inserted: an older log position
                older = recs[:max(1, len(recs) - rng.randrange(3, 9))]
                stale[p] = build_page(TYPE_DATA, p, older, (vlf - 2, rng.randrange(2, 600) * 8,
                                                            rng.randrange(1, 400)), **common)
        # the IAM page: the mixed pages as single-page slots, the uniform extents in the bitmap
        singles = [dict(m_pageId=s, m_fileId=1) for s in pages if s in CUSTOMERS_MIXED]
        singles += [dict(m_pageId=0, m_fileId=0)] * (IAM_SINGLE_PAGE_SLOTS - len(singles))
        head = bytes(36) + iam_header.build(dict(start_pg=dict(m_pageId=0, m_fileId=1),
                                                 single_pages=singles))
        uniform = sorted({s // EXTENT_PAGES for s in pages if s not in CUSTOMERS_MIXED})
        put(iam, allocation_page(TYPE_IAM, iam, extent_bitmap(uniform), lsn(40),
                                 header_body=head, obj_id=obj, index_id=USER_INDEX_ID),
            PFS_ALLOCATED | PFS_IAM_PAGE | PFS_MIXED_EXTENT)
    pfs[1] = system                                  # the PFS page marks itself allocated
    put(1, pfs_page(1, bytes(pfs), lsn(46)), system)
    return DataFile(
        database=DATABASE, data=bytes(data), pages=FILE_PAGES,
        page_types=dict(sorted(types.items())), lsns=dict(sorted(lsns.items())),
        tables={"Customers": CUSTOMERS_PAGES, "Orders": ORDERS_PAGES},
        allocated=sorted(i for i, b in enumerate(pfs) if b & PFS_ALLOCATED), stale=stale)


# -- the plan: where the demo puts them --------------------------------------------------------
MIB = 1 << 20
SQL_VDI, WEB_VDI = "sql", "web"
DATA_FILE_AT = 6 * MIB                       # virtual offset in the "sql" VDI (8 KiB aligned)
# (first page, byte offset inside it, bytes): text written over the data file afterwards
DEMO_OVERWRITES = [(30, 3 * 1024, 20 * 1024), (75, 0, 2 * PAGE_SIZE)]
DEMO_STALE_PAGES = (20, 21, 22)              # an older copy of these lies elsewhere
STALE_COPY_AT = 14 * MIB + 40 * 1024         # in the "sql" VDI, 8 KiB aligned
ARCHIVE_AT = 12 * MIB + 3 * 4096             # in the "web" VDI (a file system's 4 KiB block)
DAMAGED_ARCHIVE_AT = 80 * MIB + 14 * 4096
DAMAGED_MEMBER = 1                           # the copy's 2nd FILE header has a corrupted CRC


@dataclass
class DataFileTruth:
    vdi: str                       # demo VDI key
    database: str
    file_id: int
    sql_server_version: int
    pages: int
    virtual_offset: int            # of page 0 in the VDI's virtual disk
    bytes: int
    sha256_original: str           # the file as SQL Server left it
    sha256: str                    # what a carve gives back: missing pages zero-filled
    missing_pages: list[int]       # allocated pages whose every copy was overwritten
    damaged_pages: list[int]       # of those, the ones whose header survives (bad checksum)
    stale_pages: list[int]         # pages with an older valid copy elsewhere (lower LSN)
    stale_virtual_offset: int      # where that older copy of the first one lies
    overwritten: list[list[int]]   # [[virtual offset, bytes], ...] written over the file
    allocated_pages: int
    disk_ranges: list[list[int]] = field(default_factory=list)   # [[image offset, bytes]]


@dataclass
class ArchiveTruth:
    vdi: str
    virtual_offset: int
    bytes: int                     # of the archive as written
    complete: bool
    files: list[dict[str, Any]]    # {name, size, crc32 (8 hex digits)} the carver can list
    carved_bytes: int              # what a carve gives back (to the first bad header)
    first_bad_header: int | None   # virtual offset of the damaged header
    disk_ranges: list[list[int]] = field(default_factory=list)


@dataclass
class CarvingTruth:
    data_file: DataFileTruth
    archives: list[ArchiveTruth]


@dataclass
class CarvingPlan:
    payloads: dict[str, list[tuple[int, bytes]]]
    truth: CarvingTruth


def _file_json(m: ArchiveMember) -> dict[str, Any]:
    return {"name": m.name, "size": len(m.data), "crc32": "%08x" % m.crc32}


def demo_carving_plan(seed: int = 0) -> CarvingPlan:
    """The payloads for `build_demo` and the truth for its manifest (see the module docstring)."""
    df = build_data_file(seed)
    rng = random.Random(f"srsalvage-demo-overwrite-{seed}")
    sql: list[tuple[int, bytes]] = [(DATA_FILE_AT, df.data)]
    missing: set[int] = set()
    damaged: set[int] = set()
    overwritten = []
    expected = bytearray(df.data)
    for first, skip, length in DEMO_OVERWRITES:
        start = first * PAGE_SIZE + skip
        sql.append((DATA_FILE_AT + start, access_log(rng, length)))
        overwritten.append([DATA_FILE_AT + start, length])
        for p in range(start // PAGE_SIZE, (start + length - 1) // PAGE_SIZE + 1):
            missing.add(p)
            if p * PAGE_SIZE < start:              # the header before the overwrite survives
                damaged.add(p)
    for p in missing:
        expected[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = bytes(PAGE_SIZE)
    if set(DEMO_STALE_PAGES) & missing or not missing <= set(df.allocated):
        raise RuntimeError("demo plan: stale copies must be of pages that survive, and "
                           "overwritten pages must be allocated ones")
    stale = b"".join(df.stale[p] for p in DEMO_STALE_PAGES)
    sql.append((STALE_COPY_AT, stale))

    members = backup_members(seed)
    archive, header_offsets = build_rar_archive(members)
    damaged_copy = bytearray(archive)
    bad = header_offsets[DAMAGED_MEMBER]
    damaged_copy[bad] ^= 0xFF                       # the stored header CRC no longer matches
    files = [_file_json(m) for m in members]
    truth = CarvingTruth(
        data_file=DataFileTruth(
            vdi=SQL_VDI, database=df.database, file_id=df.file_id,
            sql_server_version=df.sql_server_version, pages=df.pages,
            virtual_offset=DATA_FILE_AT, bytes=len(df.data), sha256_original=df.sha256,
            sha256=hashlib.sha256(expected).hexdigest(), missing_pages=sorted(missing),
            damaged_pages=sorted(damaged), stale_pages=list(DEMO_STALE_PAGES),
            stale_virtual_offset=STALE_COPY_AT, overwritten=overwritten,
            allocated_pages=len(df.allocated)),
        archives=[
            ArchiveTruth(vdi=WEB_VDI, virtual_offset=ARCHIVE_AT, bytes=len(archive),
                         complete=True, files=files, carved_bytes=len(archive),
                         first_bad_header=None),
            ArchiveTruth(vdi=WEB_VDI, virtual_offset=DAMAGED_ARCHIVE_AT, bytes=len(archive),
                         complete=False, files=files[:DAMAGED_MEMBER], carved_bytes=bad,
                         first_bad_header=DAMAGED_ARCHIVE_AT + bad)])
    payloads = {SQL_VDI: sql, WEB_VDI: [(ARCHIVE_AT, archive),
                                        (DAMAGED_ARCHIVE_AT, bytes(damaged_copy))]}
    return CarvingPlan(payloads, truth)


__all__ = ["DataFile", "build_data_file", "build_page", "fixed_record", "fixedvar_record",
           "allocation_page", "pfs_page", "extent_bitmap", "ArchiveMember", "rar5_header",
           "build_rar_archive", "backup_members", "access_log", "demo_carving_plan",
           "CarvingPlan", "CarvingTruth", "DataFileTruth", "ArchiveTruth", "DATABASE",
           "FILE_PAGES"]
