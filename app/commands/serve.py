"""`srsalvage serve IMAGE [--host 127.0.0.1] [--port N]`: the workstation in a web browser.

textual-serve runs the same read-only workstation (`srsalvage open IMAGE`) once per browser
session; the URL printed at start carries a one-time token (app/serve.py). Localhost only
unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import os

ORDER = 25


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the workstation in a web browser (textual-serve), "
                                     "localhost and a one-time token",
                       description="Serve the workstation on IMAGE to a web browser with "
                                   "textual-serve. The URL printed at start carries a one-time "
                                   "token; without it the page is refused. Bound to 127.0.0.1 "
                                   "by default. The evidence is opened read-only.")
    p.add_argument("image", metavar="IMAGE", help="disk image file or block device")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8022, help="TCP port (default 8022)")
    p.add_argument("--case", metavar="CASE", default=None,
                   help="case file (default: IMAGE.srsalvage-case.json beside the image)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import warn
    from core.errors import SrsalvageError
    from core.evidence import open_evidence

    if not 0 < args.port < 65536:
        raise SrsalvageError(f"--port {args.port}: not a TCP port")
    # open once here: a missing path or a bad mapfile is one line now, not a dead browser tab
    with open_evidence(args.image, args.mapfile) as ev:
        mapfile = getattr(ev, "mapfile", None)
        title = f"srsalvage {os.path.basename(args.image)}"
    try:
        from app.serve import TokenServer, open_command
    except ImportError as exc:
        raise SrsalvageError(f"serve needs textual-serve (pip install textual-serve): {exc}") \
            from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {args.host}: reachable from the network; only the token protects it")
    image = os.path.abspath(args.image)
    server = TokenServer(open_command(image, mapfile and os.path.abspath(mapfile), args.case),
                         args.host, args.port, title)
    try:
        server.serve()
    except OSError as exc:
        raise SrsalvageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0
