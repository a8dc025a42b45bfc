"""An LV as bytes: the one path from an LV's extents (on whichever PV each lies) to a byte space.

Every reader (the command line through core.vdi, the MGT reader in core.xen, the workstation's
export, checks and hex view) builds LV spaces here, so an LV over several PVs reads each
extent from the PV the metadata names, on whichever image that PV is (core.evidence_set).
Works on any VG-shaped object: the analysis' VolumeGroup (core.lvm.model) and the
reconstruction's rebuilt VG alike.
"""

from __future__ import annotations

from core.errors import SrsalvageError
from core.spaces import ByteSpace, Run, RunList


def pv_data_offsets(vg) -> dict[str | None, int]:
    """PV name -> image offset of its PE 0, for the PVs placed on the image (any VG-shaped
    object: the analysis' VolumeGroup or the reconstruction's); None -> the VG's PE 0."""
    out: dict[str | None, int] = {}
    for pv in getattr(vg, "pvs", []) or []:
        if getattr(pv, "offset", None) is not None:
            out[pv.name] = pv.offset + pv.pe_start
    if getattr(vg, "data_offset", None) is not None:
        out[None] = vg.data_offset
    return out


def space_of_locations(base: ByteSpace, vg, locs: list, extent: int, name: str = "") -> RunList:
    """The one place an LV becomes bytes: LE i at (pv, pe) = locs[i] is read from that PV's
    PE 0 + pe x extent on the image (None: a gap, read as zeros)."""
    offsets = pv_data_offsets(vg)
    if not extent or not offsets:
        raise SrsalvageError(f"{vg.name}: extent size or PV data offset unknown; "
                             f"use a map file (`reconstruct -o`) or --pv-offset")
    runs: list[Run] = []
    unplaced: list[int] = []
    for le, loc in enumerate(locs):
        if loc is None:
            continue
        pv, pe = loc
        base_off = offsets.get(pv)
        if base_off is None:
            unplaced.append(le)       # its PV is on no image given: said by resolve_vdi
            continue
        target = base_off + pe * extent
        start = le * extent
        last = runs[-1] if runs else None
        if last is not None and last.end == start and last.target + last.length == target:
            runs[-1] = Run(last.start, last.length + extent, last.target)
        else:
            runs.append(Run(start, extent, target))
    space = RunList(base, runs, size=len(locs) * extent, name=name)
    space.unplaced_les = unplaced
    return space


def lv_locations(lv) -> list:
    """(pv name, pe) per LE of an LV (None where unmapped); single-PV shapes give (None, pe)."""
    if hasattr(lv, "locations"):
        return lv.locations()
    return [None if pe is None else (None, pe) for pe in lv.pes()]


def lv_space(base: ByteSpace, vg, gen, lv) -> RunList:
    """An LV of one generation as a run list over the image (several PVs allowed)."""
    extent = getattr(gen, "extent_bytes", None) or vg.extent_bytes
    return space_of_locations(base, vg, lv_locations(lv), extent, lv.name)


# -- VG-wide PE numbers (the workstation's editor, disk map and case file) --------------------------
# A VG over several PVs numbers its PEs per PV; the workstation edits one integer per LE, so
# the PVs are numbered one after the other in the order of the metadata (PV n's PE p is
# sum(pe_count of PVs before n) + p). With one PV the number is LVM's own PE.
def _pv_bases(vg) -> list[tuple[str, int, int]]:
    out, first = [], 0
    for pv in getattr(vg, "pvs", []) or []:
        count = int(getattr(pv, "pe_count", 0) or 0)
        out.append((pv.name, first, count))
        first += count
    return out


def vg_pes(vg, lv) -> list[int | None]:
    """VG-wide PE number per LE of `lv`."""
    bases = {name: first for name, first, _ in _pv_bases(vg)}
    if len(bases) <= 1:
        return lv.pes()
    return [None if loc is None else bases.get(loc[0], 0) + loc[1] for loc in lv_locations(lv)]


def vg_pe_location(vg, number: int | None) -> tuple[str | None, int] | None:
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


def pes_space(base: ByteSpace, vg, pes, name: str = "") -> RunList:
    """A map of VG-wide PE numbers (the workstation's, possibly edited) as bytes."""
    return space_of_locations(base, vg, [vg_pe_location(vg, p) for p in pes],
                              vg.extent_bytes, name)


def pe_disk_offset(vg, number: int | None) -> int | None:
    """Image offset of a VG-wide PE number (where the disk map paints it)."""
    loc = vg_pe_location(vg, number)
    if loc is None:
        return None
    base = pv_data_offsets(vg).get(loc[0])
    return None if base is None else base + loc[1] * vg.extent_bytes
