"""Metadata areas: the mda header and every metadata copy left in its circular buffer
(formats.md 2.3-2.5).

`parse_mda_header` checks magic, version, CRC and the `start` field; `build_mda_header` writes
one (the demo builder uses it).  `scan_ring` finds every copy in a text area the way
`pvck --dump metadata_search` does (lvm2 `tools/pvck.c` _dump_search / _check_vgname_start):
at every 512-byte boundary, a copy starts where line 1 is `<vgname> {`, line 2 starts `id = "`
and line 3 is `seqno = N`; its text runs to the NUL, wrapping from the area end to the area
start.  Candidates are found with bytes.find over the whole area (one C-speed pass), never a
Python loop per sector.  A copy whose tail a newer copy overwrote is reported cut at the newer
copy's start (`partial`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from construct import ConstructError

from core.findings import Finding
from core.lvm.crc import lvm_crc
from core.spaces import ByteSpace
from core.structs import lvm as S

MAX_MDA_BYTES = 128 << 20     # an mda bigger than this is garbage (XenServer's is 11 MiB)
MAX_RAW_LOCNS = 8             # lvm2 uses 2 slots (committed, precommitted)
MIN_COPY_BYTES = 256          # pvck ignores shorter results
_VG_START = re.compile(rb'([A-Za-z0-9._+-]{1,128}) \{\n[ \t]*id = "([^"\n]{0,64})"\n[ \t]*seqno = (\d{1,12})\n')
_ID_MARK = b' {\nid = "'


@dataclass
class RawLocn:
    offset: int      # relative to the mda start
    size: int        # including the NUL
    checksum: int
    flags: int

    @property
    def ignored(self) -> bool:
        return bool(self.flags & S.RAW_LOCN_IGNORED)


@dataclass
class MdaHeader:
    """A parsed mda header sector read at absolute `offset`."""

    offset: int
    crc_ok: bool
    version: int
    start: int
    size: int
    raw_locns: list[RawLocn] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    terminated: bool = True     # the raw_locn list ends with its all-zero entry inside the sector

    @property
    def usable(self) -> bool:
        return self.crc_ok and self.version == S.FMTT_VERSION and 1024 <= self.size <= MAX_MDA_BYTES

    def slot(self, index: int) -> RawLocn | None:
        if index < len(self.raw_locns):
            rl = self.raw_locns[index]
            if rl.offset or rl.size:
                return rl
        return None


def parse_mda_header(sector: bytes, offset: int) -> MdaHeader | None:
    """The mda header in a 512-byte sector read at absolute `offset`; None without the magic."""
    if len(sector) < S.MDA_HEADER_SIZE or sector[4:20] != S.FMTT_MAGIC:
        return None
    hdr = S.mda_header.parse(sector[:40] + bytes(24))  # fixed part; the list is read below
    findings: list[Finding] = []
    crc_ok = lvm_crc(sector[4:S.MDA_HEADER_SIZE]) == hdr.checksum_xl
    if not crc_ok:
        findings.append(Finding("lvm-mda-header-crc", offset, "warning",
                                f"mda header at {offset}: CRC mismatch"))
    if hdr.version != S.FMTT_VERSION:
        findings.append(Finding("lvm-mda-header-version", offset, "warning",
                                f"mda header at {offset}: version {hdr.version}, expected 1"))
    if not 1024 <= hdr.size <= MAX_MDA_BYTES:
        findings.append(Finding("lvm-mda-header-size", offset, "warning",
                                f"mda header at {offset}: size {hdr.size} is implausible"))
    locns: list[RawLocn] = []
    terminated = False
    pos = 40
    while pos + 24 <= S.MDA_HEADER_SIZE:
        try:
            rl = S.raw_locn.parse(sector[pos:pos + 24])
        except ConstructError:  # pragma: no cover - 24 bytes always parse
            break
        if not (rl.offset or rl.size or rl.checksum or rl.flags):
            terminated = True
            break
        if len(locns) < MAX_RAW_LOCNS:      # kept; the rest only walked to its terminator
            locns.append(RawLocn(rl.offset, rl.size, rl.checksum, rl.flags))
        pos += 24
    return MdaHeader(offset, crc_ok, hdr.version, hdr.start, hdr.size, locns, findings,
                     terminated)


def build_mda_header(start: int, size: int, raw_locns: list[RawLocn] | None = None) -> bytes:
    """A 512-byte mda header with its CRC (layout.h struct mda_header)."""
    locns = [{"offset": r.offset, "size": r.size, "checksum": r.checksum, "flags": r.flags}
             for r in (raw_locns or [])]
    locns.append({"offset": 0, "size": 0, "checksum": 0, "flags": 0})
    body = S.mda_header.build({"checksum_xl": 0, "magic": S.FMTT_MAGIC,
                               "version": S.FMTT_VERSION, "start": start, "size": size,
                               "raw_locns": locns})
    out = bytearray(body.ljust(S.MDA_HEADER_SIZE, b"\0"))
    out[0:4] = lvm_crc(bytes(out[4:])).to_bytes(4, "little")
    return bytes(out)


def ring_write_offset(prev_offset: int, prev_size: int, mda_size: int, new_size: int = 0) -> int:
    """Where lvm2 puts the next copy (format-text.c _next_rlocn_offset): right after the end of
    the previous one (after its wrapped tail when it wrapped), rounded up to 512; back to 512
    when that start is past, or within 512 bytes of, the end of the area."""
    if prev_size == 0:
        return S.MDA_HEADER_SIZE
    end = prev_offset + prev_size
    if end > mda_size:                       # the previous copy wrapped: its tail is at 512..
        end = S.MDA_HEADER_SIZE + (end - mda_size)
    nxt = (end + 511) // 512 * 512
    if nxt > mda_size - 512:
        nxt = S.MDA_HEADER_SIZE
    return nxt


@dataclass
class RingCopy:
    """One metadata text copy found in a text area."""

    offset: int              # absolute
    length: int              # bytes incl. the NUL (when found)
    text: bytes              # without the NUL
    checksum: int            # lvm_crc over text (+ NUL when found)
    vg_name: str
    vg_id: str
    seqno: int
    wrapped: bool = False
    partial: bool = False
    note: str | None = None


def _copy_at(area: bytes, area_abs: int, pos: int, m: re.Match, stop_at: int | None) -> RingCopy:
    n = len(area)
    wrapped = partial = False
    note = None
    end = area.find(b"\0", pos)
    if end >= 0:
        text = area[pos:end]
    else:
        end2 = area.find(b"\0", 0, pos)
        if end2 >= 0:
            text = area[pos:] + area[:end2]
            wrapped = True
        else:
            text = area[pos:]
            partial, note = True, "no NUL anywhere in the area"
    if stop_at is not None:
        cut = (stop_at - pos) % n
        if 0 < cut < len(text):
            text = text[:cut]
            partial, note = True, f"overwritten by a newer copy at {area_abs + stop_at}"
            wrapped = pos + cut > n
    length = len(text) + (0 if partial else 1)
    checksum = lvm_crc(text + (b"" if partial else b"\0"))
    return RingCopy(area_abs + pos, length, text, checksum, m.group(1).decode(),
                    m.group(2).decode("ascii", "replace"), int(m.group(3)), wrapped, partial, note)


def find_copy_starts(area: bytes, align_base: int = 0) -> list[tuple[int, re.Match]]:
    """(position, match) of every 512-aligned `<vg> {\\nid = "...\\nseqno = N` line start.
    `align_base`: the area position of a 512 boundary (0 when the area starts on one)."""
    out = []
    pos = area.find(_ID_MARK)
    while pos >= 0:
        # the line `<vgname> {` must start on a 512 boundary at most 128 name bytes back
        first = pos - (pos - align_base) % 512
        for start in (first, first - 512):
            if start < 0 or pos - start > 128:
                continue
            m = _VG_START.match(area, start)
            if m is not None and m.end(1) == pos:
                out.append((start, m))
                break
        pos = area.find(_ID_MARK, pos + 1)
    return out


def scan_ring(area: bytes, area_abs: int) -> list[RingCopy]:
    """Every copy in a text area (area_abs = absolute offset of its first byte, mda + 512)."""
    starts = find_copy_starts(area)
    copies = []
    positions = [p for p, _ in starts]
    for i, (pos, m) in enumerate(starts):
        # the next copy start in ring order: a newer write that may have cut this one short
        nxt = positions[i + 1] if i + 1 < len(positions) else (positions[0] if positions else None)
        if nxt == pos:
            nxt = None
        copy = _copy_at(area, area_abs, pos, m, nxt)
        if len(copy.text) < MIN_COPY_BYTES and not copy.partial:
            copy.note = "shorter than 256 bytes"
        copies.append(copy)
    return copies


def read_area(space: ByteSpace, mda_abs: int, mda_size: int) -> bytes:
    """The text area of an mda (bytes 512..size), clipped to the space and MAX_MDA_BYTES."""
    size = min(mda_size, MAX_MDA_BYTES, max(0, space.size - mda_abs))
    if size <= S.MDA_HEADER_SIZE:
        return b""
    return space.read(mda_abs + S.MDA_HEADER_SIZE, size - S.MDA_HEADER_SIZE)


def read_slot_text(area: bytes, rl: RawLocn) -> tuple[bytes, bool] | None:
    """The bytes a raw_locn points to (wrapping), and whether its checksum holds."""
    n = len(area)
    rel = rl.offset - S.MDA_HEADER_SIZE
    if not 0 <= rel < n or not 0 < rl.size <= n:
        return None
    data = area[rel:rel + rl.size]
    if len(data) < rl.size:
        data += area[:rl.size - len(data)]
    return data, lvm_crc(data) == rl.checksum
