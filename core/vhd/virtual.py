"""The virtual disk of a VHD as a ByteSpace (split out of core/vhd/reader.py): BAT, bitmaps
(or the batmap's "block full" bits), parent fall-through. `VhdImage.virtual_space(parent)`
makes one; the hex view, export, checks and carvers read it like any other space.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from core.spaces import ByteSpace
from core.structs import vhd as S


class VirtualDisk:
    """The virtual disk of a VHD as a ByteSpace: BAT + bitmaps (+ batmap), parent fall-through.

    A sector whose block is unallocated, or whose bitmap bit is clear, reads from `parent`
    (a differencing disk) or as zeros, whatever bytes the LV holds there.
    """

    def __init__(self, img: Any, parent: ByteSpace | None = None) -> None:
        # img: a usable core.vhd.reader.VhdImage (not imported: the reader imports this module)
        self.img = img
        self.parent = parent if img.disk_type == S.HD_TYPE_DIFF else None
        self.size = img.virtual_size
        self.name = f"{img.name}:virtual" if img.name else "virtual"
        self.fixed = img.disk_type == S.HD_TYPE_FIXED
        self.block_size = img.block_size if not self.fixed else 2 << 20
        self._bitmaps: OrderedDict[int, np.ndarray] = OrderedDict()

    # per-sector presence of one block (bool per sector), cached LRU
    def _sector_bits(self, block: int, bitmap_off: int) -> np.ndarray:
        bits = self._bitmaps.get(block)
        if bits is None:
            spb = self.block_size // 512
            raw = self.img.space.read(bitmap_off, -(-spb // 8))
            raw = raw.ljust(-(-spb // 8), b"\0")
            bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:spb].astype(bool)
            self._bitmaps[block] = bits
            if len(self._bitmaps) > 64:
                self._bitmaps.popitem(last=False)
        else:
            self._bitmaps.move_to_end(block)
        return bits

    def _below(self, offset: int, length: int) -> bytes | None:
        """What lies under this layer: the parent's bytes, or None for zeros."""
        if self.parent is None or offset >= self.parent.size:
            return None
        opt = getattr(self.parent, "read_opt", None)
        data = opt(offset, length) if opt is not None else self.parent.read(offset, length)
        if data is not None and len(data) < length:
            data = data + bytes(length - len(data))
        return data

    def read_opt(self, offset: int, length: int) -> bytes | None:
        """Like read(), but None when the whole range is absent down the chain (zeros)."""
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        if self.fixed:
            data = self.img.space.read(offset, end - offset)
            return data + bytes(end - offset - len(data))
        pieces: list[bytes | None] = []
        pos = offset
        bs = self.block_size
        while pos < end:
            b = pos // bs
            stop = min(end, (b + 1) * bs)
            pieces.append(self._read_in_block(b, pos - b * bs, stop - pos))
            pos = stop
        if all(p is None for p in pieces):
            return None
        return b"".join(p if p is not None else bytes(n) for p, n in
                        zip(pieces, self._piece_lengths(offset, end)))

    def _piece_lengths(self, offset: int, end: int):
        bs = self.block_size
        pos = offset
        while pos < end:
            stop = min(end, (pos // bs + 1) * bs)
            yield stop - pos
            pos = stop

    def read(self, offset: int, length: int) -> bytes:
        data = self.read_opt(offset, length)
        if data is None:
            return bytes(max(0, min(self.size, offset + length) - offset))
        return data

    def _read_in_block(self, block: int, start: int, length: int) -> bytes | None:
        """`length` bytes at `start` inside `block`; None = all below (parent or zeros)."""
        img = self.img
        voff = block * self.block_size + start
        bm_off = img.block_bitmap_offset(block)
        if bm_off is None:
            return self._below(voff, length)
        data_off = bm_off + img.bitmap_bytes + start
        if img.batmap_valid and block < len(img.batmap) and img.batmap[block]:
            data = img.space.read(data_off, length)
            return data + bytes(length - len(data))
        bits = self._sector_bits(block, bm_off)
        s0, s1 = start // 512, -(-(start + length) // 512)
        sel = bits[s0:s1]
        if sel.all():
            data = img.space.read(data_off, length)
            return data + bytes(length - len(data))
        if not sel.any():
            return self._below(voff, length)
        data = np.frombuffer(img.space.read(data_off, length).ljust(length, b"\0"), dtype=np.uint8)
        mask = np.repeat(sel, 512)[start - s0 * 512: start - s0 * 512 + length]
        below = self._below(voff, length)
        under = np.zeros(length, dtype=np.uint8) if below is None \
            else np.frombuffer(below, dtype=np.uint8)
        return np.where(mask, data, under).tobytes()
