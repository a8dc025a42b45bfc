"""The evidence index's reads: the pass's windows over the data ranges, and what a window holds.

`pass_windows` reads the evidence window by window (the next ones read by a helper thread while
the caller works on this one: `_read_ahead` for guarded and other evidence, READS_AHEAD + 1
buffers and os.preadv for a plain image file); `nonzero_runs` finds the blocks of a window
holding data; `_subtract` leaves out of the pass's unreadable ranges those said at open. Used by
`core.evidence_index.EvidenceIndex.build` (see the package docstring).
"""

from __future__ import annotations

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
    need = max(n for _, n, _, _ in jobs)
    bufs = [bytearray(need) for _ in range(READS_AHEAD + 1)]

    def read_into(k: int) -> int:
        pos, n = jobs[k][0], jobs[k][1]
        try:
            return os.preadv(fd, [memoryview(bufs[k % len(bufs)])[:n]], pos)
        except OSError:
            return -1

    with ThreadPoolExecutor(1, thread_name_prefix="index-reader") as reader:
        queued = [reader.submit(read_into, k) for k in range(min(READS_AHEAD, len(jobs)))]
        for k, (pos, n, lo, own_end) in enumerate(jobs):
            got = queued.pop(0).result()
            # the buffer of the window before is free (the caller is done with its view):
            # queue the read READS_AHEAD windows on, so the disk never waits for the numpy
            if k + READS_AHEAD < len(jobs):
                queued.append(reader.submit(read_into, k + READS_AHEAD))
            view = memoryview(bufs[k % len(bufs)])[:n]
            if got != n:
                view[:] = ev_read(pos, n)
            try:
                yield pos, np.frombuffer(view, dtype=np.uint8), lo, own_end
            finally:
                view = None


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
