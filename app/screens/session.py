"""The workstation's session: the evidence, the engine's results, the case, and the glue between.

No Textual here (it is driven by the screens and tested directly). Everything it shows is the
engine's one model: the analysis' `core.lvm.model.VolumeGroup`s, plus, when the metadata is
gone, the VG the reconstruction rebuilt (core.match.rebuilt, a generation of origin
`reconstruct`); each LV read through its map as the technician sees it (core.vdi_maps), and
exported by the strategy core decides (core.vdi_export).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from core.case import Case, Extent, evidence_identity
from core.errors import SrsalvageError, UnsafeError
from core.evidence_index import EvidenceIndex, index_path, indexable
from core.evidence_set import EvidenceSet
from core.lvm.model import Generation, LogicalVolume, VolumeGroup
from core.lvm.places import lvm_places
from core.lvm.space import pe_disk_offset, pes_space
from core.match.rebuilt import (REBUILT_STATUS, rebuilt_lv_name, rebuilt_volume_group,
                                suggested_extents, undecided_candidates)
from core.output import check_output_path
from core.progress import ProgressFn
from core.scan import ScanResult
from core.sr import SrReport, analyse_sr
from core.source import Evidence
from core.spaces import pes_to_map_runs
from core.vdi_export import export_vdi
from core.vdi_maps import (chain_links, find_lv, generation_volumes, map_conflicts,
                           metadata_extents, placed_extents, resolve_in_generation)
from core.vhd.checks import check_vhd
from core.vhd.export import ExportResult
from core.vhd.reader import VhdImage
from core.xen_names import lv_kind
from widgets.disk_map import DiskMapModel, Owner
from widgets.extent_editor import CheckState
from widgets.overlay import Field, Overlay, fields_of

if TYPE_CHECKING:
    from core.match.reconstruct import Reconstruction

CARVE_KINDS = ("mssql", "rar")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass
class Selection:
    vg: VolumeGroup | None = None
    gen: Generation | None = None
    lv: LogicalVolume | None = None

    @property
    def key(self) -> str | None:
        return None if self.lv is None else vdi_key(self.lv)


def vdi_key(lv: LogicalVolume) -> str:
    return lv.name


class Session:
    """One evidence image opened read-only, its case, and what the engine found in it."""

    def __init__(self, image_path: str, case_path: str | None = None,
                 evidence: Evidence | EvidenceSet | None = None, backups: Sequence[str] = (),
                 pv_offsets: Sequence[str] = (), case_mode: str = "case",
                 no_index: bool = False) -> None:
        """case_mode: "case" (open or create; CaseMismatch when made on other evidence),
        "new" (a new case, the old one kept aside), "none" (read-only: nothing recorded)."""
        self.ev: Evidence | EvidenceSet = evidence or Evidence(image_path)
        self.case_path_arg = case_path      # where the evidence index is kept follows --case
        self.no_index = no_index            # --no-index: every step reads for itself
        self.index: EvidenceIndex | None = None   # the evidence index once loaded
        self.index_note = ""                # how it came: kept one used, or built (and why)
        # several images of one SR (core.evidence_set): the case file lives beside the first
        self.evidence_paths: list[str] = (list(self.ev.paths) if isinstance(self.ev, EvidenceSet)
                                          else [self.ev.path])
        self.image_path = self.evidence_paths[0]
        self.backups, self.pv_offsets = list(backups), list(pv_offsets)
        self.case_mode = case_mode
        self.case_mismatch = ""
        identity = evidence_identity(self.ev)
        if case_mode == "none":
            self.case = Case(None, self.image_path, self.ev.size)
            self.case.identity = identity
            self.case_note = "no case: read-only, nothing is recorded (opened with --no-case)"
        else:
            self.case, self.case_note = Case.open(self.image_path, case_path, image_bytes=self.ev.size,
                                                  identity=identity, new_case=case_mode == "new")
        self.report: SrReport | None = None
        self.analysis_error: str | None = None
        self.scan_result: ScanResult | None = None
        self.carve_hits: list[int] = []     # disk offsets of the carving screen's last hits
        self.reconstruction: Reconstruction | None = None
        self.suggestions: dict[str, list[Extent | None]] = {}
        self.candidates: dict[str, dict[int, list[int]]] = {}   # undecided LE -> fitting PEs
        self.parents: dict[str, str] = {}
        self.rebuilt: VolumeGroup | None = None
        self.sel = Selection()
        self._lock = threading.Lock()

    # -- analysis -------------------------------------------------------------------------------
    def load_index(self, cancel: threading.Event | None = None, progress: ProgressFn | None = None,
                   say: Callable[[str], None] | None = None) -> EvidenceIndex | None:
        """The evidence index (issue 14): the one kept beside the case when it is this
        evidence's, else built by one sequential pass (and kept there; in memory only without
        a case). None with --no-index, or when the evidence cannot be indexed (an SR over
        several images): the analysis, scan and reconstruction then read for themselves."""
        if self.no_index or not indexable(self.ev):
            return None
        # as the commands do (app.commands._common.evidence_index): without a case, a kept
        # index that fits is used but a new one is not kept
        path = index_path(self.image_path, self.case_path_arg)
        self.index, self.index_note = EvidenceIndex.load_or_build(
            self.ev, path, cancel, progress, save=self.case_mode != "none", say=say)
        return self.index

    def analyse(self, cancel: threading.Event | None = None,
                progress: ProgressFn | None = None) -> SrReport:
        # with the evidence index, the whole-disk pass is already made: no read of the disk
        hits = {"hits": self.index.disk_hits(text=True)} if self.index is not None else {}
        return analyse_sr(self.ev, backups=self.backups, cancel=cancel, progress=progress,
                          pv_offsets=self.pv_offsets, **hits)

    def scan(self, cancel: threading.Event | None = None,
             progress: ProgressFn | None = None) -> ScanResult:
        from core.scan import available_kinds

        # the workstation scans for everything, carving kinds included, so carve hits
        # (SQL Server pages, RAR archives) are marked on the disk map
        return self.scan_kinds(sorted(available_kinds()), cancel, progress)

    def scan_kinds(self, kinds: Sequence[str] | None, cancel: threading.Event | None = None,
                   progress: ProgressFn | None = None) -> ScanResult:
        """The scan for `kinds` (None: the default ones): from the evidence index when it can
        answer (it scanned for those kinds), else a pass over the evidence."""
        from core.scan import scan

        if self.index is not None:
            result = self.index.scan_result(self.ev, kinds, 0, None, cancel=cancel,
                                            progress=progress)
            if result is not None:
                return result
        return scan(self.ev, kinds=kinds, cancel=cancel, progress=progress)

    @property
    def volume_groups(self) -> list[VolumeGroup]:
        """The analysis' VGs, plus the reconstructed one when metadata was lost."""
        vgs = list(self.report.volume_groups) if self.report is not None else []
        return vgs + ([self.rebuilt] if self.rebuilt is not None else [])

    def set_report(self, report: SrReport) -> None:
        self.report = report
        self.sel = Selection()
        self.bind_lvm_identity(report)
        vgs = self.volume_groups
        if not vgs:
            return
        # the case's chosen generation wins, else the one LVM would use, else the newest
        vg, gen = vgs[0], None
        chosen = self.case.generation
        if chosen:
            for v in vgs:
                if v.name == chosen.get("vg"):
                    g = self.generation(v, chosen.get("seqno"))
                    if g is not None:
                        vg, gen = v, g
        if gen is None:
            gen = vg.current or (vg.generations[0] if vg.generations else None)
        self.sel = Selection(vg, gen)

    def bind_lvm_identity(self, report: SrReport) -> None:
        """Record the VG/PV ids in the case; ids that differ from the case's mean the case was
        made on other evidence: it is detached (read-only, nothing recorded) and said so."""
        vgs = [{"vg": vg.name, "id": vg.id, "pvs": [p.id for p in vg.pvs if p.id]}
               for vg in report.volume_groups if vg.id]
        why = self.case.bind_lvm(vgs) if self.case.path else ""
        if why:
            self.case_mismatch = (f"case file {self.case.path} was made on other evidence ({why}); "
                                  f"it is set aside for this session: nothing is recorded. Reopen "
                                  f"with --new-case to start a new case")
            self.case.path = None

    @property
    def recognised(self) -> bool:
        r = self.report
        return bool(r is not None and (r.volume_groups or r.partitions))

    @staticmethod
    def generation(vg: VolumeGroup, seqno: object) -> Generation | None:
        return next((g for g in vg.generations if g.seqno == seqno), None)

    def newest(self, vg: VolumeGroup) -> Generation | None:
        """The generation LVM would use (what `deleted` / `claimed_by` are judged against)."""
        ref = vg.reference
        return ref if ref is not None else (vg.generations[0] if vg.generations else None)

    def choose_generation(self, vg: VolumeGroup, gen: Generation) -> None:
        self.sel = Selection(vg, gen, None)
        self.case.choose_generation(vg.name, gen.seqno)

    def find_lv(self, gen: Generation | None, key: str) -> LogicalVolume | None:
        return None if gen is None else find_lv(gen, key)

    def label(self, lv: LogicalVolume, vg: VolumeGroup | None = None) -> str:
        """The VDI's name label in the SR's MGT volume ("" when none is known): of `vg`, by
        default the selected one."""
        vg = vg or self.sel.vg
        return (self.report.label(vg, lv) if self.report is not None else None) or ""

    # -- extent maps ----------------------------------------------------------------------------
    def engine_extents(self, lv: LogicalVolume) -> list[Extent]:
        """The engine's map of `lv`: the reconstruction's placements for a rebuilt VDI, else
        the selected generation's metadata (core.vdi_maps)."""
        if lv.status == REBUILT_STATUS:
            return placed_extents(lv, self.suggestions.get(vdi_key(lv), []))
        if self.sel.vg is None:
            return [Extent(pe, 1.0, "metadata") if pe is not None else Extent(None, 0.0, "gap")
                    for pe in lv.pes()]
        return metadata_extents(self.sel.vg, lv)

    def extents(self, lv: LogicalVolume) -> tuple[list[Extent], bool]:
        """(extents, edited): the case's map when the technician edited this VDI, else the
        selected generation's."""
        key = vdi_key(lv)
        if self.case.has_map(key):
            return list(self.case.map_of(key).extents), True
        return self.engine_extents(lv), False

    def pes(self, lv: LogicalVolume) -> list[int | None]:
        return [e.pe for e in self.extents(lv)[0]]

    def ensure_case_map(self, lv: LogicalVolume, gen: Generation) -> None:
        origin = "reconstruction" if lv.status == REBUILT_STATUS else f"generation {gen.seqno}"
        self.case.ensure_map(vdi_key(lv), self.engine_extents(lv), origin=origin)

    # -- checks ---------------------------------------------------------------------------------
    def check(self, vg: VolumeGroup, lv: LogicalVolume, pes: Sequence[int | None],
              cancel: threading.Event | None = None) -> CheckState:
        """The VHD checks of `lv` read through `pes` (the map in the editor, maybe unsaved),
        its parent found among the generation's other LVs, each through its own map."""
        space = pes_space(self.ev, vg, list(pes), lv.name)
        kind = lv_kind(lv.name)
        if kind != "vhd":
            return CheckState(False, None, f"{kind} LV: no VHD structure to check")
        gen = self.sel.gen
        find_parent = None
        if gen is not None:
            resolved = resolve_in_generation(
                self.ev, vg, gen, lv, lambda other: pes if other is lv else self.pes(other))

            def find_parent(unique_id: bytes) -> VhdImage | None:
                """A differencing disk's parent among the other VHD LVs of the generation."""
                if cancel is not None and cancel.is_set():
                    return None
                img = resolved.find_parent(unique_id)
                return None if img is resolved.volume.image() else img
        findings = check_vhd(space, find_parent)
        errors = [f for f in findings if f.severity == "error"]
        warnings = [f for f in findings if f.severity == "warning"]
        per_le: dict[int, str] = {}
        for f in errors + warnings:
            if f.offset is not None and f.space in ("vhd", "lv"):
                le = f.offset // vg.extent_bytes
                per_le.setdefault(le, f.kind)
        missing = sum(1 for p in pes if p is None)
        summary = f"{_count(len(errors), 'error')}, {_count(len(warnings), 'warning')}"
        if errors:
            summary += f": {errors[0].kind} — {errors[0].message}"
        if missing:
            summary += f"; {missing} extents unknown"
        return CheckState(False, not errors, summary, per_le, list(findings))

    def vhd_image(self, vg: VolumeGroup, lv: LogicalVolume) -> VhdImage:
        return VhdImage.open(pes_space(self.ev, vg, self.pes(lv), lv.name), name=lv.name)

    def chain_parents(self, vg: VolumeGroup, gen: Generation,
                      cancel: threading.Event | None = None) -> dict[str, str]:
        """{child LV: parent LV} from the VHD headers of the generation's VHD LVs."""
        return chain_links(generation_volumes(self.ev, vg, gen, self.pes), cancel)

    # -- reconstruction ---------------------------------------------------------------------------
    def reconstruct(self, cancel: threading.Event | None = None,
                    progress: ProgressFn | None = None) -> dict[str, list[Extent | None]]:
        """Rebuild the extent maps from VHD structure: suggestions for the editor, and, when no
        metadata survives, the rebuilt VG (core.match.rebuilt) to work on."""
        from core.match.reconstruct import reconstruct
        index = {"index": self.index} if self.index is not None else {}
        from core.unreadable import annotate_reconstruction

        rec = reconstruct(self.ev, cancel=cancel, progress=progress, report=self.report, **index)
        annotate_reconstruction(rec, list(self.ev.unreadable))  # unreadable sectors named
        self.reconstruction = rec
        self.suggestions = {rebuilt_lv_name(v): suggested_extents(v) for v in rec.vdis}
        self.candidates = {rebuilt_lv_name(v): undecided_candidates(v) for v in rec.vdis}
        if self.report is None or not self.report.volume_groups:
            self.rebuilt = rebuilt_volume_group(rec)
        return self.suggestions

    # -- disk map -------------------------------------------------------------------------------
    def disk_model(self) -> DiskMapModel:
        sel = self.sel
        hits = self.carve_hit_offsets()
        if sel.vg is None:
            model = DiskMapModel.blank(self.ev.size)
            model.add_hits(hits)
            model.add_unreadable(self.ev.unreadable)
            return model
        vg = sel.vg
        placed = [pv for pv in vg.pvs if pv.offset is not None]
        E = vg.extent_bytes
        if not placed or not E:
            model = DiskMapModel.blank(self.ev.size)
            model.add_hits(hits)
            return model
        # the PE axis runs along the disk from the lowest PV's PE 0: every PV of the VG is shown
        # with its metadata area, each extent painted where it lies (core.lvm.space)
        D = min(pv.offset + pv.pe_start for pv in placed)
        span = max((pv.offset + pv.pe_start - D) // E + int(pv.pe_count) for pv in placed)
        meta = [(pv.offset, pv.offset + pv.pe_start) for pv in placed if pv.pe_start]
        multi = len(vg.pvs) > 1

        def axis(numbers: Sequence[int | None]) -> list[int | None]:
            if not multi:
                return list(numbers)
            out = []
            for n in numbers:
                off = pe_disk_offset(vg, n)
                out.append(None if off is None else (off - D) // E)
            return out

        bounds = []
        for p in (self.report.partitions if self.report is not None else []):
            bounds.append(p.offset)
        model = DiskMapModel.for_vg(self.ev.size, E, D, span, meta, bounds)
        if sel.gen is not None:
            newest = self.newest(vg)
            for lv in sorted(sel.gen.lvs.values(), key=lambda l: l.name):
                claimed_pes = {int(k) for k in lv.claimed_by}
                deleted = lv.status == "deleted"
                if newest is not None and sel.gen is newest and not any(
                        "/" in str(v) for v in lv.claimed_by.values()):
                    claimed_pes = set()
                engine = [e.pe for e in self.engine_extents(lv)]
                claimed = [a for a, own in zip(axis(engine), lv.pes())
                           if a is not None and own in claimed_pes]
                model.set_owner(Owner(lv.name, self.label(lv, sel.vg), deleted, vdi_key(lv)),
                                axis(self.pes(lv)), claimed)
        model.add_hits(hits)
        model.add_unreadable(self.ev.unreadable)
        return model

    def carve_hit_offsets(self) -> list[int]:
        """Carve hits for the map: the scan's carving kinds and the carving screen's hits."""
        r = self.scan_result
        found = [] if r is None else [
            f.offset for f in r.findings if f.kind.startswith(CARVE_KINDS)]
        return found + list(self.carve_hits)

    def owner_index(self, model: DiskMapModel, name: str) -> int | None:
        for i, o in enumerate(model.owners):
            if o.name == name:
                return i
        return None

    # -- structure overlays -----------------------------------------------------------------------
    def disk_overlay(self) -> Overlay:
        """MBR/GPT, LVM label / mda header / metadata texts placed on the disk."""
        from core.structs import gpt, mbr

        structures: list[tuple[int, str, list]] = []
        report = self.report
        schemes = {p.scheme for p in report.partitions} if report is not None else set()
        if schemes & {"mbr", "gpt"}:
            structures.append((0, "MBR", fields_of(mbr.mbr)))
        if "gpt" in schemes:
            structures.append((512, "GPT header", fields_of(gpt.gpt_header)))
            try:
                hdr = gpt.gpt_header.parse(self.ev.read(512, 512))
                lba, count = int(hdr.partition_entry_lba), min(int(hdr.npartition_entries), 128)
                if int(hdr.sizeof_partition_entry) == 128 and 0 < lba < 1 << 40:
                    table = fields_of(gpt.gpt_entry)
                    for i in range(count):
                        structures.append((lba * 512 + i * 128, f"GPT entry {i}", table))
            except Exception:  # a damaged header: the header fields are still shown
                pass
        # LVM labels, PV headers, metadata-area headers and metadata texts (core.lvm.places)
        for place in (lvm_places(report) if report is not None else []):
            if place.struct is None:
                structures.append((place.offset, place.title, [Field(0, place.length, "text")]))
            else:
                structures.append((place.offset, place.title,
                                   fields_of(place.struct,
                                             data=self.ev.read(place.offset, place.length))))
        return Overlay.build(structures)

    def vhd_overlay(self, img: VhdImage) -> Overlay:
        """Footer copy, dynamic header, BAT, batmap, block bitmaps, footer — in the LV's space."""
        from core.structs import vhd as s

        structures: list[tuple[int, str, list]] = []
        footer = fields_of(s.hd_ftr)
        if img.copy_footer is not None or img.footer_offset not in (None, 0):
            structures.append((0, "VHD footer copy", footer))
        if img.footer_offset is not None:
            structures.append((img.footer_offset, "VHD footer", footer))
        if img.header is not None and img.header_offset is not None:
            structures.append((img.header_offset, "VHD dd_hdr", fields_of(s.dd_hdr)))
            table = int(img.header.table_offset)
            structures.append((table, "VHD BAT", [Field(0, 4 * int(img.bat_entries_declared), "bat")]))
            if img.batmap_header_offset is not None:
                structures.append((img.batmap_header_offset, "VHD batmap header",
                                   fields_of(s.dd_batmap_hdr)))
            nb = img.bitmap_bytes
            for block in list(img.allocated_blocks[:65536]):
                off = img.block_bitmap_offset(int(block))
                if off is not None:
                    structures.append((off, f"VHD bitmap of block {int(block)}", [Field(0, nb, "bitmap")]))
        return Overlay.build(structures)

    # -- export ---------------------------------------------------------------------------------
    @staticmethod
    def conflict_place(vg: VolumeGroup) -> str:
        return ("of the reconstruction" if any(g.rebuilt for g in vg.generations)
                else "in a newer generation")

    def conflicts(self, vg: VolumeGroup, lv: LogicalVolume) -> dict[int, str]:
        """PEs of this map that the newest generation gives to another LV (core.vdi_maps)."""
        return map_conflicts(vg, lv, self.pes(lv))

    def export(self, vg: VolumeGroup, lv: LogicalVolume, dest: str, fmt: str, force: bool = False,
               overwrite: bool = False, cancel: threading.Event | None = None,
               progress: ProgressFn | None = None) -> ExportResult:
        """Export `lv` of the selected generation through its map as shown (the case's edited
        map, else the generation's); the strategy is core's (core.vdi_export.export_vdi)."""
        conflicts = self.conflicts(vg, lv)
        if conflicts and not force:
            first = sorted(conflicts.items())[:3]
            raise UnsafeError(f"{len(conflicts)} extents of {lv.name} belong to another LV "
                              f"{self.conflict_place(vg)} (e.g. PE {first[0][0]} to {first[0][1]}); "
                              f"export with force to proceed")
        evidence = self.evidence_paths + self.backups
        check_output_path(dest, evidence, overwrite)
        gen = self.sel.gen
        if gen is None:
            raise SrsalvageError(f"{lv.name}: no generation chosen")
        resolved = resolve_in_generation(self.ev, vg, gen, lv, self.pes, conflicts)
        result = export_vdi(resolved, fmt, dest, evidence, overwrite, force=force,
                            cancel=cancel, progress=progress)
        key = vdi_key(lv)
        origin = self.case.maps[key].origin if self.case.has_map(key) else ""
        missing = result.unreadable_virtual
        self.case.log_export(key, os.path.abspath(dest), fmt, result.bytes, result.sha256,
                             forced=bool(conflicts), generation=gen.seqno,
                             map=origin or f"generation {gen.seqno}",
                             map_runs=pes_to_map_runs(self.pes(lv)),
                             untrusted=result.untrusted[:1000],
                             taken_extents=result.taken, via="workstation",
                             **({"unreadable_virtual": [list(r) for r in missing]} if missing else {}))
        return result
