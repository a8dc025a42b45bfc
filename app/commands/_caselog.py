"""Command-line work recorded in the case's audit log, as the workstation's is.

`export`, `carve-mdf`, `carve-rar` and `reconstruct --fix` append one entry to the case of the
evidence (IMAGE.srsalvage-case.json beside it, or `--case CASE`), so `srsalvage report` covers
what was done on the command line and in the workstation alike. Recording never fails the
command: a case made on other evidence, a damaged or unwritable case is one warning on stderr
("not recorded: ..."). `--no-case` records nothing.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_case_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--case", metavar="CASE", default=None,
                   help="case file whose audit log records this command (default: "
                        "IMAGE.srsalvage-case.json beside the image)")
    p.add_argument("--no-case", action="store_true",
                   help="record nothing in a case file")


def record(args: argparse.Namespace, image_path: str, action: str, vdi: str | None = None,
           detail: str = "", **fields: Any) -> bool:
    """Append one audit entry to the case of the evidence at `image_path` (opened or created);
    False when not recorded."""
    from app.commands._common import warn
    from core.case import Case, evidence_identity
    from core.errors import SrsalvageError
    from core.source import Evidence

    if getattr(args, "no_case", False):
        return False
    try:
        with Evidence(image_path) as ev:
            identity = evidence_identity(ev)
            case, note = Case.open(ev.path, getattr(args, "case", None), image_bytes=ev.size,
                                   identity=identity, log_open=False)
        if note:
            warn(note)
        case.log(action, vdi=vdi, detail=detail, via="command line", **fields)
        return True
    except SrsalvageError as exc:
        warn(f"not recorded in the case: {exc}")
    except OSError as exc:
        warn(f"not recorded in the case: {exc.strerror or exc}")
    return False
