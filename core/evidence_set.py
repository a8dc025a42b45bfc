"""Several images of one SR read as one address space (an SR over several disks or LUNs).

`sr-create` with several devices makes a VG over several PVs; the technician images each disk.
`EvidenceSet` lays the images end to end, each starting on a 1 MiB boundary after the previous
one, and reads them through the same interface as one `core.source.Evidence` (read, windows,
data_ranges, unreadable), so the LVM analysis finds every PV's label, metadata area and copies
in one pass, matches PVs to the metadata by their uuid, and `core.vdi.lv_space` reads each
extent from the PV (hence the image) the metadata names.  Offsets in this space are said
together with the image and the offset inside it (`locate`).  Read-only like its members.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from core.evidence import open_evidence
from core.source import Evidence

ALIGN = 1 << 20


class EvidenceSet:
    """Images end to end; `members` is [(start in this space, Evidence)]."""

    def __init__(self, members: Sequence[Evidence]) -> None:
        if not members:
            raise ValueError("no images")
        self.members: list[tuple[int, Evidence]] = []
        pos = 0
        for ev in members:
            self.members.append((pos, ev))
            pos = -(-(pos + ev.size) // ALIGN) * ALIGN
        last_start, last = self.members[-1]
        self.size = last_start + last.size
        self.path = " + ".join(ev.path for _, ev in self.members)
        self.paths = [ev.path for _, ev in self.members]
        self.sector_size = max(ev.sector_size for _, ev in self.members)
        self.is_block_device = False
        self.mtime_ns = max(ev.mtime_ns for _, ev in self.members)

    @classmethod
    def open(cls, paths: Sequence[str], mapfile: str | None = None) -> "EvidenceSet":
        """`mapfile`: the ddrescue mapfile of the first image; the others' are found beside
        them (core.evidence.open_image)."""
        opened: list[Evidence] = []
        try:
            for i, p in enumerate(paths):
                opened.append(open_evidence(p, mapfile if i == 0 else None))
        except BaseException:
            for ev in opened:
                ev.close()
            raise
        return cls(opened)

    @property
    def name(self) -> str:
        return " + ".join(ev.name for _, ev in self.members)

    def close(self) -> None:
        for _, ev in self.members:
            ev.close()

    def __enter__(self) -> "EvidenceSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EvidenceSet({self.paths!r}, size={self.size})"

    def locate(self, offset: int) -> tuple[str, int] | None:
        """(image path, offset inside it) of an offset of this space (None: between images)."""
        for start, ev in self.members:
            if start <= offset < start + ev.size:
                return ev.path, offset - start
        return None

    def _pieces(self, start: int, end: int) -> Iterator[tuple[int, Evidence, int, int]]:
        """(member start, member, local start, local end) overlapping [start, end)."""
        for mstart, ev in self.members:
            a, b = max(start, mstart), min(end, mstart + ev.size)
            if a < b:
                yield mstart, ev, a - mstart, b - mstart

    @property
    def unreadable(self) -> list[tuple[int, int]]:
        return [(s + a, s + b) for s, ev in self.members for a, b in ev.unreadable]

    unreadable_in = Evidence.unreadable_in      # clips self.unreadable: the same for a set

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        out = bytearray(end - offset)       # the gaps between images read as zeros
        for mstart, ev, a, b in self._pieces(offset, end):
            out[mstart + a - offset: mstart + b - offset] = ev.read(a, b - a)
        return bytes(out)

    def read_array(self, offset: int, length: int) -> np.ndarray:
        return np.frombuffer(self.read(offset, length), dtype=np.uint8)

    def data_ranges(self, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        end = self.size if end is None else min(end, self.size)
        return [(mstart + a, mstart + b) for mstart, ev, s, e in self._pieces(start, end)
                for a, b in ev.data_ranges(s, e)]

    def windows(self, start: int = 0, end: int | None = None, window: int = 4 << 20,
                overlap: int = 0, skip_holes: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Each image's windows in turn, at their offsets in this space (no structure spans
        two images, so nothing is lost at their seams)."""
        end = self.size if end is None else min(end, self.size)
        for mstart, ev, a, b in list(self._pieces(start, end)):
            for off, view in ev.windows(a, b, window=window, overlap=overlap,
                                        skip_holes=skip_holes):
                yield mstart + off, view


def open_images(paths: Sequence[str], mapfile: str | None = None):
    """One image: its Evidence (raw, split raw, E01, with its ddrescue mapfile); several: an
    EvidenceSet of them (read-only either way)."""
    if len(paths) == 1:
        return open_evidence(paths[0], mapfile)
    return EvidenceSet.open(paths, mapfile)
