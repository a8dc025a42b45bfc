"""Anchor every VG to the image: where each PV starts when its label does not say so.

A VG found through metadata text alone (a stray copy, an older VG whose copies lie in the ring
of a PV that was initialised again, a `vgcfgbackup` file, an archive) knows its PVs by id,
`pe_start` and `pe_count`, but not where they are on this image.  Best evidence first:

  1. the PV label (set by `core.lvm.analyse._attach_pvs`: source `label` / `mda-header`);
  2. `given`: the technician's `--pv-offset [PV=]BYTES` (wins over everything but is said);
  3. `metadata-area`: the device whose metadata area holds the text (the ring copies'
     PV start, or a partition / the disk start whose [start+4608, start+pe_start) holds a
     stray copy); pe_start comes from the text itself;
  4. `content`: the grid the LVs' own contents give: a candidate PV start (the disk start,
     every partition, every other PV, and every `XSSM:` MGT header minus the MGT's PE as the
     text places it) is kept when the VHD footer copies and the MGT header lie at
     start + pe_start + PE x extent for the LVs of the text (the check reconstruction's grid
     uses, core.match.reconstruct._grid_from_anchors, read from the text's own map here).

Each anchor is a Finding `lvm-pv-anchored` naming its source, and the PV's `anchor` field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from core.errors import SrsalvageError
from core.findings import Finding
from core.lvm.model import PhysicalVolume, VGMetadata, VolumeGroup
from core.structs import lvm as S
from core.xen_names import lv_kind

RING_START = S.DEFAULT_MDA_OFFSET + S.MDA_HEADER_SIZE    # the first copy after vgcreate
MAX_CONTENT_LVS = 16          # LV heads read per candidate start
MAX_CANDIDATES = 256
SECTOR = 512


@dataclass(frozen=True)
class PvOffset:
    """`--pv-offset [PV=]BYTES`: the PV (its name `pv0`, its uuid, or `VG/pv0`; None: every
    PV no label places) starts at BYTES on the image."""

    pv: str | None
    offset: int

    @classmethod
    def parse(cls, text: str) -> "PvOffset":
        name, sep, value = text.rpartition("=")
        value = value.strip().lower().replace("_", "")
        m = re.fullmatch(r"(0x[0-9a-f]+|\d+)([kmgt]i?b?|s)?", value)
        if m is None:
            raise SrsalvageError(f"--pv-offset {text!r}: expected [PV=]BYTES (e.g. 1048576, "
                                 f"1MiB, 2048s, pv0=0x100000)")
        num = int(m.group(1), 0)
        unit = (m.group(2) or "").rstrip("b").rstrip("i")
        num *= {"": 1, "s": SECTOR, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
                "t": 1 << 40}[unit]
        return cls(name.strip() or None if sep else None, num)

    def applies(self, vg: VolumeGroup, pv: PhysicalVolume) -> bool:
        if self.pv is None:
            return not pv.label_found
        return self.pv in (pv.name, pv.id, f"{vg.name}/{pv.name}")


def parse_pv_offsets(values: Iterable[str]) -> list[PvOffset]:
    return [PvOffset.parse(v) for v in values]


def _set(pv: PhysicalVolume, vg: VolumeGroup, start: int, source: str, how: str,
         severity: str, findings: list[Finding]) -> None:
    pv.offset = start
    pv.anchor = source
    pv.inferred_by.append(f"{source}: {how}")
    findings.append(Finding("lvm-pv-anchored", start, severity,
                            f"VG {vg.name}: PV {pv.name} ({pv.id or 'no id'}) placed at {start} "
                            f"(PE 0 at {start + pv.pe_start}) from {source}: {how}",
                            {"vg": vg.name, "pv": pv.name, "pv_id": pv.id, "source": source,
                             "data_offset": start + pv.pe_start}))


def _ring_place(vg: VolumeGroup, pv: PhysicalVolume, starts: list[int]) -> tuple[int, str] | None:
    """The device whose metadata area holds this VG's text (single-PV VGs: the ring copies
    name their PV; a stray copy lies inside [start+4608, start+pe_start) of one start)."""
    if len(vg.pvs) != 1:
        return None          # the same text is in every PV's ring: which one is which is unknown
    places = {c.pv_offset for g in vg.generations for c in g.copies
              if c.source == "mda" and c.pv_offset is not None}
    if len(places) == 1:
        start = places.pop()
        return start, f"its metadata copies lie in the metadata area of the PV at {start}"
    stray = [c.offset for g in vg.generations for c in g.copies if c.source == "scan"]
    for start in starts:
        if stray and all(start + RING_START <= o < start + pv.pe_start for o in stray):
            return start, (f"its {len(stray)} stray metadata cop{'y lies' if len(stray) == 1 else 'ies lie'} "
                           f"in the metadata area of the device at {start} "
                           f"(between {start + RING_START} and pe_start {start + pv.pe_start})")
    return None


def content_score(ev, meta: VGMetadata, pv_name: str, data_offset: int) -> tuple[int, int]:
    """(signatures found, LV heads looked at): VHD footer copies (`conectix`) and the MGT
    header (`XSSM:`) at data_offset + PE x extent for the LVs whose LE 0 lies on this PV."""
    extent = meta.extent_bytes
    tried = hits = 0
    for lv in meta.lvs.values():
        if lv_kind(lv.name) not in ("vhd", "mgt") or not lv.segments or not lv.segments[0].stripes:
            continue
        seg = lv.segments[0]
        if seg.start_extent != 0 or not seg.linear:
            continue
        pv, pe = seg.stripes[0]
        if pv != pv_name:
            continue
        at = data_offset + pe * extent
        if at < 0 or at >= ev.size:
            continue
        head = ev.read(at, 8)
        tried += 1
        hits += head.startswith(b"conectix" if lv_kind(lv.name) == "vhd" else b"XSSM:")
        if tried >= MAX_CONTENT_LVS:
            break
    return hits, tried


def _content_place(ev, vg: VolumeGroup, pv: PhysicalVolume, starts: list[int],
                   xssm: list[int]) -> tuple[int, str, str] | None:
    meta = vg.reference.metadata if vg.reference else None
    if meta is None or not meta.extent_bytes:
        return None
    cands = list(starts)
    mgt = meta.lvs.get("MGT")
    if mgt is not None and mgt.segments and mgt.segments[0].stripes \
            and mgt.segments[0].stripes[0][0] == pv.name and mgt.segments[0].start_extent == 0:
        pe = mgt.segments[0].stripes[0][1]
        cands += [h - pe * meta.extent_bytes - pv.pe_start for h in xssm]
    best = None
    taken = {p.offset for p in vg.pvs if p is not pv and p.offset is not None}
    for start in list(dict.fromkeys(c for c in cands if c >= 0 and c not in taken))[:MAX_CANDIDATES]:
        hits, tried = content_score(ev, meta, pv.name, start + pv.pe_start)
        if hits and (best is None or hits > best[1]):
            best = (start, hits, tried)
    if best is None:
        return None
    start, hits, tried = best
    how = (f"{hits} of {tried} VHD/MGT LVs of seqno {vg.reference.seqno} start with their "
           f"signature at start + pe_start ({pv.pe_start}) + PE x {meta.extent_bytes}")
    return start, how, "warning" if hits >= 2 or hits == tried else "error"


def anchor_volume_groups(ev, vgs: list[VolumeGroup], starts: Iterable[int], xssm: list[int],
                         overrides: Iterable[PvOffset], findings: list[Finding]) -> None:
    """Give every PV an offset on the image from the best evidence (module docstring)."""
    overrides = list(overrides)
    starts = sorted(set(s for s in starts if 0 <= s < ev.size))
    for vg in vgs:
        for pv in vg.pvs:
            if pv.anchor is None and pv.offset is not None:
                pv.anchor = "label" if pv.label_found else "mda-header"
            given = next((o for o in overrides if o.applies(vg, pv)), None)
            if given is not None:
                if given.offset >= ev.size:
                    raise SrsalvageError(f"--pv-offset {given.offset} lies beyond the image "
                                         f"end ({ev.size})")
                was = "" if pv.offset is None else f" (the evidence said {pv.offset})"
                _set(pv, vg, given.offset, "given", f"--pv-offset{was}", "info", findings)
                continue
            if pv.offset is not None:
                continue
            ring = _ring_place(vg, pv, starts)
            if ring is not None:
                _set(pv, vg, ring[0], "metadata-area", ring[1], "warning", findings)
                continue
            content = _content_place(ev, vg, pv, starts, xssm)
            if content is not None:
                _set(pv, vg, content[0], "content", content[1], content[2], findings)
                continue
            findings.append(Finding("lvm-pv-unanchored", None, "warning",
                                    f"VG {vg.name}: nothing places PV {pv.name} ({pv.id}) on "
                                    f"this image; give it with --pv-offset {pv.name}=BYTES",
                                    {"vg": vg.name, "pv": pv.name}))


# -- conflicts across VGs --------------------------------------------------------------------------
def _vg_rank(vg: VolumeGroup) -> tuple:
    """Which of two VGs on one disk is newer: the one LVM would use (a committed slot), then the
    latest metadata time, then the higher seqno."""
    times = [g.creation_time for g in vg.generations if g.creation_time is not None]
    return (vg.current is not None, max(times, default=0), vg.generations[0].seqno
            if vg.generations else 0)


def _abs_runs(vg: VolumeGroup, lv) -> list[tuple[int, int, int, str]]:
    """(image start, image end, first PE, pv) of each run of an LV, for anchored PVs."""
    extent = vg.extent_bytes
    offsets = vg.pv_data_offsets()
    out = []
    for le, pe, count, pv in lv.map_runs_pv():
        base = offsets.get(pv)
        if base is None or not extent:
            continue
        out.append((base + pe * extent, base + (pe + count) * extent, pe, pv))
    return out


def _nested(inner: VolumeGroup, outer: VolumeGroup) -> bool:
    """A PV of `inner` lies inside the data area of a PV of `outer`: a guest's own LVM inside
    one of `outer`'s LVs (analyse's lvm-nested-pv), not a VG competing for the same extents."""
    for a in inner.pvs:
        for b in outer.pvs:
            if a.offset is None or b.offset is None:
                continue
            end = b.offset + (b.device_size or (1 << 62))
            if b.offset + b.pe_start <= a.offset < end:
                return True
    return False


def claims_across_vgs(vgs: list[VolumeGroup], findings: list[Finding]) -> None:
    """Where a newer VG on the same image (an SR initialised again, a later vgcreate) allocates
    bytes that an older VG's LV used, the older LV's PEs are `claimed_by` `VG/LV` of the newer
    one, in every generation of the older VG (its newest included), exactly as within one VG."""
    placed = [vg for vg in vgs if vg.extent_bytes and vg.pv_data_offsets()
              and vg.reference is not None]
    for old in placed:
        newer = [vg for vg in placed if vg is not old and _vg_rank(vg) > _vg_rank(old)
                 and not _nested(vg, old) and not _nested(old, vg)]
        if not newer:
            continue
        owned = []      # (start, end, "VG/LV") of every newer VG's reference generation
        for vg in newer:
            for lv in vg.reference.lvs.values():
                owned += [(a, b, f"{vg.name}/{lv.name}") for a, b, _, _ in _abs_runs(vg, lv)]
        if not owned:
            continue
        owned.sort()
        extent = old.extent_bytes
        hit_lvs: set[str] = set()
        for gen in old.generations:
            for lv in gen.lvs.values():
                for a, b, pe0, _pv in _abs_runs(old, lv):
                    for oa, ob, owner in owned:
                        if ob <= a or oa >= b:
                            continue
                        first = (max(a, oa) - a) // extent
                        last = (min(b, ob) - 1 - a) // extent
                        for pe in range(pe0 + first, pe0 + last + 1):
                            lv.claimed_by.setdefault(pe, owner)
                        hit_lvs.add(lv.name)
        if hit_lvs:
            findings.append(Finding(
                "lvm-vg-overwritten", None, "warning",
                f"VG {old.name} lies under the newer VG(s) {', '.join(v.name for v in newer)} on "
                f"this image (the SR was initialised again?): extents of {len(hit_lvs)} of its "
                f"LVs are now allocated there (claimed_by names them)",
                {"vg": old.name, "newer": [v.name for v in newer], "lvs": sorted(hit_lvs)}))
