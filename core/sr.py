"""The disk as a XenServer technician reads it: the LVM analysis with each VG's SR meaning.

`analyse_sr(ev)` is what `srsalvage lvm` prints and what the workstation shows: the LVM view of
the disk (core.lvm.analyse.analyse_disk: partitions, PVs, VGs, every metadata generation), then,
on top of it, what XenServer makes of each VG (core.xen.read_sr: the SR uuid in the VG name, the
MGT volume's name labels, sm's journals). The LVM model itself stays free of XenServer: a
`LogicalVolume` has a name, and `SrReport.label(vg, lv)` / `core.xen_names.lv_kind(lv.name)`
say what that name means to the SR.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any, Iterable

from core.lvm.analyse import DiskReport, analyse_disk
from core.lvm.found import DiskHits
from core.lvm.model import Generation, LogicalVolume, VolumeGroup
from core.progress import ProgressFn
from core.spaces import ByteSpace
from core.xen import StorageRepository, read_sr
from core.xen_names import lv_kind, lv_vdi_uuid, vg_sr_uuid


@dataclass
class SrReport(DiskReport):
    """A DiskReport with XenServer's meaning of each VG (`srs`, by VG name and id)."""

    srs: dict[tuple[str, str], StorageRepository] = field(default_factory=dict)

    def sr(self, vg: VolumeGroup) -> StorageRepository | None:
        return self.srs.get((vg.name, vg.id))

    def label(self, vg: VolumeGroup | None, lv: LogicalVolume) -> str | None:
        """The VDI's name label in `vg`'s MGT volume (None: no MGT, no slot, not a VDI)."""
        sr = self.sr(vg) if vg is not None else None
        return sr.label(lv.name) if sr is not None else None

    def to_json(self, image_path: str) -> dict[str, Any]:
        """`srsalvage lvm --json` (cli-contract.md)."""
        return {"image": {"path": image_path, "bytes": self.image_bytes},
                "partitions": [p.to_json() for p in self.partitions],
                "volume_groups": [vg_json(vg, self.sr(vg)) for vg in self.volume_groups],
                "findings": [f.to_json() for f in self.findings],
                "unreadable": [list(r) for r in self.unreadable]}


def with_sr_meaning(space: ByteSpace, report: DiskReport) -> SrReport:
    """`report` with each VG's SR meaning read (the MGT volume through the one LV-as-bytes
    path); what the SR layer finds is added to the report's findings, after the LVM ones."""
    out = SrReport(**{f.name: getattr(report, f.name) for f in fields(DiskReport)})
    out.findings = list(report.findings)
    for vg in report.volume_groups:
        sr, found = read_sr(space, vg)
        out.srs[(vg.name, vg.id)] = sr
        out.findings += found
    return out


def analyse_sr(ev, backups: Iterable[str] = (), cancel: threading.Event | None = None,
               progress: ProgressFn | None = None, search_stray: bool = True,
               pv_offsets: Iterable[Any] = (), hits: DiskHits | None = None) -> SrReport:
    """core.lvm.analyse.analyse_disk (the same arguments), then each VG's SR meaning."""
    report = analyse_disk(ev, backups=backups, cancel=cancel, progress=progress,
                          search_stray=search_stray, pv_offsets=pv_offsets, hits=hits)
    return with_sr_meaning(ev, report)


# -- JSON (cli-contract.md `lvm --json`) -----------------------------------------------------------
def lv_json(lv: LogicalVolume, multi_pv: bool, sr: StorageRepository | None) -> dict[str, Any]:
    return {"name": lv.name, "vdi_uuid": lv_vdi_uuid(lv.name), "kind": lv_kind(lv.name),
            "label": sr.label(lv.name) if sr is not None else None,
            "map": lv.map_runs_pv() if multi_pv else lv.map_runs, "status": lv.status,
            "claimed_by": {str(k): v for k, v in sorted(lv.claimed_by.items())},
            "id": lv.id, "le_count": lv.le_count, "tags": list(lv.tags),
            "lvm_status": list(lv.lvm_status)}


def generation_json(gen: Generation, multi_pv: bool, sr: StorageRepository | None
                    ) -> dict[str, Any]:
    doc = {"seqno": gen.seqno, "source": gen.source, "offset": gen.offset,
           "crc_ok": gen.crc_ok, "current": gen.current, "description": gen.description,
           "creation_time": gen.creation_time,
           "copies": [c.to_json() for c in gen.copies],
           "partial": gen.partial,
           "logical_volumes": [lv_json(lv, multi_pv, sr) for lv in gen.lvs.values()]}
    if gen.parse_error:
        doc["parse_error"] = gen.parse_error
    if gen.note:
        doc["note"] = gen.note
    return doc


def vg_json(vg: VolumeGroup, sr: StorageRepository | None) -> dict[str, Any]:
    multi = len(vg.pvs) > 1
    return {"name": vg.name, "sr_uuid": vg_sr_uuid(vg.name), "id": vg.id,
            "extent_bytes": vg.extent_bytes, "data_offset": vg.data_offset,
            "pvs": [{"name": p.name, "id": p.id, "offset": p.offset, "label_found": p.label_found,
                     "pe_start": p.pe_start, "pe_count": p.pe_count, "bytes": p.device_size,
                     "how_found": p.inferred_by, "anchor": p.anchor,
                     "data_offset": p.data_offset} for p in vg.pvs],
            "current_seqno": vg.current.seqno if vg.current else None,
            "mgt": sr.mgt_json() if sr is not None else None,
            "generations": [generation_json(g, multi, sr) for g in vg.generations]}
