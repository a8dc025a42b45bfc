"""`srsalvage carve-mdf` and `srsalvage carve-rar`: page-level SQL Server data-file reassembly
and RAR archive carving (shared/docs/cli-contract.md), over the whole source or, with
`--vdi KEY`, inside one VDI's virtual disk (or a raw LV)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from app.commands._common import StderrProgress, info, print_json, print_text, warn
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
        p.set_defaults(func=func)


def _check_output_dir(out_dir: str, source: str) -> None:
    from core.output import check_output_dir
    check_output_dir(out_dir, [source])   # by identity: same inode, loop backing file, /proc ...


def open_space(source: str, vdi: str | None):
    """(evidence, space to carve): the evidence itself, or with `vdi` the virtual disk of that
    VDI (resolved by core.vdi: LV name, VDI uuid or VHD unique id, newest generation holding
    it; a differencing VDI is read through its parents), or the LV itself for a raw VDI."""
    from core.source import Evidence
    ev = Evidence(source)
    if vdi is None:
        return ev, ev
    try:
        from core.vdi import resolve_vdi
        resolved = resolve_vdi(ev, vdi, warn=warn)
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


def _run_carver(args: argparse.Namespace, carve) -> tuple[Any, list[list[int]]]:
    """Open SOURCE (or --vdi's virtual disk), run `carve` into -o with a stderr progress bar;
    returns its result and the unreadable ranges met on the way."""
    _check_output_dir(args.output, args.source)
    ev, space = open_space(args.source, args.vdi)
    bar = StderrProgress()          # stderr only, and only on a terminal
    try:
        result = carve(space, args.output, evidence_paths=[args.source], progress=bar)
    finally:
        bar.close()
        ev.close()
    return result, [list(r) for r in ev.unreadable]


def run_mdf(args: argparse.Namespace) -> int:
    from core.carve.mssql import carve_mdf
    result, unreadable = _run_carver(args, carve_mdf)
    doc: dict[str, Any] = result.to_json()
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
    result, unreadable = _run_carver(args, carve_rar)
    if args.json:
        print_json({"archives": [a.to_json() for a in result.archives],
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
        if result.archives_not_kept:
            warn(f"{result.archives_not_kept} more signatures walked but not kept")
    failed = [a for a in result.archives if a.write_error]
    for a in failed:
        warn(f"archive at {a.offset} not written: {a.write_error}")
    _warn_unreadable(args.source, unreadable)
    return 1 if failed else 0
