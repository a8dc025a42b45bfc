"""The system base tables, read the way the engine finds them (OrcaMDF
`src/OrcaMDF.Core/MetaData/BaseTableData.cs`; Totopolis `dataserver/sysobj/*.h`):

boot page (1:9) -> dbi_firstSysIndexes = first page of sys.sysallocunits (auid, type, ownerid,
first page, root, first IAM page of every allocation unit) -> sys.sysrowsets through its fixed
allocation unit 327680 (rowsetid, object id, index id, row count, compression) -> the rowsets of
sys.sysschobjs (objects), sys.syscolpars (columns), sys.sysrscols (each column's place in the
record: offset, NULL bit, bit position, type info), sys.sysclsobjs (schema names).

Every reader degrades: a base table whose pages are missing yields what the rest holds, with a
finding; nothing here raises on damaged bytes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from construct import Container, ConstructError, Struct

from core.carve.mssql import read_boot_page
from core.mssql.pages import Database, alloc_unit_id
from core.mssql.records import Record
from core.mssql.rows import ScanStats, read_unit
from core.structs.mssql import (
    AU_IN_ROW_DATA, BOOT_FIRST_SYS_INDEXES, BOOT_PAGE_ID, CLASS_SCHEMA, PAGE_SIZE,
    RECORD_HEADER_SIZE, SQL_VERSIONS, SYSALLOCUNITS, SYSCLSOBJS, SYSCOLPARS, SYSROWSETS,
    SYSROWSETS_AUID, SYSRSCOLS, SYSSCHOBJS, TYPE_BOOT, pageid, sysallocunits_fixed, sysclsobjs_fixed,
    syscolpars_fixed, sysrowsets_fixed, sysrscols_fixed, sysschobjs_fixed,
)


@dataclass(frozen=True)
class AllocUnit:
    auid: int
    type: int                       # 1 in-row, 2 LOB, 3 row-overflow
    ownerid: int                    # sysrowsets.rowsetid
    pgfirst: tuple[int, int]        # (file, page)
    pgroot: tuple[int, int]
    pgfirstiam: tuple[int, int]


@dataclass(frozen=True)
class Rowset:
    rowsetid: int
    idmajor: int                    # object id
    idminor: int                    # index id: 0 heap, 1 clustered index
    rcrows: int
    cmprlevel: int                  # 0 none, 1 ROW, 2 PAGE


@dataclass(frozen=True)
class SchemaObject:
    id: int
    name: str
    nsid: int                       # schema id
    type: str                       # "U" user table, "S" system table, "V" view ...


@dataclass(frozen=True)
class ColPar:
    id: int
    number: int
    colid: int
    name: str | None
    xtype: int
    utype: int
    length: int
    prec: int
    scale: int
    collationid: int
    status: int


@dataclass(frozen=True)
class RsCol:
    rsid: int
    rscolid: int
    hbcolid: int
    ti: int
    status: int
    offset: int                     # leaf_offset in the low 16 bits (signed)
    nullbit: int                    # leaf_null_bit in the low 16 bits
    bitpos: int                     # leaf_bit_position in the low byte


@dataclass
class Catalog:
    database: str | None = None
    dbi_version: int | None = None
    allocunits: list[AllocUnit] = field(default_factory=list)
    rowsets: list[Rowset] = field(default_factory=list)
    objects: list[SchemaObject] = field(default_factory=list)
    colpars: list[ColPar] = field(default_factory=list)
    rscols: list[RsCol] = field(default_factory=list)
    schemas: dict[int, str] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    layouts_verified: list[str] = field(default_factory=list)   # base tables whose declared
                                                                 # layout the catalog confirms
    _indexes: dict[str, Any] = field(default_factory=dict, init=False, repr=False,
                                     compare=False)

    def units_of(self, rowsetid: int) -> list[AllocUnit]:
        return self._index("units", self.allocunits, lambda a: a.ownerid).get(rowsetid, [])

    def columns_of(self, object_id: int) -> list[ColPar]:
        """The object's columns (syscolpars rows with number 0)."""
        rows = self._index("colpars", self.colpars, lambda c: c.id).get(object_id, [])
        return [c for c in rows if c.number == 0]

    def rscols_of(self, rowsetid: int) -> list[RsCol]:
        return self._index("rscols", self.rscols, lambda r: r.rsid).get(rowsetid, [])

    def rowsets_of(self, object_id: int) -> list[Rowset]:
        return self._index("rowsets", self.rowsets, lambda r: r.idmajor).get(object_id, [])

    def _index(self, name: str, rows: list, key: Any) -> dict[int, list]:
        """Rows grouped by key, built once per list (a catalog can hold 100,000 columns)."""
        cached = self._indexes.get(name)
        if cached is None or cached[0] != len(rows):
            groups: dict[int, list] = {}
            for r in rows:
                groups.setdefault(key(r), []).append(r)
            cached = self._indexes[name] = (len(rows), groups)
        return cached[1]

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "sql_server_version": self.dbi_version,
                "sql_server_release": SQL_VERSIONS.get(self.dbi_version or -1),
                "catalog_layouts_verified": self.layouts_verified}


def _pointer(p: Any) -> tuple[int, int]:
    return (int(p.m_fileId), int(p.m_pageId))


@dataclass(frozen=True)
class RowLayout:
    """Where a base table's fields sit in its records: the construct declaration's own order
    (`fast`: its compiled parser over the fixed data) or the places the catalog itself gives
    (sysrscols rows of the base table's rowset, named through syscolpars)."""

    fields: tuple[tuple[str, int, Any], ...]       # (name, record offset, construct subcon)
    var_index: dict[str, int]                       # variable column name -> offset-array index
    fast: Any = None                                # (compiled parser, fixed size) or None


_DEFAULTS: dict[int, RowLayout] = {}


def declared_layout(layout: Struct, var_names: tuple[str, ...]) -> RowLayout:
    """The layout a construct declaration gives: fields one after the other from offset 4."""
    key = id(layout)
    if key not in _DEFAULTS:
        fields, pos = [], RECORD_HEADER_SIZE
        for sc in layout.subcons:
            fields.append((sc.name, pos, sc))
            pos += sc.sizeof()
        _DEFAULTS[key] = RowLayout(tuple(fields), {n: i for i, n in enumerate(var_names)},
                                   (layout.compile(), layout.sizeof()))
    return _DEFAULTS[key]


def _fields(rec: Record, layout: RowLayout) -> Any | None:
    """The fixed-length fields of a base table record, or None when the record is too short
    (compiled construct parser on the declared layout: the catalog has thousands of rows)."""
    try:
        if layout.fast is not None:
            parser, size = layout.fast
            if len(rec.raw) < RECORD_HEADER_SIZE + size:
                return None
            return parser.parse(rec.raw[RECORD_HEADER_SIZE: RECORD_HEADER_SIZE + size])
        out = Container()
        for name, offset, sc in layout.fields:
            size = sc.sizeof()
            if offset + size > len(rec.raw):
                return None
            out[name] = sc.parse(rec.raw[offset: offset + size])
        return out
    except ConstructError:
        return None


def _sysname(rec: Record, index: int) -> str | None:
    col = rec.var(index)
    if col is None or col.complex or len(col.data) % 2:
        return None
    try:
        return col.data.decode("utf-16-le")
    except UnicodeDecodeError:
        return None


def _rows(db: Database, au: int, first: tuple[int, int], iam: tuple[int, int], what: str,
          cat: Catalog, cancel: threading.Event | None) -> Iterator[Record]:
    stats = ScanStats()
    unit, rows = read_unit(db, au, first, iam, stats, cancel)
    yield from (rec for rec, _ in rows)
    if unit.lost:
        cat.findings.append({
            "kind": "mdf-catalog-pages-lost", "table": what,
            "pages": [f"{f}:{p}" for f, p, _ in unit.lost[:100]],
            "message": f"{what}: {len(unit.lost)} of its pages are missing or fail their "
                       f"checksum: objects, columns or rows described there are unknown"})
    if stats.damaged_records:
        cat.findings.append({"kind": "mdf-catalog-records-damaged", "table": what,
                             "message": f"{what}: {stats.damaged_records} damaged records "
                                        f"skipped", "examples": stats.damaged_examples[:5]})


def _system_table(db: Database, cat: Catalog, object_id: int, what: str,
                  cancel: threading.Event | None) -> Iterator[Record]:
    """Rows of a system base table through its rowset (idmajor = object id, idminor = 1)."""
    rowset = next((r for r in cat.rowsets if r.idmajor == object_id and r.idminor == 1), None)
    unit = None
    if rowset is not None:
        unit = next((a for a in cat.units_of(rowset.rowsetid) if a.type == AU_IN_ROW_DATA), None)
    if unit is None:
        # the catalog entry is gone: the pages still name their unit (object id, index 1)
        cat.findings.append({"kind": "mdf-catalog-entry-missing", "table": what,
                             "message": f"{what}: no sysrowsets/sysallocunits entry; read from "
                                        f"the page headers naming it"})
        yield from _rows(db, alloc_unit_id(object_id, 1), (0, 0), (0, 0), what, cat, cancel)
        return
    yield from _rows(db, unit.auid, unit.pgfirst, unit.pgfirstiam, what, cat, cancel)


# The base tables read, with their declared fixed fields and variable columns (in order).
BASE_TABLES: dict[int, tuple[str, Struct, tuple[str, ...]]] = {
    SYSALLOCUNITS: ("sysallocunits", sysallocunits_fixed, ()),
    SYSROWSETS: ("sysrowsets", sysrowsets_fixed, ("rsguid", "lockres")),
    SYSSCHOBJS: ("sysschobjs", sysschobjs_fixed, ("name",)),
    SYSCOLPARS: ("syscolpars", syscolpars_fixed, ("name", "idtval")),
    SYSRSCOLS: ("sysrscols", sysrscols_fixed, ("colguid",)),
    SYSCLSOBJS: ("sysclsobjs", sysclsobjs_fixed, ("name",)),
}


def described_layout(cat: Catalog, object_id: int, declared: RowLayout) -> RowLayout | None:
    """The layout the catalog gives for its own base table `object_id`: its columns' names
    (syscolpars) and places (sysrscols of its rowset). None when the description is incomplete
    (then the declared layout stays)."""
    rs = next((r for r in cat.rowsets if r.idmajor == object_id and r.idminor in (0, 1)), None)
    if rs is None:
        return None
    names = {cp.colid: cp.name for cp in cat.colpars if cp.id == object_id and cp.number == 0}
    place = {}
    for rc in cat.rscols:
        if rc.rsid == rs.rowsetid and rc.rscolid in names:
            leaf = rc.offset & 0xFFFF
            place[names[rc.rscolid]] = leaf - 0x10000 if leaf >= 0x8000 else leaf
    fields = []
    for name, _, sc in declared.fields:
        if place.get(name, -1) < RECORD_HEADER_SIZE:
            return None
        fields.append((name, place[name], sc))
    var_index = {}
    for name in declared.var_index:
        if place.get(name, 0) >= 0:
            return None
        var_index[name] = -place[name] - 1
    return RowLayout(tuple(fields), var_index)


def _same_places(a: RowLayout, b: RowLayout) -> bool:
    return [f[:2] for f in a.fields] == [f[:2] for f in b.fields] and a.var_index == b.var_index


def _load(db: Database, cat: Catalog, layouts: dict[int, RowLayout], first: tuple[int, int],
          cancel: threading.Event | None) -> None:
    """Read the base tables in the engine's order into `cat` with the given layouts."""
    lay = layouts[SYSALLOCUNITS]
    # sysallocunits: object 7, index 0 in its pages' headers [V: both shared fixtures]
    for rec in _rows(db, alloc_unit_id(SYSALLOCUNITS, 0), first, (0, 0), "sysallocunits", cat,
                     cancel):
        f = _fields(rec, lay)
        if f is not None:
            cat.allocunits.append(AllocUnit(f.auid, f.type, f.ownerid, _pointer(f.pgfirst),
                                            _pointer(f.pgroot), _pointer(f.pgfirstiam)))
    rs_unit = next((a for a in cat.allocunits if a.auid == SYSROWSETS_AUID), None)
    rs_first, rs_iam = (rs_unit.pgfirst, rs_unit.pgfirstiam) if rs_unit else ((0, 0), (0, 0))
    lay = layouts[SYSROWSETS]
    for rec in _rows(db, SYSROWSETS_AUID, rs_first, rs_iam, "sysrowsets", cat, cancel):
        f = _fields(rec, lay)
        if f is not None:
            cat.rowsets.append(Rowset(f.rowsetid, f.idmajor, f.idminor, f.rcrows, f.cmprlevel))
    if not cat.allocunits and not cat.rowsets:
        return
    lay = layouts[SYSSCHOBJS]
    for rec in _system_table(db, cat, SYSSCHOBJS, "sysschobjs", cancel):
        f, name = _fields(rec, lay), _sysname(rec, lay.var_index["name"])
        if f is not None and name is not None:
            cat.objects.append(SchemaObject(f.id, name, f.nsid,
                                            f.type.decode("latin-1").strip()))
    lay = layouts[SYSCOLPARS]
    for rec in _system_table(db, cat, SYSCOLPARS, "syscolpars", cancel):
        f = _fields(rec, lay)
        if f is not None:
            cat.colpars.append(ColPar(f.id, f.number, f.colid,
                                      _sysname(rec, lay.var_index["name"]), f.xtype, f.utype,
                                      f.length, f.prec, f.scale, f.collationid, f.status))
    lay = layouts[SYSRSCOLS]
    for rec in _system_table(db, cat, SYSRSCOLS, "sysrscols", cancel):
        f = _fields(rec, lay)
        if f is not None:
            cat.rscols.append(RsCol(f.rsid, f.rscolid, f.hbcolid, f.ti, f.status, f.offset,
                                    f.nullbit, f.bitpos))
    lay = layouts[SYSCLSOBJS]
    for rec in _system_table(db, cat, SYSCLSOBJS, "sysclsobjs", cancel):
        f, name = _fields(rec, lay), _sysname(rec, lay.var_index["name"])
        if f is not None and name is not None and f["class"] == CLASS_SCHEMA:
            cat.schemas[f.id] = name


def read_catalog(db: Database, cancel: threading.Event | None = None) -> Catalog:
    """The catalog of the database whose file 1 is in `db`.

    The base tables are read with their declared layouts, then the catalog's own description
    of them (it lists their columns in syscolpars and their places in sysrscols like any
    table's) is compared with the declarations; a base table a newer SQL Server lays out
    differently is read again the way the catalog says (finding `mdf-catalog-layout`)."""
    cat = Catalog()
    boot = db.page(1, BOOT_PAGE_ID)
    first = (0, 0)
    if boot is not None and boot[1] == TYPE_BOOT:
        info = read_boot_page(boot)
        if info is not None:
            cat.database, cat.dbi_version = info["database"], info["dbi_version"]
        off = int.from_bytes(boot[PAGE_SIZE - 2:], "little")
        if off + BOOT_FIRST_SYS_INDEXES + pageid.sizeof() <= PAGE_SIZE:
            first = _pointer(pageid.parse(boot[off + BOOT_FIRST_SYS_INDEXES:]))
    else:
        cat.findings.append({"kind": "mdf-boot-page-missing", "message":
                             "boot page 1:9 missing or failing its checksum: the catalog is "
                             "read from the page headers"})
    if first == (0, 0) and boot is not None:
        cat.findings.append({"kind": "mdf-no-catalog", "message":
                             "the boot page names no sysallocunits page (dbi_firstSysIndexes "
                             "is 0): this file carries no catalog"})
    layouts = {obj: declared_layout(layout, var) for obj, (_, layout, var) in BASE_TABLES.items()}
    _load(db, cat, layouts, first, cancel)
    described = {obj: described_layout(cat, obj, layouts[obj]) for obj in BASE_TABLES}
    cat.layouts_verified = sorted(BASE_TABLES[obj][0] for obj, d in described.items()
                                  if d is not None and _same_places(d, layouts[obj]))
    changed = {obj: d for obj, d in described.items()
               if d is not None and not _same_places(d, layouts[obj])}
    if changed:
        kept = list(cat.findings)
        names = ", ".join(BASE_TABLES[obj][0] for obj in changed)
        fresh = Catalog(database=cat.database, dbi_version=cat.dbi_version)
        _load(db, fresh, {**layouts, **changed}, first, cancel)
        fresh.layouts_verified = cat.layouts_verified
        fresh.findings = kept + [{
            "kind": "mdf-catalog-layout", "tables": names,
            "message": f"the catalog lays out {names} differently from the declared layouts "
                       f"(a newer SQL Server): read again as the catalog describes them"}]
        return fresh
    return cat
