"""GNU ddrescue mapfiles: which parts of a rescued image were really read.

ddrescue writes the bytes it could read into the image and leaves the rest as it was (zeros in
a new file); the mapfile says which is which. Format (GNU ddrescue manual, "Mapfile
structure"): `#` comment lines, then one status line `current_pos current_status
[current_pass]`, then data lines `pos size status`, positions and sizes in bytes as C integers
(decimal, `0x` hex, or octal with a leading 0). Block status: `?` non-tried, `*` non-trimmed,
`/` non-scraped, `-` bad sector(s), `+` finished. Only `+` was read: everything else, and
anything past the last block, is unreadable evidence, never zeros to be trusted.

Found beside the image as `IMAGE.map`, `IMAGE.mapfile`, `IMAGE.log` (old ddrescue's name) or
the image name with its extension replaced by those (`disk.img` -> `disk.map`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from core.errors import SourceError
from core.evidence.layers import merge

BLOCK_STATUS = "?*/-+"
CURRENT_STATUS = "?*/-FG+"
MAX_MAPFILE_BYTES = 256 << 20  # a mapfile of a badly damaged disk is large, never this large
MAPFILE_SUFFIXES = (".map", ".mapfile", ".log")


class MapfileError(SourceError):
    """The file is not a ddrescue mapfile (one line naming where)."""


@dataclass(frozen=True)
class Mapfile:
    """A parsed mapfile: blocks (pos, size, status) in order, and where ddrescue stopped."""

    path: str
    blocks: tuple[tuple[int, int, str], ...]
    current_pos: int
    current_status: str

    @property
    def end(self) -> int:
        return self.blocks[-1][0] + self.blocks[-1][1] if self.blocks else 0

    @property
    def finished(self) -> list[tuple[int, int]]:
        return merge([(p, p + s) for p, s, st in self.blocks if st == "+"])

    def unreadable(self, size: int) -> list[tuple[int, int]]:
        """[start, end) of every byte of [0, size) not in a finished (`+`) block."""
        out: list[tuple[int, int]] = []
        pos = 0
        for a, b in self.finished:
            a, b = min(a, size), min(b, size)
            if a > pos:
                out.append((pos, a))
            pos = max(pos, b)
        if pos < size:
            out.append((pos, size))
        return out


def _number(text: str, where: str) -> int:
    try:
        value = int(text, 0) if not (len(text) > 1 and text[0] == "0" and text[1].isdigit()) \
            else int(text, 8)  # ddrescue reads C integers: a leading 0 is octal
    except ValueError:
        raise MapfileError(f"{where}: {text[:40]!r} is not a number") from None
    if value < 0:
        raise MapfileError(f"{where}: negative value {value}")
    return value


def parse_mapfile(text: str, path: str = "mapfile") -> Mapfile:
    """Parse mapfile text; MapfileError (one line with the line number) when it is not one."""
    status: tuple[int, str] | None = None
    blocks: list[tuple[int, int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path} line {lineno}"
        fields = line.split()
        if status is None:
            if len(fields) not in (2, 3) or fields[1] not in CURRENT_STATUS or len(fields[1]) != 1:
                raise MapfileError(f"{where}: not a ddrescue status line ({line[:60]!r})")
            if len(fields) == 3:
                _number(fields[2], where)
            status = (_number(fields[0], where), fields[1])
            continue
        if len(fields) != 3 or len(fields[2]) != 1 or fields[2] not in BLOCK_STATUS:
            raise MapfileError(f"{where}: not a ddrescue block line ({line[:60]!r})")
        pos, size = _number(fields[0], where), _number(fields[1], where)
        if size == 0:
            raise MapfileError(f"{where}: block of size 0")
        if blocks and pos < blocks[-1][0] + blocks[-1][1]:
            raise MapfileError(f"{where}: block at {pos} overlaps or goes back")
        blocks.append((pos, size, fields[2]))
    if status is None:
        raise MapfileError(f"{path}: no ddrescue status line: not a mapfile")
    return Mapfile(path, tuple(blocks), status[0], status[1])


def read_mapfile(path: str) -> Mapfile:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MAPFILE_BYTES + 1)
    except FileNotFoundError:
        raise MapfileError(f"{path}: no such mapfile") from None
    except IsADirectoryError:
        raise MapfileError(f"{path}: is a directory, not a mapfile") from None
    except OSError as exc:
        raise MapfileError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_MAPFILE_BYTES:
        raise MapfileError(f"{path}: larger than {MAX_MAPFILE_BYTES} bytes: not a mapfile")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MapfileError(f"{path}: not text: not a ddrescue mapfile") from None
    return parse_mapfile(text, path)


def find_mapfile(image: str) -> str | None:
    """The mapfile lying beside `image` under one of the usual names, or None."""
    image = os.fspath(image)
    stem, ext = os.path.splitext(image)
    candidates = [image + s for s in MAPFILE_SUFFIXES]
    if ext:
        candidates += [stem + s for s in MAPFILE_SUFFIXES if stem + s != image]
    for cand in candidates:
        if os.path.isfile(cand):
            try:
                read_mapfile(cand)
            except MapfileError:
                continue  # e.g. an unrelated `.log`: not ours to use
            return cand
    return None
