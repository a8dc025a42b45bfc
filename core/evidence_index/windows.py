"""The evidence index's reads: the pass's windows over the data ranges, and what a window holds.

`pass_windows` reads the evidence window by window (the next ones read by a helper thread while
the caller works on this one: `_read_ahead` for guarded and other evidence, READS_AHEAD + 1
buffers and os.preadv for a plain image file, with O_DIRECT where its file system takes it);
`nonzero_runs` finds the blocks of a window holding data; `_subtract` leaves out of the pass's
unreadable ranges those said at open. Used by `core.evidence_index.EvidenceIndex.build` (see
the package docstring).
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from concurrent.futures import Future
from typing import Callable, Iterator

import numpy as np

SECTOR = 512
# windows read ahead of the one the caller works on (a buffer each): with one, the disk idled
# whenever a window's numpy work took longer than the next read (their times are close on an
# SSD: 14 ms of work, 16 ms of reading per 32 MiB window here)
READS_AHEAD = 2

def pass_windows(ev, ranges: list[tuple[int, int]], window: int, overlap: int,
                 lock: threading.Lock | None = None, stop: threading.Event | None = None
                 ) -> Iterator[tuple[int, np.ndarray, int, int]]:
    """(pos, view, lo, own_end) over the data ranges: each view starts at `pos` (on the 512
    grid), holds the structures starting in [lo, own_end) and runs `overlap` further (clipped
    at the image end), as scan() windows each range. On a plain image file the next window is
    read by a helper thread (os.preadv releases the GIL) into one of READS_AHEAD + 1 buffers
    while the caller works on this one; a short or failed read, and every other kind of
    evidence (a block device's guarded reads, EWF, split or mapped images), goes through
    ev.read, which survives and records I/O errors -- for those too the next window is read by
    the helper thread while the caller works (`lock`: held around every ev.read, shared with
    the caller's own reads of the evidence; `stop`: set on the way out, the helper's read
    gives up there when ev.cancel includes it, and is waited for)."""
    from concurrent.futures import ThreadPoolExecutor
    from core.source import _PREAD_RAW
    size = int(ev.size)
    fd = getattr(ev, "_fd", -1)
    fast = (fd is not None and fd >= 0 and not getattr(ev, "guarded", True)
            and getattr(getattr(ev, "_pread_raw", None), "__func__", None) is _PREAD_RAW)
    jobs: list[tuple[int, int, int, int]] = []          # (pos, n, lo, own_end)
    for rstart, rend in ranges:
        pos = rstart - rstart % SECTOR
        while pos < rend:
            n = min(size, rend + overlap, pos + window + overlap) - pos
            jobs.append((pos, n, max(pos, rstart), min(pos + window, rend)))
            pos += window
    if not jobs:
        return
    lock = lock if lock is not None else threading.Lock()

    def ev_read(pos: int, n: int) -> bytes:
        with lock:
            return ev.read(pos, n)

    if not fast:
        yield from _read_ahead(ev_read, jobs, stop)
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError):
        pass
    direct = _open_direct(ev)
    need = max(n for _, n, _, _ in jobs) + 2 * DIRECT_ALIGN
    # page-aligned (anonymous mmap) buffers, as O_DIRECT wants them
    bufs = [mmap.mmap(-1, need) for _ in range(READS_AHEAD + 1)]

    def read_into(k: int) -> int:
        """Window k into its buffer at offset pos % DIRECT_ALIGN: whole aligned blocks
        straight from the disk, or (no O_DIRECT here, or it refused this read) the window's
        own bytes through the page cache. The bytes of the window that arrived (-1: none)."""
        nonlocal direct
        pos, n = jobs[k][0], jobs[k][1]
        buf = memoryview(bufs[k % len(bufs)])
        skip = pos % DIRECT_ALIGN
        if direct >= 0:
            end = -(-(pos + n) // DIRECT_ALIGN) * DIRECT_ALIGN
            try:
                return min(n, os.preadv(direct, [buf[:end - pos + skip]], pos - skip) - skip)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return -1       # read again, and what fails recorded, by ev.read
                # a file system that takes O_DIRECT at open but not these reads: the page
                # cache from here on
                os.close(direct)
                direct = -1
        try:
            return os.preadv(fd, [buf[skip:skip + n]], pos)
        except OSError:
            return -1

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="index-reader") as reader:
            queued = [reader.submit(read_into, k) for k in range(min(READS_AHEAD, len(jobs)))]
            for k, (pos, n, lo, own_end) in enumerate(jobs):
                got = queued.pop(0).result()
                # the buffer of the window before is free (the caller is done with its view):
                # queue the read READS_AHEAD windows on, so the disk never waits for the numpy
                if k + READS_AHEAD < len(jobs):
                    queued.append(reader.submit(read_into, k + READS_AHEAD))
                skip = pos % DIRECT_ALIGN
                view = memoryview(bufs[k % len(bufs)])[skip:skip + n]
                if got != n:
                    view[:] = ev_read(pos, n)
                try:
                    yield pos, np.frombuffer(view, dtype=np.uint8), lo, own_end
                finally:
                    view = None
    finally:
        if direct >= 0:
            os.close(direct)


# O_DIRECT reads start, end and land on this grid (the logical block size of 4Kn disks, and a
# multiple of 512e ones')
DIRECT_ALIGN = 4096


def _open_direct(ev) -> int:
    """A second read-only descriptor of the evidence file, opened O_DIRECT (-1: none here).
    The pass reads each byte once and nothing reads them from the page cache after it (the
    index holds what the commands need), so copying 8 GiB through the page cache only costs:
    with it the pass's buffered 32 MiB reads ran 1.2x `cat` on this VM's disk and the kernel's
    copies took a second of CPU per 4 GiB from the numpy work; O_DIRECT reads of the same
    windows ran at 0.8-1.0x `cat` for a tenth of the CPU (bench/io.py). Only for the same file
    as ev's descriptor (device and inode compared: the path may have been replaced since);
    SRSALVAGE_NO_DIRECT=1 turns it off."""
    if os.environ.get("SRSALVAGE_NO_DIRECT", "") not in ("", "0") or \
            not hasattr(os, "O_DIRECT"):
        return -1
    try:
        fd = os.open(ev.path, os.O_RDONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
    except (OSError, AttributeError, TypeError):
        return -1           # tmpfs before Linux 6.6, some FUSE and network file systems
    mine, other = os.fstat(fd), os.fstat(ev._fd)
    if (mine.st_dev, mine.st_ino) != (other.st_dev, other.st_ino):
        os.close(fd)
        return -1
    return fd


def _read_ahead(read: Callable[[int, int], bytes], jobs: list[tuple[int, int, int, int]],
                stop: threading.Event | None) -> Iterator[tuple[int, np.ndarray, int, int]]:
    """pass_windows over `read` (ev.read): window k+1 read by a helper thread while the caller
    works on window k (two windows in memory). On the way out (the end, an error, SIGTERM
    raised while waiting) `stop` is set -- a read hanging in the helper gives up at the
    evidence's cancel point, which includes it (EvidenceIndex.build) -- and the helper is
    waited for."""
    from concurrent.futures import ThreadPoolExecutor
    reader = ThreadPoolExecutor(1, thread_name_prefix="index-reader")
    nxt: Future | None = reader.submit(read, jobs[0][0], jobs[0][1])
    try:
        for k, (pos, n, lo, own_end) in enumerate(jobs):
            data = nxt.result()
            nxt = reader.submit(read, jobs[k + 1][0], jobs[k + 1][1]) \
                if k + 1 < len(jobs) else None
            yield pos, np.frombuffer(data, dtype=np.uint8), lo, own_end
            data = None
    finally:
        if nxt is not None:
            nxt.cancel()
            if stop is not None:
                stop.set()
        reader.shutdown(wait=True)


ZERO_BLOCK = 64 << 10


def _subtract(ranges: list[tuple[int, int]], known: list[tuple[int, int]]
              ) -> list[tuple[int, int]]:
    """The parts of `ranges` outside every range of `known` (both sorted [start, end))."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        for ka, kb in known:
            if kb <= a or ka >= b:
                continue
            if ka > a:
                out.append((a, ka))
            a = max(a, kb)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def nonzero_runs(view: np.ndarray, length: int, block: int = ZERO_BLOCK,
                 words: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[(a, b)]: the runs of view[:length] made of `block`-sized blocks holding a nonzero byte
    (zero blocks are left out; the last block may be short). Numpy, no loop per block.
    `words`: the first 8 bytes of each sector of `view` (sectors.first_words): a block where
    one of them is nonzero is not looked at further (data: every block), only the others are
    read whole (`max` over uint64 words, twice as fast as `any`)."""
    length = min(length, len(view))
    whole = length - length % block
    n_whole = whole // block
    flags = np.zeros(-(-length // block), bool)
    if n_whole:
        blocks = view[:whole].view(np.uint64).reshape(n_whole, block // 8)
        per = block // SECTOR
        if words is not None and block % SECTOR == 0 and len(words) >= n_whole * per:
            flags[:n_whole] = words[: n_whole * per].reshape(n_whole, per).any(axis=1)
            look = np.flatnonzero(~flags[:n_whole])
            if len(look):
                flags[look] = blocks[look].max(axis=1) != 0
        else:
            flags[:n_whole] = blocks.max(axis=1) != 0
    if whole < length:
        flags[-1] = bool(view[whole:length].any())
    edges = np.flatnonzero(np.diff(flags.view(np.int8), prepend=0, append=0)) * block
    return [(a, min(b, length)) for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist())]
