"""The VHD head, parsed and checked once: a footer (with blktap's hidden-flag checksum retry),
the dynamic header, and the two together as they start a dynamic VHD (footer copy at 0,
`cxsparse` header at 512). `VhdImage` (core.vhd.reader), the scan's VHD kinds
(core.scan_kinds) and the reconstruction's anchors (core.match.anchors) all read them here;
what differs between them is only how much they accept, given as `HeadLimits`.

Sources: xapi-project/blktap `include/vhd.h` (hd_ftr, dd_hdr), `vhd/lib/libvhd.c`
(vhd_validate_footer_impl: the checksum retried with the hidden byte zeroed; vhd_validate_header:
block size a power of two); the structures themselves are declared in core.structs.vhd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.spaces import ByteSpace
from core.structs import vhd as S

HEAD_BYTES = S.FOOTER_SIZE + S.HEADER_SIZE      # footer copy + dynamic header: 1536


@dataclass(frozen=True)
class HeadLimits:
    """What a reader accepts as a dynamic VHD's numbers (everything from disk is bounded before
    it drives an allocation)."""

    min_block_bytes: int = S.SECTOR
    max_block_bytes: int = 1 << 28
    power_of_two_blocks: bool = True
    max_bat_entries: int = 1 << 24
    max_virtual_bytes: int = 1 << 46


def footer_checksum_ok(raw: bytes, parsed=None) -> tuple[bool, bool]:
    """(checksum holds, it holds only with the hidden flag left out) for a 512-byte footer:
    early blktap set `hidden` without updating the checksum, and blktap accepts that
    (libvhd.c vhd_validate_footer_impl retries with byte 85 zeroed), so a footer good that way
    is good, and said to be a quirk."""
    parsed = parsed if parsed is not None else S.parse_footer(raw)
    stored = parsed.checksum
    if stored == S.footer_checksum(raw):
        return True, False
    if parsed.hidden:
        alt = bytearray(raw[:S.FOOTER_SIZE])
        alt[S.FOOTER_HIDDEN_OFFSET] = 0
        if stored == S.footer_checksum(bytes(alt)):
            return True, True
    return False, False


@dataclass
class FooterCandidate:
    """A footer read at `offset` of a space (VhdImage tries several places: the end, 511
    bytes before it, after the data, a scan, the copy at 0)."""

    offset: int
    source: str          # end | end-511 | after-data | scan | copy
    raw: bytes
    parsed: object
    cookie_ok: bool
    checksum_ok: bool
    hidden_checksum_quirk: bool = False

    @property
    def good(self) -> bool:
        return self.cookie_ok and self.checksum_ok


def read_footer_at(space: ByteSpace, offset: int, source: str, length: int = 512
                   ) -> FooterCandidate | None:
    if offset < 0 or offset + length > space.size:
        return None
    raw = space.read(offset, length)
    if len(raw) < length:
        return None
    raw = raw.ljust(512, b"\0")
    parsed = S.parse_footer(raw)
    cookie_ok = parsed.cookie in (S.HD_COOKIE, S.POISON_COOKIE)
    ok, quirk = footer_checksum_ok(raw, parsed)   # blktap's hidden-flag retry
    return FooterCandidate(offset, source, raw, parsed, cookie_ok, ok, quirk)


@dataclass(frozen=True)
class CheckedFooter:
    parsed: Any
    checksum_ok: bool
    hidden_checksum_quirk: bool = False


@dataclass(frozen=True)
class CheckedHeader:
    parsed: Any
    checksum_ok: bool


def read_footer(raw: bytes) -> CheckedFooter:
    """A footer from 512 bytes (shorter input is zero padded), its checksum checked."""
    raw = bytes(raw[:S.FOOTER_SIZE]).ljust(S.FOOTER_SIZE, b"\0")
    parsed = S.parse_footer(raw)
    ok, quirk = footer_checksum_ok(raw, parsed)
    return CheckedFooter(parsed, ok, quirk)


def read_header(raw: bytes) -> CheckedHeader:
    """A dynamic header from 1024 bytes (shorter input is zero padded), its checksum checked."""
    raw = bytes(raw[:S.HEADER_SIZE]).ljust(S.HEADER_SIZE, b"\0")
    parsed = S.parse_header(raw)
    return CheckedHeader(parsed, S.header_checksum(raw) == parsed.checksum)


def batmap_checksum_for(header, map_bytes: bytes) -> int:
    """The checksum blktap computes over these batmap bytes for this batmap header's version
    (libvhd.c vhd_checksum_batmap: version 1.1 summed signed chars, later versions unsigned);
    the caller says how many bytes it covers (core.structs.vhd.batmap_checksum_length)."""
    return S.batmap_checksum(map_bytes,
                             signed=int(header.batmap_version) == S.BATMAP_VERSION_1_1)


def block_size_problem(block_bytes: int, limits: HeadLimits) -> str | None:
    """Why a dynamic header's block size cannot be used under `limits` (None: it can)."""
    bs = block_bytes
    if bs < limits.min_block_bytes or bs > limits.max_block_bytes or bs % S.SECTOR:
        return (f"block size {bs} is not a multiple of 512 in {limits.min_block_bytes}.."
                f"{limits.max_block_bytes}")
    if limits.power_of_two_blocks and bs & (bs - 1):
        return f"block size {bs} is not a power of two"
    return None


@dataclass(frozen=True)
class VhdHead:
    """The first 1536 bytes of a dynamic or differencing VHD: footer copy and dynamic header."""

    footer: CheckedFooter
    header: CheckedHeader

    @property
    def block_bytes(self) -> int:
        return int(self.header.parsed.block_size)

    @property
    def bat_entries(self) -> int:
        return int(self.header.parsed.max_bat_size)

    @property
    def table_offset(self) -> int:
        return int(self.header.parsed.table_offset)

    @property
    def virtual_bytes(self) -> int:
        return int(self.footer.parsed.curr_size)

    @property
    def disk_type(self) -> int:
        return int(self.footer.parsed.type)

    def problems(self, limits: HeadLimits) -> dict[str, str]:
        """What in the head's numbers cannot be a dynamic VHD's under `limits`, by field
        (block_size, bat_entries, virtual_size, disk_type); empty when all are plausible."""
        out: dict[str, str] = {}
        block = block_size_problem(self.block_bytes, limits)
        if block is not None:
            out["block_size"] = block
        if not 0 < self.bat_entries <= limits.max_bat_entries:
            out["bat_entries"] = f"BAT of {self.bat_entries} entries"
        if not 0 < self.virtual_bytes <= limits.max_virtual_bytes:
            out["virtual_size"] = f"virtual size {self.virtual_bytes}"
        if self.disk_type not in (S.HD_TYPE_DYNAMIC, S.HD_TYPE_DIFF):
            out["disk_type"] = f"disk type {self.disk_type} is neither dynamic nor differencing"
        return out


def parse_head(raw: bytes) -> VhdHead | None:
    """The head in `raw` (at least 1536 bytes from the VHD's start); None unless it starts with
    the footer copy (`conectix`) and the dynamic header (`cxsparse`) follows at 512."""
    if len(raw) < HEAD_BYTES or raw[:8] != S.HD_COOKIE \
            or raw[S.FOOTER_SIZE:S.FOOTER_SIZE + 8] != S.DD_COOKIE:
        return None
    return VhdHead(read_footer(raw[:S.FOOTER_SIZE]), read_header(raw[S.FOOTER_SIZE:HEAD_BYTES]))
