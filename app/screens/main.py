"""The main screen: header, VG tree, disk map, extent editor, hex view, jobs, footer.

Widgets send intents, one message each (GenerationChosen, VdiChosen, the editor's MoveExtent,
SwapExtents, SetPe, ..., CursorMoved, JumpToLV); this screen decides, changes the session/case,
and starts background jobs (app.screens.jobs: thread workers around core functions, each with its
own outcome callbacks; Esc cancels the newest). The hex pane's actions live in
app.screens.hexpane.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.screen import Screen
from textual.widget import MountError
from textual.widgets import Footer, Static

from app.screens.dialogs import InputDialog
from app.screens.hexpane import HexPaneMixin, _virtual_locate
from app.screens.jobs import JobFailure, JobsMixin
from app.screens.session import Session, vdi_key
from core.errors import SrsalvageError
from core.lvm.space import pes_space
from core.escape import terminal_line
from core.xen_names import lv_kind
from widgets.disk_map import CONFLICT, FREE, META, OUTSIDE, UNKNOWN, DiskMap, human
from widgets.extent_editor import CheckState, ExtentEditor
from widgets.hex_view import HexView
from widgets.vg_tree import VGTree, short_lv_name
from widgets.worker_status import WorkerStatus

CODE_NAMES = {FREE: "free", META: "metadata area", OUTSIDE: "outside the PV", CONFLICT: "conflict",
              UNKNOWN: "unknown"}


def short_vg_name(name: str) -> str:
    """VG_XenStorage-<sr uuid> -> VG_XenStorage-<first uuid group>… (the header is one line)."""
    head, sep, rest = name.partition("VG_XenStorage-")
    if not head and sep and len(rest) == 36:
        return f"{sep}{rest[:8]}…"
    return name if len(name) <= 32 else name[:31] + "…"


class MainScreen(JobsMixin, HexPaneMixin, Screen):
    """The one screen the whole recovery is done from."""

    BINDINGS = [
        Binding("q", "app.quit", "Quit"),
        Binding("f1,question_mark", "help", "Help"),
        Binding("S", "scan", "Scan"),
        Binding("f5", "analyse", "Re-analyse", show=False),
        Binding("R", "reconstruct", "Rebuild"),
        Binding("E", "export", "Export"),
        Binding("L", "audit", "Audit"),
        Binding("f", "findings", "Findings"),
        Binding("apostrophe", "jump", "Jump to VDI", show=False),
        Binding("P", "report", "Report", show=False),
        Binding("c", "carving", "Carve"),
        Binding("g", "goto", "Go to"),
        Binding("slash", "find", "Find"),
        Binding("n", "find_next", "Next", show=False),
        Binding("v", "cycle_space", "Hex space"),
        Binding("escape", "cancel_job", "Cancel job", show=False),
        Binding("1", "focus_pane('tree')", "Tree", show=False),
        Binding("2", "focus_pane('map')", "Map", show=False),
        Binding("3", "focus_pane('editor')", "Editor", show=False),
        Binding("4", "focus_pane('hex')", "Hex", show=False),
    ]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.init_jobs()
        self.hex_mode = "disk"          # "disk" | "lv" | "virtual"
        self.last_needle: bytes | None = None
        self.status_text = ""
        self.analysed = False
        # the triage: what opening the workstation reads by itself (issue 14)
        self.analysis_over = False      # the analysis ended (done, failed or cancelled)
        self.triage_done = False
        self.triage_started = 0.0
        self.triage_seconds: float | None = None
        self.estimate: Any = None       # core.throughput.PassEstimate of the first pass

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Horizontal(id="top"):
            yield VGTree(id="tree")
            yield DiskMap(id="map")
        with Container(id="lower"):
            yield ExtentEditor(id="editor")
            with Horizontal(id="hexpane"):
                yield HexView(id="hex")
                yield Static(id="fieldpanel")
        with Vertical(id="bottom"):
            yield WorkerStatus(id="jobs")
            yield Static(id="status")

    @property
    def tree(self) -> VGTree:
        return self.query_one(VGTree)

    @property
    def map(self) -> DiskMap:
        return self.query_one(DiskMap)

    @property
    def editor(self) -> ExtentEditor:
        return self.query_one(ExtentEditor)

    @property
    def hex(self) -> HexView:
        return self.query_one(HexView)

    def on_mount(self) -> None:
        s = self.session
        self.tree.border_title = "1 VG tree"
        # the legend on screen, not only in the help
        self.map.border_title = "2 Disk map  █ LV ▒ deleted · free M meta X twice * hit"
        self.editor.border_title = "3 Extent editor"
        self.query_one("#hexpane").border_title = "4 Hex"
        self._update_header()
        self.hex.set_space(s.ev, title="disk")
        from widgets.disk_map import DiskMapModel
        self.map.set_model(DiskMapModel.blank(s.ev.size))
        self.tree.show_message("analysing the image…")
        self.set_status("analysing the image (partitions, LVM labels, every metadata generation)…")
        self._layout_classes()
        if s.case_note:
            self.notify(s.case_note, severity="warning", timeout=15)
        self.tree.focus()
        # the first frame goes out before anything else competes for the interpreter: the footer
        # (dozens of widgets) and the analysis thread start right after it
        self.call_after_refresh(self._after_first_paint)

    def action_analyse(self) -> None:
        """(Re-)run the LVM analysis (e.g. after cancelling it)."""
        if self.running("analyse"):
            self.notify("the analysis is already running")
            return
        self.tree.show_message("analysing the image…")
        self._start_analysis()

    def _after_first_paint(self) -> None:
        if not self.is_attached or self.app.return_code is not None:
            return  # the app is already closing
        try:
            self.query_one("#bottom").mount(Footer())
        except MountError:
            return
        # a footer mounted late learns the bindings at the next bindings update: ask for one
        self.call_after_refresh(self.refresh_bindings)
        self.start_triage()

    # -- triage: what opening the workstation reads by itself (issue 14) -----------------------
    # the jobs opening starts without being asked: the LVM analysis, then the VHD chains and,
    # when no metadata survives, the reconstruction. The triage is done when they all ended.
    # With the evidence index (core.evidence_index) the triage reads the evidence ONCE: the
    # index job makes the one pass (or finds the index kept beside the case), and the analysis
    # (with the signatures for the map) and the reconstruction are answered from it.
    TRIAGE_JOBS = ("index", "analyse", "chain", "reconstruct")

    def start_triage(self) -> None:
        self.triage_started = time.monotonic()
        if self._indexable():
            self.start_job("index", "reading the evidence once", self._index_with_estimate,
                           self._index_done, on_cancelled=self._index_cancelled,
                           on_failed=self._index_failed)
        else:
            self._start_analysis()

    def _start_analysis(self) -> None:
        # with the index no pass over the disk is made: no estimate to give
        fn = self._analyse_from_index if self.session.index is not None \
            else self._analyse_with_estimate
        self.start_job("analyse", "analysing LVM", fn, self._analysis_done,
                       on_cancelled=self._analysis_cancelled, on_failed=self._analysis_failed)

    def _indexable(self) -> bool:
        from core.evidence_index import indexable
        return not self.session.no_index and bool(indexable(self.session.ev))

    def _index_cancelled(self) -> None:
        self.analysis_over = True        # the technician stopped the read: no analysis
        self.tree.show_message("reading the evidence cancelled — F5 analyses it")
        self.set_status("reading the evidence cancelled — F5 runs the analysis")

    def _index_failed(self, failure: JobFailure) -> None:
        # an index that cannot be made: every step reads for itself, as before
        self.notify(f"evidence index not made ({failure.message}); reading for each step",
                    severity="warning")
        self._start_analysis()
    def _analyse_from_index(self, cancel, progress) -> Any:
        """The analysis and the signatures for the map, both answered by the index (no pass
        over the disk); the map shows them when the analysis is done."""
        s = self.session
        report = s.analyse(cancel, progress)
        s.scan_result = s.scan_kinds(None, cancel, progress)
        return report

    def _index_with_estimate(self, cancel, progress) -> Any:
        """The index kept beside the case, or the one pass that makes it: before that pass
        starts, what it will cost (core.throughput) on the job's line and the status line."""
        from textual.worker import get_current_worker

        from core.throughput import estimate_pass
        job_id = get_current_worker().name

        def say(text: str) -> None:          # called only when a pass is about to start
            self._from_thread(self._show_estimate, job_id, estimate_pass(self.session.ev))

        return self.session.load_index(cancel, progress, say=say)

    def _index_done(self, index: Any) -> None:
        if index is not None and self.session.index_note:
            self.set_status(self.session.index_note)     # the analysis' summary follows it
        self._start_analysis()

    def _analyse_with_estimate(self, cancel, progress) -> Any:
        """The analysis (a whole pass over the evidence), its cost said before it starts: a
        short timed read at the start of the evidence (core.throughput), shown on the job's
        line and the status line until the pass reports its own rate."""
        from textual.worker import get_current_worker

        from core.throughput import estimate_pass
        est = estimate_pass(self.session.ev)
        self._from_thread(self._show_estimate, get_current_worker().name, est)
        return self.session.analyse(cancel, progress)

    def _show_estimate(self, job_id: str, est: Any) -> None:
        from widgets.worker_status import estimate_text
        self.estimate = est
        text = estimate_text(est.bytes_to_read, est.seconds, est.rate)
        self.query_one(WorkerStatus).set_estimate(job_id, text)
        if not self.analysis_over:
            what = ("building the evidence index (one read serves the analysis, the scan, "
                    "the reconstruction and the carvers)" if self.running("index") else
                    "analysing the image (partitions, LVM labels, every metadata generation)")
            self.set_status(f"{what} — {text}")

    def _end_job(self, job_id: str) -> None:
        super()._end_job(job_id)
        # after the job's on_done (which may start the next triage job) has run
        self.call_later(self._check_triage)

    def _check_triage(self) -> None:
        if self.triage_done or not self.analysis_over:
            return
        if any(self.running(kind) for kind in self.TRIAGE_JOBS):
            return
        self.triage_done = True
        self.triage_seconds = time.monotonic() - self.triage_started
        if getattr(self.app, "exit_after_triage", False):
            self.app.exit(self.triage_summary())

    def triage_summary(self) -> dict:
        """What the triage found, for `srsalvage open --headless` (one JSON document)."""
        s = self.session
        est = self.estimate
        return {
            "image": s.image_path, "bytes": s.ev.size,
            "seconds": None if self.triage_seconds is None else round(self.triage_seconds, 3),
            "analysed": self.analysed, "analysis_error": s.analysis_error,
            "volume_groups": [{"name": vg.name, "generations": len(vg.generations)}
                              for vg in s.volume_groups],
            "vdis_rebuilt": len(s.suggestions),
            "index": s.index_note or None,
            "signatures": dict(getattr(s.scan_result, "counts", None) or {}),
            "estimate": None if est is None else {
                "bytes_to_read": est.bytes_to_read, "probed": est.probed,
                "rate": round(est.rate), "seconds": est.seconds},
            "unreadable": [list(r) for r in s.ev.unreadable],
        }

    def on_resize(self) -> None:
        self._layout_classes()

    def _layout_classes(self) -> None:
        w, h = self.size.width, self.size.height
        self.set_class(h < 34 or w < 100, "-compact")
        self.set_class(w >= 160 and h >= 34, "-wide")

    def _update_header(self) -> None:
        s = self.session
        t = Text()
        t.append(" srsalvage ", style="bold reverse")
        t.append(f" {s.ev.name} ", style="bold")
        t.append(f"{human(s.ev.size)} ")
        t.append(" READ-ONLY ", style="bold white on dark_green")
        fmt = getattr(s.ev, "format", "raw")
        if fmt in ("ewf", "split"):  # how the evidence came: E01 segments, split raw
            t.append(f" {fmt.upper()} x{len(getattr(s.ev, 'segments', []))}", style="bold")
            if getattr(s.ev, "stored_hashes", None):
                t.append(" " + " ".join(f"{k} {v[:8]}" for k, v in s.ev.stored_hashes.items()),
                         style="dim")
        if getattr(s.ev, "mapfile", None):
            t.append(f" mapfile {os.path.basename(s.ev.mapfile)}", style="bold")
        if s.sel.gen is not None and getattr(s.sel.gen, "source", "") == "reconstruct":
            t.append("  maps rebuilt from VHD structure (no LVM metadata)", style="magenta")
        elif s.sel.gen is not None:
            # the generation first: at 80 columns the VG's long name must not push it away
            t.append(f"  seqno {s.sel.gen.seqno}", style="bold cyan")
            t.append(f" {short_vg_name(s.sel.vg.name)}", style="cyan")
        if s.ev.unreadable:
            t.append(f"  {len(s.ev.unreadable)} unreadable ranges", style="bold red")
        if s.case.path:
            t.append(f"  case: {os.path.basename(s.case.path)}", style="dim")
        else:
            t.append("  NO CASE: nothing recorded", style="bold yellow")
        t.no_wrap = True            # one line: what does not fit is cut at the right, not wrapped
        t.overflow = "ellipsis"
        self.query_one("#header", Static).update(t)

    def set_status(self, text: str | Text) -> None:
        self.query_one("#status", Static).update(text)

    # -- jobs that ended without a result ---------------------------------------------------------
    def _analysis_cancelled(self) -> None:
        self.analysis_over = True
        if not self.analysed:
            self.tree.show_message("analysis cancelled — F5 runs it again")
            self.set_status("analysis cancelled — F5 runs it again; S scans the image")

    def _analysis_failed(self, failure: JobFailure) -> None:
        """Said where the VG tree and the editor would have been."""
        message = failure.message
        self.analysis_over = True
        self.session.analysis_error = message
        self.tree.show_message(f"analysis failed: {message}")
        self.editor.clear_vdi("no LVM analysis — see the error; S scans the image")

    # -- analysis -------------------------------------------------------------------------------
    def _analysis_done(self, report: Any) -> None:
        s = self.session
        self.analysis_over = True
        s.set_report(report)
        self.analysed = True
        if s.case_mismatch:
            self.notify(s.case_mismatch, severity="error", timeout=30)
            self._update_header()
        unreadable = getattr(report, "unreadable", None)
        if unreadable:
            self.notify(f"{len(unreadable)} unreadable ranges on the evidence (read as zeros)",
                        severity="warning")
        # a PV label without any metadata (the metadata area wiped) is recognised too: the
        # maps are rebuilt from VHD structure below, as the technician would ask (R)
        if not s.recognised and not getattr(report, "pvs", None):
            self.tree.set_report(report)
            self.editor.clear_vdi("nothing recognised — press S to scan the whole image")
            self.set_status(Text("nothing recognised (no partition table, LVM label or metadata "
                                 "found) — scan? press S", style="bold yellow"))
            self.refresh_map()
            return
        self.tree.set_report(report, s.volume_groups)
        if s.sel.gen is not None:
            self.tree.choose(s.sel.vg.name, s.sel.gen.seqno)
        self.refresh_map()
        self.hex.set_overlay(s.disk_overlay())
        self._update_header()
        self._start_chain_job()
        self.set_status(self._summary())
        if not s.volume_groups:
            # a PV or partition but no metadata at all: rebuild the maps from VHD structure
            self.set_status(Text("no LVM metadata found — rebuilding extent maps from VHD structure "
                                 "(R)", style="yellow"))
            self.action_reconstruct()

    def _summary(self) -> Text:
        s = self.session
        t = Text()
        for vg in s.volume_groups:
            if getattr(vg, "generations", None) and getattr(vg.generations[0], "source", "") == "reconstruct":
                t.append(f"no LVM metadata: {len(vg.generations[0].lvs)} VDIs rebuilt from VHD structure")
                continue
            t.append(f"{vg.name}: {len(vg.generations)} generations")
            if s.sel.gen is not None and s.sel.vg is vg:
                deleted = sum(1 for lv in s.sel.gen.lvs.values() if getattr(lv, "status", "") == "deleted")
                t.append(f", seqno {s.sel.gen.seqno} has {len(s.sel.gen.lvs)} LVs")
                if deleted:
                    t.append(f" ({deleted} deleted)", style="yellow")
        return t

    def _start_chain_job(self) -> None:
        s = self.session
        if s.sel.gen is None:
            return
        vg, gen = s.sel.vg, s.sel.gen

        def work(cancel, progress):
            return s.chain_parents(vg, gen, cancel)

        def done(parents: dict[str, str]) -> None:
            if parents != s.parents:
                s.parents = parents
                self.tree.set_parents(parents)
                if s.sel.gen is not None:
                    self.tree.choose(s.sel.vg.name, s.sel.gen.seqno)
                    if s.sel.lv is not None:
                        self.tree.select_lv(s.sel.vg.name, s.sel.gen.seqno, s.sel.lv.name)

        self.start_job("chain", "reading VHD chains", work, done, exclusive=True)

    def refresh_map(self) -> None:
        model = self.session.disk_model()
        self.map.set_model(model)
        lv = self.session.sel.lv
        if lv is not None:
            self.map.select_owner(self.session.owner_index(model, lv.name))

    # -- tree intents ---------------------------------------------------------------------------
    @on(VGTree.GenerationChosen)
    def _on_generation(self, event: VGTree.GenerationChosen) -> None:
        self.choose_generation(event.vg, event.gen)

    def _case_failed(self, exc: SrsalvageError) -> None:
        """The case could not be saved (read-only folder, disk full): said, never fatal."""
        self.notify(str(exc), severity="error", timeout=15)

    def choose_generation(self, vg: Any, gen: Any) -> None:
        s = self.session
        try:
            s.choose_generation(vg, gen)
        except SrsalvageError as exc:
            self._case_failed(exc)
        self.tree.choose(vg.name, gen.seqno)
        self.editor.clear_vdi(f"generation {gen.seqno}: choose a VDI (Enter on an LV)")
        self.refresh_map()
        self._update_header()
        self.set_status(self._summary())
        self._start_chain_job()

    @on(VGTree.VdiChosen)
    def _on_vdi(self, event: VGTree.VdiChosen) -> None:
        self.select_vdi(event.vg, event.gen, event.lv)

    def select_vdi(self, vg: Any, gen: Any, lv: Any) -> None:
        s = self.session
        if s.sel.gen is not gen:
            try:
                s.choose_generation(vg, gen)
            except SrsalvageError as exc:
                self._case_failed(exc)
            self.tree.choose(vg.name, gen.seqno)
            self.refresh_map()
            self._update_header()
            self.set_status(self._summary())
        s.sel.lv = lv
        self.show_editor()
        model = self.map.model
        if model is not None:
            self.map.select_owner(s.owner_index(model, lv.name))
        pes = s.pes(lv)
        first = next((p for p in pes if p is not None), None)
        if first is not None:
            self.map.goto_pe(first)
        if self.hex_mode != "disk":
            self.set_hex_mode(self.hex_mode)
        self.run_checks()

    def show_editor(self, cursor: int | None = None) -> None:
        s = self.session
        lv, vg = s.sel.lv, s.sel.vg
        if lv is None:
            return
        exts, edited = s.extents(lv)
        key = vdi_key(lv)
        label = s.label(lv, vg)
        title = terminal_line(lv.name + (f" “{label}”" if label else ""))
        if lv.status == "deleted":
            title += " (deleted)"
        self.editor.show(key, title, exts, suggestions=s.suggestions.get(key, []),
                         extent_bytes=vg.extent_bytes, data_offset=vg.data_offset, edited=edited,
                         cursor=cursor, candidates=s.candidates.get(key))

    def run_checks(self) -> None:
        s = self.session
        vg, lv = s.sel.vg, s.sel.lv
        if lv is None:
            return
        pes = s.pes(lv)
        key = vdi_key(lv)
        self.editor.set_check(CheckState(running=True))

        def work(cancel, progress):
            return s.check(vg, lv, pes, cancel)

        def done(state: CheckState) -> None:
            if s.sel.lv is not None and vdi_key(s.sel.lv) == key and s.pes(s.sel.lv) == pes:
                self.editor.set_check(state)

        def failed(failure: JobFailure) -> None:
            self.editor.set_check(CheckState(False, None, f"check not run: {failure.message}"))

        self.start_job("check", f"checking {lv.name[:20]}", work, done, exclusive=True,
                       on_cancelled=lambda: self.editor.set_check(
                           CheckState(False, None, "check cancelled")),
                       on_failed=failed)

    # -- editor intents -------------------------------------------------------------------------
    def _editing(self, event: ExtentEditor.Edit) -> bool:
        """The intent is for the VDI still selected (an intent queued before another VDI was
        chosen is dropped)."""
        lv = self.session.sel.lv
        return lv is not None and vdi_key(lv) == event.key

    def _case_map(self) -> bool:
        """The case keeps the selected VDI's map from now on (before any edit of it); False,
        and said, when it cannot."""
        s = self.session
        try:
            s.ensure_case_map(s.sel.lv, s.sel.gen)
        except SrsalvageError as exc:
            self.show_error("Edit refused", str(exc))
            return False
        return True

    def _apply_edit(self, event: ExtentEditor.Edit, edit: Callable[[Any], Any],
                    cursor: int) -> None:
        """edit(case) -> patch or None, on the selected VDI's map; the cursor then on `cursor`."""
        if not self._editing(event) or not self._case_map():
            return
        try:
            patch = edit(self.session.case)
        except SrsalvageError as exc:
            self.show_error("Edit refused", str(exc))
            return
        if patch is None:
            self.notify("no change")
            return
        self.after_edit(cursor)

    @on(ExtentEditor.MoveExtent)
    def _on_move(self, event: ExtentEditor.MoveExtent) -> None:
        self._apply_edit(event, lambda case: case.move(event.key, event.le, event.by),
                         event.le + event.by)

    @on(ExtentEditor.SwapExtents)
    def _on_swap(self, event: ExtentEditor.SwapExtents) -> None:
        self._apply_edit(event, lambda case: case.swap(event.key, event.le, event.with_le),
                         event.with_le)

    @on(ExtentEditor.InsertGap)
    def _on_insert_gap(self, event: ExtentEditor.InsertGap) -> None:
        self._apply_edit(event, lambda case: case.insert_gap(event.key, event.le), event.le)

    @on(ExtentEditor.DeleteExtent)
    def _on_delete(self, event: ExtentEditor.DeleteExtent) -> None:
        self._apply_edit(event, lambda case: case.delete(event.key, event.le), event.le)

    @on(ExtentEditor.AcceptSuggestion)
    def _on_accept(self, event: ExtentEditor.AcceptSuggestion) -> None:
        sugg = self.session.suggestions.get(event.key)
        if sugg:
            self._apply_edit(event, lambda case: case.accept(event.key, sugg, le=event.le),
                             event.le)
        elif self._editing(event) and self._case_map():
            self.notify("no engine suggestion for this VDI — press R to rebuild maps",
                        severity="warning")

    @on(ExtentEditor.AcceptAll)
    def _on_accept_all(self, event: ExtentEditor.AcceptAll) -> None:
        if self._editing(event) and self._case_map():
            self.ask_accept_all(event.key)

    @on(ExtentEditor.SetPe)
    def _on_set_pe(self, event: ExtentEditor.SetPe) -> None:
        if self._editing(event) and self._case_map():
            self.ask_set_pe(event.key, event.le)

    @on(ExtentEditor.Undo)
    @on(ExtentEditor.Redo)
    def _on_history(self, event: ExtentEditor.Undo | ExtentEditor.Redo) -> None:
        """Undo / redo in the case; the VDI the patch was on is selected for it."""
        if not self._editing(event):
            return
        s = self.session
        undo = isinstance(event, ExtentEditor.Undo)
        word = "undo" if undo else "redo"
        try:
            patch = s.case.undo() if undo else s.case.redo()
            if patch is None:
                self.notify(f"nothing to {word}")
                return
            target = s.find_lv(s.sel.gen, patch.vdi)
            if target is not None and target is not s.sel.lv:
                s.sel.lv = target
            self.after_edit(patch.start)
            self.notify(f"{word}: {patch.action} {patch.detail}")
        except SrsalvageError as exc:
            self.show_error("Edit refused", str(exc))

    def after_edit(self, cursor: int | None = None) -> None:
        self.show_editor(cursor)
        self.refresh_map()
        if self.hex_mode != "disk":
            self.set_hex_mode(self.hex_mode)   # the LV / virtual disk is made of the new map
        self.run_checks()

    def ask_set_pe(self, key: str, le: int) -> None:
        s = self.session
        pe_count = sum(int(pv.pe_count) for pv in s.sel.vg.pvs) or None

        def validate(text: str) -> str | None:
            t = text.strip()
            if t in ("", "-", "none"):
                return None
            if not t.isdigit():
                return "a PE number (or - for unknown)"
            if pe_count is not None and int(t) >= pe_count:
                return f"PE {t} outside the PV (0..{pe_count - 1})"
            return None

        def done(text: str | None) -> None:
            if text is None:
                return
            t = text.strip()
            pe = None if t in ("", "-", "none") else int(t)
            try:
                s.ensure_case_map(s.sel.lv, s.sel.gen)
                if s.case.set_pe(key, le, pe) is not None:
                    self.after_edit(le)
            except SrsalvageError as exc:
                self.show_error("Edit refused", str(exc))

        current = s.extents(s.sel.lv)[0][le].pe if s.sel.lv is not None else None
        fits = list(s.candidates.get(key, {}).get(le, []))
        hint = "a PE number; - for unknown"
        if fits:
            # an LE the engine could not decide: the PEs that fit it (f: the findings pane)
            hint = f"PEs that fit LE {le}: {', '.join(map(str, fits[:12]))} — " + hint
        value = str(current) if current is not None else (str(fits[0]) if fits else "")
        self.app.push_screen(InputDialog(f"Set PE of LE {le}", hint, value, validate), done)

    def ask_accept_all(self, key: str) -> None:
        s = self.session
        sugg = s.suggestions.get(key)
        if not sugg:
            self.notify("no engine suggestions for this VDI — press R to rebuild maps", severity="warning")
            return

        def validate(text: str) -> str | None:
            try:
                v = float(text)
            except ValueError:
                return "a number between 0 and 1"
            return None if 0.0 <= v <= 1.0 else "a number between 0 and 1"

        def done(text: str | None) -> None:
            if text is None:
                return
            try:
                s.ensure_case_map(s.sel.lv, s.sel.gen)
                if s.case.accept(key, sugg, min_confidence=float(text)) is not None:
                    self.after_edit()
                else:
                    self.notify("no suggestion above that confidence differs from the map")
            except SrsalvageError as exc:
                self.show_error("Edit refused", str(exc))

        self.app.push_screen(InputDialog("Accept every suggestion at least this sure", "0.0 – 1.0",
                                         "0.9", validate), done)

    @on(ExtentEditor.RowHighlighted)
    def _on_row(self, event: ExtentEditor.RowHighlighted) -> None:
        s = self.session
        vg = s.sel.vg
        if vg is None:
            return
        if event.pe is not None:
            self.map.goto_pe(event.pe)
        if self.hex_mode == "disk" and event.pe is not None:
            self.hex.goto(vg.data_offset + event.pe * vg.extent_bytes)
        elif self.hex_mode == "lv":
            self.hex.goto(event.le * vg.extent_bytes)

    # -- map intents ----------------------------------------------------------------------------
    @on(DiskMap.CursorMoved)
    def _on_map_cursor(self, event: DiskMap.CursorMoved) -> None:
        t = Text()
        t.append(f"{event.start:#x}–{event.end:#x} ", style="bold")
        t.append(f"({human(event.start)}) ")
        if event.pe is not None:
            t.append(f"PE {event.pe} ")
        if event.owner is not None:
            t.append(terminal_line(event.owner.name), style="bold")
            if event.owner.label:
                t.append(terminal_line(f" “{event.owner.label}”"))
            if event.le is not None:
                t.append(f" LE {event.le}")
            if event.owner.deleted:
                t.append(" deleted", style="yellow")
        else:
            t.append(CODE_NAMES.get(event.code, ""), style="dim")
        if event.code == CONFLICT:
            t.append(" — claimed by two LVs/generations", style="bold red")
        self.map.border_subtitle = t.plain
        if self.hex_mode == "disk" and self.map.has_focus:
            self.hex.goto(event.start)

    @on(DiskMap.JumpToLV)
    def _on_jump(self, event: DiskMap.JumpToLV) -> None:
        s = self.session
        lv = s.find_lv(s.sel.gen, event.owner.key)
        if lv is None:
            return
        self.select_vdi(s.sel.vg, s.sel.gen, lv)
        self.tree.select_lv(s.sel.vg.name, s.sel.gen.seqno, lv.name)
        if event.le is not None:
            self.editor.table.move_cursor(row=event.le)
        self.editor.table.focus()

    # -- other actions --------------------------------------------------------------------------
    def action_focus_pane(self, pane: str) -> None:
        target = {"tree": self.tree, "map": self.map, "editor": self.editor.table, "hex": self.hex}[pane]
        self.set_class(pane == "hex", "-show-hex")
        target.focus()

    def on_descendant_focus(self, event) -> None:
        widget = event.widget
        if widget is self.hex:
            self.set_class(True, "-show-hex")
        elif widget is self.editor.table:
            self.set_class(False, "-show-hex")

    def action_editor_op(self, op: str, arg: int = 0) -> None:
        if self.editor.key is None:
            self.notify("select a VDI first (Enter on an LV in the tree)", severity="warning")
            return
        self.editor.request(op, arg)

    def action_map_op(self, op: str, arg: int = 0) -> None:
        if op == "zoom":
            self.map.action_zoom(arg)
        elif op == "jump":
            self.map.action_jump()

    def action_help(self) -> None:
        from app.screens.help import HelpScreen
        self.app.push_screen(HelpScreen())

    def action_jump(self) -> None:
        """Type-ahead for the tree: ' then part of a name label, LV name or uuid; the first
        match (chosen generation first, then newest first) is selected and opened."""
        s = self.session

        def matches(text: str) -> list[tuple[Any, Any, Any]]:
            t = text.strip().lower()
            if not t:
                return []
            out = []
            gens = []
            for vg in s.volume_groups:
                order = list(vg.generations)
                if s.sel.gen is not None and s.sel.gen in order:
                    order.remove(s.sel.gen)
                    order.insert(0, s.sel.gen)
                gens += [(vg, g) for g in order]
            for vg, gen in gens:
                for lv in gen.lvs.values():
                    hay = f"{lv.name} {s.label(lv, vg)}".lower()
                    if t in hay:
                        out.append((vg, gen, lv))
            return out

        def validate(text: str) -> str | None:
            return None if matches(text) else "no LV, name label or uuid contains that"

        def done(text: str | None) -> None:
            if text is None:
                return
            found = matches(text)
            if not found:
                return
            vg, gen, lv = found[0]
            self.tree.select_lv(vg.name, gen.seqno, lv.name)
            self.tree.focus()
            self.select_vdi(vg, gen, lv)

        self.app.push_screen(InputDialog("Jump to a VDI", "part of a name label, LV name or uuid "
                                         "(chosen generation first)", "", validate), done)

    def action_findings(self) -> None:
        """The findings pane of the selected VDI: every finding in full, the PEs that fit each
        LE the engine could not decide (t takes one, h shows it in the hex view)."""
        from app.screens.findings import FindingsScreen, finding_rows

        s = self.session
        lv, vg = s.sel.lv, s.sel.vg
        if lv is None:
            self.notify("select a VDI first (Enter in the tree)", severity="warning")
            return
        key = vdi_key(lv)
        rows = finding_rows(self.editor.check.findings if self.editor.key == key else [],
                            s.candidates.get(key, {}), vg.extent_bytes, vg.data_offset)

        def take(le: int, pe: int) -> None:
            try:
                s.ensure_case_map(s.sel.lv, s.sel.gen)
                if s.case.set_pe(key, le, pe) is not None:
                    self.after_edit(le)
                    self.notify(f"LE {le} = PE {pe} (u undoes it)")
            except SrsalvageError as exc:
                self.show_error("Edit refused", str(exc))

        def show(offset: int, space: str) -> None:
            self.set_hex_mode("lv" if space == "lv" else "disk")
            self.hex.goto(offset)
            self.action_focus_pane("hex")

        label = self.session.label(lv)
        title = f"Findings — {lv.name}" + (f" “{label}”" if label else "")
        title += f"  ({self.editor.check.summary or 'checks not run'})"
        self.app.push_screen(FindingsScreen(title, rows, take, show))

    def action_report(self) -> None:
        """Write the recovery report (HTML) beside the case file, in a worker."""
        s = self.session
        if s.report is None:
            self.notify("the analysis is still running", severity="warning")
            return
        base = s.case.path or s.image_path
        out = os.path.splitext(base)[0] + ".report.html"
        if s.case.path is None:
            out = os.path.abspath(os.path.basename(s.image_path) + ".report.html")

        def work(cancel, progress):
            from core.output import AtomicOutput
            from core.report import build_report, render_html
            doc = build_report(s.ev, s.case, s.report)
            with AtomicOutput(out, [s.image_path], overwrite=True) as f:
                f.write(render_html(doc).encode("utf-8"))
            return doc

        def done(doc) -> None:
            chain = "audit chain intact" if doc["audit_chain_ok"] else "AUDIT CHAIN BROKEN"
            self.notify(f"report written to {out} ({chain})",
                        severity="information" if doc["audit_chain_ok"] else "error", timeout=12)

        self.start_job("report", "writing the recovery report", work, done)

    def action_audit(self) -> None:
        from app.screens.audit import AuditScreen
        self.app.push_screen(AuditScreen(self.session.case))

    def action_carving(self) -> None:
        """The carving screen over the disk (and, with a VHD VDI selected, inside its virtual
        disk); its hits are marked on the map and Enter on one shows it in the hex view."""
        from app.screens.carving import CarveScope, CarvingScreen

        s = self.session
        vdi = None
        lv, vg = s.sel.lv, s.sel.vg
        if lv is not None and lv_kind(lv.name) == "vhd":
            try:
                img = s.vhd_image(vg, lv)
                vdi = CarveScope(short_lv_name(lv.name), img.virtual_space(),
                                 _virtual_locate(img, pes_space(s.ev, vg, s.pes(lv), lv.name)))
            except SrsalvageError:
                vdi = None      # an unreadable VHD: the disk can still be carved
        screen = CarvingScreen(s, vdi=vdi, on_hits=self.set_carve_hits,
                               on_select=self.show_carve_hit)
        self._restore_carving(screen)
        self._carving = screen
        self.app.push_screen(screen)

    # the carving screen is made anew each time: its results are kept here when it is left and
    # given back when it is opened again on the same scopes (the disk / the same VDI)
    _CARVE_STATE = ("scope", "pages", "file_info", "archives", "exported")

    def _restore_carving(self, screen: Any) -> None:
        st = getattr(self.session, "carve_state", None)
        if not st or st["scopes"] != [sc.name for sc in screen.scopes]:
            return
        for name in self._CARVE_STATE:
            setattr(screen, name, st[name])
        screen.space = screen.scopes[screen.scope].space

        def shown() -> None:
            screen.refresh_rows()
            screen.query_one("#carve-title").update(screen._title())
            screen.set_status("results of the last scan kept — m / r scan again")

        screen.call_after_refresh(shown)

    def on_screen_resume(self) -> None:
        screen = getattr(self, "_carving", None)
        if screen is not None:
            self.session.carve_state = dict(
                {name: getattr(screen, name) for name in self._CARVE_STATE},
                scopes=[sc.name for sc in screen.scopes])
            self._carving = None

    def set_carve_hits(self, disk_offsets: list[int]) -> None:
        self.session.carve_hits = list(disk_offsets)
        self.refresh_map()

    def show_carve_hit(self, offset: int, in_vdi: bool) -> None:
        """The hex view on a carving hit (in the selected VDI's virtual disk when it was there)."""
        self.set_hex_mode("virtual" if in_vdi else "disk")
        self.hex.goto(offset)
        self.action_focus_pane("hex")

    def action_scan(self) -> None:
        s = self.session
        if self.running("scan"):
            self.notify("a scan is already running")
            return

        self.start_job("scan", "scanning the image", s.scan, self._scan_done)

    def _scan_done(self, result: Any) -> None:
        s = self.session
        s.scan_result = result
        self.refresh_map()
        counts = getattr(result, "counts", None) or {}
        n = len(getattr(result, "findings", []) or [])
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())[:6])
        self.notify(f"scan: {n} findings" + (f" ({detail})" if detail else ""))
        if s.report is not None and not s.recognised:
            self.set_status(Text(f"scan found {n} signatures; no LVM structure recognised",
                                 style="yellow"))

    def action_reconstruct(self) -> None:
        s = self.session
        if self.running("reconstruct"):
            self.notify("reconstruction is already running")
            return

        def done(sugg: dict) -> None:
            self.notify(f"reconstruction: suggestions for {len(sugg)} VDIs")
            if s.rebuilt is not None and (s.sel.vg is None or s.sel.vg is s.rebuilt
                                          or s.sel.vg.name == s.rebuilt.name):
                # no metadata: the rebuilt VDIs become the generation to work on
                self.tree.set_report(s.report, s.volume_groups)
                self.choose_generation(s.rebuilt, s.rebuilt.generations[0])
                return
            if s.sel.lv is not None:
                self.show_editor()

        self.start_job("reconstruct", "rebuilding extent maps", s.reconstruct, done)

    def action_export(self) -> None:
        from app.screens.export import ExportDialog, ExportDone

        s = self.session
        lv, vg = s.sel.lv, s.sel.vg
        if lv is None:
            self.notify("select a VDI in the tree first (Enter on an LV)", severity="warning")
            return
        conflicts = s.conflicts(vg, lv)
        default_dir = os.path.dirname(s.case.path) if s.case.path else os.getcwd()
        # the folder of the last export (this session or a previous one: the audit log says)
        last = next((a.get("path") for a in reversed(s.case.audit)
                     if a.get("action") == "export" and isinstance(a.get("path"), str)), None)
        if last and os.path.isdir(os.path.dirname(last)):
            default_dir = os.path.dirname(last)

        def chosen(req) -> None:
            if req is None:
                return

            def work(cancel, progress):
                return s.export(vg, lv, req.dest, req.fmt, force=req.force, overwrite=req.overwrite,
                                cancel=cancel, progress=progress)

            def done(res) -> None:
                self.app.push_screen(ExportDone(res.path, res.format, res.bytes, res.sha256, res.notes))
                self.notify(f"exported {lv.name}: {res.bytes} bytes, sha256 {res.sha256[:16]}…")

            self.start_job("export", f"export {lv.name[:18]}", work, done)

        self.app.push_screen(ExportDialog(vdi_key(lv), s.label(lv, vg), default_dir,
                                          conflicts, vhd_possible=lv_kind(lv.name) == "vhd",
                                          place=s.conflict_place(vg)), chosen)


__all__ = ["MainScreen"]
