"""Build VHD files the way their producers lay them out (for the demo SR and the tests).

Layouts (formats.md 4.4, 4.5):
* ``blktap``: what XenServer's sm/tapdisk writes into an LV: creator ``tap\\0`` 1.3, OS 0,
  metadata preallocated for 2 TiB (1,048,576 BAT entries at 1536), ``tdbatmap`` header right
  after the BAT (4,195,840), the batmap, the parent locators (children), the first block bitmap
  at sector 8455 and every block placed so its data starts on a 4 KiB boundary (stride 4104
  sectors) in *allocation* order; bitmap bits set only for written sectors; the primary footer
  in the last 512 bytes of the LV when ``lv_size`` is given (an inflated LV), else right after
  the last block.
* ``qemu``: what ``qemu-img convert -O vpc`` writes: BAT sized to the disk, blocks packed right
  after it (stride 4097 sectors), footer right after the last block.
* ``fixed``: the raw disk followed by one footer.

Blocks are given as a mapping ``block index -> value`` where value is ``bytes`` (the block's
data, zero padded; every sector written) or ``(bytes, written)`` with ``written`` a per-sector
bool array: sectors whose bit is clear are still stored in the file (stale bytes) but the
bitmap says they are not there. The mapping may be lazy (any Mapping): blocks are produced and
written one at a time, so memory stays bounded by one block plus the BAT.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import BinaryIO, Mapping, Sequence

import numpy as np

from core.structs import vhd as S
from core.structs.lvhd import LVHD_MAX_VIRTUAL_BYTES

DEFAULT_TIMESTAMP = 0x2F000000  # a fixed time (2025) so builds are reproducible


@dataclass
class ParentRef:
    """What a differencing child records about its parent."""

    unique_id: bytes
    name: str = ""
    locators: list[tuple[int, bytes]] = field(default_factory=list)  # (platform code, data)
    timestamp: int = 0


def dm_name(vg_name: str, lv_name: str) -> str:
    """The device-mapper name of an LV: dashes doubled in both names, joined by one dash."""
    return vg_name.replace("-", "--") + "-" + lv_name.replace("-", "--")


def blktap_parent(sr_uuid: str, parent_lv: str, parent_unique_id: bytes,
                  timestamp: int = 0) -> ParentRef:
    """Parent reference as blktap writes it into an LVHD child: name = the parent's dm name,
    MacX / W2ku / W2ru locators with the path relative to /dev/mapper (formats.md 4.5)."""
    name = dm_name(f"VG_XenStorage-{sr_uuid}", parent_lv)
    rel = "./" + name
    locators = [
        (S.PLAT_CODE_MACX, ("file://" + rel).encode("utf-8")),
        (S.PLAT_CODE_W2KU, rel.replace("/", "\\").encode("utf-16-le")),
        (S.PLAT_CODE_W2RU, rel.replace("/", "\\").encode("utf-16-le")),
    ]
    return ParentRef(parent_unique_id, name, locators, timestamp)


@dataclass
class BuiltVhd:
    """Where things went in a built VHD (offsets relative to the VHD start)."""

    layout: str
    current_size: int
    unique_id: bytes
    block_size: int
    table_offset: int
    max_entries: int
    block_offsets: dict[int, int]   # block index -> byte offset of its bitmap
    data_end: int                   # end of the last block (or of the metadata)
    footer_offset: int
    size: int                       # footer_offset + 512
    footer: bytes
    data: bytes | None = None       # the whole VHD when built in memory


def make_unique_id(rng: random.Random) -> bytes:
    raw = bytearray(rng.getrandbits(8) for _ in range(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # RFC 4122 version 4 (blktap uses uuid_generate)
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def _block_value(value, block_size: int) -> tuple[bytes, np.ndarray]:
    spb = block_size // S.SECTOR
    if isinstance(value, tuple):
        data, written = value
        written = np.asarray(written, dtype=bool)
        if written.shape != (spb,):
            raise ValueError(f"written mask must have {spb} entries")
    else:
        data, written = value, np.ones(spb, dtype=bool)
    data = bytes(data)
    if len(data) > block_size:
        raise ValueError("block data longer than the block size")
    return data + bytes(block_size - len(data)), written


def build_vhd(virtual_size: int, blocks: Mapping[int, object] | None = None, *,
              layout: str = "blktap", out: BinaryIO | None = None, offset: int = 0,
              order: Sequence[int] | None = None, lv_size: int | None = None,
              block_size: int = S.VHD_BLOCK_BYTES, parent: ParentRef | None = None,
              unique_id: bytes | None = None, seed: int = 0, hidden: bool = False,
              timestamp: int = DEFAULT_TIMESTAMP, max_entries: int | None = None,
              creator: bytes | None = None) -> BuiltVhd:
    """Write a VHD into `out` at `offset` (or into memory: the result's `.data`)."""
    if layout not in ("blktap", "qemu", "fixed"):
        raise ValueError(f"unknown layout {layout!r}")
    if block_size <= 0 or block_size % S.SECTOR or block_size & (block_size - 1):
        raise ValueError("block size must be a power of two multiple of 512")
    if virtual_size <= 0 or virtual_size % S.SECTOR:
        raise ValueError("virtual size must be a positive multiple of 512")
    blocks = blocks or {}
    rng = random.Random(seed)
    uid = unique_id if unique_id is not None else make_unique_id(rng)
    nblocks = -(-virtual_size // block_size)
    for b in blocks:
        if not 0 <= b < nblocks:
            raise ValueError(f"block {b} outside a {virtual_size}-byte disk")
    memory = out is None
    if memory:
        out = io.BytesIO()
        offset = 0

    def put(pos: int, data: bytes) -> None:
        out.seek(offset + pos)
        out.write(data)

    c, h, s = S.chs_for_size(virtual_size)
    disk_type = S.HD_TYPE_DIFF if parent is not None else S.HD_TYPE_DYNAMIC
    if layout == "blktap":
        crtr_app, crtr_ver, crtr_os = S.CREATOR_TAP, S.TAP_VERSION_1_3, 0
    else:
        chs_exact = c * h * s * S.SECTOR == virtual_size
        crtr_app = S.CREATOR_QEMU if chs_exact else S.CREATOR_QEM2
        crtr_ver, crtr_os = S.QEMU_VERSION_5_3, 0x5769326B  # "Wi2k" as qemu writes
    if creator is not None:
        crtr_app = creator

    def footer(dtype: int, data_offset: int) -> bytes:
        return S.build_footer(
            cookie=S.HD_COOKIE, features=S.HD_RESERVED, ff_version=S.HD_FF_VERSION,
            data_offset=data_offset, timestamp=timestamp, crtr_app=crtr_app, crtr_ver=crtr_ver,
            crtr_os=crtr_os, orig_size=virtual_size, curr_size=virtual_size,
            geometry=S.geometry_word(c, h, s), type=dtype, uuid=uid, saved=0,
            hidden=1 if hidden else 0)

    if layout == "fixed":
        if parent is not None:
            raise ValueError("a fixed disk has no parent")
        for b in sorted(blocks):
            data, written = _block_value(blocks[b], block_size)
            start = b * block_size
            chunk = data[: max(0, min(block_size, virtual_size - start))]
            put(start, chunk)
        ftr = footer(S.HD_TYPE_FIXED, S.FIXED_DATA_OFFSET)
        put(virtual_size, ftr)
        return _finish(out, memory, BuiltVhd(layout, virtual_size, uid, block_size, 0, 0, {},
                                             virtual_size, virtual_size, virtual_size + 512, ftr))

    bm_bytes = S.bitmap_bytes(block_size)
    table_offset = 1536
    if max_entries is None:
        max_entries = LVHD_MAX_VIRTUAL_BYTES // block_size if layout == "blktap" else nblocks
    if max_entries < nblocks:
        raise ValueError("max_entries smaller than the disk needs")
    bat_bytes = S.roundup(max_entries * 4, S.SECTOR)
    meta_end = table_offset + bat_bytes
    batmap_hdr_off = batmap_off = batmap_len = 0
    if layout == "blktap":
        batmap_hdr_off = meta_end
        batmap_off = batmap_hdr_off + S.BATMAP_HEADER_SIZE
        batmap_len = S.roundup(-(-max_entries // 8), S.SECTOR)
        meta_end = batmap_off + batmap_len
    locs = []
    if parent is not None:
        for code, payload in parent.locators:
            space = S.roundup(max(len(payload), 1), S.SECTOR)
            locs.append(dict(code=code, data_space=space, data_len=len(payload), res=0,
                             data_offset=meta_end))
            put(meta_end, payload + bytes(space - len(payload)))
            meta_end += space

    # place blocks in allocation order
    alloc_order = list(order) if order is not None else sorted(blocks)
    if sorted(alloc_order) != sorted(blocks):
        raise ValueError("order must list exactly the allocated blocks")
    bat = np.full(max_entries, S.DD_BLK_UNUSED, dtype=np.uint32)
    batmap = np.zeros(batmap_len * 8, dtype=bool) if layout == "blktap" else None
    next_sector = meta_end // S.SECTOR
    bm_sectors = bm_bytes // S.SECTOR
    block_offsets: dict[int, int] = {}
    for b in alloc_order:
        if layout == "blktap":
            # data on a 4 KiB boundary: (bitmap sector + bitmap sectors) % 8 == 0
            next_sector += (-(next_sector + bm_sectors)) % 8
        bat[b] = next_sector
        pos = next_sector * S.SECTOR
        block_offsets[b] = pos
        data, written = _block_value(blocks[b], block_size)
        if layout == "qemu" and not isinstance(blocks[b], tuple):
            written = np.ones(block_size // S.SECTOR, dtype=bool)
        bitmap = np.packbits(written).tobytes()  # MSB first (spec)
        put(pos, bitmap + bytes(bm_bytes - len(bitmap)) + data)
        if batmap is not None and written.all():
            batmap[b] = True
        next_sector += bm_sectors + block_size // S.SECTOR
    data_end = next_sector * S.SECTOR

    ts = parent.timestamp if parent is not None else 0
    hdr = S.build_header(
        cookie=S.DD_COOKIE, data_offset=S.DD_NEXT_OFFSET, table_offset=table_offset,
        hdr_ver=S.DD_VERSION, max_bat_size=max_entries, block_size=block_size,
        prt_uuid=parent.unique_id if parent is not None else bytes(16), prt_ts=ts,
        prt_name=S.encode_utf16be_name(parent.name if parent is not None else ""), loc=locs)
    ftr = footer(disk_type, 512)
    put(0, ftr)
    put(512, hdr)
    put(table_offset, S.build_bat(bat))
    if layout == "blktap":
        map_bytes = np.packbits(batmap).tobytes()
        csum = S.batmap_checksum(map_bytes[: S.batmap_checksum_length(virtual_size, block_size)])
        put(batmap_hdr_off, S.build_batmap_header(batmap_off, batmap_len // S.SECTOR, csum))
        put(batmap_off, map_bytes)
    if lv_size is not None:
        if lv_size - 512 < data_end:
            raise ValueError(f"LV of {lv_size} bytes too small for {data_end} bytes of VHD")
        footer_offset = lv_size - 512
    else:
        footer_offset = data_end
    put(footer_offset, ftr)
    return _finish(out, memory, BuiltVhd(layout, virtual_size, uid, block_size, table_offset,
                                         max_entries, block_offsets, data_end, footer_offset,
                                         footer_offset + 512, ftr))


def _finish(out, memory: bool, built: BuiltVhd) -> BuiltVhd:
    if memory:
        data = out.getvalue()
        if len(data) < built.size:
            data += bytes(built.size - len(data))
        built.data = data
    return built
