"""An ext4 file system read through `read`: its block bitmaps (allocation) and the structures
that identify themselves (landmarks).

Layout rules from Linux fs/ext4 (super.c ext4_group_desc_csum / ext4_superblock_csum,
balloc.c ext4_init_block_bitmap / ext4_bg_has_super / ext4_num_base_meta_clusters,
bitmap.c ext4_{block,inode}_bitmap_csum_set, inode.c ext4_inode_csum, namei.c
ext4_dirblock_csum / ext4_dx_csum, extents.c ext4_extent_block_csum) and e2fsprogs lib/ext2fs
(closefs.c ext2fs_super_and_bgd_loc2, openfs.c ext2fs_descriptor_block_loc2, mkjournal.c
ext2fs_create_journal_superblock2: the journal superblock carries the file system's uuid).
The landmarks are found and checked by core.guestfs.ext4_landmarks, the walk of in-use inodes
by core.guestfs.ext4_walk; both are mixed into `Ext4`.

Checksums (metadata_csum) are crc32c seeded with crc32c(~0, s_uuid) (or s_checksum_seed):
a structure copied from another ext4 file system, or from another position of this one (the
inode number, the group number are in the checksum) does not verify.
"""

from __future__ import annotations

import bisect
import struct as pystruct
from dataclasses import dataclass

import numpy as np
from construct import ConstructError

from core.structs import ext4 as E
from core.structs.layout import numpy_dtype, offsets

from .base import (ALLOCATED, PARSE_ERRORS, SECTOR, UNKNOWN, BudgetExceeded, GuestFs, Reader,
                   bits_le, crc16, crc32c_raw, merge_intervals, states_from_units)
from .ext4_landmarks import _SB, Ext4Landmarks
from .ext4_walk import (MAX_DIR_BLOCKS, MAX_REACHED, WALK_BUDGET, Ext4Walk, _Reached,  # noqa: F401
                        _dir_check, _extent_check, _extent_start, _super_groups, _u16, _u32)

MAX_GDT_BYTES = 16 << 20        # 16 MiB of descriptors = 256k groups (32 TiB at 4 KiB blocks)
EXT3_JNL_BACKUP_BLOCKS = 1      # ext4.h: s_jnl_blocks holds a copy of the journal's i_block

_U32 = pystruct.Struct("<I")
_INO = offsets(E.ext4_inode)


def _is_pow(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1




class Ext4(Ext4Walk, Ext4Landmarks, GuestFs):
    kind = "ext4"

    @property
    def identity(self) -> bytes:
        """The superblock's s_uuid (mke2fs makes one per file system)."""
        return bytes(self.sb.s_uuid)

    def __init__(self, reader: Reader, disk_size: int, sb_raw: bytes, sb, limit: int) -> None:
        self.r = reader
        self.offset = reader.base
        self.disk_size = disk_size
        self.sb_raw = sb_raw
        self.sb = sb
        self.block_size = 1024 << sb.s_log_block_size
        self.incompat = sb.s_feature_incompat
        self.ro_compat = sb.s_feature_ro_compat
        self.compat = sb.s_feature_compat
        hi = sb.s_blocks_count_hi if self.incompat & E.INCOMPAT_64BIT else 0
        self.blocks_count = sb.s_blocks_count_lo | (hi << 32)
        self.first_data_block = sb.s_first_data_block
        self.bpg = sb.s_blocks_per_group
        self.cluster_ratio = (1 << (sb.s_log_cluster_size - sb.s_log_block_size)) \
            if self.ro_compat & E.RO_COMPAT_BIGALLOC else 1
        self.cpg = sb.s_clusters_per_group if self.cluster_ratio > 1 else self.bpg
        self.ipg = sb.s_inodes_per_group
        self.inode_size = sb.s_inode_size if sb.s_rev_level >= 1 else E.EXT4_GOOD_OLD_INODE_SIZE
        self.first_ino = sb.s_first_ino if sb.s_rev_level >= 1 else 11
        self.desc_size = sb.s_desc_size if self.incompat & E.INCOMPAT_64BIT else \
            E.EXT4_MIN_DESC_SIZE
        self.ngroups = -(-(self.blocks_count - self.first_data_block) // self.bpg)
        self.descs_per_block = self.block_size // self.desc_size
        self.desc_blocks = -(-self.ngroups // self.descs_per_block)
        self.size = min(self.blocks_count * self.block_size, limit)
        self.uuid = sb.s_uuid
        self.csum = bool(self.ro_compat & E.RO_COMPAT_METADATA_CSUM)
        self.gdt_csum = bool(self.ro_compat & E.RO_COMPAT_GDT_CSUM) and not self.csum
        if self.incompat & E.INCOMPAT_CSUM_SEED:
            self.seed = sb.s_checksum_seed
        else:
            self.seed = crc32c_raw(0xFFFFFFFF, self.uuid)
        self.itable_blocks = -(-self.ipg * self.inode_size // self.block_size)
        self._bitmaps: dict[int, np.ndarray | None] = {}
        self._ibitmaps: dict[int, np.ndarray | None] = {}
        self._reached: list[_Reached] | None = None
        self._reached_at: list[int] = []
        self._bitmap_places: list | None = None
        self._content: tuple[np.ndarray, np.ndarray, bool] | None = None

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def probe(cls, reader: Reader, disk_size: int, limit: int) -> "Ext4 | None":
        """The ext4 (or ext2/3) file system at reader.base, or None.  `limit`: the bytes the
        partition (or the disk after the offset) has room for."""
        raw = reader.read(E.SUPERBLOCK_OFFSET, E.SUPERBLOCK_SIZE)
        if raw is None or _u16(raw, _SB["s_magic"]) != E.EXT4_SUPER_MAGIC:
            return None
        try:
            sb = E.ext4_super_block.parse(raw)
        except ConstructError:
            return None
        if not _sane(sb, limit):
            return None
        if sb.s_feature_ro_compat & E.RO_COMPAT_METADATA_CSUM:
            if crc32c_raw(0xFFFFFFFF, raw[:E.S_CHECKSUM_OFFSET]) != sb.s_checksum:
                return None
        fs = cls(reader, disk_size, raw, sb, limit)
        if not fs._load_gdt():
            return None
        fs._find_journal()
        return fs

    def _group_first_block(self, g: int) -> int:
        return self.first_data_block + g * self.bpg

    def has_super(self, g: int) -> bool:
        """ext4_bg_has_super: groups 0, 1 and powers of 3, 5, 7 under sparse_super; the two
        s_backup_bgs under sparse_super2; every group otherwise."""
        if g == 0:
            return True
        if self.compat & E.COMPAT_SPARSE_SUPER2:
            return g in tuple(self.sb.s_backup_bgs)
        if g <= 1 or not self.ro_compat & E.RO_COMPAT_SPARSE_SUPER:
            return True
        if g % 2 == 0:
            return False
        return _is_pow(g, 3) or _is_pow(g, 5) or _is_pow(g, 7)

    def _desc_block_loc(self, sb_block: int, i: int) -> int:
        """ext2fs_descriptor_block_loc2: block of GDT block i for the copy next to sb_block."""
        if not self.incompat & E.INCOMPAT_META_BG or i < self.sb.s_first_meta_bg:
            return sb_block + i + 1
        g = self.descs_per_block * i
        return self._group_first_block(g) + (1 if self.has_super(g) else 0)

    def _load_gdt(self) -> bool:
        sb_block = self.first_data_block
        if self.ngroups * self.desc_size > MAX_GDT_BYTES:
            return False
        B = self.block_size
        meta_bg = bool(self.incompat & E.INCOMPAT_META_BG)
        if not meta_bg:
            raw = self.r.read((sb_block + 1) * B, self.desc_blocks * B)
        else:
            parts = []
            for i in range(self.desc_blocks):
                p = self.r.read(self._desc_block_loc(sb_block, i) * B, B)
                if p is None:
                    return False
                parts.append(p)
            raw = b"".join(parts)
        if raw is None:
            return False
        raw = raw[:self.ngroups * self.desc_size]
        dt = numpy_dtype(E.ext4_group_desc, self.desc_size)
        d = np.frombuffer(raw, dtype=dt, count=self.ngroups)
        wide = self.desc_size >= E.EXT4_MIN_DESC_SIZE_64BIT
        def full(lo: str, hi: str) -> np.ndarray:
            v = d[lo].astype(np.int64)
            if wide:
                v |= d[hi].astype(np.int64) << 32
            return v
        def full16(lo: str, hi: str, hi_end: int) -> np.ndarray:
            v = d[lo].astype(np.int64)
            if self.desc_size >= hi_end:
                v |= d[hi].astype(np.int64) << 16
            return v
        self.bb = full("bg_block_bitmap_lo", "bg_block_bitmap_hi")
        self.ib = full("bg_inode_bitmap_lo", "bg_inode_bitmap_hi")
        self.it = full("bg_inode_table_lo", "bg_inode_table_hi")
        self.flags = d["bg_flags"].astype(np.int64)
        self.itable_unused = d["bg_itable_unused_lo"].astype(np.int64) | (
            d["bg_itable_unused_hi"].astype(np.int64) << 16 if wide else 0)
        self.bb_csum = full16("bg_block_bitmap_csum_lo", "bg_block_bitmap_csum_hi",
                              E.EXT4_BG_BLOCK_BITMAP_CSUM_HI_END)
        self.ib_csum = full16("bg_inode_bitmap_csum_lo", "bg_inode_bitmap_csum_hi",
                              E.EXT4_BG_INODE_BITMAP_CSUM_HI_END)
        self.bb_csum_bits = 32 if self.desc_size >= E.EXT4_BG_BLOCK_BITMAP_CSUM_HI_END else 16
        self.ib_csum_bits = 32 if self.desc_size >= E.EXT4_BG_INODE_BITMAP_CSUM_HI_END else 16
        self.gdt_raw = raw
        # a descriptor whose own checksum fails is not trusted (its pointers may be garbage)
        self.desc_ok = np.array([self._desc_csum_ok(raw, g) for g in range(self.ngroups)],
                                dtype=bool)
        inside = (self.bb < self.blocks_count) & (self.ib < self.blocks_count) & \
                 (self.it + self.itable_blocks <= self.blocks_count)
        self.desc_ok &= inside
        return bool(self.desc_ok[0]) if self.ngroups else False

    def _desc_csum(self, desc: bytes, g: int) -> int | None:
        """The value bg_checksum must hold for descriptor bytes `desc` of group g."""
        grp = _U32.pack(g & 0xFFFFFFFF)
        off = E.BG_CHECKSUM_OFFSET
        if self.csum:
            c = crc32c_raw(self.seed, grp)
            c = crc32c_raw(c, desc[:off])
            c = crc32c_raw(c, b"\0\0")
            if off + 2 < self.desc_size:
                c = crc32c_raw(c, desc[off + 2:self.desc_size])
            return c & 0xFFFF
        if self.gdt_csum:
            c = crc16(0xFFFF, self.uuid)
            c = crc16(c, grp)
            c = crc16(c, desc[:off])
            if self.incompat & E.INCOMPAT_64BIT and off + 2 < self.desc_size:
                c = crc16(c, desc[off + 2:self.desc_size])
            return c
        return None

    def _desc_csum_ok(self, raw: bytes, g: int) -> bool:
        desc = raw[g * self.desc_size:(g + 1) * self.desc_size]
        want = self._desc_csum(desc, g)
        return want is None or want == _u16(desc, E.BG_CHECKSUM_OFFSET)

    def _find_journal(self) -> None:
        """The journal's first block from s_jnl_blocks (the superblock's copy of the journal
        inode's extent root), when the superblock keeps one."""
        self.journal_block: int | None = None
        sb = self.sb
        if not (self.compat & E.COMPAT_HAS_JOURNAL) or sb.s_journal_inum == 0 or \
                sb.s_jnl_backup_type != EXT3_JNL_BACKUP_BLOCKS:
            return
        iblock = b"".join(_U32.pack(x) for x in list(sb.s_jnl_blocks)[:15])
        blk = self._first_physical(iblock)
        if blk is not None and blk < self.blocks_count:
            self.journal_block = blk

    def _first_physical(self, iblock: bytes) -> int | None:
        """Physical block of logical block 0 from an i_block extent root (or block map)."""
        if _u16(iblock, 0) == E.EXT4_EXT_MAGIC:
            entries, depth = _u16(iblock, 2), _u16(iblock, 6)
            node = iblock
            for _ in range(5):
                if entries == 0 or len(node) < 24:     # header + one entry
                    return None
                if depth == 0:
                    return _extent_start(node, 12)
                leaf = _u32(node, 12 + 4) | (_u16(node, 12 + 8) << 32)
                if leaf >= self.blocks_count:
                    return None
                node = self.r.read(leaf * self.block_size, self.block_size)
                if node is None or _u16(node, 0) != E.EXT4_EXT_MAGIC:
                    return None
                entries, depth = _u16(node, 2), _u16(node, 6)
            return None
        return _u32(iblock, 0) or None

    # -- allocation ------------------------------------------------------------------------------
    def _fs_states(self, first_sector: int, end_sector: int) -> np.ndarray:
        B = self.block_size
        b0 = (first_sector * SECTOR - self.offset) // B
        b1 = -(-(end_sector * SECTOR - self.offset) // B)
        units = np.full(b1 - b0, ALLOCATED, dtype=np.int8)
        lo = max(b0, self.first_data_block)
        hi = min(b1, self.blocks_count)
        if hi > lo:
            g0 = (lo - self.first_data_block) // self.bpg
            g1 = (hi - 1 - self.first_data_block) // self.bpg
            for g in range(g0, g1 + 1):
                gs = self._group_first_block(g)
                a, b = max(lo, gs), min(hi, gs + self.bpg)
                bm = self.block_bitmap(g)
                if bm is None:
                    units[a - b0:b - b0] = UNKNOWN
                else:
                    units[a - b0:b - b0] = bm[a - gs:b - gs]
        return states_from_units(first_sector, end_sector, self.offset, B, b0, units)

    def block_bitmap(self, g: int) -> np.ndarray | None:
        """bool per block of group g (True: in use), or None when its bitmap is unreadable or
        its checksum (metadata_csum) does not verify."""
        if g not in self._bitmaps:
            self._bitmaps[g] = self._load_block_bitmap(g)
        return self._bitmaps[g]

    def _uninit(self, g: int, flag: int) -> bool:
        return bool(self.flags[g] & flag) and (self.csum or self.gdt_csum)

    def _load_block_bitmap(self, g: int) -> np.ndarray | None:
        if not (0 <= g < self.ngroups) or not self.desc_ok[g]:
            return None
        if self._uninit(g, E.EXT4_BG_BLOCK_UNINIT):
            return self._computed_bitmap(g)
        nbytes = self.cpg // 8
        raw = self.r.read(int(self.bb[g]) * self.block_size, nbytes)
        if raw is None or not self._bitmap_csum_ok(raw, int(self.bb_csum[g]), self.bb_csum_bits):
            return None
        bits = bits_le(raw, self.cpg)
        if self.cluster_ratio > 1:
            bits = np.repeat(bits, self.cluster_ratio)
        out = np.ones(self.bpg, dtype=bool)
        n = min(self.bpg, bits.size)
        out[:n] = bits[:n]
        self._pad_last_group(g, out)
        return out

    def _bitmap_csum_ok(self, raw: bytes, want: int, nbits: int) -> bool:
        if not self.csum:
            return True
        c = crc32c_raw(self.seed, raw)
        return (c & ((1 << nbits) - 1)) == want

    def _pad_last_group(self, g: int, bm: np.ndarray) -> None:
        end = self.blocks_count - self._group_first_block(g)
        if end < self.bpg:
            bm[max(0, end):] = True

    def _base_meta_blocks(self, g: int) -> int:
        """Blocks at the start of group g holding a superblock copy and descriptor blocks
        (ext2fs_super_and_bgd_loc2)."""
        n = 1 if self.has_super(g) else 0
        if not self.incompat & E.INCOMPAT_META_BG or \
                g // self.descs_per_block < self.sb.s_first_meta_bg:
            if n:
                old = self.sb.s_first_meta_bg if self.incompat & E.INCOMPAT_META_BG else \
                    self.desc_blocks + self.sb.s_reserved_gdt_blocks
                n += old
        else:
            r = g % self.descs_per_block
            if r in (0, 1, self.descs_per_block - 1):
                n += 1
        return n

    def _computed_bitmap(self, g: int) -> np.ndarray:
        """The bitmap of a BLOCK_UNINIT group, as ext4_init_block_bitmap makes it: the group's
        superblock/GDT copy, and any group's bitmaps and inode table that live in it."""
        bm = np.zeros(self.bpg, dtype=bool)
        gs = self._group_first_block(g)
        bm[:min(self.bpg, self._base_meta_blocks(g))] = True
        for arr in (self.bb, self.ib):
            rel = arr[self.desc_ok] - gs
            rel = rel[(rel >= 0) & (rel < self.bpg)]
            bm[rel] = True
        starts = self.it[self.desc_ok] - gs
        for s in starts[(starts > -self.itable_blocks) & (starts < self.bpg)].tolist():
            bm[max(0, s):max(0, min(self.bpg, s + self.itable_blocks))] = True
        self._pad_last_group(g, bm)
        return bm

    def inode_bitmap(self, g: int, budget: int | None = None) -> np.ndarray | None:
        """bool per inode of group g (True: in use); None when unreadable or not verified."""
        if g not in self._ibitmaps:
            self._ibitmaps[g] = self._load_inode_bitmap(g, budget)
        return self._ibitmaps[g]

    def _load_inode_bitmap(self, g: int, budget: int | None = None) -> np.ndarray | None:
        if not (0 <= g < self.ngroups) or not self.desc_ok[g]:
            return None
        if self._uninit(g, E.EXT4_BG_INODE_UNINIT):
            return np.zeros(self.ipg, dtype=bool)
        raw = self.r.read(int(self.ib[g]) * self.block_size, self.ipg // 8, budget)
        if raw is None or not self._bitmap_csum_ok(raw, int(self.ib_csum[g]), self.ib_csum_bits):
            return None
        bits = bits_le(raw, self.ipg)
        if self.csum or self.gdt_csum:
            # inodes at or past the itable_unused mark were never used (mke2fs/kernel keep it)
            bits[max(0, self.ipg - int(self.itable_unused[g])):] = False
        return bits

    # -- inode checksums -------------------------------------------------------------------------
    def inode_seed(self, ino: int, generation: int) -> int:
        """ext4_iget: ei->i_csum_seed = crc32c(crc32c(fs seed, le32 ino), le32 generation)."""
        return crc32c_raw(crc32c_raw(self.seed, _U32.pack(ino)), _U32.pack(generation))

    def inode_csum_ok(self, raw: bytes, ino: int) -> bool:
        """ext4_inode_csum_verify for the inode bytes `raw` (s_inode_size long) of inode `ino`."""
        isz = self.inode_size
        gen = _u32(raw, E.I_GENERATION_OFFSET)
        lo_off, hi_off = E.I_CHECKSUM_LO_OFFSET, E.I_CHECKSUM_HI_OFFSET
        has_hi = isz > E.EXT4_GOOD_OLD_INODE_SIZE and \
            E.EXT4_GOOD_OLD_INODE_SIZE + _u16(raw, _INO["i_extra_isize"]) >= hi_off + 2
        buf = bytearray(raw[:isz])
        buf[lo_off:lo_off + 2] = b"\0\0"
        if has_hi:
            buf[hi_off:hi_off + 2] = b"\0\0"
        c = crc32c_raw(self.inode_seed(ino, gen), bytes(buf))
        stored = _u16(raw, lo_off)
        if has_hi:
            stored |= _u16(raw, hi_off) << 16
            return c == stored
        return (c & 0xFFFF) == stored


def _sane(sb, limit: int) -> bool:
    """The geometry a real mke2fs could have written, and that fits the room it has."""
    if not (0 <= sb.s_log_block_size <= E.EXT4_MAX_BLOCK_LOG_SIZE - E.EXT4_MIN_BLOCK_LOG_SIZE):
        return False
    B = 1024 << sb.s_log_block_size
    # a group's bitmap is one block: at most 8 * B clusters per group
    cpg = sb.s_clusters_per_group if sb.s_feature_ro_compat & E.RO_COMPAT_BIGALLOC else \
        sb.s_blocks_per_group
    if cpg == 0 or cpg > 8 * B or cpg % 8 or sb.s_blocks_per_group == 0:
        return False
    if sb.s_inodes_per_group == 0 or sb.s_inodes_per_group > 8 * B or sb.s_inodes_per_group % 8:
        return False
    if sb.s_first_data_block != (1 if B == 1024 else 0) and sb.s_first_data_block != 0:
        return False
    if sb.s_rev_level >= 1:
        isz = sb.s_inode_size
        if isz < E.EXT4_GOOD_OLD_INODE_SIZE or isz > B or isz & (isz - 1):
            return False
    if sb.s_feature_incompat & E.INCOMPAT_64BIT:
        ds = sb.s_desc_size
        if ds < E.EXT4_MIN_DESC_SIZE_64BIT or ds > E.EXT4_DESC_SIZE_MAX or ds & (ds - 1):
            return False
    if sb.s_feature_ro_compat & E.RO_COMPAT_BIGALLOC:
        if not (sb.s_log_block_size <= sb.s_log_cluster_size <= sb.s_log_block_size + 16):
            return False
        ratio = 1 << (sb.s_log_cluster_size - sb.s_log_block_size)
        if sb.s_clusters_per_group * ratio != sb.s_blocks_per_group:
            return False
    hi = sb.s_blocks_count_hi if sb.s_feature_incompat & E.INCOMPAT_64BIT else 0
    blocks = sb.s_blocks_count_lo | (hi << 32)
    if blocks <= sb.s_first_data_block:
        return False
    # a file system larger than its room: a truncated image is read as far as it goes, but not
    # one claiming several times the room (that is garbage, not truncation)
    return blocks * B <= 4 * max(limit, 1 << 20)
