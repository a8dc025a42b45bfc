"""FixedVar records inside a data page: the record header, the fixed-length data, the NULL
bitmap and the variable-length column offset array (high bit = complex column), forwarding
stubs and their RIDs.

Layout: OrcaMDF `src/OrcaMDF.Core/Engine/Records/Record.cs`, `PrimaryRecord.cs` (structures
declared in core.structs.mssql). Every offset is checked against the page: a damaged record is a
`RecordError`, never an IndexError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from core.carve.mssql_page import slot_offsets  # noqa: F401 (importable here)
from core.structs.mssql import (
    FORWARDING_STUB_SIZE, PAGE_HEADER_SIZE, PAGE_SIZE, RECORD_COMPLEX_COLUMN,
    RECORD_FORWARDING_STUB, RECORD_HAS_NULL_BITMAP, RECORD_HAS_VARIABLE_COLUMNS,
    RECORD_HEADER_SIZE, rid,
)


class RecordError(ValueError):
    """A record whose header or offsets do not fit its page."""


@dataclass(frozen=True, slots=True)
class VarColumn:
    data: bytes
    complex: bool           # high bit of its end offset: row-overflow / LOB pointer, sparse ...


@dataclass(frozen=True, slots=True)
class Record:
    """One record: `raw` runs from the record start (offsets such as sysrscols' leaf_offset are
    relative to it) to the end of the fixed-length data."""

    offset: int                     # in the page
    status_a: int
    raw: bytes                      # header + fixed-length data
    column_count: int | None        # None: no NULL bitmap
    null_bitmap: bytes
    var_columns: tuple[VarColumn, ...]

    @property
    def kind(self) -> int:
        return (self.status_a >> 1) & 0x07

    def is_null(self, null_bit: int) -> bool:
        """Bit `null_bit` (1-based, sysrscols leaf_null_bit) of the NULL bitmap; a column past
        the record's column count (added after the record was written) is NULL too."""
        if self.column_count is None:
            return False
        if null_bit < 1 or null_bit > self.column_count:
            return True
        i = null_bit - 1
        return bool(self.null_bitmap[i >> 3] >> (i & 7) & 1)

    def fixed(self, offset: int, length: int) -> bytes:
        if offset < RECORD_HEADER_SIZE or offset + length > len(self.raw):
            raise RecordError(f"fixed column at {offset}+{length} outside the fixed data "
                              f"({len(self.raw)} bytes)")
        return self.raw[offset: offset + length]

    def var(self, index: int) -> VarColumn | None:
        """Variable-length column `index` (0-based); None when the record stops before it
        (SQL Server leaves trailing NULL / empty variable columns out)."""
        if index < len(self.var_columns):
            return self.var_columns[index]
        return None


def _u16(page: bytes, pos: int, limit: int) -> int:
    if pos + 2 > limit:
        raise RecordError(f"record runs past its page at {pos}")
    return struct.unpack_from("<H", page, pos)[0]


def parse_record(page: bytes, offset: int) -> Record:
    """The FixedVar record at `offset` of an 8 KiB page."""
    limit = min(len(page), PAGE_SIZE)
    if not PAGE_HEADER_SIZE <= offset <= limit - RECORD_HEADER_SIZE:
        raise RecordError(f"record offset {offset} outside the page body")
    status_a = page[offset]
    if (status_a >> 1) & 7 == RECORD_FORWARDING_STUB:
        if offset + FORWARDING_STUB_SIZE > limit:
            raise RecordError("forwarding stub runs past its page")
        return Record(offset, status_a, bytes(page[offset: offset + FORWARDING_STUB_SIZE]),
                      None, b"", ())
    fixed_end = _u16(page, offset + 2, limit)
    if fixed_end < RECORD_HEADER_SIZE or offset + fixed_end > limit:
        raise RecordError(f"fixed-length end {fixed_end} does not fit the page")
    pos = offset + fixed_end
    column_count = None
    bitmap = b""
    if status_a & RECORD_HAS_NULL_BITMAP:
        column_count = _u16(page, pos, limit)
        nbytes = (column_count + 7) // 8
        if pos + 2 + nbytes > limit:
            raise RecordError("NULL bitmap runs past its page")
        bitmap = bytes(page[pos + 2: pos + 2 + nbytes])
        pos += 2 + nbytes
    columns: list[VarColumn] = []
    if status_a & RECORD_HAS_VARIABLE_COLUMNS:
        count = _u16(page, pos, limit)
        if pos + 2 + 2 * count > limit:
            raise RecordError("variable column offset array runs past its page")
        ends = struct.unpack_from("<%dH" % count, page, pos + 2)
        start = pos + 2 + 2 * count - offset
        for end in ends:
            stop = end & ~RECORD_COMPLEX_COLUMN
            if stop < start or offset + stop > limit:
                raise RecordError(f"variable column ends at {stop}, before {start} or past "
                                  f"the page")
            columns.append(VarColumn(bytes(page[offset + start: offset + stop]),
                                     bool(end & RECORD_COMPLEX_COLUMN)))
            start = stop
    return Record(offset, status_a, bytes(page[offset: offset + fixed_end]), column_count,
                  bitmap, tuple(columns))


def forwarding_target(record: Record) -> tuple[int, int, int]:
    """(file id, page id, slot) a forwarding stub points at."""
    r = rid.parse(record.raw[1: FORWARDING_STUB_SIZE])
    return r.file, r.page, r.slot


def record_at(page: bytes, slot: int) -> Record | None:
    """The record in `slot` of a page, None when the slot is empty or the record damaged."""
    offs = slot_offsets(page, int.from_bytes(page[22:24], "little"))
    if not 0 <= slot < len(offs) or offs[slot] is None:
        return None
    try:
        return parse_record(page, offs[slot])
    except RecordError:
        return None
