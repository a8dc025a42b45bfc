"""A read-only FUSE file that fails with EIO on chosen byte ranges: a dying disk for ddrescue.

    python tests/fuse_badblocks.py SOURCE MOUNTPOINT START:END [START:END ...]

Serves SOURCE as MOUNTPOINT/disk (direct_io: every read reaches us, no page cache or
read-ahead); a read that touches any [START, END) fails with EIO like a bad sector would, the
rest is SOURCE's bytes. Runs in the foreground until unmounted (`fusermount3 -u MOUNTPOINT`).
Uses mfusepy (ctypes bindings to libfuse 3, from PyPI).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import mfusepy as fuse


class BadBlocks(fuse.Operations):
    use_ns = True

    def __init__(self, source: str, bad: list[tuple[int, int]]) -> None:
        self.fd = os.open(source, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.bad = bad

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        if path == "/disk":
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "disk"]

    def open(self, path, flags):
        if path != "/disk":
            raise fuse.FuseOSError(errno.ENOENT)
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise fuse.FuseOSError(errno.EROFS)
        return 0

    def read(self, path, size, offset, fh):
        end = offset + size
        if any(a < end and b > offset for a, b in self.bad):
            raise fuse.FuseOSError(errno.EIO)
        return os.pread(self.fd, size, offset)


def main() -> None:
    source, mountpoint, *ranges = sys.argv[1:]
    bad = [tuple(int(x) for x in r.split(":")) for r in ranges]
    fuse.FUSE(BadBlocks(source, bad), mountpoint, foreground=True, ro=True, direct_io=True)


if __name__ == "__main__":
    main()
