"""Audit log screen (L): every edit, undo, export and decision recorded in the case, oldest first."""

from __future__ import annotations

import time

from rich.text import Text

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from core.case import Case
from core.escape import terminal_line
from widgets.vg_tree import short_lv_name


class AuditScreen(ModalScreen[None]):
    """The case's append-only audit log."""

    DEFAULT_CSS = """
    AuditScreen { align: center middle; }
    AuditScreen > Vertical { width: 96%; height: 90%; border: thick $primary; background: $surface; }
    AuditScreen Label { padding: 0 1; text-style: bold; }
    AuditScreen DataTable { height: 1fr; }
    AuditScreen #audit-detail { height: auto; max-height: 12; padding: 0 1; background: $boost; }
    """
    BINDINGS = [Binding("escape,q,L", "dismiss", "Close")]

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.case = case

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Audit log — {self.case.path or 'in-memory case'} "
                        f"({len(self.case.audit)} entries)")
            yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
            # the table cuts long details (paths, sha256, VG names): the highlighted entry whole
            yield Static("", id="audit-detail", markup=False)

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("time (UTC)", "action", "VDI", "detail")
        for entry in self.case.audit:
            when = _when(entry.get("time"), "%Y-%m-%d %H:%M:%S")
            detail = str(entry.get("detail", ""))
            if entry.get("action") == "export":
                detail += f"  {entry.get('bytes')} bytes sha256 {entry.get('sha256')}"
                if entry.get("forced"):
                    detail += " (forced)"
            # names and details may come from the evidence (VG and VDI names): escaped, and
            # Text cells so nothing in them is taken for markup (issue 11 item 4)
            t.add_row(Text(when), Text(terminal_line(entry.get("action", ""))),
                      Text(terminal_line(short_lv_name(str(entry.get("vdi", ""))))),
                      Text(terminal_line(detail if len(detail) <= 60 else detail[:59] + "…")))
        if self.case.audit:
            t.move_cursor(row=len(self.case.audit) - 1)
        t.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.query_one("#audit-detail", Static).update(entry_text(self.case.audit[event.cursor_row]))


def entry_text(entry: dict) -> str:
    """Every field of one audit entry, one `name: value` per line, time first."""
    when = _when(entry.get("time"), "%Y-%m-%d %H:%M:%S UTC")
    lines = [f"time: {when}"]
    lines += [terminal_line(f"{k}: {v}") for k, v in entry.items() if k != "time"]
    return "\n".join(lines)


def _when(value, fmt: str) -> str:
    """An audit time as text; a time no clock can show (1e400, "x") shown as it is."""
    try:
        return time.strftime(fmt, time.gmtime(float(value or 0)))
    except (OverflowError, ValueError, OSError, TypeError):
        return terminal_line(repr(value))
