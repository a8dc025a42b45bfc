"""Split raw images (`disk.001 disk.002 ...`, `disk.aa disk.ab ...`) joined read-only.

A technician who imaged onto FAT media or with `split -b` brings the disk in pieces; joining
them first costs a full extra copy. Here every segment is opened O_RDONLY and reads are served
across segment boundaries. The segments are found from any one of them: the same stem, the
same suffix scheme (numeric `.000`/`.001`..., or alphabetic `.aa`..`.zz` as coreutils
`split` names them), consecutive from the first.
"""

from __future__ import annotations

import bisect
import os
import re
import string

from core.errors import SourceError
from core.source import Evidence

MAX_SEGMENTS = 100_000

_NUMERIC = re.compile(r"^(?P<stem>.+)\.(?P<num>\d{3,})$")
_ALPHA = re.compile(r"^(?P<stem>.+)\.(?P<alpha>[a-z]{2,3})$")


def _alpha_name(index: int, width: int) -> str:
    letters = string.ascii_lowercase
    out = ""
    for _ in range(width):
        index, r = divmod(index, 26)
        out = letters[r] + out
    return out


def _alpha_index(text: str) -> int:
    n = 0
    for c in text:
        n = n * 26 + (ord(c) - 97)
    return n


def split_segments(path: str) -> list[str] | None:
    """The ordered segment paths of the split image `path` belongs to; None when it is not one.

    Only a name with a split suffix whose first segment (`.000`/`.001`, `.aa`) exists and
    that has a second segment counts: a lone `disk.001` is an ordinary image.
    """
    path = os.fspath(path)
    m = _NUMERIC.match(path)
    if m:
        stem, width = m["stem"], len(m["num"])
        first = next((i for i in (0, 1) if os.path.isfile(f"{stem}.{i:0{width}d}")), None)
        if first is None:
            return None
        names = []
        i = first
        while len(names) < MAX_SEGMENTS and os.path.isfile(f"{stem}.{i:0{width}d}"):
            names.append(f"{stem}.{i:0{width}d}")
            i += 1
        return names if len(names) > 1 else None
    m = _ALPHA.match(path)
    if m:
        stem, width = m["stem"], len(m["alpha"])
        names = []
        i = 0
        while i < 26 ** width and os.path.isfile(f"{stem}.{_alpha_name(i, width)}"):
            names.append(f"{stem}.{_alpha_name(i, width)}")
            i += 1
        if len(names) > 1 and _alpha_index(m["alpha"]) < len(names):
            return names
    return None


class SplitEvidence(Evidence):
    """Several raw segment files read as one disk; every segment opened read-only."""

    def __init__(self, segments: list[str]) -> None:
        if not segments:
            raise SourceError("split image: no segment")
        super().__init__(segments[0])  # checks and opens the first one like any image
        self.segments = list(segments)
        self._fds = [self._fd]
        self._starts = [0]
        self._sizes = [self.size]
        try:
            for name in segments[1:]:
                seg = Evidence(name)
                if seg.is_block_device:
                    seg.close()
                    raise SourceError(f"{name}: a block device cannot be a split segment")
                self._fds.append(seg._fd)
                seg._fd = -1  # the fd is ours now
                self._starts.append(self._starts[-1] + self._sizes[-1])
                self._sizes.append(seg.size)
        except SourceError:
            self.close()
            raise
        self.size = self._starts[-1] + self._sizes[-1]

    def __repr__(self) -> str:
        return f"SplitEvidence({self.path!r}, segments={len(self.segments)}, size={self.size})"

    def close(self) -> None:
        for fd in getattr(self, "_fds", []):
            if fd >= 0:
                os.close(fd)
        self._fds = []
        self._fd = -1

    def _pread_raw(self, offset: int, length: int) -> bytes:
        """One pread per segment the range touches; short at the end of the last segment."""
        parts = []
        pos, end = offset, offset + length
        i = bisect.bisect_right(self._starts, pos) - 1
        while pos < end and 0 <= i < len(self._fds):
            seg_end = self._starts[i] + self._sizes[i]
            n = min(end, seg_end) - pos
            if n > 0:
                data = os.pread(self._fds[i], n, pos - self._starts[i])
                parts.append(data)
                if len(data) < n:  # a segment shrank under us: stop, the caller salvages
                    break
                pos += n
            i += 1
        return b"".join(parts)

    def data_ranges(self, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        end = self.size if end is None else min(end, self.size)
        return [(start, end)] if start < end else []
