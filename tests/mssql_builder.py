"""A small SQL Server data file WITH its catalog, built for the tests from the documented
layouts (core.structs.mssql: boot record, base table rows, FixedVar records, IAM and PFS pages
through core.demo_payloads' page builders): the system base tables the engine reads
(sysallocunits, sysrowsets, sysschobjs, syscolpars, sysrscols, sysclsobjs) and two user tables
whose seed values are given as Python values. Each value is written in its on-disk format here
and its expected text (what SQL Server shows) is derived separately in the test, from the
documented text forms.

* dbo.Customers: a clustered index over three linked leaf pages; every decoded type; NULLs;
  two bit columns sharing a byte; a dropped column still taking its place in the records.
* sales.Events: a heap found through its IAM page (single-page slots); a ghost record; a row
  moved to another page (forwarding stub + forwarded record with its back pointer); a varchar
  value pushed off-row (row-overflow pointer to a blob fragment on a text page); a page the PFS
  marks free that still names the table (leftover rows SQL Server does not return).
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from core.demo_payloads import allocation_page, build_page, extent_bitmap, pfs_page
from core.mssql.pages import alloc_unit_id
from core.mssql import types as T
from core.structs.mssql import (
    BOOT_FIRST_SYS_INDEXES, FLAG_CHECKSUM, IAM_SINGLE_PAGE_SLOTS, PAGE_SIZE, PFS_ALLOCATED,
    PFS_INTERVAL, RSCOL_DROPPED, RSCOL_NOT_NULL, SYSALLOCUNITS, SYSCLSOBJS, SYSCOLPARS,
    SYSROWSETS_AUID, SYSRSCOLS, SYSSCHOBJS, blob_inline_entry, blob_inline_root, boot_record,
    iam_header, lob_data_head, null_bitmap, page_checksum, record_header,
    sysallocunits_fixed, sysclsobjs_fixed, syscolpars_fixed, sysrowsets_fixed, sysrscols_fixed,
    sysschobjs_fixed, variable_length_offsets,
)

DATABASE = "seedshop"
BINDING_ID = uuid.UUID("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0")
NOW = dict(time=0, date=45000)
LSN = (50, 16, 1)
FILE_PAGES = 40
COLLATION = 872468488                  # SQL_Latin1_General_CP1_CI_AS


# -- records ----------------------------------------------------------------------------------
def record(fixed: bytes, ncols: int, nulls: set[int], var: list[bytes], complex_: set[int] = (),
           kind: int = 0) -> bytes:
    """A FixedVar record: status A (kind << 1 | 0x10 | 0x20 when var columns), fixed data, the
    column count and NULL bitmap (bit n-1 for column n in `nulls`), the variable offsets."""
    status = (kind << 1) | 0x10 | (0x20 if var else 0)
    head = record_header.build(dict(RawStatusByteA=status, RawStatusByteB=0,
                                    NullBitmapPointer=4 + len(fixed)))
    bitmap = sum(1 << (n - 1) for n in nulls).to_bytes((ncols + 7) // 8, "little")
    out = head + fixed + null_bitmap.build(dict(NullBitmapColumnCount=ncols,
                                                NullBitmapRawBytes=bitmap))
    if not var:
        return out
    end = len(out) + 2 + 2 * len(var)
    ends = []
    for i, v in enumerate(var):
        end += len(v)
        ends.append(end | (0x8000 if i in complex_ else 0))
    return out + variable_length_offsets.build(dict(
        NumberOfVariableLengthOffsetArrayEntries=len(var),
        VariableLengthOffsetArray=ends)) + b"".join(var)


def sysname(text: str) -> bytes:
    return text.encode("utf-16-le")


# -- value encoders (storage formats: core.mssql.types docstring) ------------------------------
def enc_datetime(v: dt.datetime) -> bytes:
    midnight = dt.datetime.combine(v.date(), dt.time())
    delta = v - midnight
    ticks = round((delta.seconds + delta.microseconds / 1e6) * 300)
    return struct.pack("<ii", ticks, (v.date() - dt.date(1900, 1, 1)).days)


def enc_date(v: dt.date) -> bytes:
    return (v.toordinal() - 1).to_bytes(3, "little")


def enc_time(v: dt.time, scale: int) -> bytes:
    units = ((v.hour * 3600 + v.minute * 60 + v.second) * 10 ** scale
             + v.microsecond * 10 ** scale // 10 ** 6)
    return units.to_bytes(3 if scale < 3 else 4 if scale < 5 else 5, "little")


def enc_datetime2(v: dt.datetime, scale: int) -> bytes:
    return enc_time(v.time(), scale) + enc_date(v.date())


def enc_dto(v: dt.datetime, scale: int) -> bytes:
    off = int(v.utcoffset().total_seconds() // 60)
    utc = (v - v.utcoffset()).replace(tzinfo=None)
    return enc_datetime2(utc, scale) + struct.pack("<h", off)


def enc_decimal(v: Decimal, prec: int, scale: int) -> bytes:
    n = int(abs(v) * 10 ** scale)
    size = 4 if prec < 10 else 8 if prec < 20 else 12 if prec < 29 else 16
    return bytes([0 if v < 0 else 1]) + n.to_bytes(size, "little")


@dataclass
class Col:
    name: str
    xtype: int
    length: int
    enc: Callable[[Any], bytes] | None
    prec: int = 0
    scale: int = 0
    nullable: bool = True
    dropped: bool = False
    collation: int = 0


def customers_columns() -> list[Col]:
    return [
        Col("CustomerID", T.INT, 4, lambda v: struct.pack("<i", v), 10, nullable=False),
        Col("Legacy", T.INT, 4, lambda v: struct.pack("<i", v), 10, dropped=True),
        Col("Name", T.NVARCHAR, 100, lambda v: v.encode("utf-16-le"), collation=COLLATION),
        Col("Email", T.VARCHAR, 100, lambda v: v.encode("cp1252"), collation=COLLATION),
        Col("Balance", T.MONEY, 8, lambda v: struct.pack("<q", int(v * 10000)), 19, 4),
        Col("Rate", T.DECIMAL, 9, lambda v: enc_decimal(v, 12, 4), 12, 4),
        Col("Active", T.BIT, 1, None, 1),
        Col("Vip", T.BIT, 1, None, 1),
        Col("Born", T.DATE, 3, enc_date, 10),
        Col("Created", T.DATETIME, 8, enc_datetime, 23, 3),
        Col("Updated", T.DATETIME2, 7, lambda v: enc_datetime2(v, 3), 23, 3),
        Col("Uid", T.UNIQUEIDENTIFIER, 16, lambda v: v.bytes_le),
        Col("Score", T.FLOAT, 8, lambda v: struct.pack("<d", v), 53),
        Col("Ratio", T.REAL, 4, lambda v: struct.pack("<f", v), 24),
        Col("Small", T.SMALLINT, 2, lambda v: struct.pack("<h", v), 5),
        Col("Tiny", T.TINYINT, 1, lambda v: bytes([v]), 3),
        Col("Big", T.BIGINT, 8, lambda v: struct.pack("<q", v), 19),
        Col("Code", T.CHAR, 4, lambda v: v.encode("cp1252"), collation=COLLATION),
        Col("NCode", T.NCHAR, 6, lambda v: v.encode("utf-16-le"), collation=COLLATION),
        Col("At", T.TIME, 5, lambda v: enc_time(v, 7), 16, 7),
        Col("Offset", T.DATETIMEOFFSET, 8, lambda v: enc_dto(v, 2), 28, 2),
        Col("Blob", T.VARBINARY, 8, lambda v: v),
        Col("Price", T.SMALLMONEY, 4, lambda v: struct.pack("<i", int(v * 10000)), 10, 4),
    ]


def customers_rows() -> list[dict[str, Any]]:
    """The seed: 60 customers (enough for three leaf pages), some values NULL."""
    rows = []
    for i in range(1, 61):
        rows.append({
            "CustomerID": i, "Legacy": 1000 + i,
            "Name": None if i % 17 == 0 else f"Kunde {i} Müller-Šťastný",
            "Email": None if i % 5 == 0 else f"user{i}@exämple.com",
            "Balance": Decimal(i * 1234567) / 100 * (-1 if i % 7 == 0 else 1),
            "Rate": Decimal(i * 31) / 10000,
            "Active": i % 2 == 0, "Vip": i % 3 == 0,
            "Born": dt.date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
            "Created": dt.datetime(2020, 1, 1) + dt.timedelta(days=i, seconds=i * 3671,
                                                              milliseconds=i * 7),
            "Updated": None if i % 11 == 0 else dt.datetime(2023, 5, i % 28 + 1, 8, 30, 15,
                                                             123000),
            "Uid": uuid.UUID(int=(i * 0x1234567890ABCDEF1234567) % (1 << 128)),
            "Score": i / 3, "Ratio": float(i) / 4, "Small": -i, "Tiny": 200 + i % 50,
            "Big": -(1 << 40) * i, "Code": f"C{i:03d}"[:4], "NCode": "Ω" + f"{i % 100:02d}",
            "At": dt.time(i % 24, 15, 30, 250000),
            "Offset": dt.datetime(2024, 1, 15, 9, 30, tzinfo=dt.timezone(dt.timedelta(minutes=60))),
            "Blob": None if i % 2 else bytes([i, 0, 255]),
            "Price": Decimal(i) / 8,
        })
    return rows


def events_columns() -> list[Col]:
    return [
        Col("EventID", T.INT, 4, lambda v: struct.pack("<i", v), 10, nullable=False),
        Col("Kind", T.VARCHAR, 20, lambda v: v.encode("ascii"), collation=COLLATION),
        Col("Payload", T.VARCHAR, 8000, lambda v: v.encode("ascii"), collation=COLLATION),
        Col("Notes", T.NTEXT, 16, lambda v: v.encode("utf-16-le"), collation=COLLATION),
        Col("Doc", T.VARBINARY, -1, lambda v: v),
    ]


def events_rows() -> list[dict[str, Any]]:
    """Row 1's Notes: a text pointer to a SMALL_ROOT; row 3's: to a LARGE_ROOT_YUKON over two
    DATA fragments; row 2's Doc (varbinary(max)) a BLOB inline root to an INTERNAL node over
    two DATA fragments; row 3's Payload pushed off-row (row-overflow pointer)."""
    return [{"EventID": 1, "Kind": "login", "Payload": "ok", "Notes": "kurz ☺", "Doc": b"\x01"},
            {"EventID": 2, "Kind": "moved", "Payload": "grew too large for its page " * 3,
             "Notes": None, "Doc": bytes(range(256)) * 12},
            {"EventID": 3, "Kind": "big", "Payload": "X" * 5000,
             "Notes": "Ä" * 700 + "Z" * 500, "Doc": None},
            {"EventID": 4, "Kind": None, "Payload": None, "Notes": None, "Doc": None}]


# -- the layout of a user table's records -------------------------------------------------------
def table_layout(cols: list[Col]) -> list[dict[str, Any]]:
    """Leaf offset / variable index / NULL bit / bit position of each physical column."""
    out, offset, var_i, bit_byte, bits = [], 4, 0, None, 8
    for n, c in enumerate(cols, start=1):
        entry = {"col": c, "colid": n, "null_bit": n, "bitpos": 0}
        if c.xtype in T.VARIABLE_TYPES:
            entry["offset"] = -(var_i + 1)
            var_i += 1
        elif c.xtype == T.BIT:
            if bits == 8:
                bit_byte, bits = offset, 0
                offset += 1
            entry["offset"], entry["bitpos"] = bit_byte, bits
            bits += 1
        else:
            entry["offset"] = offset
            offset += c.length
        out.append(entry)
    return out


def table_record(layout: list[dict[str, Any]], row: dict[str, Any],
                 overflow: dict[str, bytes] | None = None) -> bytes:
    fixed_len = max([e["offset"] + (1 if e["col"].xtype == T.BIT else e["col"].length)
                     for e in layout if e["offset"] >= 0] + [4])
    fixed = bytearray(fixed_len - 4)
    nulls: set[int] = set()
    var: list[bytes] = []
    complex_: set[int] = set()
    for e in layout:
        c, v = e["col"], row.get(e["col"].name)
        if v is None:
            nulls.add(e["null_bit"])
        if e["offset"] < 0:
            idx = -e["offset"] - 1
            while len(var) <= idx:
                var.append(b"")
            if overflow and c.name in overflow:
                var[idx] = overflow[c.name]
                complex_.add(idx)
            elif v is not None:
                var[idx] = c.enc(v)
        elif v is not None:
            if c.xtype == T.BIT:
                if v:
                    fixed[e["offset"] - 4] |= 1 << e["bitpos"]
            else:
                raw = c.enc(v)
                assert len(raw) == c.length, c.name
                fixed[e["offset"] - 4: e["offset"] - 4 + len(raw)] = raw
    while var and not var[-1] and (len(var) - 1) not in complex_ and all(
            e["null_bit"] in nulls for e in layout if e["offset"] == -len(var)):
        var.pop()                        # trailing NULL variable columns are left out
    return record(bytes(fixed), len(layout), nulls, var, complex_)


# -- system base table rows ----------------------------------------------------------------------
def sys_row(layout, values: dict, var: list[bytes] = (), ncols: int | None = None) -> bytes:
    fixed = layout.build(values)
    return record(fixed, ncols or len(layout.subcons) + len(var), set(), list(var))


def pid(page: int, file: int = 1) -> dict:
    return dict(m_pageId=page, m_fileId=file)


def _obj_index(auid: int) -> tuple[int, int]:
    return (auid >> 16) & 0xFFFFFFFF, auid >> 48


def data_page(page_id: int, auid: int, recs: list[bytes], prev: int = 0, nxt: int = 0,
              m_type: int = 1, file_id: int = 1, prev_file: int = 1,
              next_file: int = 1) -> bytes:
    obj, idx = _obj_index(auid)
    return build_page(m_type, page_id, recs, LSN, obj_id=obj, index_id=idx, file_id=file_id,
                      prev_page=(prev, prev_file if prev else 0),
                      next_page=(nxt, next_file if nxt else 0))


NDF_FILE_ID, NDF_PAGE = 3, 5


def file_header(file_id: int, pages: int) -> bytes:
    """Page 0: the BindingId (variable column 0), file id, filegroup, size in pages."""
    fh_vars = [BINDING_ID.bytes_le, b"", struct.pack("<H", file_id), struct.pack("<H", 1),
               struct.pack("<I", pages)]
    return build_page(15, 0, [record(bytes(4), len(fh_vars) + 1, set(), fh_vars)], LSN,
                      flag_bits=FLAG_CHECKSUM | 8, file_id=file_id)


def build_seed_database(split: bool = False, compressed: bool = False) -> tuple[bytes, dict[str, Any]] | tuple[
        bytes, dict[str, Any], bytes]:
    """(the data file, what is in it: table -> (schema, columns, seed rows)); with `split`,
    dbo.Customers' last leaf page lives in a second file of the database (file 3, page 5) and
    that .ndf comes third. With `compressed`, sales.Events is ROW compressed: its pages hold
    CD records (header byte: bit 0 CD, bits 2-4 type) - two primary, a ghost, a forwarding stub
    and its forwarded record: 3 rows."""
    pages: dict[int, bytes] = {}
    allocated: set[int] = {0, 1, 9}
    cust_cols, ev_cols = customers_columns(), events_columns()
    cust_layout, ev_layout = table_layout(cust_cols), table_layout(ev_cols)
    cust_rows, ev_rows = customers_rows(), events_rows()
    CUST_OBJ, EV_OBJ = 245575913, 261575970
    CUST_RS, EV_RS = 72057594039042048, 72057594039107584
    CUST_AU, EV_AU, EV_OVERFLOW_AU = 72057594040221696, 72057594040287232, 72057594040352768

    # dbo.Customers: leaf pages 24, 25, 26 linked in key order
    recs = [table_record(cust_layout, r) for r in cust_rows]
    chunks = [recs[0:20], recs[20:40], recs[40:60]]
    for i, chunk in enumerate(chunks):
        p = 24 + i
        pages[p] = data_page(p, CUST_AU, chunk, prev=p - 1 if i else 0, nxt=p + 1 if i < 2 else 0)
        allocated.add(p)
    ndf = None
    if split:
        pages[25] = data_page(25, CUST_AU, chunks[1], prev=24, nxt=NDF_PAGE,
                              next_file=NDF_FILE_ID)
        del pages[26]
        allocated.discard(26)
        ndf_pages = {0: file_header(NDF_FILE_ID, 8),
                     NDF_PAGE: data_page(NDF_PAGE, CUST_AU, chunks[2], prev=25,
                                         file_id=NDF_FILE_ID)}
        ndf_pfs = bytearray(PFS_INTERVAL)
        ndf_pfs[0] = ndf_pfs[1] = ndf_pfs[NDF_PAGE] = PFS_ALLOCATED
        ndf_pages[1] = pfs_page(1, bytes(ndf_pfs), LSN, file_id=NDF_FILE_ID)
        ndf = bytearray(8 * PAGE_SIZE)
        for p, content in ndf_pages.items():
            ndf[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = content

    # sales.Events: heap pages 28 (rows 1, ghost, stub of row 2, row 3 with overflow, row 4)
    # and 29 (the forwarded row 2); text pages 30 and 32 hold the off-row values; 31 is free
    def lob(kind: int, body: bytes) -> bytes:
        blob = lob_data_head.build(dict(blob_id=0x1122334455, type=kind)) + body
        return record_header.build(dict(RawStatusByteA=4 << 1, RawStatusByteB=0,
                                        NullBitmapPointer=4 + len(blob))) + blob

    def links_head(kind: int, n: int) -> bytes:
        return struct.pack("<HHH", 5, n, 0)                  # maxlinks, curlinks, level

    def tp(page: int, slot: int) -> bytes:                     # a text pointer
        return struct.pack("<IIIHH", 0x77, 0, page, 1, slot)

    payload3 = ev_rows[2]["Payload"].encode("ascii")
    notes1 = ev_rows[0]["Notes"].encode("utf-16-le")
    notes3 = ev_rows[2]["Notes"].encode("utf-16-le")
    doc2 = ev_rows[1]["Doc"]
    text30 = [
        lob(3, payload3),                                                   # slot 0
        lob(0, struct.pack("<H", len(notes1)) + bytes(4) + notes1.ljust(64, b"\0")),   # 1
        lob(3, notes3[:1000]), lob(3, notes3[1000:]),                       # slots 2, 3
        lob(5, links_head(5, 2) + bytes(4)
            + blob_inline_entry.build(dict(length=1000, page=30, file=1, slot=2))
            + blob_inline_entry.build(dict(length=len(notes3), page=30, file=1, slot=3))),
    ]
    pages[30] = data_page(30, EV_OVERFLOW_AU, text30, m_type=3)
    text32 = [lob(3, doc2[:2000]), lob(3, doc2[2000:]),
              lob(2, links_head(2, 2)
                  + struct.pack("<qIHH", 2000, 32, 1, 0)
                  + struct.pack("<qIHH", len(doc2), 32, 1, 1))]
    pages[32] = data_page(32, EV_OVERFLOW_AU, text32, m_type=3)
    allocated.add(32)
    pointer = (blob_inline_root.build(dict(type=2, index_level=0, unused=0, sequence=1,
                                           timestamp=0x5A5A))
               + blob_inline_entry.build(dict(length=len(payload3), page=30, file=1, slot=0)))
    doc_root = (blob_inline_root.build(dict(type=4, index_level=1, unused=0, sequence=1,
                                            timestamp=0x5A5A))
                + blob_inline_entry.build(dict(length=len(doc2), page=32, file=1, slot=2)))
    ghost = bytearray(table_record(ev_layout, {"EventID": 99, "Kind": "deleted",
                                                "Payload": "gone"}))
    ghost[0] = (ghost[0] & ~0x0E) | (6 << 1)             # ghost data record
    stub = bytes([2 << 1]) + struct.pack("<IHH", 29, 1, 0)
    forwarded = bytearray(table_record(ev_layout, ev_rows[1], {"Doc": doc_root}))
    # the forwarded record: kind 1 and one more variable column, the back pointer (0x0400, RID)
    back = struct.pack("<H", 0x0400) + struct.pack("<IHH", 28, 1, 2)
    fwd_rec = _append_var(bytes(forwarded), back, kind=1)
    pages[28] = data_page(28, EV_AU, [
        table_record(ev_layout, ev_rows[0], {"Notes": tp(30, 1)}), bytes(ghost), stub,
        table_record(ev_layout, ev_rows[2], {"Payload": pointer, "Notes": tp(30, 4)}),
        table_record(ev_layout, ev_rows[3])])
    pages[29] = data_page(29, EV_AU, [fwd_rec])
    if compressed:
        def cd(kind: int) -> bytes:
            return bytes([0x01 | kind << 2]) + b"\x03\x21\x22\x23"
        pages[28] = data_page(28, EV_AU, [cd(0), cd(3), cd(2), cd(0)])
        pages[29] = data_page(29, EV_AU, [cd(4)])
    pages[31] = data_page(31, EV_AU, [table_record(ev_layout, {"EventID": 666, "Kind": "zombie",
                                                               "Payload": "deallocated"})])
    allocated |= {27, 28, 29, 30}
    head = bytes(36) + iam_header.build(dict(
        start_pg=pid(0), single_pages=[pid(28), pid(29)] + [pid(0, 0)] * (IAM_SINGLE_PAGE_SLOTS - 2)))
    obj, idx = _obj_index(EV_AU)
    pages[27] = allocation_page(10, 27, extent_bitmap([]), LSN, header_body=head, obj_id=obj,
                                index_id=idx)

    # the catalog
    sys_units = {SYSSCHOBJS: 18, SYSCOLPARS: 19, SYSRSCOLS: 20, SYSCLSOBJS: 21}
    au_rows = [sys_row(sysallocunits_fixed, dict(
        auid=SYSROWSETS_AUID, type=1, ownerid=SYSROWSETS_AUID, status=0, fgid=1, pgfirst=pid(17),
        pgroot=pid(17), pgfirstiam=pid(0, 0), pcused=1, pcdata=1, pcreserved=1))]
    rs_rows = []
    for obj_id, page in sys_units.items():
        auid = alloc_unit_id(obj_id, 1)
        au_rows.append(sys_row(sysallocunits_fixed, dict(
            auid=auid, type=1, ownerid=auid, status=0, fgid=1, pgfirst=pid(page),
            pgroot=pid(page), pgfirstiam=pid(0, 0), pcused=1, pcdata=1, pcreserved=1)))
        rs_rows.append(_rowset(auid, obj_id, 1, 0))
    for rs, au, first, iam, kind in ((CUST_RS, CUST_AU, 24, 0, 1), (EV_RS, EV_AU, 28, 27, 1),
                                     (EV_RS, EV_OVERFLOW_AU, 0, 0, 3)):
        au_rows.append(sys_row(sysallocunits_fixed, dict(
            auid=au, type=kind, ownerid=rs, status=0, fgid=1, pgfirst=pid(first),
            pgroot=pid(first), pgfirstiam=pid(iam, 1 if iam else 0), pcused=3, pcdata=3,
            pcreserved=3)))
    rs_rows.append(_rowset(CUST_RS, CUST_OBJ, 1, len(cust_rows)))
    rs_rows.append(_rowset(EV_RS, EV_OBJ, 0, 3 if compressed else len(ev_rows),
                           1 if compressed else 0))
    objects = [_object(CUST_OBJ, "Customers", 1, b"U "), _object(EV_OBJ, "Events", 5, b"U "),
               _object(SYSSCHOBJS, "sysschobjs", 4, b"S "),
               _object(277576027, "CustomerView", 1, b"V ")]
    colpars, rscols = [], []
    for obj_id, rs, cols, layout in ((CUST_OBJ, CUST_RS, cust_cols, cust_layout),
                                     (EV_OBJ, EV_RS, ev_cols, ev_layout)):
        for e in layout:
            c = e["col"]
            if not c.dropped:
                colpars.append(sys_row(syscolpars_fixed, dict(
                    id=obj_id, number=0, colid=e["colid"], xtype=c.xtype, utype=c.xtype,
                    length=c.length, prec=c.prec, scale=c.scale, collationid=c.collation,
                    status=0 if c.nullable else 1, maxinrow=c.length, xmlns=0, dflt=0, chk=0),
                    [sysname(c.name)]))
            rscols.append(sys_row(sysrscols_fixed, dict(
                rsid=rs, rscolid=e["colid"], hbcolid=e["colid"], rcmodified=0, ti=c.xtype,
                cid=0, ordkey=1 if e["colid"] == 1 else 0, maxinrowlen=0,
                status=(RSCOL_DROPPED if c.dropped else 0) | (0 if c.nullable else RSCOL_NOT_NULL),
                offset=e["offset"] & 0xFFFF, nullbit=e["null_bit"], bitpos=e["bitpos"])))
    schemas = [sys_row(sysclsobjs_fixed, dict(**{"class": 50}, id=i, status=0, type=b"\0\0",
                                               intprop=0, created=NOW, modified=NOW),
                       [sysname(name)]) for i, name in ((1, "dbo"), (4, "sys"), (5, "sales"))]
    sys_pages = {16: (alloc_unit_id(SYSALLOCUNITS, 0), au_rows), 17: (SYSROWSETS_AUID, rs_rows),
                 18: (alloc_unit_id(SYSSCHOBJS, 1), objects),
                 19: (alloc_unit_id(SYSCOLPARS, 1), colpars),
                 20: (alloc_unit_id(SYSRSCOLS, 1), rscols),
                 21: (alloc_unit_id(SYSCLSOBJS, 1), schemas)}
    for page, (auid, rows) in sys_pages.items():
        pages[page] = data_page(page, auid, rows)
        allocated.add(page)

    # file header (BindingId = variable column 0), boot page, PFS
    pages[0] = file_header(1, FILE_PAGES)
    name = sysname(DATABASE)
    boot = boot_record.build(dict(
        record_header=record_header.build(dict(RawStatusByteA=0, RawStatusByteB=0,
                                               NullBitmapPointer=1504)),
        dbi_version=869, dbi_createVersion=869, unknown_08=bytes(0x1C), dbi_status=0,
        dbi_nextid=0, dbi_crdate=bytes(8),
        dbi_dbname=name + sysname(" ") * ((256 - len(name)) // 2), unknown_134=bytes(4),
        dbi_dbid=7))
    boot = bytearray(boot + bytes(1504 - len(boot)))
    struct.pack_into("<IH", boot, BOOT_FIRST_SYS_INDEXES, 16, 1)
    pages[9] = build_page(13, 9, [bytes(boot)], LSN)
    pfs = bytearray(PFS_INTERVAL)
    for p in allocated:
        pfs[p] = PFS_ALLOCATED
    pfs[31] = 0                                          # the leftover page is free
    pages[1] = pfs_page(1, bytes(pfs), LSN)
    data = bytearray(FILE_PAGES * PAGE_SIZE)
    for p, content in pages.items():
        data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = content
    truth = {"Customers": ("dbo", [c for c in cust_cols if not c.dropped], cust_rows),
             "Events": ("sales", ev_cols, ev_rows)}
    if split:
        return bytes(data), truth, bytes(ndf)
    return bytes(data), truth


def _rowset(rowsetid: int, obj: int, index: int, rows: int, cmprlevel: int = 0) -> bytes:
    return sys_row(sysrowsets_fixed, dict(
        rowsetid=rowsetid, ownertype=1, idmajor=obj, idminor=index, numpart=1, status=0,
        fgidfs=1, rcrows=rows, cmprlevel=cmprlevel, fillfact=0, maxnullbit=0, maxleaf=0, maxint=0,
        minleaf=0, minint=0))


def _object(obj: int, name: str, nsid: int, kind: bytes) -> bytes:
    return sys_row(sysschobjs_fixed, dict(
        id=obj, nsid=nsid, nsclass=0, status=0, type=kind, pid=0, pclass=1, intprop=0,
        created=NOW, modified=NOW), [sysname(name)])


def _append_var(rec: bytes, extra: bytes, kind: int) -> bytes:
    """`rec` with one more (complex) variable column and record type `kind`."""
    fixed_end = struct.unpack_from("<H", rec, 2)[0]
    ncols = struct.unpack_from("<H", rec, fixed_end)[0]
    pos = fixed_end + 2 + (ncols + 7) // 8
    nvar = struct.unpack_from("<H", rec, pos)[0] if rec[0] & 0x20 else 0
    ends = list(struct.unpack_from("<%dH" % nvar, rec, pos + 2)) if nvar else []
    data = rec[pos + 2 + 2 * nvar:] if nvar else b""
    shift = 2 if nvar else 4
    ends = [e + shift for e in ends]
    start = pos + 2 + 2 * (nvar + 1) + len(data)
    ends.append((start + len(extra)) | 0x8000)
    head = bytes([(rec[0] & ~0x0E) | (kind << 1) | 0x20]) + rec[1:pos]
    return head + struct.pack("<H", nvar + 1) + struct.pack("<%dH" % len(ends), *ends) + data + extra


__all__ = ["build_seed_database", "page_checksum"]
