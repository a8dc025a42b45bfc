"""The ext4 walk of in-use inodes (core.guestfs.ext4): the directory and extent-tree blocks it
reaches (self-identifying landmarks: checksums seeded by the inode's number and generation), the
last partial block of every regular file (weak file-tail marks), and where the file system says
something was written (content intervals). Split out of ext4.py; Ext4 mixes it in.

Layout rules from Linux fs/ext4 (namei.c ext4_dirblock_csum / ext4_dx_csum, extents.c
ext4_extent_block_csum, balloc.c ext4_bg_has_super).
"""

from __future__ import annotations

import bisect
import struct as pystruct
from dataclasses import dataclass

import numpy as np

from core.structs import ext4 as E
from core.structs.layout import offsets

from .base import PARSE_ERRORS, BudgetExceeded, Landmark, crc32c_raw, merge_intervals

WALK_BUDGET = 8 << 20           # bytes of inode tables + extent blocks read to find dir blocks
MAX_REACHED = 1 << 18           # directory / extent blocks remembered
MAX_DIR_BLOCKS = 1 << 16        # blocks of one directory taken into account

_U32 = pystruct.Struct("<I")
_INO = offsets(E.ext4_inode)


def _u16(b: bytes, off: int) -> int:
    return b[off] | (b[off + 1] << 8)


def _u32(b: bytes, off: int) -> int:
    return _U32.unpack_from(b, off)[0]



@dataclass(frozen=True)
class _Reached:
    """A block found by walking in-use inodes: a directory block or an extent tree block."""
    block: int
    kind: str          # "dir" | "extent" | "tail"
    ino: int
    seed: int          # the inode's checksum seed (fs seed + inode number + generation)
    depth: int = 0     # extent block: its eh_depth
    first: int = 0     # extent block: the logical block its first entry must start at
    eof: int = 0       # tail: where the file ends inside its last block (bytes, 1..B-1)



class Ext4Walk:
    """The walk's methods (mixed into core.guestfs.ext4.Ext4; its state lives there)."""

    # directory and extent blocks, found by walking in-use inodes (bounded)
    def _reached_landmarks(self, a: int, b: int) -> list[Landmark]:
        if not self.csum:
            return []
        reached = self._walk()
        B = self.block_size
        i = bisect.bisect_left(self._reached_at, a // B)
        out = []
        while i < len(reached) and reached[i].block * B < b:
            r = reached[i]
            off = r.block * B
            if off >= a and off + B <= b:
                if r.kind == "dir":
                    out.append(Landmark(self.offset + off, B, "ext4-dir-block",
                                        _dir_check(r.seed, B)))
                elif r.kind == "tail":
                    pass            # not self-identifying alone: see file_tails
                else:
                    out.append(Landmark(self.offset + off, B, "ext4-extent-block",
                                        _extent_check(r.seed, B, r.depth, r.first)))
            i += 1
        return out

    def file_tails(self, start: int, length: int) -> list[Landmark]:
        """Weak, one-sided marks for the last, partial blocks of regular files inside [start,
        start+length): Linux zeroes a file's last block past its size when it writes it back
        (the page beyond i_size is zeroed before writeback, fs/buffer.c
        block_write_full_page), so another disk's bytes there rarely read zero from EOF on
        ("file-tail-zero"); data just before EOF is usual but a file may end in zeros
        ("file-tail-data"). Neither names this file system alone: the solver weighs them."""
        if not self.csum:
            return []
        try:
            reached = self._walk()
        except PARSE_ERRORS:
            return []
        B = self.block_size
        a, b = start - self.offset, start - self.offset + length
        i = bisect.bisect_left(self._reached_at, a // B)
        out = []
        while i < len(reached) and reached[i].block * B < b:
            r = reached[i]
            off = r.block * B
            if r.kind == "tail" and off >= a and off + B <= b:
                edge = max(0, r.eof - TAIL_EDGE)
                out.append(Landmark(self.offset + off + r.eof, B - r.eof, "file-tail-zero",
                                    _all_zero))
                out.append(Landmark(self.offset + off + edge, r.eof - edge, "file-tail-data",
                                    _any_data))
            i += 1
        return out

    def _walk(self) -> list[_Reached]:
        """Read in-use inodes (within WALK_BUDGET bytes) and collect every block of their
        directories and every extent tree block below their roots."""
        if self._reached is not None:
            return self._reached
        found: dict[int, _Reached] = {}
        self._data: list[tuple[int, int]] = []        # content byte intervals (files, dirs)
        self._inode_content: list[tuple[int, int]] = []
        self._walk_complete = bool(self.desc_ok.all())
        budget = self.r.spent + WALK_BUDGET
        B = self.block_size
        per_block = B // self.inode_size
        try:
            for g in np.flatnonzero(self.desc_ok).tolist():
                if self._uninit(g, E.EXT4_BG_INODE_UNINIT):
                    continue
                ibm = self.inode_bitmap(g, budget)
                if ibm is None:
                    self._walk_complete = False
                    continue
                used = np.flatnonzero(ibm)
                for k in np.unique(used // per_block).tolist():
                    raw = self.r.read((int(self.it[g]) + k) * B, B, budget)
                    if raw is None:
                        self._walk_complete = False
                        continue
                    for j in used[(used >= k * per_block) & (used < (k + 1) * per_block)]:
                        slot = int(j) - k * per_block
                        ino = g * self.ipg + int(j) + 1
                        inode = raw[slot * self.inode_size:(slot + 1) * self.inode_size]
                        if self._walk_inode(inode, ino, found, budget):
                            at = (int(self.it[g]) + k) * B + slot * self.inode_size
                            self._inode_content.append((at, at + self.inode_size))
                        if len(found) + len(self._data) >= MAX_REACHED:
                            raise BudgetExceeded
        except BudgetExceeded:
            self._walk_complete = False
        self._reached = sorted(found.values(), key=lambda r: r.block)
        self._reached_at = [r.block for r in self._reached]
        return self._reached

    def _walk_inode(self, raw: bytes, ino: int, found: dict, budget: int) -> bool:
        """Collect what inode `ino` reaches; True when the inode itself is content (it verifies
        and is not one of the reserved inodes mke2fs leaves zeroed)."""
        if len(raw) < E.EXT4_GOOD_OLD_INODE_SIZE or not any(raw):
            return False
        if self.csum and not self.inode_csum_ok(raw, ino):
            self._walk_complete = False
            return False
        mode = _u16(raw, _INO["i_mode"])
        flags = _u32(raw, _INO["i_flags"])
        if not flags & E.EXT4_EXTENTS_FL or flags & E.EXT4_INLINE_DATA_FL:
            return True
        is_dir = (mode & E.S_IFMT) == E.S_IFDIR
        seed = self.inode_seed(ino, _u32(raw, E.I_GENERATION_OFFSET))
        root = raw[E.I_BLOCK_OFFSET:E.I_BLOCK_OFFSET + 60]
        if _u16(root, 0) != E.EXT4_EXT_MAGIC:
            return True
        size = _u32(raw, _INO["i_size_lo"]) | (_u32(raw, _INO["i_size_high"]) << 32)
        # the journal's blocks hold nothing until the kernel uses it (mke2fs zeroes it)
        data = ino != self.sb.s_journal_inum
        self._walk_node(root, _u16(root, 6), ino, seed, is_dir, found, budget, [0], 0,
                        -(-size // self.block_size) if data else 0,
                        size % self.block_size if data and not is_dir else 0)
        return True

    def _walk_node(self, node: bytes, depth: int, ino: int, seed: int, is_dir: bool,
                   found: dict, budget: int, dir_blocks: list[int], level: int,
                   data_blocks: int = 0, eof: int = 0) -> None:
        if level > 5 or len(node) < 12:
            return
        B = self.block_size
        entries = min(_u16(node, 2), (len(node) - 12) // 12)
        for e in range(entries):
            at = 12 + 12 * e
            if depth == 0:
                length = _u16(node, at + 4)
                if length > E.EXT_INIT_MAX_LEN:
                    continue                    # unwritten extent: reads as zeros, never written
                start = _extent_start(node, at)
                logical = _u32(node, at)
                n = max(0, min(length, data_blocks - logical, self.blocks_count - start))
                if n:
                    self._data.append((start * B, (start + n) * B))
                if not is_dir:
                    if eof and logical <= data_blocks - 1 < logical + n:
                        # a regular file's last, partial block (file-tail landmarks)
                        blk = start + data_blocks - 1 - logical
                        found.setdefault(blk, _Reached(blk, "tail", ino, seed, eof=eof))
                    continue
                for blk in range(start, min(start + length, self.blocks_count)):
                    if dir_blocks[0] >= MAX_DIR_BLOCKS:
                        return
                    dir_blocks[0] += 1
                    found.setdefault(blk, _Reached(blk, "dir", ino, seed))
                continue
            leaf = _u32(node, at + 4) | (_u16(node, at + 8) << 32)
            first = _u32(node, at)
            if leaf >= self.blocks_count or leaf < self.first_data_block:
                continue
            found[leaf] = _Reached(leaf, "extent", ino, seed, depth - 1, first)
            child = self.r.read(leaf * self.block_size, self.block_size, budget)
            if child is None or not _extent_check(seed, self.block_size, depth - 1, first)(child):
                self._walk_complete = False
                continue
            self._walk_node(child, depth - 1, ino, seed, is_dir, found, budget, dir_blocks,
                            level + 1, data_blocks, eof)


    # -- content ---------------------------------------------------------------------------------
    def _content_intervals(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Content: superblock and descriptor copies, initialised bitmaps that are not all
        zero, in-use inodes, the journal superblock, and every initialised extent of in-use
        inodes up to their size (directories, files, extent tree blocks).  Under-claiming is
        safe (NO_CONTENT is never evidence); over-claiming is not, so anything uncertain is
        left out."""
        if self._content is not None:
            return self._content
        reached = self._walk()
        B = self.block_size
        pairs = list(self._data) + list(self._inode_content)
        pairs += [(r.block * B, (r.block + 1) * B) for r in reached]
        for g in _super_groups(self):
            sb_block = self.first_data_block if g == 0 else self._group_first_block(g)
            off = E.SUPERBLOCK_OFFSET if g == 0 else sb_block * B
            pairs.append((off, off + E.SUPERBLOCK_SIZE))
            if not self.incompat & E.INCOMPAT_META_BG:
                gdt = (sb_block + 1) * B
                pairs.append((gdt, gdt + self.ngroups * self.desc_size))
        if self.journal_block is not None:
            pairs.append((self.journal_block * B, self.journal_block * B + E.JBD2_SUPERBLOCK_SIZE))
        zero_csum = crc32c_raw(self.seed, bytes(self.cpg // 8)) & ((1 << self.bb_csum_bits) - 1)
        for g in np.flatnonzero(self.desc_ok).tolist():
            # an initialised inode bitmap is never all zero: its padding bits are set
            if not self._uninit(g, E.EXT4_BG_INODE_UNINIT) and self.ipg < 8 * B:
                pairs.append((int(self.ib[g]) * B, int(self.ib[g]) * B + B))
            if self.csum and not self._uninit(g, E.EXT4_BG_BLOCK_UNINIT) and \
                    int(self.bb_csum[g]) != zero_csum:
                pairs.append((int(self.bb[g]) * B, int(self.bb[g]) * B + self.cpg // 8))
        starts, ends = merge_intervals(pairs)
        self._content = (starts, ends, self._walk_complete)
        return self._content


TAIL_EDGE = 64      # bytes before a file's end looked at for data (file-tail-data)


def _all_zero(data: bytes) -> bool:
    return len(data) > 0 and not any(data)


def _any_data(data: bytes) -> bool:
    return any(data)


def _extent_start(node: bytes, at: int) -> int:
    return _u32(node, at + 8) | (_u16(node, at + 6) << 32)


def _dir_check(seed: int, B: int):
    """A directory block of the inode whose seed this is: a leaf with its dirent tail
    (ext4_dirblock_csum) or an htree root/node with its dx_tail (ext4_dx_csum)."""
    def check(data: bytes) -> bool:
        if len(data) < B:
            return False
        t = B - E.DIR_TAIL_SIZE
        if _u32(data, t) == 0 and _u16(data, t + 4) == E.DIR_TAIL_SIZE and data[t + 6] == 0 \
                and data[t + 7] == E.EXT4_FT_DIR_CSUM:
            return crc32c_raw(seed, data[:t]) == _u32(data, t + 8)
        for co in (E.DX_ROOT_COUNT_OFFSET, E.DX_NODE_COUNT_OFFSET):
            limit, count = _u16(data, co), _u16(data, co + 2)
            tail = co + limit * E.DX_ENTRY_SIZE
            if count == 0 or count > limit or tail + 8 > B:
                continue
            c = crc32c_raw(seed, data[:co + count * E.DX_ENTRY_SIZE])
            c = crc32c_raw(c, data[tail:tail + 4])
            c = crc32c_raw(c, b"\0\0\0\0")
            if c == _u32(data, tail + 4):
                return True
        return False
    return check


def _extent_check(seed: int, B: int, depth: int, first: int):
    """An extent tree block of the inode whose seed this is, at the depth its parent index says,
    starting at the logical block its parent index entry names (ext4_extent_block_csum)."""
    def check(data: bytes) -> bool:
        if len(data) < 12 or _u16(data, 0) != E.EXT4_EXT_MAGIC:
            return False
        entries, mx, d = _u16(data, 2), _u16(data, 4), _u16(data, 6)
        tail = 12 + 12 * mx
        if d != depth or entries == 0 or entries > mx or tail + 4 > min(B, len(data)):
            return False
        if _u32(data, 12) != first:
            return False
        return crc32c_raw(seed, data[:tail]) == _u32(data, tail)
    return check


def _super_groups(fs) -> list[int] | range:
    """Groups holding a superblock copy (ext4_bg_has_super over all groups, cheaply)."""
    if fs.compat & E.COMPAT_SPARSE_SUPER2:
        gs = {0} | {int(g) for g in fs.sb.s_backup_bgs if 0 < g < fs.ngroups}
        return sorted(gs)
    if not fs.ro_compat & E.RO_COMPAT_SPARSE_SUPER:
        return range(fs.ngroups)
    gs = {0, 1} if fs.ngroups > 1 else {0}
    for base in (3, 5, 7):
        p = base
        while p < fs.ngroups:
            gs.add(p)
            p *= base
    return sorted(gs)
