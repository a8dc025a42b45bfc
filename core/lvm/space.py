"""An LV as bytes: the one path from an LV's extents (on whichever PV each lies) to a byte space.

Every reader (the command line through core.vdi, the MGT reader in core.xen, the workstation's
export, checks and hex view) builds LV spaces here, so an LV over several PVs reads each
extent from the PV the metadata names, on whichever image that PV is (core.evidence_set).
The analysis' VolumeGroups and the VG the reconstruction rebuilt (core.match.rebuilt) are the
same model (core.lvm.model), read the same way.
"""

from __future__ import annotations

from typing import Sequence

from core.errors import SrsalvageError
from core.lvm.model import Generation, LogicalVolume, VolumeGroup
from core.spaces import ByteSpace, RunList, located_space

Location = tuple[str | None, int]     # (pv name, pe); pv None: the VG's only grid


def pv_data_offsets(vg: VolumeGroup) -> dict[str | None, int]:
    """PV name -> image offset of its PE 0, for the PVs placed on the image; None -> the VG's
    PE 0 (its first placed PV's)."""
    out: dict[str | None, int] = {}
    for pv in getattr(vg, "pvs", []) or []:      # a map file's VG has its grid only
        if pv.offset is not None:
            out[pv.name] = pv.offset + pv.pe_start
    if vg.data_offset is not None:
        out[None] = vg.data_offset
    return out


def space_of_locations(base: ByteSpace, vg: VolumeGroup, locs: Sequence[Location | None],
                       extent: int, name: str = "") -> RunList:
    """The one place an LV becomes bytes: LE i at (pv, pe) = locs[i] is read from that PV's
    PE 0 + pe x extent on the image (None: a gap, read as zeros)."""
    offsets = pv_data_offsets(vg)
    if not extent or not offsets:
        raise SrsalvageError(f"{vg.name}: extent size or PV data offset unknown; "
                             f"use a map file (`reconstruct -o`) or --pv-offset")
    targets: list[int | None] = []
    unplaced: list[int] = []
    for le, loc in enumerate(locs):
        base_off = None if loc is None else offsets.get(loc[0])
        if loc is not None and base_off is None:
            unplaced.append(le)       # its PV is on no image given: said by resolve_vdi
        targets.append(None if base_off is None else base_off + loc[1] * extent)
    space = located_space(base, targets, extent, name)
    space.unplaced_les = unplaced
    return space


def lv_locations(lv: LogicalVolume) -> list[Location | None]:
    """(pv name, pe) per LE of an LV (None where unmapped); an LV known by its PEs alone (one
    grid) gives (None, pe)."""
    if hasattr(lv, "locations"):
        return list(lv.locations())
    return [None if pe is None else (None, pe) for pe in lv.pes()]


def lv_space(base: ByteSpace, vg: VolumeGroup, gen: Generation, lv: LogicalVolume) -> RunList:
    """An LV of one generation as a run list over the image (several PVs allowed)."""
    extent = gen.extent_bytes or vg.extent_bytes
    return space_of_locations(base, vg, lv_locations(lv), extent, lv.name)


# -- VG-wide PE numbers (the workstation's editor, disk map and case file) --------------------------
# A VG over several PVs numbers its PEs per PV; the workstation edits one integer per LE, so
# the PVs are numbered one after the other in the order of the metadata (PV n's PE p is
# sum(pe_count of PVs before n) + p). With one PV the number is LVM's own PE.
def _pv_bases(vg: VolumeGroup) -> list[tuple[str, int, int]]:
    out, first = [], 0
    for pv in getattr(vg, "pvs", []) or []:
        count = int(pv.pe_count or 0)
        out.append((pv.name, first, count))
        first += count
    return out


def vg_pes(vg: VolumeGroup, lv: LogicalVolume) -> list[int | None]:
    """VG-wide PE number per LE of `lv`."""
    bases = {name: first for name, first, _ in _pv_bases(vg)}
    if len(bases) <= 1:
        return lv.pes()
    return [None if loc is None else bases.get(loc[0], 0) + loc[1] for loc in lv_locations(lv)]


def vg_pe_location(vg: VolumeGroup, number: int | None) -> Location | None:
    """(pv, pe) of a VG-wide PE number."""
    if number is None:
        return None
    bases = _pv_bases(vg)
    if len(bases) <= 1:
        return (bases[0][0] if bases else None, number)
    for name, first, count in bases:
        if first <= number < first + count:
            return name, number - first
    return None


def pes_space(base: ByteSpace, vg: VolumeGroup, pes: Sequence[int | None],
              name: str = "") -> RunList:
    """A map of VG-wide PE numbers (the workstation's, possibly edited) as bytes."""
    return space_of_locations(base, vg, [vg_pe_location(vg, p) for p in pes],
                              vg.extent_bytes, name)


def pe_disk_offset(vg: VolumeGroup, number: int | None) -> int | None:
    """Image offset of a VG-wide PE number (where the disk map paints it)."""
    loc = vg_pe_location(vg, number)
    if loc is None:
        return None
    base = pv_data_offsets(vg).get(loc[0])
    return None if base is None else base + loc[1] * vg.extent_bytes
