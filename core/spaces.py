"""Address spaces: byte spaces made of runs over another space.

Everything that reads evidence content goes through a ByteSpace: the disk itself (Evidence), an
LV (extents over the disk), a VHD's virtual disk (blocks over the LV, with parent fall-through,
in core.vhd). The hex view, exports and carvers only know `size`, `read()` and `locate()`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence, runtime_checkable


@runtime_checkable
class ByteSpace(Protocol):
    """Anything with a size that can be read at any offset (reads past the end are clipped)."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class Run:
    """`length` bytes at `start` of this space come from `target` of the base space (None: zeros)."""

    start: int
    length: int
    target: int | None

    @property
    def end(self) -> int:
        return self.start + self.length


class RunList:
    """A space assembled from runs over a base space; gaps between runs read as zeros."""

    def __init__(self, base: ByteSpace, runs: Iterable[Run], size: int | None = None,
                 name: str = "") -> None:
        self.base = base
        self.runs: list[Run] = sorted((r for r in runs if r.length > 0), key=lambda r: r.start)
        for a, b in zip(self.runs, self.runs[1:]):
            if b.start < a.end:
                raise ValueError(f"overlapping runs at {b.start}")
        self._starts = [r.start for r in self.runs]
        self.size = size if size is not None else (self.runs[-1].end if self.runs else 0)
        self.name = name

    def _run_index(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset) - 1

    def locate(self, offset: int) -> int | None:
        """The base-space offset holding byte `offset` of this space (None: a hole)."""
        i = self._run_index(offset)
        if i < 0 or offset >= self.runs[i].end or self.runs[i].target is None:
            return None
        run = self.runs[i]
        return run.target + (offset - run.start)  # type: ignore[operator]

    def pieces(self, offset: int, length: int) -> Iterable[tuple[int, int, int | None]]:
        """(offset, length, base offset or None) pieces covering [offset, offset+length)."""
        end = min(self.size, offset + length)
        pos = offset
        i = max(0, self._run_index(offset))
        while pos < end:
            while i < len(self.runs) and self.runs[i].end <= pos:
                i += 1
            if i < len(self.runs) and self.runs[i].start <= pos:
                run = self.runs[i]
                stop = min(end, run.end)
                tgt = None if run.target is None else run.target + (pos - run.start)
                yield pos, stop - pos, tgt
            else:
                stop = end if i >= len(self.runs) else min(end, self.runs[i].start)
                yield pos, stop - pos, None
            pos = stop

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        parts = []
        for _, n, tgt in self.pieces(offset, length):
            if tgt is None:
                parts.append(bytes(n))
            else:
                data = self.base.read(tgt, n)
                parts.append(data + bytes(n - len(data)))
        return b"".join(parts)


def extent_space(base: ByteSpace, data_offset: int, extent_bytes: int,
                 pes: Sequence[int | None], name: str = "") -> RunList:
    """An LV on one extent grid: logical extent i is physical extent pes[i] (None: unknown,
    zeros); data_offset is the base offset of PE 0 (partition offset + pe_start)."""
    return located_space(base, [None if pe is None else data_offset + pe * extent_bytes
                                for pe in pes], extent_bytes, name)


def located_space(base: ByteSpace, targets: Sequence[int | None], extent_bytes: int,
                  name: str = "") -> RunList:
    """An LV as a run list: logical extent i is read at offset targets[i] of `base` (None:
    unknown, zeros). Every LV space is built here (core.lvm.space places the extents of a VG
    over its PVs, extent_space on one grid); consecutive extents are merged into one run so
    reads of contiguous LVs stay single preads."""
    runs: list[Run] = []
    for le, target in enumerate(targets):
        start = le * extent_bytes
        if runs and target is not None and runs[-1].target is not None \
                and runs[-1].end == start and runs[-1].target + runs[-1].length == target:
            last = runs[-1]
            runs[-1] = Run(last.start, last.length + extent_bytes, last.target)
        elif target is not None:
            runs.append(Run(start, extent_bytes, target))
    return RunList(base, runs, size=len(targets) * extent_bytes, name=name)


def map_runs_to_pes(map_runs: Iterable[Sequence[int]], le_count: int | None = None) -> list[int | None]:
    """[[le_start, pe_start, count], ...] (the JSON `map`) to a per-LE list of PEs."""
    runs = [tuple(r) for r in map_runs]
    n = le_count if le_count is not None else max((r[0] + r[2] for r in runs), default=0)
    pes: list[int | None] = [None] * n
    for r in runs:
        le, pe, count = r[0], r[1], r[2]
        for i in range(count):
            if 0 <= le + i < n:
                pes[le + i] = pe + i
    return pes


def pes_to_map_runs(pes: Sequence[int | None]) -> list[list[int]]:
    """Inverse of map_runs_to_pes: maximal [le_start, pe_start, count] runs, holes left out."""
    out: list[list[int]] = []
    for le, pe in enumerate(pes):
        if pe is None:
            continue
        if out and out[-1][0] + out[-1][2] == le and out[-1][1] + out[-1][2] == pe:
            out[-1][2] += 1
        else:
            out.append([le, pe, 1])
    return out


class BytesSpace:
    """An in-memory space (tests, small carved objects)."""

    def __init__(self, data: bytes, name: str = "") -> None:
        self._data = bytes(data)
        self.size = len(self._data)
        self.name = name

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset: offset + length]


def compact_ranges(values: Iterable[int], sep: str = ",") -> str:
    """[3, 1, 2, 7, 9, 8] -> "1-3,7-9": extent, page and LE numbers as a technician reads them."""
    parts: list[list[int]] = []
    for v in sorted(set(values)):
        if parts and parts[-1][1] == v - 1:
            parts[-1][1] = v
        else:
            parts.append([v, v])
    return sep.join(str(a) if a == b else f"{a}-{b}" for a, b in parts)
