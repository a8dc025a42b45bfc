"""Safe outputs: never onto the evidence, never over an existing file unless asked, and always
written to `<out>.part` first and renamed into place only when complete."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Iterable

from core.errors import UnsafeError


def check_output_path(out: str, evidence_paths: Iterable[str], overwrite: bool) -> None:
    """Raise UnsafeError (exit 3) when `out` is an evidence path or exists without `overwrite`."""
    out_real = os.path.realpath(out)
    for ev in evidence_paths:
        if out_real == os.path.realpath(ev):
            raise UnsafeError(f"output {out} is the evidence {ev}")
        try:
            if os.path.exists(out) and os.path.samefile(out, ev):
                raise UnsafeError(f"output {out} is the evidence {ev}")
        except OSError:
            pass
    if os.path.isdir(out):
        raise UnsafeError(f"output {out} is a directory")
    if os.path.lexists(out) and not overwrite:
        raise UnsafeError(f"output {out} exists (use --overwrite to replace it)")


class AtomicOutput:
    """`with AtomicOutput(path) as f:` writes `path.part`; renamed to `path` on success only.

    Tracks the sha256 and size of everything written through `write()`; `seek()`-based sparse
    writing is allowed (then call `hash_file()` for the digest after closing).
    """

    def __init__(self, path: str, evidence_paths: Iterable[str] = (), overwrite: bool = False) -> None:
        check_output_path(path, evidence_paths, overwrite)
        self.path = path
        self.part = path + ".part"
        self._f: BinaryIO | None = None
        self.sha256 = hashlib.sha256()
        self.bytes_written = 0

    def __enter__(self) -> "AtomicOutput":
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._f = open(self.part, "wb")
        return self

    @property
    def file(self) -> BinaryIO:
        assert self._f is not None
        return self._f

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.bytes_written += len(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._f is not None
        try:
            if exc_type is None:
                self._f.flush()
                os.fsync(self._f.fileno())
        finally:
            self._f.close()
        if exc_type is None:
            os.replace(self.part, self.path)
        else:
            try:
                os.unlink(self.part)
            except OSError:
                pass


def hash_file(path: str, chunk: int = 8 << 20) -> tuple[int, str]:
    """(size, sha256 hex) of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Small files (case files, map files): write `path.part`, fsync, rename over `path`."""
    part = path + ".part"
    with open(part, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
