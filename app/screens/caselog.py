"""Workstation work recorded in the case's audit log (the carving screen's exports)."""

from __future__ import annotations

import hashlib
import os
from typing import Any


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def record_carve(case: Any, out_dir: str, written: list[str], scope: str) -> None:
    """One `carve` audit entry: where, from which scope, every file with its size and sha256."""
    if case is None:
        return
    files = []
    for path in written:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = None
        files.append({"path": os.path.abspath(path), "bytes": size, "sha256": _sha256(path)})
    case.log("carve", detail=f"{len(files)} file(s) carved from the {scope} -> {out_dir}",
             output=os.path.abspath(out_dir), scope=scope, files=files, via="workstation")
