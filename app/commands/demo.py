"""`srsalvage demo [--dir DIR] [--no-tui]`: build the demo damaged SR and open the workstation.

The image (sparse, 1.5 GiB apparent) and its ground truth (`demo-sr.manifest.json`) go into DIR
(default: `srsalvage-demo` in the system temp directory); the demo image is rebuilt each time.
Default damage: the partition table is wiped, so the workstation has to find the PV by scanning.
The SQL Server VDI holds a data file with overwritten pages and the web server's VDI a RAR backup
archive plus a damaged copy, for `carve-mdf` / `carve-rar` and the carving screen (`c`);
`--no-carving` leaves them out (core.demo_payloads).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from app.commands._common import info

ORDER = 5
IMAGE_NAME = "demo-sr.img"
MANIFEST_NAME = "demo-sr.manifest.json"


def default_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"srsalvage-demo-{os.getuid()}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a demo damaged SR image and open the workstation on it",
                       description="Builds a realistic damaged XenServer LVM SR image (pure "
                                   "Python, no root, a few seconds, sparse) and opens the "
                                   "workstation on it.")
    p.add_argument("--dir", metavar="DIR", default=None,
                   help=f"where to write {IMAGE_NAME} and its manifest (default: {default_dir()})")
    p.add_argument("--no-tui", action="store_true", help="only build the image and print its path")
    p.add_argument("--damage", default="partition-table",
                   help="partition-table (default), label, metadata, none, or several "
                        "separated by commas")
    p.add_argument("--layout", choices=("gpt", "whole-disk"), default="gpt",
                   help="GPT disk with the PV in partition 1 (default) or a whole-disk PV")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated uuids and contents")
    p.add_argument("--no-carving", action="store_true",
                   help="leave out the SQL Server data file and the RAR archives placed for "
                        "the carvers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.demo import build_demo
    from core.errors import SrsalvageError

    directory = args.dir or default_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise SrsalvageError(f"cannot create {directory}: {exc.strerror}") from None
    path = os.path.join(directory, IMAGE_NAME)
    if os.path.exists(path) and not os.path.isfile(path):
        raise SrsalvageError(f"{path} exists and is not a file")
    try:
        manifest = build_demo(path, damage=args.damage, seed=args.seed, layout=args.layout,
                              overwrite=True,   # the demo image is ours: rebuilt every time
                              carve_payloads=not args.no_carving)
    except ValueError as exc:
        print(f"srsalvage demo: {exc}", file=sys.stderr)
        return 2
    manifest.write_json(os.path.join(directory, MANIFEST_NAME))
    if args.no_tui:
        print(path)
        return 0
    carve = ""
    if manifest.carving is not None:
        df = manifest.carving.data_file
        carve = (f"; to carve: database {df.database!r} in {manifest.vdi(df.vdi).label!r}, "
                 f"RAR archives in {manifest.vdi(manifest.carving.archives[0].vdi).label!r}")
    info(f"demo SR image: {path} (damage: {', '.join(manifest.damage)}{carve})")
    try:
        from app.workstation import run_workstation
    except ImportError as exc:
        print(f"srsalvage demo: the workstation is not available ({exc}); image at {path}",
              file=sys.stderr)
        return 1
    return int(run_workstation(path, case_path=None) or 0)
