"""The tables inside carved SQL Server data files (key `t` in the carving screen, after `x`):
one row per user table - schema.name, rows read, rows lost with missing / failing pages, rows
with values left empty, columns - and, under it, the first rows of the highlighted table.

The files are read by core.mssql.database.mdf_tables as a job on the workstation's runner
(app.screens.jobs: a thread worker; Esc cancels it), which
also writes one CSV per table into the given directory; the preview rows come from those CSV
files, so what is shown is what was written.
"""

from __future__ import annotations

import csv
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from app.screens.jobs import JobsMixin

PREVIEW_ROWS = 200


def verification_line(result: Any) -> str:
    """One line per database: its name, files and the pages failing verification."""
    parts = []
    for d in result.databases:
        bad = torn = 0
        for f in d.files:
            v = f.verification()
            bad += v["checksum"]["failed"]
            torn += v["torn"]["failed"]
        parts.append(f"{d.catalog.database or '(no boot page)'}: {len(d.files)} file(s), "
                     f"{len(d.tables)} tables, {bad} pages failing their checksum, "
                     f"{torn} torn pages")
    return "; ".join(parts) or "no data files"


class TablesScreen(JobsMixin, Screen):
    """User tables of the given data files, with a preview of the highlighted one."""

    DEFAULT_CSS = """
    TablesScreen { layout: vertical; }
    TablesScreen #tables-title { height: 1; text-style: bold; padding: 0 1; }
    TablesScreen #tables-list { height: 1fr; }
    TablesScreen #tables-rows { height: 1fr; }
    TablesScreen #tables-status { height: 2; padding: 0 1; }
    """
    JOB_OUTCOMES_SAID = False   # the status line says how a job ended (its callbacks)
    BINDINGS = [Binding("escape", "cancel_or_back", "Cancel / back")]

    def __init__(self, paths: list[str], csv_dir: str) -> None:
        super().__init__()
        self.paths = list(paths)
        self.csv_dir = csv_dir
        self.result: Any = None
        self.reports: list[tuple[Any, Any]] = []      # (database report, table report) per row
        self.init_jobs()
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Tables — {len(self.paths)} data file(s), CSV in {self.csv_dir}",
                    id="tables-title")
        yield DataTable(id="tables-list", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="tables-rows", zebra_stripes=True)
        yield Static("reading the catalog…", id="tables-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tables-list", DataTable).add_columns(
            "table", "rows", "lost", "undecoded", "missing / bad pages", "columns")
        self.query_one("#tables-list", DataTable).focus()
        from core.mssql.database import mdf_tables
        paths, out = self.paths, self.csv_dir
        self.start_job("tables", "reading the tables",
                       lambda cancel, progress: mdf_tables(paths, out, cancel, progress),
                       self._finished, on_cancelled=lambda: self._not_read("cancelled"),
                       on_failed=lambda failure: self._not_read(failure.message))

    def job_display(self) -> "_NoDisplay":
        return _NoDisplay()

    @property
    def busy(self) -> bool:
        return self.running("tables")

    def _not_read(self, why: str) -> None:
        self.error = why
        self.query_one("#tables-status", Static).update(f"reading the tables: {why}")

    def _finished(self, value: Any) -> None:
        status = self.query_one("#tables-status", Static)
        self.result = value
        table = self.query_one("#tables-list", DataTable)
        for d in value.databases:
            for t in d.tables:
                key = f"t{len(self.reports)}"
                self.reports.append((d, t))
                pages = ", ".join((t.missing_pages + t.bad_pages)[:6])
                table.add_row(f"{t.schema}.{t.name}", f"{t.rows:,}", f"{t.rows_lost_pages:,}",
                              f"{t.undecoded:,}", pages or "-",
                              ", ".join(f"{c.name} {c.type}" for c in t.columns), key=key)
        findings = [f["message"] for d in value.databases
                    for f in d.findings + d.catalog.findings]
        status.update(verification_line(value) + ("\n" + findings[0] if findings else ""))
        if self.reports:
            self.show_rows(0)

    def show_rows(self, index: int) -> None:
        """The first rows of table `index` (from its CSV file)."""
        grid = self.query_one("#tables-rows", DataTable)
        grid.clear(columns=True)
        if not 0 <= index < len(self.reports):
            return
        _, t = self.reports[index]
        grid.add_columns(*[c.name for c in t.columns])
        if not t.csv:
            return
        with open(t.csv, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader, None)
            for n, row in enumerate(reader):
                if n >= PREVIEW_ROWS:
                    break
                grid.add_row(*row)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "tables-list" and event.row_key is not None:
            key = str(event.row_key.value)
            if key.startswith("t"):
                self.show_rows(int(key[1:]))

    def action_cancel_or_back(self) -> None:
        if self.busy:
            self.cancel_all_jobs()
        else:
            self.app.pop_screen()


class _NoDisplay:
    """The tables are read without a progress bar: the status line says "reading the catalog…"
    until they are there (JobDisplay)."""

    def add_job(self, job_id: str, label: str, byte_unit: bool = True) -> None:
        pass

    def update_job(self, job_id: str, done: int, total: int, rate: float, eta: float | None,
                   label: str | None = None) -> None:
        pass

    def remove_job(self, job_id: str) -> None:
        pass


__all__ = ["TablesScreen", "verification_line"]
