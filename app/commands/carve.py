"""`srsalvage carve-mdf` and `srsalvage carve-rar`: page-level SQL Server data-file reassembly
and RAR archive carving (shared/docs/cli-contract.md), over the whole source or, with
`--vdi KEY`, inside one VDI's virtual disk (or a raw LV)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from app.commands._caselog import add_case_options, record
from app.commands._common import StderrProgress, add_pv_offset, info, print_json, print_text, warn
from app.commands._common import add_index_option, evidence_index
from core.errors import SrsalvageError
from core.spaces import compact_ranges

ORDER = 80


def register(sub: argparse._SubParsersAction) -> None:
    mdf = sub.add_parser(
        "carve-mdf", help="reassemble SQL Server data files from 8 KiB pages found anywhere",
        description="Find SQL Server pages (any 512-byte boundary), keep the best copy of each "
                    "(valid checksum, highest LSN) and write one data file per file id into DIR.")
    rar = sub.add_parser(
        "carve-rar", help="carve RAR 1.5-5 archives (also inside SFX executables)",
        description="Find RAR signatures, walk and CRC-check the headers, list the files and "
                    "write each archive's byte range into DIR.")
    for p, func in ((mdf, run_mdf), (rar, run_rar)):
        p.add_argument("source", metavar="SOURCE", help="disk image or block device (read-only)")
        p.add_argument("-o", "--output", metavar="DIR", required=True,
                       help="directory for the carved files (created; existing files refused)")
        p.add_argument("--vdi", metavar="KEY",
                       help="carve inside this VDI's virtual disk (LV name, VDI uuid)")
        p.add_argument("--json", action="store_true", help="one JSON document on stdout")
        p.add_argument("--backup", action="append", default=[], metavar="FILE.vg",
                       help="with --vdi: LVM metadata backup file(s) to consider")
        add_pv_offset(p)
        add_case_options(p)
        add_index_option(p)
        p.set_defaults(func=func)
    rar.add_argument("--extract", metavar="DIR2",
                     help="also unpack every archive into DIR2/at-<offset>/ with libarchive: "
                          "only members whose CRC-32 / BLAKE2sp verifies get their name")
    rar.add_argument("--keep-broken", action="store_true",
                     help="with --extract: keep what decompressed of a failed member as "
                          "NAME.broken (like unrar -kb)")


def _check_output_dir(out_dir: str, source: str) -> None:
    from core.output import check_output_dir
    check_output_dir(out_dir, [source])   # by identity: same inode, loop backing file, /proc ...


def open_space(source: str, vdi: str | None, backups=(), pv_offsets=(), mapfile: str | None = None,
               index_args: argparse.Namespace | None = None):
    """(evidence, space to carve): the evidence itself, or with `vdi` the virtual disk of that
    VDI (resolved by core.vdi: LV name, VDI uuid or VHD unique id, newest generation holding
    it; a differencing VDI is read through its parents), or the LV itself for a raw VDI."""
    from core.evidence import open_evidence
    ev = open_evidence(source, mapfile)
    if vdi is None:
        return ev, ev
    try:
        from core.vdi import resolve_vdi
        report = None
        if index_args is not None:      # the LVM analysis from the evidence index's one pass
            from app.commands._common import indexed_lvm_report
            report = indexed_lvm_report(index_args, ev, source)
        resolved = resolve_vdi(ev, vdi, warn=warn, backups=backups, pv_offsets=pv_offsets,
                               report=report)
        vol = resolved.volume
        if vol.kind != "vhd":
            return ev, vol.space
        chain = resolved.chain()
        for finding in chain.findings:
            warn(finding.message)
        return ev, chain.virtual_space()
    except ImportError as exc:
        ev.close()
        raise SrsalvageError(f"--vdi needs the LVM analysis, not available in this build "
                             f"({exc})") from None
    except BaseException:
        ev.close()
        raise


def _run_carver(args: argparse.Namespace, carve, from_index=None) -> tuple[Any, list[list[int]]]:
    """Open SOURCE (or --vdi's virtual disk), run `carve` into -o with a stderr progress bar;
    returns its result and the unreadable ranges met on the way. Carving the whole source,
    `from_index(index)` gives carve's keyword arguments from the evidence index (what its
    search would find), so the source is not read whole again."""
    _check_output_dir(args.output, args.source)
    ev, space = open_space(args.source, args.vdi, getattr(args, "backup", ()),
                           getattr(args, "pv_offset", ()), args.mapfile, index_args=args)
    bar = StderrProgress()          # stderr only, and only on a terminal
    try:
        extra = {}
        if from_index is not None and space is ev:
            idx = evidence_index(args, ev, args.source, bar)
            if idx is not None:
                extra = from_index(idx)
        result = carve(space, args.output, evidence_paths=[args.source], progress=bar, **extra)
    finally:
        bar.close()
        ev.close()
    return result, [list(r) for r in ev.unreadable]


def run_mdf(args: argparse.Namespace) -> int:
    from core.carve.mssql import carve_mdf
    from core.mssql.database import table_summaries
    result, unreadable = _run_carver(args, carve_mdf, lambda idx: {"copies": idx.page_records()})
    doc: dict[str, Any] = result.to_json()
    # each carved file with its database's tables (core.mssql, as `mdf-tables` reads them)
    tables = table_summaries([f.path for f in result.files])
    for entry in doc["files"]:
        entry.update(tables.get(entry["path"], {"tables": [], "table_findings": []}))
    record(args, args.source, "carve", vdi=args.vdi, detail=f"SQL Server data files -> {args.output}",
           kind="mssql", output=os.path.abspath(args.output),
           files=[{"path": f.path, "file_id": f.file_id, "database": f.database,
                   "pages_written": f.pages_written, "missing_pages": len(f.missing_pages),
                   "sha256": f.sha256} for f in result.files])
    if args.json:
        print_json({"files": doc["files"], "pages_found": doc["pages_found"],
                    "scanned": doc["scanned"], "unreadable": unreadable,
                    "failed": doc["failed"]})
    else:
        if not result.files:
            info("no SQL Server pages found")
        for f in result.files:
            print_text(f"{f.path}: file {f.file_id} of {f.database or '(no boot page found)'}"
                  f" (version {f.sql_server_version}), {f.pages_written} pages written, "
                  f"{len(f.missing_pages)} allocated pages missing, "
                  f"{len(f.conflicting_pages)} with differing copies, "
                  f"{f.bad_checksum_copies} bad-checksum copies ignored; sha256 {f.sha256}")
            summary = tables.get(f.path, {}).get("tables", [])
            print(f"  {len(summary)} user tables: " + ", ".join(
                f"{t['schema']}.{t['name']} ({t['rows']} rows"
                + (f", {t['rows_lost_pages']} lost" if t["rows_lost_pages"] else "") + ")"
                for t in summary[:50]))
            if f.missing_pages:
                warn(f"file {f.file_id}: missing pages {compact_ranges(f.missing_pages)}")
            if f.other_databases:
                warn(f"file {f.file_id}: boot pages of other databases also found "
                     f"({', '.join(f.other_databases)}): their pages cannot be told apart")
    for fail in result.failed:
        warn(f"file {fail['file_id']} not written: {fail['error']}")
    _warn_unreadable(args.source, unreadable)
    return 1 if result.failed else 0


def _warn_unreadable(source: str, unreadable: list[list[int]]) -> None:
    if unreadable:
        shown = ", ".join(f"{a}-{b}" for a, b in unreadable[:8])
        warn(f"{len(unreadable)} unreadable range(s) of {source} read as zeros: {shown}"
             + (" ..." if len(unreadable) > 8 else ""))


def run_rar(args: argparse.Namespace) -> int:
    from core.carve.rar import carve_rar
    if args.keep_broken and not args.extract:
        print("srsalvage carve-rar: --keep-broken needs --extract DIR2", file=sys.stderr)
        return 2
    if args.extract:
        _check_output_dir(args.extract, args.source)
        from core.carve.rar_extract import require_libarchive
        require_libarchive()    # a missing library is said before the carve, not after it
    result, unreadable = _run_carver(args, carve_rar,
                                     lambda idx: {"signatures": idx.rar_signatures()})
    extracted = {}
    if args.extract:
        from core.carve.rar_extract import extract_archives
        bar = StderrProgress()
        try:
            for x, arc in zip(extract_archives(result.archives, args.extract, args.keep_broken,
                                               progress=bar),
                              [a for a in result.archives if a.path is not None]):
                extracted[arc.offset] = x
        finally:
            bar.close()
    record(args, args.source, "carve", vdi=args.vdi, detail=f"RAR archives -> {args.output}",
           kind="rar", output=os.path.abspath(args.output),
           files=[{"path": a.path, "offset": a.offset, "bytes": a.bytes, "complete": a.complete,
                   "sha256": getattr(a, "sha256", None), "files": len(a.files)}
                  for a in result.archives])
    if args.json:
        docs = []
        for a in result.archives:
            doc = a.to_json()
            x = extracted.get(a.offset)
            if x is not None:
                doc.update(extracted_to=x.directory, extract_note=x.note,
                           extract_volumes=x.volumes, members=[m.to_json() for m in x.members])
            docs.append(doc)
        print_json({"archives": docs,
                    "scanned": result.scanned, "archives_not_kept": result.archives_not_kept,
                    "unreadable": unreadable})
    else:
        if not result.archives:
            info("no RAR archives found")
        for a in result.archives:
            state = "complete" if a.complete else (
                "encrypted headers" if a.encrypted_headers else "incomplete")
            print_text(f"{a.path}: RAR{a.version} at {a.offset}, {a.bytes} bytes, {state}, "
                  f"{len(a.files)} files")
            if a.first_bad_header:
                warn(f"archive at {a.offset}: bad header at {a.first_bad_header['offset']}: "
                     f"{a.first_bad_header['reason']}")
            x = extracted.get(a.offset)
            if x is not None:
                _print_members(x)
        if result.archives_not_kept:
            warn(f"{result.archives_not_kept} more signatures walked but not kept")
    failed = [a for a in result.archives if a.write_error]
    for a in failed:
        warn(f"archive at {a.offset} not written: {a.write_error}")
    _warn_unreadable(args.source, unreadable)
    return 1 if failed else 0


def _print_members(x) -> None:
    """One line per member: status, name (control characters escaped), size, where it went."""
    from core.carve.rar_extract import printable
    if not x.members and x.note:
        print(f"  {x.note}")
        return
    if x.volumes:
        print(f"  volume set of {len(x.volumes)}: {', '.join(x.volumes)}")
    counts = ", ".join(f"{n} {status}" for status, n in sorted(x.counts().items()))
    print(f"  extracted into {x.directory}: {counts or 'no members'}")
    for m in x.members:
        line = f"  {m.status:<19} {printable(m.name)} ({m.size:,} bytes)"
        if m.path:
            line += f" -> {printable(m.path)}"
        if m.reason:
            line += f": {m.reason}"
        print(line)
    if x.note:
        warn(f"{x.archive}: {x.note}")
