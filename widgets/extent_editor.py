"""ExtentEditor: the LE -> PE map of one VDI as a table the technician can correct.

Rows: LE, PE, disk offset, confidence, source, the engine's suggestion, and the result of the VHD
checks for that extent. The widget never changes the map itself: each key posts `EditRequested`
(an intent: op + arguments) and the screen applies it to the case (core.case, undoable), then
calls `show()` again and re-runs the checks in a worker (`set_check` shows the result).

Keys: shift+up/shift+down (or K/J) move the extent, s marks / swaps two, p sets a PE, i inserts a
gap, Delete/x deletes, a accepts the suggestion, A accepts every suggestion above a confidence,
u undo, r redo (ctrl+z / ctrl+y as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from core.case import Extent


@dataclass
class CheckState:
    """Result of the VHD checks for the map shown."""

    running: bool = False
    ok: bool | None = None
    summary: str = ""
    per_le: dict[int, str] = field(default_factory=dict)   # LE -> first finding kind


class ExtentTable(DataTable):
    """The table inside the editor (keys handled by the editor)."""

    BINDINGS = [
        Binding("shift+up,K", "editor('move', -1)", "Ext up", show=False),
        Binding("shift+down,J", "editor('move', 1)", "Ext down", show=False),
        Binding("s", "editor('swap')", "Swap", show=False),
        Binding("p", "editor('set_pe')", "Set PE", show=False),
        Binding("i", "editor('insert_gap')", "Gap", show=False),
        Binding("delete,x", "editor('delete')", "Delete", show=False),
        Binding("a", "editor('accept')", "Accept", show=False),
        Binding("A", "editor('accept_all')", "Accept all", show=False),
        Binding("u,ctrl+z", "editor('undo')", "Undo", show=False),
        Binding("r,ctrl+y", "editor('redo')", "Redo", show=False),
    ]

    def action_editor(self, op: str, arg: int = 0) -> None:
        editor = self.parent
        while editor is not None and not isinstance(editor, ExtentEditor):
            editor = editor.parent
        if editor is not None:
            editor.request(op, arg)


class ExtentEditor(Vertical):
    """Header line + table of one VDI's extents."""

    DEFAULT_CSS = """
    ExtentEditor { height: 1fr; }
    ExtentEditor > #editor-head { height: auto; max-height: 2; padding: 0 1; background: $boost; }
    ExtentEditor > ExtentTable { height: 1fr; }
    """

    @dataclass
    class EditRequested(Message):
        """op: move|swap|set_pe|insert_gap|delete|accept|accept_all|undo|redo."""

        editor: "ExtentEditor"
        key: str
        op: str
        le: int
        other: int | None = None

    @dataclass
    class RowHighlighted(Message):
        editor: "ExtentEditor"
        key: str
        le: int
        pe: int | None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.key: str | None = None
        self.title = ""
        self.extents: list[Extent] = []
        self.suggestions: Sequence[Extent | None] = []
        self.check = CheckState()
        self.extent_bytes = 4 << 20
        self.data_offset = 0
        self.marked: int | None = None
        self.edited = False

    def compose(self) -> ComposeResult:
        yield Static("no VDI selected — choose one in the tree (Enter)", id="editor-head")
        table = ExtentTable(id="extent-table", cursor_type="row", zebra_stripes=True)
        yield table

    def on_mount(self) -> None:
        t = self.table
        t.add_column("LE", key="le", width=6)
        t.add_column("PE", key="pe", width=7)
        t.add_column("disk offset", key="disk", width=14)
        t.add_column("conf", key="conf", width=5)
        t.add_column("source", key="source", width=9)
        t.add_column("suggest", key="suggest", width=8)
        t.add_column("check", key="check", width=22)

    @property
    def table(self) -> ExtentTable:
        return self.query_one(ExtentTable)

    @property
    def cursor_le(self) -> int:
        return max(0, self.table.cursor_row)

    # -- content --------------------------------------------------------------------------------
    def show(self, key: str, title: str, extents: Sequence[Extent], *,
             suggestions: Sequence[Extent | None] = (), extent_bytes: int, data_offset: int,
             edited: bool = False, cursor: int | None = None) -> None:
        same = key == self.key
        keep = self.cursor_le if cursor is None and same else (cursor or 0)
        if not same:
            self.marked = None
            self.check = CheckState()
        self.key, self.title = key, title
        self.extents = list(extents)
        self.suggestions = suggestions
        self.extent_bytes, self.data_offset = extent_bytes, data_offset
        self.edited = edited
        t = self.table
        t.clear()
        rows = []
        for le, e in enumerate(self.extents):
            rows.append(self._row(le, e))
        t.add_rows(rows)
        if rows:
            t.move_cursor(row=min(keep, len(rows) - 1), animate=False)
        self._head()

    def _row(self, le: int, e: Extent) -> list[Any]:
        sugg = self.suggestions[le] if le < len(self.suggestions) else None
        pe_text = Text("—", style="bold red") if e.pe is None else Text(str(e.pe))
        if self.marked == le:
            pe_text.stylize("reverse")
        disk = "" if e.pe is None else f"{self.data_offset + e.pe * self.extent_bytes:#x}"
        conf_style = "green" if e.confidence >= 0.9 else "yellow" if e.confidence >= 0.5 else "red"
        sugg_text = Text("")
        if sugg is not None and sugg.pe is not None and sugg.pe != e.pe:
            sugg_text = Text(f"{sugg.pe} ({sugg.confidence:.2f})", style="cyan")
        check = self.check.per_le.get(le, "")
        check_text = Text(check, style="bold red") if check else Text(
            "ok" if self.check.ok else "", style="green")
        return [str(le), pe_text, disk, Text(f"{e.confidence:.2f}", style=conf_style), e.source,
                sugg_text, check_text]

    def _head(self) -> None:
        head = Text()
        if self.key is None:
            head.append("no VDI selected — choose one in the tree (Enter)")
        else:
            head.append(self.title or self.key, style="bold")
            head.append(f"  {len(self.extents)} LE")
            missing = sum(1 for e in self.extents if e.pe is None)
            if missing:
                head.append(f"  {missing} unknown", style="bold red")
            if self.edited:
                head.append("  edited", style="bold magenta")
            head.append("  check: ")
            c = self.check
            if c.running:
                head.append("running…", style="yellow")
            elif c.ok is None:
                head.append(c.summary or "not run", style="dim")
            elif c.ok:
                head.append("PASS " + c.summary, style="bold green")
            else:
                head.append("FAIL " + c.summary, style="bold red")
            if self.marked is not None:
                head.append(f"  [LE {self.marked} marked: s on another row swaps]", style="reverse")
        self.query_one("#editor-head", Static).update(head)

    def set_check(self, check: CheckState) -> None:
        self.check = check
        if self.key is not None:
            t = self.table
            for le in range(len(self.extents)):
                text = check.per_le.get(le, "")
                cell = Text(text, style="bold red") if text else Text(
                    "ok" if check.ok else "", style="green")
                try:
                    t.update_cell_at((le, 6), cell)
                except Exception:  # the table was refilled meanwhile
                    break
        self._head()

    def clear_vdi(self, message: str = "") -> None:
        self.key = None
        self.extents = []
        self.table.clear()
        self._head()
        if message:
            self.query_one("#editor-head", Static).update(message)

    # -- intents --------------------------------------------------------------------------------
    def request(self, op: str, arg: int = 0) -> None:
        if self.key is None:
            self.app.bell()
            return
        le = self.cursor_le
        if op == "swap":
            if self.marked is None:
                self.marked = le
                self.table.update_cell_at((le, 1), self._row(le, self.extents[le])[1])
                self._head()
                return
            other, self.marked = self.marked, None
            if other == le:
                self.show(self.key, self.title, self.extents, suggestions=self.suggestions,
                          extent_bytes=self.extent_bytes, data_offset=self.data_offset,
                          edited=self.edited)
                return
            self.post_message(ExtentEditor.EditRequested(self, self.key, "swap", other, le))
            return
        if op == "move":
            self.post_message(ExtentEditor.EditRequested(self, self.key, "move", le, arg))
            return
        self.post_message(ExtentEditor.EditRequested(self, self.key, op, le))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.key is None or not 0 <= event.cursor_row < len(self.extents):
            return
        le = event.cursor_row
        self.post_message(ExtentEditor.RowHighlighted(self, self.key, le, self.extents[le].pe))
