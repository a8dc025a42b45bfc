"""`srsalvage open IMAGE [--case CASE]`: the Textual workstation on an image or device (read-only)."""

from __future__ import annotations

import argparse

from app.commands._common import add_index_option, add_more_images, add_pv_offset

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("open", help="the recovery workstation (Textual TUI) on IMAGE, read-only",
                       description="Open the Textual workstation on IMAGE (a raw image file or a "
                                   "block device, opened read-only). Decisions and the audit log "
                                   "go to a case file beside the image (IMAGE.srsalvage-case.json) "
                                   "or to CASE.")
    p.add_argument("image", metavar="IMAGE", help="disk image file or block device")
    add_more_images(p)
    p.add_argument("--case", metavar="CASE", default=None,
                   help="case file (default: IMAGE.srsalvage-case.json beside the image)")
    p.add_argument("--backup", action="append", default=[], metavar="FILE.vg",
                   help="an LVM backup/archive file (vgcfgbackup, /etc/lvm/archive); repeatable")
    add_pv_offset(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-case", action="store_true",
                      help="read-only session without a case: nothing is recorded (e.g. when the "
                           "case file was made on other evidence)")
    mode.add_argument("--new-case", action="store_true",
                      help="start a new case; an existing case file is kept aside")
    add_index_option(p)
    p.add_argument("--headless", action="store_true",
                   help="no screen: run the workstation's triage (LVM analysis, VHD chains, "
                        "reconstruction when the metadata is gone) as opening it would, print "
                        "what it found as JSON and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # the evidence and the case are opened before the terminal is taken over: a missing path,
    # a directory or an unreadable device is one line on stderr (SourceError -> exit 1)
    from app.workstation import run_workstation

    mode = "none" if args.no_case else "new" if args.new_case else "case"
    if getattr(args, "headless", False):
        from app.commands._common import print_json
        from app.workstation import run_headless_triage
        print_json(run_headless_triage(args.image, args.case, args.more_images, args.backup,
                                       args.pv_offset, getattr(args, "mapfile", None), mode,
                                       args.no_index))
        return 0
    return run_workstation(args.image, args.case, args.more_images, args.backup, args.pv_offset,
                           getattr(args, "mapfile", None), mode, args.no_index)
