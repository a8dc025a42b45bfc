"""`srsalvage scan IMAGE [--json] [--kinds K,...] [--range START:END]`: the signature scan.

Findings with absolute byte offsets, as a table or as the `scan --json` document of
cli-contract.md. An unknown kind or a malformed range is bad usage (exit 2, with the valid kinds).
"""

from __future__ import annotations

import argparse
import re
import sys

from app.commands._common import StderrProgress, add_index_option, evidence_index, print_json, warn

ORDER = 30
EXIT_USAGE = 2

_SUFFIX = {"": 1, "b": 1, "s": 512, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
           "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_NUMBER = re.compile(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """'1048576', '0x100000', '1M', '1G', '2048s' (sectors) -> bytes."""
    m = _NUMBER.fullmatch(text)
    if not m or m.group(2).lower() not in _SUFFIX:
        raise ValueError(f"not a size: {text!r} (use e.g. 1048576, 0x100000, 512K, 1G, 2048s)")
    return int(m.group(1), 0) * _SUFFIX[m.group(2).lower()]


def parse_range(text: str) -> tuple[int, int | None]:
    """'START:END' (either side may be empty) -> (start, end or None)."""
    if ":" not in text:
        raise ValueError(f"range must be START:END, got {text!r}")
    a, b = text.split(":", 1)
    start = parse_size(a) if a.strip() else 0
    end = parse_size(b) if b.strip() else None
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before its start {start}")
    return start, end


def _kinds_epilog() -> str:
    from core.scan import available_kinds

    kinds = available_kinds()
    lines = ["kinds (* = scanned by default; carving kinds only with --kinds):"]
    for name in sorted(kinds, key=lambda n: (kinds[n].group, n)):
        mark = "*" if kinds[name].default else " "
        lines.append(f"  {mark} {name:<16} {kinds[name].description}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="signature scan: partition tables, LVM labels/metadata, "
                                    "VHD structures, MGT, pages, archives",
                       description="One read-only pass over IMAGE finding every known structure "
                                   "at its absolute byte offset.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    # the kinds' list imports every scanner: made when help is asked for, not at each start-up
    # of every command (0.1 s of each process's 0.2 s)
    plain_help = p.format_help

    def format_help() -> str:
        p.epilog = _kinds_epilog()
        return plain_help()
    p.format_help = format_help
    p.add_argument("image", metavar="IMAGE", help="disk image or block device (read-only)")
    p.add_argument("--json", action="store_true", help="print the JSON document on stdout")
    p.add_argument("--kinds", metavar="K,...",
                   help="only these kinds (default: the structure kinds marked * below); "
                        "e.g. vhd-footer,lvm-label or rar4,rar5,mssql-page")
    p.add_argument("--range", metavar="START:END", dest="range",
                   help="only structures starting in [START, END); sizes like 1G, 0x100000, 2048s")
    add_index_option(p)
    p.set_defaults(func=run)


def _key_details(details: dict) -> str:
    keys = ("vg", "seqno", "pv_uuid", "pv_start", "unique_id", "creator", "disk_type",
            "current_size", "disk_guid", "sr_uuid", "crc_ok", "checksum_ok", "page_id",
            "file_id", "version", "error", "parse_error")
    parts = [f"{k}={details[k]}" for k in keys if k in details and details[k] is not None]
    from core.escape import terminal_line
    return terminal_line(" ".join(parts)[:150])     # VG names, labels: from the evidence


def print_table(result, out=None) -> None:
    out = out or sys.stdout
    print(f"{'offset':>16} {'offset (hex)':>14}  {'kind':<15} {'valid':<5}  details", file=out)
    for f in result.findings:
        print(f"{f.offset:>16} {f.offset:>#14x}  {f.kind:<15} {'yes' if f.valid else 'NO':<5}  "
              f"{_key_details(f.details)}", file=out)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "nothing"
    print(f"scanned {result.scanned[0]}..{result.scanned[1]} in {result.seconds:.2f} s: {counts}",
          file=out)
    if result.unreadable:
        print(f"unreadable ranges: {result.unreadable}", file=out)


def run(args: argparse.Namespace) -> int:
    from core.scan import UnknownKindError, scan
    from core.evidence import open_evidence

    try:
        start, end = parse_range(args.range) if args.range else (0, None)
    except ValueError as exc:
        print(f"srsalvage scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    kinds = None
    if args.kinds:
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    ev = open_evidence(args.image, args.mapfile)
    bar = StderrProgress()
    try:
        try:
            # the evidence index answers the default kinds anywhere (and is made for them: the
            # triage reads the evidence once); a range or other kinds use one that is kept,
            # else scan what they ask and no more
            idx = evidence_index(args, ev, args.image, bar,
                                 build=kinds is None and not args.range)
            result = None if idx is None else idx.scan_result(ev, kinds, start, end,
                                                              progress=bar)
            if result is None:
                result = scan(ev, kinds=kinds, start=start, end=end, progress=bar)
        except UnknownKindError as exc:
            bar.close()
            print(f"srsalvage scan: {exc}", file=sys.stderr)
            return EXIT_USAGE
    finally:
        bar.close()
        ev.close()
    if start > ev.size:
        warn(f"range start {start} is past the end of the image ({ev.size} bytes)")
    if result.truncated:
        warn("too many findings: the list is cut, the counts are complete")
    if args.json:
        print_json(result.to_json(args.image))
    else:
        print_table(result)
    return 0
