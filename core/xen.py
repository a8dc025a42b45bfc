"""XenServer / XCP-ng storage-repository model on top of an LVM volume group (formats.md 3).

* VDIs are the `VHD-<uuid>` (VHD inside) and `LV-<uuid>` (raw) LVs; the SR uuid is the tail of
  the VG name `VG_XenStorage-<uuid>` (xapi-project/sm libs/sm/lvhdutil.py VG_PREFIX/LV_PREFIX).
* The `MGT` LV holds the SR's own metadata (xapi-project/sm libs/sm/srmetadata.py,
  LVMMetadataHandler): 512-byte sectors padded with spaces; sector 0 the header
  `XSSM:<length, left-justified in 10>:<major>:<minor>`; sectors 1-3 XML fragments with the SR
  uuid/allocation, name_label, name_description; then 2 sectors per VDI slot (`<vdi>` +
  name_label + name_description, then the other elements and `</vdi>`).  Deleting a VDI only
  sets `<deleted>1</deleted>`, so names of deleted VDIs survive until the slot is reused.
  `parse_mgt` reads it with per-element regexes (not an XML parser) so a truncated or partly
  overwritten MGT still yields every readable slot; `build_mgt` writes one as sm does.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from core.findings import Finding
from core.errors import SrsalvageError
from core.lvm.model import VolumeGroup
from core.lvm.space import lv_space
from core.spaces import ByteSpace
from core.xen_names import lv_kind, lv_vdi_uuid, vg_sr_uuid

SECTOR = 512
HDR_STRING = "XSSM"           # sm libs/sm/metadata.py HDR_STRING
MD_MAJOR, MD_MINOR = 1, 2     # sm metadata.py MD_MAJOR / MD_MINOR
MAX_METADATA_LENGTH_SIZE = 10  # srmetadata.py: width of the length field
SR_INFO_SIZE_IN_SECTORS = 4    # srmetadata.py
VDI_INFO_SIZE_IN_SECTORS = 2   # srmetadata.py LVMMetadataHandler
XML_HEADER = b'<?xml version="1.0" ?>'
MGT_BYTES = 4 << 20            # drivers/LVHDSR.py: the MGT LV is 4 MiB
MAX_SLOTS = (MGT_BYTES - SR_INFO_SIZE_IN_SECTORS * SECTOR) // (VDI_INFO_SIZE_IN_SECTORS * SECTOR)
VDI_FIELDS = ("uuid", "is_a_snapshot", "snapshot_of", "snapshot_time", "type", "vdi_type",
              "read_only", "managed", "metadata_of_pool", "deleted")
_ELEMENT = re.compile(rb"<([A-Za-z_][A-Za-z0-9_]{0,40})>([^<]{0,4096})</\1>")
_HEADER = re.compile(rb"XSSM:([0-9 ]{1,10}):(\d{1,4}):(\d{1,4})")



def dm_name_parts(name: str) -> list[str]:
    """A device-mapper name split into its undoubled parts, any path before it dropped:
    `/dev/mapper/VG_XenStorage--<sr>-VHD--<uuid>` -> [`VG_XenStorage-<sr>`, `VHD-<uuid>`].
    Dashes inside a VG or LV name are doubled and one dash joins them (formats.md 2.8); these
    names appear in blktap parent locators and parent names (formats.md 4.5)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    parts, cur, i = [], "", 0
    while i < len(base):
        if base[i] == "-":
            if base[i + 1: i + 2] == "-":
                cur += "-"
                i += 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += base[i]
        i += 1
    parts.append(cur)
    return parts

@dataclass
class MgtVdi:
    """One VDI slot of the MGT volume (offset inside the MGT)."""

    offset: int
    uuid: str | None
    name_label: str | None
    name_description: str | None
    deleted: bool
    fields: dict[str, str] = field(default_factory=dict)
    complete: bool = True          # both sectors present and closed with </vdi>

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "uuid": self.uuid, "name_label": self.name_label,
                "name_description": self.name_description, "deleted": self.deleted,
                "complete": self.complete, "fields": self.fields}


@dataclass
class MgtContent:
    header_ok: bool
    length: int | None
    version: tuple[int, int] | None
    sr_uuid: str | None = None
    allocation: str | None = None
    sr_name_label: str | None = None
    sr_name_description: str | None = None
    vdis: list[MgtVdi] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def by_uuid(self) -> dict[str, MgtVdi]:
        """uuid -> slot; a live slot wins over a deleted one of the same uuid."""
        out: dict[str, MgtVdi] = {}
        for v in self.vdis:
            if v.uuid and (v.uuid not in out or out[v.uuid].deleted and not v.deleted):
                out[v.uuid] = v
        return out


def _elements(chunk: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _ELEMENT.finditer(chunk):
        key = m.group(1).decode("ascii")
        if key not in out:
            out[key] = html.unescape(m.group(2).decode("utf-8", errors="replace"))
    return out


def parse_mgt(data: bytes, base_offset: int = 0) -> MgtContent:
    """Parse MGT volume bytes; never raises on garbage (damage becomes findings)."""
    data = bytes(data[:MGT_BYTES])
    findings: list[Finding] = []
    m = _HEADER.match(data[:SECTOR].replace(b"\0", b""))
    length = version = None
    if m:
        try:
            length = int(m.group(1).strip() or "0")
            version = (int(m.group(2)), int(m.group(3)))
        except ValueError:
            m = None
    if not m:
        findings.append(Finding("mgt-header", base_offset, "warning",
                                "MGT volume: no XSSM header; reading the slots anyway"))
    elif not SR_INFO_SIZE_IN_SECTORS * SECTOR <= (length or 0) <= MGT_BYTES:
        findings.append(Finding("mgt-length", base_offset, "warning",
                                f"MGT volume: header length {length} is implausible"))
    sr = _elements(data[SECTOR:SR_INFO_SIZE_IN_SECTORS * SECTOR].replace(b"\0", b""))
    content = MgtContent(bool(m), length, version, sr.get("uuid"), sr.get("allocation"),
                         sr.get("name_label"), sr.get("name_description"), findings=findings)
    # slots: up to the header's length when it is sane, else as long as slots look used
    if m and length and SR_INFO_SIZE_IN_SECTORS * SECTOR <= length <= len(data):
        end, trust_length = length, True
    else:
        end, trust_length = len(data), False
    slot_bytes = VDI_INFO_SIZE_IN_SECTORS * SECTOR
    off = SR_INFO_SIZE_IN_SECTORS * SECTOR
    while off + SECTOR <= end and len(content.vdis) < MAX_SLOTS:
        chunk = data[off:off + slot_bytes].replace(b"\0", b"")
        if not trust_length and not chunk.strip():
            break
        el = _elements(chunk)
        if not el and not trust_length:
            break
        complete = b"<vdi>" in chunk and b"</vdi>" in chunk
        if not complete:
            findings.append(Finding("mgt-slot-damaged", base_offset + off, "warning",
                                    f"MGT VDI slot at {off}: incomplete or damaged"))
        content.vdis.append(MgtVdi(off, el.get("uuid"), el.get("name_label"),
                                   el.get("name_description"), el.get("deleted") == "1",
                                   {k: v for k, v in el.items()
                                    if k not in ("name_label", "name_description")}, complete))
        off += slot_bytes
    return content


def _sector(data: bytes) -> bytes:
    if len(data) > SECTOR:
        raise ValueError(f"MGT fragment of {len(data)} bytes does not fit a sector")
    return data.ljust(SECTOR, b" ")   # srmetadata.getSector pads with spaces


def _element(tag: str, value: Any) -> bytes:
    return f"<{tag}>{value}</{tag}>".encode("utf-8")


def build_mgt(sr_uuid: str, name_label: str = "", name_description: str = "",
              vdis: list[dict[str, Any]] | None = None, allocation: str = "thick",
              size: int | None = None) -> bytes:
    """MGT volume content as sm's LVMMetadataHandler.writeMetadata writes it.

    Each vdi dict needs `uuid`; name_label/name_description default to ""; the other fields
    (is_a_snapshot, snapshot_of, snapshot_time, type, vdi_type, read_only, managed,
    metadata_of_pool, deleted) default as sm's; `size` pads the result (zeros) to the LV size.
    """
    esc = html.escape
    body = _sector(XML_HEADER + _element("uuid", sr_uuid) + _element("allocation", allocation))
    body += _sector(_element("name_label", esc(name_label, quote=False))[:SECTOR])
    body += _sector(_element("name_description", esc(name_description, quote=False))[:SECTOR])
    for vdi in vdis or []:
        label = esc(str(vdi.get("name_label", "")), quote=False)
        desc = esc(str(vdi.get("name_description", "")), quote=False)
        limit = SECTOR - 2 * len("name_label") - 2 * len("name_description") - len("vdi") - 12
        if len(label.encode()) + len(desc.encode()) > limit:
            label, desc = label[: limit // 2], desc[: limit // 2]
        body += _sector(b"<vdi>" + _element("name_label", label)
                        + _element("name_description", desc))
        rest = {"uuid": vdi["uuid"], "is_a_snapshot": 0, "snapshot_of": "", "snapshot_time": "",
                "type": "user", "vdi_type": "vhd", "read_only": 0, "managed": 1,
                "metadata_of_pool": "", "deleted": 0}
        rest.update({k: v for k, v in vdi.items() if k not in ("name_label", "name_description")})
        body += _sector(b"".join(_element(k, v) for k, v in rest.items()) + b"</vdi>")
    length = SECTOR + len(body)
    header = f"{HDR_STRING}:{length:<{MAX_METADATA_LENGTH_SIZE}}:{MD_MAJOR}:{MD_MINOR}".encode()
    out = _sector(header) + body
    if size is not None:
        out = out.ljust(size, b"\0")
    return out


# -- the SR on top of a VG -----------------------------------------------------------------------
@dataclass
class Vdi:
    uuid: str
    lv_name: str
    kind: str                      # 'vhd' | 'raw'
    label: str | None
    description: str | None
    mgt_deleted: bool | None       # the MGT slot's deleted flag (None: no slot)
    lv_status: str                 # 'live' | 'deleted' (absent from the newest generation)
    seqnos: list[int] = field(default_factory=list)   # generations that hold the LV


@dataclass
class StorageRepository:
    """XenServer's meaning of one VG, applied on top of the LVM model: the SR uuid in the VG's
    name, the MGT volume's content, and one Vdi per `VHD-`/`LV-` LV of any generation (its
    name label and description from the MGT slot of its uuid, deleted slots included)."""

    uuid: str | None
    vg_name: str
    mgt: MgtContent | None
    vdis: list[Vdi] = field(default_factory=list)
    _slots: dict[str, MgtVdi] | None = field(default=None, repr=False, compare=False)

    def slot(self, lv_name: str) -> MgtVdi | None:
        """The MGT slot of the VDI an LV name holds (None: not a VDI, or no slot)."""
        uuid = lv_vdi_uuid(lv_name)
        if self.mgt is None or uuid is None:
            return None
        if self._slots is None:
            self._slots = self.mgt.by_uuid()
        return self._slots.get(uuid)

    def label(self, lv_name: str) -> str | None:
        """The name label XenCenter shows for the VDI in `lv_name` (None when the MGT has none)."""
        slot = self.slot(lv_name)
        return slot.name_label if slot is not None else None

    def mgt_json(self) -> dict[str, Any] | None:
        """The MGT content as `srsalvage lvm --json` gives it (cli-contract.md)."""
        m = self.mgt
        if m is None:
            return None
        return {"sr_uuid": m.sr_uuid, "name_label": m.sr_name_label,
                "name_description": m.sr_name_description, "allocation": m.allocation,
                "header_ok": m.header_ok, "vdis": [v.to_json() for v in m.vdis]}


def read_mgt(space: ByteSpace, vg: VolumeGroup) -> tuple[MgtContent | None, int | None]:
    """The MGT volume of the newest generation that has one."""
    for gen in vg.generations:
        lv = gen.lvs.get("MGT")
        if lv is None:
            continue
        try:
            lvs = lv_space(space, vg, gen, lv)      # the one LV-as-bytes path (core.vdi)
        except SrsalvageError:
            return None, None
        if not lvs.runs:
            return None, None
        return parse_mgt(lvs.read(0, min(lvs.size, MGT_BYTES)), lvs.locate(0) or 0), lvs.locate(0)
    return None, None


# sm's journals: LVs named `<type>_<id>_<value>` tagged `journaler` (xapi-project/sm
# libs/sm/journaler.py Journaler._getNameLV); what an interrupted one means, by type
# (lvhdutil.py inflate / JRN_INFLATE, LVHDSR.py _snapshot / JRN_CLONE, cleanup.py JRN_LEAF,
# JRN_RELINK, JRN_COALESCE)
JOURNAL_RE = re.compile(r"(inflate|clone|leaf|relink|coalesce)_([0-9a-fA-F-]{36})_(.{1,80})")
JOURNAL_MEANING = {
    "inflate": "was being inflated (LV grown for a VHD write); its VHD footer may still sit at "
               "the end of the old LV size ({value} bytes) or be missing at the new LV end: "
               "read the footer copy at offset 0, and the LV may be longer than its VHD needs",
    "clone": "was being snapshotted or cloned; the base copy and the new leaf may be half made "
             "(sm undoes the clone on the next attach): check which VHD is the parent before "
             "exporting the chain",
    "leaf": "was being leaf-coalesced into its parent; the parent may hold some of the leaf's "
            "blocks already: export the chain, not the parent alone",
    "relink": "had its children being re-pointed to a new parent; some children may name the "
              "old parent in their header",
    "coalesce": "was being coalesced into its parent; the parent may hold part of the child",
}


def journal_findings(vg: VolumeGroup, mgt: MgtContent | None) -> list[Finding]:
    """One `sm-journal` finding per journal LV of the reference generation: which VDI was in
    the middle of which operation when the SR stopped, and what that means for its VHD."""
    ref = vg.reference
    if ref is None:
        return []
    names = mgt.by_uuid() if mgt is not None else {}
    out = []
    for lv in ref.lvs.values():
        m = JOURNAL_RE.fullmatch(lv.name)
        if m is None:
            continue
        op, uuid, value = m.group(1), m.group(2).lower(), m.group(3)
        slot = names.get(uuid)
        label = f' "{slot.name_label}"' if slot is not None and slot.name_label else ""
        details: dict[str, Any] = {"vg": vg.name, "lv": lv.name, "operation": op,
                                   "vdi_uuid": uuid, "value": value}
        if op == "inflate" and value.isdigit():
            details["lv_bytes_before"] = int(value)
        out.append(Finding("sm-journal", None, "warning",
                           f"VG {vg.name}: sm journal {lv.name}: VDI {uuid}{label} "
                           + JOURNAL_MEANING[op].format(value=value)
                           + " (an operation interrupted: the SR stopped before sm finished it)",
                           details))
    return out


def read_sr(space: ByteSpace, vg: VolumeGroup) -> tuple[StorageRepository, list[Finding]]:
    """XenServer's meaning of `vg` (its MGT volume read from the newest generation that has
    one), and what it says: the MGT's own findings, an SR uuid that disagrees with the VG name,
    sm's journal LVs named as interrupted operations."""
    try:
        mgt, where = read_mgt(space, vg)
    except (ValueError, OverflowError) as exc:
        return sr_model(vg, None), [Finding("mgt-unreadable", None, "warning",
                                            f"VG {vg.name}: MGT unreadable: {exc}")]
    sr = sr_model(vg, mgt)
    if mgt is None:
        return sr, journal_findings(vg, None)
    findings = list(mgt.findings)
    if mgt.sr_uuid and sr.uuid and mgt.sr_uuid.lower() != sr.uuid:
        findings.append(Finding("mgt-sr-uuid", where, "warning",
                                f"MGT says SR {mgt.sr_uuid}, the VG name says {sr.uuid}"))
    return sr, findings + journal_findings(vg, mgt)


def sr_model(vg: VolumeGroup, mgt: MgtContent | None) -> StorageRepository:
    """The SR view of a VG: one Vdi per VHD-/LV- uuid seen in any generation."""
    slots = mgt.by_uuid() if mgt else {}
    sr = StorageRepository(vg_sr_uuid(vg.name), vg.name, mgt)
    seen: dict[str, Vdi] = {}
    for gen in vg.generations:
        for lv in gen.lvs.values():
            uuid = lv_vdi_uuid(lv.name)
            if uuid is None:
                continue
            vdi = seen.get(lv.name)
            if vdi is None:
                slot = slots.get(uuid)
                vdi = seen[lv.name] = Vdi(uuid, lv.name, lv_kind(lv.name),
                                          slot.name_label if slot else None,
                                          slot.name_description if slot else None,
                                          slot.deleted if slot else None, lv.status)
            vdi.seqnos.append(gen.seqno)
    sr.vdis = list(seen.values())
    return sr
