"""Windows over any ByteSpace for the carvers.

The evidence itself (core.source.Evidence) has mmap windows that skip sparse-file holes; an LV
(RunList) or a VHD's virtual disk only has `read()`. `space_windows` gives both the same shape:
(offset, uint8 view) pairs of at most `window + overlap` bytes, so a carver written once works on
the disk, inside an LV and inside a VDI. Runs of a RunList that map to nothing (unknown extents)
read as zeros and are skipped, and so are ranges a VHD's virtual disk reports absent
(`read_opt` returning None): zeros hold no page and no archive.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from core.source import Evidence
from core.spaces import ByteSpace

# 4 MiB: the reused window buffer stays in the CPU caches, so the pread copy into it costs
# about what `cat` pays; with 32 MiB every copy went out to RAM and the page scan took 2.3x
# `cat` against 1.0x (bench/carve.py, 1 GiB); below 1 MiB the per-window overhead dominates
DEFAULT_WINDOW = 4 << 20


def _mapped_ranges(space: ByteSpace, start: int, end: int) -> list[tuple[int, int]]:
    """Ranges of `space` that may hold data (holes of files and unmapped runs left out)."""
    if isinstance(space, Evidence):
        return space.data_ranges(start, end)
    pieces = getattr(space, "pieces", None)
    if pieces is None:
        return [(start, end)]
    out: list[tuple[int, int]] = []
    for off, length, target in pieces(start, end - start):
        if target is None:
            continue
        if out and out[-1][1] == off:
            out[-1] = (out[-1][0], off + length)
        else:
            out.append((off, off + length))
    return out


def space_windows(space: ByteSpace, start: int = 0, end: int | None = None,
                  window: int = DEFAULT_WINDOW, overlap: int = 0,
                  align: int = 512) -> Iterator[tuple[int, np.ndarray, int]]:
    """Yield (offset, view, own) covering [start, end): each view runs `overlap` bytes past its
    nominal window (clipped at `end`); a hit belongs to this window when its view-relative
    offset is below `own` (the next window, or the next data range, reports the others).

    Window starts keep the alignment of the data ranges (filesystem blocks / run starts).
    """
    end = space.size if end is None else min(end, space.size)
    if start >= end:
        return
    if window <= 0 or window % align:
        raise ValueError("window must be a positive multiple of the alignment")
    for rstart, rend in _mapped_ranges(space, start, end):
        if isinstance(space, Evidence):
            for pos, view in space.windows(rstart, min(end, rend + overlap), window=window,
                                           overlap=overlap, skip_holes=False):
                if pos >= rend:
                    break
                yield pos, view, min(window, rend - pos)
            continue
        read_opt = getattr(space, "read_opt", None)
        pos = rstart
        while pos < rend:
            stop = min(end, pos + window + overlap)
            if read_opt is not None:
                # a VHD's virtual disk says when a range is absent all the way down its chain:
                # zeros, nothing to find - a 2 TiB sparse VDI is not read as 2 TiB of zeros
                data = read_opt(pos, stop - pos)
                if data is None:
                    pos += window
                    continue
            else:
                data = space.read(pos, stop - pos)
            yield pos, np.frombuffer(data, dtype=np.uint8), min(window, rend - pos)
            pos += window
