"""What every guest file system reader shares: the landmark record, the bounded reader over the
virtual disk, per-sector allocation states and the checksum primitives.

A reader only sees the virtual disk through `read(offset, n) -> bytes | None` (None: some byte
of the range is not placed yet).  Everything it learns is memoised on the object: a new
candidate map means a new `GuestFs` (open_guest is cheap).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import crc32c as _crc32c
import numpy as np
from construct import ConstructError

SECTOR = 512
ReadFn = Callable[[int, int], "bytes | None"]

# what a parser may raise on bytes it was not built for; caught at the public boundary
PARSE_ERRORS = (IndexError, ValueError, KeyError, OverflowError, ConstructError,
                struct.error)

# sector states returned by GuestFs.allocation_state
FREE = 0
ALLOCATED = 1
UNKNOWN = -1
# and by GuestFs.content_state
NO_CONTENT = 0          # the file system implies nothing was written here
CONTENT = 1             # it says the guest wrote something here (data, in-use metadata)


@dataclass(frozen=True)
class Landmark:
    """A self-identifying structure the file system says lies at virtual `offset`.

    `check(data)` is True when `data` (the bytes found at `offset`, at least `size` of them) IS
    that structure of this very file system: the right magic, the right position (group number,
    record number, VCN) and a checksum or cross-reference that only this file system's copy can
    satisfy.  `what` names the structure ("ext4-backup-superblock", "ntfs-mft-record", ...).
    """

    offset: int
    size: int
    what: str
    check: Callable[[bytes], bool]


class BudgetExceeded(Exception):
    """The reader spent its byte budget: the caller stops and keeps what it has."""


class Reader:
    """`read` of the virtual disk with the file system's offset and a byte budget.

    The budget bounds what one GuestFs may read in total for one purpose (the parse, the walk
    for reached structures), whatever the image says: garbage cannot make it read the disk.
    """

    def __init__(self, read: ReadFn, disk_size: int, base: int = 0) -> None:
        self._read = read
        self.disk_size = disk_size
        self.base = base
        self.spent = 0

    def read(self, offset: int, length: int, budget: int | None = None) -> bytes | None:
        """`length` bytes at file-system offset `offset`; None when unknown, short, out of the
        disk or over the budget."""
        start = self.base + offset
        if offset < 0 or length < 0 or start + length > self.disk_size:
            return None
        if budget is not None and self.spent + length > budget:
            raise BudgetExceeded
        self.spent += length
        data = self._read(start, length)
        if data is None or len(data) < length:
            return None
        return bytes(data[:length])


def crc32c_raw(seed: int, data: bytes) -> int:
    """The kernel's `crc32c(seed, data)`: no pre/post inversion (ext4_chksum, jbd2_chksum).

    The crc32c package computes the standard CRC-32C (init ~0, final ~); continuing from a
    value v it starts the register at ~v, so the raw register update from `seed` is
    ~crc32c(data, ~seed)."""
    return _crc32c.crc32c(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC16 = _crc16_table()


def crc16(seed: int, data: bytes) -> int:
    """Linux lib/crc16.c crc16(): polynomial 0x8005 reflected, no inversion (ext4 gdt_csum)."""
    crc = seed & 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ b) & 0xFF]
    return crc


def bits_le(data: bytes, nbits: int) -> np.ndarray:
    """The first `nbits` bits of a little-endian bitmap (bit 0 of byte 0 first), as bool."""
    arr = np.frombuffer(data, dtype=np.uint8)
    return np.unpackbits(arr, bitorder="little")[:nbits].astype(bool)


def states_from_intervals(first_sector: int, end_sector: int, fs_offset: int,
                          starts: np.ndarray, ends: np.ndarray, outside: int) -> np.ndarray:
    """Per-sector CONTENT where a sector overlaps one of the sorted, disjoint byte intervals
    [starts[i], ends[i]) (file-system offsets), else `outside`."""
    n = end_sector - first_sector
    lo = first_sector * SECTOR - fs_offset
    out = np.full(n, outside, dtype=np.int8)
    i0 = int(np.searchsorted(ends, lo, side="right"))
    i1 = int(np.searchsorted(starts, lo + n * SECTOR, side="left"))
    if i1 > i0:
        a = np.clip((starts[i0:i1] - lo) // SECTOR, 0, n)
        b = np.clip(-(-(ends[i0:i1] - lo) // SECTOR), 0, n)
        edges = np.zeros(n + 1, dtype=np.int32)
        np.add.at(edges, a, 1)
        np.add.at(edges, b, -1)
        out[np.cumsum(edges[:n]) > 0] = CONTENT
    return out


def merge_intervals(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint (starts, ends) covering the union of [a, b) pairs."""
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    arr = np.array(sorted(p for p in pairs if p[1] > p[0]), dtype=np.int64).reshape(-1, 2)
    if arr.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ends = np.maximum.accumulate(arr[:, 1])
    new = np.ones(len(arr), dtype=bool)
    new[1:] = arr[1:, 0] > ends[:-1]
    group = np.cumsum(new) - 1
    starts = arr[new, 0]
    out_ends = np.zeros(starts.size, dtype=np.int64)
    np.maximum.at(out_ends, group, ends)
    return starts, out_ends


def sector_span(start: int, length: int) -> tuple[int, int]:
    """First and end (exclusive) 512-byte sector index touching [start, start+length)."""
    return start // SECTOR, -(-(start + max(0, length)) // SECTOR)


def states_from_units(first_sector: int, end_sector: int, fs_offset: int, unit: int,
                      unit0: int, unit_states: np.ndarray) -> np.ndarray:
    """Per-sector states for sectors [first_sector, end_sector) from the states of file-system
    units (blocks, clusters) unit0, unit0+1, ...: a sector takes its unit's state.  Units are
    whole sectors and the file system starts on a sector."""
    per = unit // SECTOR
    skip = (first_sector * SECTOR - fs_offset) // SECTOR - unit0 * per
    n = end_sector - first_sector
    return np.repeat(unit_states, per)[skip:skip + n]


class GuestFs:
    """A guest file system found on a virtual disk (see core.guestfs.open_guest)."""

    kind: str = ""
    offset: int = 0        # byte offset of the file system in the virtual disk
    size: int = 0          # bytes the file system spans
    disk_size: int = 0
    # the partition table's own landmarks (MBR, GPT headers), set by open_guest
    table_landmarks: tuple["Landmark", ...] = ()

    @property
    def identity(self) -> bytes | None:
        """What names this file system among others of its kind (ext4's s_uuid, NTFS's volume
        serial), as read; None where it has none."""
        return None

    # -- allocation ------------------------------------------------------------------------------
    def allocation_state(self, start: int, length: int) -> np.ndarray:
        """int8 per 512-byte virtual sector of [start, start+length): ALLOCATED (1), FREE (0) or
        UNKNOWN (-1: the file system's own bitmap for it could not be read or did not verify).

        Sectors outside the file system (partition table area, gaps, other partitions, the
        space past its end) are ALLOCATED: the file system cannot say they are free, and the
        partition table, a boot loader or another partition may hold them."""
        first, end = sector_span(start, length)
        out = np.ones(max(0, end - first), dtype=np.int8)
        lo = max(first, self.offset // SECTOR)
        hi = min(end, (self.offset + self.size) // SECTOR)
        if hi > lo:
            try:
                out[lo - first:hi - first] = self._fs_states(lo, hi)
            except PARSE_ERRORS:
                out[lo - first:hi - first] = UNKNOWN
        return out

    def allocation(self, start: int, length: int) -> np.ndarray | None:
        """bool per 512-byte virtual sector of [start, start+length): True where the file
        system holds something (in use in its bitmap, or its fixed metadata), False where it says
        free.  None when any part of the range is UNKNOWN (use allocation_state for the parts)."""
        st = self.allocation_state(start, length)
        if (st < 0).any():
            return None
        return st > 0

    def _fs_states(self, first_sector: int, end_sector: int) -> np.ndarray:
        raise NotImplementedError

    # -- content ---------------------------------------------------------------------------------
    def content_state(self, start: int, length: int) -> np.ndarray:
        """int8 per 512-byte virtual sector of [start, start+length): CONTENT (1) where the file
        system says the guest wrote something (files' and directories' data, in-use inodes or
        MFT records, superblock/descriptor copies, initialised bitmaps...), NO_CONTENT (0)
        where it implies nothing was written (free, or allocated but never filled: unused
        inode table, the journal, unwritten extents), UNKNOWN (-1) where it cannot say (outside
        the file system, or the walk of its inodes/records could not be completed).

        A VHD block whose sector bitmap says "never written" where this says CONTENT is
        evidence against the placement, in proportion: a file's all-zero pages may never have
        been written, and a differencing disk's parent holds what the child did not write."""
        first, end = sector_span(start, length)
        out = np.full(max(0, end - first), UNKNOWN, dtype=np.int8)
        lo = max(first, self.offset // SECTOR)
        hi = min(end, (self.offset + self.size) // SECTOR)
        if hi > lo:
            try:
                starts, ends, complete = self._content_intervals()
                out[lo - first:hi - first] = states_from_intervals(
                    lo, hi, self.offset, starts, ends, NO_CONTENT if complete else UNKNOWN)
            except PARSE_ERRORS:
                pass
        return out

    def _content_intervals(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Sorted disjoint file-system byte intervals holding content, and whether the walk
        that found them read everything it needed."""
        raise NotImplementedError

    def file_tails(self, start: int, length: int) -> list[Landmark]:
        """Weak marks at files' ends inside the range (see Ext4.file_tails); none by default."""
        return []

    # -- landmarks -------------------------------------------------------------------------------
    def landmarks(self, start: int, length: int) -> list[Landmark]:
        """Self-identifying structures the file system says lie wholly inside [start,
        start+length) of the virtual disk, in offset order.  Their checks never raise (bytes
        that make a check stumble are not that structure)."""
        try:
            found = self._landmarks(start, length)
        except PARSE_ERRORS:
            found = []
        found = [lm for lm in self.table_landmarks
                 if start <= lm.offset and lm.offset + lm.size <= start + length] + found
        return [Landmark(lm.offset, lm.size, lm.what, _never_raises(lm.check)) for lm in found]

    def _landmarks(self, start: int, length: int) -> list[Landmark]:
        raise NotImplementedError


class MultiFs(GuestFs):
    """Several file systems of one virtual disk (a Windows disk's "System Reserved" and C:, a
    Linux disk's /boot and /): each answers for its own partition."""

    kind = "multi"

    def __init__(self, parts: list[GuestFs], disk_size: int) -> None:
        self.parts = sorted(parts, key=lambda p: p.offset)
        self.offset = self.parts[0].offset
        self.size = max(p.offset + p.size for p in self.parts) - self.offset
        self.disk_size = disk_size

    def _merge(self, start: int, length: int, states) -> np.ndarray:
        first, end = sector_span(start, length)
        out = None
        for p in self.parts:
            st = states(p)
            if out is None:
                out = st
            lo = max(first, p.offset // SECTOR)
            hi = min(end, (p.offset + p.size) // SECTOR)
            if hi > lo:
                out[lo - first:hi - first] = st[lo - first:hi - first]
        return out

    def allocation_state(self, start: int, length: int) -> np.ndarray:
        return self._merge(start, length, lambda p: p.allocation_state(start, length))

    def content_state(self, start: int, length: int) -> np.ndarray:
        return self._merge(start, length, lambda p: p.content_state(start, length))

    def _landmarks(self, start: int, length: int) -> list[Landmark]:
        out: list[Landmark] = []
        for p in self.parts:
            out += p.landmarks(start, length)
        return sorted(out, key=lambda lm: lm.offset)


def _never_raises(check: Callable[[bytes], bool]) -> Callable[[bytes], bool]:
    def safe(data: bytes) -> bool:
        try:
            return bool(check(bytes(data)))
        except PARSE_ERRORS:
            return False
    return safe


@dataclass(frozen=True)
class WriteAgreement:
    """A VHD block's written sectors set against what the guest's file system says of them.

    written_free is evidence against the placement (the guest wrote where its file system
    keeps nothing).  content_unwritten (with a content state) is evidence against in
    proportion to content_written + content_unwritten: the file system says data lives there
    but the block never got it (a file's zero pages, or a differencing disk's parent, explain a
    few).  allocated_unwritten alone is weak (unused inode tables, journals, preallocation)."""

    written_free: int
    written_allocated: int
    allocated_unwritten: int
    unknown: int            # sectors the file system could not speak for (UNKNOWN)
    content_written: int = 0
    content_unwritten: int = 0


def write_agreement(written: np.ndarray, state: np.ndarray,
                    content: np.ndarray | None = None) -> WriteAgreement:
    """Compare `written` (bool per sector) with `state` (GuestFs.allocation_state of the same
    sectors) and optionally `content` (GuestFs.content_state of them)."""
    w = np.asarray(written, dtype=bool)
    s = np.asarray(state)
    if w.shape != s.shape or (content is not None and np.shape(content) != w.shape):
        raise ValueError(f"written has {w.shape} sectors, state {s.shape}")
    known = s != UNKNOWN
    alloc = s == ALLOCATED
    c = np.asarray(content) == CONTENT if content is not None else np.zeros(w.shape, bool)
    return WriteAgreement(int(np.count_nonzero(w & known & ~alloc)),
                          int(np.count_nonzero(w & alloc)),
                          int(np.count_nonzero(~w & alloc)),
                          int(np.count_nonzero(~known)),
                          int(np.count_nonzero(w & c)),
                          int(np.count_nonzero(~w & c)))


def written_not_allocated(written: np.ndarray, allocated: np.ndarray) -> int:
    """How many sectors the guest wrote (a VHD block's sector bitmap) that the guest's file
    system says are free: evidence against the placement that produced `allocated`.

    `written` and `allocated` are bool per sector of the same range.  A few such sectors occur
    on a right placement too (a file deleted after it was written); many do not."""
    w = np.asarray(written, dtype=bool)
    a = np.asarray(allocated, dtype=bool)
    if w.shape != a.shape:
        raise ValueError(f"written has {w.shape} sectors, allocated {a.shape}")
    return int(np.count_nonzero(w & ~a))
