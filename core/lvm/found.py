"""What the whole-disk LVM analysis finds on its way (split out of core/lvm/analyse.py): the
disk pass's hits, the metadata areas it ring-scanned and the PVs it placed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.lvm import mda as MDA
from core.lvm.label import PVLabel


@dataclass
class DiskHits:
    labels: list[int] = field(default_factory=list)
    mda_headers: list[int] = field(default_factory=list)
    seqno_marks: list[int] = field(default_factory=list)
    contents_marks: list[int] = field(default_factory=list)
    mgt_headers: list[int] = field(default_factory=list)   # sectors starting `XSSM:`
    truncated: bool = False


@dataclass
class Area:
    """A metadata area that was ring-scanned: [start, end) absolute, the text area inside."""

    pv_start: int
    mda_abs: int
    size: int
    header: MDA.MdaHeader | None

    @property
    def end(self) -> int:
        return self.mda_abs + self.size

    def holds(self, off: int) -> bool:
        return self.mda_abs <= off < self.end


@dataclass
class FoundPV:
    pv_start: int
    label: PVLabel | None
    areas: list[Area] = field(default_factory=list)
    inferred_by: list[str] = field(default_factory=list)
    pv_id: str | None = None
    pe_start: int | None = None       # bytes
    device_size: int | None = None
