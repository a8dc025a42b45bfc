"""`srsalvage verify IMAGE [--json]`: read all of IMAGE, check the hashes stored with it (E01).

Exit 0 when every stored hash matches and nothing was unreadable, 1 otherwise (the JSON
document, or the table, is printed either way: it says which hash and which ranges).
"""

from __future__ import annotations

import argparse

ORDER = 15


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="hash the whole image and check the hashes stored with it",
                       description="Read every byte of IMAGE once and compute MD5 and SHA1 (and "
                                   "any other hash stored with it). For an E01 image the hashes "
                                   "ewfacquire stored are checked; chunks failing their checksum "
                                   "are listed as unreadable ranges. Exit 1 on any mismatch or "
                                   "unreadable range.")
    p.add_argument("image", metavar="IMAGE",
                   help="disk image (raw, split .001/.aa, E01) or block device (read-only)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import StderrProgress, print_json, warn
    from core.evidence.verify import verify_evidence
    from core.evidence import open_evidence

    progress = StderrProgress()
    with open_evidence(args.image, args.mapfile) as ev:
        try:
            result = verify_evidence(ev, progress=progress)
        finally:
            progress.close()
    if args.json:
        print_json(result.to_json())
    else:
        print(f"{result.path}: {result.format}, {result.size} bytes")
        for name, value in result.computed.items():
            stored = result.stored.get(name)
            verdict = "no stored hash" if stored is None else \
                ("matches the stored hash" if stored == value else f"MISMATCH, stored {stored}")
            print(f"  {name:<7} {value}  {verdict}")
        for a, b in result.unreadable:
            print(f"  unreadable {a}-{b} ({b - a} bytes)")
    if result.mismatched:
        warn(f"{', '.join(result.mismatched)} of {args.image} do(es) not match the stored hash")
    if result.unreadable:
        warn(f"{len(result.unreadable)} unreadable range(s) in {args.image}")
    return 0 if result.ok else 1
