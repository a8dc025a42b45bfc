"""Synthetic VHD LVs for tests and the benchmark: content laid out as XenServer leaves it.

`written_pattern` gives a block the sector bitmap a guest's writes leave (a few runs of written
sectors), `lvhd_vdi` builds an LVHD VHD (core.vhd.build, blktap layout, footer at the LV end)
in memory, and `place_extents` copies an LV's bytes extent by extent to the PEs a map gives,
which is how the bytes of an LV lie on the PV. Nothing here reads or writes evidence; the
writers take a file opened by the caller.
"""

from __future__ import annotations

import os
import random
from typing import BinaryIO, Sequence

import numpy as np

from core.vhd.build import build_vhd
from core.structs.lvhd import (LVHD_BAT_ENTRIES, LVHD_BATMAP_HEADER_OFFSET_BYTES,
                               LVHD_BLOCK_STRIDE_BYTES, LVHD_FIRST_BITMAP_BYTES, lvhd_lv_size)
from core.structs.vhd import VHD_BLOCK_BYTES

SECTORS = VHD_BLOCK_BYTES // 512


def written_pattern(rng: random.Random, full: bool = False) -> np.ndarray:
    """Per-sector written mask of one block: all, or 4-16 runs of written sectors (a guest's
    file system writes scattered pieces of a 2 MiB block)."""
    mask = np.zeros(SECTORS, dtype=bool)
    if full:
        mask[:] = True
        return mask
    for _ in range(rng.randint(4, 16)):
        a = rng.randrange(SECTORS)
        mask[a: a + rng.randint(8, 256)] = True
    return mask


def random_block(rng: random.Random, full: bool = False) -> tuple[bytes, np.ndarray]:
    """(data, written): random bytes where written, zeros elsewhere (a fresh LV reads zeros)."""
    mask = written_pattern(rng, full)
    data = np.frombuffer(rng.randbytes(VHD_BLOCK_BYTES), dtype=np.uint8)
    data = data.reshape(SECTORS, 512).copy()
    data[~mask] = 0
    return data.tobytes(), mask


def lvhd_vdi(virtual_size: int, block_ids: Sequence[int], seed: int, lv_size: int | None = None,
             full_every: int = 3, **kw):
    """An LVHD VHD (blktap layout) with the given blocks written, built in memory."""
    rng = random.Random(seed)
    blocks = {b: random_block(rng, full=(i % full_every == 0)) for i, b in enumerate(block_ids)}
    if lv_size is None:
        lv_size = lvhd_lv_size(virtual_size, len(blocks))
    order = list(block_ids)
    rng.shuffle(order)       # blktap allocates blocks in write order, not index order
    return build_vhd(virtual_size, blocks, layout="blktap", lv_size=lv_size, order=order,
                     seed=seed, **kw)


def place_extents(f: BinaryIO, data: bytes, pes: Sequence[int], data_offset: int,
                  extent_bytes: int = 4 << 20) -> None:
    """Write LV bytes `data` so that LE i lies at PE pes[i]."""
    for le, pe in enumerate(pes):
        chunk = data[le * extent_bytes:(le + 1) * extent_bytes]
        if len(chunk) == 0:
            break
        f.seek(data_offset + pe * extent_bytes)
        f.write(chunk)


# -- a large sparse SR for the benchmark ---------------------------------------------------------


def _lvhd_structures(virtual: int, lv_bytes: int, nblocks: int, rng: random.Random,
                     stale: bool = False):
    """Head (footer copy, header, BAT), batmap, footer, bitmap sectors and the written data of
    an LVHD VHD whose first `nblocks` blocks (in a shuffled virtual order) are allocated, as
    {LV offset: bytes}; each block holds one or two written 4 KiB pieces, the rest of it is
    never written (holes). With `stale`, each block also holds 4 KiB of an older life's
    bytes where its bitmap says unwritten (tapdisk on LVM does not zero-fill a block it
    allocates: blktap drivers/block-vhd.c `_vhd_open`, no VHD_FLAG_OPEN_PREALLOCATE)."""
    from core.structs import vhd as S

    uid = bytes(rng.getrandbits(8) for _ in range(16))
    c, h, s = S.chs_for_size(virtual)
    footer = S.build_footer(cookie=S.HD_COOKIE, features=S.HD_RESERVED,
                            ff_version=S.HD_FF_VERSION, data_offset=512, timestamp=0,
                            crtr_app=S.CREATOR_TAP, crtr_ver=S.TAP_VERSION_1_3, crtr_os=0,
                            orig_size=virtual, curr_size=virtual,
                            geometry=S.geometry_word(c, h, s), type=S.HD_TYPE_DYNAMIC, uuid=uid,
                            saved=0, hidden=0)
    header = S.build_header(cookie=S.DD_COOKIE, data_offset=S.DD_NEXT_OFFSET, table_offset=1536,
                            hdr_ver=S.DD_VERSION, max_bat_size=LVHD_BAT_ENTRIES,
                            block_size=2 << 20, prt_uuid=bytes(16), prt_ts=0,
                            prt_name=bytes(512), loc=[])
    vblocks = virtual // (2 << 20)
    which = rng.sample(range(vblocks), nblocks)
    bat = np.full(LVHD_BAT_ENTRIES, S.DD_BLK_UNUSED, dtype=np.uint32)
    batmap = np.zeros(LVHD_BAT_ENTRIES, dtype=bool)
    pieces: dict[int, bytes] = {}
    for k, b in enumerate(which):
        off = LVHD_FIRST_BITMAP_BYTES + k * LVHD_BLOCK_STRIDE_BYTES
        bat[b] = off // 512
        # a guest's writes: one or two 4 KiB pieces of the 2 MiB block, their data random
        mask = np.zeros(SECTORS, dtype=bool)
        for _ in range(rng.randint(1, 2)):
            at = rng.randrange(0, SECTORS - 8, 8)
            mask[at: at + 8] = True
            pieces[off + 512 + at * 512] = rng.randbytes(4096)
        pieces[off] = np.packbits(mask).tobytes()
        if stale:
            free = np.flatnonzero(~mask[:SECTORS - 8].reshape(-1, 8).any(axis=1))
            if len(free):
                at = int(free[rng.randrange(len(free))]) * 8
                pieces[off + 512 + at * 512] = rng.randbytes(4096)
    map_bytes = np.packbits(batmap).tobytes()
    csum = S.batmap_checksum(map_bytes[: S.batmap_checksum_length(virtual, 2 << 20)])
    pieces[0] = footer + header + S.build_bat(bat)
    pieces[LVHD_BATMAP_HEADER_OFFSET_BYTES] = S.build_batmap_header(
        LVHD_BATMAP_HEADER_OFFSET_BYTES + 512, len(map_bytes) // 512, csum) + map_bytes
    pieces[lv_bytes - 512] = footer
    return uid, pieces


def sparse_sr(path: str, size: int, n_vdis: int, seed: int = 1, fill: float = 0.3,
              data_offset: int = 11 << 20, extent_bytes: int = 4 << 20, turns: int = 2,
              label: bool = True, stale_blocks: bool = False) -> dict:
    """A sparse SR image: `n_vdis` LVHD VDIs grown in `turns` turns (created, then inflated:
    segments allocated from the lowest free PE, so their extents interleave), about `fill` of
    the PEs used, a few free extents
    holding stale random data. Only VHD metadata and bitmap sectors are written.
    With `label`, the PV's LVM label survives (pe_start = data_offset) while its metadata
    area is empty, as after the metadata was wiped. With `stale_blocks`, every block holds
    stale bytes where the guest never wrote (see _lvhd_structures).
    Returns {"data_offset", "extent_bytes", "pe_count", "vdis": {uid hex: [pe per LE]}, ...}."""
    rng = random.Random(seed)
    E = extent_bytes
    n_pes = (size - data_offset) // E
    target = int(n_pes * fill)
    les: list[list[int]] = [[] for _ in range(n_vdis)]
    free_ptr = 0
    stale: list[int] = []
    # turns: every VDI gets a segment per turn until the target is used
    while free_ptr < target:
        for v in range(n_vdis):
            if free_ptr >= target:
                break
            avg = max(3, target // (n_vdis * turns))
            seg = rng.randint(max(2, avg // 2), avg * 3 // 2)
            if rng.random() < 0.05:            # a freed extent left behind with stale data
                stale.append(free_ptr)
                free_ptr += 1
            seg = min(seg, n_pes - free_ptr)
            les[v].extend(range(free_ptr, free_ptr + seg))
            free_ptr += seg
    truth: dict[str, list[int]] = {}
    data_les: dict[str, list[int]] = {}
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        if label:
            from core.lvm.label import build_label_sector
            from core.match.restore import lvm_id
            os.pwrite(fd, build_label_sector(lvm_id(rng), size, data_offset,
                                             [(4096, data_offset - 4096)]), 512)
        for pe in stale:
            os.pwrite(fd, rng.randbytes(64 << 10), data_offset + pe * E + (1 << 20))
        for v, pes in enumerate(les):
            if len(pes) < 2:
                continue
            lv_bytes = len(pes) * E
            fits = (lv_bytes - 512 - LVHD_FIRST_BITMAP_BYTES) // LVHD_BLOCK_STRIDE_BYTES
            # sm sizes the LV of an inflated VDI as roundup4M(4,329,472 + virtual + 4 KiB per
            # block): the virtual size is the largest whose inflated LV is this LV
            virtual = max(1, (lv_bytes - 4_329_472) // ((2 << 20) + 4096)) * (2 << 20)
            thin = rng.random() < 0.2
            nblocks = max(1, min(fits, virtual // (2 << 20)) // (3 if thin else 1))
            uid, pieces = _lvhd_structures(virtual, lv_bytes, nblocks, rng, stale_blocks)
            holding: set[int] = set()     # LEs where some byte of the VHD is not zero
            for off, data in pieces.items():
                pos = 0
                while pos < len(data):
                    le, rel = divmod(off + pos, E)
                    take = min(len(data) - pos, E - rel)
                    chunk = data[pos:pos + take]
                    os.pwrite(fd, chunk, data_offset + pes[le] * E + rel)
                    if chunk.count(0) != len(chunk):
                        holding.add(le)
                    pos += take
            truth[uid.hex()] = pes
            data_les[uid.hex()] = sorted(holding)
    finally:
        os.close(fd)
    return {"data_offset": data_offset, "extent_bytes": E, "pe_count": n_pes, "vdis": truth,
            "data_les": data_les, "stale": stale}
