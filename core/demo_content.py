"""The demo SR's virtual disk contents (split out of core/demo.py): every sector a text line
naming its VDI and sector (payloads placed on top), their digests, and writing an LV's bytes
through its extent map.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from core.structs.lvhd import LVHD_EXTENT_BYTES
from core.structs.vhd import SECTOR, VHD_BLOCK_BYTES


# -- virtual disk contents -----------------------------------------------------------------------
class _Content:
    """The virtual disk of one VDI, block by block (regenerated on demand: bounded memory)."""

    def __init__(self, key: str, label: str, vdi_uuid: str, virtual: int,
                 blocks: Iterable[int], partial: Mapping[int, np.ndarray] | None = None,
                 payloads: Sequence[tuple[int, bytes]] = ()) -> None:
        self.key, self.label, self.vdi_uuid, self.virtual = key, label, vdi_uuid, virtual
        self.spb = VHD_BLOCK_BYTES // SECTOR
        self.partial = dict(partial or {})
        self.payloads = [(int(o), bytes(b)) for o, b in payloads]
        for off, data in self.payloads:
            if off < 0 or off + len(data) > virtual:
                raise ValueError(f"payload at {off} ({len(data)} bytes) outside VDI {key}")
        touched = {b for off, data in self.payloads
                   for b in range(off // VHD_BLOCK_BYTES,
                                  (off + max(len(data), 1) - 1) // VHD_BLOCK_BYTES + 1)}
        self.pattern_blocks = set(blocks)
        self.blocks = sorted(self.pattern_blocks | touched)

    def _sector_lines(self, first_sector: int, count: int) -> bytes:
        """`count` sectors, each one text line: '<label> | VDI <uuid> | sector <n> |' + filler."""
        head = f"{self.label[:200]} | VDI {self.vdi_uuid} | sector ".encode()
        line = (head + b"0000000000 |" + b" srsalvage demo data" * 30)[:SECTOR - 1] + b"\n"
        rows = np.tile(np.frombuffer(line, dtype=np.uint8), (count, 1))
        numbers = np.arange(first_sector, first_sector + count, dtype=np.int64)
        for k in range(10):                       # the sector number, 10 digits, vectorised
            rows[:, len(head) + 9 - k] = 48 + (numbers // 10 ** k) % 10
        return rows.tobytes()

    def block(self, b: int) -> tuple[bytes, np.ndarray]:
        """(stored bytes, written mask): unwritten sectors hold stale bytes."""
        first = b * self.spb
        n = min(self.spb, max(0, self.virtual // SECTOR - first))
        written = np.zeros(self.spb, dtype=bool)
        if b in self.pattern_blocks:
            data = bytearray(self._sector_lines(first, n).ljust(VHD_BLOCK_BYTES, b"\0"))
            mask = self.partial.get(b)
            written[:n] = True if mask is None else mask[:n]
            if mask is not None:
                stale = (b"STALE bytes of a freed block, never part of this disk. " * 10)[:SECTOR]
                for s in np.flatnonzero(~written[:n]).tolist():
                    data[s * SECTOR:(s + 1) * SECTOR] = stale
        else:
            data = bytearray(VHD_BLOCK_BYTES)
        for off, payload in self.payloads:
            lo = max(off, b * VHD_BLOCK_BYTES)
            hi = min(off + len(payload), (b + 1) * VHD_BLOCK_BYTES)
            if lo >= hi:
                continue
            s0 = (lo - b * VHD_BLOCK_BYTES) // SECTOR
            s1 = (hi - b * VHD_BLOCK_BYTES - 1) // SECTOR + 1
            for s in range(s0, s1):       # a sector the payload touches is written whole
                if not written[s]:
                    data[s * SECTOR:(s + 1) * SECTOR] = bytes(SECTOR)
                written[s] = True
            data[lo - b * VHD_BLOCK_BYTES:hi - b * VHD_BLOCK_BYTES] = payload[lo - off:hi - off]
        return bytes(data), written

    def visible(self, b: int) -> tuple[bytes, np.ndarray]:
        """What a reader sees of block b in this VHD alone (unwritten sectors zero)."""
        data, written = self.block(b)
        arr = np.frombuffer(data, dtype=np.uint8).reshape(self.spb, SECTOR).copy()
        arr[~written] = 0
        return arr.tobytes(), written

    def stale_runs(self) -> list[list[int]]:
        runs: list[list[int]] = []
        for b in sorted(self.partial):
            if b not in self.pattern_blocks:
                continue
            _, written = self.block(b)
            n = min(self.spb, max(0, self.virtual // SECTOR - b * self.spb))
            for s in np.flatnonzero(~written[:n]).tolist():
                v = b * self.spb + s
                if runs and runs[-1][0] + runs[-1][1] == v:
                    runs[-1][1] += 1
                else:
                    runs.append([v, 1])
        return runs


def _virtual_sha256(content: _Content, parent: _Content | None = None) -> str:
    """sha256 of the virtual disk: blocks in order, unallocated/unwritten sectors zero or the
    parent's (a differencing disk)."""
    h = hashlib.sha256()
    nblocks = -(-content.virtual // VHD_BLOCK_BYTES)
    mine = set(content.blocks)
    theirs = set(parent.blocks) if parent is not None else set()
    zero = bytes(VHD_BLOCK_BYTES)
    for b in range(nblocks):
        size = min(VHD_BLOCK_BYTES, content.virtual - b * VHD_BLOCK_BYTES)
        if b in mine:
            data, written = content.visible(b)
            if parent is not None and not written.all():
                pdata = parent.visible(b)[0] if b in theirs else zero
                arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, SECTOR).copy()
                parr = np.frombuffer(pdata, dtype=np.uint8).reshape(-1, SECTOR)
                arr[~written] = parr[~written]
                data = arr.tobytes()
        elif parent is not None and b in theirs:
            data = parent.visible(b)[0]
        else:
            data = zero
        h.update(data[:size])
    return h.hexdigest()


def _raw_sha256(content: _Content, lv_bytes: int) -> str:
    h = hashlib.sha256()
    for b in range(lv_bytes // VHD_BLOCK_BYTES):
        h.update(content.block(b)[0] if b in set(content.blocks) else bytes(VHD_BLOCK_BYTES))
    return h.hexdigest()


# -- writing through an LV's extent map ----------------------------------------------------------
class ExtentFile:
    """File-like view of one LV inside the image file: seek/write in LV offsets go to the PEs."""

    def __init__(self, f, data_offset: int, pes: list[int]) -> None:
        self.f, self.data_offset, self.pes, self.pos = f, data_offset, pes, 0
        self.written = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            le, rest = divmod(self.pos, LVHD_EXTENT_BYTES)
            if le >= len(self.pes):
                raise ValueError(f"write past the end of the LV ({len(self.pes)} extents)")
            n = min(len(view) - done, LVHD_EXTENT_BYTES - rest)
            self.f.seek(self.data_offset + self.pes[le] * LVHD_EXTENT_BYTES + rest)
            self.f.write(view[done:done + n])
            self.pos += n
            done += n
        self.written += len(data)
        return len(data)


class _LazyBlocks(Mapping):
    """block index -> (bytes, written mask), produced when build_vhd asks (bounded memory)."""

    def __init__(self, content: _Content) -> None:
        self.content = content

    def __getitem__(self, b: int):
        if b not in self.content.blocks:
            raise KeyError(b)
        return self.content.block(b)

    def __iter__(self):
        return iter(self.content.blocks)

    def __len__(self) -> int:
        return len(self.content.blocks)


def _qemu_size(c: _Content) -> int:
    """Bytes of a qemu-layout VHD of this content: footer copy, header, BAT, packed blocks,
    footer (core.vhd.build 'qemu')."""
    nblocks = -(-c.virtual // VHD_BLOCK_BYTES)
    bat = -(-nblocks * 4 // SECTOR) * SECTOR
    return 1536 + bat + len(c.blocks) * (VHD_BLOCK_BYTES + SECTOR) + SECTOR
