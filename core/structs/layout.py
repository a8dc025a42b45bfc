"""Field offsets and numpy views of fixed-size `construct` Structs.

Hot loops (thousands of group descriptors, inodes checked per candidate block) cannot afford a
construct parse per record; they read fields at the offsets the one construct declaration
gives, or view a table of records as a numpy structured array built from that declaration.
"""

from __future__ import annotations

import functools

import numpy as np
from construct import Array, Bytes, FormatField, Renamed, Struct

_NP_CODE = {"B": "u1", "H": "u2", "L": "u4", "I": "u4", "Q": "u8",
            "b": "i1", "h": "i2", "l": "i4", "i": "i4", "q": "i8"}


@functools.cache
def offsets(struct: Struct) -> dict[str, int]:
    """name -> byte offset of every named field of a fixed-size Struct."""
    out, pos = {}, 0
    for sc in struct.subcons:
        if getattr(sc, "name", None):
            out[sc.name] = pos
        pos += sc.sizeof()
    return out


def _np_format(sc) -> str | tuple:
    inner = sc.subcon if isinstance(sc, Renamed) else sc
    if isinstance(inner, FormatField):
        order = ">" if inner.fmtstr[0] == ">" else "<"
        return order + _NP_CODE[inner.fmtstr[1]]
    if isinstance(inner, Array):
        return (_np_format(inner.subcon), (inner.count,))
    if isinstance(inner, Bytes):
        return f"V{inner.length}"
    raise TypeError(f"no numpy form for {inner!r}")


@functools.cache
def numpy_dtype(struct: Struct, itemsize: int | None = None) -> np.dtype:
    """A structured dtype with the Struct's named fields at their offsets.  With `itemsize`
    (a record size on disk, e.g. ext4's s_desc_size) fields past it are left out and records
    are `itemsize` apart."""
    size = struct.sizeof() if itemsize is None else itemsize
    names, formats, offs = [], [], []
    pos = 0
    for sc in struct.subcons:
        n = sc.sizeof()
        if getattr(sc, "name", None) and pos + n <= size:
            names.append(sc.name)
            formats.append(_np_format(sc))
            offs.append(pos)
        pos += n
    return np.dtype({"names": names, "formats": formats, "offsets": offs, "itemsize": size})
