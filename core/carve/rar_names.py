"""Member names of carved RAR archives, as hostile input (split out of
core/carve/rar_extract.py): printed with control and format characters escaped, and cut into
path components that stay inside the output directory (a leading `/` or drive dropped, `..` and
NUL refused, as bsdtar and unrar do); and the output side: every directory opened relative to
the previous one with O_NOFOLLOW, so nothing is ever written through a symbolic link, data to
`NAME.part` first, an existing file never overwritten (`NAME~2`).
"""

from __future__ import annotations

import hashlib
import io
import os
import unicodedata

from core.output import part_path


def printable(name: str) -> str:
    """`name` with control and format characters (also bidi overrides) escaped as \\xNN /
    \\uNNNN, so a hostile member name cannot drive the terminal or hide its real form."""
    out = []
    for ch in name:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


class UnsafeName(ValueError):
    pass


def safe_components(name: str) -> tuple[list[str], str | None]:
    """(path components inside the output directory, note) for a member name; UnsafeName when
    the name cannot be placed inside it. A leading `/`, `//server/share/` or `C:` is dropped
    with a note (bsdtar: "Removing leading '/'"; unrar does the same)."""
    if "\0" in name:
        raise UnsafeName("name contains a NUL character")
    note = None
    rest = name
    if len(rest) >= 2 and rest[1] == ":" and rest[0].isalpha():
        rest, note = rest[2:], f"drive {rest[:2]} removed"
    if rest.startswith("/"):
        rest, note = rest.lstrip("/"), "leading / removed"
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeName("name contains a '..' component")
    if not parts:
        raise UnsafeName("name is empty once made relative")
    return parts, note


# -- output: relative to directory descriptors, never through a link ---------------------------
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRFLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW


def _open_dir(root_fd: int, parts: list[str]) -> int:
    """A descriptor of root/parts..., each level created when missing and opened with
    O_NOFOLLOW|O_DIRECTORY: a symlink or a file in the way raises OSError."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open(part, _DIRFLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _free_bytes(dir_fd: int) -> int | None:
    try:
        st = os.fstatvfs(dir_fd)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _free_name(name: str, dir_fd: int) -> str:
    """`name`, or `name~2`, `name~3`... the first that does not exist (nothing is overwritten)."""
    if not _exists(name, dir_fd):
        return name
    n = 2
    while _exists(f"{name}~{n}", dir_fd):
        n += 1
    return f"{name}~{n}"


class _MemberOutput:
    """One member's bytes to `leaf.part` in an opened directory, then renamed (the
    core.output.AtomicOutput way, here relative to a directory descriptor)."""

    def __init__(self, dir_fd: int, leaf: str) -> None:
        self.dir_fd, self.leaf = dir_fd, leaf
        self.part = part_path(leaf)
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644,
                     dir_fd=dir_fd)
        self.file = os.fdopen(fd, "wb")
        self.sha256 = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.written += len(data)

    def finish(self, final: str) -> str:
        """Close, flush to disk, rename to a free form of `final`; returns the name used."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        name = _free_name(final, self.dir_fd)
        os.rename(self.part, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        return name

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.part, dir_fd=self.dir_fd)
        except OSError:
            pass


class _ZeroPadded(io.RawIOBase):
    """A seekable read-only file that goes on with `pad` zero bytes after its end."""

    def __init__(self, f, pad: int) -> None:
        super().__init__()
        self.f, self.pad, self.pos = f, pad, 0
        self.size = os.fstat(f.fileno()).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        want = min(len(view), self.size + self.pad - self.pos)
        if want <= 0:
            return 0
        got = 0
        if self.pos < self.size:
            self.f.seek(self.pos)
            got = self.f.readinto(view[: min(want, self.size - self.pos)]) or 0
        if self.pos + got >= self.size:
            view[got:want] = bytes(want - got)
            got = want
        self.pos += got
        return got

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size + self.pad}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos
