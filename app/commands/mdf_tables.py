"""`srsalvage mdf-tables FILE [FILE ...]`: the user tables inside SQL Server data files (a
carved one or any .mdf/.ndf) - columns, row counts, rows lost with missing or failing pages,
each page's checksum / torn-bit verification - and with `--csv DIR` one CSV per table."""

from __future__ import annotations

import argparse
import os

from app.commands._common import StderrProgress, info, print_json, warn
from core.errors import UnsafeError

ORDER = 81


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mdf-tables", help="list the tables and rows inside SQL Server data files",
        description="Read the catalog of SQL Server data files (.mdf and its .ndf files, "
                    "grouped by database) the way the engine does, list every user table with "
                    "its columns and row count, verify every page, and with --csv write one "
                    "UTF-8 CSV per table.")
    p.add_argument("files", metavar="FILE", nargs="+", help="data files (read-only)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--csv", metavar="DIR", help="write DIR/<table>.csv (existing files refused)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.mssql.database import mdf_tables
    if args.csv is not None:
        real = os.path.realpath(args.csv)
        if any(real == os.path.realpath(f) for f in args.files):
            raise UnsafeError(f"--csv {args.csv} is one of the data files")
        if os.path.exists(args.csv) and not os.path.isdir(args.csv):
            raise UnsafeError(f"--csv {args.csv} exists and is not a directory")
    bar = StderrProgress()
    try:
        result = mdf_tables(args.files, args.csv, progress=bar)
    finally:
        bar.close()
    if args.json:
        print_json(result.to_json())
        return 0
    for d in result.databases:
        cat = d.catalog
        print(f"database {cat.database or '(unknown)'} (version {cat.dbi_version}), files: "
              + ", ".join(f"{f.path} (file {f.file_id}, {f.pages} pages)" for f in d.files))
        for f in d.files:
            v = f.verification()
            print(f"  {f.path}: {v['checksum']['pages']} pages with checksum "
                  f"({v['checksum']['failed']} failing), {v['torn']['pages']} with torn bits "
                  f"({v['torn']['failed']} torn), {v['none']['pages']} unprotected")
            if v["bad_checksum_pages"]:
                warn(f"{f.path}: pages failing their checksum: {v['bad_checksum_pages'][:20]}")
            if v["torn_pages"]:
                warn(f"{f.path}: torn pages: {v['torn_pages'][:20]}")
            for finding in f.findings:
                warn(finding["message"])
        for finding in d.findings + cat.findings:
            warn(finding["message"])
        if not d.tables:
            info("no user tables")
        for t in d.tables:
            cols = ", ".join(f"{c.name} {c.type}{'' if c.nullable else ' NOT NULL'}"
                             for c in t.columns)
            print(f"  {t.schema}.{t.name}: {t.rows} rows ({cols})")
            if t.rows_lost_pages or t.missing_pages or t.bad_pages:
                warn(f"{t.schema}.{t.name}: {t.rows_lost_pages} rows lost with pages "
                     f"missing {t.missing_pages[:20]} / failing {t.bad_pages[:20]}")
            if t.undecoded:
                warn(f"{t.schema}.{t.name}: {t.undecoded} rows with values left empty "
                     f"({'; '.join(list(t.undecoded_reasons)[:3])})")
            for note in t.findings:
                warn(f"{t.schema}.{t.name}: {note}")
            if t.csv:
                print(f"    -> {t.csv}")
    return 0
