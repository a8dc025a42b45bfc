"""The carving screen (key `c` in the workstation): SQL Server pages and RAR archives found
anywhere in the evidence, listed with their offsets, and exported on request.

`m` scans for SQL Server pages (one row per data file reassembled from them, then the page
copies), `r` for RAR archives (one row per archive: version, state, files); each scan is a
thread worker calling core.carve with the worker's cancel event and a progress callback (Esc
cancels it; Esc with nothing running goes back). `x` writes what was found into the output
directory: the reassembled data files (core.carve.mssql.carve_mdf from the copies already found)
and each archive's byte range (core.carve.rar.write_archives), always through AtomicOutput.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from core.errors import Cancelled, SrsalvageError
from core.progress import ProgressUpdate
from core.source import Evidence

MAX_PAGE_ROWS = 2000        # page-copy rows shown (files and archives are always all shown)


class CarvingScreen(Screen):
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
    BINDINGS = [
        Binding("m", "scan_pages", "SQL pages"),
        Binding("r", "scan_rar", "RAR archives"),
        Binding("x", "export", "Export"),
        Binding("escape", "cancel_or_back", "Cancel / back"),
    ]

    def __init__(self, evidence: Any, space: Any = None, out_dir: str | None = None,
                 window: int | None = None) -> None:
        """`evidence`: an evidence path, an Evidence, or the workstation session (it has
        `.ev` and `.image_path`); `space`: carve inside this ByteSpace instead (a VDI)."""
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
        self.space = space if space is not None else self.ev
        base = os.path.splitext(os.path.basename(self.image_path))[0] or "evidence"
        self.default_out = out_dir or os.path.join(
            os.path.dirname(os.path.abspath(self.image_path)), f"{base}-carved")
        self.window = window
        self.pages = None                        # page-copy records of the last page scan
        self.archives: list | None = None        # RarArchive list from the last RAR scan
        self.job: Worker | None = None
        self.job_label = ""
        self.exported: list[str] = []
        self.last_error: str | None = None

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Label(f"Carving — {os.path.basename(self.image_path)} "
                    f"({self.space.size:,} bytes)", id="carve-title")
        with Horizontal(id="carve-out-row"):
            yield Label("Output dir")
            yield Input(value=self.default_out, id="carve-out")
        yield DataTable(id="carve-hits", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="carve-progress-row"):
            yield Static("m: SQL Server pages   r: RAR archives   x: export   Esc: cancel/back",
                         id="carve-status", markup=False)
            yield ProgressBar(total=None, show_eta=True, id="carve-bar")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("kind", "offset", "bytes", "state", "detail")
        table.focus()       # keys go to the screen's bindings, not into the output-dir field

    def on_unmount(self) -> None:
        if self.job is not None and self.job.state == WorkerState.RUNNING:
            self.job.cancel()
        if self._own_ev:
            self.ev.close()

    # -- state shown -------------------------------------------------------------------------------
    def set_status(self, text: str) -> None:
        self.query_one("#carve-status", Static).update(text)

    def refresh_rows(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        if self.pages is not None:
            from core.carve.mssql import copy_of_record, choose
            recs = self.pages
            for fid in np.unique(recs["file_id"]).tolist():
                mine = recs[recs["file_id"] == fid]
                ch = choose(mine)
                table.add_row(f"mdf file {fid}", f"{int(mine['offset'].min()):,}",
                              f"{len(ch.pages) * 8192:,}", f"{len(ch.pages)} pages",
                              f"{ch.bad} bad copies, {len(ch.conflicts)} with several versions",
                              key=f"file-{fid}")
            for rec in recs[:MAX_PAGE_ROWS]:
                c = copy_of_record(rec)
                table.add_row("page", f"{c.offset:,}", "8,192",
                              "valid" if c.valid else f"bad {c.protection}",
                              f"{c.file_id}:{c.page_id} type {c.page_type} "
                              f"lsn {c.lsn[0]}:{c.lsn[1]}:{c.lsn[2]}", key=f"page-{c.offset}")
        if self.archives is not None:
            for a in self.archives:
                state = "complete" if a.complete else (
                    "encrypted headers" if a.encrypted_headers else "damaged/incomplete")
                detail = f"{len(a.files)} files"
                if a.first_bad_header:
                    detail += f"; bad header at {a.first_bad_header['offset']:,}"
                table.add_row(f"rar{a.version}", f"{a.offset:,}", f"{a.bytes:,}", state, detail,
                              key=f"rar-{a.offset}")

    # -- jobs ----------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.state in (WorkerState.PENDING,
                                                            WorkerState.RUNNING)

    def start(self, label: str, fn: Callable[[threading.Event, Callable], Any],
              done: Callable[[Any], None]) -> None:
        if self.busy:
            self.notify(f"{self.job_label} is still running (Esc cancels it)")
            return
        bar = self.query_one("#carve-bar", ProgressBar)
        bar.update(total=None, progress=0)
        self.set_status(f"{label}…")
        self.job_label = label
        app = self.app

        def progress(update: ProgressUpdate) -> None:
            try:
                app.call_from_thread(self._progress, update)
            except RuntimeError:
                pass

        def body() -> None:
            worker = get_current_worker()
            try:
                result = fn(worker.cancelled_event, progress)
            except Cancelled:
                app.call_from_thread(self._finished, label, None, "cancelled")
            except SrsalvageError as exc:
                app.call_from_thread(self._finished, label, None, f"failed: {exc}")
            except Exception as exc:  # an engine bug: shown, never a crash of the UI
                app.call_from_thread(self._finished, label, None,
                                     f"failed: {type(exc).__name__}: {exc}")
            else:
                if worker.is_cancelled:
                    app.call_from_thread(self._finished, label, None, "cancelled")
                else:
                    app.call_from_thread(self._finished, label, lambda: done(result), "done")

        self.job = self.run_worker(body, name=label, group="carve", description=label,
                                   thread=True, exit_on_error=False)

    def _progress(self, update: ProgressUpdate) -> None:
        if update.total > 0:
            self.query_one("#carve-bar", ProgressBar).update(total=update.total,
                                                             progress=update.done)

    def _finished(self, label: str, apply: Callable[[], None] | None, how: str) -> None:
        if apply is not None:
            apply()
        else:
            self.last_error = None if how == "cancelled" else how
        self.set_status(f"{label}: {how}" if apply is None else self.summary(label))
        bar = self.query_one("#carve-bar", ProgressBar)
        if bar.total:
            bar.update(progress=bar.total)

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

    def action_scan_pages(self) -> None:
        from core.carve.mssql import collect_records, fill_digests, find_page_records
        space, kw = self.space, self._kw()

        def work(cancel, progress):
            # compact records (43 bytes a copy), not objects: a disk full of pages stays small
            recs = collect_records(find_page_records(space, cancel=cancel, progress=progress,
                                                     **kw))
            fill_digests(space, recs)
            return recs

        def done(pages):
            self.pages = pages
            self.refresh_rows()

        self.start("scanning for SQL Server pages", work, done)

    def action_scan_rar(self) -> None:
        from core.carve.rar import carve_rar
        space, kw = self.space, self._kw()

        def work(cancel, progress):
            return carve_rar(space, None, cancel=cancel, progress=progress, **kw).archives

        def done(archives):
            self.archives = archives
            self.refresh_rows()

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
        space, pages, archives = self.space, self.pages, self.archives
        evidence = [self.image_path]

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
            return written

        def done(written):
            self.exported = written
            self.refresh_rows()
            self.notify(f"{len(written)} files written under {out_dir}")

        self.start("exporting", work, done)

    def action_cancel_or_back(self) -> None:
        if self.busy:
            self.job.cancel()
            self.set_status(f"cancelling {self.job_label}…")
        else:
            self.app.pop_screen()
