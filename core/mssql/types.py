"""SQL Server column values as text, the way SQL Server shows them (SSMS grid / CONVERT style
121), from their on-disk bytes. Storage formats: OrcaMDF `src/OrcaMDF.Core/Engine/SqlTypes/*.cs`
and `src/OrcaMDF.RawCore/Types/*.cs`; SQL Server 2008 Internals ch. 5; Microsoft Learn data type
pages for ranges and precisions.

Text forms (the CSV contract, README "mdf-tables"):

* int, bigint, smallint, tinyint: decimal digits; bit: 0 / 1
* decimal(p,s) / numeric(p,s): exactly s decimals ("12.50", "-0.075", "7" when s = 0)
* money / smallmoney: 4 decimals ("12.5000")
* float: the shortest text that reads back to the same double, without a trailing ".0"
  ("0.1", "3", "1e+20"); real: the same for the 4-byte float ("0.1" for real 0.1)
* char / varchar / text: the collation's code page (cp1252 for the Latin1 collations; other
  code pages only where the bytes are ASCII); nchar / nvarchar / ntext: UTF-16; char/nchar
  keep their padding
* datetime "YYYY-MM-DD HH:MM:SS.mmm" (1/300 s ticks rounded to ms: .000 .003 .007);
  smalldatetime "YYYY-MM-DD HH:MM:SS"; date "YYYY-MM-DD"; time(n) "HH:MM:SS[.f*n]";
  datetime2(n) "YYYY-MM-DD HH:MM:SS[.f*n]"; datetimeoffset(n) "... +HH:MM"
* uniqueidentifier: 8-4-4-4-12 upper case with the first three groups byte-swapped from disk
  (SQL Server's mixed-endian form)
* binary / varbinary / timestamp / image: "0x" and upper-case hex
* NULL: an empty field

A value that does not fit its type (a date out of range, text that is not valid in its code
page) raises `Undecodable`; types without a decoder here (xml, sql_variant, CLR types) too.
Values kept off-row are fetched first by core.mssql.lob. Nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid

import numpy as np

from core.structs.mssql import SQL_DATETIME_TICKS_PER_SECOND


class Undecodable(ValueError):
    """A value this module cannot show exactly."""


# system type ids (OrcaMDF `MetaData/Enumerations/SystemType.cs`)
IMAGE, TEXT, UNIQUEIDENTIFIER, DATE, TIME, DATETIME2, DATETIMEOFFSET = 34, 35, 36, 40, 41, 42, 43
TINYINT, SMALLINT, INT, SMALLDATETIME, REAL, MONEY, DATETIME, FLOAT = 48, 52, 56, 58, 59, 60, 61, 62
SQL_VARIANT, NTEXT, BIT, DECIMAL, NUMERIC, SMALLMONEY, BIGINT = 98, 99, 104, 106, 108, 122, 127
CLR_UDT, VARBINARY, VARCHAR, BINARY, CHAR, TIMESTAMP, NVARCHAR, NCHAR, XML = (
    240, 165, 167, 173, 175, 189, 231, 239, 241)
SYSNAME_UTYPE = 256

TYPE_NAMES = {
    IMAGE: "image", TEXT: "text", UNIQUEIDENTIFIER: "uniqueidentifier", DATE: "date",
    TIME: "time", DATETIME2: "datetime2", DATETIMEOFFSET: "datetimeoffset", TINYINT: "tinyint",
    SMALLINT: "smallint", INT: "int", SMALLDATETIME: "smalldatetime", REAL: "real",
    MONEY: "money", DATETIME: "datetime", FLOAT: "float", SQL_VARIANT: "sql_variant",
    NTEXT: "ntext", BIT: "bit", DECIMAL: "decimal", NUMERIC: "numeric",
    SMALLMONEY: "smallmoney", BIGINT: "bigint", CLR_UDT: "hierarchyid/geometry/geography",
    VARBINARY: "varbinary", VARCHAR: "varchar", BINARY: "binary", CHAR: "char",
    TIMESTAMP: "timestamp", NVARCHAR: "nvarchar", NCHAR: "nchar", XML: "xml",
}
VARIABLE_TYPES = {VARBINARY, VARCHAR, NVARCHAR, XML, SQL_VARIANT, CLR_UDT, TEXT, NTEXT, IMAGE}
TEXT_POINTER_TYPES = {TEXT, NTEXT, IMAGE}       # in-row: a 16-byte text pointer
DECODED_TYPES = set(TYPE_NAMES) - {SQL_VARIANT, CLR_UDT, XML}

# collationid (syscolpars) -> code page of char/varchar. Only ids known for certain:
# Latin1_General_CI_AS 53256 [V: every character column of the ITHelpdesk fixture, whose
# database collation it is] and SQL_Latin1_General_CP1_CI_AS 872468488 (COLLATIONPROPERTY
# 'CollationID', Microsoft Learn), both Windows-1252.
COLLATION_CODE_PAGES = {53256: "cp1252", 872468488: "cp1252"}

DAY0_DATETIME = dt.date(1900, 1, 1)
DAY0_DATE = dt.date(1, 1, 1)


def type_name(xtype: int, utype: int, length: int, prec: int, scale: int) -> str:
    """The column type as SQL Server writes it ("nvarchar(50)", "decimal(18,2)", ...)."""
    if utype == SYSNAME_UTYPE and xtype == NVARCHAR:
        return "sysname"
    name = TYPE_NAMES.get(xtype, f"type{xtype}")
    if xtype in (CHAR, VARCHAR, BINARY, VARBINARY):
        return f"{name}({'max' if length == -1 else length})"
    if xtype in (NCHAR, NVARCHAR):
        return f"{name}({'max' if length == -1 else length // 2})"
    if xtype in (DECIMAL, NUMERIC):
        return f"{name}({prec},{scale})"
    if xtype in (TIME, DATETIME2, DATETIMEOFFSET):
        return f"{name}({scale})"
    return name


def fixed_length(xtype: int, length: int, prec: int, scale: int) -> int | None:
    """Bytes a fixed-length column takes in the record (None: variable length; bit columns
    share bytes and report 1)."""
    if xtype in VARIABLE_TYPES:
        return None
    if xtype in (DECIMAL, NUMERIC):
        return 5 if prec < 10 else 9 if prec < 20 else 13 if prec < 29 else 17
    if xtype == TIME:
        return 3 if scale < 3 else 4 if scale < 5 else 5
    if xtype == DATETIME2:
        return 6 if scale < 3 else 7 if scale < 5 else 8
    if xtype == DATETIMEOFFSET:
        return 8 if scale < 3 else 9 if scale < 5 else 10
    if xtype == BIT:
        return 1
    return length if length > 0 else None


def _need(raw: bytes, n: int, what: str) -> None:
    if len(raw) != n:
        raise Undecodable(f"{what} needs {n} bytes, found {len(raw)}")


def _fraction(units: int, scale: int) -> str:
    return "" if scale == 0 else "." + str(units).rjust(scale, "0")


def _time_text(raw: bytes, scale: int) -> tuple[int, str]:
    """(whole seconds, fraction text) of a time(n) value: units of 10^-n s since midnight."""
    units = int.from_bytes(raw, "little")
    per_second = 10 ** scale
    seconds, frac = divmod(units, per_second)
    if seconds >= 86400:
        raise Undecodable(f"time value {units} past midnight")
    return seconds, _fraction(frac, scale)


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _date(days: int, day0: dt.date) -> dt.date:
    try:
        return day0 + dt.timedelta(days=days)
    except OverflowError:
        raise Undecodable(f"date {days} days from {day0} out of range") from None


def _float_text(value: float, digits: str) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        raise Undecodable("float NaN / infinity (SQL Server stores neither)")
    text = digits
    return text[:-2] if text.endswith(".0") else text


def _scaled(value: int, scale: int) -> str:
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(scale + 1, "0")
    return sign + (digits if scale == 0 else digits[:-scale] + "." + digits[-scale:])


def decode_value(xtype: int, raw: bytes, length: int = 0, prec: int = 0, scale: int = 0,
                 collationid: int = 0) -> str:
    """One non-NULL value as text (module docstring)."""
    if xtype == INT:
        _need(raw, 4, "int")
        return str(struct.unpack("<i", raw)[0])
    if xtype == BIGINT:
        _need(raw, 8, "bigint")
        return str(struct.unpack("<q", raw)[0])
    if xtype == SMALLINT:
        _need(raw, 2, "smallint")
        return str(struct.unpack("<h", raw)[0])
    if xtype == TINYINT:
        _need(raw, 1, "tinyint")
        return str(raw[0])
    if xtype == BIT:
        _need(raw, 1, "bit")
        return "1" if raw[0] else "0"
    if xtype in (DECIMAL, NUMERIC):
        _need(raw, fixed_length(xtype, length, prec, scale) or 0, "decimal")
        if raw[0] not in (0, 1) or scale > prec:
            raise Undecodable(f"decimal sign byte {raw[0]}")
        magnitude = int.from_bytes(raw[1:], "little")
        if magnitude >= 10 ** max(prec, 1):
            raise Undecodable(f"decimal value wider than its precision {prec}")
        return _scaled(magnitude if raw[0] == 1 else -magnitude, scale)
    if xtype == MONEY:
        _need(raw, 8, "money")
        # a little-endian int64 of 1/10000 units on disk (OrcaMDF SqlMoney.cs; TDS sends the
        # high half first, the data file does not)
        return _scaled(struct.unpack("<q", raw)[0], 4)
    if xtype == SMALLMONEY:
        _need(raw, 4, "smallmoney")
        return _scaled(struct.unpack("<i", raw)[0], 4)
    if xtype == FLOAT:
        if len(raw) == 4:                       # float(24) is stored as a real
            single = np.frombuffer(raw, "<f4")[0]
            return _float_text(float(single), str(single))
        _need(raw, 8, "float")
        value = struct.unpack("<d", raw)[0]
        return _float_text(value, repr(value))
    if xtype == REAL:
        _need(raw, 4, "real")
        v = np.frombuffer(raw, "<f4")[0]
        return _float_text(float(v), str(v))
    if xtype in (CHAR, VARCHAR, TEXT):
        return _single_byte_text(raw, collationid)
    if xtype in (NCHAR, NVARCHAR, NTEXT):
        if len(raw) % 2:
            raise Undecodable("odd number of bytes in a UTF-16 value")
        try:
            return raw.decode("utf-16-le")
        except UnicodeDecodeError:
            raise Undecodable("invalid UTF-16 (unpaired surrogate)") from None
    if xtype == DATETIME:
        _need(raw, 8, "datetime")
        ticks, days = struct.unpack("<ii", raw)
        if not 0 <= ticks < 24 * 3600 * SQL_DATETIME_TICKS_PER_SECOND:
            raise Undecodable(f"datetime time part {ticks} ticks")
        day = _date(days, DAY0_DATETIME)
        if not dt.date(1753, 1, 1) <= day:
            raise Undecodable(f"datetime before 1753: {day}")
        ms = (ticks * 10 + 1) // 3              # 1/300 s to ms as SQL Server rounds: 0 3 7
        seconds, ms = divmod(ms, 1000)
        return f"{day.isoformat()} {_hms(seconds)}.{ms:03d}"
    if xtype == SMALLDATETIME:
        _need(raw, 4, "smalldatetime")
        days, minutes = struct.unpack("<HH", raw)
        if minutes >= 1440:
            raise Undecodable(f"smalldatetime minute {minutes}")
        return f"{_date(days, DAY0_DATETIME).isoformat()} {_hms(minutes * 60)}"
    if xtype == DATE:
        _need(raw, 3, "date")
        return _date(int.from_bytes(raw, "little"), DAY0_DATE).isoformat()
    if xtype == TIME:
        _need(raw, fixed_length(TIME, 0, 0, scale) or 0, "time")
        seconds, frac = _time_text(raw, scale)
        return _hms(seconds) + frac
    if xtype == DATETIME2:
        _need(raw, fixed_length(DATETIME2, 0, 0, scale) or 0, "datetime2")
        seconds, frac = _time_text(raw[:-3], scale)
        day = _date(int.from_bytes(raw[-3:], "little"), DAY0_DATE)
        return f"{day.isoformat()} {_hms(seconds)}{frac}"
    if xtype == DATETIMEOFFSET:
        _need(raw, fixed_length(DATETIMEOFFSET, 0, 0, scale) or 0, "datetimeoffset")
        seconds, frac = _time_text(raw[:-5], scale)
        day = _date(int.from_bytes(raw[-5:-2], "little"), DAY0_DATE)
        offset = struct.unpack("<h", raw[-2:])[0]
        if not -840 <= offset <= 840:
            raise Undecodable(f"datetimeoffset offset {offset} minutes")
        try:
            local = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=seconds,
                                                                      minutes=offset)
        except OverflowError:
            raise Undecodable("datetimeoffset out of range") from None
        sign = "-" if offset < 0 else "+"
        clock = local.hour * 3600 + local.minute * 60 + local.second
        return (f"{local.date().isoformat()} {_hms(clock)}{frac}"
                f" {sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}")
    if xtype == UNIQUEIDENTIFIER:
        _need(raw, 16, "uniqueidentifier")
        return str(uuid.UUID(bytes_le=bytes(raw))).upper()
    if xtype in (BINARY, VARBINARY, TIMESTAMP, IMAGE):
        return "0x" + raw.hex().upper()
    raise Undecodable(f"no decoder for {TYPE_NAMES.get(xtype, f'type {xtype}')}")


def _single_byte_text(raw: bytes, collationid: int) -> str:
    if all(b < 0x80 for b in raw):
        return raw.decode("ascii")
    codec = COLLATION_CODE_PAGES.get(collationid)
    if codec is None:
        raise Undecodable(f"non-ASCII text in collation {collationid}, whose code page is not "
                          f"known here")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise Undecodable(f"bytes undefined in {codec}") from None
