"""Expert Witness (EWF: E01/Ex01/S01, split into segments) evidence through libewf's bindings.

`libewf-python` (pyewf) opens the segment set found from the first segment (`pyewf.glob`) read
only. Reads go through one handle under a lock (the workstation reads from worker threads and a
libewf handle keeps a read position). The hashes ewfacquire stored (MD5, SHA1, ...) and the
acquisition header (case number, examiner, ...) are kept for display and for `verify`.

A chunk whose stored checksum does not match its data is returned by libewf as zeros and
recorded in the handle's checksum-error list (libyal/libewf libewf/libewf_handle.c:
libewf_handle_read_buffer_at_offset -> libewf_handle_append_checksum_error). pyewf does not
wrap that list, so it is read through ctypes from the same shared object (the functions
libewf_handle_get_number_of_checksum_errors / libewf_handle_get_checksum_error are exported),
with the libewf_handle_t pointer that follows PyObject_HEAD in pyewf's object
(libyal/libewf pyewf/pyewf_handle.h: struct pyewf_handle). Those ranges become unreadable
ranges like a disk's bad sectors, so nothing downstream trusts the zeros.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading

from core.errors import SourceError
from core.source import Evidence

EWF_SIGNATURES = (b"EVF\x09\x0d\x0a\xff\x00", b"LVF\x09\x0d\x0a\xff\x00",
                  b"EVF2\x0d\x0a\x81\x00", b"LEF2\x0d\x0a\x81\x00")  # libewf documentation: EWF file header
_EWF_NAME = re.compile(r"\.(e|l|s)(01|x01)$", re.IGNORECASE)


# the first segment's names libewf globs from (libewf_glob: .E01/.e01, .Ex01, .L01, .Lx01, .s01)
EWF_FIRST_SEGMENT = re.compile(r"\.(e|ex|l|lx|s)01$", re.IGNORECASE)


def is_ewf(path: str) -> bool:
    """True when `path` is named as an EWF first segment and starts with an EWF segment file
    signature (a raw image whose first bytes happen to read "EVF..." stays a raw image)."""
    if not EWF_FIRST_SEGMENT.search(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(sig) for sig in EWF_SIGNATURES)


def _pyewf():
    try:
        import pyewf  # noqa: PLC0415 (optional at import time: only EWF evidence needs it)
    except ImportError:
        raise SourceError("EWF (E01) evidence needs libewf-python: pip install libewf-python") \
            from None
    return pyewf


class _ChecksumErrors:
    """The handle's checksum-error list (start sector, sector count) through ctypes."""

    def __init__(self, module, handle) -> None:
        self._ok = False
        try:
            lib = ctypes.CDLL(module.__file__)
            self._count = lib.libewf_handle_get_number_of_checksum_errors
            self._count.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32),
                                    ctypes.POINTER(ctypes.c_void_p)]
            self._get = lib.libewf_handle_get_checksum_error
            self._get.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64),
                                  ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_void_p)]
            # pyewf_handle: PyObject_HEAD (ob_refcnt, ob_type) then libewf_handle_t *handle
            head = object.__basicsize__
            self._handle = ctypes.c_void_p.from_address(id(handle) + head).value
            self._ok = bool(self._handle) and self.count() == 0
        except (OSError, AttributeError, ValueError):
            self._ok = False

    @property
    def available(self) -> bool:
        return self._ok

    def count(self) -> int:
        n = ctypes.c_uint32(0)
        err = ctypes.c_void_p(None)
        if self._count(self._handle, ctypes.byref(n), ctypes.byref(err)) != 1:
            raise ValueError("libewf: cannot count checksum errors")
        return n.value

    def get(self, index: int) -> tuple[int, int]:
        start, count = ctypes.c_uint64(0), ctypes.c_uint64(0)
        err = ctypes.c_void_p(None)
        if self._get(self._handle, index, ctypes.byref(start), ctypes.byref(count),
                     ctypes.byref(err)) != 1:
            raise ValueError("libewf: cannot read a checksum error")
        return start.value, count.value


class EwfEvidence(Evidence):
    """An EWF segment set as one read-only disk."""

    def __init__(self, path: str) -> None:
        super().__init__(path)  # the usual checks (exists, not a directory) on the first segment
        pyewf = _pyewf()
        try:
            self.segments = list(pyewf.glob(self.path))
        except (IOError, OSError, TypeError) as exc:
            self.close()
            raise SourceError(f"{self.path}: cannot find the EWF segment files: {exc}") from None
        self._handle = pyewf.handle()
        try:
            self._handle.open(self.segments, "r")
        except (IOError, OSError) as exc:
            self.close()
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(f"{self.path}: not a readable EWF image: {first}") from None
        self._lock = threading.Lock()
        self.size = int(self._handle.get_media_size())
        self.sector_size = int(self._handle.get_bytes_per_sector() or 512)
        self.chunk_size = int(self._handle.get_chunk_size())
        self.stored_hashes = {k.upper(): v.lower() for k, v in
                              (self._handle.get_hash_values() or {}).items() if v}
        self.header = dict(self._handle.get_header_values() or {})
        self._checksum_errors = _ChecksumErrors(pyewf, self._handle)
        self._errors_seen = 0

    def __repr__(self) -> str:
        return f"EwfEvidence({self.path!r}, segments={len(self.segments)}, size={self.size})"

    @property
    def checks_chunks(self) -> bool:
        """Whether chunk checksum errors can be seen (ctypes access to libewf worked)."""
        return self._checksum_errors.available

    def close(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            try:
                handle.close()
            except (IOError, OSError):
                pass
            self._handle = None
        super().close()

    def _pread_raw(self, offset: int, length: int) -> bytes:
        with self._lock:
            if self._handle is None:
                raise OSError(9, "EWF image closed")
            data = self._handle.read_buffer_at_offset(length, offset)
            self._collect_checksum_errors()
        return data

    def _collect_checksum_errors(self) -> None:
        """New entries of libewf's checksum-error list become unreadable ranges."""
        if not self._checksum_errors.available:
            return
        n = self._checksum_errors.count()
        while self._errors_seen < n:
            sector, count = self._checksum_errors.get(self._errors_seen)
            self._errors_seen += 1
            start = sector * self.sector_size
            self._record_unreadable(start, min(self.size, start + count * self.sector_size))

    def data_ranges(self, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        end = self.size if end is None else min(end, self.size)
        return [(start, end)] if start < end else []
