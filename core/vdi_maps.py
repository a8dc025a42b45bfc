"""The VDIs of one generation read through VG-wide PE maps (the workstation's editable maps).

The command line resolves `--vdi KEY` against the metadata or a map file (core.vdi.resolve_vdi);
the workstation has already chosen a VG, a generation and an LV, and reads each LV through its
map as the technician sees it: the case's edited map, else the generation's own
(`pes_of(lv)`, VG-wide PE numbers, core.lvm.space). Both end in the same `ResolvedVdi` of
`VdiVolume`s, so parents, the taken-extent guard and the export strategy (core.vdi_export) are
the same code for both.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Sequence

from core.case import Extent
from core.errors import SrsalvageError
from core.lvm.model import Generation, LogicalVolume, VolumeGroup
from core.lvm.space import pes_space, vg_pes
from core.spaces import ByteSpace, pes_to_map_runs
from core.vdi import ResolvedVdi, VdiVolume
from core.xen_names import lv_kind, lv_vdi_uuid

PesOf = Callable[[LogicalVolume], Sequence[int | None]]


def find_lv(gen: Generation, key: str) -> LogicalVolume | None:
    """The LV of `gen` that `key` names: its LV name, or the VDI uuid in that name."""
    return next((lv for lv in gen.lvs.values() if lv.name == key or lv_vdi_uuid(lv.name) == key), None)


def metadata_extents(vg: VolumeGroup, lv: LogicalVolume) -> list[Extent]:
    """The map a generation's metadata gives `lv`, as the case holds maps: VG-wide PE numbers
    (core.lvm.space), confidence 1, or 0.5 where a newer generation gave the PE to another LV."""
    claimed = {int(k) for k in lv.claimed_by}
    out = []
    for pe, own in zip(vg_pes(vg, lv), lv.pes()):
        if pe is None:
            out.append(Extent(None, 0.0, "gap"))
        else:
            out.append(Extent(pe, 0.5 if own in claimed else 1.0, "metadata"))
    return out


def placed_extents(lv: LogicalVolume, placed: Sequence[Extent | None]) -> list[Extent]:
    """A rebuilt LV's map: the reconstruction's placements (with their confidence), a gap
    wherever nothing was placed, up to the LV's length."""
    exts = [e if e is not None else Extent(None, 0.0, "gap") for e in placed]
    return exts + [Extent(None, 0.0, "gap")] * max(0, lv.le_count - len(exts))


def map_volume(base: ByteSpace, vg: VolumeGroup, gen: Generation, lv: LogicalVolume,
               pes: Sequence[int | None]) -> VdiVolume:
    """One LV of `gen` as a volume read through `pes` (VG-wide PE numbers)."""
    return VdiVolume(lv.name, lv.name, pes_space(base, vg, list(pes), lv.name),
                     generation=gen.seqno, kind=lv_kind(lv.name), status=lv.status,
                     map_runs=pes_to_map_runs(pes),
                     extent_bytes=vg.extent_bytes)


def generation_volumes(base: ByteSpace, vg: VolumeGroup, gen: Generation,
                       pes_of: PesOf) -> list[VdiVolume]:
    """Every LV of `gen` as a volume, each through its map `pes_of(lv)`."""
    return [map_volume(base, vg, gen, lv, pes_of(lv)) for lv in gen.lvs.values()]


def map_conflicts(vg: VolumeGroup, lv: LogicalVolume, pes: Sequence[int | None]) -> dict[int, str]:
    """The PEs of `pes` (the map of `lv`, VG-wide numbers) another LV holds now: an LV of the
    VG's reference generation (the one LVM would use), or an LV of a newer VG on the same disk
    (an SR initialised again: `VG/LV` in `lv.claimed_by`)."""
    owner: dict[int, str] = {}
    ref = vg.reference
    for other in (ref.lvs.values() if ref is not None else ()):
        if other.name == lv.name:
            continue
        for pe in vg_pes(vg, other):
            if pe is not None:
                owner[pe] = other.name
    owner.update({int(pe): o for pe, o in lv.claimed_by.items() if "/" in str(o)})
    return {pe: owner[pe] for pe in pes if pe is not None and pe in owner}


def resolve_in_generation(base: ByteSpace, vg: VolumeGroup, gen: Generation, lv: LogicalVolume,
                          pes_of: PesOf, conflicts: dict[int, str] | None = None) -> ResolvedVdi:
    """`lv` of `gen` with its siblings (where parents are found), every one through its map;
    `conflicts` (map_conflicts) are the target's taken extents, judged against their owners'
    maps in the reference generation (ResolvedVdi.guard)."""
    volumes = generation_volumes(base, vg, gen, pes_of)
    target = next((v for v in volumes if v.lv_name == lv.name), None)
    if target is None:
        raise SrsalvageError(f"{lv.name} is not in generation {gen.seqno}")
    res = ResolvedVdi(target, [v for v in volumes if v is not target], generation=gen.seqno)
    if conflicts:
        target.claimed_by = dict(conflicts)
        ref = vg.reference
        names = set(conflicts.values())
        res.owners = {o.name: map_volume(base, vg, ref, o, pes_of(o))
                      for o in (ref.lvs.values() if ref is not None else ()) if o.name in names}
    return res


def chain_links(volumes: Iterable[VdiVolume],
                cancel: threading.Event | None = None) -> dict[str, str]:
    """{child LV: parent LV} from the VHD footers and headers of `volumes`."""
    by_uuid: dict[bytes, str] = {}
    parent_of: dict[str, bytes] = {}
    for vol in volumes:
        if cancel is not None and cancel.is_set():
            break
        if vol.kind != "vhd" or vol.lv_name is None:
            continue
        img = vol.image()
        if img is None or img.footer is None:
            continue
        by_uuid[bytes(img.unique_id)] = vol.lv_name
        parent = img.parent_unique_id
        if parent:
            parent_of[vol.lv_name] = bytes(parent)
    return {c: by_uuid[p] for c, p in parent_of.items() if p in by_uuid and by_uuid[p] != c}
