"""`srsalvage report IMAGE [--case CASE] -o report.html [--json] [--hash]`: the recovery report.

The evidence (path, size, sampled-sector sha256; with --hash the whole evidence's sha256), what
the analysis found (partitions, VGs, generations used), per VDI the map with confidence and every
manual edit, each export with its sha256 and untrusted ranges, carve results, and the audit trail
with its hash chain checked (`"audit_chain_ok"` in --json). The case is only read, never written.
Exit 3 when the case was made on other evidence.
"""

from __future__ import annotations

import argparse
import os

ORDER = 90


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the recovery report (HTML, --json) from the case and the evidence",
                       description="Write the recovery report: evidence identity, what was found, "
                                   "per-VDI maps and edits, exports with sha256 and untrusted "
                                   "ranges, carving, and the hash-chained audit trail.")
    p.add_argument("image", metavar="IMAGE", help="disk image or device (opened read-only)")
    p.add_argument("--case", metavar="CASE", default=None,
                   help="case file (default: IMAGE.srsalvage-case.json beside the image)")
    p.add_argument("-o", "--output", metavar="REPORT.html", help="write the HTML report here")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.add_argument("--hash", action="store_true",
                   help="also compute the sha256 of the whole evidence (reads all of it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing REPORT.html")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import StderrProgress, info, print_json, warn
    from core.case import Case, CaseMismatch, default_case_path, evidence_identity
    from core.errors import SrsalvageError
    from core.output import AtomicOutput, check_output_path
    from core.report import build_report, full_sha256, render_html
    from core.source import Evidence

    if not args.output and not args.json:
        raise SrsalvageError("nothing to write: give -o REPORT.html and/or --json")
    if args.output:
        check_output_path(args.output, [args.image], args.overwrite)
    with Evidence(args.image) as ev:
        identity = evidence_identity(ev)
        path = args.case or default_case_path(ev.path)
        note = None
        if os.path.exists(path):
            case = Case.load(path)          # read only: a damaged case is a one-line CaseError
            why = case.identity_mismatch(identity, ev.size)
            if why:
                raise CaseMismatch(f"case file {path} was made on other evidence ({why})")
        else:
            if args.case:
                raise SrsalvageError(f"case file {args.case}: no such file")
            case = Case(None, ev.path, ev.size)
            note = f"no case file ({path}): nothing was decided or exported in the workstation"
        if case.identity is None:
            case.identity = identity
        from core.sr import analyse_sr
        progress = StderrProgress()
        try:
            analysis = analyse_sr(ev, progress=progress)
            digest = full_sha256(ev, progress=progress) if args.hash else None
        finally:
            progress.close()
        if case.lvm_identity:
            known = {v.get("id") for v in case.lvm_identity if isinstance(v, dict)}
            found = {vg.id for vg in analysis.volume_groups}
            if known and found and not known & found:
                raise CaseMismatch(f"case file {path} names VG id(s) {', '.join(sorted(map(str, known)))}"
                                   f"; this evidence has {', '.join(sorted(found))}")
        doc = build_report(ev, case, analysis, evidence_sha256=digest, case_note=note)
    if not doc["audit_chain_ok"]:
        warn(f"audit trail: {doc['audit_chain']['detail']}")
    if args.output:
        with AtomicOutput(args.output, [args.image], args.overwrite) as out:
            out.write(render_html(doc).encode("utf-8"))
        info(f"report written to {args.output}")
    if args.json:
        print_json(doc)
    return 0
