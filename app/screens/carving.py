"""The carving screen (key `c` in the workstation): SQL Server pages and RAR archives found
anywhere in the evidence, listed with their offsets, and exported on request.

`m` scans for SQL Server pages (one row per data file reassembled from them, then the page
copies), `r` for RAR archives (one row per archive: version, state, files); each scan is a
job on the workstation's runner (app.screens.jobs: a thread worker calling core.carve with the
worker's cancel event, its progress on the screen's bar; Esc cancels it; Esc with nothing
running goes back). `x` writes what was found into the output directory: the reassembled
data files (core.carve.mssql.carve_mdf from the copies already found) and each archive's byte
range (core.carve.rar.write_archives), always through AtomicOutput,
then unpacks each archive into `rar-unpacked/` (core.carve.rar_extract); the members of the
highlighted archive are listed under the hits (widgets.rar_members), with their status once
unpacked.

Pushed from the workstation, the screen also carves inside the selected VDI's virtual disk (`v`
switches between the disk and the VDI: SQL Server pages are 8 KiB aligned there, not on the
disk), reports every hit's disk offset back so the disk map marks it (`on_hits`), and Enter on a
hit goes back to the workstation with the hex view on it (`on_select`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, ProgressBar, Static

from app.screens.caselog import record_carve
from app.screens.jobs import JobFailure, JobsMixin
from core.errors import Cancelled, SrsalvageError
from core.source import Evidence
from widgets.rar_members import RarMembers

MAX_PAGE_ROWS = 2000        # page-copy rows shown (files and archives are always all shown)
MAX_MAPPED_HITS = 100_000   # hits inside a VDI translated to disk offsets for the disk map


@dataclass
class CarveScope:
    """Where to carve: a ByteSpace, its name, and how its offsets map to the disk's (None: it is
    the disk)."""
    name: str
    space: Any
    locate: Callable[[int], int | None] | None = None


MAX_SUMMARISED_FILES = 64   # file ids given a database name / missing count in the list


def file_summaries(space: Any, recs: np.ndarray,
                   cancel: threading.Event | None = None) -> dict[int, tuple[str | None, int | None]]:
    """{file id: (database name from the boot page, pages the PFS pages say are missing)} for
    the list, as carve-mdf would report them (None where the image does not say)."""
    from core.carve.mssql import _boot_pages, _missing_pages, choose

    out: dict[int, tuple[str | None, int | None]] = {}
    if recs is None or not len(recs):
        return out
    boot = _boot_pages(space, recs[recs["file_id"] == 1])
    database = boot[0][1]["database"] if boot else None
    for fid in np.unique(recs["file_id"]).tolist()[:MAX_SUMMARISED_FILES]:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        ch = choose(recs[recs["file_id"] == fid])
        n_pages = int(ch.pages[-1]) + 1 if len(ch.pages) else 0
        missing, ranges = _missing_pages(space, ch, n_pages)
        known = any(r["pfs_found"] for r in ranges)
        out[int(fid)] = (database, len(missing) if known else None)
    return out


class CarvingScreen(JobsMixin, Screen):
    """Hits of the carvers over one evidence (or any ByteSpace given as `space`)."""

    DEFAULT_CSS = """
    CarvingScreen { layout: vertical; }
    CarvingScreen #carve-title { height: 1; text-style: bold; padding: 0 1; }
    CarvingScreen #carve-out-row { height: 3; }
    CarvingScreen #carve-out-row Label { width: 12; padding: 1 1; }
    CarvingScreen #carve-out { width: 1fr; }
    CarvingScreen #carve-hits { height: 1fr; }
    CarvingScreen #carve-progress-row { height: 1; }
    CarvingScreen #carve-status { width: 1fr; padding: 0 1; }
    CarvingScreen #carve-bar { width: 34; }
    """
    JOB_OUTCOMES_SAID = False   # the status line says how a job ended (its callbacks)
    BINDINGS = [
        Binding("m", "scan_pages", "SQL pages"),
        Binding("r", "scan_rar", "RAR archives"),
        Binding("x", "export", "Export"),
        Binding("v", "scope", "Disk / VDI"),
        Binding("t", "tables", "Tables"),
        Binding("enter", "select_hit", "Show in hex", show=False),
        Binding("escape", "cancel_or_back", "Cancel / back"),
    ]

    def __init__(self, evidence: Any, space: Any = None, out_dir: str | None = None,
                 window: int | None = None, vdi: CarveScope | None = None,
                 on_hits: Callable[[list[int]], None] | None = None,
                 on_select: Callable[[int, bool], None] | None = None) -> None:
        """`evidence`: an evidence path, an Evidence, or the workstation session (it has
        `.ev` and `.image_path`); `space`: carve inside this ByteSpace instead (a VDI).
        `vdi`: the selected VDI's virtual disk, the second scope `v` switches to; `on_hits(disk
        offsets)` after every scan; `on_select(offset, in_vdi)` on Enter on a hit."""
        super().__init__()
        self._own_ev = False
        if isinstance(evidence, (str, os.PathLike)):
            self.ev = Evidence(os.fspath(evidence))
            self._own_ev = True
        elif isinstance(evidence, Evidence):
            self.ev = evidence
        else:
            self.ev = evidence.ev
        self.image_path = self.ev.path
        self.case = getattr(evidence, "case", None)     # the session's case: exports are logged
        # the session's evidence index (issue 14); a path or an Evidence comes without one
        self.index = getattr(evidence, "index", None) if hasattr(evidence, "ev") else None
        self.space = space if space is not None else self.ev
        self.scopes = [CarveScope("disk", self.space)] + ([vdi] if vdi is not None else [])
        self.scope = 0
        self.on_hits = on_hits
        self.on_select = on_select
        self._row_offsets: dict[str, int] = {}
        base = os.path.splitext(os.path.basename(self.image_path))[0] or "evidence"
        self.default_out = out_dir or os.path.join(
            os.path.dirname(os.path.abspath(self.image_path)), f"{base}-carved")
        self.window = window
        self.pages = None                        # page-copy records of the last page scan
        self.file_info: dict[int, tuple[str | None, int | None]] = {}   # file id: (db, missing)
        self.archives: list | None = None        # RarArchive list from the last RAR scan
        self.extractions: dict[int, Any] = {}    # archive offset: its unpacking (export `x`)
        self.init_jobs()
        self.exported: list[str] = []
        self.last_error: str | None = None

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Label(self._title(), id="carve-title")
        with Horizontal(id="carve-out-row"):
            yield Label("Output dir")
            yield Input(value=self.default_out, id="carve-out")
        yield DataTable(id="carve-hits", cursor_type="row", zebra_stripes=True)
        yield RarMembers(id="carve-members")
        with Horizontal(id="carve-progress-row"):
            yield Static(self._hint(), id="carve-status", markup=False)
            # a finite, empty bar while idle: the indeterminate animation would say "busy"
            yield ProgressBar(total=1, show_eta=True, id="carve-bar")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("kind", "offset", "bytes", "state", "detail")
        table.focus()       # keys go to the screen's bindings, not into the output-dir field

    def on_unmount(self) -> None:
        self.cancel_all_jobs()
        if self._own_ev:
            self.ev.close()

    # -- state shown -------------------------------------------------------------------------------
    def _title(self) -> str:
        where = os.path.basename(self.image_path)
        if self.scope:
            where = f"inside VDI {self.scopes[self.scope].name} (virtual disk) on {where}"
        return f"Carving — {where} ({self.space.size:,} bytes)"

    def _hint(self) -> str:
        hint = "m: SQL Server pages   r: RAR archives   x: export   Enter: show in hex"
        if len(self.scopes) > 1:
            hint += "   v: disk / VDI"
        return hint + "   Esc: cancel/back"

    def set_status(self, text: str) -> None:
        self.query_one("#carve-status", Static).update(text)

    def refresh_rows(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        rows = self._row_offsets
        rows.clear()
        if self.pages is not None:
            from core.carve.mssql import copy_of_record, choose
            recs = self.pages
            for fid in np.unique(recs["file_id"]).tolist():
                mine = recs[recs["file_id"] == fid]
                ch = choose(mine)
                database, missing = self.file_info.get(fid, (None, None))
                detail = (f"{ch.bad} bad {'copy' if ch.bad == 1 else 'copies'}, "
                          f"{len(ch.conflicts)} with several versions")
                if missing is not None:
                    detail = f"{missing} missing, " + detail
                if database:
                    detail = f"{database} — " + detail
                table.add_row(f"mdf file {fid}", f"{int(mine['offset'].min()):,}",
                              f"{len(ch.pages) * 8192:,}", f"{len(ch.pages)} pages", detail,
                              key=f"file-{fid}")
                rows[f"file-{fid}"] = int(mine['offset'].min())
            for rec in recs[:MAX_PAGE_ROWS]:
                c = copy_of_record(rec)
                table.add_row("page", f"{c.offset:,}", "8,192",
                              "valid" if c.valid else f"bad {c.protection}",
                              f"{c.file_id}:{c.page_id} type {c.page_type} "
                              f"lsn {c.lsn[0]}:{c.lsn[1]}:{c.lsn[2]}", key=f"page-{c.offset}")
                rows[f"page-{c.offset}"] = int(c.offset)
        if self.archives is not None:
            for a in self.archives:
                state = "complete" if a.complete else (
                    "encrypted headers" if a.encrypted_headers else "damaged/incomplete")
                detail = f"{len(a.files)} files"
                if a.first_bad_header:
                    # the reason too: right after an old (RAR 1.5-2.x) archive without an end
                    # block, the "bad header" is often just the data that follows it
                    bad = a.first_bad_header
                    detail += f"; walk stopped at {bad['offset']:,}: {bad.get('reason', 'bad header')}"
                table.add_row(f"rar{a.version}", f"{a.offset:,}", f"{a.bytes:,}", state, detail,
                              key=f"rar-{a.offset}")
                rows[f"rar-{a.offset}"] = int(a.offset)

    def hit_offsets(self) -> list[int]:
        """Disk offsets of every hit of the current scope (page copies and archives)."""
        offsets: list[int] = []
        if self.pages is not None and len(self.pages):
            offsets += np.unique(self.pages["offset"]).astype(np.int64).tolist()
        if self.archives:
            offsets += [int(a.offset) for a in self.archives]
        locate = self.scopes[self.scope].locate
        if locate is None:
            return offsets
        disk = (locate(o) for o in offsets[:MAX_MAPPED_HITS])
        return [d for d in disk if d is not None]

    def _report_hits(self) -> None:
        if self.on_hits is not None:
            self.on_hits(self.hit_offsets())

    # -- jobs: one at a time, on the workstation's job runner (app.screens.jobs) ---------------
    @property
    def busy(self) -> bool:
        return self.running("carve")

    @property
    def job_label(self) -> str:
        return next(iter(self.running_jobs()), "")

    def job_display(self) -> "_StatusBar":
        return _StatusBar(self)

    def start(self, label: str, fn: Callable[[threading.Event, Callable], Any],
              done: Callable[[Any], None]) -> None:
        """Run fn(cancel, progress) as the screen's one job; done(result) then the summary in
        the status line, or "<label>: cancelled" / "<label>: failed: <why>" there."""
        if self.busy:
            self.notify(f"{self.job_label} is still running (Esc cancels it)")
            return

        def finished(result: Any) -> None:
            done(result)
            self.set_status(self.summary(label))

        def cancelled() -> None:
            self.last_error = None
            self.set_status(f"{label}: cancelled")

        def failed(failure: JobFailure) -> None:
            self.last_error = f"failed: {failure.message}"
            self.set_status(f"{label}: {self.last_error}")

        self.start_job("carve", label, fn, finished, on_cancelled=cancelled, on_failed=failed)

    def summary(self, label: str) -> str:
        parts = []
        if self.pages is not None:
            parts.append(f"{len(self.pages)} page copies")
        if self.archives is not None:
            parts.append(f"{len(self.archives)} RAR archives")
        if self.exported:
            parts.append(f"{len(self.exported)} files written")
        return f"{label}: done — " + ", ".join(parts)

    # -- actions -------------------------------------------------------------------------------------
    def _kw(self) -> dict:
        return {"window": self.window} if self.window else {}

    def _disk_index(self) -> Any:
        """The evidence index when carving the whole disk: its one pass already found every
        page copy and RAR signature, so the scan reads only what it keeps (issue 14)."""
        return self.index if self.space is self.ev and not self.window else None

    def action_scan_pages(self) -> None:
        from core.carve.mssql import collect_records, fill_digests, find_page_records
        space, kw = self.space, self._kw()
        index = self._disk_index()

        def work(cancel, progress):
            recs = index.page_records() if index is not None else None
            # compact records (43 bytes a copy), not objects: a disk full of pages stays small
            if recs is None:
                recs = collect_records(find_page_records(space, cancel=cancel, progress=progress,
                                                         **kw))
            fill_digests(space, recs)
            return recs, file_summaries(space, recs, cancel)

        def done(result):
            self.pages, self.file_info = result
            self.refresh_rows()
            self._report_hits()

        self.start("scanning for SQL Server pages", work, done)

    def action_scan_rar(self) -> None:
        from core.carve.rar import carve_rar
        space, kw = self.space, self._kw()
        index = self._disk_index()

        def work(cancel, progress):
            sigs = index.rar_signatures() if index is not None else None
            if sigs is not None:
                kw["signatures"] = sigs
            return carve_rar(space, None, cancel=cancel, progress=progress, **kw).archives

        def done(archives):
            self.archives = archives
            self.extractions = {}
            self.refresh_rows()
            self._report_hits()

        self.start("scanning for RAR archives", work, done)

    def action_export(self) -> None:
        if (self.pages is None or not len(self.pages)) and not self.archives:
            self.notify("nothing to export yet: scan first (m / r)", severity="warning")
            return
        out_dir = self.query_one("#carve-out", Input).value.strip()
        if not out_dir:
            self.notify("give an output directory", severity="warning")
            return
        from core.carve.mssql import carve_mdf
        from core.carve.rar import write_archives
        from core.carve.rar_extract import extract_archives
        space, pages, archives = self.space, self.pages, self.archives
        evidence = [self.image_path]
        unpacked: list = []

        def work(cancel, progress):
            if os.path.realpath(out_dir) == os.path.realpath(self.image_path):
                raise SrsalvageError(f"output {out_dir} is the evidence")
            written = []
            if pages is not None and len(pages):
                result = carve_mdf(space, os.path.join(out_dir, "mdf"), evidence,
                                   cancel=cancel, progress=progress, copies=pages)
                written += [f.path for f in result.files]
            if archives:
                write_archives(space, archives, os.path.join(out_dir, "rar"), evidence, cancel)
                written += [a.path for a in archives]
                # each archive unpacked and tested (libarchive; members verified by checksum);
                # without libarchive the archives are still written, and that is said
                try:
                    unpacked.extend(extract_archives(archives,
                                                     os.path.join(out_dir, "rar-unpacked"),
                                                     cancel=cancel, progress=progress))
                except Cancelled:
                    raise
                except SrsalvageError as exc:
                    unpacked.append(str(exc))
            return written

        def done(written):
            self.exported = written
            if unpacked and isinstance(unpacked[0], str):
                self.notify(f"archives not unpacked: {unpacked.pop()}", severity="warning")
            self.extractions = {a.offset: x for a, x in
                                zip([a for a in archives or [] if a.path], unpacked)}
            self.refresh_rows()
            self._show_members(self.query_one("#carve-members", RarMembers).archive_offset)
            self.notify(f"{len(written)} files written under {out_dir}")
            record_carve(self.case, out_dir, written, self.scopes[self.scope].name)

        self.start("exporting", work, done)

    def action_tables(self) -> None:
        """The tables inside the exported data files (app.screens.mdf_tables), their CSV files
        beside them."""
        files = [p for p in self.exported if p.endswith((".mdf", ".ndf"))]
        if not files:
            self.notify("export the data files first (m, then x)", severity="warning")
            return
        from app.screens.mdf_tables import TablesScreen
        base = os.path.join(os.path.dirname(files[0]), "tables")
        out, n = base, 2
        while os.path.exists(out):
            out, n = f"{base}-{n}", n + 1
        self.app.push_screen(TablesScreen(files, out))

    def action_scope(self) -> None:
        """Carve the disk or the selected VDI's virtual disk (the results of the other go)."""
        if len(self.scopes) < 2:
            self.notify("select a VHD VDI in the workstation first to carve inside it",
                        severity="warning")
            return
        if self.busy:
            self.notify(f"{self.job_label} is still running (Esc cancels it)")
            return
        self.scope = (self.scope + 1) % len(self.scopes)
        self.space = self.scopes[self.scope].space
        self.pages = self.archives = None
        self.file_info = {}
        self.extractions = {}
        self._show_members(None)
        self.exported = []
        self.refresh_rows()
        self.query_one("#carve-title", Label).update(self._title())
        self.set_status(self._hint())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "carve-hits" and event.row_key.value is not None:
            key = str(event.row_key.value)
            self._show_members(self._row_offsets.get(key) if key.startswith("rar-") else None)

    def _show_members(self, offset: int | None) -> None:
        """The members of the archive at `offset` under the hits (with their unpacking)."""
        arc = next((a for a in self.archives or [] if a.offset == offset), None)
        self.query_one("#carve-members", RarMembers).show(arc, self.extractions.get(offset))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_select_hit()

    def action_select_hit(self) -> None:
        """Back to the workstation with the hex view on the highlighted hit."""
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        offset = self._row_offsets.get(str(key))
        if offset is None:
            return
        if self.on_select is None:
            self.notify(f"hit at offset {offset:,} ({offset:#x})")
            return
        if self.busy:
            self.cancel_all_jobs()
        in_vdi = self.scope > 0
        self.app.pop_screen()
        self.on_select(offset, in_vdi)

    def action_cancel_or_back(self) -> None:
        if self.busy:
            self.set_status(f"cancelling {self.job_label}…")
            self.cancel_job(next(iter(self._jobs)), quiet=True)
        else:
            self.app.pop_screen()


class _StatusBar:
    """The carving screen's status line and progress bar as its job display (JobDisplay): the
    bar runs from the first progress to the end, then stays full until the next job."""

    def __init__(self, screen: CarvingScreen) -> None:
        self.screen = screen
        self.bar = screen.query_one("#carve-bar", ProgressBar)

    def add_job(self, job_id: str, label: str, byte_unit: bool = True) -> None:
        self.bar.update(total=None, progress=0)
        self.screen.set_status(f"{label}…")

    def update_job(self, job_id: str, done: int, total: int, rate: float, eta: float | None,
                   label: str | None = None) -> None:
        if total > 0:
            self.bar.update(total=total, progress=done)

    def remove_job(self, job_id: str) -> None:
        if self.bar.total:
            self.bar.update(progress=self.bar.total)
