"""Safe outputs: never onto the evidence, never over an existing file unless asked, and always
written to `<out>.part` first and renamed into place only when complete."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import BinaryIO, Iterable

from core.errors import SrsalvageError, UnsafeError


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


# Kernel pseudo file systems and device nodes: an output there writes into the kernel or onto a
# disk (perhaps the evidence's own), never into a file a technician keeps.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


def _sysfs_block_dir(rdev: int) -> str | None:
    """/sys/class/block/<name> of a block device number (the real sysfs path), or None."""
    link = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    return os.path.realpath(link) if os.path.exists(link) else None


def _read_sys(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _dev_number(sys_dir: str) -> int | None:
    text = _read_sys(os.path.join(sys_dir, "dev"))
    if not text or ":" not in text:
        return None
    major, minor = text.split(":", 1)
    try:
        return os.makedev(int(major), int(minor))
    except ValueError:
        return None


def evidence_identities(path: str) -> tuple[set[tuple[int, int]], set[int], list[str]]:
    """What lies behind one evidence path: (inodes as (st_dev, st_ino), block device numbers,
    human descriptions). A block device brings its whole disk when it is a partition, and a
    loop device the file behind it (/sys/block/loopN/loop/backing_file, as losetup reads it,
    util-linux lib/loopdev.c `loopcxt_get_backing_file`), recursively."""
    inodes: set[tuple[int, int]] = set()
    devices: set[int] = set()
    names: list[str] = []
    todo = [path]
    seen: set[str] = set()
    while todo and len(seen) < 16:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            st = os.stat(p)
        except OSError:
            continue
        inodes.add((st.st_dev, st.st_ino))
        names.append(p)
        if not stat.S_ISBLK(st.st_mode):
            continue
        devices.add(st.st_rdev)
        sys_dir = _sysfs_block_dir(st.st_rdev)
        if sys_dir is None:
            continue
        disks = [sys_dir]
        if os.path.exists(os.path.join(sys_dir, "partition")):
            parent = os.path.dirname(sys_dir)          # .../block/sda/sda1 -> .../block/sda
            disks.append(parent)
            dev = _dev_number(parent)
            if dev is not None:
                devices.add(dev)
                names.append(f"/dev/{os.path.basename(parent)}")
        for disk in disks:
            backing = _read_sys(os.path.join(disk, "loop", "backing_file"))
            if backing:
                todo.append(backing.removesuffix(" (deleted)"))
    return inodes, devices, names


def _forbidden_root(path: str) -> str | None:
    real = os.path.realpath(path)
    for root in FORBIDDEN_ROOTS:
        if real == root or real.startswith(root + "/"):
            return root
    return None


def _identity_clash(candidate: str, protected: list[tuple[str, tuple]]) -> str | None:
    """The evidence `candidate` would be (same inode, same block device), or None."""
    try:
        st = os.stat(candidate)
    except OSError:
        return None
    for ev, (inodes, devices, names) in protected:
        if (st.st_dev, st.st_ino) in inodes:
            behind = next((n for n in names if _same_file(candidate, n)), ev)
            return ev if behind == ev else f"{ev} (its backing file {behind})"
        if stat.S_ISBLK(st.st_mode) and st.st_rdev in devices:
            return ev
    return None


def check_output_path(out: str, evidence_paths: Iterable[str], overwrite: bool) -> None:
    """Raise UnsafeError (exit 3) when `out` is the evidence or anything behind it, lies in
    /proc, /sys or /dev, or exists without `overwrite`.

    Identity, not name: the same inode under another name (hard link, bind mount, symlink), the
    file behind a loop device given as evidence, the disk of a partition given as evidence.
    `out.part` is checked too: it is opened for writing first, so an evidence file named
    `X.part` (or a symlink `out.part` pointing at the evidence) would be truncated by it.
    """
    if not out:
        raise SrsalvageError("the output path is empty")
    part = part_path(out)
    evidence_paths = [e for e in evidence_paths if e]
    for ev in evidence_paths:
        if _same_file(out, ev):
            raise UnsafeError(f"output {out} is the evidence {ev}")
        if _same_file(part, ev):
            raise UnsafeError(f"output {out} would be written through {part}, which is the "
                              f"evidence {ev}")
    protected = [(ev, evidence_identities(ev)) for ev in evidence_paths]
    for candidate in (out, part):
        clash = _identity_clash(candidate, protected)
        if clash:
            raise UnsafeError(f"output {out} is the evidence {clash} under another name"
                              + ("" if candidate == out else f" (through {part})"))
    root = _forbidden_root(out) or _forbidden_root(os.path.dirname(os.path.abspath(out)))
    if root:
        raise UnsafeError(f"output {out} is under {root}: outputs go to a regular directory, "
                          f"never into {root}")
    if os.path.isdir(out):
        raise UnsafeError(f"output {out} is a directory")
    if os.path.isdir(part) and not os.path.islink(part):
        raise UnsafeError(f"output {out}: {part} is a directory")
    if os.path.lexists(out) and not overwrite:
        raise UnsafeError(f"output {out} exists (use --overwrite to replace it)")


def check_output_dir(out_dir: str, evidence_paths: Iterable[str]) -> None:
    """The directory the carvers write into: not empty, not the evidence, not under
    /proc, /sys or /dev, not an existing non-directory."""
    if not out_dir:
        raise SrsalvageError("the output directory is empty")
    evidence_paths = [e for e in evidence_paths if e]
    protected = [(ev, evidence_identities(ev)) for ev in evidence_paths]
    for ev in evidence_paths:
        if _same_file(out_dir, ev):
            raise UnsafeError(f"output {out_dir} is the evidence {ev}")
    clash = _identity_clash(out_dir, protected)
    if clash:
        raise UnsafeError(f"output {out_dir} is the evidence {clash} under another name")
    root = _forbidden_root(out_dir)
    if root:
        raise UnsafeError(f"output {out_dir} is under {root}: outputs go to a regular "
                          f"directory, never into {root}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UnsafeError(f"output {out_dir} exists and is not a directory")


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
        failure: BaseException | None = None
        try:
            if exc_type is None:
                self._f.flush()
                os.fsync(self._f.fileno())
        except OSError as err:        # ENOSPC, EFBIG, EIO on the output
            failure = err
        finally:
            try:
                self._f.close()
            except OSError as err:    # close() flushes the rest: it can fail the same ways
                failure = failure or err
        if exc_type is None and failure is None:
            os.replace(self.part, self.path)
            return
        # never a partial output left behind, whatever failed (issue 11 item 7: a failed
        # close() used to skip this and leave a 16 TiB sparse .part)
        try:
            os.unlink(self.part)
        except OSError:
            pass
        err = failure if failure is not None else exc
        if isinstance(err, OSError):
            raise SrsalvageError(f"cannot write {self.path}: {err.strerror or err} "
                                 f"(nothing left behind)") from None


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
