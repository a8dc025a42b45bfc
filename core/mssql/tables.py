"""The user tables of a database: their columns (name, type, nullability) from syscolpars, the
place of each column in the record from sysrscols (leaf offset, NULL bit, bit position; a
dropped column keeps its place there and is skipped), their rows from the leaf data pages of
the heap or clustered index (core.mssql.pages.unit_pages), decoded by core.mssql.types and
written, on request, to one CSV file per table.

Counts per table: `rows` (live rows read), `rows_lost_pages` (rows on pages that are missing or
fail their checksum: the slot counts of failed pages whose header still names the table, and -
when whole pages are missing - what sysrowsets' row count says is not there), `undecoded` (rows
with at least one value left empty because it could not be shown exactly: a type without a
decoder, a LOB / row-overflow value whose pages are not there, ROW/PAGE compressed pages).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from core.mssql.catalog import Catalog, ColPar, Rowset, RsCol
from core.mssql.pages import Database
from core.mssql.lob import LobReader
from core.mssql.records import Record, RecordError, slot_offsets
from core.mssql.rows import ScanStats, read_unit
from core.mssql.types import BIT, Undecodable, decode_value, fixed_length, type_name
from core.output import AtomicOutput, check_output_path
from core.progress import ProgressFn, Ticker
from core.structs.mssql import (
    AU_IN_ROW_DATA, COLPAR_COMPUTED, COLPAR_NOT_NULL, COLPAR_SPARSE, COMPLEX_SPARSE_VECTOR,
    CD_FORWARDING, CD_PRIMARY, CD_RECORD, RECORD_HEADER_SIZE, RSCOL_DROPPED, RSCOL_SPARSE,
    RSCOL_UNIQUEIFIER,
)

SYSTEM_SCHEMAS = {3, 4}          # INFORMATION_SCHEMA, sys: ms-shipped objects only
COMPRESSION = {0: "none", 1: "row", 2: "page"}
MAX_LISTED_PAGES = 1000


@dataclass
class Column:
    name: str
    colid: int
    xtype: int
    length: int
    prec: int
    scale: int
    collationid: int
    nullable: bool
    type: str
    computed: bool = False
    sparse: bool = False
    stored: bool = True             # False: a computed column not kept in the record
    offset: int | None = None       # fixed-length: byte offset in the record
    var_index: int | None = None    # variable-length: index in the offset array
    null_bit: int = 0
    bit_pos: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.computed:
            out["computed"] = True
        if self.sparse:
            out["sparse"] = True
        return out


@dataclass
class TableReport:
    name: str
    schema: str
    object_id: int
    columns: list[Column]
    rows: int = 0
    rows_expected: int | None = None
    rows_lost_pages: int = 0
    undecoded: int = 0
    pages: int = 0
    missing_pages: list[str] = field(default_factory=list)
    bad_pages: list[str] = field(default_factory=list)
    compression: str = "none"
    lob_pointers_unfollowed: int = 0
    forwarded_rows: int = 0
    ghost_records: int = 0
    damaged_records: int = 0
    undecoded_reasons: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    csv: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "schema": self.schema, "object_id": self.object_id,
            "rows": self.rows, "columns": [c.to_json() for c in self.columns],
            "rows_lost_pages": self.rows_lost_pages, "undecoded": self.undecoded,
            "rows_expected": self.rows_expected, "pages": self.pages,
            "missing_pages": self.missing_pages, "bad_pages": self.bad_pages,
            "compression": self.compression,
            "lob_pointers_unfollowed": self.lob_pointers_unfollowed,
            "forwarded_rows": self.forwarded_rows, "ghost_records": self.ghost_records,
            "damaged_records": self.damaged_records,
            "undecoded_reasons": self.undecoded_reasons, "findings": self.findings,
            "csv": self.csv,
        }


def user_tables(cat: Catalog) -> list[tuple[int, str, str]]:
    """(object id, schema, name) of every user table (sysschobjs type U outside sys and
    INFORMATION_SCHEMA), by schema and name."""
    out = []
    for obj in cat.objects:
        if obj.type == "U" and obj.nsid not in SYSTEM_SCHEMAS:
            out.append((obj.id, cat.schemas.get(obj.nsid, "dbo" if obj.nsid == 1
                                                   else f"schema_{obj.nsid}"), obj.name))
    return sorted(out, key=lambda t: (t[1].lower(), t[2].lower(), t[0]))


def _column(cp: ColPar) -> Column:
    return Column(
        name=cp.name if cp.name is not None else f"column_{cp.colid}", colid=cp.colid,
        xtype=cp.xtype, length=cp.length, prec=cp.prec, scale=cp.scale,
        collationid=cp.collationid, nullable=not cp.status & COLPAR_NOT_NULL,
        type=type_name(cp.xtype, cp.utype, cp.length, cp.prec, cp.scale),
        computed=bool(cp.status & COLPAR_COMPUTED), sparse=bool(cp.status & COLPAR_SPARSE))


def layout(colpars: list[ColPar], rscols: list[RsCol]) -> tuple[list[Column], str | None]:
    """The table's columns in column-id order with their place in the record: from sysrscols
    (`rscolid` = column id, OrcaMDF `DMVs/SystemInternalsPartitionColumn.cs` for the bit
    fields) or, when the rowset has none, computed from syscolpars the way a never-altered
    table is laid out (fixed columns in column order from offset 4, bit columns sharing bytes,
    variable columns in column order); the second value then says so."""
    columns = [_column(cp) for cp in sorted(colpars, key=lambda c: c.colid)]
    if rscols:
        by_id = {rc.rscolid: rc for rc in rscols
                 if not rc.status & (RSCOL_DROPPED | RSCOL_UNIQUEIFIER)}
        for col in columns:
            rc = by_id.get(col.colid)
            if rc is None:
                col.stored = False              # computed, not persisted
                continue
            leaf = rc.offset & 0xFFFF
            leaf = leaf - 0x10000 if leaf >= 0x8000 else leaf
            col.null_bit = rc.nullbit & 0xFFFF
            col.bit_pos = rc.bitpos & 0xFF
            col.sparse = col.sparse or bool(rc.status & RSCOL_SPARSE)
            if col.sparse:
                continue
            if leaf < 0:
                col.var_index = -leaf - 1
            else:
                col.offset = leaf
        return columns, None
    offset, bit_byte, bits_used, var_index = RECORD_HEADER_SIZE, None, 8, 0
    stored = [c for c in columns if not c.computed]
    for col in columns:
        if col.computed:
            col.stored = False
    for n, col in enumerate(stored, start=1):
        col.null_bit = n
        if col.sparse:
            continue
        size = fixed_length(col.xtype, col.length, col.prec, col.scale)
        if size is None:
            col.var_index = var_index
            var_index += 1
        elif col.xtype == BIT:
            if bits_used == 8:
                bit_byte, bits_used = offset, 0
                offset += 1
            col.offset, col.bit_pos = bit_byte, bits_used
            bits_used += 1
        else:
            col.offset = offset
            offset += size
    return columns, "sysrscols has no rows for this table: the record layout was computed " \
                    "from syscolpars (right unless columns were altered or dropped)"


class RowDecoder:
    """Values of one record as text (None = NULL / left empty)."""

    def __init__(self, db: Database, columns: list[Column]) -> None:
        self.db = db
        self.columns = columns
        self.reasons: dict[str, int] = {}
        self.lob_unfollowed = 0
        self.lobs = LobReader(db)

    def _undecoded(self, why: str) -> None:
        self.reasons[why] = self.reasons.get(why, 0) + 1

    def row(self, rec: Record) -> tuple[list[str | None], bool]:
        values: list[str | None] = []
        bad = False
        sparse: dict[int, bytes] | None = None
        for col in self.columns:
            if not col.stored:
                values.append(None)
                continue
            try:
                if col.sparse:
                    if sparse is None:
                        sparse = sparse_values(rec)
                    raw = sparse.get(col.colid)
                    values.append(None if raw is None else decode_value(
                        col.xtype, raw, col.length, col.prec, col.scale, col.collationid))
                    continue
                if rec.is_null(col.null_bit):
                    values.append(None)
                elif col.var_index is not None:
                    values.append(self._var(rec, col))
                elif col.xtype == BIT:
                    values.append("1" if rec.fixed(col.offset or 0, 1)[0] >> col.bit_pos & 1
                                  else "0")
                else:
                    size = fixed_length(col.xtype, col.length, col.prec, col.scale)
                    if size is None or col.offset is None:
                        raise Undecodable(f"no fixed length for {col.type}")
                    values.append(decode_value(col.xtype, rec.fixed(col.offset, size),
                                               col.length, col.prec, col.scale,
                                               col.collationid))
            except (Undecodable, RecordError) as exc:
                self._undecoded(f"{col.name}: {_reason(exc)}")
                values.append(None)
                bad = True
        return values, bad

    def _var(self, rec: Record, col: Column) -> str | None:
        vc = rec.var(col.var_index or 0)
        if vc is None:
            return None
        data = vc.data
        if vc.complex:
            try:
                data = self.lobs.complex_value(data)
            except Undecodable:
                self.lob_unfollowed += 1
                raise
        return decode_value(col.xtype, data, col.length, col.prec, col.scale, col.collationid)


def sparse_values(rec: Record) -> dict[int, bytes]:
    """{column id: bytes} of the sparse vector (complex column type 5: count, column ids, end
    offsets, data - OrcaMDF `Engine/SparseVectorParser.cs`); empty when the record has none."""
    for vc in rec.var_columns:
        d = vc.data
        if not vc.complex or len(d) < 4 or int.from_bytes(d[:2], "little") != \
                COMPLEX_SPARSE_VECTOR:
            continue
        n = int.from_bytes(d[2:4], "little")
        ids_at, ends_at = 4, 4 + 2 * n
        start = ends_at + 2 * n
        if start > len(d):
            raise RecordError("sparse vector header runs past its column")
        out = {}
        for i in range(n):
            cid = int.from_bytes(d[ids_at + 2 * i: ids_at + 2 * i + 2], "little")
            end = int.from_bytes(d[ends_at + 2 * i: ends_at + 2 * i + 2], "little")
            if end < start or end > len(d):
                raise RecordError("sparse vector offsets out of order")
            out[cid] = d[start:end]
            start = end
        return out
    return {}


def compressed_rows(page: bytes | None) -> int:
    """Live rows on a ROW/PAGE compressed page: CD records (header bit 0) whose type (bits 2-4)
    is primary (0) or forwarding stub (2); ghosts, forwarded records (reached through their
    stubs) and index records left out (OrcaMDF `Records/Compression/CompressedRecord.cs`
    parseHeader, `CompressedRecordType.cs`)."""
    if page is None:
        return 0
    count = 0
    for off in slot_offsets(page, int.from_bytes(page[22:24], "little")):
        if off is not None and page[off] & CD_RECORD and (page[off] >> 2) & 7 in (
                CD_PRIMARY, CD_FORWARDING):
            count += 1
    return count


def _reason(exc: Exception) -> str:
    return re.sub(r"\d+", "N", str(exc))[:80]


def csv_name(schema: str, name: str, taken: set[str]) -> str:
    """`<table>.csv`, or `<schema>.<table>.csv` when another schema has a table of that name;
    characters a file name cannot hold become `_`."""
    def clean(s: str) -> str:
        s = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", s).strip(" .")
        return s[:120] or "table"
    base = clean(name)
    if base.lower() in taken:
        base = f"{clean(schema)}.{base}"
    stem, i = base, 2
    while base.lower() in taken:
        base = f"{stem}-{i}"
        i += 1
    taken.add(base.lower())
    return base + ".csv"


def read_tables(db: Database, cat: Catalog, csv_dir: str | None = None,
                evidence_paths: Iterable[str] = (), cancel: threading.Event | None = None,
                progress: ProgressFn | None = None) -> list[TableReport]:
    """Every user table with its columns and counts; with `csv_dir`, its rows as CSV."""
    tables = user_tables(cat)
    ticker = Ticker(len(tables), "reading tables", progress, cancel)
    reports = []
    taken: set[str] = set()
    paths: dict[int, str] = {}
    if csv_dir is not None:
        # every CSV named and checked before any is written: an existing one refuses the run
        for oid, schema, name in tables:
            paths[oid] = os.path.join(csv_dir, csv_name(schema, name, taken))
            check_output_path(paths[oid], list(evidence_paths), overwrite=False)
    for n, (oid, schema, name) in enumerate(tables):
        ticker.tick(n)
        colpars = cat.columns_of(oid)
        rowsets = sorted((r for r in cat.rowsets_of(oid) if r.idminor in (0, 1)),
                         key=lambda r: r.rowsetid)
        first_rscols = cat.rscols_of(rowsets[0].rowsetid) if rowsets else []
        columns, note = layout(colpars, first_rscols)
        report = TableReport(name, schema, oid, columns)
        if note:
            report.findings.append(note)
        if not colpars:
            report.findings.append("syscolpars has no columns for this table (its catalog "
                                   "pages are lost): rows counted, not decoded")
        if not rowsets:
            report.findings.append("sysrowsets has no entry for this table: its pages are "
                                   "unknown")
        path = paths.get(oid) if columns else None
        _read_table(db, cat, report, rowsets, path, list(evidence_paths), cancel)
        reports.append(report)
    ticker.done()
    return reports


def _read_table(db: Database, cat: Catalog, report: TableReport, rowsets: list[Rowset],
                path: str | None, evidence: list[str], cancel: threading.Event | None) -> None:
    """Read the table's rowsets; with `path`, its rows into a CSV written through AtomicOutput
    (`path.part`, renamed when the table is read to its end, removed otherwise)."""
    with contextlib.ExitStack() as stack:
        writer = None
        if path is not None:
            out = stack.enter_context(AtomicOutput(path, evidence))
            text = io.TextIOWrapper(out.file, encoding="utf-8", newline="")
            stack.callback(text.detach)         # the file itself is AtomicOutput's to close
            stack.callback(text.flush)
            writer = csv.writer(text)
            writer.writerow([c.name for c in report.columns])
        _read_rowsets(db, cat, report, rowsets, writer, cancel)
    report.csv = path


def _read_rowsets(db: Database, cat: Catalog, report: TableReport, rowsets: list[Rowset],
                  writer: Any, cancel: threading.Event | None) -> None:
    expected = 0
    for rs in rowsets:
        expected += max(0, rs.rcrows)
        cols = report.columns
        if rs is not rowsets[0]:
            cols, _ = layout(cat.columns_of(report.object_id),
                             cat.rscols_of(rs.rowsetid))
        _read_rowset(db, cat, report, rs, cols, writer, cancel)
    report.rows_expected = expected if rowsets else None
    if report.missing_pages and report.rows_expected is not None:
        # whole pages gone: what the catalog's row count says is not there
        shortfall = report.rows_expected - report.rows - report.rows_lost_pages
        report.rows_lost_pages += max(0, shortfall)
    elif report.rows_expected is not None and report.rows_expected != report.rows \
            and not report.bad_pages and report.compression == "none":
        # sys.partitions' count is kept by the engine but documented as approximate
        report.findings.append(f"SQL Server's row count (sysrowsets) says "
                               f"{report.rows_expected}, {report.rows} rows were read and "
                               f"no page of the table is known to be missing")


def _read_rowset(db: Database, cat: Catalog, report: TableReport, rs: Rowset,
                 columns: list[Column], writer: Any, cancel: threading.Event | None) -> None:
    unit = next((a for a in cat.units_of(rs.rowsetid) if a.type == AU_IN_ROW_DATA), None)
    if unit is None:
        # its sysallocunits row is lost (a lost catalog page): its pages cannot be told from
        # other tables' pages, so what SQL Server counted for it is lost
        report.rows_lost_pages += max(0, rs.rcrows)
        report.findings.append(f"rowset {rs.rowsetid}: no in-row allocation unit in "
                               f"sysallocunits (its catalog page is lost): its pages cannot be "
                               f"found; the {max(0, rs.rcrows)} rows SQL Server counted are lost")
        return
    report.compression = COMPRESSION.get(rs.cmprlevel, str(rs.cmprlevel))
    stats = ScanStats()
    pages, rows = read_unit(db, unit.auid, unit.pgfirst, unit.pgfirstiam, stats, cancel)
    report.pages += len(pages.pages)
    for f, p, state in pages.lost:
        target = report.missing_pages if state == "missing" else report.bad_pages
        if len(target) < MAX_LISTED_PAGES:
            target.append(f"{f}:{p}")
    report.rows_lost_pages += pages.lost_rows_hint
    if not pages.iam_ok and unit.pgfirstiam != (0, 0):
        report.findings.append("IAM chain damaged: pages found through the page linkage and "
                               "the page headers")
    if rs.cmprlevel:
        # ROW/PAGE compressed records are in the CD format, not FixedVar: their rows are
        # counted from the CD record headers, never decoded (no CSV rows)
        live = sum(compressed_rows(db.page(f, p)) for f, p in pages.pages)
        report.rows += live
        report.undecoded += live
        report.undecoded_reasons["compressed pages (ROW/PAGE compression)"] = report.undecoded
        report.findings.append("ROW/PAGE compressed: rows counted from their CD record "
                               "headers, values not decoded")
        return
    decoder = RowDecoder(db, columns)
    for rec, _where in rows:
        values, bad = decoder.row(rec)
        report.rows += 1
        if bad:
            report.undecoded += 1
        if writer is not None:
            writer.writerow(["" if v is None else v for v in values])
    report.lob_pointers_unfollowed += decoder.lob_unfollowed
    for k, v in decoder.reasons.items():
        report.undecoded_reasons[k] = report.undecoded_reasons.get(k, 0) + v
    report.forwarded_rows += stats.forwarded_followed
    report.ghost_records += stats.ghosts
    report.damaged_records += stats.damaged_records
    if stats.forwarding_lost:
        report.rows_lost_pages += stats.forwarding_lost
        report.findings.append(f"{stats.forwarding_lost} forwarding stubs point at missing "
                               f"or damaged forwarded records")
    if stats.orphan_forwarded:
        report.findings.append(f"{stats.orphan_forwarded} forwarded records no stub points "
                               f"at (their stubs' pages are lost): not returned")
    if stats.damaged_records:
        report.findings.append(f"{stats.damaged_records} damaged records skipped: "
                               + "; ".join(stats.damaged_examples[:3]))
