"""Anchors: PEs that start with a VHD head, and what their metadata says about the LV.

A PE whose first sector is a VHD footer copy (`conectix`) followed by a dynamic header
(`cxsparse`) is logical extent 0 of some VHD LV (formats.md 4.5). Its footer gives the unique id
that the primary footer at the LV end repeats, its header gives the BAT: where, in LV space,
every allocated block's bitmap sits. An LVHD VHD's BAT (1,048,576 entries from 1536) runs 1536
bytes into the LV's second extent; the entries there describe blocks beyond 2047 GiB and only
matter for disks that large, so they are read once that extent is placed (`complete_bat`).

Everything read from disk is bounded before it drives an allocation: entry counts, block sizes
and table offsets outside what the two first extents can hold make the anchor implausible
(a finding), and BAT entries pointing inside the metadata, past the PV, or onto another block
are dropped with a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.findings import Finding
from core.structs import vhd as S
from core.vhd.head import HEAD_BYTES, HeadLimits, parse_head, read_footer
from core.xen import dm_name_parts

# what an anchor accepts (core.vhd.head parses and checks the head): power-of-two blocks of
# 4 KiB..64 MiB, BATs of up to 2^24 entries, 64 TiB (far beyond VHD's 2040 GiB, still sane)
ANCHOR_LIMITS = HeadLimits(min_block_bytes=4096, max_block_bytes=64 << 20,
                           power_of_two_blocks=True, max_bat_entries=1 << 24,
                           max_virtual_bytes=1 << 46)


@dataclass
class VhdAnchor:
    """LE 0 of a VHD found at PE `pe`, with its parsed head and BAT."""

    pe: int
    uid: bytes
    disk_type: int
    creator: bytes
    creator_version: int
    current_size: int
    hidden: bool
    parent_uid: bytes
    table_offset: int
    max_entries: int
    block_size: int
    bat: np.ndarray                       # uint32, entries for the blocks of current_size
    bat_complete: bool                    # False until the part in LE 1 has been read
    bat_split: int                        # index of the first entry stored in LE 1
    has_batmap: bool
    batmap_offset: int                    # LV offset of the batmap header (0: none)
    batmap: np.ndarray | None = None      # bool per block (set = block full), once read
    blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # block indices
    bitmap_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # LV bytes
    meta_end: int = 0
    parent_name: str = ""                 # header parent name (blktap: the parent's dm name)
    timestamp: int = 0                    # footer creation time (seconds since 2000-01-01)
    plausible: bool = True
    findings: list[Finding] = field(default_factory=list)

    @property
    def uid_hex(self) -> str:
        return self.uid.hex()

    @property
    def uid_str(self) -> str:
        return S.format_uuid(self.uid)

    @property
    def lvhd(self) -> bool:
        """Laid out by blktap (sm/tapdisk): 4 KiB-aligned blocks, footer at the LV end."""
        return self.creator == S.CREATOR_TAP or self.has_batmap

    @property
    def entries_needed(self) -> int:
        return min(self.max_entries, -(-self.current_size // self.block_size))

    @property
    def block_span(self) -> int:
        """Bytes of one block in the LV: bitmap + data."""
        return S.bitmap_bytes(self.block_size) + self.block_size

    @property
    def data_end(self) -> int:
        """LV offset just after the last allocated block (or the metadata)."""
        if len(self.bitmap_offsets):
            return int(self.bitmap_offsets.max()) + self.block_span
        return self.meta_end

    def to_json(self) -> dict:
        return {"pe": self.pe, "vhd_uuid": self.uid_str, "disk_type": self.disk_type,
                "creator": self.creator.decode("latin-1").rstrip("\0"),
                "virtual_bytes": self.current_size, "blocks": int(len(self.blocks)),
                "parent_uuid": None if not any(self.parent_uid) else S.format_uuid(self.parent_uid),
                "plausible": self.plausible}


def parse_anchor(pe: int, read_lv0, extent_bytes: int, lv_limit: int,
                 data_offset_abs: int = 0) -> VhdAnchor | None:
    """Parse the VHD head at the start of a PE. `read_lv0(off, n)` reads inside that PE.

    Returns None when the bytes are no VHD head at all; an anchor with `plausible=False` and
    findings when the head parses but its numbers cannot be a VHD LV's.
    """
    head = parse_head(read_lv0(0, HEAD_BYTES))
    if head is None:
        return None
    ftr, hdr = head.footer.parsed, head.header.parsed
    findings: list[Finding] = []
    at = data_offset_abs

    def bad(kind: str, msg: str, **details) -> None:
        findings.append(Finding(kind, at, "warning", f"PE {pe}: {msg}", dict(details, pe=pe)))

    if not head.footer.checksum_ok:
        bad("vhd-footer-checksum", "VHD footer copy checksum does not match")
    if not head.header.checksum_ok:
        bad("vhd-header-checksum", "VHD dynamic header checksum does not match")
    bs, n_max, tab = head.block_bytes, head.bat_entries, head.table_offset
    cur = head.virtual_bytes
    problems = head.problems(ANCHOR_LIMITS)
    plausible = not problems
    for name in ("block_size", "bat_entries", "virtual_size"):
        if name in problems:
            bad("vhd-anchor-implausible", problems[name])
    if "block_size" in problems:
        bs = S.VHD_BLOCK_BYTES
    if "bat_entries" in problems:
        n_max = 0
    if "virtual_size" in problems:
        cur = 0
    if tab < HEAD_BYTES or tab % S.SECTOR \
            or tab + 4 * max(1, min(n_max, -(-cur // bs))) > 2 * extent_bytes:
        bad("vhd-anchor-implausible", f"BAT at {tab} outside the first two extents")
        plausible = False
    if "disk_type" in problems:
        bad("vhd-anchor-implausible", problems["disk_type"])
    needed = min(n_max, -(-cur // bs)) if plausible else 0
    bat_end = tab + 4 * needed
    stored_here = max(0, min(bat_end, extent_bytes) - tab) // 4 if plausible else 0
    bat = np.full(needed, S.DD_BLK_UNUSED, dtype=np.uint32)
    if stored_here:
        bat[:stored_here] = S.parse_bat(read_lv0(tab, stored_here * 4))
    creator = bytes(ftr.crtr_app)
    has_batmap = (creator == S.CREATOR_TAP and int(ftr.crtr_ver) >= 0x00010002) or \
        (plausible and tab + S.roundup(n_max * 4, S.SECTOR) > extent_bytes)
    batmap_offset = tab + S.roundup(n_max * 4, S.SECTOR) if has_batmap else 0
    meta_end = tab + S.roundup(n_max * 4, S.SECTOR)
    if has_batmap:
        meta_end += S.BATMAP_HEADER_SIZE + S.roundup(-(-n_max // 8), S.SECTOR)
    anchor = VhdAnchor(pe=pe, uid=bytes(ftr.uuid), disk_type=int(ftr.type), creator=creator,
                       creator_version=int(ftr.crtr_ver), current_size=cur,
                       hidden=bool(ftr.hidden), parent_uid=bytes(hdr.prt_uuid),
                       table_offset=tab, max_entries=n_max, block_size=bs, bat=bat,
                       bat_complete=stored_here == needed, bat_split=stored_here,
                       has_batmap=has_batmap, batmap_offset=batmap_offset, meta_end=meta_end,
                       plausible=plausible, findings=findings,
                       parent_name=S.decode_utf16be_name(bytes(hdr.prt_name)),
                       timestamp=int(ftr.timestamp))
    if plausible:
        _validate_blocks(anchor, lv_limit)
    return anchor


def complete_bat(anchor: VhdAnchor, read_le1) -> None:
    """Read the BAT entries stored in LE 1 (`read_le1(off, n)` reads that PE)."""
    if anchor.bat_complete or not anchor.plausible:
        return
    rest = len(anchor.bat) - anchor.bat_split
    anchor.bat[anchor.bat_split:] = S.parse_bat(read_le1(0, rest * 4).ljust(rest * 4, b"\xff"))
    anchor.bat_complete = True


def read_batmap(anchor: VhdAnchor, read_lv, extent_bytes: int) -> None:
    """Read the batmap (header at `batmap_offset`), `read_lv(off, n)` in LV space."""
    if not anchor.has_batmap or not anchor.plausible:
        return
    hdr_raw = read_lv(anchor.batmap_offset, S.BATMAP_HEADER_SIZE)
    if hdr_raw[:8] != S.BATMAP_COOKIE:
        anchor.findings.append(Finding("vhd-batmap-missing", None, "info",
                                       f"VHD {anchor.uid_str}: no tdbatmap header where expected",
                                       {"pe": anchor.pe}))
        return
    hdr = S.parse_batmap_header(hdr_raw)
    nbytes = -(-len(anchor.bat) // 8)
    off = int(hdr.batmap_offset)
    if not anchor.batmap_offset < off < 2 * extent_bytes or nbytes == 0:
        return
    raw = read_lv(off, nbytes)
    bits = np.unpackbits(np.frombuffer(raw.ljust(nbytes, b"\0"), dtype=np.uint8))
    anchor.batmap = bits[: len(anchor.bat)].astype(bool)


def _validate_blocks(anchor: VhdAnchor, lv_limit: int) -> None:
    """BAT -> (block, LV bitmap offset) pairs; entries that cannot be real are dropped."""
    bat = anchor.bat
    used = np.nonzero(bat != S.DD_BLK_UNUSED)[0]
    offs = bat[used].astype(np.int64) * S.SECTOR
    span = anchor.block_span
    ok = (offs >= anchor.meta_end) & (offs + span <= lv_limit)
    if anchor.lvhd:
        pass  # blktap aligns data to 4 KiB; other placements are still valid VHD
    dropped = int((~ok).sum())
    used, offs = used[ok], offs[ok]
    order = np.argsort(offs, kind="stable")
    used, offs = used[order], offs[order]
    overlap = np.zeros(len(offs), dtype=bool)
    if len(offs) > 1:
        overlap[1:] = offs[1:] < offs[:-1] + span
    if overlap.any():
        dropped += int(overlap.sum())
        used, offs = used[~overlap], offs[~overlap]
    if dropped:
        anchor.findings.append(Finding(
            "vhd-bat-implausible", None, "warning",
            f"VHD {anchor.uid_str} at PE {anchor.pe}: {dropped} BAT entries point inside the "
            f"metadata, past the PV or onto another block; ignored",
            {"pe": anchor.pe, "dropped": dropped}))
        if dropped > max(4, len(used)):
            anchor.plausible = False
            used, offs = used[:0], offs[:0]
    anchor.blocks = used.astype(np.int64)
    anchor.bitmap_offsets = offs


def revalidate(anchor: VhdAnchor, lv_limit: int) -> None:
    if anchor.plausible:
        _validate_blocks(anchor, lv_limit)


def footer_over_bat(anchor: VhdAnchor, tail: bytes, extent_bytes: int) -> bytes | None:
    """The unique id of another VHD whose valid footer (cookie, checksum) is the last sector
    of `anchor`'s head extent (`tail`), where that sector lies inside the anchor's own BAT;
    else None. libvhd writes a new VHD's whole BAT, every entry unused, when it creates it
    (xapi-project/blktap vhd/lib/libvhd.c `__vhd_create` -> `vhd_create_bat`), and sm's LVHD
    heads have a BAT for 2 TiB that fills their first extent, so a footer there was written
    after the head: that extent is now another LV's last one (sm writes a VHD's footer in
    its LV's last sector), and the head an older VHD's, left where the new LV's guest never
    wrote. A live VHD's BAT entries cannot read as a footer with a right checksum."""
    end = extent_bytes - S.SECTOR
    if not anchor.table_offset <= end < anchor.table_offset + 4 * anchor.max_entries:
        return None
    if len(tail) != S.SECTOR or tail[:8] != S.HD_COOKIE:
        return None
    ftr = read_footer(tail)             # (blktap's hidden-flag checksum retry included)
    uid = bytes(ftr.parsed.uuid)
    if not ftr.checksum_ok or uid == anchor.uid:
        return None
    return uid


def split_dm_name(name: str) -> tuple[str, str] | None:
    """`VG_XenStorage--<sr>-VHD--<uuid>` (a device-mapper name: dashes doubled, one dash
    between VG and LV; formats.md 2.8, 4.5) -> (VG name, LV name)."""
    parts = dm_name_parts(name)
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None
