"""The workstation's session: the evidence, the engine's results, the case, and the glue between.

No Textual here (it is driven by the screens and tested directly). The engine modules are being
written alongside; each is imported when first needed and, when missing, the session says so in
one line (`EngineMissing`) instead of inventing data.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from core.case import Case, Extent, evidence_identity
from core.errors import SrsalvageError
from core.progress import ProgressFn
from core.source import Evidence
from core.lvm.space import pe_disk_offset, pes_space, vg_pes
from core.spaces import pes_to_map_runs
from widgets.disk_map import DiskMapModel, Owner
from widgets.extent_editor import CheckState
from widgets.overlay import Overlay, fields_of

CARVE_KINDS = ("mssql", "rar")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class EngineMissing(SrsalvageError):
    """An engine module this action needs is not installed/written."""


def engine(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineMissing(f"{what} not available ({module}: {exc})") from None


@dataclass
class Selection:
    vg: Any = None
    gen: Any = None
    lv: Any = None

    @property
    def key(self) -> str | None:
        return None if self.lv is None else vdi_key(self.lv)


def vdi_key(lv: Any) -> str:
    return lv.name


# -- reconstructed VDIs (no surviving metadata): the same shape as the analysis' VG/LV models, so
#    the tree, map, editor, checks and export treat them like any other generation --------------
@dataclass
class RebuiltLV:
    """A VDI found by the reconstruction engine from VHD structure alone."""

    name: str
    extents: list[Extent]
    kind: str = "vhd"
    status: str = "rebuilt"
    label: str | None = None
    claimed_by: dict = field(default_factory=dict)
    vdi_uuid: str | None = None

    @property
    def le_count(self) -> int:
        return len(self.extents)

    def pes(self) -> list[int | None]:
        return [e.pe for e in self.extents]


@dataclass
class RebuiltPV:
    name: str
    offset: int
    pe_count: int
    pe_start: int
    label_found: bool = False
    id: str = ""


@dataclass
class RebuiltGeneration:
    lvs: dict[str, RebuiltLV]
    seqno: int = 0
    source: str = "reconstruct"
    crc_ok: bool | None = None
    current: bool = False
    description: str = "extent maps rebuilt from VHD structure"
    creation_time: int | None = None
    copies: list = field(default_factory=list)
    text: bytes = b""


@dataclass
class RebuiltVG:
    name: str
    extent_bytes: int
    data_offset: int
    pvs: list[RebuiltPV]
    generations: list[RebuiltGeneration]
    reference: Any = None


@dataclass
class ExportResult:
    path: str
    fmt: str
    size: int
    sha256: str
    forced: bool = False
    notes: list[str] = field(default_factory=list)
    untrusted: list[dict] = field(default_factory=list)   # core.provenance ranges


class Session:
    """One evidence image opened read-only, its case, and what the engine found in it."""

    def __init__(self, image_path: str, case_path: str | None = None,
                 evidence: Evidence | None = None, backups: Sequence[str] = (),
                 pv_offsets: Sequence[str] = (), case_mode: str = "case",
                 no_index: bool = False) -> None:
        """case_mode: "case" (open or create; CaseMismatch when made on other evidence),
        "new" (a new case, the old one kept aside), "none" (read-only: nothing recorded)."""
        self.ev = evidence or Evidence(image_path)
        self.case_path_arg = case_path      # where the evidence index is kept follows --case
        self.no_index = no_index            # --no-index: every step reads for itself
        self.index: Any = None              # core.evidence_index.EvidenceIndex once loaded
        self.index_note = ""                # how it came: kept one used, or built (and why)
        # several images of one SR (core.evidence_set): the case file lives beside the first
        self.evidence_paths: list[str] = list(getattr(self.ev, "paths", [self.ev.path]))
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
        self.report: Any = None
        self.analysis_error: str | None = None
        self.scan_result: Any = None
        self.carve_hits: list[int] = []     # disk offsets of the carving screen's last hits
        self.reconstruction: Any = None
        self.suggestions: dict[str, list[Extent | None]] = {}
        self.candidates: dict[str, dict[int, list[int]]] = {}   # undecided LE -> fitting PEs
        self.parents: dict[str, str] = {}
        self.rebuilt: RebuiltVG | None = None
        self.sel = Selection()
        self._lock = threading.Lock()

    # -- analysis -------------------------------------------------------------------------------
    def load_index(self, cancel: threading.Event | None = None, progress: ProgressFn | None = None,
                   say: Any = None) -> Any:
        """The evidence index (issue 14): the one kept beside the case when it is this
        evidence's, else built by one sequential pass (and kept there; in memory only without
        a case). None with --no-index, or when the evidence cannot be indexed (an SR over
        several images): the analysis, scan and reconstruction then read for themselves."""
        try:
            from core.evidence_index import EvidenceIndex, index_path, indexable
        except ImportError:
            return None
        if self.no_index or not indexable(self.ev):
            return None
        # as the commands do (app.commands._common.evidence_index): without a case, a kept
        # index that fits is used but a new one is not kept
        path = index_path(self.image_path, self.case_path_arg)
        self.index, self.index_note = EvidenceIndex.load_or_build(
            self.ev, path, cancel, progress, save=self.case_mode != "none", say=say)
        return self.index

    def analyse(self, cancel: threading.Event | None = None, progress: ProgressFn | None = None) -> Any:
        mod = engine("core.lvm.analyse", "LVM analysis engine")
        # with the evidence index, the whole-disk pass is already made: no read of the disk
        hits = {"hits": self.index.disk_hits(text=True)} if self.index is not None else {}
        return mod.analyse_disk(self.ev, backups=self.backups, cancel=cancel, progress=progress,
                                pv_offsets=self.pv_offsets, **hits)

    def scan(self, cancel: threading.Event | None = None, progress: ProgressFn | None = None) -> Any:
        from core.kinds import load_builtin_kinds

        # the workstation scans for everything, carving kinds included, so carve hits
        # (SQL Server pages, RAR archives) are marked on the disk map
        kinds = sorted(load_builtin_kinds())
        return self.scan_kinds(kinds, cancel, progress)

    def scan_kinds(self, kinds: Sequence[str] | None, cancel: threading.Event | None = None,
                   progress: ProgressFn | None = None) -> Any:
        """The scan for `kinds` (None: the default ones): from the evidence index when it can
        answer (it scanned for those kinds), else a pass over the evidence."""
        mod = engine("core.scan", "scan engine")
        if self.index is not None:
            result = self.index.scan_result(self.ev, kinds, 0, None, cancel=cancel,
                                            progress=progress)
            if result is not None:
                return result
        return mod.scan(self.ev, kinds=kinds, cancel=cancel, progress=progress)

    @property
    def volume_groups(self) -> list[Any]:
        """The analysis' VGs, plus the reconstructed one when metadata was lost."""
        vgs = list(getattr(self.report, "volume_groups", []) or [])
        return vgs + ([self.rebuilt] if self.rebuilt is not None else [])

    def set_report(self, report: Any) -> None:
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
            gen = getattr(vg, "current", None) or (vg.generations[0] if vg.generations else None)
        self.sel = Selection(vg, gen)

    def bind_lvm_identity(self, report: Any) -> None:
        """Record the VG/PV ids in the case; ids that differ from the case's mean the case was
        made on other evidence: it is detached (read-only, nothing recorded) and said so."""
        vgs = [{"vg": vg.name, "id": getattr(vg, "id", ""),
                "pvs": [p.id for p in getattr(vg, "pvs", []) if getattr(p, "id", "")]}
               for vg in getattr(report, "volume_groups", []) or [] if getattr(vg, "id", "")]
        why = self.case.bind_lvm(vgs) if self.case.path else ""
        if why:
            self.case_mismatch = (f"case file {self.case.path} was made on other evidence ({why}); "
                                  f"it is set aside for this session: nothing is recorded. Reopen "
                                  f"with --new-case to start a new case")
            self.case.path = None

    @property
    def recognised(self) -> bool:
        r = self.report
        return bool(r is not None and (getattr(r, "volume_groups", None) or getattr(r, "partitions", None)))

    @staticmethod
    def generation(vg: Any, seqno: Any) -> Any:
        for g in vg.generations:
            if g.seqno == seqno:
                return g
        return None

    def newest(self, vg: Any) -> Any:
        """The generation LVM would use (what `deleted` / `claimed_by` are judged against)."""
        ref = getattr(vg, "reference", None)
        return ref if ref is not None else (vg.generations[0] if vg.generations else None)

    def choose_generation(self, vg: Any, gen: Any) -> None:
        self.sel = Selection(vg, gen, None)
        self.case.choose_generation(vg.name, gen.seqno)

    def find_lv(self, gen: Any, key: str) -> Any:
        if gen is None:
            return None
        for lv in gen.lvs.values():
            if vdi_key(lv) == key or getattr(lv, "vdi_uuid", None) == key:
                return lv
        return None

    # -- extent maps ----------------------------------------------------------------------------
    def engine_extents(self, lv: Any) -> list[Extent]:
        if isinstance(lv, RebuiltLV):
            return list(lv.extents)
        claimed = {int(k) for k in (getattr(lv, "claimed_by", {}) or {})}
        out = []
        # VG-wide PE numbers (core.lvm.space): with one PV, LVM's own PE numbers
        numbers = vg_pes(self.sel.vg, lv) if self.sel.vg is not None else lv.pes()
        for pe, own in zip(numbers, lv.pes()):
            if pe is None:
                out.append(Extent(None, 0.0, "gap"))
            elif own in claimed:  # a newer generation gave this PE to another LV: doubtful
                out.append(Extent(pe, 0.5, "metadata"))
            else:
                out.append(Extent(pe, 1.0, "metadata"))
        return out

    def extents(self, lv: Any) -> tuple[list[Extent], bool]:
        """(extents, edited): the case's map when the technician edited this VDI, else the
        selected generation's."""
        key = vdi_key(lv)
        if self.case.has_map(key):
            return list(self.case.map_of(key).extents), True
        return self.engine_extents(lv), False

    def pes(self, lv: Any) -> list[int | None]:
        return [e.pe for e in self.extents(lv)[0]]

    def ensure_case_map(self, lv: Any, gen: Any) -> None:
        origin = "reconstruction" if isinstance(lv, RebuiltLV) else f"generation {gen.seqno}"
        self.case.ensure_map(vdi_key(lv), self.engine_extents(lv), origin=origin)

    # -- checks ---------------------------------------------------------------------------------
    def check(self, vg: Any, lv: Any, pes: Sequence[int | None],
              cancel: threading.Event | None = None) -> CheckState:
        checks = engine("core.vhd.checks", "VHD check engine")
        reader = engine("core.vhd.reader", "VHD reader")
        space = pes_space(self.ev, vg, pes, lv.name)
        if lv.kind != "vhd":
            return CheckState(False, None, f"{lv.kind} LV: no VHD structure to check")
        gen = self.sel.gen

        def find_parent(unique_id: bytes) -> Any:
            """A differencing disk's parent among the other VHD LVs of the generation."""
            for other in (gen.lvs.values() if gen is not None else []):
                if other is lv or other.kind != "vhd" or (cancel is not None and cancel.is_set()):
                    continue
                try:
                    img = reader.VhdImage.open(pes_space(self.ev, vg, self.pes(other), other.name),
                                               name=other.name)
                except SrsalvageError:
                    continue
                if img.footer is not None and bytes(img.unique_id) == bytes(unique_id):
                    return img
            return None

        findings = checks.check_vhd(space, find_parent)
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

    def vhd_image(self, vg: Any, lv: Any) -> Any:
        reader = engine("core.vhd.reader", "VHD reader")
        return reader.VhdImage.open(pes_space(self.ev, vg, self.pes(lv), lv.name), name=lv.name)

    def chain_parents(self, vg: Any, gen: Any, cancel: threading.Event | None = None) -> dict[str, str]:
        """{child LV: parent LV} from the VHD headers of the generation's VHD LVs."""
        reader = engine("core.vhd.reader", "VHD reader")
        by_uuid: dict[bytes, str] = {}
        parent_of: dict[str, bytes] = {}
        for lv in gen.lvs.values():
            if cancel is not None and cancel.is_set():
                break
            if lv.kind != "vhd":
                continue
            try:
                img = reader.VhdImage.open(pes_space(self.ev, vg, self.pes(lv), lv.name), name=lv.name)
            except SrsalvageError:
                continue
            if img.footer is None:
                continue
            by_uuid[bytes(img.unique_id)] = lv.name
            p = img.parent_unique_id
            if p:
                parent_of[lv.name] = bytes(p)
        return {c: by_uuid[p] for c, p in parent_of.items() if p in by_uuid and by_uuid[p] != c}

    # -- reconstruction ---------------------------------------------------------------------------
    def reconstruct(self, cancel: threading.Event | None = None,
                    progress: ProgressFn | None = None) -> dict[str, list[Extent | None]]:
        mod = engine("core.match.reconstruct", "reconstruction engine")
        index = {"index": self.index} if self.index is not None else {}
        result = mod.reconstruct(self.ev, cancel=cancel, progress=progress, report=self.report,
                                 **index)
        from core.unreadable import annotate_reconstruction
        if hasattr(result, "grid"):      # unreadable sectors named on the placements
            annotate_reconstruction(result, list(getattr(self.ev, "unreadable", [])))
        doc = result.to_json() if hasattr(result, "to_json") else result
        out: dict[str, list[Extent | None]] = {}
        for vdi in doc.get("vdis", []):
            exts: list[Extent | None] = []
            for e in vdi.get("extents", []):
                le = int(e["le"])
                while len(exts) <= le:
                    exts.append(None)
                exts[le] = Extent(e.get("pe"), float(e.get("confidence", 0.0)), str(e.get("source", "vhd-match")))
            key = vdi.get("lv") or vdi.get("key")
            out[str(key)] = exts
        self.reconstruction = doc
        self.suggestions = out
        self.candidates = {str(vdi.get("lv") or vdi.get("key")):
                           {int(a["le"]): [int(p) for p in a["candidates"]]
                            for a in vdi.get("ambiguous", [])}
                           for vdi in doc.get("vdis", [])}
        if not getattr(self.report, "volume_groups", None):
            self.rebuilt = self._rebuilt_vg(doc, out)
        return out

    def _rebuilt_vg(self, doc: dict, suggestions: dict[str, list[Extent | None]]) -> RebuiltVG | None:
        """A VG of the VDIs the engine rebuilt, for an image whose LVM metadata is gone."""
        grids = doc.get("volume_groups") or []
        if not grids or not doc.get("vdis"):
            return None
        grid = grids[0]
        extent_bytes, data_offset = int(grid["extent_bytes"]), int(grid["data_offset"])
        lvs: dict[str, RebuiltLV] = {}
        for vdi in doc["vdis"]:
            key = str(vdi.get("lv") or vdi.get("key"))
            exts = [e if e is not None else Extent(None, 0.0, "gap")
                    for e in suggestions.get(key, [])]
            need = int(vdi.get("extents_needed") or len(exts))
            exts += [Extent(None, 0.0, "gap")] * max(0, need - len(exts))
            lvs[key] = RebuiltLV(key, exts, vdi_uuid=vdi.get("vhd_uuid"))
        pe_count = int(grid.get("pe_count") or (self.ev.size - data_offset) // extent_bytes)
        pv_offset = int(grid.get("pv_offset") or 0)
        pv = RebuiltPV("pv0", pv_offset, pe_count, data_offset - pv_offset, id=grid.get("pv_id") or "",
                       label_found=grid.get("grid_source") == "label")
        name = grid.get("name") or "reconstructed (no LVM metadata)"
        return RebuiltVG(name, extent_bytes, data_offset, [pv], [RebuiltGeneration(lvs)])

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
        for p in getattr(self.report, "partitions", []) or []:
            bounds.append(p.offset)
        model = DiskMapModel.for_vg(self.ev.size, E, D, span, meta, bounds)
        if sel.gen is not None:
            newest = self.newest(vg)
            for lv in sorted(sel.gen.lvs.values(), key=lambda l: l.name):
                claimed_pes = {int(k) for k in (getattr(lv, "claimed_by", {}) or {})}
                deleted = getattr(lv, "status", "live") == "deleted"
                if newest is not None and sel.gen is newest and not any(
                        "/" in str(v) for v in (getattr(lv, "claimed_by", {}) or {}).values()):
                    claimed_pes = set()
                engine = [e.pe for e in self.engine_extents(lv)]
                claimed = [a for a, own in zip(axis(engine), lv.pes())
                           if a is not None and own in claimed_pes]
                model.set_owner(Owner(lv.name, getattr(lv, "label", "") or "", deleted, vdi_key(lv)),
                                axis(self.pes(lv)), claimed)
        model.add_hits(hits)
        model.add_unreadable(self.ev.unreadable)
        return model

    def carve_hit_offsets(self) -> list[int]:
        """Carve hits for the map: the scan's carving kinds and the carving screen's hits."""
        r = self.scan_result
        found = [] if r is None else [
            f.offset for f in getattr(r, "findings", [])
            if any(str(getattr(f, "kind", "")).startswith(k) for k in CARVE_KINDS)]
        return found + list(self.carve_hits)

    def owner_index(self, model: DiskMapModel, name: str) -> int | None:
        for i, o in enumerate(model.owners):
            if o.name == name:
                return i
        return None

    # -- structure overlays -----------------------------------------------------------------------
    def disk_overlay(self) -> Overlay:
        """MBR/GPT, LVM label / mda header / metadata texts placed on the disk."""
        structures: list[tuple[int, str, list]] = []
        schemes = {getattr(p, "scheme", "") for p in getattr(self.report, "partitions", []) or []}
        mbr = _struct("core.structs.mbr", ("mbr", "MBR", "mbr_sector", "legacy_mbr"))
        if mbr is not None and schemes & {"mbr", "gpt"}:
            structures.append((0, "MBR", fields_of(mbr)))
        gpt = _struct("core.structs.gpt", ("gpt_header",))
        entry = _struct("core.structs.gpt", ("gpt_entry",))
        if gpt is not None and "gpt" in schemes:
            structures.append((512, "GPT header", fields_of(gpt)))
            try:
                hdr = gpt.parse(self.ev.read(512, 512))
                lba, count = int(hdr.partition_entry_lba), min(int(hdr.npartition_entries), 128)
                if entry is not None and int(hdr.sizeof_partition_entry) == 128 and 0 < lba < 1 << 40:
                    table = fields_of(entry)
                    for i in range(count):
                        structures.append((lba * 512 + i * 128, f"GPT entry {i}", table))
            except Exception:  # a damaged header: the header fields are still shown
                pass
        if self.report is not None:
            label = _struct("core.structs.lvm", ("label_header",))
            pvh = _struct("core.structs.lvm", ("pv_header",))
            mdah = _struct("core.structs.lvm", ("mda_header",))
            for vg in getattr(self.report, "volume_groups", []) or []:
                for pv in vg.pvs:
                    if label is not None and getattr(pv, "label_found", True):
                        lab = fields_of(label)
                        sector = pv.offset + 512
                        structures.append((sector, "LVM label_header", lab))
                        if pvh is not None:
                            head = sum(f.size for f in lab)
                            structures.append((sector + head, "LVM pv_header",
                                               fields_of(pvh, data=self.ev.read(sector + head, 512 - head))))
                    if mdah is not None:
                        for mda in getattr(pv, "mda_offsets", None) or [pv.offset + 4096]:
                            structures.append((mda, "LVM mda_header",
                                               fields_of(mdah, data=self.ev.read(mda, 512))))
                for gen in vg.generations:
                    text = getattr(gen, "text", b"") or b""
                    if isinstance(text, str):
                        text = text.encode("utf-8", "replace")
                    for copy in getattr(gen, "copies", []) or []:
                        if getattr(copy, "source", "") == "backup" or copy.offset is None:
                            continue
                        from widgets.overlay import Field
                        length = int(getattr(copy, "length", 0) or len(text))
                        structures.append((copy.offset, f"LVM metadata seqno {gen.seqno}",
                                           [Field(0, length, "text")]))
        return Overlay.build(structures)

    def vhd_overlay(self, img: Any) -> Overlay:
        """Footer copy, dynamic header, BAT, batmap, block bitmaps, footer — in the LV's space."""
        from widgets.overlay import Field

        s = engine("core.structs.vhd", "VHD structures")
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
    def conflict_place(vg: Any) -> str:
        return "of the reconstruction" if isinstance(vg, RebuiltVG) else "in a newer generation"

    def conflicts(self, vg: Any, lv: Any) -> dict[int, str]:
        """PEs of this map that the newest generation gives to another LV."""
        newest = self.newest(vg)
        if newest is None:
            return {}
        owner: dict[int, str] = {}
        for other in newest.lvs.values():
            if other.name == lv.name:
                continue
            for pe in (other.pes() if isinstance(other, RebuiltLV) else vg_pes(vg, other)):
                if pe is not None:
                    owner[pe] = other.name
        # a newer VG on the same disk (the SR initialised again) owns these: `VG/LV`
        owner.update({int(pe): o for pe, o in (getattr(lv, "claimed_by", {}) or {}).items()
                      if "/" in str(o)})
        return {pe: owner[pe] for pe in self.pes(lv) if pe is not None and pe in owner}

    def export(self, vg: Any, lv: Any, dest: str, fmt: str, force: bool = False,
               overwrite: bool = False, cancel: threading.Event | None = None,
               progress: ProgressFn | None = None) -> ExportResult:
        from core.errors import UnsafeError
        from core.output import check_output_path

        export = engine("core.vhd.export", "VHD export engine")
        vdi = engine("core.vdi", "VDI resolver")
        provenance = engine("core.provenance", "export provenance")
        conflicts = self.conflicts(vg, lv)
        if conflicts and not force:
            first = sorted(conflicts.items())[:3]
            raise UnsafeError(f"{len(conflicts)} extents of {lv.name} belong to another LV "
                              f"{self.conflict_place(vg)} (e.g. PE {first[0][0]} to {first[0][1]}); "
                              f"export with force to proceed")
        check_output_path(dest, self.evidence_paths + self.backups, overwrite)
        gen = self.sel.gen
        volumes = []
        target = None
        for other in gen.lvs.values():
            space = pes_space(self.ev, vg, self.pes(other), other.name)
            vol = vdi.VdiVolume(vdi_key(other), other.name, space, generation=gen.seqno,
                                kind=other.kind, status=getattr(other, "status", "live"))
            volumes.append(vol)
            if other is lv:
                target = vol
        if target is None:
            raise SrsalvageError(f"{lv.name} is not in generation {gen.seqno}")
        resolved = vdi.ResolvedVdi(target, [v for v in volumes if v is not target],
                                   generation=gen.seqno)
        evidence = self.evidence_paths + self.backups
        guard = self.export_guard(vg, lv, target, conflicts)
        img = None
        if lv.kind == "vhd" or fmt == "vhd":
            img = target.image()
            if img is None:
                raise SrsalvageError(f"{lv.name}: no VHD found ({target.image_error})")
            if fmt == "vhd":
                result = export.export_vhd(img, dest, evidence, overwrite, cancel, progress)
            else:
                result = export.export_raw(resolved.chain(), dest, evidence, overwrite, cancel, progress)
        else:
            result = export.export_raw(provenance.guarded_space(target.space, guard), dest,
                                       evidence, overwrite, cancel, progress)
        provenance.describe_export(result, img, target.space, guard)
        notes = [f"repaired: {r}" for r in result.repairs] + [f"not repaired: {r}" for r in result.unrepaired]
        notes += [f"untrusted: {line}" for line in provenance.untrusted_lines(result.ranges)]
        missing = self.unreadable_virtual(resolved, target)
        if missing:
            notes.append("unreadable evidence, held as zeros at virtual bytes: "
                         + ", ".join(f"{a}-{b}" for a, b in missing[:8])
                         + (" ..." if len(missing) > 8 else ""))
        origin = self.case.maps[vdi_key(lv)].origin if self.case.has_map(vdi_key(lv)) else ""
        self.case.log_export(vdi_key(lv), os.path.abspath(dest), fmt, result.bytes, result.sha256,
                             forced=bool(conflicts), generation=getattr(gen, "seqno", None),
                             map=origin or f"generation {getattr(gen, 'seqno', '?')}",
                             map_runs=pes_to_map_runs(self.pes(lv)),
                             untrusted=result.untrusted[:1000],
                             taken_extents=result.taken, via="workstation",
                             **({"unreadable_virtual": [list(r) for r in missing]} if missing else {}))
        return ExportResult(dest, fmt, result.bytes, result.sha256, bool(conflicts), notes,
                            untrusted=result.untrusted)

    def export_guard(self, vg: Any, lv: Any, target: Any, conflicts: dict[int, str]) -> Any:
        """core.provenance's verdict on the extents a newer LV took; the target volume's VHD is
        then read through the guarded space (overwritten extents never read)."""
        provenance = engine("core.provenance", "export provenance")
        pes = self.pes(lv)
        if not conflicts:
            return provenance.Guard(vg.extent_bytes)
        newest = self.newest(vg)
        owners = {}
        for other in (newest.lvs.values() if newest is not None else ()):
            if other.name in set(conflicts.values()):
                opes = self.pes(other)
                owners[other.name] = (pes_space(self.ev, vg, opes, other.name), opes)
        guard = provenance.assess(target.space, pes, conflicts, vg.extent_bytes, owners)
        if guard.overwritten and lv.kind != "raw":
            img = provenance.open_guarded_image(target.space, guard, name=target.key)
            target._image, target._image_error = img, (None if img is not None else
                                                       "no VHD outside the overwritten extents")
        return guard


    def unreadable_virtual(self, resolved: Any, target: Any) -> list[tuple[int, int]]:
        """The VDI's virtual-disk ranges that come from unreadable evidence (empty when none)."""
        if not self.ev.unreadable:
            return []
        from core.evidence.layers import unreadable_in
        try:
            space = resolved.chain().virtual_space() if target.image() is not None \
                else target.space
        except SrsalvageError:
            space = target.space
        return unreadable_in(space)


def _struct(module: str, names: Sequence[str]) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    for n in names:
        if hasattr(mod, n):
            return getattr(mod, n)
    return None
