"""An NTFS volume read through `read`: its $Bitmap (allocation) and the structures that
identify themselves (landmarks).

Rules from ntfs-3g (libntfs-3g mst.c ntfs_mst_post_read_fixup: the update sequence array;
runlist.c ntfs_mapping_pairs_decompress: runlists; bootsect.c ntfs_boot_sector_is_ntfs and
mkntfs.c: geometry, the backup boot sector in the partition's last sector, $MFTMirr holding the
first records of $MFT; index.c: INDX blocks addressed by VCN, in sectors when index blocks are
smaller than clusters) and Microsoft's NTFS documentation as the Linux-NTFS project wrote it
down. The records themselves (fixup, runlists, attributes, file names, index entries) are
parsed from bytes by core.guestfs.ntfs_records.

Identity: an MFT record carries its own number (0x2C) and is checked against the directory
index that names it (parent, name, creation time, sequence number); an INDX block carries its
VCN and its entries are checked against the MFT records they name; the first records are checked
against their $MFTMirr copies and vice versa.  Two volumes that mkntfs made identical (same
size, `-T` fake time) have identical system records: no check can tell those apart.
"""

from __future__ import annotations

import bisect
import struct as pystruct

import numpy as np
from construct import ConstructError

from core.structs import ntfs as N
from core.structs.layout import offsets

from .base import (ALLOCATED, SECTOR, UNKNOWN, BudgetExceeded, GuestFs, Landmark, Reader,
                   bits_le, merge_intervals, states_from_units)
from .ntfs_records import (_REC, Attr, FileName, _find, _Runs, _u16, _u32, attributes,
                           file_name, fixup, index_entries)

WALK_BUDGET = 8 << 20           # MFT records + INDX blocks read to cross-check identities
MAX_MFT_BITMAP = 1 << 18        # bytes of $MFT's $BITMAP read (2 M records)
MAX_DIR_INDEX_BLOCKS = 1 << 14  # INDX blocks of one directory looked at
CONTENT_SYSTEM_FILES = (N.FILE_LOGFILE, N.FILE_ATTRDEF, 10)    # 10: $UpCase
BITMAP_PAGE = 4096              # $Bitmap bytes read and memoised together (128 MiB at 4 KiB)

_BOOT = offsets(N.NTFS_BOOT_SECTOR)


class Ntfs(GuestFs):
    kind = "ntfs"

    @property
    def identity(self) -> bytes:
        """The boot sector's volume serial number (mkntfs makes one per volume)."""
        return int(self.serial).to_bytes(8, "little")

    def __init__(self, reader: Reader, disk_size: int, boot: bytes, limit: int) -> None:
        self.r = reader
        self.offset = reader.base
        self.disk_size = disk_size
        self.limit = limit
        self.boot = boot
        b = N.NTFS_BOOT_SECTOR.parse(boot)
        self.bps = b.bytes_per_sector
        spc = b.sectors_per_cluster
        self.cluster = self.bps * (spc if spc <= 0x80 else 1 << (256 - spc))
        self.sectors = b.number_of_sectors
        self.clusters = self.sectors * self.bps // self.cluster
        self.size = self.clusters * self.cluster
        self.mft_lcn, self.mftmirr_lcn = b.mft_lcn, b.mftmirr_lcn
        self.record_size = _unit_size(b.clusters_per_mft_record, self.cluster)
        self.index_size = _unit_size(b.clusters_per_index_record, self.cluster)
        self.serial = b.volume_serial_number
        self._bitmap_pages: dict[int, np.ndarray | None] = {}
        self._walked = False
        self._content: tuple[np.ndarray, np.ndarray, bool] | None = None

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def probe(cls, reader: Reader, disk_size: int, limit: int) -> "Ntfs | None":
        boot = reader.read(0, 512)
        if boot is None or boot[3:11] != N.NTFS_OEM_ID or boot[510:512] != b"\x55\xaa":
            return None
        try:
            b = N.NTFS_BOOT_SECTOR.parse(boot)
        except ConstructError:
            return None
        if not _sane(b, limit):
            return None
        fs = cls(reader, disk_size, boot, limit)
        if fs.mft_lcn >= fs.clusters or fs.mftmirr_lcn >= fs.clusters:
            return None
        if not fs._load_system_files():
            return None
        return fs

    def _load_system_files(self) -> bool:
        rec0 = self._read_fixed(self.mft_lcn * self.cluster, self.record_size, N.MAGIC_FILE)
        if rec0 is None:
            return False
        attrs = attributes(rec0)
        data = _find(attrs, N.AT_DATA)
        if data is None or data.resident or not data.runs:
            return False
        self.mft_runs = _Runs(data.runs)
        self.mft_records = data.initialized_size // self.record_size
        self.mft_bitmap_attr = _find(attrs, N.AT_BITMAP)
        rec6 = self.read_record(N.FILE_BITMAP)
        if rec6 is None:
            return False
        bm = _find(attributes(rec6), N.AT_DATA)
        if bm is None or bm.resident or bm.data_size * 8 < self.clusters:
            return False
        self.bitmap_runs = _Runs(bm.runs)
        self.bitmap_size = bm.data_size
        return True

    def _read_fixed(self, off: int, size: int, magic: bytes, budget: int | None = None):
        raw = self.r.read(off, size, budget)
        return None if raw is None else fixup(raw, size, magic)

    def _attr_read(self, runs: _Runs, off: int, length: int, budget: int | None = None):
        parts = []
        for disk, n in runs.pieces(off, length, self.cluster):
            if disk is None:
                return None
            p = self.r.read(disk, n, budget)
            if p is None:
                return None
            parts.append(p)
        return b"".join(parts)

    def record_offset(self, n: int) -> int | None:
        """File-system offset of MFT record n when it lies in one piece, else None."""
        pieces = list(self.mft_runs.pieces(n * self.record_size, self.record_size, self.cluster))
        if len(pieces) != 1 or pieces[0][0] is None:
            return None
        return pieces[0][0]

    def read_record(self, n: int, budget: int | None = None) -> bytes | None:
        raw = self._attr_read(self.mft_runs, n * self.record_size, self.record_size, budget)
        return None if raw is None else fixup(raw, self.record_size, N.MAGIC_FILE)

    # -- allocation ------------------------------------------------------------------------------
    def _fs_states(self, first_sector: int, end_sector: int) -> np.ndarray:
        cs = self.cluster
        c0 = (first_sector * SECTOR - self.offset) // cs
        c1 = -(-(end_sector * SECTOR - self.offset) // cs)
        units = np.full(c1 - c0, ALLOCATED, dtype=np.int8)
        per_page = BITMAP_PAGE * 8
        for page in range(c0 // per_page, (min(c1, self.clusters) - 1) // per_page + 1):
            a = max(c0, page * per_page)
            b = min(c1, self.clusters, (page + 1) * per_page)
            if b <= a:
                continue
            bits = self._bitmap_page(page)
            if bits is None:
                units[a - c0:b - c0] = UNKNOWN
            else:
                units[a - c0:b - c0] = bits[a - page * per_page:b - page * per_page]
        return states_from_units(first_sector, end_sector, self.offset, cs, c0, units)

    def _bitmap_page(self, page: int) -> np.ndarray | None:
        if page not in self._bitmap_pages:
            off = page * BITMAP_PAGE
            n = min(BITMAP_PAGE, self.bitmap_size - off)
            raw = self._attr_read(self.bitmap_runs, off, n) if n > 0 else None
            self._bitmap_pages[page] = None if raw is None else bits_le(raw, n * 8)
        return self._bitmap_pages[page]

    # -- the walk: who is named where ------------------------------------------------------------
    def _walk(self) -> None:
        """Read the in-use MFT records and the directories' index blocks (within WALK_BUDGET):
        `mft_names[n]` = the names record n gives itself, `index_names[n]` = the names the
        directories give record n, and the INDX blocks found (for landmarks)."""
        if self._walked:
            return
        self._walked = True
        self.mft_names: dict[int, set[FileName]] = {}
        self.mft_seq: dict[int, int] = {}
        self.index_names: dict[int, set[tuple[int, FileName]]] = {}
        self.indx: list[tuple[int, int, int, int]] = []     # (fs offset, dir ref, vcn, size)
        in_use = self._mft_in_use()
        self.in_use = np.arange(0, dtype=np.int32) if in_use is None else in_use
        self.mirror: dict[int, bytes] = {}
        self.mft_head: dict[int, bytes] = {}
        self.mirror_count = 0
        self.data: list[tuple[int, int]] = []       # content byte intervals
        # an $MFT bitmap that cannot be read says nothing is in use: not "no content"
        self.walk_complete = in_use is not None
        dirs: list[tuple[int, list[Attr]]] = []
        budget = self.r.spent + WALK_BUDGET
        try:
            for n in self.in_use:
                n = int(n)
                rec = self.read_record(n, budget)
                if rec is None or _u32(rec, N.MFT_RECORD_NUMBER_OFFSET) != n:
                    self.walk_complete = False
                    continue
                self.mft_seq[n] = _u16(rec, _REC["sequence_number"])
                attrs = attributes(rec)
                at = self.record_offset(n)
                if at is not None:
                    self.data.append((at, at + self.record_size))
                self._note_streams(n, attrs, budget)
                names = {fn for a in attrs if a.type == N.AT_FILE_NAME and a.resident
                         for fn in [file_name(a.value)] if fn is not None}
                self.mft_names[n] = names
                if _u16(rec, _REC["flags"]) & N.MFT_RECORD_IS_DIRECTORY:
                    dirs.append((n, attrs))
            for n, attrs in dirs:
                self._walk_dir(n, attrs, budget)
            self._read_mirror(budget)
        except BudgetExceeded:
            self.walk_complete = False
        self.indx.sort()
        self._indx_at = [t[0] for t in self.indx]

    def _note_streams(self, n: int, attrs: list[Attr], budget: int) -> None:
        """Content intervals of record n's non-resident attributes, up to what was initialised
        (sparse runs excluded).  Of the system files only $LogFile, $AttrDef and $UpCase are
        full: $MFT is counted record by record, $Bitmap and $Secure:$SDS are mostly zeros on a
        young volume, $Boot beyond its first sector too, $BadClus is sparse."""
        if n < N.FILE_FIRST_USER and n not in CONTENT_SYSTEM_FILES:
            return
        for a in attrs:
            if a.resident or a.type not in (N.AT_DATA, N.AT_BITMAP, N.AT_ATTRIBUTE_LIST) \
                    and a.type != 0x50:      # $SECURITY_DESCRIPTOR
                continue
            if a.lowest_vcn != 0:
                continue                   # an extension's piece: bounded to the base's sizes
            size = max(0, min(a.initialized_size, a.data_size))
            for disk, length in _Runs(a.runs).pieces(0, size, self.cluster):
                if disk is not None:
                    self.data.append((disk, disk + length))

    def _content_intervals(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Content: the boot sector, in-use MFT records, $MFTMirr, INDX blocks in use, and the
        initialised part of every non-resident stream of in-use records (see _note_streams)."""
        if self._content is None:
            self._walk()
            pairs = list(self.data) + [(0, 512)]
            pairs += [(off, off + size) for off, _, _, size in self.indx]
            mir = self.mftmirr_lcn * self.cluster
            pairs.append((mir, mir + self.mirror_count * self.record_size))
            starts, ends = merge_intervals(pairs)
            self._content = (starts, ends, self.walk_complete)
        return self._content

    def _mft_in_use(self) -> np.ndarray | None:
        """Record numbers the $MFT's $BITMAP marks in use (bounded); None when it cannot be
        read."""
        a = self.mft_bitmap_attr
        count = self.mft_records
        if a is None:
            return np.arange(min(count, 16))
        nbytes = min(-(-count // 8), MAX_MFT_BITMAP)
        if a.resident:
            raw = a.value[:nbytes]
        else:
            raw = self._attr_read(_Runs(a.runs), 0, nbytes)
            if raw is None:
                return None
        bits = bits_le(raw, min(count, len(raw) * 8))
        return np.flatnonzero(bits).astype(np.int32)

    def _walk_dir(self, n: int, attrs: list[Attr], budget: int) -> None:
        ref = n | (self.mft_seq.get(n, 0) << 48)
        root = _find(attrs, N.AT_INDEX_ROOT, "$I30")
        if root is None or len(root.value) < 0x20:
            return
        for child, fn in index_entries(root.value, 0x10) or []:
            self.index_names.setdefault(child & N.MFT_REF_MASK, set()).add((child, fn))
        alloc = _find(attrs, N.AT_INDEX_ALLOCATION, "$I30")
        bmp = _find(attrs, N.AT_BITMAP, "$I30")
        if alloc is None or alloc.resident or bmp is None:
            return
        runs = _Runs(alloc.runs)
        if bmp.resident:
            bits = bits_le(bmp.value, len(bmp.value) * 8)
        else:
            raw = self._attr_read(_Runs(bmp.runs), 0, min(bmp.data_size, 1 << 16), budget)
            bits = bits_le(raw, len(raw) * 8) if raw is not None else np.zeros(0, bool)
        ibs = self.index_size
        nblocks = alloc.data_size // ibs
        vcn_unit = self.cluster if ibs >= self.cluster else N.NTFS_BLOCK_SIZE
        for k in np.flatnonzero(bits[:min(nblocks, MAX_DIR_INDEX_BLOCKS)]).tolist():
            pieces = list(runs.pieces(k * ibs, ibs, self.cluster))
            if len(pieces) != 1 or pieces[0][0] is None:
                continue
            off = pieces[0][0]
            vcn = k * ibs // vcn_unit
            self.indx.append((off, ref, vcn, ibs))
            blk = self._read_fixed(off, ibs, N.MAGIC_INDX, budget)
            if blk is None or pystruct.unpack_from("<q", blk, 0x10)[0] != vcn:
                continue
            for child, fn in index_entries(blk, N.INDEX_BLOCK_HEADER_OFFSET) or []:
                self.index_names.setdefault(child & N.MFT_REF_MASK, set()).add((child, fn))

    def _read_mirror(self, budget: int) -> None:
        """$MFTMirr's copies of the first records (as many as its $DATA holds, at least 1)."""
        rec1 = self.read_record(N.FILE_MFTMIRR, budget)
        data = _find(attributes(rec1), N.AT_DATA) if rec1 is not None else None
        count = max(1, min(16, data.data_size // self.record_size)) if data is not None else 4
        self.mirror_count = count
        self.mft_head: dict[int, bytes] = {}
        for i in range(count):
            rec = self.read_record(i, budget)
            if rec is not None:
                self.mft_head[i] = rec
            off = self.mftmirr_lcn * self.cluster + i * self.record_size
            rec = self._read_fixed(off, self.record_size, N.MAGIC_FILE, budget)
            if rec is not None:
                self.mirror[i] = rec

    # -- landmarks -------------------------------------------------------------------------------
    def _landmarks(self, start: int, length: int) -> list[Landmark]:
        """ntfs-boot-sector, ntfs-backup-boot-sector, ntfs-mft-record (cross-checked with the
        directory index naming it, or with its $MFTMirr copy), ntfs-mft-record-unnamed (in use,
        numbered, no name to cross-check), ntfs-mftmirr-record, ntfs-indx (VCN and entries
        cross-checked with the MFT)."""
        self._walk()
        a, b = start - self.offset, start - self.offset + length
        out: list[Landmark] = []
        def add(off: int, size: int, what: str, check) -> None:
            if a <= off and off + size <= b:
                out.append(Landmark(self.offset + off, size, what, check))
        add(0, 512, "ntfs-boot-sector", self._boot_check())
        backup = self.sectors * self.bps
        if backup + 512 <= self.limit:
            add(backup, 512, "ntfs-backup-boot-sector", self._boot_check())
        rs = self.record_size
        for v0, lcn, n in self.mft_runs.runs:
            if lcn is None:
                continue
            lo, hi = lcn * self.cluster, (lcn + n) * self.cluster
            if hi <= a or lo >= b:
                continue
            r0 = (v0 * self.cluster + max(0, a - lo) + rs - 1) // rs
            r1 = (v0 * self.cluster + min(hi, b) - lo) // rs
            i = int(np.searchsorted(self.in_use, r0))
            while i < self.in_use.size and self.in_use[i] < r1:
                rec = int(self.in_use[i])
                off = self.record_offset(rec)
                if off is not None:
                    what, check = self._record_check(rec)
                    add(off, rs, what, check)
                i += 1
        mir = self.mftmirr_lcn * self.cluster
        for k in range(self.mirror_count):
            add(mir + k * rs, rs, "ntfs-mftmirr-record", self._mirror_check(k))
        i = bisect.bisect_left(self._indx_at, a)
        while i < len(self.indx) and self.indx[i][0] < b:
            off, ref, vcn, size = self.indx[i]
            add(off, size, "ntfs-indx", self._indx_check(ref, vcn, size))
            i += 1
        out.sort(key=lambda lm: lm.offset)
        return out

    def _boot_check(self):
        ident = self.boot[:N.BOOT_IDENTITY_END]
        def check(data: bytes) -> bool:
            return len(data) >= 512 and data[:N.BOOT_IDENTITY_END] == ident and \
                data[510:512] == b"\x55\xaa"
        return check

    def _record_check(self, n: int):
        named = self.index_names.get(n, set())
        copy = self.mirror.get(n)
        rs = self.record_size
        def check(data: bytes) -> bool:
            rec = fixup(data, rs, N.MAGIC_FILE)
            if rec is None or _u32(rec, N.MFT_RECORD_NUMBER_OFFSET) != n or \
                    not _u16(rec, _REC["flags"]) & N.MFT_RECORD_IN_USE:
                return False
            if copy is not None and not _same_record(rec, copy):
                return False
            if named:
                seq = _u16(rec, _REC["sequence_number"])
                mine = {fn for a in attributes(rec) if a.type == N.AT_FILE_NAME and a.resident
                        for fn in [file_name(a.value)] if fn is not None}
                return any((ref >> 48) == seq and fn in mine for ref, fn in named)
            return True
        what = "ntfs-mft-record" if named or copy is not None else "ntfs-mft-record-unnamed"
        return what, check

    def _mirror_check(self, k: int):
        rs = self.record_size
        original = self.mft_head.get(k)
        def check(data: bytes) -> bool:
            rec = fixup(data, rs, N.MAGIC_FILE)
            if rec is None or _u32(rec, N.MFT_RECORD_NUMBER_OFFSET) != k:
                return False
            return original is None or _same_record(rec, original)
        return check

    def _indx_check(self, ref: int, vcn: int, size: int):
        mft_names, mft_seq = self.mft_names, self.mft_seq
        def check(data: bytes) -> bool:
            blk = fixup(data, size, N.MAGIC_INDX)
            if blk is None or pystruct.unpack_from("<q", blk, 0x10)[0] != vcn:
                return False
            entries = index_entries(blk, N.INDEX_BLOCK_HEADER_OFFSET)
            if not entries:
                return False
            for child, fn in entries:
                if fn.parent != ref:
                    return False
                n = child & N.MFT_REF_MASK
                if n in mft_names and (fn not in mft_names[n] or
                                       mft_seq.get(n) != child >> 48):
                    return False
            return True
        return check


def _same_record(a: bytes, b: bytes) -> bool:
    """Two fixed-up copies of one record agree (their update sequence numbers may differ)."""
    if len(a) != len(b):
        return False
    usa_ofs, usa_count = _u16(a, 4), _u16(a, 6)
    end = usa_ofs + 2 * usa_count
    return a[:usa_ofs] == b[:usa_ofs] and a[end:] == b[end:]


def _unit_size(n: int, cluster: int) -> int:
    """clusters_per_mft_record / clusters_per_index_record: clusters, or 2^-n bytes."""
    return n * cluster if n > 0 else 1 << min(31, -n)


def _sane(b, limit: int) -> bool:
    """Geometry a real formatter writes (ntfs_boot_sector_is_ntfs), fitting its room."""
    bps = b.bytes_per_sector
    if bps < 256 or bps > 4096 or bps & (bps - 1):
        return False
    spc = b.sectors_per_cluster
    if spc == 0 or (spc <= 0x80 and spc & (spc - 1)) or (0x80 < spc < 0xF4):
        return False
    cluster = bps * (spc if spc <= 0x80 else 1 << (256 - spc))
    if cluster > 2 << 20 or cluster < 512:
        return False
    for n in (b.clusters_per_mft_record, b.clusters_per_index_record):
        if n == 0 or (n > 0 and n & (n - 1)) or n < -31 or n > 64:
            return False
        size = _unit_size(n, cluster)
        if size < 256 or size > (64 << 10) or size % N.NTFS_BLOCK_SIZE:
            return False
    if b.number_of_sectors <= 0 or b.number_of_sectors * bps // cluster < 16:
        return False
    return b.number_of_sectors * bps <= 4 * max(limit, 1 << 20) and b.mft_lcn >= 0 and \
        b.mftmirr_lcn >= 0
