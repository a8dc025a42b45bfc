"""Rebuild every VDI's extent map: from metadata where it survives, from VHD structure where not.

`reconstruct(ev, backups=(), fixed=None, cancel=None, progress=None) -> Reconstruction`:
1. the extent grid (PE 0's offset, extent size, PE count) from any metadata generation
   (core.lvm.analyse.analyse_disk, backups included), else from a surviving LVM label
   (pe_start), else inferred from where VHD heads sit (said in a finding);
2. per-PE features read once (heads and tails; core.match.features);
3. anchors (VHD heads at PE starts), their BATs and predictions (anchors.py, predict.py);
4. hard constraints: every LV of the reference generation, deleted LVs of older generations
   where no newer LV claims their PEs, and the technician's fixed LE->PE pairs;
5. the assignment (assign.py), then orphans: data-bearing PEs nobody explains that look like
   VHD data are named in findings, so a VDI whose head is gone still shows where its blocks are.
`Reconstruction.to_json()` is the `reconstruct --json` document (cli-contract.md), which
`export --map` reads back.

The grid, the result types, naming, fixes and orphans live in grid.py, result.py, naming.py,
fixes.py and orphans.py beside this module; their names stay importable from here.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Mapping

import numpy as np

from core.errors import SrsalvageError
from core.evidence.layers import unreadable_findings
from core.findings import Finding
from core.lvm.analyse import analyse_disk
from core.match.anchors import VhdAnchor, footer_over_bat, parse_anchor, split_dm_name
from core.match.assign import FREE, RESERVED, Placement, Solver, VdiState
from core.structs.lvhd import LVHD_LATTICE_SLOTS
from core.match.features import SECTOR, SectorReader, compute_pe_features
from core.match.fixes import FixError, _apply_fixes  # noqa: F401 (FixError importable here)
from core.match.grid import Grid, _grid_from_anchors, _grid_from_label
from core.match.names import name_vdis
from core.match.naming import _find_mgt
from core.match.orphans import _orphans, _suggest_orphans, lvhd_le_of_offset  # noqa: F401
from core.match.predict import predict
from core.match.result import Reconstruction, VdiMap, _state_key, _vdi_map  # noqa: F401
from core.progress import ProgressFn, Ticker
from core.structs.lvhd import LVHD_EXTENT_BYTES
from core.structs.vhd import format_uuid
from core.xen_names import lv_kind

MAX_PES = 1 << 24                 # 64 TiB of 4 MiB extents


def _analyse(ev, backups, findings: list[Finding], pv_offsets=(), index=None):
    return analyse_disk(ev, backups=list(backups), search_stray=True, pv_offsets=pv_offsets,
                        hits=None if index is None else index.disk_hits(text=True))


# -- the main entry ----------------------------------------------------------------------------
def reconstruct(ev, backups: Iterable[str] = (), fixed: Mapping[str, Mapping[int, int]] | None = None,
                cancel: threading.Event | None = None, progress: ProgressFn | None = None, *,
                report=None, extent_bytes: int | None = None, data_offset: int | None = None,
                pe_count: int | None = None, use_metadata: bool = True,
                pv_offsets: Iterable[str] = (), index=None) -> Reconstruction:
    """Rebuild the extent maps of every VDI on `ev` (an Evidence or any ByteSpace).
    `index`: the evidence index of `ev` (core.evidence_index), whose one pass already holds
    the disk hits, VHD head cookie pairs, per-PE features and lattice signatures: the whole-disk
    reads are skipped, the result is the same."""
    findings: list[Finding] = unreadable_findings(ev)  # guard: zeros nobody read are no evidence
    ticker = Ticker(max(1, int(ev.size)), "reconstruct", progress, cancel)
    if report is None and use_metadata:
        report = _analyse(ev, backups, findings, pv_offsets, index)
    vg = _metadata_vg(report) if use_metadata else None
    ref = vg.reference if vg is not None else None
    E = int(extent_bytes or (vg.extent_bytes if vg is not None else None) or LVHD_EXTENT_BYTES)
    if E <= 0 or E % SECTOR:
        raise SrsalvageError(f"extent size {E} is not a positive multiple of 512")
    reader = SectorReader(ev)
    if index is not None:         # continuity checks ask which sectors are zero: the pass knows
        reader.nonzero_facts = lambda offs: index.sectors.sectors_nonzero(offs, reader.size)
    grid = _make_grid(ev, reader, report, vg, E, data_offset, pe_count, findings, ticker, index)
    if isinstance(grid, Finding):
        return Reconstruction(ev.path if hasattr(ev, "path") else "", int(ev.size), None, [],
                              findings + [grid], [])
    N, D = grid.pe_count, grid.data_offset
    feats = _pe_features(reader, index, D, E, N, cancel, progress)
    owner = np.full(N, FREE, dtype=np.int32)
    # the MGT volume (sm's SR metadata) when no metadata names it
    mgt = _reserve_mgt(ev, feats, grid, owner, findings) if ref is None or ref.metadata is None \
        else None
    anchors = _find_anchors(ev, feats, D, E, N, findings)
    states, meta_status, meta_lv = _metadata_states(ref, vg, anchors, owner, N, E, D, findings)
    overwritten = _overwritten_heads(ev, feats, anchors, D, E, findings)
    _structure_states(anchors, states, owner, E)
    # names from what the SR still says (parent locators, MGT)
    lv_sources = name_vdis(states, mgt, findings)

    # the technician's fixed pairs
    taken: dict[int, tuple[str, int]] = {}
    if fixed:
        # what the engine gives other VDIs without the fixes: a fix may not take it from them
        base = reconstruct(ev, backups, None, cancel, None, report=report,
                           extent_bytes=extent_bytes, data_offset=data_offset,
                           pe_count=pe_count, use_metadata=use_metadata, index=index)
        taken = {p.pe: (m.key, le) for m in base.vdis for le, p in m.extents}
    _apply_fixes(fixed or {}, states, owner, N, E, taken)

    solver = Solver(reader, D, E, N, feats, states, owner,
                    Ticker(max(1, N), "matching extents", progress, cancel))
    solver.strangers_possible = _more_vhds_than_vdis(states, mgt)
    solver.full_size = _full_size_vdis(states, mgt)
    solver.overwritten_heads = overwritten
    sigs = index.sectors.lattice_signatures(D, E, N) \
        if index is not None and E == LVHD_LATTICE_SLOTS * 8 * SECTOR else None
    if sigs is not None:           # what ensure_sigs would read, from the index's one pass
        solver.sig_good, solver.sig_ones = sigs
        solver.sig_done = np.ones(N, bool)
    solver.solve()
    findings.extend(solver.findings)

    if grid.vg_name is None:
        _vg_name_from_locators(grid, states, findings)
    vdis = [_vdi_map(v, E, meta_status.get(v.index), meta_lv.get(v.index)) for v in states]
    for v, m in zip(states, vdis):
        m.lv_source = "metadata" if v.index in meta_lv else lv_sources.get(v.index)
    orphans = _orphans(reader, feats, owner, D, E, N, findings, ticker, solver)
    _suggest_orphans(states, vdis, orphans)
    rec = Reconstruction(getattr(ev, "path", ""), int(ev.size), grid, vdis, findings, orphans,
                         anchors=[s.anchor for s in states if s.anchor is not None], mgt=mgt)
    rec.stats = {"pes": N, "anchors": len([s for s in states if s.anchor is not None]),
                 "sectors_read": reader.reads,
                 "zero_fill": {_state_key(s): solver.zero[s.index].to_json()
                               for s in states if s.index in solver.zero}}
    return rec


def _more_vhds_than_vdis(states: list[VdiState], mgt: dict[str, Any] | None) -> bool:
    """Are there more visible VHDs without a name than live VDIs the MGT volume lists and no
    LV is named after? Then some are older VHDs the SR no longer knows (their heads survived);
    without an MGT volume nothing says so."""
    if not mgt or not mgt.get("vdi_uuids"):
        return False
    named = {(v.lv_name or "").lower() for v in states}
    free = [u for u in mgt["vdi_uuids"] if f"vhd-{u}" not in named and f"lv-{u}" not in named]
    unnamed = [v for v in states if v.lv_name is None and v.anchor is not None
               and v.anchor.plausible and not v.anchor.hidden]
    return len(unnamed) > len(free)


def _full_size_vdis(states: list[VdiState], mgt: dict[str, Any] | None) -> set[int]:
    """The VDIs whose LV sm keeps at its full size (lvhdutil.calcSizeVHDLV of the virtual
    size): on a thick SR (the MGT volume's `allocation`), a visible VHD the SR names after a
    VDI record that is no snapshot. sm makes such an LV full when it creates it
    (LVHDVDI.create), when it snapshots it (LVHDVDI._snapshot: `if not self.sr.thinpr: if
    not self.issnap: lvSizeOrig = fullpr`), resizes it (inflate to calcSizeVHDLV of the new
    size) and when the GC coalesces a leaf into its parent (cleanup.py _finishCoalesceLeaf:
    inflateFully); only snapshots (thinpr) and hidden base copies (deflated) are smaller.
    Not a VHD the SR does not name: an older one of a previous life (another SR, thin, or
    another tool's) need not follow this SR's rule."""
    if not mgt or str(mgt.get("allocation") or "").lower() != "thick":
        return set()
    plain = {str(r.get("uuid", "")).lower() for r in mgt.get("vdi_records") or ()
             if str(r.get("is_a_snapshot", "")) == "0"}
    return {v.index for v in states
            if v.lv_name is not None and v.anchor is not None and not v.anchor.hidden
            and v.lv_name.split("-", 1)[-1].lower() in plain}


def _metadata_vg(report):
    """The first VG of the analysis whose extents can be located (data offset, extent size)."""
    for cand in getattr(report, "volume_groups", []) or []:
        if cand.data_offset is not None and cand.extent_bytes:
            return cand
    return None


def _make_grid(ev, reader: SectorReader, report, vg, E: int, data_offset: int | None,
               pe_count: int | None, findings: list[Finding], ticker: Ticker, index
               ) -> Grid | Finding:
    """Where the PEs are: given, from metadata, from the PV label, or from where VHD heads
    sit; a `no-extent-grid` Finding when nothing says."""
    grid: Grid | None = None
    if data_offset is not None:
        if not 0 <= data_offset < ev.size:
            raise SrsalvageError(f"data offset {data_offset} is outside the image "
                                 f"({ev.size} bytes)")
        count = pe_count if pe_count is not None else (ev.size - data_offset) // E
        grid = Grid(int(data_offset), E, int(count), "given")
    elif vg is not None:
        pv = vg.pvs[0]
        grid = Grid(int(vg.data_offset), E, int(pv.pe_count or (ev.size - vg.data_offset) // E),
                    "metadata", vg_name=vg.name, vg_id=vg.id, pv_id=pv.id, pv_offset=pv.offset,
                    pe_start=pv.pe_start, dev_size=pv.device_size)
        if len(vg.pvs) > 1:
            findings.append(Finding("multi-pv-vg", None, "warning",
                                    f"{vg.name} spans {len(vg.pvs)} PVs; only the first is "
                                    f"rebuilt from VHD structure and mapped here: extents on "
                                    f"the others are listed missing (`export` without --map "
                                    f"reads them from their PV)"))
    else:
        grid = _grid_from_label(ev, report, E) or _grid_from_anchors(ev, reader, E, ticker,
                                                                      findings, report, index)
    if grid is None:
        return Finding("no-extent-grid", None, "error",
                       "no LVM metadata, label or VHD head found: nothing says where the "
                       "extents are")
    if not 0 <= grid.data_offset < ev.size:
        return Finding("no-extent-grid", None, "error",
                       f"PE 0 at {grid.data_offset} ({grid.source}) lies outside the image")
    grid.pe_count = max(0, min(grid.pe_count, (ev.size - grid.data_offset) // E, MAX_PES))
    if grid.dev_size is None and grid.pv_offset is not None:
        grid.dev_size = ev.size - grid.pv_offset
    return grid


def _pe_features(reader: SectorReader, index, D: int, E: int, N: int, cancel, progress):
    """The per-PE features, from the evidence index's one pass when there is one."""
    if index is not None:
        n_pes = max(0, min(N, (reader.size - D) // E)) if 0 <= D <= reader.size - E else 0
        feats = index.sectors.pe_features(
            D, E, N, reader.has_data(D + np.arange(n_pes, dtype=np.int64) * E, E))
        if feats is not None:
            return feats
    return compute_pe_features(reader, D, E, N, cancel, progress)


def _reserve_mgt(ev, feats, grid: Grid, owner: np.ndarray, findings: list[Finding]
                 ) -> dict[str, Any] | None:
    """The MGT volume found by its header: its PE reserved, the VG named after its SR."""
    D, E = grid.data_offset, grid.extent_bytes
    mgt = _find_mgt(ev, feats, D, E, findings)
    if mgt is not None:
        owner[mgt["pe"]] = RESERVED
        if grid.vg_name is None and mgt.get("sr_uuid"):
            grid.vg_name = "VG_XenStorage-" + mgt["sr_uuid"]
            findings.append(Finding("vg-name-from-mgt", D + mgt["pe"] * E, "info",
                                    f"VG name {grid.vg_name} read from the MGT volume at "
                                    f"PE {mgt['pe']}", {"vg": grid.vg_name}))
    return mgt


def _find_anchors(ev, feats, D: int, E: int, N: int, findings: list[Finding]
                  ) -> dict[int, VhdAnchor]:
    """Every PE that starts with a VHD head: {pe: anchor}."""
    anchors: dict[int, VhdAnchor] = {}
    for pe in np.nonzero(feats.head_anchor)[0]:
        pe = int(pe)
        base = D + pe * E
        a = parse_anchor(pe, lambda off, n, base=base: ev.read(base + off, n), E, N * E, base)
        if a is None:
            continue
        findings.extend(a.findings)
        anchors[pe] = a
    return anchors


def _metadata_states(ref, vg, anchors: dict[int, VhdAnchor], owner: np.ndarray, N: int, E: int,
                     D: int, findings: list[Finding]
                     ) -> tuple[list[VdiState], dict[int, str], dict[int, Any]]:
    """Hard constraints from metadata: every LV of the current generation (live) and of older
    ones (deleted, where the current one does not claim the PE), as placed states."""
    states: list[VdiState] = []
    meta_status: dict[int, str] = {}
    meta_lv: dict[int, Any] = {}
    if ref is None or ref.metadata is None:
        return states, meta_status, meta_lv
    lvs: list[tuple[Any, str]] = [(lv, "live") for lv in ref.lvs.values()]
    live_names = set(ref.lvs)
    claimed = {loc[1] for lv in ref.lvs.values() for loc in lv.locations()
               if loc is not None and loc[0] == vg.pvs[0].name}
    for gen in vg.generations:
        for name, lv in gen.lvs.items():
            if name in live_names or gen is ref:
                continue
            live_names.add(name)
            lvs.append((lv, "deleted"))
    first_pv = vg.pvs[0].name
    for lv, status in lvs:
        try:
            # the grid is the first PV's: an LE on another PV is not on it (left missing,
            # never read from the first PV's PE of the same number)
            pes = [loc[1] if loc is not None and loc[0] == first_pv else None
                   for loc in lv.locations()]
        except SrsalvageError as exc:
            findings.append(Finding("lv-unmappable", None, "warning", f"{lv.name}: {exc}"))
            continue
        if lv_kind(lv.name) not in ("vhd", "raw"):
            for p in pes:
                if p is not None and 0 <= p < N and owner[p] == FREE:
                    owner[p] = RESERVED
            continue
        idx = len(states)
        a = anchors.pop(pes[0], None) if pes and pes[0] is not None else None
        v = VdiState(idx, a, predict(a, E) if a is not None and a.plausible else None,
                     lv_name=lv.name, le_count=len(pes), metadata_map=status == "live")
        for le, p in enumerate(pes):
            if p is None or not 0 <= p < N or (status == "deleted" and p in claimed) \
                    or owner[p] != FREE:
                continue
            owner[p] = idx
            v.placed[le] = Placement(p, 1.0 if status == "live" else 0.9, "metadata",
                                     None if status == "live" else
                                     f"from an older generation ({lv.name} is deleted)")
        if a is None and lv_kind(lv.name) == "vhd" and pes and pes[0] is not None:
            findings.append(Finding("vhd-head-missing", D + pes[0] * E, "warning",
                                    f"{lv.name}: no VHD head at its LE 0 (PE {pes[0]})",
                                    {"lv": lv.name, "pe": pes[0]}))
        meta_status[idx] = status
        meta_lv[idx] = lv
        states.append(v)
    return states, meta_status, meta_lv


def _overwritten_heads(ev, feats, anchors: dict[int, VhdAnchor], D: int, E: int,
                       findings: list[Finding]) -> dict[int, bytes]:
    """{PE: unique id of the footer} of heads whose BAT another VHD's footer has overwritten
    (anchors.footer_over_bat): an older VHD's head, in an extent that ended an LV of that
    other VHD after it was written. The head's VHD stays a VDI (its remnants explain alike
    extents elsewhere), but that VHD's footer may claim the extent (core.match.footers)."""
    out: dict[int, bytes] = {}
    for pe, a in sorted(anchors.items()):
        if not feats.tail_footer[pe]:
            continue
        tail = ev.read(D + pe * E + E - SECTOR, SECTOR)
        uid = footer_over_bat(a, tail, E)
        if uid is None:
            continue
        out[pe] = uid
        findings.append(Finding(
            "vhd-head-overwritten", D + pe * E, "info",
            f"PE {pe}: the head of VHD {a.uid_str} is an older VHD's: its BAT ends with the "
            f"footer of VHD {format_uuid(uid)}, written after it (an end of that VHD's LV)",
            {"vhd_uuid": a.uid_str, "pe": pe, "footer_of": format_uuid(uid)}))
    return out


def _structure_states(anchors: dict[int, VhdAnchor], states: list[VdiState], owner: np.ndarray,
                      E: int) -> None:
    """VHDs found only by their structure: a state each, LE 0 on its head's PE."""
    for pe, a in sorted(anchors.items()):
        if owner[pe] != FREE:
            # a VHD head inside an LV the metadata maps (e.g. a VHD file stored in a raw LV)
            continue
        if not a.plausible:
            owner[pe] = RESERVED
            continue
        idx = len(states)
        v = VdiState(idx, a, predict(a, E))
        states.append(v)
        owner[pe] = idx
        v.placed[0] = Placement(pe, 1.0, "vhd-match", None)


def _vg_name_from_locators(grid: Grid, states: list[VdiState], findings: list[Finding]) -> None:
    """A differencing VHD names its parent by device-mapper name, VG included."""
    for v in states:
        if v.anchor is not None and v.anchor.parent_name:
            split = split_dm_name(v.anchor.parent_name)
            if split and split[0].startswith("VG_XenStorage-"):
                grid.vg_name = split[0]
                findings.append(Finding(
                    "vg-name-from-parent-locator", None, "info",
                    f"VG name {split[0]} read from the parent name of VHD "
                    f"{v.anchor.uid_str}", {"vg": split[0]}))
                return
