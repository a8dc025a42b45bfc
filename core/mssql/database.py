"""`mdf-tables` as a library call: data files grouped by database (the file header's
BindingId, the same GUID in every file of one database; file ids from the page headers), each
database's catalog and user tables read from its own files only, pages verified.

Several databases can be given at once; their files are never mixed. A file whose header page
is gone cannot be placed for sure: it is read on its own, with a finding.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from core.mssql.catalog import Catalog, read_catalog
from core.mssql.pages import DataFile, Database, alloc_unit_id, open_data_file
from core.mssql.tables import TableReport, read_tables
from core.progress import ProgressFn
from core.structs.mssql import SYSALLOCUNITS, TYPE_DATA


@dataclass
class DatabaseReport:
    files: list[DataFile]
    catalog: Catalog
    tables: list[TableReport]
    findings: list[dict[str, Any]] = field(default_factory=list)
    csv_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.catalog.to_json(),
            "binding_id": self.files[0].binding_id if self.files else None,
            "files": [{"path": f.path, "file_id": f.file_id, "pages": f.pages,
                       "verification": f.verification(), "findings": f.findings}
                      for f in self.files],
            "findings": self.findings + self.catalog.findings,
            "csv_dir": self.csv_dir,
            "tables": [t.to_json() for t in self.tables],
        }


@dataclass
class MdfTablesResult:
    databases: list[DatabaseReport]

    def to_json(self) -> dict[str, Any]:
        tables = []
        for d in self.databases:
            for t in d.tables:
                tables.append({**t.to_json(), "database": d.catalog.database})
        return {"tables": tables, "databases": [d.to_json() for d in self.databases]}


def group_files(files: list[DataFile]) -> list[tuple[list[DataFile], list[dict[str, Any]]]]:
    """Files by database: same BindingId, distinct file ids. A file without a readable file
    header, or repeating a file id of its group, stands alone."""
    groups: dict[str, list[DataFile]] = {}
    out: list[tuple[list[DataFile], list[dict[str, Any]]]] = []
    for f in files:
        if f.binding_id is None:
            out.append(([f], [{"kind": "mdf-no-file-header", "message":
                               f"{f.path}: no readable file header (page 0): its database "
                               f"cannot be told, read on its own"}]))
            continue
        group = groups.setdefault(f.binding_id, [])
        if any(g.file_id == f.file_id for g in group):
            out.append(([f], [{"kind": "mdf-duplicate-file-id", "message":
                               f"{f.path}: file id {f.file_id} of database "
                               f"{f.binding_id} given twice: read on its own"}]))
            continue
        group.append(f)
    for files_of in groups.values():
        out.append((sorted(files_of, key=lambda f: f.file_id), []))
    return out


def orphan_units(db: Database, cat: Catalog) -> list[dict[str, Any]]:
    """Allocation units whose present data pages the catalog does not name (its sysallocunits
    rows are lost, or the pages are leftovers of dropped objects): unit id and page count."""
    # sysallocunits itself is found through the boot page
    known = {a.auid for a in cat.allocunits} | {alloc_unit_id(SYSALLOCUNITS, 0)}
    counts: dict[int, int] = {}
    for f in db.files.values():
        sel = f.info["present"] & (f.info["type"] == TYPE_DATA)
        units = np.unique(f.info["au"][sel])
        for au in units.tolist():
            if au in known:
                continue
            # only pages the PFS marks allocated: freed pages of dropped objects are not data
            pages = np.flatnonzero(sel & (f.info["au"] == np.uint64(au))).tolist()
            live = sum(1 for p in pages if db.pfs_allocated(f.file_id, p) is not False)
            if live:
                counts[au] = counts.get(au, 0) + live
    return [{"alloc_unit_id": au, "m_objId": (au >> 16) & 0xFFFFFFFF, "m_indexId": au >> 48,
             "data_pages": c} for au, c in sorted(counts.items())]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "database"


def mdf_tables(paths: Iterable[str], csv_dir: str | None = None,
               cancel: threading.Event | None = None,
               progress: ProgressFn | None = None) -> MdfTablesResult:
    """Read every given data file; with `csv_dir`, one CSV per table (in a sub-directory per
    database when several databases are given)."""
    files = []
    try:
        for p in paths:
            files.append(open_data_file(p, cancel, progress))
        groups = group_files(files)
        reports = []
        names_used: set[str] = set()
        for members, findings in groups:
            db = Database(members)
            if 1 not in db.files:
                findings = findings + [{"kind": "mdf-no-primary-file", "message":
                                        "file 1 (the .mdf holding the boot page and the "
                                        "catalog) was not given: tables cannot be listed"}]
                reports.append(DatabaseReport(members, Catalog(), [], findings))
                continue
            cat = read_catalog(db, cancel)
            out_dir = None
            if csv_dir is not None:
                out_dir = csv_dir
                if len(groups) > 1:
                    name = _safe(os.path.basename(cat.database or "") or "database")
                    stem, i = name, 2
                    while name in names_used:
                        name, i = f"{stem}-{i}", i + 1
                    names_used.add(name)
                    out_dir = os.path.join(csv_dir, name)
                os.makedirs(out_dir, exist_ok=True)
            tables = read_tables(db, cat, out_dir, [f.path for f in files], cancel, progress)
            orphans = orphan_units(db, cat) if cat.allocunits else []
            if orphans:
                findings = findings + [{
                    "kind": "mdf-orphan-pages", "units": orphans[:100],
                    "message": f"{sum(o['data_pages'] for o in orphans)} data pages of "
                               f"{len(orphans)} allocation units the catalog does not name "
                               f"(lost sysallocunits rows, or dropped objects' leftovers): "
                               f"not read"}]
            reports.append(DatabaseReport(members, cat, tables, findings, out_dir))
        return MdfTablesResult(reports)
    finally:
        for f in files:
            f.space.close()


def table_summaries(paths: list[str], cancel: threading.Event | None = None
                    ) -> dict[str, dict[str, Any]]:
    """{data file path: {"tables": [...], "table_findings": [...]}} for carve-mdf: each carved
    file with the tables of its database (read from all the carved files of that database)."""
    out: dict[str, dict[str, Any]] = {}
    if not paths:
        return out
    result = mdf_tables(paths, None, cancel)
    for d in result.databases:
        doc = d.to_json()
        tables = [{k: v for k, v in t.items() if k != "csv"} for t in doc["tables"]]
        for f in doc["files"]:
            out[f["path"]] = {"tables": tables,
                              "table_findings": doc["findings"] + f["findings"],
                              "verification": f["verification"]}
    return out
