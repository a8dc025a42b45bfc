"""The LVM label sector and PV header (formats.md 2.1): find, parse, check, build.

lvm2 looks for `LABELONE` in sectors 0..3 of the device (`lib/label/label.c` _find_lvm_header),
accepts it only when its `sector_xl` equals the sector it was read from and its CRC (bytes
20..511, `lib/label/label.c` / `lib/format_text/text_label.c`) holds, and then reads the
`pv_header` at `offset_xl`.  We report a label with a bad CRC too (as a finding): its fields may
still be right and they are evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from construct import ConstructError

from core.findings import Finding
from core.lvm.crc import lvm_crc
from core.spaces import ByteSpace
from core.structs import lvm as S

MAX_AREAS = 8        # a real PV has 1 data area, 1-2 metadata areas


def format_pv_uuid(raw: bytes) -> str:
    """32 id chars as lvm2 prints them: 6-4-4-4-4-4-6 (lib/id/id.c id_write_format)."""
    s = raw.decode("ascii", errors="replace")
    parts, pos = [], 0
    for n in (6, 4, 4, 4, 4, 4, 6):
        parts.append(s[pos:pos + n])
        pos += n
    return "-".join(parts)


def raw_pv_uuid(text: str) -> bytes:
    """The 32 id bytes of a dashed uuid."""
    raw = text.replace("-", "").encode("ascii")
    if len(raw) != S.ID_LEN:
        raise ValueError(f"PV uuid {text!r} does not have {S.ID_LEN} id characters")
    return raw


@dataclass
class PVLabel:
    """A parsed label sector at absolute `offset`."""

    offset: int
    sector: int                         # sector_xl
    crc_ok: bool
    pv_uuid: str
    device_size: int                    # bytes
    data_areas: list[tuple[int, int]] = field(default_factory=list)      # (offset, size) bytes
    metadata_areas: list[tuple[int, int]] = field(default_factory=list)
    ext_version: int | None = None
    ext_flags: int | None = None
    findings: list[Finding] = field(default_factory=list)
    type_ok: bool = True                # the label type is "LVM2 001"
    pv_header_ok: bool = True           # the pv_header and its area lists fit in the sector

    @property
    def pv_start(self) -> int:
        return self.offset - self.sector * S.SECTOR_SIZE

    @property
    def pe_start(self) -> int | None:
        return self.data_areas[0][0] if self.data_areas else None

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "sector": self.sector, "crc_ok": self.crc_ok,
                "pv_uuid": self.pv_uuid, "device_size": self.device_size,
                "data_areas": self.data_areas, "metadata_areas": self.metadata_areas}


def parse_label_sector(sector: bytes, offset: int) -> PVLabel | None:
    """The label in one 512-byte sector read at absolute `offset`; None without LABELONE/LVM2 001
    or when its pv_header cannot be read."""
    if len(sector) < S.LABEL_SIZE or sector[:8] != S.LABEL_ID:
        return None
    try:
        hdr = S.label_header.parse(sector)
    except ConstructError:
        return None
    findings: list[Finding] = []
    crc_ok = lvm_crc(sector[20:S.LABEL_SIZE]) == hdr.crc_xl
    if not crc_ok:
        findings.append(Finding("lvm-label-crc", offset, "warning",
                                f"LVM label at {offset}: CRC mismatch (lvm2 would ignore it)"))
    if hdr.type != S.LVM2_LABEL:
        findings.append(Finding("lvm-label-type", offset, "warning",
                                f"LVM label at {offset}: type {hdr.type!r} is not 'LVM2 001'"))
    if not 32 <= hdr.offset_xl <= S.LABEL_SIZE - 72:
        findings.append(Finding("lvm-label-offset", offset, "error",
                                f"LVM label at {offset}: pv_header offset {hdr.offset_xl} outside "
                                f"the sector"))
        return PVLabel(offset, hdr.sector_xl, crc_ok, "", 0, findings=findings,
                       type_ok=hdr.type == S.LVM2_LABEL, pv_header_ok=False)
    body = sector[hdr.offset_xl:S.LABEL_SIZE]
    try:
        pvh = S.pv_header.parse(body)
    except ConstructError:
        findings.append(Finding("lvm-pv-header", offset, "error",
                                f"LVM label at {offset}: pv_header area lists run past the sector"))
        return PVLabel(offset, hdr.sector_xl, crc_ok, format_pv_uuid(body[:32]), 0,
                       findings=findings, type_ok=hdr.type == S.LVM2_LABEL, pv_header_ok=False)
    data = [(a.offset, a.size) for a in pvh.data_areas[:-1]][:MAX_AREAS]
    mdas = [(a.offset, a.size) for a in pvh.metadata_areas[:-1]][:MAX_AREAS]
    label = PVLabel(offset, hdr.sector_xl, crc_ok, format_pv_uuid(pvh.pv_uuid),
                    pvh.device_size_xl, data, mdas, findings=findings,
                    type_ok=hdr.type == S.LVM2_LABEL)
    used = 32 + 8 + 16 * (len(pvh.data_areas) + len(pvh.metadata_areas))
    try:
        ext = S.pv_header_extension.parse(body[used:])
        label.ext_version, label.ext_flags = ext.version, ext.flags
    except ConstructError:
        pass
    return label


def find_label(space: ByteSpace, pv_start: int) -> PVLabel | None:
    """The label lvm2 would accept on a PV starting at `pv_start` (sectors 0..3), else the first
    LABELONE there with a bad CRC, else None."""
    first_bad = None
    for sector in range(S.LABEL_SCAN_SECTORS):
        off = pv_start + sector * S.SECTOR_SIZE
        label = parse_label_sector(space.read(off, S.SECTOR_SIZE), off)
        if label is None:
            continue
        if label.sector != sector:
            continue   # lvm2 ignores a label whose sector field does not say where it is
        if label.crc_ok:
            return label
        first_bad = first_bad or label
    return first_bad


def build_label_sector(pv_uuid: str, device_size: int, pe_start: int,
                       metadata_areas: list[tuple[int, int]], sector: int = S.DEFAULT_LABELSECTOR,
                       ext_flags: int = S.PV_EXT_USED) -> bytes:
    """A label sector as lvm2 2.03 writes it (text_label.c _text_write): data area (pe_start, 0),
    the metadata areas, extension version 2 with `ext_flags`, CRC filled in."""
    term = {"offset": 0, "size": 0}
    body = S.label_sector_head.build({
        "label_header": {"id": S.LABEL_ID, "sector_xl": sector, "crc_xl": 0, "offset_xl": 32,
                         "type": S.LVM2_LABEL},
        "pv_header": {"pv_uuid": raw_pv_uuid(pv_uuid), "device_size_xl": device_size,
                      "data_areas": [{"offset": pe_start, "size": 0}, term],
                      "metadata_areas": [{"offset": o, "size": s} for o, s in metadata_areas]
                      + [term]},
        "pv_header_extension": {"version": S.PV_HEADER_EXTENSION_VSN, "flags": ext_flags,
                                "bootloader_areas": [term]},
    })
    out = bytearray(body.ljust(S.LABEL_SIZE, b"\0"))
    out[16:20] = lvm_crc(bytes(out[20:])).to_bytes(4, "little")
    return bytes(out)
