"""core.mssql.types and core.mssql.records against values hand-built from the documented on-disk
formats (OrcaMDF `Engine/SqlTypes/*.cs`, SQL Server 2008 Internals ch. 5, Microsoft Learn data
type pages): each expected text is what SQL Server shows for the value; hypothesis throws
garbage at the record parser and the decoders."""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.mssql import types as T
from core.mssql.records import RecordError, forwarding_target, parse_record, slot_offsets
from core.mssql.types import Undecodable, decode_value, type_name


def _datetime(when: dt.datetime, extra_ticks: int = 0) -> bytes:
    """datetime: int32 ticks of 1/300 s since midnight, int32 days since 1900-01-01."""
    midnight = dt.datetime.combine(when.date(), dt.time())
    ticks = int((when - midnight).total_seconds()) * 300 + extra_ticks
    return struct.pack("<ii", ticks, (when.date() - dt.date(1900, 1, 1)).days)


def _days3(day: dt.date) -> bytes:
    """date: 3-byte days since 0001-01-01."""
    return (day.toordinal() - 1).to_bytes(3, "little")


CASES = [
    # (xtype, raw bytes, length, prec, scale, collationid, expected text)
    (T.INT, struct.pack("<i", -5), 4, 10, 0, 0, "-5"),
    (T.INT, struct.pack("<i", 2147483647), 4, 10, 0, 0, "2147483647"),
    (T.BIGINT, struct.pack("<q", -9223372036854775808), 8, 19, 0, 0, "-9223372036854775808"),
    (T.SMALLINT, struct.pack("<h", -300), 2, 5, 0, 0, "-300"),
    (T.TINYINT, b"\xff", 1, 3, 0, 0, "255"),
    (T.BIT, b"\x01", 1, 1, 0, 0, "1"),
    # decimal: sign byte (1 = positive) then the unscaled integer, 4/8/12/16 bytes by precision
    (T.DECIMAL, b"\x01" + (1250).to_bytes(8, "little"), 9, 10, 2, 0, "12.50"),
    (T.DECIMAL, b"\x00" + (1250).to_bytes(8, "little"), 9, 10, 2, 0, "-12.50"),
    (T.NUMERIC, b"\x01" + (75).to_bytes(4, "little"), 5, 5, 3, 0, "0.075"),
    (T.DECIMAL, b"\x01" + (7).to_bytes(4, "little"), 5, 5, 0, 0, "7"),
    (T.DECIMAL, b"\x01" + (10 ** 37).to_bytes(16, "little"), 17, 38, 10,
     0, "1" + "0" * 27 + "." + "0" * 10),
    # money: int64 of 1/10000; smallmoney: int32
    (T.MONEY, struct.pack("<q", 125000), 8, 19, 4, 0, "12.5000"),
    (T.MONEY, struct.pack("<q", -1), 8, 19, 4, 0, "-0.0001"),
    (T.SMALLMONEY, struct.pack("<i", 2147483647), 4, 10, 4, 0, "214748.3647"),
    (T.FLOAT, struct.pack("<d", 0.1), 8, 53, 0, 0, "0.1"),
    (T.FLOAT, struct.pack("<d", 3.0), 8, 53, 0, 0, "3"),
    (T.FLOAT, struct.pack("<d", -2.5e-7), 8, 53, 0, 0, "-2.5e-07"),
    (T.REAL, struct.pack("<f", 0.1), 4, 24, 0, 0, "0.1"),
    (T.REAL, struct.pack("<f", 1234.5), 4, 24, 0, 0, "1234.5"),
    (T.CHAR, b"ab  ", 4, 0, 0, 53256, "ab  "),
    (T.VARCHAR, "café".encode("cp1252"), 10, 0, 0, 53256, "café"),
    (T.VARCHAR, "café".encode("cp1252"), 10, 0, 0, 872468488, "café"),
    (T.VARCHAR, b"plain", 10, 0, 0, 12345, "plain"),
    (T.NVARCHAR, "Zoë 東京 😀".encode("utf-16-le"), 100, 0, 0, 53256, "Zoë 東京 😀"),
    (T.NCHAR, "x ".encode("utf-16-le"), 4, 0, 0, 53256, "x "),
    (T.VARCHAR, b"", 10, 0, 0, 53256, ""),
    (T.DATETIME, _datetime(dt.datetime(2014, 5, 19, 13, 45, 30), 299), 8, 23, 3, 0,
     "2014-05-19 13:45:30.997"),
    (T.DATETIME, _datetime(dt.datetime(1900, 1, 1), 1), 8, 23, 3, 0, "1900-01-01 00:00:00.003"),
    (T.DATETIME, _datetime(dt.datetime(1900, 1, 1), 2), 8, 23, 3, 0, "1900-01-01 00:00:00.007"),
    (T.DATETIME, _datetime(dt.datetime(1753, 1, 1)), 8, 23, 3, 0, "1753-01-01 00:00:00.000"),
    (T.DATETIME, _datetime(dt.datetime(9999, 12, 31, 23, 59, 59), 299), 8, 23, 3, 0,
     "9999-12-31 23:59:59.997"),
    # smalldatetime: uint16 days since 1900-01-01, uint16 minutes since midnight
    (T.SMALLDATETIME, struct.pack("<HH", (dt.date(2024, 2, 29) - dt.date(1900, 1, 1)).days,
                                  13 * 60 + 7), 4, 16, 0, 0, "2024-02-29 13:07:00"),
    (T.DATE, _days3(dt.date(2014, 5, 19)), 3, 10, 0, 0, "2014-05-19"),
    (T.DATE, _days3(dt.date(1, 1, 1)), 3, 10, 0, 0, "0001-01-01"),
    # time(n): units of 10^-n s since midnight, 3/4/5 bytes by n
    (T.TIME, (((13 * 3600 + 5 * 60 + 9) * 1000 + 42)).to_bytes(4, "little"), 4, 12, 3, 0,
     "13:05:09.042"),
    (T.TIME, (23 * 3600 + 59 * 60 + 59).to_bytes(3, "little"), 3, 8, 0, 0, "23:59:59"),
    # datetime2(n): time(n) bytes, then 3-byte days since 0001-01-01
    (T.DATETIME2, ((10 * 3600 + 30 * 60) * 10 ** 7 + 1234567).to_bytes(5, "little")
     + _days3(dt.date(2024, 1, 15)), 8, 27, 7, 0, "2024-01-15 10:30:00.1234567"),
    (T.DATETIME2, (3600 * 100 + 5).to_bytes(3, "little") + _days3(dt.date(2000, 1, 1)), 6, 22,
     2, 0, "2000-01-01 01:00:00.05"),
    # datetimeoffset(n): UTC time and date, then int16 minutes offset; shown in local time
    (T.DATETIMEOFFSET, (8 * 3600 * 10 ** 7).to_bytes(5, "little") + _days3(dt.date(2024, 1, 15))
     + struct.pack("<h", 90), 10, 34, 7, 0, "2024-01-15 09:30:00.0000000 +01:30"),
    (T.DATETIMEOFFSET, (1 * 3600).to_bytes(3, "little") + _days3(dt.date(2024, 1, 15))
     + struct.pack("<h", -300), 8, 26, 0, 0, "2024-01-14 20:00:00 -05:00"),
    # uniqueidentifier: first three groups little-endian on disk (SQL Server's mixed-endian text)
    (T.UNIQUEIDENTIFIER, bytes.fromhex("ff19966f868b11d0b42d00c04fc964ff"), 16, 0, 0, 0,
     "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
    (T.BINARY, b"\x00\xff\x10", 3, 0, 0, 0, "0x00FF10"),
    (T.VARBINARY, b"", 10, 0, 0, 0, "0x"),
    (T.TIMESTAMP, bytes(7) + b"\x2a", 8, 0, 0, 0, "0x000000000000002A"),
]


@pytest.mark.parametrize("xtype,raw,length,prec,scale,coll,expected", CASES)
def test_values_as_sql_server_shows_them(xtype, raw, length, prec, scale, coll, expected):
    assert decode_value(xtype, raw, length, prec, scale, coll) == expected


@pytest.mark.parametrize("xtype,raw,length,prec,scale,coll", [
    (T.VARCHAR, "café".encode("cp1252"), 10, 0, 0, 0),     # code page not known: not guessed
    (T.NVARCHAR, b"\x00\xd8", 2, 0, 0, 0),                  # unpaired surrogate
    (T.NVARCHAR, b"abc", 4, 0, 0, 0),                       # odd UTF-16 length
    (T.DATETIME, struct.pack("<ii", 300 * 86400, 0), 8, 23, 3, 0),   # time past midnight
    (T.DATETIME, struct.pack("<ii", 0, -60000), 8, 23, 3, 0),        # before 1753
    (T.DECIMAL, b"\x02" + bytes(4), 5, 5, 0, 0),            # bad sign byte
    (T.DECIMAL, b"\x01" + (10 ** 5).to_bytes(4, "little"), 5, 5, 0, 0),   # wider than p
    (T.INT, b"\x01\x02", 4, 10, 0, 0),                      # wrong length
    (T.FLOAT, struct.pack("<d", float("nan")), 8, 53, 0, 0),
    (T.XML, b"<a/>", -1, 0, 0, 0),
    (T.SQL_VARIANT, b"\x38\x01\x05\x00\x00\x00", 8016, 0, 0, 0),
    (T.TIME, (86400 * 1000).to_bytes(4, "little"), 4, 12, 3, 0),
    (T.DATETIMEOFFSET, bytes(8) + struct.pack("<h", 2000), 10, 34, 7, 0),
])
def test_values_that_cannot_be_shown_exactly_are_refused(xtype, raw, length, prec, scale, coll):
    with pytest.raises(Undecodable):
        decode_value(xtype, raw, length, prec, scale, coll)


def test_type_names():
    assert type_name(T.NVARCHAR, T.NVARCHAR, 100, 0, 0) == "nvarchar(50)"
    assert type_name(T.NVARCHAR, T.NVARCHAR, -1, 0, 0) == "nvarchar(max)"
    assert type_name(T.NVARCHAR, 256, 256, 0, 0) == "sysname"
    assert type_name(T.VARBINARY, T.VARBINARY, -1, 0, 0) == "varbinary(max)"
    assert type_name(T.CHAR, T.CHAR, 10, 0, 0) == "char(10)"
    assert type_name(T.DECIMAL, T.DECIMAL, 9, 18, 2) == "decimal(18,2)"
    assert type_name(T.DATETIME2, T.DATETIME2, 8, 27, 7) == "datetime2(7)"
    assert type_name(T.INT, T.INT, 4, 10, 0) == "int"


# -- records --------------------------------------------------------------------------------
def _page_with(records: list[bytes]) -> bytes:
    page = bytearray(8192)
    page[0] = 1
    pos, offs = 96, []
    for r in records:
        page[pos:pos + len(r)] = r
        offs.append(pos)
        pos += len(r)
    for i, off in enumerate(offs):
        struct.pack_into("<H", page, 8192 - 2 * (i + 1), off)
    struct.pack_into("<H", page, 22, len(records))
    return bytes(page)


def test_fixedvar_record_layout():
    """Status A 0x30 (NULL bitmap, variable columns), fixed data, column count, bitmap,
    variable offset array with the complex-column high bit."""
    fixed = struct.pack("<i", 7) + b"\x05"
    var1, var2 = "ab".encode("utf-16-le"), bytes(24)
    head_len = 4 + len(fixed) + 2 + 1 + 2 + 4
    ends = [head_len + len(var1), (head_len + len(var1) + len(var2)) | 0x8000]
    rec = (bytes([0x30, 0]) + struct.pack("<H", 4 + len(fixed)) + fixed
           + struct.pack("<H", 4) + bytes([0b0100]) + struct.pack("<HHH", 2, *ends) + var1 + var2)
    page = _page_with([rec])
    (off,) = slot_offsets(page, 1)
    r = parse_record(page, off)
    assert r.kind == 0 and r.column_count == 4
    assert r.fixed(4, 4) == struct.pack("<i", 7)
    assert [r.is_null(n) for n in (1, 2, 3, 4, 5)] == [False, False, True, False, True]
    assert r.var(0).data == var1 and not r.var(0).complex
    assert r.var(1).data == var2 and r.var(1).complex
    assert r.var(2) is None                       # trailing variable columns left out = NULL
    with pytest.raises(RecordError):
        r.fixed(6, 4)                             # past the fixed data


def test_forwarding_stub_rid():
    stub = bytes([0x04]) + struct.pack("<IHH", 1234, 3, 17)
    page = _page_with([stub])
    r = parse_record(page, slot_offsets(page, 1)[0])
    assert r.kind == 2 and forwarding_target(r) == (3, 1234, 17)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=400), st.integers(0, 8191), st.integers(0, 4100))
def test_hypothesis_garbage_records_raise_only_record_error(body, offset, slots):
    page = bytearray(8192)
    page[96:96 + len(body)] = body
    page[8192 - len(body[:200]):] = body[:200]
    page = bytes(page)
    for off in [offset] + [o for o in slot_offsets(page, slots) if o is not None][:50]:
        try:
            r = parse_record(page, off)
        except RecordError:
            continue
        for n in range(0, 10):
            r.is_null(n)
            r.var(n)
        if r.kind == 2:
            forwarding_target(r)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(T.TYPE_NAMES)), st.binary(max_size=20), st.integers(-1, 8000),
       st.integers(0, 40), st.integers(0, 40), st.integers(0, 1 << 32))
def test_hypothesis_garbage_values_give_text_or_undecodable(xtype, raw, length, prec, scale,
                                                            coll):
    try:
        out = decode_value(xtype, raw, length, prec, scale, coll)
    except Undecodable:
        return
    assert isinstance(out, str)


# -- column layouts and sparse columns --------------------------------------------------------
def _colpar(colid, name, xtype, length, status=0, prec=0, scale=0):
    from core.mssql.catalog import ColPar
    return ColPar(id=1, number=0, colid=colid, name=name, xtype=xtype, utype=xtype,
                  length=length, prec=prec, scale=scale, collationid=0, status=status)


def test_layout_without_sysrscols_is_computed_and_said():
    """A never-altered table's records: fixed columns in column order from offset 4, bit
    columns sharing one byte, variable columns in column order, NULL bits by column."""
    from core.mssql.tables import layout
    cols, note = layout([_colpar(1, "id", T.INT, 4, status=1), _colpar(2, "a", T.BIT, 1),
                         _colpar(3, "b", T.BIT, 1), _colpar(4, "name", T.NVARCHAR, 40),
                         _colpar(5, "at", T.DATETIME, 8), _colpar(6, "c", T.BIT, 1)], [])
    assert note and "syscolpars" in note
    assert [(c.name, c.offset, c.bit_pos, c.var_index, c.null_bit) for c in cols] == [
        ("id", 4, 0, None, 1), ("a", 8, 0, None, 2), ("b", 8, 1, None, 3),
        ("name", None, 0, 0, 4), ("at", 9, 0, None, 5), ("c", 8, 2, None, 6)]
    assert not cols[0].nullable and cols[1].nullable


def test_sparse_columns_come_from_the_sparse_vector():
    """Sparse column values live in the sparse vector, a complex column: 0x0005, count,
    column ids, end offsets, values (OrcaMDF SparseVectorParser.cs)."""
    from core.mssql.catalog import RsCol
    from core.mssql.tables import RowDecoder, layout, sparse_values
    from core.structs.mssql import COLPAR_SPARSE, RSCOL_SPARSE
    values = [struct.pack("<i", 42), "hé".encode("utf-16-le")]
    head = struct.pack("<HH", 5, 2) + struct.pack("<HH", 3, 5)
    start = len(head) + 4
    ends = struct.pack("<HH", start + len(values[0]), start + len(values[0]) + len(values[1]))
    vector = head + ends + b"".join(values)
    fixed = struct.pack("<i", 7)
    end = 4 + 4 + 2 + 1 + 2 + 2 + len(vector)
    rec = (bytes([0x30, 0]) + struct.pack("<H", 8) + fixed + struct.pack("<H", 5) + b"\x00"
           + struct.pack("<HH", 1, end | 0x8000) + vector)
    page = _page_with([rec])
    r = parse_record(page, slot_offsets(page, 1)[0])
    assert sparse_values(r) == {3: values[0], 5: values[1]}
    colpars = [_colpar(1, "id", T.INT, 4, status=1),
               _colpar(3, "s_int", T.INT, 4, status=COLPAR_SPARSE),
               _colpar(4, "s_none", T.INT, 4, status=COLPAR_SPARSE),
               _colpar(5, "s_text", T.NVARCHAR, 20, status=COLPAR_SPARSE)]
    rscols = [RsCol(9, 1, 1, T.INT, 0x80, 4, 1, 0)] + [
        RsCol(9, cid, cid, xt, RSCOL_SPARSE, 0, 0, 0)
        for cid, xt in ((3, T.INT), (4, T.INT), (5, T.NVARCHAR))]
    cols, _ = layout(colpars, rscols)
    values_out, bad = RowDecoder(None, cols).row(r)
    assert values_out == ["7", "42", None, "hé"] and not bad


def test_row_overflow_pointer_to_a_missing_page_is_undecoded_not_guessed():
    from core.mssql.catalog import RsCol
    from core.mssql.tables import RowDecoder, layout
    from core.structs.mssql import blob_inline_entry, blob_inline_root

    class NoPages:
        def page(self, file_id, page_id):
            return None

    pointer = (blob_inline_root.build(dict(type=2, index_level=0, unused=0, sequence=0,
                                           timestamp=0))
               + blob_inline_entry.build(dict(length=9000, page=77, file=1, slot=0)))
    end = 4 + 4 + 2 + 1 + 2 + 2 + len(pointer)
    rec = (bytes([0x30, 0]) + struct.pack("<H", 8) + struct.pack("<i", 1)
           + struct.pack("<H", 2) + b"\x00" + struct.pack("<HH", 1, end | 0x8000) + pointer)
    page = _page_with([rec])
    r = parse_record(page, slot_offsets(page, 1)[0])
    cols, _ = layout([_colpar(1, "id", T.INT, 4, status=1), _colpar(2, "v", T.VARCHAR, 8000)],
                     [RsCol(9, 1, 1, T.INT, 0x80, 4, 1, 0), RsCol(9, 2, 2, T.VARCHAR, 0, -1, 2, 0)])
    decoder = RowDecoder(NoPages(), cols)
    values, bad = decoder.row(r)
    assert values == ["1", None] and bad and decoder.lob_unfollowed == 1
    assert any("77" not in k and "v:" in k for k in decoder.reasons)
