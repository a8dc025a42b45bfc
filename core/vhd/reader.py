"""Read a VHD (fixed, dynamic, differencing) out of any ByteSpace: an LV, a file, a buffer.

Where the footer is (formats.md 4.1, 3.1): blktap reads the last 512 bytes of the file or LV,
then a 511-byte footer ending at EOF (old Virtual PC files), then the copy at offset 0
(`xapi-project/blktap: vhd/lib/libvhd.c` vhd_read_footer). An LVHD LV holds its primary footer
in its last 512 bytes, possibly far after the data; a VHD *file* copied into an LV has it right
after its last block instead, so that position and a bounded scan of the last extent are tried
too. A footer with a bad checksum is used only when no good one exists (findings say so).

Everything read from disk is bounded before it drives a loop or an allocation: the BAT is capped
to what the disk size needs and to MAX_BAT_ENTRIES, locators to MAX_LOCATOR_BYTES.
The dynamic header, BAT, batmap and parent locators are read by core.vhd.dynamic (mixed in).
"""

from __future__ import annotations

import numpy as np
from construct import ConstructError

from core.errors import SrsalvageError
from core.findings import Finding
from core.spaces import ByteSpace
from core.structs import vhd as S
from core.structs.vhd import format_uuid
from core.vhd.dynamic import (MAX_BAT_ENTRIES, MAX_BLOCK_SIZE, MAX_LOCATOR_BYTES,  # noqa: F401
                              READER_LIMITS, DynamicMetadata, ParentLocator, platform_name)
from core.vhd.head import FooterCandidate, read_footer_at
from core.vhd.virtual import VirtualDisk  # noqa: F401 (importable here)
from core.xen import dm_name_parts

FOOTER_SCAN_BYTES = (8 << 20) + 512  # a file copied into an LV: its footer lies within the last extents
AFTER_DATA_SCAN = 64 << 10         # Windows pads its VHDs to 4 KiB before the footer


class VhdError(SrsalvageError):
    """The space holds no usable VHD."""


def undouble_dm_name(name: str) -> str:
    """`VG_XenStorage--<sr>-VHD--<uuid>` -> the LV name `VHD-<uuid>` (formats.md 4.5)."""
    parts = dm_name_parts(name)
    return parts[-1] if len(parts) >= 2 else name.replace("\\", "/").rsplit("/", 1)[-1]


class VhdImage(DynamicMetadata):
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
