"""Structure overlays for the hex view: which named field covers a byte.

Field tables are derived from the construct structs declared once in core/structs/* (never
re-declared here): `fields_of(struct)` walks a Struct's subcons and their fixed sizes. A
`PlacedStruct` puts such a table at an offset of a space; `Overlay` answers "which field is at
byte X" with a bisect over the placed fields, so painting a screen of rows costs a few lookups.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Field:
    """`size` bytes at `offset` (relative to the structure start) named `name`."""

    offset: int
    size: int
    name: str


@dataclass(frozen=True)
class PlacedField:
    start: int          # offset in the space
    end: int
    struct: str         # e.g. "vhd footer"
    name: str           # e.g. "checksum"
    colour: int         # index into the overlay palette


def _parsed_size(sc: Any, data: bytes | None, pos: int) -> int | None:
    """Bytes a data-dependent subcon takes when parsed from data[pos:] (None: cannot tell)."""
    if data is None or pos >= len(data):
        return None
    import io

    stream = io.BytesIO(data[pos:])
    try:
        sc.parse_stream(stream)
    except Exception:  # construct errors of any kind: garbage does not parse
        return None
    return stream.tell() or None


def fields_of(struct: Any, prefix: str = "", limit: int = 512, data: bytes | None = None) -> list[Field]:
    """Fields of a construct Struct, in order, nested structs flattened with dots.

    Fixed-size fields come from `sizeof()`. A field whose size depends on the data (a list ended
    by a terminator, e.g. pv_header's disk areas) is measured by parsing `data` (the bytes where
    the structure sits) when given; without data, or when it does not parse, the table stops
    there. Anything that is not a Struct becomes a single field.
    """
    out: list[Field] = []
    subcons = getattr(struct, "subcons", None)
    if subcons is None:
        # Renamed/Transformed wrappers around a Struct (e.g. Aligned, Padded) keep it in .subcon
        inner = getattr(struct, "subcon", None)
        if inner is not None and getattr(inner, "subcons", None) is not None:
            return fields_of(inner, prefix, limit)
        try:
            size = struct.sizeof()
        except Exception:  # construct raises SizeofError and friends for data-dependent sizes
            return out
        out.append(Field(0, size, prefix.rstrip(".") or "value"))
        return out
    pos = 0
    for i, sc in enumerate(subcons):
        if len(out) >= limit:
            break
        name = getattr(sc, "name", None)
        try:
            size = sc.sizeof()
        except Exception:
            measured = _parsed_size(sc, data, pos)
            if measured is None:
                break
            label = name if name else f"field{i}"
            out.append(Field(pos, measured, f"{prefix}{label}"))
            pos += measured
            continue
        if size <= 0:
            continue
        label = name if name else ("padding" if _is_padding(sc) else f"field{i}")
        inner = getattr(sc, "subcon", None)
        if getattr(sc, "subcons", None) is not None or (
                inner is not None and getattr(inner, "subcons", None) is not None):
            nested = fields_of(sc, f"{prefix}{label}.", limit - len(out))
            if nested and sum(f.size for f in nested) == size:
                out.extend(Field(pos + f.offset, f.size, f.name) for f in nested)
                pos += size
                continue
        out.append(Field(pos, size, f"{prefix}{label}"))
        pos += size
    return out


def _is_padding(sc: Any) -> bool:
    return type(sc).__name__ in ("Padding", "Padded", "Const") or "Pad" in type(sc).__name__


class Overlay:
    """Placed structures over one space; lookups by offset."""

    def __init__(self, placed: Iterable[PlacedField] = ()) -> None:
        # made disjoint: where two structures overlap, the one starting later wins the bytes
        fields = sorted((f for f in placed if f.end > f.start), key=lambda f: (f.start, f.end))
        disjoint: list[PlacedField] = []
        for f in fields:
            if disjoint and disjoint[-1].end > f.start:
                prev = disjoint.pop()
                if prev.start < f.start:
                    disjoint.append(PlacedField(prev.start, f.start, prev.struct, prev.name, prev.colour))
                if prev.end > f.end:
                    disjoint.append(f)
                    disjoint.append(PlacedField(f.end, prev.end, prev.struct, prev.name, prev.colour))
                    continue
            disjoint.append(f)
        self.fields = disjoint
        self._starts = [f.start for f in self.fields]

    @classmethod
    def build(cls, structures: Iterable[tuple[int, str, Sequence[Field]]]) -> "Overlay":
        """structures: (offset in the space, struct label, field table)."""
        placed: list[PlacedField] = []
        for s_index, (offset, label, table) in enumerate(structures):
            for f_index, f in enumerate(table):
                placed.append(PlacedField(offset + f.offset, offset + f.offset + f.size, label,
                                          f.name, (s_index * 7 + f_index) % 6))
        return cls(placed)

    def __bool__(self) -> bool:
        return bool(self.fields)

    def at(self, offset: int) -> PlacedField | None:
        i = bisect.bisect_right(self._starts, offset) - 1
        if i >= 0 and self.fields[i].start <= offset < self.fields[i].end:
            return self.fields[i]
        return None

    def in_range(self, start: int, end: int) -> list[PlacedField]:
        """Fields intersecting [start, end)."""
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        out = []
        while i < len(self.fields) and self.fields[i].start < end:
            f = self.fields[i]
            if f.end > start:
                out.append(f)
            i += 1
        return out
