"""A Python model of what blktap's libvhd and tapdisk write into an LV, step by step.

vhd-util is not installable here, so every operation sm runs through it is modelled from the
source (xapi-project/blktap, cited per function) and writes the same bytes to the same LV
offsets. The model keeps libvhd's in-memory context (footer, header, BAT, batmap, bitmaps) and
writes through an `Lv` (byte offsets inside the LV, mapped onto the image through the PE map
lvm2 itself reports), so whatever the LV held before stays wherever libvhd/tapdisk does not
write. Structures are encoded with core.structs.vhd (declared once, from blktap's vhd.h).

Facts modelled (all from xapi-project/blktap):
* vhd/lib/libvhd.c `__vhd_create` with `mbytes` (sm passes `-S MSIZE_MB`, 2 TiB): BAT and batmap
  sized for 2 TiB (`vhd_initialize_header`: max_bat_size from mbytes), `vhd_create_batmap`
  (header right after the BAT, map after it), `vhd_create_bat` (all DD_BLK_UNUSED), parent
  locators after the batmap for a snapshot (`vhd_write_parent_locators`), footer copy at 0,
  header at 512, and (on a block device, `ctx.is_block`) the footer in the LV's last sector.
* `vhd_write_footer`: on a block device at the device end (`vhd_footer_offset_at_eof`) AND the
  copy at offset 0; `vhd_set_phys_size` (vhd-util modify -s): the footer at `size - 512` only.
* `vhd_set_virt_size` (vhd-util resize -f, vhd-util-resize.c `vhd_dynamic_grow_fast`):
  curr_size and geometry change, orig_size does not; written with `vhd_write_footer`.
* drivers/block-vhd.c, tapdisk on LVM (`_vhd_open`: "pre-allocate for all but NFS and LVM
  storage", so no VHD_FLAG_OPEN_PREALLOCATE): `find_next_free_block`, `update_bat` ->
  `reserve_new_block` + `schedule_zero_bm_write` (zeroes the alignment gap and the bitmap
  sector only), `schedule_bat_write` (the one BAT sector holding the entry), the data write,
  `schedule_bitmap_write`; batmap bit set when the bitmap is full
  (`finish_bitmap_transaction`); a write starting a full block rewrites the page ending at its
  bitmap (`schedule_redundant_bm_write`); footer and batmap written at close (`_vhd_close`).
* libvhd `__vhd_io_dynamic_write` / `__vhd_io_allocate_block` (vhd-util coalesce): a new block
  at `vhd_end_of_data`, zero-filled (gap + bitmap + data) unless the write covers the whole
  block (then nothing is zeroed, and the stale bitmap sector is read, OR-ed and written back),
  the whole BAT written, bitmap read-modify-write, batmap set when full, footer after each call.
* vhd_change_parent (vhd-util modify -p): locators rewritten in place, header rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.structs import vhd as S

SECTOR = 512
BLOCK = S.VHD_BLOCK_BYTES                    # vhd.h VHD_BLOCK_SIZE
SPB = BLOCK // SECTOR                       # sectors per block
BM_SECS = 1                                 # block-vhd.c: secs_round_up_no_zero(spb >> 3)
SPP = 4096 // SECTOR                        # block-vhd.c: getpagesize() >> VHD_SECTOR_SHIFT
MSIZE = 2 << 40                             # sm lvhdutil.MSIZE (MSIZE_MB = 2 TiB)
TABLE_OFFSET = 3 * SECTOR                   # libvhd vhd_initialize_header: 1 ftr + 2 hdr
MAX_BAT = MSIZE // BLOCK                    # __vhd_create: blks from mbytes
BAT_BYTES = S.roundup(MAX_BAT * 4, SECTOR)
BATMAP_HDR_OFF = TABLE_OFFSET + BAT_BYTES   # libvhd vhd_batmap_header_offset
BATMAP_OFF = BATMAP_HDR_OFF + SECTOR        # vhd_create_batmap: header padded to a sector
BATMAP_SECS = -(-((MAX_BAT + 7) >> 3) // SECTOR)
END_OF_BATMAP = BATMAP_OFF + BATMAP_SECS * SECTOR
UNUSED = S.DD_BLK_UNUSED


def dm_name(vg: str, lv: str) -> str:
    """blktap vhd/lib/canonpath.c `canonpath`: /dev/VG/LV -> /dev/mapper/<VG-LV, dashes doubled>."""
    return vg.replace("-", "--") + "-" + lv.replace("-", "--")


class Lv:
    """Byte I/O inside one LV: offsets map through the LV's current PE list onto the image."""

    def __init__(self, sr, name: str):
        self.sr = sr
        self.name = name

    @property
    def size(self) -> int:
        return len(self.sr.maps[self.name]) * self.sr.extent

    def _pieces(self, off: int, n: int):
        pes = self.sr.maps[self.name]
        E = self.sr.extent
        if off < 0 or off + n > len(pes) * E:
            raise ValueError(f"{self.name}: I/O at {off}+{n} past the LV end {len(pes) * E}")
        while n > 0:
            le, within = divmod(off, E)
            take = min(n, E - within)
            yield self.sr.pe_offset(pes[le]) + within, take
            off += take
            n -= take

    def write(self, off: int, data: bytes) -> None:
        f = self.sr.image
        pos = 0
        for at, take in self._pieces(off, len(data)):
            f.seek(at)
            f.write(data[pos:pos + take])
            pos += take

    def read(self, off: int, n: int) -> bytes:
        f = self.sr.image
        out = bytearray()
        for at, take in self._pieces(off, n):
            f.seek(at)
            out += f.read(take).ljust(take, b"\0")
        return bytes(out)


@dataclass
class Vhd:
    """libvhd's context for one LVHD VHD (what `vhd_open` would read back)."""

    uid: bytes
    curr_size: int
    orig_size: int
    timestamp: int
    disk_type: int
    hidden: int = 0
    parent_uid: bytes = bytes(16)
    parent_ts: int = 0
    parent_name: str = ""
    locators: list[dict] = field(default_factory=list)
    bat: np.ndarray = field(default_factory=lambda: np.full(MAX_BAT, UNUSED, dtype=np.uint32))
    batmap: np.ndarray = field(default_factory=lambda: np.zeros(BATMAP_SECS * SECTOR * 8, bool))
    bitmaps: dict[int, np.ndarray] = field(default_factory=dict)

    # -- encodings (libvhd vhd_footer_out / vhd_header_out) --------------------------------
    def footer(self) -> bytes:
        c, h, s = S.chs_for_size(self.curr_size)
        return S.build_footer(
            cookie=S.HD_COOKIE, features=S.HD_RESERVED, ff_version=S.HD_FF_VERSION,
            data_offset=SECTOR, timestamp=self.timestamp, crtr_app=S.CREATOR_TAP,
            crtr_ver=S.TAP_VERSION_1_3, crtr_os=0, orig_size=self.orig_size,
            curr_size=self.curr_size, geometry=S.geometry_word(c, h, s), type=self.disk_type,
            uuid=self.uid, saved=0, hidden=self.hidden)

    def header(self) -> bytes:
        return S.build_header(
            cookie=S.DD_COOKIE, data_offset=S.DD_NEXT_OFFSET, table_offset=TABLE_OFFSET,
            hdr_ver=S.DD_VERSION, max_bat_size=MAX_BAT, block_size=BLOCK,
            prt_uuid=self.parent_uid, prt_ts=self.parent_ts,
            prt_name=S.encode_utf16be_name(self.parent_name), loc=self.locators)

    def batmap_bytes(self) -> bytes:
        return np.packbits(self.batmap).tobytes()

    def batmap_header(self) -> bytes:
        # libvhd vhd_checksum_batmap: over curr_size >> (VHD_BLOCK_SHIFT + 3) bytes, in sectors
        n = S.batmap_checksum_length(self.curr_size)
        return S.build_batmap_header(BATMAP_OFF, BATMAP_SECS,
                                     S.batmap_checksum(self.batmap_bytes()[:n]))

    # -- geometry of the allocated data -------------------------------------------------------
    def end_of_headers(self) -> int:
        """libvhd vhd_end_of_headers: max of header, BAT, batmap and locator ends (bytes)."""
        end = END_OF_BATMAP
        for loc in self.locators:
            end = max(end, loc["data_offset"] + loc["data_space"])
        return end

    def end_of_data(self) -> int:
        """libvhd vhd_end_of_data: past the last allocated block (bytes)."""
        used = self.bat[self.bat != UNUSED]
        end = self.end_of_headers() // SECTOR
        if used.size:
            end = max(end, int(used.max()) + SPB + BM_SECS)
        return end * SECTOR

    def phys_size(self) -> int:
        """libvhd vhd_get_phys_size (vhd-util query -s): end of data + the footer."""
        return self.end_of_data() + SECTOR

    def allocated(self) -> list[int]:
        return [int(b) for b in np.flatnonzero(self.bat != UNUSED)]


# -- vhd-util operations as sm calls them ------------------------------------------------------

def _write_footer(lv: Lv, v: Vhd) -> None:
    """libvhd vhd_write_footer on a block device: at the device end, then the copy at 0."""
    ftr = v.footer()
    lv.write(lv.size - SECTOR, ftr)
    lv.write(0, ftr)


def _write_batmap(lv: Lv, v: Vhd) -> None:
    """libvhd vhd_write_batmap: the map, then the header with its checksum."""
    lv.write(BATMAP_OFF, v.batmap_bytes())
    lv.write(BATMAP_HDR_OFF, v.batmap_header())


def vhd_create(lv: Lv, size: int, uid: bytes, timestamp: int) -> Vhd:
    """`vhd-util create -n LV -s MB -S MSIZE_MB` (sm vhdutil.create; libvhd __vhd_create)."""
    size = -(-size // BLOCK) * BLOCK
    v = Vhd(uid, size, size, timestamp, S.HD_TYPE_DYNAMIC)
    _write_batmap(lv, v)                                   # vhd_create_batmap
    lv.write(TABLE_OFFSET, S.build_bat(v.bat))             # vhd_create_bat
    lv.write(0, v.footer())                                # vhd_write_footer_at(.., 0)
    lv.write(SECTOR, v.header())                           # vhd_write_header_at(.., 512)
    lv.write(lv.size - SECTOR, v.footer())                 # is_block: footer at the end
    return v


def _locator(code: int, rel: str) -> bytes:
    """libvhd vhd_macx_encode_location / vhd_w2u_encode_location."""
    if code == S.PLAT_CODE_MACX:
        return ("file://" + rel).encode("ascii")
    path = ".\\" + rel[2:] if rel.startswith("./") else rel
    return path.replace("/", "\\").encode("utf-16-le")


def _write_locators(lv: Lv, v: Vhd, rel: str, offsets: list[int] | None = None) -> None:
    """libvhd vhd_write_parent_locators (MacX, W2ku, W2ru after the batmap) or, with
    `offsets`, vhd_change_parent's rewrite in place; data_space holds bytes (MSFT compatible)."""
    off = END_OF_BATMAP
    locs = []
    for i, code in enumerate((S.PLAT_CODE_MACX, S.PLAT_CODE_W2KU, S.PLAT_CODE_W2RU)):
        at = offsets[i] if offsets else off
        payload = _locator(code, rel)
        space = S.roundup(len(payload), SECTOR)
        lv.write(at, payload + bytes(space - len(payload)))
        locs.append(dict(code=code, data_space=space, data_len=len(payload), res=0,
                         data_offset=at))
        off = at + space
    v.locators = locs


def vhd_snapshot(lv: Lv, parent: Vhd, vg: str, parent_lv: str, uid: bytes, timestamp: int,
                 parent_mtime: int) -> Vhd:
    """`vhd-util snapshot -n LV -p PARENT -S MSIZE_MB` (sm vhdutil.snapshot): __vhd_create of a
    differencing disk; parent name and locators name the parent's /dev/mapper node
    (vhd-util-snapshot.c canonpath; libvhd vhd_initialize_header_parent_name takes its
    basename; relative-path.c relative_path_to gives "./<dm name>")."""
    v = Vhd(uid, parent.curr_size, parent.curr_size, timestamp, S.HD_TYPE_DIFF,
            parent_uid=parent.uid, parent_ts=parent_mtime, parent_name=dm_name(vg, parent_lv))
    _write_batmap(lv, v)
    lv.write(TABLE_OFFSET, S.build_bat(v.bat))
    _write_locators(lv, v, "./" + dm_name(vg, parent_lv))
    lv.write(0, v.footer())
    lv.write(SECTOR, v.header())
    lv.write(lv.size - SECTOR, v.footer())
    return v


def vhd_change_parent(lv: Lv, v: Vhd, parent: Vhd, vg: str, parent_lv: str,
                      parent_mtime: int) -> None:
    """`vhd-util modify -p` (sm vhdutil.setParent; libvhd vhd_change_parent)."""
    v.parent_uid = parent.uid
    v.parent_name = dm_name(vg, parent_lv)
    v.parent_ts = parent_mtime
    _write_locators(lv, v, "./" + dm_name(vg, parent_lv),
                    offsets=[loc["data_offset"] for loc in v.locators])
    lv.write(SECTOR, v.header())


def vhd_set_phys_size(lv: Lv, v: Vhd, size: int) -> None:
    """`vhd-util modify -s SIZE` (sm vhdutil.setSizePhys; libvhd vhd_set_phys_size): refuses
    below the physical size, writes the footer at size - 512 only."""
    if size < v.phys_size():
        raise ValueError(f"new size {size} < phys size {v.phys_size()}")
    lv.write(size - SECTOR, v.footer())


def vhd_set_virt_size_fast(lv: Lv, v: Vhd, size: int) -> None:
    """`vhd-util resize -f` (vhd-util-resize.c vhd_dynamic_grow_fast -> vhd_set_virt_size)."""
    size = -(-size // BLOCK) * BLOCK
    if size // BLOCK > MAX_BAT:
        raise ValueError("not enough metadata space reserved for fast resize")
    if size < v.curr_size:
        raise ValueError("shrinking is refused")
    if size == v.curr_size:
        return
    v.curr_size = size
    _write_footer(lv, v)


def vhd_set_hidden(lv: Lv, v: Vhd, hidden: int = 1) -> None:
    """`vhd-util set -f hidden -v 1` (vhd-util-set-field.c: vhd_write_footer)."""
    v.hidden = hidden
    _write_footer(lv, v)


# -- tapdisk on LVM --------------------------------------------------------------------------

class TapdiskSession:
    """tapdisk's block-vhd driver with a VHD on an LV open read-write (no pre-allocation)."""

    def __init__(self, lv: Lv, v: Vhd):
        self.lv, self.v = lv, v
        self.writes = 0
        # block-vhd.c find_next_free_block
        self.next_db = -(-v.end_of_headers() // SECTOR)
        self.first_db = self.next_db + (SPP - ((self.next_db + BM_SECS) % SPP)) % SPP
        used = v.bat[v.bat != UNUSED]
        if used.size:
            self.next_db = max(self.next_db, int(used.max()) + SPB + BM_SECS)

    def _allocate(self, blk: int) -> None:
        """update_bat -> reserve_new_block, schedule_zero_bm_write, schedule_bat_write."""
        v, lv = self.v, self.lv
        lb_end = self.next_db
        gap = (SPP - ((lb_end + BM_SECS) % SPP)) % SPP
        pbw = lb_end + gap
        if (pbw + BM_SECS + SPB) * SECTOR > lv.size - SECTOR:
            raise ValueError(f"{lv.name}: block {blk} would overwrite the footer (LV too small)")
        lv.write(lb_end * SECTOR, bytes((gap + BM_SECS) * SECTOR))   # zero gap + bitmap only
        v.bat[blk] = pbw
        page = blk - blk % 128                                        # one BAT sector
        lv.write(TABLE_OFFSET + page * 4, S.build_bat(v.bat[page:page + 128]))
        v.bitmaps[blk] = np.zeros(SPB, dtype=bool)
        self.next_db = pbw + SPB + BM_SECS                            # finish_bat_write

    def write(self, sector: int, data: bytes) -> None:
        """One guest write request (sector-aligned), split per block as tapdisk does."""
        v, lv = self.v, self.lv
        if len(data) % SECTOR or (sector * SECTOR + len(data)) > v.curr_size:
            raise ValueError("write outside the virtual disk or not in sectors")
        pos = 0
        while pos < len(data):
            blk, sec = divmod(sector, SPB)
            cnt = min((len(data) - pos) // SECTOR, SPB - sec)
            if v.bat[blk] == UNUSED:
                self._allocate(blk)
            elif sec == 0 and v.batmap[blk] and int(v.bat[blk]) != self.first_db:
                # schedule_redundant_bm_write: one page ending at the bitmap's end, zeros then
                # the all-ones bitmap (padbm_buf), to keep sequential writes sequential
                at = (int(v.bat[blk]) + BM_SECS) * SECTOR - 4096
                lv.write(at, bytes(4096 - SECTOR) + b"\xff" * SECTOR)
            base = int(v.bat[blk])
            lv.write((base + BM_SECS + sec) * SECTOR, data[pos:pos + cnt * SECTOR])
            bm = v.bitmaps.setdefault(blk, np.zeros(SPB, dtype=bool))
            if not bm[sec:sec + cnt].all():                           # schedule_bitmap_write
                bm[sec:sec + cnt] = True
                lv.write(base * SECTOR, np.packbits(bm).tobytes())
                if bm.all():
                    v.batmap[blk] = True                              # set_batmap
            sector += cnt
            pos += cnt * SECTOR
            self.writes += 1

    def close(self) -> None:
        """_vhd_close: footer (end + copy at 0) and batmap when anything was written."""
        if self.writes:
            _write_footer(self.lv, self.v)
            _write_batmap(self.lv, self.v)


# -- libvhd vhd_io_write (vhd-util coalesce) ---------------------------------------------------

def vhd_io_write(lv: Lv, v: Vhd, sector: int, data: bytes) -> None:
    """libvhd __vhd_io_dynamic_write (not sparse: vhd-util coalesce without -s)."""
    pos = 0
    while pos < len(data):
        blk, sec = divmod(sector, SPB)
        cnt = min((len(data) - pos) // SECTOR, SPB - sec)
        if v.bat[blk] == UNUSED:
            # __vhd_io_allocate_block: at vhd_end_of_data, page-aligned data
            end = v.end_of_data() // SECTOR
            gap = (SPP - ((end + BM_SECS) % SPP)) % SPP
            at = end + gap
            if (at + BM_SECS + SPB) * SECTOR > lv.size - SECTOR:
                raise ValueError(f"{lv.name}: coalesce target too small")
            if cnt < SPB:                     # zero-fill unless the whole block is written
                lv.write(end * SECTOR, bytes((BM_SECS + gap + SPB) * SECTOR))
                v.bitmaps[blk] = np.zeros(SPB, dtype=bool)
            else:                             # vhd_read_bitmap reads whatever lies there
                stale = lv.read(at * SECTOR, SECTOR)
                v.bitmaps[blk] = np.unpackbits(np.frombuffer(stale, np.uint8)).astype(bool)
            v.bat[blk] = at
            lv.write(TABLE_OFFSET, S.build_bat(v.bat))            # vhd_write_bat: whole BAT
        base = int(v.bat[blk])
        lv.write((base + BM_SECS + sec) * SECTOR, data[pos:pos + cnt * SECTOR])
        if not v.batmap[blk]:
            bm = v.bitmaps.setdefault(blk, np.zeros(SPB, dtype=bool))
            bm[sec:sec + cnt] = True
            lv.write(base * SECTOR, np.packbits(bm).tobytes())    # vhd_write_bitmap
            if bm.all():
                v.batmap[blk] = True
                _write_batmap(lv, v)
        sector += cnt
        pos += cnt * SECTOR
    _write_footer(lv, v)


def read_block_runs(lv: Lv, v: Vhd, blk: int):
    """What vhd-util-coalesce.c vhd_util_coalesce_block reads from the child: the whole block
    when the batmap says full, else each run of set bitmap bits. Yields (sector, bytes)."""
    base = int(v.bat[blk])
    if v.batmap[blk]:
        yield blk * SPB, lv.read((base + BM_SECS) * SECTOR, BLOCK)
        return
    bm = v.bitmaps[blk]
    idx = np.flatnonzero(np.diff(np.concatenate(([0], bm.astype(np.int8), [0]))))
    for a, b in zip(idx[::2], idx[1::2]):
        yield blk * SPB + int(a), lv.read((base + BM_SECS + int(a)) * SECTOR,
                                          int(b - a) * SECTOR)


def coalesce_onto(child_lv: Lv, child: Vhd, parent_lv: Lv, parent: Vhd) -> int:
    """vhd-util-coalesce.c vhd_util_coalesce_onto: every allocated block of the child, in BAT
    index order, into the parent with vhd_io_write. Returns sectors coalesced."""
    n = 0
    for blk in child.allocated():
        for sector, data in read_block_runs(child_lv, child, blk):
            vhd_io_write(parent_lv, parent, sector, data)
            n += len(data) // SECTOR
    return n


def virtual_read(chain: list[tuple[Lv, Vhd]], size: int) -> bytes:
    """The virtual disk of chain[0] read through its parents (model side, for the truth of base
    copies; leaves are checked against the guest's own disk file)."""
    out = bytearray(size)
    done = np.zeros(size // SECTOR, dtype=bool)
    for lv, v in chain:
        for blk in v.allocated():
            if blk * BLOCK >= size:
                continue
            base = int(v.bat[blk])
            bm = np.ones(SPB, bool) if v.batmap[blk] else v.bitmaps.get(blk, np.zeros(SPB, bool))
            raw = lv.read((base + BM_SECS) * SECTOR, BLOCK)
            lo = blk * SPB
            hi = min(lo + SPB, size // SECTOR)
            take = bm[: hi - lo] & ~done[lo:hi]
            arr = np.frombuffer(raw, np.uint8).reshape(SPB, SECTOR)[: hi - lo]
            view = np.frombuffer(out, np.uint8).reshape(-1, SECTOR)
            view[lo:hi][take] = arr[take]
            done[lo:hi] |= take
    return bytes(out)
