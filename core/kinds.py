"""What the signature scan can find ("kinds"), and what it reports (`ScanFinding`).

A format module declares its kinds as `Kind` values; the scan (core.scan) lists them in one
explicit table and finds them all in one pass.
A kind is located either by a magic byte string at a fixed offset inside the structure, at
positions aligned to `align` (the common case: one vectorised compare per aligned position), or
by a `prefilter` for structures without a magic (SQL Server pages): a numpy function over the
window that returns candidate offsets. Each candidate is then handed to `verify`, which parses
it properly and says whether it is valid and what identifies it.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ScanFinding:
    """One structure found: absolute offset, bytes it occupies, verdict and identifying fields."""

    kind: str
    offset: int
    bytes: int
    valid: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "bytes": self.bytes,
                "valid": self.valid, "details": self.details}


# A cross-check run once over the sorted findings of a scan: fn(findings, read) -> findings
PostScanHook = Callable[[list[ScanFinding], Callable[[int, int], bytes]], list[ScanFinding]]
