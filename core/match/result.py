"""What a reconstruction returns: `Reconstruction` with one `VdiMap` per VDI, and the
`reconstruct --json` document they write (cli-contract.md), which `export --map` reads back.
Split out of core/match/reconstruct.py unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.findings import Finding
from core.match.anchors import VhdAnchor
from core.match.assign import Placement, VdiState
from core.match.grid import Grid
from core.match.names import locator_lv
from core.spaces import pes_to_map_runs
from core.xen_names import lv_kind


@dataclass
class VdiMap:
    """One VDI's rebuilt map."""

    key: str
    lv: str | None
    vhd_uuid: str | None
    virtual_bytes: int | None
    vhd_bytes: int | None
    extents_needed: int
    extents: list[tuple[int, Placement]]
    missing_les: list[int]
    complete: bool
    kind: str = "vhd"
    status: str = "found"            # live | deleted (metadata) | found (VHD structure only)
    anchor_pe: int | None = None
    parent_uuid: str | None = None
    hidden: bool = False
    ambiguous: dict[int, list[int]] = field(default_factory=dict)
    footer_pe: int | None = None
    lv_tags: list[str] = field(default_factory=list)
    lv_status: list[str] | None = None
    lv_source: str | None = None     # where `lv` comes from: metadata | parent-locator | mgt
    parent_lv: str | None = None     # the LV its header's parent name (locator) names
    unreadable_les: list[int] | None = None   # LEs on unreadable evidence (core.unreadable)

    @property
    def pes(self) -> list[int | None]:
        out: list[int | None] = [None] * self.extents_needed
        for le, p in self.extents:
            if le < len(out):
                out[le] = p.pe
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "lv": self.lv, "vhd_uuid": self.vhd_uuid,
            "virtual_bytes": self.virtual_bytes, "vhd_bytes": self.vhd_bytes,
            "extents_needed": self.extents_needed,
            "map": pes_to_map_runs(self.pes),
            "extents": [{"le": le, "pe": p.pe, "confidence": p.confidence, "source": p.source,
                         **({"note": p.note} if p.note else {})} for le, p in self.extents],
            "missing_les": self.missing_les, "complete": self.complete,
            "kind": self.kind, "status": self.status, "anchor_pe": self.anchor_pe,
            "parent_uuid": self.parent_uuid, "hidden": self.hidden,
            "ambiguous": [{"le": le, "candidates": pes} for le, pes in sorted(self.ambiguous.items())],
            "footer_pe": self.footer_pe,
            **({"lv_source": self.lv_source} if self.lv_source else {}),
            **({"parent_lv": self.parent_lv} if self.parent_lv else {}),
            **({"unreadable_les": self.unreadable_les}
               if self.unreadable_les is not None else {}),
        }


@dataclass
class Reconstruction:
    image_path: str
    image_bytes: int
    grid: Grid | None
    vdis: list[VdiMap]
    findings: list[Finding]
    orphans: list[dict[str, Any]]
    anchors: list[VhdAnchor] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    # the MGT volume found by its header when no metadata maps it: {"pe", "sr_uuid", ...}
    mgt: dict[str, Any] | None = None

    def vdi(self, key: str) -> VdiMap | None:
        return next((v for v in self.vdis if v.key == key or v.lv == key
                     or v.vhd_uuid == key.lower().removeprefix("vhd:")), None)

    def to_json(self) -> dict[str, Any]:
        groups = []
        if self.grid:
            groups.append(self.grid.to_json())
            if self.mgt is not None:
                groups[0]["mgt"] = dict(self.mgt)
        return {
            "image": {"path": self.image_path, "bytes": self.image_bytes},
            "volume_groups": groups,
            "vdis": [v.to_json() for v in self.vdis],
            "orphans": self.orphans,
            "findings": [f.to_json() for f in self.findings],
        }


def _state_key(v: VdiState) -> str:
    if v.lv_name:
        return v.lv_name
    return f"vhd:{v.anchor.uid_str}" if v.anchor is not None else f"vdi{v.index}"


def _vdi_map(v: VdiState, E: int, meta_status: str | None, lv) -> VdiMap:
    a = v.anchor
    if v.le_count is not None:
        needed = v.le_count
    elif v.pred is not None:
        needed = max([v.pred.last_data_le + 1] + [le + 1 for le in v.placed])
        if v.pred.footer_le is not None:
            needed = max(needed, v.pred.footer_le + 1)
    else:
        needed = max([le + 1 for le in v.placed], default=0)
    extents = sorted(v.placed.items())
    placed = {le for le, _ in extents}
    missing = [le for le in range(needed) if le not in placed]
    footer_known = (v.le_count is not None or a is None or not a.lvhd)
    complete = not missing and footer_known
    if a is not None and a.lvhd:
        vhd_bytes = needed * E if v.le_count is not None else None
    elif a is not None:
        vhd_bytes = a.data_end + 512
    else:
        vhd_bytes = None
    kind = lv_kind(lv.name) if lv is not None else "vhd"
    return VdiMap(
        key=_state_key(v), lv=v.lv_name, vhd_uuid=a.uid_str if a is not None else None,
        virtual_bytes=a.current_size if a is not None else None, vhd_bytes=vhd_bytes,
        extents_needed=needed, extents=extents, missing_les=missing, complete=complete,
        kind=kind, status=meta_status or "found", anchor_pe=a.pe if a is not None else None,
        parent_uuid=(a.to_json()["parent_uuid"] if a is not None else None),
        hidden=bool(a.hidden) if a is not None else False, ambiguous=dict(v.ambiguous),
        footer_pe=v.footer_pe, lv_tags=list(getattr(lv, "tags", []) or []),
        lv_status=list(getattr(lv, "lvm_status", []) or []) or None, parent_lv=locator_lv(a))
