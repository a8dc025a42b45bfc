"""Exact multi-byte search at memory speed: every offset of a needle in a buffer, no copies.

Why: byte-granular magics (RAR signatures inside SFX executables, any byte offset) need an
exact substring search over whole windows. glibc's `memmem` (two-way / SSE2 on x86-64) runs at
about 6 GB/s, against ~2.8 GB/s for Python `re` and ~1.1 GB/s for a loop of `bytes.find`, and
a numpy compare chain allocates a temporary per byte of the needle. `find_all` calls memmem
through ctypes on the buffer's own memory (numpy's `.ctypes.data`; immutable `bytes` go
through a read-only `np.frombuffer` view, whose address is the bytes object's own; the needle
is passed as a `c_char_p` pointing into its bytes), one call per occurrence, so the Python
work is per hit, never per byte. Where libc has no memmem (non-glibc platforms) it falls back to
`re.finditer(re.escape(needle))` with a lookahead so overlapping occurrences are found too.

A ctypes call and taking a numpy array's address cost ~3 us: for buffers below SMALL (the
small data ranges of a sparse image) a copy and `bytes.find` are cheaper than that.

Not everywhere the fastest: on a window already in the CPU caches (just read with preadv),
comparing it as aligned uint32 words with numpy (core.scan's align-1 search) runs at ~8 GB/s
against memmem's ~6.5 GB/s here, so the one-pass scan keeps that; memmem wins over `re`,
`bytes.find` and copies (the RAR carver, the LVM text markers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from typing import Union

import numpy as np

Buffer = Union[np.ndarray, bytes, bytearray, memoryview]
SMALL = 16 << 10        # below this, copy + bytes.find beats memmem's fixed ctypes overhead
_NONE = np.zeros(0, dtype=np.int64)
_NONE.flags.writeable = False           # the shared "no hit" answer (most calls): no allocation


def _load_memmem():
    """libc's memmem as a ctypes function, or None (no libc found, or libc without memmem)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        fn = libc.memmem
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    return fn


_MEMMEM = _load_memmem()


def has_memmem() -> bool:
    """True when the fast path (libc memmem) is in use."""
    return _MEMMEM is not None


def _as_array(view: Buffer) -> np.ndarray:
    """A uint8 numpy view of `view` sharing its memory (read-only buffers stay read-only)."""
    if isinstance(view, np.ndarray):
        arr = view.reshape(-1) if view.ndim != 1 else view
        if arr.dtype != np.uint8:
            arr = arr.view(np.uint8)
        return arr
    return np.frombuffer(view, dtype=np.uint8)


def _find_all_memmem(arr: np.ndarray, needle: bytes, limit: int | None) -> np.ndarray:
    n, m = len(arr), len(needle)
    base = arr.ctypes.data
    nptr = ctypes.c_char_p(needle)        # points into the bytes object itself: no copy
    out: list[int] = []
    pos = 0
    memmem = _MEMMEM
    while pos + m <= n and (limit is None or len(out) < limit):
        hit = memmem(base + pos, n - pos, nptr, m)
        if not hit:
            break
        rel = hit - base
        out.append(rel)
        pos = rel + 1                     # overlapping occurrences too
    return np.array(out, dtype=np.int64) if out else _NONE


def _find_all_find(arr: np.ndarray, needle: bytes, limit: int | None) -> np.ndarray:
    buf = arr.tobytes()                   # small: the copy costs less than a ctypes call
    out: list[int] = []
    pos = buf.find(needle)
    while pos >= 0 and (limit is None or len(out) < limit):
        out.append(pos)
        pos = buf.find(needle, pos + 1)   # overlapping occurrences too
    return np.array(out, dtype=np.int64) if out else _NONE


def _find_all_re(arr: np.ndarray, needle: bytes, limit: int | None) -> np.ndarray:
    # a zero-width lookahead match advances one byte, so overlapping occurrences are found
    pattern = re.compile(b"(?=" + re.escape(needle) + b")")
    out: list[int] = []
    for match in pattern.finditer(memoryview(arr)):
        if limit is not None and len(out) >= limit:
            break
        out.append(match.start())
    return np.array(out, dtype=np.int64) if out else _NONE


def find_all(view: Buffer, needle: bytes, limit: int | None = None, *,
             use_memmem: bool | None = None) -> np.ndarray:
    """Sorted int64 offsets of every (overlapping) occurrence of `needle` in `view` (read-only
    when empty: one shared array).

    `view` is a contiguous numpy array (any dtype, read as bytes), bytes, bytearray or
    memoryview; it is not copied. At most `limit` offsets (the first ones) when given.
    `use_memmem=True` forces memmem (where libc has it) whatever the size, `False` the
    portable `re` path; tests compare them.
    """
    needle = bytes(needle)
    if not needle:
        raise ValueError("find_all: empty needle")
    if limit is not None and limit <= 0:
        return _NONE
    arr = _as_array(view)
    if not arr.flags.c_contiguous:
        raise ValueError("find_all: the buffer must be contiguous")
    if len(arr) < len(needle):
        return _NONE
    if use_memmem is None and len(arr) < SMALL:
        return _find_all_find(arr, needle, limit)
    if use_memmem is not False and _MEMMEM is not None:
        return _find_all_memmem(arr, needle, limit)
    return _find_all_re(arr, needle, limit)


__all__ = ["find_all", "has_memmem"]
