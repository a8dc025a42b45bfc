"""The ext4 landmarks (core.guestfs.ext4): the structures of the file system that identify
themselves in a range -- superblock copies, group descriptor blocks (old-style and meta_bg),
block and inode bitmaps, inode table blocks holding in-use inodes, the journal superblock --
each with the check that only this file system's own copy passes (metadata_csum crc32c seeded
by the uuid and by the group or inode number). Split out of ext4.py; Ext4 mixes it in.

Layout rules from Linux fs/ext4 (super.c ext4_superblock_csum / ext4_group_desc_csum,
bitmap.c ext4_{block,inode}_bitmap_csum_set, inode.c ext4_inode_csum) and e2fsprogs lib/ext2fs
(closefs.c ext2fs_super_and_bgd_loc2, openfs.c ext2fs_descriptor_block_loc2, mkjournal.c
ext2fs_create_journal_superblock2).
"""

from __future__ import annotations

import struct as pystruct

import numpy as np

from core.structs import ext4 as E
from core.structs.layout import offsets

from .base import Landmark, crc32c_raw
from .ext4_walk import _u16, _u32

_SB = offsets(E.ext4_super_block)


class Ext4Landmarks:
    """The landmark methods (mixed into core.guestfs.ext4.Ext4; its state lives there)."""

    def _landmarks(self, start: int, length: int) -> list[Landmark]:
        """ext4-superblock / ext4-backup-superblock, ext4-gdt / ext4-gdt-backup /
        ext4-gdt-meta-bg, ext4-block-bitmap, ext4-inode-bitmap, ext4-inode-table,
        ext4-dir-block, ext4-extent-block, jbd2-superblock (checksummed kinds need
        metadata_csum; without it only superblock copies and the journal superblock)."""
        a = start - self.offset
        b = a + length
        out = self._copies_landmarks(a, b) + self._bitmap_landmarks(a, b)
        if self.journal_block is not None:
            off = self.journal_block * self.block_size
            if a <= off and off + E.JBD2_SUPERBLOCK_SIZE <= b:
                out.append(Landmark(off, E.JBD2_SUPERBLOCK_SIZE, "jbd2-superblock",
                                    self._journal_check()))
        out = [Landmark(self.offset + lm.offset, lm.size, lm.what, lm.check) for lm in out]
        out += self._inode_table_landmarks(a, b)
        out += self._reached_landmarks(a, b)
        out.sort(key=lambda lm: lm.offset)
        return out

    def _copies_landmarks(self, a: int, b: int) -> list[Landmark]:
        """Superblock copies and descriptor blocks in file-system bytes [a, b) (offsets
        relative to the file system).  Computed per range from the groups that start near it:
        the primary superblock sits 1024 bytes into the device, a backup at the start of its
        group's first block, descriptor blocks right after the block holding the copy."""
        B = self.block_size
        out: list[Landmark] = []
        def add(off: int, size: int, what: str, make, arg: int) -> None:
            if a <= off and off + size <= b:
                out.append(Landmark(off, size, what, make(arg)))
        old_gdt = self.desc_blocks if not self.incompat & E.INCOMPAT_META_BG else \
            min(self.desc_blocks, self.sb.s_first_meta_bg)
        # groups whose copy (superblock + old-style GDT) may reach into [a, b)
        g_lo = max(0, (a // B - self.first_data_block - old_gdt - 1) // self.bpg)
        g_hi = min(self.ngroups - 1, (b // B - self.first_data_block) // self.bpg)
        for g in range(g_lo, g_hi + 1):
            if not self.has_super(g):
                continue
            sb_block = self.first_data_block if g == 0 else self._group_first_block(g)
            add(E.SUPERBLOCK_OFFSET if g == 0 else sb_block * B, E.SUPERBLOCK_SIZE,
                "ext4-superblock" if g == 0 else "ext4-backup-superblock", self._sb_check, g)
            if not (self.csum or self.gdt_csum):
                continue
            i0 = max(0, a // B - sb_block - 1)
            i1 = min(old_gdt, -(-b // B) - sb_block - 1)
            for i in range(i0, i1):
                add((sb_block + i + 1) * B, B, "ext4-gdt" if g == 0 else "ext4-gdt-backup",
                    self._gdt_check, i)
        if self.incompat & E.INCOMPAT_META_BG and (self.csum or self.gdt_csum):
            # meta_bg: descriptor block i lives in the first, second and last group of meta
            # group i (ext2fs_descriptor_block_loc2)
            dpb = self.descs_per_block
            m_lo = max(self.sb.s_first_meta_bg,
                       (a // B - self.first_data_block) // self.bpg // dpb - 1)
            m_hi = min(self.desc_blocks - 1,
                       (b // B - self.first_data_block) // self.bpg // dpb + 1)
            for i in range(max(0, m_lo), m_hi + 1):
                for h in (i * dpb, i * dpb + 1, i * dpb + dpb - 1):
                    if h < self.ngroups:
                        blk = self._group_first_block(h) + (1 if self.has_super(h) else 0)
                        add(blk * B, B, "ext4-gdt-meta-bg", self._gdt_check, i)
        return out

    def _bitmap_landmarks(self, a: int, b: int) -> list[Landmark]:
        """Initialised block and inode bitmaps in [a, b), found through sorted tables of their
        places (built once)."""
        if not self.csum:
            return []
        if self._bitmap_places is None:
            B = self.block_size
            ok = self.desc_ok
            bb_ok = ok & ~((self.flags & E.EXT4_BG_BLOCK_UNINIT) != 0)
            ib_ok = ok & ~((self.flags & E.EXT4_BG_INODE_UNINIT) != 0)
            tables = []
            for arr, sel in ((self.bb, bb_ok), (self.ib, ib_ok)):
                groups = np.flatnonzero(sel)
                offs = arr[groups] * B
                order = np.argsort(offs, kind="stable")
                tables.append((offs[order], groups[order]))
            self._bitmap_places = tables
        out: list[Landmark] = []
        kinds = (("ext4-block-bitmap", self.bb_csum, self.bb_csum_bits, self.cpg // 8),
                 ("ext4-inode-bitmap", self.ib_csum, self.ib_csum_bits, self.ipg // 8))
        for (offs, groups), (what, csums, bits, nbytes) in zip(self._bitmap_places, kinds):
            i0, i1 = np.searchsorted(offs, [a, b])
            for off, g in zip(offs[i0:i1].tolist(), groups[i0:i1].tolist()):
                if off + nbytes <= b:
                    out.append(Landmark(off, nbytes, what,
                                        self._bitmap_check(int(csums[g]), bits, nbytes)))
        return out

    def _sb_check(self, g: int):
        uuid, csum = self.uuid, self.csum
        def check(data: bytes) -> bool:
            if len(data) < E.SUPERBLOCK_SIZE or _u16(data, _SB["s_magic"]) != E.EXT4_SUPER_MAGIC:
                return False
            if data[E.S_UUID_OFFSET:E.S_UUID_OFFSET + 16] != uuid:
                return False
            if _u16(data, E.S_BLOCK_GROUP_NR_OFFSET) != (g & 0xFFFF):
                return False
            if csum and crc32c_raw(0xFFFFFFFF, data[:E.S_CHECKSUM_OFFSET]) != \
                    _u32(data, E.S_CHECKSUM_OFFSET):
                return False
            return True
        return check

    def _gdt_check(self, i: int):
        """GDT block i: every descriptor in it verifies for its own group number."""
        g0 = i * self.descs_per_block
        g1 = min(self.ngroups, g0 + self.descs_per_block)
        ds = self.desc_size
        def check(data: bytes) -> bool:
            if len(data) < (g1 - g0) * ds or g1 <= g0:
                return False
            for g in range(g0, g1):
                desc = data[(g - g0) * ds:(g - g0 + 1) * ds]
                if self._desc_csum(desc, g) != _u16(desc, E.BG_CHECKSUM_OFFSET):
                    return False
            # an all-zero block is nobody's GDT even if the arithmetic happened to agree
            return any(data[:(g1 - g0) * ds])
        return check

    def _bitmap_check(self, want: int, nbits: int, nbytes: int):
        seed, mask = self.seed, (1 << nbits) - 1
        def check(data: bytes) -> bool:
            return len(data) >= nbytes and (crc32c_raw(seed, data[:nbytes]) & mask) == want
        return check

    def _journal_check(self):
        uuid, B = self.uuid, self.block_size
        def check(data: bytes) -> bool:
            if len(data) < E.JBD2_SUPERBLOCK_SIZE:
                return False
            magic, btype, _, bsize = pystruct.unpack_from(">IIII", data, 0)
            if magic != E.JBD2_MAGIC_NUMBER or btype not in (E.JBD2_SUPERBLOCK_V1,
                                                             E.JBD2_SUPERBLOCK_V2):
                return False
            if bsize != B or data[0x30:0x40] != uuid:
                return False
            incompat = pystruct.unpack_from(">I", data, 0x28)[0]
            if incompat & (E.JBD2_FEATURE_INCOMPAT_CSUM_V2 | E.JBD2_FEATURE_INCOMPAT_CSUM_V3):
                buf = bytearray(data[:E.JBD2_SUPERBLOCK_SIZE])
                stored = pystruct.unpack_from(">I", buf, E.JBD2_CHECKSUM_OFFSET)[0]
                buf[E.JBD2_CHECKSUM_OFFSET:E.JBD2_CHECKSUM_OFFSET + 4] = b"\0\0\0\0"
                return crc32c_raw(0xFFFFFFFF, bytes(buf)) == stored
            return True
        return check

    # inode tables: one landmark per block holding in-use inodes
    def _inode_table_landmarks(self, a: int, b: int) -> list[Landmark]:
        if not self.csum:
            return []
        B = self.block_size
        blk_a, blk_b = a // B, -(-b // B)
        hit = np.flatnonzero(self.desc_ok & (self.it < blk_b) &
                             (self.it + self.itable_blocks > blk_a))
        out = []
        per_block = B // self.inode_size
        for g in hit.tolist():
            ibm = self.inode_bitmap(g)
            if ibm is None:
                continue
            used = np.flatnonzero(ibm)
            if used.size == 0:
                continue
            t0 = int(self.it[g])
            for k in np.unique(used // per_block).tolist():
                blk = t0 + k
                off = blk * B
                if off < a or off + B > b:
                    continue
                idx = used[(used >= k * per_block) & (used < (k + 1) * per_block)]
                inos = [(g * self.ipg + int(j) + 1, int(j) - k * per_block) for j in idx]
                out.append(Landmark(self.offset + off, B, "ext4-inode-table",
                                    self._itable_check(inos)))
        return out

    def _itable_check(self, inos: list[tuple[int, int]]):
        """Every in-use inode of the block verifies with its own number (reserved inodes that
        mke2fs left zeroed excepted); at least one does."""
        isz, first_ino = self.inode_size, self.first_ino
        def check(data: bytes) -> bool:
            good = 0
            for ino, slot in inos:
                raw = data[slot * isz:(slot + 1) * isz]
                if len(raw) < isz:
                    return False
                if self.inode_csum_ok(raw, ino):
                    good += 1
                elif ino >= first_ino or any(raw):
                    return False
            return good > 0
        return check
