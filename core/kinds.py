"""The registry of things the signature scan can find ("kinds").

A format module declares its kinds here and the scan (core.scan) finds them all in one pass.
A kind is located either by a magic byte string at a fixed offset inside the structure, at
positions aligned to `align` (the common case: one vectorised compare per aligned position), or
by a `prefilter` for structures without a magic (SQL Server pages): a numpy function over the
window that returns candidate offsets. Each candidate is then handed to `verify`, which parses
it properly and says whether it is valid and what identifies it.

Format modules register at import time; `load_builtin_kinds()` imports them all.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Verdict:
    """What verify() concluded about one candidate."""

    valid: bool                     # checksums and sanity rules hold
    length: int                     # bytes the structure occupies (for the finding)
    details: dict[str, Any] = field(default_factory=dict)


# verify(data, offset, read) -> Verdict | None: None means "not this kind at all" (a false hit).
# `data` holds `Kind.length` bytes from the candidate start (fewer at the end of the image);
# `read(offset, length)` reads more of the same space when the structure needs it.
VerifyFn = Callable[[bytes, int, Callable[[int, int], bytes]], Optional[Verdict]]
# prefilter(window, base) -> window-relative candidate offsets (int64 array)
PrefilterFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Kind:
    name: str                       # stable name used in JSON ("vhd-footer", "lvm-label" ...)
    description: str
    verify: VerifyFn
    magic: bytes | None = None      # bytes at `magic_offset` from the structure start
    magic_offset: int = 0
    align: int = 512                # structure starts are multiples of this (1: anywhere)
    length: int = 512               # bytes handed to verify
    prefilter: PrefilterFn | None = None
    default: bool = True            # part of a scan without --kinds
    group: str = "structure"        # "structure" | "carve"

    def __post_init__(self) -> None:
        if (self.magic is None) == (self.prefilter is None):
            raise ValueError(f"kind {self.name}: give exactly one of magic or prefilter")
        if self.align < 1:
            raise ValueError(f"kind {self.name}: align must be >= 1")


KINDS: dict[str, Kind] = {}

# Modules that declare kinds; each calls register() at import time.
BUILTIN_KIND_MODULES = (
    "core.scan_kinds",      # partition tables, LVM, VHD, XenServer MGT
    "core.carve.mssql",     # SQL Server pages
    "core.carve.rar",       # RAR 4 / RAR 5 archives
)


def register(kind: Kind) -> Kind:
    existing = KINDS.get(kind.name)
    if existing is not None and existing is not kind:
        raise ValueError(f"kind {kind.name} registered twice")
    KINDS[kind.name] = kind
    return kind


def load_builtin_kinds() -> dict[str, Kind]:
    """Import every format module that declares kinds; returns the registry."""
    for module in BUILTIN_KIND_MODULES:
        importlib.import_module(module)
    return KINDS
