"""Safe outputs: never onto the evidence, never over an existing file unless asked, and always
written to `<out>.part` first and renamed into place only when complete."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Iterable

from core.errors import UnsafeError


def _same_file(a: str, b: str) -> bool:
    """`a` and `b` name one file: same resolved path, or same inode (hard link, bind mount)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.exists(a) and os.path.samefile(a, b)
    except OSError:
        return False


def part_path(out: str) -> str:
    """Where an output is written before its rename into place."""
    return out + ".part"


def check_output_path(out: str, evidence_paths: Iterable[str], overwrite: bool) -> None:
    """Raise UnsafeError (exit 3) when `out` is an evidence path or exists without `overwrite`.

    `out.part` is checked too: it is opened for writing first, so an evidence file named
    `X.part` (or a symlink `out.part` pointing at the evidence) would be truncated by it.
    """
    part = part_path(out)
    for ev in evidence_paths:
        if _same_file(out, ev):
            raise UnsafeError(f"output {out} is the evidence {ev}")
        if _same_file(part, ev):
            raise UnsafeError(f"output {out} would be written through {part}, which is the "
                              f"evidence {ev}")
    if os.path.isdir(out):
        raise UnsafeError(f"output {out} is a directory")
    if os.path.isdir(part) and not os.path.islink(part):
        raise UnsafeError(f"output {out}: {part} is a directory")
    if os.path.lexists(out) and not overwrite:
        raise UnsafeError(f"output {out} exists (use --overwrite to replace it)")


def _open_part(part: str) -> BinaryIO:
    """A fresh `part` file: a stale one (a previous run's leftover, or a symlink) is removed,
    never written through; O_EXCL|O_NOFOLLOW so nothing else can be truncated by the open."""
    if os.path.lexists(part):
        os.unlink(part)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(part, flags, 0o644), "wb")


class AtomicOutput:
    """`with AtomicOutput(path) as f:` writes `path.part`; renamed to `path` on success only.

    Tracks the sha256 and size of everything written through `write()`; `seek()`-based sparse
    writing is allowed (then call `hash_file()` for the digest after closing).
    """

    def __init__(self, path: str, evidence_paths: Iterable[str] = (), overwrite: bool = False) -> None:
        self.evidence_paths = list(evidence_paths)
        check_output_path(path, self.evidence_paths, overwrite)
        self.path = path
        self.part = part_path(path)
        self._f: BinaryIO | None = None
        self.sha256 = hashlib.sha256()
        self.bytes_written = 0

    def __enter__(self) -> "AtomicOutput":
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # checked again right before the open: the paths may have changed since __init__
        check_output_path(self.path, self.evidence_paths, overwrite=True)
        self._f = _open_part(self.part)
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
    part = part_path(path)
    with _open_part(part) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)
