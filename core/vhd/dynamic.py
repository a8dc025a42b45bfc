"""A dynamic or differencing VHD's own metadata, read into a VhdImage (core.vhd.reader): the
dynamic header (rebuilt from the producer's fixed layout when destroyed), the BAT, blktap's
batmap and the parent locators.

Layout from blktap (`xapi-project/blktap: vhd/lib/libvhd.c` vhd_read_header, vhd_read_bat,
vhd_read_batmap, vhd_has_batmap; libvhd.h vhd_parent_locator_size) and formats.md 4.1.
Everything read from disk is bounded before it drives a loop or an allocation: the BAT is capped
to what the disk size needs and to MAX_BAT_ENTRIES, locators to MAX_LOCATOR_BYTES.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.structs import vhd as S
from core.vhd.head import HeadLimits, batmap_checksum_for, block_size_problem

MAX_BAT_ENTRIES = 1 << 22          # 16 MiB of BAT: 8 TiB at 2 MiB blocks
MAX_BLOCK_SIZE = 1 << 28           # 256 MiB; blktap itself rejects > 2 MiB
# what VhdImage accepts: any multiple of 512 up to MAX_BLOCK_SIZE (the BAT is capped, not refused)
READER_LIMITS = HeadLimits(min_block_bytes=512, max_block_bytes=MAX_BLOCK_SIZE,
                           power_of_two_blocks=False, max_bat_entries=MAX_BAT_ENTRIES)
MAX_LOCATOR_BYTES = 1 << 16


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


class DynamicMetadata:
    """The dynamic header's methods (mixed into core.vhd.reader.VhdImage; its state lives there)."""

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
