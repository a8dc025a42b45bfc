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
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from core.errors import SrsalvageError
from core.evidence.layers import unreadable_findings
from core.findings import Finding
from core.match.anchors import VhdAnchor, parse_anchor, split_dm_name
from core.match.assign import FREE, RESERVED, Placement, Solver, VdiState
from core.match.board import LATTICE
from core.match.features import SECTOR, SectorReader, bitmap_likeness, compute_pe_features, \
    find_cookie_pairs
from core.match.predict import predict
from core.progress import ProgressFn, Ticker
from core.spaces import pes_to_map_runs

DEFAULT_EXTENT = 4 << 20
MAX_PES = 1 << 24                 # 64 TiB of 4 MiB extents
ORPHAN_LIMIT = 4096               # orphan PEs examined in detail (1024 sectors each)
LVHD_FIRST_BITMAP_SECTOR = 8455   # formats.md 4.5
LVHD_STRIDE = 4104
SM_PE_START = 11 << 20            # sm: pvcreate --metadatasize 10M gives pe_start 11 MiB (formats 2)
MGT_SEARCH_POINTS = 4096          # grid points looked at for the MGT header without a grid
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LV_NAME = re.compile(r"(VHD|LV)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.I)


@dataclass
class Grid:
    """Where the PEs are."""

    data_offset: int
    extent_bytes: int
    pe_count: int
    source: str                       # metadata | label | inferred | given
    vg_name: str | None = None
    vg_id: str | None = None
    pv_id: str | None = None
    pv_offset: int | None = None
    pe_start: int | None = None       # bytes from the PV start
    dev_size: int | None = None       # bytes

    def to_json(self) -> dict[str, Any]:
        return {"name": self.vg_name, "extent_bytes": self.extent_bytes,
                "data_offset": self.data_offset, "pe_count": self.pe_count,
                "grid_source": self.source, "id": self.vg_id, "pv_id": self.pv_id,
                "pv_offset": self.pv_offset}


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


# -- the grid ----------------------------------------------------------------------------------
def _label_at(ev, pv_offset: int) -> dict | None:
    """A surviving LVM label in sectors 0..3 of a PV at pv_offset: pv id, pe_start, size."""
    from core.structs import lvm as L
    raw = ev.read(pv_offset, L.LABEL_SCAN_SECTORS * SECTOR)
    for s in range(L.LABEL_SCAN_SECTORS):
        sec = raw[s * SECTOR:(s + 1) * SECTOR]
        if len(sec) < SECTOR or sec[:8] != L.LABEL_ID:
            continue
        try:
            head = L.label_sector_head.parse(sec)
        except Exception:  # construct raises many kinds on garbage; a bad label is no label
            continue
        pvh = head.pv_header
        if not pvh.data_areas:
            continue
        pid = pvh.pv_uuid.decode("ascii", "replace")
        pe_start = int(pvh.data_areas[0].offset)
        # bounded by the evidence's real size before it drives any arithmetic (issue 11: a
        # huge pe_start overflowed int64 in compute_pe_features)
        if pe_start <= 0 or pe_start % SECTOR or pv_offset + pe_start >= ev.size:
            continue
        pretty = "-".join([pid[0:6], pid[6:10], pid[10:14], pid[14:18], pid[18:22], pid[22:26],
                           pid[26:32]])
        return {"pv_id": pretty, "pe_start": pe_start, "dev_size": int(pvh.device_size_xl)}
    return None


def _grid_from_label(ev, report, extent_bytes: int) -> Grid | None:
    offsets = [0]
    for part in getattr(report, "partitions", []) or []:
        offsets.append(int(part.offset))
    for off in dict.fromkeys(offsets):
        lab = _label_at(ev, off)
        if lab is None:
            continue
        data_offset = off + lab["pe_start"]
        dev = lab["dev_size"] or (ev.size - off)
        count = max(0, (min(dev, ev.size - off) - lab["pe_start"]) // extent_bytes)
        return Grid(data_offset, extent_bytes, count, "label", pv_id=lab["pv_id"], pv_offset=off,
                    pe_start=lab["pe_start"], dev_size=dev)
    return None


def _mgt_grid_point(reader: SectorReader, residue: int, E: int, first: int) -> int | None:
    """The first extent-grid point before the first VHD head whose sector starts with the MGT
    volume's `XSSM:` header (sm creates MGT right after vgcreate: PE 0, formats.md 3.3)."""
    start = residue
    while start < (1 << 20):
        start += E
    points = np.arange(start, first, E, dtype=np.int64)[:MGT_SEARCH_POINTS]
    if not len(points):
        return None
    heads = reader.gather(points, SECTOR)
    hit = np.nonzero((heads[:, :5] == np.frombuffer(b"XSSM:", np.uint8)).all(axis=1))[0]
    return int(points[hit[0]]) if len(hit) else None


def _grid_from_anchors(ev, reader: SectorReader, extent_bytes: int, ticker: Ticker,
                       findings: list[Finding], report=None, index=None) -> Grid | None:
    """No metadata and no label: the extent grid from where VHD heads sit (their offsets modulo
    the extent size), and PE 0 from two pieces of evidence (formats.md pitfall 16): the MGT
    volume's header on that grid (sm's first LV, PE 0), and a PV start (0 or a partition's)
    plus sm's pe_start (11 MiB, from `pvcreate --metadatasize 10M`) landing on it. With both
    agreeing, PE 0 and the PV start are known; with one, it is used and said; with none, PE 0
    is the first grid point past 1 MiB and the numbering is only relative."""
    E = extent_bytes
    hits = index.sectors.cookie_pairs(64) if index is not None else None
    if hits is None:
        hits = find_cookie_pairs(reader, 0, ev.size, limit=64, ticker=ticker)
    if not hits:
        return None
    residues: dict[int, int] = {}
    for h in hits:
        residues[h % E] = residues.get(h % E, 0) + 1
    residue = max(residues, key=lambda r: (residues[r], -r))
    first = min(h for h in hits if h % E == residue)
    parts = {0: ev.size}
    for part in getattr(report, "partitions", []) or []:
        parts.setdefault(int(part.offset), int(part.bytes))
    sm = [p for p in sorted(parts) if (p + SM_PE_START) % E == residue
          and p + SM_PE_START <= first]
    mgt = _mgt_grid_point(reader, residue, E, first)
    pv: int | None = None
    if mgt is not None:
        data_offset = mgt
        pv = next((p for p in sm if p + SM_PE_START == mgt), None)
        if pv is not None:
            how = (f"the MGT volume's header at {mgt} and a PV start at {pv} plus sm's pe_start "
                   f"({SM_PE_START}) agree")
        elif mgt >= SM_PE_START:
            pv = mgt - SM_PE_START
            how = (f"the MGT volume's header at {mgt} (PV start {pv} assumed from sm's pe_start "
                   f"{SM_PE_START}; no partition starts there)")
        else:
            how = f"the MGT volume's header at {mgt}; the PV start is unknown"
    elif sm:
        pv = sm[0]
        data_offset = pv + SM_PE_START
        how = (f"a PV start at {pv} plus sm's pe_start ({SM_PE_START}) lands on the grid; no MGT "
               f"header was found to confirm it")
    else:
        data_offset = residue
        while data_offset < (1 << 20):
            data_offset += E
        data_offset = min(data_offset, first)
        how = "nothing places PE 0: the first grid point past 1 MiB; PE numbers are relative"
    count = (ev.size - data_offset) // E
    findings.append(Finding(
        "grid-inferred", data_offset, "warning",
        f"no LVM metadata or label: PE 0 taken at {data_offset} (VHD heads at offsets "
        f"≡ {residue} mod {E}): {how}",
        {"residue": residue, "heads": len(hits), "mgt_offset": mgt, "pv_offset": pv}))
    grid = Grid(data_offset, E, count, "inferred")
    if pv is not None:
        grid.pv_offset, grid.pe_start = pv, data_offset - pv
        grid.dev_size = parts.get(pv, ev.size - pv)
    return grid


def _analyse(ev, backups, findings: list[Finding], pv_offsets=(), index=None):
    try:
        from core.lvm.analyse import analyse_disk  # engineer "lvm"
    except ModuleNotFoundError:
        findings.append(Finding("lvm-analysis-unavailable", None, "warning",
                                "core.lvm.analyse is not available; metadata not consulted"))
        return None
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
    vg = None
    ref = None
    if report is not None and use_metadata:
        for cand in getattr(report, "volume_groups", []) or []:
            if cand.data_offset is not None and cand.extent_bytes:
                vg = cand
                break
        if vg is not None:
            ref = vg.reference
    E = int(extent_bytes or (vg.extent_bytes if vg is not None else None) or DEFAULT_EXTENT)
    if E <= 0 or E % SECTOR:
        raise SrsalvageError(f"extent size {E} is not a positive multiple of 512")
    reader = SectorReader(ev)
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
        return Reconstruction(ev.path if hasattr(ev, "path") else "", int(ev.size), None, [],
                              findings + [Finding("no-extent-grid", None, "error",
                                                  "no LVM metadata, label or VHD head found: "
                                                  "nothing says where the extents are")], [])
    if not 0 <= grid.data_offset < ev.size:
        return Reconstruction(ev.path if hasattr(ev, "path") else "", int(ev.size), None, [],
                              findings + [Finding("no-extent-grid", None, "error",
                                                  f"PE 0 at {grid.data_offset} ({grid.source}) "
                                                  f"lies outside the image")], [])
    grid.pe_count = max(0, min(grid.pe_count, (ev.size - grid.data_offset) // E, MAX_PES))
    if grid.dev_size is None and grid.pv_offset is not None:
        grid.dev_size = ev.size - grid.pv_offset
    N, D = grid.pe_count, grid.data_offset

    feats = None
    if index is not None:
        n_pes = max(0, min(N, (reader.size - D) // E)) if 0 <= D <= reader.size - E else 0
        feats = index.sectors.pe_features(
            D, E, N, reader.has_data(D + np.arange(n_pes, dtype=np.int64) * E, E))
    if feats is None:
        feats = compute_pe_features(reader, D, E, N, cancel, progress)
    owner = np.full(N, FREE, dtype=np.int32)
    states: list[VdiState] = []
    meta_status: dict[int, str] = {}
    meta_lv: dict[int, Any] = {}

    # -- the MGT volume (sm's SR metadata) when no metadata names it -----------------------------
    mgt: dict[str, Any] | None = None
    if ref is None or ref.metadata is None:
        mgt = _find_mgt(ev, feats, D, E, findings)
        if mgt is not None:
            owner[mgt["pe"]] = RESERVED
            if grid.vg_name is None and mgt.get("sr_uuid"):
                grid.vg_name = "VG_XenStorage-" + mgt["sr_uuid"]
                findings.append(Finding("vg-name-from-mgt", D + mgt["pe"] * E, "info",
                                        f"VG name {grid.vg_name} read from the MGT volume at "
                                        f"PE {mgt['pe']}", {"vg": grid.vg_name}))

    # -- anchors ------------------------------------------------------------------------------
    anchors: dict[int, VhdAnchor] = {}
    for pe in np.nonzero(feats.head_anchor)[0]:
        pe = int(pe)
        base = D + pe * E
        a = parse_anchor(pe, lambda off, n, base=base: ev.read(base + off, n), E, N * E, base)
        if a is None:
            continue
        findings.extend(a.findings)
        anchors[pe] = a

    # -- hard constraints from metadata ---------------------------------------------------------
    if ref is not None and ref.metadata is not None:
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
            if lv.kind not in ("vhd", "raw"):
                for p in pes:
                    if p is not None and 0 <= p < N and owner[p] == FREE:
                        owner[p] = RESERVED
                continue
            idx = len(states)
            a = anchors.pop(pes[0], None) if pes and pes[0] is not None else None
            v = VdiState(idx, a, predict(a, E) if a is not None and a.plausible else None,
                         lv_name=lv.name, le_count=len(pes), metadata_map=status == "live")
            for le, p in enumerate(pes):
                if p is None or not 0 <= p < N:
                    continue
                if status == "deleted" and p in claimed:
                    continue
                if owner[p] != FREE:
                    continue
                owner[p] = idx
                v.placed[le] = Placement(p, 1.0 if status == "live" else 0.9, "metadata",
                                         None if status == "live" else
                                         f"from an older generation ({lv.name} is deleted)")
            if a is None and lv.kind == "vhd" and pes and pes[0] is not None:
                findings.append(Finding("vhd-head-missing", D + pes[0] * E, "warning",
                                        f"{lv.name}: no VHD head at its LE 0 (PE {pes[0]})",
                                        {"lv": lv.name, "pe": pes[0]}))
            meta_status[idx] = status
            meta_lv[idx] = lv
            states.append(v)

    # -- VHDs found only by their structure -----------------------------------------------------
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

    # -- names from what the SR still says (parent locators, MGT) ------------------------------
    lv_sources = _name_vdis(states, mgt, findings)

    # -- the technician's fixed pairs -----------------------------------------------------------
    taken: dict[int, tuple[str, int]] = {}
    if fixed:
        # what the engine gives other VDIs without the fixes: a fix may not take it from them
        base = reconstruct(ev, backups, None, cancel, None, report=report,
                           extent_bytes=extent_bytes, data_offset=data_offset,
                           pe_count=pe_count, use_metadata=use_metadata, index=index)
        taken = {p.pe: (m.key, le) for m in base.vdis for le, p in m.extents}
    _apply_fixes(fixed or {}, states, owner, N, E, taken)

    # -- solve ----------------------------------------------------------------------------------
    solver = Solver(reader, D, E, N, feats, states, owner,
                    Ticker(max(1, N), "matching extents", progress, cancel))
    sigs = index.sectors.lattice_signatures(D, E, N) \
        if index is not None and E == LATTICE * 8 * SECTOR else None
    if sigs is not None:           # what ensure_sigs would read, from the index's one pass
        solver.sig_good, solver.sig_ones = sigs
        solver.sig_done = np.ones(N, bool)
    solver.solve()
    findings.extend(solver.findings)

    if grid.vg_name is None:
        # a differencing VHD names its parent by device-mapper name, VG included
        for v in states:
            if v.anchor is not None and v.anchor.parent_name:
                split = split_dm_name(v.anchor.parent_name)
                if split and split[0].startswith("VG_XenStorage-"):
                    grid.vg_name = split[0]
                    findings.append(Finding(
                        "vg-name-from-parent-locator", None, "info",
                        f"VG name {split[0]} read from the parent name of VHD "
                        f"{v.anchor.uid_str}", {"vg": split[0]}))
                    break
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


def _name_vdis(states: list[VdiState], mgt: dict | None, findings: list[Finding]
               ) -> dict[int, str]:
    """LV names for VDIs found by structure alone, from what the SR still says; returns
    {state index: how the name was found}.

    * a differencing VHD's header parent name (and locators) hold the parent's device-mapper
      name (sm vhdutil.snapshot -> vhd-util snapshot -p /dev/mapper/...; libvhd
      vhd_initialize_header_parent_name takes its basename, formats.md 4.5): the parent
      VHD (unique id = the child's parent id) is the LV `VHD-<vdi uuid>` named there, which is
      what the children's locators must find again after a restore;
    * the MGT volume lists the SR's live VDI uuids: where exactly one visible VHD is still
      unnamed and exactly one live MGT uuid is not yet an LV's name, they are the same VDI.
    The footer's unique id is NOT the VDI uuid (vhd-util create makes its own), so no name is
    made up from it here."""
    by_uid = {v.anchor.uid: v for v in states if v.anchor is not None}
    how: dict[int, str] = {}
    for child in states:
        a = child.anchor
        if a is None or not any(a.parent_uid):
            continue
        parent = by_uid.get(a.parent_uid)
        split = split_dm_name(a.parent_name) if a.parent_name else None
        m = _LV_NAME.fullmatch(split[1]) if split else None
        if parent is None or m is None:
            continue
        name = f"{m.group(1).upper()}-{m.group(2).lower()}"
        if parent.lv_name is None:
            parent.lv_name = name
            how[parent.index] = "parent-locator"
            findings.append(Finding(
                "lv-name-from-parent-locator", None, "info",
                f"VHD {parent.anchor.uid_str} is LV {name}: the parent name in the header of "
                f"its child VHD {a.uid_str}", {"vhd_uuid": parent.anchor.uid_str, "lv": name}))
        elif parent.lv_name != name:
            findings.append(Finding(
                "lv-name-conflict", None, "warning",
                f"VHD {parent.anchor.uid_str} is LV {parent.lv_name}, but its child "
                f"{a.uid_str} names its parent {name}: the child's locator will not resolve "
                f"after a restore", {"vhd_uuid": parent.anchor.uid_str, "lv": parent.lv_name,
                                     "child_says": name}))
    if mgt and mgt.get("vdi_uuids"):
        named = {(v.lv_name or "").lower() for v in states}
        free_uuids = [u for u in mgt["vdi_uuids"] if f"vhd-{u}" not in named
                      and f"lv-{u}" not in named]
        unnamed = [v for v in states if v.lv_name is None and v.anchor is not None
                   and v.anchor.plausible and not v.anchor.hidden]
        if len(free_uuids) == 1 and len(unnamed) == 1:
            v = unnamed[0]
            v.lv_name = f"VHD-{free_uuids[0]}"
            how[v.index] = "mgt"
            findings.append(Finding(
                "lv-name-from-mgt", None, "info",
                f"VHD {v.anchor.uid_str} is LV {v.lv_name}: the one live VDI of the MGT volume "
                f"that no LV is named after, and the one visible VHD still unnamed",
                {"vhd_uuid": v.anchor.uid_str, "lv": v.lv_name}))
    return how


class FixError(SrsalvageError):
    """A `--fix KEY:LE=PE` that cannot apply: unknown VDI, LE or PE out of range, or a PE that
    another VDI (or another LE) holds. The command line prints it as one line, exit 2."""


def _le_limit(v: VdiState, E: int) -> int:
    """How many LEs VDI v's LV can have: its metadata's count, else the largest LV sm gives a
    VHD of its virtual size (or the VHD's own length, whichever is larger)."""
    if v.metadata_map and v.le_count is not None:
        return v.le_count
    a = v.anchor
    if a is None:
        return max([v.le_count or 0] + [le + 1 for le in v.placed])
    from core.match.predict import sm_inflated_bytes
    longest = max(sm_inflated_bytes(a, E) or 0, a.data_end + SECTOR,
                  a.meta_end + a.current_size + a.entries_needed * SECTOR + SECTOR)
    return max(-(-longest // E), v.le_count or 0)


def _apply_fixes(fixed: Mapping[str, Mapping[int, int]], states: list[VdiState],
                 owner: np.ndarray, N: int, E: int,
                 taken: Mapping[int, tuple[str, int]] | None = None) -> None:
    """Pin the technician's LE -> PE pairs as hard constraints. One VDI's fix changes that VDI
    only (its own placement of that PE at another LE is dropped; the solver then decides what
    depends on it); a PE another VDI holds, or one fixed twice, is an error - never two
    placements of one PE."""
    seen: dict[int, tuple[str, int]] = {}
    for key, pairs in fixed.items():
        v = next((s for s in states if _state_key(s) == key or s.lv_name == key
                  or (s.anchor is not None and key.lower() == f"vhd:{s.anchor.uid_str}")), None)
        if v is None:
            keys = ", ".join(_state_key(s) for s in states[:6])
            raise FixError(f"--fix {key}: no VDI with that key"
                           + (f" (keys: {keys}{', ...' if len(states) > 6 else ''})"
                              if states else ""))
        limit = _le_limit(v, E)
        for le, pe in pairs.items():
            le, pe = int(le), int(pe)
            if not 0 <= pe < N:
                raise FixError(f"--fix {key}:{le}={pe}: no such PE (the grid has {N})")
            if not 0 <= le < limit:
                raise FixError(f"--fix {key}:{le}={pe}: LE {le} is out of range "
                               f"(its LV has at most {limit} extents)")
            if pe in seen and seen[pe] != (key, le):
                raise FixError(f"--fix {key}:{le}={pe}: PE {pe} is already fixed as "
                               f"{seen[pe][0]} LE {seen[pe][1]}")
            seen[pe] = (key, le)
            holder = int(owner[pe])
            if holder == RESERVED or (holder >= 0 and holder != v.index):
                what = "a volume that is not a VDI (MGT or a raw LV)" if holder == RESERVED \
                    else _state_key(states[holder])
                raise FixError(f"--fix {key}:{le}={pe}: PE {pe} belongs to {what}; fix that "
                               f"VDI's placement first")
            other = (taken or {}).get(pe)
            if other is not None and other[0] != _state_key(v):
                raise FixError(f"--fix {key}:{le}={pe}: PE {pe} belongs to {other[0]} (its LE "
                               f"{other[1]}); fix that VDI's placement first")
            for ole, pl in list(v.placed.items()):
                if pl.pe == pe and ole != le:
                    del v.placed[ole]
            old = v.placed.get(le)
            if old is not None and owner[old.pe] == v.index and old.pe != pe:
                owner[old.pe] = FREE
            owner[pe] = v.index
            v.placed[le] = Placement(pe, 1.0, "manual", None)


def _find_mgt(ev, feats, D: int, E: int, findings: list[Finding]) -> dict[str, Any] | None:
    """The first PE that starts with sm's `XSSM:` header: the MGT volume (4 MiB, one extent of
    4 MiB), parsed for the SR uuid and its VDI slots."""
    from core.xen import MGT_BYTES, parse_mgt
    cand = np.nonzero(feats.head_xssm)[0] if feats.head_xssm is not None else []
    if not len(cand) or E < MGT_BYTES:
        return None
    pe = int(cand[0])
    content = parse_mgt(ev.read(D + pe * E, MGT_BYTES), D + pe * E)
    findings.extend(content.findings)
    if not content.header_ok:
        return None
    if len(cand) > 1:
        findings.append(Finding("mgt-several", D + int(cand[1]) * E, "warning",
                                f"{len(cand)} PEs start with an MGT header; PE {pe} taken, the "
                                f"others are stale copies", {"pes": [int(c) for c in cand[:16]]}))
    live = [v for v in content.vdis if not v.deleted]
    return {"pe": pe, "sr_uuid": content.sr_uuid, "sr_name_label": content.sr_name_label,
            "allocation": content.allocation, "vdi_slots": len(content.vdis),
            "live_vdis": len(live),
            "vdi_uuids": [v.uuid.lower() for v in live if v.uuid and _UUID.fullmatch(v.uuid.lower())]}


def _suggest_orphans(states: list[VdiState], vdis: list[VdiMap], orphans: list[dict]) -> None:
    """An unplaced LVHD LE that must hold bitmaps gets, as candidates for the technician, the
    unclaimed extents whose bitmaps sit where that LE's do (same LE number on the LVHD lattice,
    which repeats every 513 LEs). Nothing is placed: the editor shows them as suggestions."""
    by_le: dict[int, list[int]] = {}
    for o in orphans:
        if "lvhd_le" in o:
            by_le.setdefault(int(o["lvhd_le"]), []).append(int(o["pe"]))
    if not by_le:
        return
    for v, m in zip(states, vdis):
        if v.pred is None or v.anchor is None or not v.anchor.lvhd:
            continue
        for le in m.missing_les:
            slot = v.pred.slots.get(le)
            if slot is None or not len(slot.bitmap_offsets) or le in m.ambiguous:
                continue
            cands = by_le.get(le % 513, [])
            if cands:
                m.ambiguous[le] = sorted(set(cands))[:16]


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
    kind = lv.kind if lv is not None else "vhd"
    return VdiMap(
        key=_state_key(v), lv=v.lv_name, vhd_uuid=a.uid_str if a is not None else None,
        virtual_bytes=a.current_size if a is not None else None, vhd_bytes=vhd_bytes,
        extents_needed=needed, extents=extents, missing_les=missing, complete=complete,
        kind=kind, status=meta_status or "found", anchor_pe=a.pe if a is not None else None,
        parent_uuid=(a.to_json()["parent_uuid"] if a is not None else None),
        hidden=bool(a.hidden) if a is not None else False, ambiguous=dict(v.ambiguous),
        footer_pe=v.footer_pe, lv_tags=list(getattr(lv, "tags", []) or []),
        lv_status=list(getattr(lv, "lvm_status", []) or []) or None)


# -- orphans -----------------------------------------------------------------------------------
def lvhd_le_of_offset(sector_in_extent: int, extent_sectors: int = 8192) -> int | None:
    """The smallest LE number j at which an LVHD block bitmap (LV sector 8455 + 4104 k) falls
    at this sector of the extent; others are j + 513 m (the lattice repeats every 1024 blocks)."""
    for k in range(1024):
        rel = LVHD_FIRST_BITMAP_SECTOR + LVHD_STRIDE * k - sector_in_extent
        if rel >= 0 and rel % extent_sectors == 0:
            return rel // extent_sectors
    return None


def _orphans(reader: SectorReader, feats, owner: np.ndarray, D: int, E: int, N: int,
             findings: list[Finding], ticker: Ticker, solver=None) -> list[dict[str, Any]]:
    """Data-bearing PEs no VDI explains but that look like VHD pieces: named, not guessed.
    With 4 MiB extents the solver's lattice signatures say which lattice sectors look like
    bitmaps (read once, shared with the search, or from the evidence index)."""
    idx = np.nonzero((owner == FREE) & feats.has_data)[0]
    out: list[dict[str, Any]] = []
    lattice = np.arange(7, E // SECTOR, 8, dtype=np.int64) * SECTOR   # 4 KiB-aligned data
    use_sigs = solver is not None and E == LATTICE * 8 * SECTOR
    if use_sigs:
        solver.ensure_sigs(idx[:ORPHAN_LIMIT])
    for n, pe in enumerate(idx[:ORPHAN_LIMIT]):
        ticker.check()
        pe = int(pe)
        item: dict[str, Any] = {"pe": pe}
        if feats.tail_footer[pe]:
            item["footer_uuid"] = _fmt_uuid(feats.tail_uid[pe].tobytes())
        if feats.head_batmap[pe]:
            item["tdbatmap"] = True
        if feats.head_anchor[pe]:
            item["vhd_head_uuid"] = _fmt_uuid(feats.head_uid[pe].tobytes())
        if use_sigs:
            good = np.nonzero(np.unpackbits(solver.sig_good[pe]))[0]
        else:
            secs = reader.gather(D + pe * E + lattice, SECTOR)
            good = np.nonzero(bitmap_likeness(secs) >= 0.95)[0]
        if len(good):
            offs = lattice[good] // SECTOR
            item["bitmap_sectors"] = [int(x) for x in offs[:8]]
            le = lvhd_le_of_offset(int(offs[0]))
            if le is not None:
                item["lvhd_le"] = le
        if len(item) > 1:
            out.append(item)
    for item in out:
        what = []
        if "lvhd_le" in item:
            what.append(f"LVHD block bitmaps as in LE {item['lvhd_le']} (+513k)")
        if "footer_uuid" in item:
            what.append(f"ends with the footer of VHD {item['footer_uuid']}")
        if "tdbatmap" in item:
            what.append("holds a tdbatmap (an LE 1)")
        if "vhd_head_uuid" in item:
            what.append(f"starts with the head of VHD {item['vhd_head_uuid']}")
        if what:
            findings.append(Finding("orphan-vhd-extent", D + item["pe"] * E, "info",
                                    f"PE {item['pe']}: " + "; ".join(what) + " — no VDI claims it",
                                    dict(item)))
    if len(idx) > ORPHAN_LIMIT:
        findings.append(Finding("orphans-truncated", None, "info",
                                f"{len(idx) - ORPHAN_LIMIT} more unexplained PEs hold data; "
                                f"not examined"))
    return out


def _fmt_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
