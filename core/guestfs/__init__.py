"""The guest's own file system inside a virtual disk, read through a candidate map.

`open_guest(read, size)` finds the file system (a partition of an MBR/GPT table, or a file
system on the whole disk) and returns a `GuestFs` that answers two questions about any range of
the virtual disk:

* `allocation(start, length)`: per 512-byte sector, does the file system hold something there
  (its bitmap, its fixed metadata)?  A VHD block's sector bitmap says which sectors the guest
  wrote: written sectors the guest's file system calls free (`written_not_allocated`) are
  evidence against the placement that produced them.
* `landmarks(start, length)`: the self-identifying structures the file system says lie there
  (superblock copies, checksummed bitmaps and inodes, MFT records numbered for their place...),
  each with a `check(bytes)` that only this file system's own copy passes.

* `content_state(start, length)`: per sector, does the file system say the guest wrote
  something there (file and directory data, in-use inodes/records)?  Content where a VHD block
  says "never written" is evidence against, in proportion (`write_agreement`).

How a solver uses it: open the guest through the placements it trusts (the extents holding the
partition table, superblock/GDT or boot sector/MFT), then for a candidate PE of logical extent
LE read the candidate's virtual bytes and ask, for the extent's virtual range: do the landmarks
there pass on the candidate's bytes (`lm.check(data[lm.offset - start:][:lm.size])`), and does
`write_agreement(candidate's written sectors, fs.allocation_state(...), fs.content_state(...))`
show written-but-free or content-never-written sectors?  One GuestFs serves every candidate of
every extent whose metadata it did not read from that extent itself.

Nothing here trusts the bytes: every reader is bounded (a few MiB per GuestFs), and garbage
gives None or fewer landmarks, never an exception.  A new candidate map needs a new GuestFs
(each memoises what it read).
"""

from __future__ import annotations

from construct import ConstructError

from core.partitions import PartitionTable, read_partition_table
from core.structs import gpt as G

from .base import (ALLOCATED, CONTENT, FREE, NO_CONTENT, PARSE_ERRORS, UNKNOWN, GuestFs,
                   Landmark, MultiFs, ReadFn, Reader, WriteAgreement, write_agreement,
                   written_not_allocated)
from .ext4 import Ext4
from .ntfs import Ntfs

__all__ = ["open_guest", "GuestFs", "Landmark", "written_not_allocated", "write_agreement",
           "WriteAgreement", "MultiFs", "ALLOCATED", "FREE", "UNKNOWN", "CONTENT", "NO_CONTENT", "Ext4",
           "Ntfs"]

PROBE_BUDGET = 4 << 20
MAX_PARTITIONS = 16        # partitions probed (a GPT may list 128; real disks use a few)


class _Space:
    """The virtual disk as the ByteSpace core.partitions reads (unknown bytes read short)."""

    def __init__(self, reader: Reader, size: int) -> None:
        self.reader = reader
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        data = self.reader.read(offset, length, PROBE_BUDGET)
        return data if data is not None else b""


def _probe(read: ReadFn, size: int, offset: int, limit: int) -> GuestFs | None:
    for kind in _KINDS:
        try:
            fs = kind.probe(Reader(read, size, offset), size, limit)
        except PARSE_ERRORS:        # bytes its parser was not built for: not this kind
            fs = None
        if fs is not None:
            return fs
    return None


def open_guest(read: ReadFn, size: int) -> GuestFs | None:
    """The file system of the virtual disk `read` reads (`size` bytes), or None when nothing
    is recognised or the structures it needs cannot be read.

    Every partition of an MBR or GPT table is tried; with several file systems the result is a
    MultiFs (kind "multi", `.parts` the file systems) answering for each one's partition;
    with no table, the whole disk.
    """
    if size < 4096:
        return None
    reader = Reader(read, size)
    if reader.read(0, 512) is None:
        return None
    try:
        table = read_partition_table(_Space(reader, size))
    except Exception:      # the table parser promises not to raise; a reader error is no table
        return None
    found = []
    for p in table.partitions[:MAX_PARTITIONS]:
        if p.offset < size and p.bytes > 0:
            fs = _probe(read, size, p.offset, min(p.bytes, size - p.offset))
            if fs is not None:
                found.append(fs)
    if not table.partitions:
        return _probe(read, size, 0, size)
    if not found:
        return None
    guest = found[0] if len(found) == 1 else MultiFs(found, size)
    guest.table_landmarks = tuple(_table_landmarks(reader, size, table))
    return guest


_KINDS: tuple = (Ext4, Ntfs)


def _table_landmarks(reader: Reader, size: int, table: PartitionTable) -> list[Landmark]:
    """The partition table as landmarks: the MBR (its disk signature and entries, which sfdisk
    and Windows make unique per disk) or the GPT headers (disk GUID, own LBA, header CRC)."""
    out: list[Landmark] = []
    sector0 = reader.read(0, 512)
    if sector0 is None:
        return out
    if table.scheme == "mbr":
        ident = sector0[440:512]          # disk signature, the four entries, 55AA

        def mbr_check(data: bytes) -> bool:
            return len(data) >= 512 and data[440:512] == ident
        out.append(Landmark(0, 512, "mbr", mbr_check))
    elif table.scheme == "gpt":
        ss = table.sector_size
        primary = reader.read(ss, ss)
        if primary is None or primary[:8] != G.GPT_HEADER_SIGNATURE:
            return out
        try:
            hdr = G.gpt_header.parse(primary)
        except ConstructError:
            return out
        guid = hdr.disk_guid
        for lba, what in ((1, "gpt-header"), (hdr.alternative_lba, "gpt-backup-header")):
            if 0 < lba and (lba + 1) * ss <= size:
                out.append(Landmark(lba * ss, ss, what, _gpt_check(lba, guid, ss)))
    return out


def _gpt_check(lba: int, guid: bytes, ss: int):
    """A GPT header of this disk (its GUID) that says it sits at `lba`, its CRC intact."""
    def check(data: bytes) -> bool:
        if len(data) < G.GPT_HEADER_MINSIZE or data[:8] != G.GPT_HEADER_SIGNATURE:
            return False
        hdr = G.gpt_header.parse(data)
        if hdr.disk_guid != guid or hdr.my_lba != lba or \
                not G.GPT_HEADER_MINSIZE <= hdr.size <= min(ss, len(data)):
            return False
        raw = bytearray(data[:hdr.size])
        raw[16:20] = bytes(4)
        return G.gpt_crc32(bytes(raw)) == hdr.crc32
    return check
