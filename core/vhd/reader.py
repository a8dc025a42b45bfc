"""Read a VHD (fixed, dynamic, differencing) out of any ByteSpace: an LV, a file, a buffer.

Where the footer is (formats.md 4.1, 3.1): blktap reads the last 512 bytes of the file or LV,
then a 511-byte footer ending at EOF (old Virtual PC files), then the copy at offset 0
(`xapi-project/blktap: vhd/lib/libvhd.c` vhd_read_footer). An LVHD LV holds its primary footer
in its last 512 bytes, possibly far after the data; a VHD *file* copied into an LV has it right
after its last block instead, so that position and a bounded scan of the last extent are tried
too. A footer with a bad checksum is used only when no good one exists (findings say so).

Everything read from disk is bounded before it drives a loop or an allocation: the BAT is capped
to what the disk size needs and to MAX_BAT_ENTRIES, locators to MAX_LOCATOR_BYTES.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from construct import ConstructError

from core.errors import SrsalvageError
from core.findings import Finding
from core.spaces import ByteSpace
from core.structs import vhd as S
from core.structs.vhd import format_uuid
from core.vhd.head import (FooterCandidate, HeadLimits, batmap_checksum_for,  # noqa: F401
                           block_size_problem, read_footer_at)
from core.vhd.virtual import VirtualDisk  # noqa: F401 (importable here)
from core.xen import dm_name_parts

MAX_BAT_ENTRIES = 1 << 22          # 16 MiB of BAT: 8 TiB at 2 MiB blocks
MAX_BLOCK_SIZE = 1 << 28           # 256 MiB; blktap itself rejects > 2 MiB
# what VhdImage accepts: any multiple of 512 up to MAX_BLOCK_SIZE (the BAT is capped, not refused)
READER_LIMITS = HeadLimits(min_block_bytes=512, max_block_bytes=MAX_BLOCK_SIZE,
                           power_of_two_blocks=False, max_bat_entries=MAX_BAT_ENTRIES)
MAX_LOCATOR_BYTES = 1 << 16
FOOTER_SCAN_BYTES = (8 << 20) + 512  # a file copied into an LV: its footer lies within the last extents
AFTER_DATA_SCAN = 64 << 10         # Windows pads its VHDs to 4 KiB before the footer


class VhdError(SrsalvageError):
    """The space holds no usable VHD."""


@dataclass(frozen=True)
class ParentLocator:
    """One parent locator entry, decoded."""

    index: int
    code: int
    platform: str
    data_offset: int
    data_space: int
    data_len: int
    text: str | None
    in_bounds: bool = True

    def to_json(self) -> dict:
        return {"index": self.index, "platform": self.platform, "offset": self.data_offset,
                "space": self.data_space, "length": self.data_len, "text": self.text}


def platform_name(code: int) -> str:
    try:
        raw = code.to_bytes(4, "big")
        if all(32 <= c < 127 for c in raw):
            return raw.decode("ascii")
    except OverflowError:
        pass
    return f"0x{code:08x}"


def undouble_dm_name(name: str) -> str:
    """`VG_XenStorage--<sr>-VHD--<uuid>` -> the LV name `VHD-<uuid>` (formats.md 4.5)."""
    parts = dm_name_parts(name)
    return parts[-1] if len(parts) >= 2 else name.replace("\\", "/").rsplit("/", 1)[-1]


class VhdImage:
    """A VHD opened over a ByteSpace, with what was wrong on the way recorded in `findings`."""

    def __init__(self, space: ByteSpace, name: str = "") -> None:
        self.space = space
        self.name = name or getattr(space, "name", "") or ""
        self.findings: list[Finding] = []
        self.footer = None
        self.footer_raw = b""
        self.footer_offset: int | None = None
        self.footer_source = ""
        self.footer_candidates: list[FooterCandidate] = []
        self.copy_footer: FooterCandidate | None = None   # the copy at offset 0
        self.end_footer: FooterCandidate | None = None    # last 512 bytes of the space
        self.header = None
        self.header_raw = b""
        self.header_offset: int | None = None
        self.header_checksum_ok = False
        self.bat = np.zeros(0, dtype=np.uint32)
        self.bat_entries_declared = 0
        self.batmap: np.ndarray | None = None
        self.batmap_header = None
        self.batmap_header_offset: int | None = None
        self.batmap_valid = False
        self.locators: list[ParentLocator] = []
        self.header_rebuilt = False
        self.usable = False
        self.bat_replaced = False          # the BAT was set from elsewhere (core.provenance)
        self.lost_bat_entries: list[int] = []

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, space: ByteSpace, name: str = "") -> "VhdImage":
        img = cls(space, name)
        try:
            img._open()
        except ConstructError as exc:  # defensive: parsers above are fixed-size
            raise VhdError(f"{img._where()}: unparsable VHD structure: {exc}") from None
        return img

    def _where(self) -> str:
        return self.name or "VHD"

    def _add(self, kind: str, offset: int | None, severity: str, message: str, **details) -> None:
        self.findings.append(Finding(kind, offset, severity, message, details, space="vhd"))

    def _open(self) -> None:
        size = self.space.size
        if size < 512:
            raise VhdError(f"{self._where()}: {size} bytes is too small for a VHD")
        self.end_footer = read_footer_at(self.space, size - 512, "end")
        self.copy_footer = read_footer_at(self.space, 0, "copy")
        cands = [c for c in (self.end_footer,
                             read_footer_at(self.space, size - 511, "end-511", 511)
                             if size % 512 == 511 else None,
                             self.copy_footer) if c is not None]
        self.footer_candidates = cands
        chosen = next((c for c in cands if c.good), None)
        if chosen is None:
            chosen = self._scan_for_footer()
        if chosen is None:
            chosen = next((c for c in cands if c.cookie_ok), None)
            if chosen is not None:
                self._add("vhd-footer-checksum", chosen.offset, "error",
                          f"footer at {chosen.offset} has checksum 0x{chosen.parsed.checksum:08x}, "
                          f"computed 0x{S.footer_checksum(chosen.raw):08x}; no footer with a good "
                          f"checksum exists, using it anyway",
                          stored=chosen.parsed.checksum, computed=S.footer_checksum(chosen.raw))
        if chosen is None:
            raise VhdError(f"{self._where()}: no VHD footer (conectix) at the end, at 0, or in "
                           f"the last {FOOTER_SCAN_BYTES} bytes")
        self._use_footer(chosen)
        if self.disk_type in (S.HD_TYPE_DYNAMIC, S.HD_TYPE_DIFF):
            self._open_dynamic()
        elif self.disk_type == S.HD_TYPE_FIXED:
            self._open_fixed()
        else:
            self._add("vhd-disk-type", chosen.offset + 60, "error",
                      f"disk type {self.disk_type} is not fixed (2), dynamic (3) or differencing (4)",
                      disk_type=self.disk_type)
        self._primary_footer_findings()

    def _use_footer(self, cand: FooterCandidate) -> None:
        self.footer = cand.parsed
        self.footer_raw = cand.raw
        self.footer_offset = cand.offset
        self.footer_source = cand.source
        if cand.hidden_checksum_quirk:
            self._add("vhd-footer-hidden-checksum", cand.offset + S.FOOTER_HIDDEN_OFFSET, "info",
                      "footer checksum excludes the hidden flag (early blktap)")
        if cand.parsed.cookie == S.POISON_COOKIE:
            self._add("vhd-footer-poisoned", cand.offset, "warning",
                      "footer cookie is v_poison: vhd-util disabled this VHD deliberately")

    def _scan_for_footer(self) -> FooterCandidate | None:
        """A good footer in the last extent, sector aligned, newest (highest) first."""
        size = self.space.size
        start = max(0, size - FOOTER_SCAN_BYTES)
        start -= start % 512
        data = np.frombuffer(self.space.read(start, size - start), dtype=np.uint8)
        n = len(data) // 512
        if n == 0:
            return None
        heads = data[: n * 512].reshape(n, 512)[:, :8]
        hits = np.nonzero((heads == np.frombuffer(S.HD_COOKIE, dtype=np.uint8)).all(axis=1))[0]
        for i in hits[::-1][:64]:
            off = start + int(i) * 512
            if off == 0:
                continue
            cand = read_footer_at(self.space, off, "scan")
            if cand is not None and cand.good:
                return cand
        return None

    # footer-derived properties --------------------------------------------------------------
    @property
    def disk_type(self) -> int:
        return int(self.footer.type) if self.footer is not None else 0

    @property
    def disk_type_name(self) -> str:
        return S.DISK_TYPE_NAMES.get(self.disk_type, f"unknown-{self.disk_type}")

    @property
    def unique_id(self) -> bytes:
        return bytes(self.footer.uuid)

    @property
    def parent_unique_id(self) -> bytes | None:
        if self.header is None or self.disk_type != S.HD_TYPE_DIFF:
            return None
        return bytes(self.header.prt_uuid)

    @property
    def current_size(self) -> int:
        return int(self.footer.curr_size)

    @property
    def creator(self) -> str:
        return bytes(self.footer.crtr_app).decode("latin-1")

    @property
    def creator_version(self) -> tuple[int, int]:
        v = int(self.footer.crtr_ver)
        return v >> 16, v & 0xFFFF

    @property
    def hidden(self) -> bool:
        return bool(self.footer.hidden)

    @property
    def block_size(self) -> int:
        return int(self.header.block_size) if self.header is not None else 0

    @property
    def geometry(self) -> tuple[int, int, int]:
        return S.split_geometry(int(self.footer.geometry))

    @property
    def virtual_size(self) -> int:
        """The disk size readers use: the CHS product for Virtual PC and non-forced qemu
        images, current_size for everyone else (qemu block/vpc.c vpc_open; formats.md 4.4)."""
        c, h, s = self.geometry
        chs_bytes = c * h * s * S.SECTOR
        if self.footer.crtr_app in (S.CREATOR_VPC, S.CREATOR_QEMU) \
                and (c, h, s) != (65535, 16, 255) and 0 < chs_bytes <= self.current_size:
            return chs_bytes
        return self.current_size

    @property
    def parent_name(self) -> str:
        if self.header is None:
            return ""
        return S.decode_utf16be_name(bytes(self.header.prt_name))

    @property
    def parent_lv_hint(self) -> str | None:
        """The parent's LV name recovered from a blktap dm name (doubled dashes undone)."""
        for text in [self.parent_name] + [l.text or "" for l in self.locators]:
            if "VHD--" in text or "LV--" in text:
                return undouble_dm_name(text)
        return None

    @property
    def bitmap_bytes(self) -> int:
        return S.bitmap_bytes(self.block_size) if self.block_size else 0

    # -- dynamic disks --------------------------------------------------------------------------
    def _open_dynamic(self) -> None:
        size = self.space.size
        hoff = int(self.footer.data_offset)
        if hoff + S.HEADER_SIZE > size or hoff % 512:
            self._add("vhd-header-offset", self.footer_offset + 16, "error",
                      f"footer data_offset {hoff} is outside the space or unaligned; trying 512",
                      data_offset=hoff)
            hoff = 512
        raw = self.space.read(hoff, S.HEADER_SIZE)
        if len(raw) < S.HEADER_SIZE:
            self._add("vhd-truncated", hoff, "error", "no room for the dynamic header")
            return
        hdr = S.parse_header(raw)
        if hdr.cookie != S.DD_COOKIE:
            self._add("vhd-header-cookie", hoff, "error",
                      f"dynamic header at {hoff} has cookie {bytes(hdr.cookie)!r}, not cxsparse")
            alt = S.parse_header(self.space.read(512, S.HEADER_SIZE)) if hoff != 512 else None
            if alt is not None and alt.cookie == S.DD_COOKIE:
                raw, hdr, hoff = self.space.read(512, S.HEADER_SIZE), alt, 512
            else:
                rebuilt = self._rebuild_header()
                if rebuilt is None:
                    return
                raw, hoff = rebuilt, 512
                hdr = S.parse_header(raw)
        self.header, self.header_raw, self.header_offset = hdr, raw, hoff
        computed = S.header_checksum(raw)
        self.header_checksum_ok = computed == hdr.checksum
        if not self.header_checksum_ok:
            self._add("vhd-header-checksum", hoff + S.HEADER_CHECKSUM_OFFSET, "error",
                      f"dynamic header checksum 0x{hdr.checksum:08x}, computed 0x{computed:08x}",
                      stored=int(hdr.checksum), computed=computed)
        bs = int(hdr.block_size)
        if block_size_problem(bs, READER_LIMITS) is not None:
            self._add("vhd-block-size", hoff + 32, "error",
                      f"block size {bs} is unusable (must be a multiple of 512 up to {MAX_BLOCK_SIZE})",
                      block_size=bs)
            return
        self._read_bat()
        self._read_batmap()
        self._read_locators()
        self.usable = True

    def _rebuild_header(self) -> bytes | None:
        """A destroyed dynamic header, rebuilt from the producer's fixed layout when the rest
        agrees (dynamic disks only: a differencing header takes its parent's id with it).

        blktap and qemu both put the BAT at 1536 with 2 MiB blocks; blktap preallocates the
        table for 2 TiB when its tdbatmap header sits right after such a table (LVHD), else the
        table covers the disk. The candidate is accepted only if every used BAT entry lies in
        the data area of the space and at least one block starts with a plausible bitmap."""
        if self.disk_type != S.HD_TYPE_DYNAMIC:
            return None
        bs, table = S.VHD_BLOCK_BYTES, 1536
        need = -(-self.virtual_size // bs)
        candidates = []
        if self.footer.crtr_app == S.CREATOR_TAP:
            for entries in (S.roundup(2 << 40, bs) // bs, need):
                off = table + S.roundup(entries * 4, 512)
                if self.space.read(off, 8) == S.BATMAP_COOKIE:
                    candidates.append((entries, off + 512 + S.roundup(-(-entries // 8), 512)))
        candidates.append((need, table + S.roundup(need * 4, 512)))
        for entries, meta_end in candidates:
            if entries < need or table + 4 * need > self.space.size:
                continue
            bat = S.parse_bat(self.space.read(table, 4 * min(need, MAX_BAT_ENTRIES)))
            used = bat[bat != S.DD_BLK_UNUSED].astype(np.int64)
            if len(used) and (used.min() * 512 < meta_end
                              or (used.max() * 512 + 512 + bs) > self.space.size):
                continue
            if len(used):
                first = self.space.read(int(used.min()) * 512, 512)
                if not any(first):
                    continue
            raw = S.build_header(
                cookie=S.DD_COOKIE, data_offset=S.DD_NEXT_OFFSET, table_offset=table,
                hdr_ver=S.DD_VERSION, max_bat_size=entries, block_size=bs,
                prt_uuid=bytes(16), prt_ts=0, prt_name=bytes(512), loc=[])
            self.header_rebuilt = True
            self._add("vhd-header-rebuilt", 512, "warning",
                      f"dynamic header rebuilt from the {self.creator.strip() or 'producer'} layout:"
                      f" BAT at {table}, {entries} entries, 2 MiB blocks ({len(used)} blocks used)",
                      max_table_entries=entries)
            return raw
        return None

    def _read_bat(self) -> None:
        hdr = self.header
        declared = int(hdr.max_bat_size)
        self.bat_entries_declared = declared
        table = int(hdr.table_offset)
        need = -(-self.virtual_size // self.block_size)
        n = min(declared, need)
        if table >= self.space.size or table % 512:
            self._add("vhd-bat-offset", self.header_offset + 16, "error",
                      f"BAT offset {table} lies outside the {self.space.size}-byte space or is "
                      f"unaligned", table_offset=table)
            self.bat = np.full(0, S.DD_BLK_UNUSED, dtype=np.uint32)
            return
        readable = (self.space.size - table) // 4
        if n > MAX_BAT_ENTRIES:
            self._add("vhd-bat-capped", table, "error",
                      f"BAT of {n} entries capped to {MAX_BAT_ENTRIES}", entries=n)
            n = MAX_BAT_ENTRIES
        if n > readable:
            self._add("vhd-truncated", table, "error",
                      f"BAT of {n} entries runs past the end of the space ({readable} readable)",
                      entries=n, readable=readable)
            n = readable
        bat = np.empty(n, dtype=np.uint32)
        window = 1 << 18  # entries per read: 1 MiB of table
        for i in range(0, n, window):
            k = min(window, n - i)
            chunk = S.parse_bat(self.space.read(table + 4 * i, 4 * k))
            bat[i:i + len(chunk)] = chunk
            bat[i + len(chunk): i + k] = S.DD_BLK_UNUSED
        self.bat = bat

    @property
    def batmap_expected(self) -> bool:
        """blktap keeps a batmap from version 1.2 on (after 0.1, when its header is valid) —
        libvhd.c vhd_has_batmap."""
        if self.footer.crtr_app != S.CREATOR_TAP:
            return False
        return self.creator_version > (0, 1)

    def _read_batmap(self) -> None:
        if not self.batmap_expected:
            return
        off = int(self.header.table_offset) + S.roundup(self.bat_entries_declared * 4, 512)
        if off + 512 > self.space.size:
            return
        raw = self.space.read(off, 512)
        bh = S.parse_batmap_header(raw)
        if bh.cookie != S.BATMAP_COOKIE:
            if self.creator_version >= (1, 2):
                self._add("vhd-batmap-missing", off, "warning",
                          f"no tdbatmap header at {off} (blktap {self.creator_version}); "
                          f"sector bitmaps are used instead")
            return
        self.batmap_header, self.batmap_header_offset = bh, off
        n = len(self.bat)
        map_off = int(bh.batmap_offset)
        map_len = int(bh.batmap_size) * 512
        want = -(-n // 8)
        if map_off + map_len > self.space.size or map_len < want or map_off < off + 512:
            self._add("vhd-batmap-bounds", off, "error",
                      f"batmap at {map_off} ({map_len} bytes) cannot cover {n} blocks")
            return
        csum_len = min(map_len, S.batmap_checksum_length(self.current_size, self.block_size),
                       MAX_BAT_ENTRIES // 8)
        map_bytes = self.space.read(map_off, max(want, csum_len))
        computed = batmap_checksum_for(bh, map_bytes[:csum_len])
        bits = np.unpackbits(np.frombuffer(map_bytes[:want], dtype=np.uint8))[:n].astype(bool)
        self.batmap = bits
        if computed != bh.checksum:
            self._add("vhd-batmap-checksum", off + 24, "warning",
                      f"batmap checksum 0x{bh.checksum:08x}, computed 0x{computed:08x}; "
                      f"batmap ignored, sector bitmaps used", stored=int(bh.checksum),
                      computed=computed)
            return
        self.batmap_valid = True

    def _read_locators(self) -> None:
        for i, loc in enumerate(self.header.loc):
            code = int(loc.code)
            if code == S.PLAT_CODE_NONE:
                continue
            off, dlen, dspace = int(loc.data_offset), int(loc.data_len), int(loc.data_space)
            # blktap libvhd.h vhd_parent_locator_size: < 512 means sectors, else bytes
            space_bytes = dspace * 512 if dspace < 512 else dspace
            text = None
            in_bounds = not (off + dlen > self.space.size or dlen > MAX_LOCATOR_BYTES
                             or space_bytes > MAX_LOCATOR_BYTES)
            if not in_bounds:
                self._add("vhd-locator-bounds", self.header_offset + 576 + 24 * i, "warning",
                          f"parent locator {i} ({platform_name(code)}) at {off}, {dlen} bytes, "
                          f"lies outside the space", index=i)
            else:
                raw = self.space.read(off, dlen)
                if code in (S.PLAT_CODE_W2KU, S.PLAT_CODE_W2RU):
                    text = raw[: len(raw) - len(raw) % 2].decode("utf-16-le", "replace")
                elif code == S.PLAT_CODE_MACX:
                    text = raw.decode("utf-8", "replace")
                elif code in (S.PLAT_CODE_WI2K, S.PLAT_CODE_WI2R):
                    text = raw.decode("latin-1")
                if text is not None:
                    text = text.split("\0", 1)[0]
            self.locators.append(ParentLocator(i, code, platform_name(code), off, space_bytes,
                                               dlen, text, in_bounds))

    # -- fixed disks ----------------------------------------------------------------------------
    def _open_fixed(self) -> None:
        if self.virtual_size > self.footer_offset:
            self._add("vhd-fixed-size", self.footer_offset, "error",
                      f"fixed disk of {self.virtual_size} bytes but its footer is at "
                      f"{self.footer_offset}; the data is truncated")
        self.usable = True

    # -- primary / backup footer ----------------------------------------------------------------
    def _primary_footer_findings(self) -> None:
        end = self.end_footer
        if self.disk_type == S.HD_TYPE_FIXED:
            return
        if self.footer_source == "copy" and self.usable:
            cand = self._footer_after_data()
            if cand is not None:
                self.footer_candidates.append(cand)
                self._use_footer(cand)
        elif self.footer_source in ("end", "end-511", "scan") and self.usable \
                and self.copy_footer is not None and self.copy_footer.good \
                and bytes(self.copy_footer.parsed.uuid) != self.unique_id:
            # Two VHDs in one LV. Either a VHD file was copied over a reused LV (the last
            # sector is an older VHD's footer, and the new file's own footer follows its last
            # block), or a newer LV took this LV's first extents (the start is someone else's).
            end = self.footer_offset, self.footer, self.footer_raw, self.footer_source
            self._use_footer(self.copy_footer)
            cand = self._footer_after_data()
            if cand is not None:
                self.footer_candidates.append(cand)
                self._use_footer(cand)
                self._add("vhd-footer-stale-end", end[0], "warning",
                          f"the footer at {end[0]} belongs to another VHD (unique id differs from "
                          f"the copy at 0, whose own footer follows the data at "
                          f"{self.footer_offset}); using the latter")
            else:
                self.footer_offset, self.footer, self.footer_raw, self.footer_source = end
                self._add("vhd-footer-identity-conflict", 0, "error",
                          f"footer copy at 0 names VHD {format_uuid(self.copy_footer.parsed.uuid)}, "
                          f"the primary at {end[0]} names {format_uuid(self.unique_id)}: the "
                          f"start of this volume may now hold another VHD",
                          copy_unique_id=format_uuid(self.copy_footer.parsed.uuid))
        if self.footer_source == "copy":
            kind = "vhd-footer-primary-missing"
            msg = "no valid primary footer at the end of the space or after the data; " \
                  "the copy at offset 0 is used"
            if end is not None and end.cookie_ok:
                kind, msg = "vhd-footer-primary-checksum", \
                    f"primary footer at {end.offset} has a bad checksum; the copy at 0 is used"
            self._add(kind, end.offset if end else None, "error", msg)
        copy = self.copy_footer
        if copy is None or not copy.cookie_ok:
            self._add("vhd-footer-copy-missing", 0, "warning",
                      "no footer copy at offset 0 (dynamic disks keep one there)")
        elif copy.raw != self.footer_raw:
            if not copy.checksum_ok:
                self._add("vhd-footer-copy-checksum", 0, "warning",
                          "footer copy at offset 0 has a bad checksum")
            differs = [k for k in ("cookie", "features", "data_offset", "curr_size", "type",
                                   "uuid", "hidden", "timestamp", "crtr_app")
                       if getattr(copy.parsed, k) != getattr(self.footer, k)]
            self._add("vhd-footer-mismatch", 0, "warning",
                      f"footer copy at 0 differs from the primary at {self.footer_offset}"
                      + (f" in {', '.join(differs)}" if differs else ""), fields=differs)

    def _footer_after_data(self) -> FooterCandidate | None:
        """A VHD file copied into a bigger LV keeps its primary footer right after its last
        block (qemu, blktap files) or a little later (Windows pads to 4 KiB): look there, up
        to AFTER_DATA_SCAN bytes, for a good footer with the copy's unique id."""
        start = self.data_end
        if start < 512 or start >= self.space.size:
            return None
        data = np.frombuffer(self.space.read(start, min(AFTER_DATA_SCAN, self.space.size - start)),
                             dtype=np.uint8)
        n = len(data) // 512
        if n == 0:
            return None
        heads = data[: n * 512].reshape(n, 512)[:, :8]
        hits = np.nonzero((heads == np.frombuffer(S.HD_COOKIE, dtype=np.uint8)).all(axis=1))[0]
        for i in hits[:16]:
            cand = read_footer_at(self.space, start + int(i) * 512, "after-data")
            if cand is not None and cand.good and bytes(cand.parsed.uuid) == self.unique_id:
                return cand
        return None

    # -- geometry of the data area --------------------------------------------------------------
    def block_bitmap_offset(self, block: int) -> int | None:
        if block >= len(self.bat):
            return None
        e = int(self.bat[block])
        return None if e == S.DD_BLK_UNUSED else e * 512

    @property
    def allocated_blocks(self) -> np.ndarray:
        return np.nonzero(self.bat != S.DD_BLK_UNUSED)[0]

    @property
    def data_end(self) -> int:
        """End of the last allocated block (or of the metadata when none is), in the space."""
        used = self.bat[self.bat != S.DD_BLK_UNUSED]
        ends = [self.metadata_end]
        if len(used):
            ends.append(int(used.max()) * 512 + self.bitmap_bytes + self.block_size)
        return max(ends)

    @property
    def metadata_end(self) -> int:
        """End of footer copy, header, BAT, batmap and locators."""
        if self.header is None:
            return 512
        table = int(self.header.table_offset)
        bat_bytes = S.roundup(self.bat_entries_declared * 4, 512)
        if table + bat_bytes > self.space.size:
            # a max_table_entries that runs past the volume is damage (vhd-truncated /
            # vhd-bat-capped): count only the entries the disk size needs, so the blocks that
            # follow the real table are not all taken for metadata
            bat_bytes = S.roundup(len(self.bat) * 4, 512)
        ends = [512, self.header_offset + S.HEADER_SIZE, table + bat_bytes]
        if self.batmap_header is not None:
            ends.append(self.batmap_header_offset + 512)
            if self.batmap is not None:  # the batmap header's own fields proved sane
                ends.append(int(self.batmap_header.batmap_offset)
                            + int(self.batmap_header.batmap_size) * 512)
        for loc in self.locators:
            if loc.in_bounds:
                ends.append(loc.data_offset + max(loc.data_space, loc.data_len))
        return max(ends)

    def describe(self) -> dict:
        """Identifying fields as JSON."""
        d = {"disk_type": self.disk_type_name, "unique_id": format_uuid(self.unique_id),
             "creator": self.creator.rstrip("\0 "), "creator_version": "%d.%d" % self.creator_version,
             "current_size": self.current_size, "virtual_size": self.virtual_size,
             "hidden": self.hidden, "footer_offset": self.footer_offset,
             "footer_source": self.footer_source}
        if self.header is not None:
            d.update(block_size=self.block_size, max_table_entries=self.bat_entries_declared,
                     table_offset=int(self.header.table_offset),
                     allocated_blocks=int(len(self.allocated_blocks)), data_end=self.data_end)
        if self.disk_type == S.HD_TYPE_DIFF and self.header is not None:
            d.update(parent_unique_id=format_uuid(self.header.prt_uuid),
                     parent_name=self.parent_name, parent_lv=self.parent_lv_hint,
                     parent_locators=[l.to_json() for l in self.locators])
        return d

    # -- the virtual disk -----------------------------------------------------------------------
    def virtual_space(self, parent: ByteSpace | None = None) -> "VirtualDisk":
        if not self.usable:
            raise VhdError(f"{self._where()}: VHD structures too damaged to read the virtual disk"
                           f" ({', '.join(f.kind for f in self.findings if f.severity == 'error')})")
        return VirtualDisk(self, parent)
