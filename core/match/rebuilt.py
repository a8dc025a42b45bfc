"""A reconstruction as the LVM model: the VDIs rebuilt from VHD structure as one VolumeGroup.

When no metadata generation survives, the reconstruction (core.match.reconstruct) still knows
the extent grid and each VDI's map. `rebuilt_volume_group(rec)` gives them the shape every reader
already takes: a `core.lvm.model.VolumeGroup` with one `PhysicalVolume` (where the grid says
PE 0 is) and one `Generation` whose origin is `RECONSTRUCT`, holding a `LogicalVolume` per VDI.
So the workstation's tree, map, editor, checks and export, and `core.lvm.space.lv_space`, read
a rebuilt VDI exactly like one the metadata describes.

An LE the reconstruction could not place is an lvm2 `error` segment (lvm2 lib/error/errseg.c:
a segment type that maps no PE), so an LV keeps the length its VHD needs, and a gap reads as
zeros through `lv_space` and is counted by the tree, never guessed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.case import Extent
from core.lvm.model import (RECONSTRUCT, Generation, LogicalVolume, PhysicalVolume, PVMetadata,
                            Segment, VGMetadata, VolumeGroup)

if TYPE_CHECKING:   # the reconstruction's own types (only read here, never built)
    from core.match.reconstruct import Reconstruction, VdiMap

REBUILT_VG_NAME = "reconstructed (no LVM metadata)"
REBUILT_DESCRIPTION = "extent maps rebuilt from VHD structure"
REBUILT_STATUS = "rebuilt"      # LogicalVolume.status of a rebuilt VDI (the tree counts its gaps)
REBUILT_PV = "pv0"
SECTOR = 512


def rebuilt_lv_name(vdi: "VdiMap") -> str:
    """The LV a rebuilt VDI is shown as: its LV name when one survived (metadata, a child's
    parent locator, MGT), else its map key (`vhd:<unique id>`)."""
    return vdi.lv or vdi.key


def suggested_extents(vdi: "VdiMap") -> list[Extent | None]:
    """The reconstruction's placements of one VDI per LE as the case holds maps (None: not
    placed): the editor's suggestions, and the map of a rebuilt LV."""
    out: list[Extent | None] = []
    for le, p in vdi.extents:
        while len(out) <= le:
            out.append(None)
        out[le] = Extent(p.pe, float(p.confidence), str(p.source))
    return out


def undecided_candidates(vdi: "VdiMap") -> dict[int, list[int]]:
    """LE -> the PEs that fit it, for the LEs the reconstruction left undecided."""
    return {int(le): [int(p) for p in pes] for le, pes in sorted(vdi.ambiguous.items())}


def rebuilt_segments(pes: list[int | None], pv: str = REBUILT_PV) -> list[Segment]:
    """Linear segments for the runs of consecutive PEs, `error` segments for unplaced LEs."""
    segs: list[Segment] = []
    le = 0
    while le < len(pes):
        pe = pes[le]
        n = 1
        if pe is None:
            while le + n < len(pes) and pes[le + n] is None:
                n += 1
            segs.append(Segment(le, n, "error", 0, None, []))
        else:
            while le + n < len(pes) and pes[le + n] == pe + n:
                n += 1
            segs.append(Segment(le, n, "striped", 1, None, [(pv, pe)]))
        le += n
    return segs


def rebuilt_lv(vdi: "VdiMap") -> LogicalVolume:
    """One rebuilt VDI as an LV of `extents_needed` LEs (at least every placed one)."""
    pes = list(vdi.pes)
    last = max((le + 1 for le, _ in vdi.extents), default=0)
    pes += [None] * max(0, last - len(pes))
    for le, p in vdi.extents:      # `pes` stops at extents_needed; a placement past it is kept
        pes[le] = p.pe
    return LogicalVolume(name=rebuilt_lv_name(vdi), status=REBUILT_STATUS,
                         tags=list(vdi.lv_tags), segments=rebuilt_segments(pes))


def rebuilt_volume_group(rec: "Reconstruction") -> VolumeGroup | None:
    """The VDIs of `rec` as a VolumeGroup (None without a grid or without any VDI)."""
    grid = rec.grid
    if grid is None or not rec.vdis or not grid.extent_bytes or grid.extent_bytes % SECTOR:
        return None
    E = grid.extent_bytes
    pv_offset = grid.pv_offset or 0
    pe_start = grid.data_offset - pv_offset
    pe_count = grid.pe_count or max(0, (rec.image_bytes - grid.data_offset) // E)
    lvs: dict[str, LogicalVolume] = {}
    for vdi in rec.vdis:
        lv = rebuilt_lv(vdi)
        lvs[lv.name] = lv
    name = grid.vg_name or REBUILT_VG_NAME
    meta = VGMetadata(name=name, id=grid.vg_id or "", seqno=0, extent_size=E // SECTOR,
                      pvs=[PVMetadata(REBUILT_PV, grid.pv_id or "", pe_start=pe_start // SECTOR,
                                      pe_count=pe_count)],
                      lvs=lvs, header={"description": REBUILT_DESCRIPTION})
    gen = Generation(seqno=0, text=b"", metadata=meta, origin=RECONSTRUCT)
    pv = PhysicalVolume(REBUILT_PV, grid.pv_id or "", pv_offset, label_found=grid.source == "label",
                        pe_start=pe_start, pe_count=pe_count)
    return VolumeGroup(name, grid.vg_id or "", pvs=[pv], generations=[gen])
