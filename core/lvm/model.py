"""The LVM volume-group model: what one metadata generation says, and what the disk holds.

Two levels:
  * `VGMetadata` is the content of ONE metadata text (one generation): VG name/id/seqno/
    extent_size, `PVMetadata` list, `LogicalVolume`s with `Segment`s.  It is what the parser
    produces (`VGMetadata.from_text`) and what the writer consumes
    (`core.lvm.writer.format_vg_metadata`), so the demo builder and the reconstruction
    engineer build one in code and write it out for `vgcfgrestore -f`.
  * `VolumeGroup` is what the disk analysis found for one VG: its `PhysicalVolume`s (where on
    the image, label or not), every `Generation` (each with its copies and its VGMetadata),
    `current` (what LVM would use), `extent_bytes`, `data_offset`.

Units: inside VGMetadata sizes are as in the text (extent_size, pe_start, dev_size in 512-byte
sectors; formats.md pitfall 5); PhysicalVolume.pe_start and everything else in bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.errors import SrsalvageError
from core.lvm.textformat import ConfigSection, ConfigSyntaxError, parse_config

SECTOR = 512
MAX_EXTENTS = 1 << 32          # LE/PE counts above this are garbage (PE numbers are u32 in lvm2)
MAX_SEGMENTS = 1 << 16         # per LV; a real LV has a handful
MAX_PER_LE_LIST = 1 << 24      # pes() of an LV larger than 64 TiB at 4 MiB is refused
# Generation.origin of a generation no metadata text gave: the extent maps the reconstruction
# rebuilt from VHD structure (core.match.rebuilt)
RECONSTRUCT = "reconstruct"


class MetadataError(SrsalvageError):
    """A metadata text parsed as config but does not describe a VG."""


def _int(section: dict, key: str, default: int | None = None, lo: int = 0,
         hi: int = 1 << 63) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        if default is not None and key not in section:
            return default
        raise MetadataError(f"{getattr(section, 'name', '')}: {key} is not an integer: {value!r}")
    if not lo <= value <= hi:
        raise MetadataError(f"{getattr(section, 'name', '')}: {key} = {value} out of range")
    return value


def _strlist(section: dict, key: str) -> list[str]:
    value = section.get(key, [])
    if not isinstance(value, list):
        return [str(value)]
    return [str(v) for v in value]


def _str(section: dict, key: str, default: str | None = None) -> str | None:
    value = section.get(key, default)
    return value if isinstance(value, str) else default


def _rest(section: dict, known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in known}


# -- one generation's content ------------------------------------------------------------------
@dataclass
class Segment:
    """One `segmentN { }`: LEs [start_extent, start_extent+extent_count) on `stripes`."""

    start_extent: int
    extent_count: int
    type: str = "striped"
    stripe_count: int = 1
    stripe_size: int | None = None              # sectors, only when stripe_count > 1
    stripes: list[tuple[str, int]] = field(default_factory=list)   # (pv name, first PE)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def linear(self) -> bool:
        return self.type == "striped" and self.stripe_count == 1 and len(self.stripes) == 1

    def locations(self) -> list[tuple[str, int] | None]:
        """(pv, pe) for each LE of the segment; None where an LE has no single PE (striping
        over several PVs spreads one LE over all stripes; thin/raid/... are not mapped)."""
        if self.linear:
            pv, pe = self.stripes[0]
            return [(pv, pe + i) for i in range(self.extent_count)]
        return [None] * self.extent_count

    @classmethod
    def from_config(cls, sec: ConfigSection) -> "Segment":
        start = _int(sec, "start_extent", hi=MAX_EXTENTS)
        count = _int(sec, "extent_count", hi=MAX_EXTENTS)
        seg_type = _str(sec, "type", "striped") or "striped"
        stripe_count = _int(sec, "stripe_count", 1, hi=1 << 16)
        stripe_size = sec.get("stripe_size")
        raw = sec.get("stripes", [])
        stripes: list[tuple[str, int]] = []
        if isinstance(raw, list):
            if len(raw) % 2 or len(raw) > 2 * (1 << 16):
                raise MetadataError(f"{sec.name}: stripes list of odd or absurd length {len(raw)}")
            for name, pe in zip(raw[0::2], raw[1::2]):
                if not isinstance(name, str) or not isinstance(pe, int) or not 0 <= pe < MAX_EXTENTS:
                    raise MetadataError(f"{sec.name}: bad stripe entry {name!r}, {pe!r}")
                stripes.append((name, pe))
        known = {"start_extent", "extent_count", "type", "stripe_count", "stripe_size", "stripes"}
        return cls(start, count, seg_type, stripe_count,
                   stripe_size if isinstance(stripe_size, int) else None, stripes,
                   _rest(sec, known))


@dataclass
class LogicalVolume:
    """An LV in one generation.  `status` is the analysis verdict ('live' / 'deleted');
    LVM's own status flags are `lvm_status` (["READ", "WRITE", "VISIBLE"])."""

    name: str
    id: str = ""
    lvm_status: list[str] = field(default_factory=lambda: ["READ", "WRITE", "VISIBLE"])
    flags: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    creation_time: int | None = None
    creation_host: str | None = None
    segments: list[Segment] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # filled by the analysis (core.lvm.generations, core.xen)
    status: str = "live"
    claimed_by: dict[int, str] = field(default_factory=dict)
    # LE ranges [start, end) the metadata maps past the end of the evidence (or of its PV),
    # cut off by the analysis (core.lvm.analyse._bound_by_disk) and named in a finding
    past_disk: list[tuple[int, int]] = field(default_factory=list)

    @property
    def le_count(self) -> int:
        return max((s.start_extent + s.extent_count for s in self.segments), default=0)

    @property
    def read_only(self) -> bool:
        return "WRITE" not in self.lvm_status

    @property
    def pv_names(self) -> list[str]:
        names: list[str] = []
        for seg in self.segments:
            for pv, _ in seg.stripes:
                if pv not in names:
                    names.append(pv)
        return names

    def locations(self) -> list[tuple[str, int] | None]:
        """(pv name, pe) per LE; None for LEs no segment maps (or not linearly mapped)."""
        n = self.le_count
        if n > MAX_PER_LE_LIST:
            raise MetadataError(f"LV {self.name}: {n} extents is beyond what is mapped per LE")
        out: list[tuple[str, int] | None] = [None] * n
        for seg in self.segments:
            for i, loc in enumerate(seg.locations()):
                out[seg.start_extent + i] = loc
        return out

    def pes(self) -> list[int | None]:
        """PE per LE (None: unmapped).  For VGs of several PVs see `locations()`."""
        return [None if loc is None else loc[1] for loc in self.locations()]

    def map_runs_pv(self) -> list[list[Any]]:
        """[[le_start, pe_start, count, pv_name], ...] maximal runs in LE order (from the
        segments, so its cost does not grow with the LV's size)."""
        out: list[list[Any]] = []
        for seg in sorted(self.segments, key=lambda s: s.start_extent):
            if not seg.linear or seg.extent_count <= 0:
                continue
            pv, pe = seg.stripes[0]
            le = seg.start_extent
            if out and out[-1][3] == pv and out[-1][0] + out[-1][2] == le \
                    and out[-1][1] + out[-1][2] == pe:
                out[-1][2] += seg.extent_count
            else:
                out.append([le, pe, seg.extent_count, pv])
        return out

    @property
    def map_runs(self) -> list[list[int]]:
        """[[le_start, pe_start, count], ...] (the JSON `map` of a single-PV VG)."""
        return [r[:3] for r in self.map_runs_pv()]

    @classmethod
    def from_config(cls, name: str, sec: ConfigSection) -> "LogicalVolume":
        segs: list[Segment] = []
        for key, sub in sec.sections():
            if re.fullmatch(r"segment\d+", key):
                if len(segs) >= MAX_SEGMENTS:
                    raise MetadataError(f"LV {name}: more than {MAX_SEGMENTS} segments")
                segs.append(Segment.from_config(sub))
        segs.sort(key=lambda s: s.start_extent)
        ctime = sec.get("creation_time")
        known = {"id", "status", "flags", "tags", "creation_time", "creation_host",
                 "segment_count"} | {k for k, _ in sec.sections() if re.fullmatch(r"segment\d+", k)}
        return cls(name=name, id=_str(sec, "id", "") or "", lvm_status=_strlist(sec, "status"),
                   flags=_strlist(sec, "flags"), tags=_strlist(sec, "tags"),
                   creation_time=ctime if isinstance(ctime, int) else None,
                   creation_host=_str(sec, "creation_host"), segments=segs,
                   extra=_rest(sec, known))

    def copy(self) -> "LogicalVolume":
        """An independent copy (the analysis sets status/claimed_by per generation)."""
        return LogicalVolume(self.name, self.id, list(self.lvm_status), list(self.flags),
                             list(self.tags), self.creation_time, self.creation_host,
                             [Segment(s.start_extent, s.extent_count, s.type, s.stripe_count,
                                      s.stripe_size, list(s.stripes), dict(s.extra))
                              for s in self.segments], dict(self.extra), self.status,
                             dict(self.claimed_by))


@dataclass
class PVMetadata:
    """A `pvN { }` entry of the text.  dev_size and pe_start are in sectors."""

    name: str
    id: str
    device: str | None = None
    lvm_status: list[str] = field(default_factory=lambda: ["ALLOCATABLE"])
    flags: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    dev_size: int = 0
    pe_start: int = 2048
    pe_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, sec: ConfigSection) -> "PVMetadata":
        known = {"id", "device", "status", "flags", "tags", "dev_size", "pe_start", "pe_count"}
        return cls(name=name, id=_str(sec, "id", "") or "", device=_str(sec, "device"),
                   lvm_status=_strlist(sec, "status"), flags=_strlist(sec, "flags"),
                   tags=_strlist(sec, "tags"), dev_size=_int(sec, "dev_size", 0),
                   pe_start=_int(sec, "pe_start", 0, hi=1 << 48),
                   pe_count=_int(sec, "pe_count", 0, hi=MAX_EXTENTS), extra=_rest(sec, known))


@dataclass
class VGMetadata:
    """The content of one metadata text.  extent_size in sectors (8192 = 4 MiB)."""

    name: str
    id: str
    seqno: int
    extent_size: int = 8192
    pvs: list[PVMetadata] = field(default_factory=list)
    lvs: dict[str, LogicalVolume] = field(default_factory=dict)
    format: str = "lvm2"
    lvm_status: list[str] = field(default_factory=lambda: ["RESIZEABLE", "READ", "WRITE"])
    flags: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    max_lv: int = 0
    max_pv: int = 0
    metadata_copies: int = 0
    extra: dict[str, Any] = field(default_factory=dict)     # unknown keys and sections, kept
    header: dict[str, Any] = field(default_factory=dict)    # contents/version/description/...

    @property
    def extent_bytes(self) -> int:
        return self.extent_size * SECTOR

    @property
    def description(self) -> str | None:
        value = self.header.get("description")
        return value if isinstance(value, str) else None

    @property
    def creation_time(self) -> int | None:
        value = self.header.get("creation_time")
        return value if isinstance(value, int) else None

    def pv(self, name: str) -> PVMetadata | None:
        return next((p for p in self.pvs if p.name == name), None)

    @classmethod
    def from_config(cls, root: ConfigSection) -> "VGMetadata":
        vg_sections = [(k, s) for k, s in root.sections()
                       if "id" in s and ("seqno" in s or "physical_volumes" in s)]
        if not vg_sections:
            raise MetadataError("no volume group section (a section with id and seqno)")
        name, sec = vg_sections[0]
        pvs: list[PVMetadata] = []
        pvsec = sec.get("physical_volumes")
        if isinstance(pvsec, ConfigSection):
            pvs = [PVMetadata.from_config(k, s) for k, s in pvsec.sections()]
        lvs: dict[str, LogicalVolume] = {}
        lvsec = sec.get("logical_volumes")
        if isinstance(lvsec, ConfigSection):
            for k, s in lvsec.sections():
                lvs[k] = LogicalVolume.from_config(k, s)
        known = {"id", "seqno", "format", "status", "flags", "tags", "extent_size", "max_lv",
                 "max_pv", "metadata_copies", "physical_volumes", "logical_volumes"}
        header = {k: v for k, v in root.items() if not isinstance(v, ConfigSection)}
        return cls(name=name, id=_str(sec, "id", "") or "",
                   seqno=_int(sec, "seqno", hi=1 << 32),
                   extent_size=_int(sec, "extent_size", 8192, lo=1, hi=1 << 40),
                   pvs=pvs, lvs=lvs, format=_str(sec, "format", "lvm2") or "lvm2",
                   lvm_status=_strlist(sec, "status"), flags=_strlist(sec, "flags"),
                   tags=_strlist(sec, "tags"), max_lv=_int(sec, "max_lv", 0),
                   max_pv=_int(sec, "max_pv", 0), metadata_copies=_int(sec, "metadata_copies", 0),
                   extra=_rest(sec, known), header=header)

    @classmethod
    def from_text(cls, text: str | bytes) -> "VGMetadata":
        """Parse raw or backup-form text (ConfigSyntaxError / MetadataError on bad input)."""
        return cls.from_config(parse_config(text))


def try_parse(text: bytes) -> tuple[VGMetadata | None, str | None]:
    """(metadata, None) or (None, one-line reason)."""
    try:
        return VGMetadata.from_text(text), None
    except (ConfigSyntaxError, MetadataError) as exc:
        return None, str(exc)
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


# -- what the disk holds -----------------------------------------------------------------------
@dataclass
class Copy:
    """One place a generation's text was found.

    source  'mda' (inside a metadata area's ring), 'scan' (stray text found on the disk outside
            any known metadata area) or 'backup' (a .vg file given on the command line)
    offset  absolute image offset of the first byte (for 'backup': offset in the file)
    """

    source: str
    offset: int
    length: int                 # bytes including the NUL when there is one
    checksum: int               # lvm_crc of the bytes
    crc_ok: bool | None         # against the raw_locn that points here; None: nothing to check
    wrapped: bool = False       # continued at the start of the ring
    partial: bool = False       # cut off (no NUL where expected, overwritten, or unparsable)
    slot: str | None = None     # 'committed' / 'precommitted' when a raw_locn points here
    path: str | None = None     # the backup file
    pv_offset: int | None = None  # the PV whose mda holds it

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"source": self.source, "offset": self.offset,
                               "bytes": self.length, "crc_ok": self.crc_ok}
        if self.wrapped:
            doc["wrapped"] = True
        if self.partial:
            doc["partial"] = True
        if self.slot:
            doc["slot"] = self.slot
        if self.path:
            doc["path"] = self.path
        return doc


@dataclass
class Generation:
    """One metadata generation: a seqno + text, every place it was found, and its content."""

    seqno: int
    text: bytes                         # without the NUL
    metadata: VGMetadata | None
    copies: list[Copy] = field(default_factory=list)
    current: bool = False
    parse_error: str | None = None
    note: str | None = None             # e.g. "same seqno as another, different text"
    # where the content comes from when no copy on the disk or in a backup holds it:
    # RECONSTRUCT for the maps rebuilt from VHD structure (core.match.rebuilt)
    origin: str | None = None

    @property
    def source(self) -> str:
        if self.origin is not None:
            return self.origin
        return self.copies[0].source if self.copies else "scan"

    @property
    def rebuilt(self) -> bool:
        """Extent maps rebuilt from VHD structure, not read from a metadata text."""
        return self.origin == RECONSTRUCT

    @property
    def offset(self) -> int:
        return self.copies[0].offset if self.copies else 0

    @property
    def crc_ok(self) -> bool:
        """True when some copy's checksum matches the raw_locn pointing to it, or (with no
        raw_locn) when the copy is complete and parses: text that is whole and valid."""
        if any(c.crc_ok for c in self.copies):
            return True
        if any(c.crc_ok is False for c in self.copies) and all(c.crc_ok is not None for c in self.copies):
            return False
        return self.metadata is not None and not self.partial

    @property
    def partial(self) -> bool:
        return bool(self.copies) and all(c.partial for c in self.copies)

    @property
    def vg_name(self) -> str | None:
        return self.metadata.name if self.metadata else None

    @property
    def vg_id(self) -> str | None:
        return self.metadata.id if self.metadata else None

    @property
    def description(self) -> str | None:
        return self.metadata.description if self.metadata else None

    @property
    def creation_time(self) -> int | None:
        return self.metadata.creation_time if self.metadata else None

    @property
    def lvs(self) -> dict[str, LogicalVolume]:
        return self.metadata.lvs if self.metadata else {}

    @property
    def extent_bytes(self) -> int | None:
        return self.metadata.extent_bytes if self.metadata else None


@dataclass
class PhysicalVolume:
    """A PV on the image.  offset: absolute start; pe_start in bytes (from the PV start)."""

    name: str
    id: str
    offset: int | None          # None: the PV is not on this image (known from the text only)
    label_found: bool
    pe_start: int
    pe_count: int
    device_size: int | None = None      # bytes (label) or dev_size*512 (text)
    mda_offsets: list[int] = field(default_factory=list)   # absolute offsets of mda headers
    inferred_by: list[str] = field(default_factory=list)   # how `offset` was established
    # what placed `offset`: label | mda-header | metadata-area | content | given (core.lvm.anchor)
    anchor: str | None = None

    @property
    def data_offset(self) -> int | None:
        return None if self.offset is None else self.offset + self.pe_start


@dataclass
class VolumeGroup:
    """One VG (name + id) as found on the image."""

    name: str
    id: str
    pvs: list[PhysicalVolume] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)   # newest first
    current: Generation | None = None

    @property
    def newest(self) -> Generation | None:
        """The highest-seqno generation whose text parsed."""
        return next((g for g in self.generations if g.metadata is not None), None)

    @property
    def reference(self) -> Generation | None:
        """What `deleted` and `claimed_by` are judged against: current, else the newest."""
        return self.current or self.newest

    @property
    def extent_bytes(self) -> int | None:
        ref = self.reference
        return ref.metadata.extent_bytes if ref and ref.metadata else None

    @property
    def data_offset(self) -> int | None:
        """Absolute image offset of PE 0 (single-PV VGs; the first PV otherwise)."""
        return next((p.data_offset for p in self.pvs if p.offset is not None), None)

    def pv_by_name(self, name: str) -> PhysicalVolume | None:
        return next((p for p in self.pvs if p.name == name), None)

    def pv_data_offsets(self) -> dict[str, int]:
        return {p.name: p.data_offset for p in self.pvs if p.offset is not None}  # type: ignore[misc]

    def generation(self, seqno: int) -> Generation | None:
        return next((g for g in self.generations if g.seqno == seqno), None)
