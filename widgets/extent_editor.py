"""ExtentEditor: the LE -> PE map of one VDI as a table the technician can correct.

Rows: LE, PE, disk offset, confidence, source, the engine's suggestion, and the result of the VHD
checks for that extent. The widget never changes the map itself: each key posts one intent
message (`MoveExtent`, `SwapExtents`, `SetPe`, ..., all `ExtentEditor.Edit`s) and the screen
applies it to the case (core.case, undoable), then calls `show()` again and re-runs the checks in
a worker (`set_check` shows the result).

Keys: shift+up/shift+down (or K/J) move the extent, s marks / swaps two, p sets a PE, i inserts a
gap, Delete/x deletes, a accepts the suggestion, A accepts every suggestion above a confidence,
u undo, r redo (ctrl+z / ctrl+y as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from rich.text import Text
from rich.segment import Segment
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from core.case import Extent


@dataclass
class CheckState:
    """Result of the VHD checks for the map shown."""

    running: bool = False
    ok: bool | None = None
    summary: str = ""
    per_le: dict[int, str] = field(default_factory=dict)   # LE -> first finding kind
    findings: list = field(default_factory=list)           # core.findings.Finding, all of them


COLUMNS = [("LE", 7), ("PE", 8), ("disk offset", 14), ("conf", 6), ("source", 10),
           ("suggest", 14), ("check", 28)]


class ExtentTable(ScrollView, can_focus=True):
    """The extent rows (Line API: only the rows on screen are rendered, so a VDI of 100k extents
    is as quick to show and to edit as one of ten). Keys are handled by the editor."""

    DEFAULT_CSS = """
    ExtentTable { background: $surface; }
    ExtentTable > .extent-table--cursor { background: $accent 40%; text-style: bold; }
    ExtentTable:focus > .extent-table--cursor { background: $accent; color: $text; }
    ExtentTable > .extent-table--zebra { background: $boost; }
    """
    COMPONENT_CLASSES = {"extent-table--cursor", "extent-table--zebra"}

    BINDINGS = [
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "cursor_to(0)", show=False),
        Binding("end", "cursor_to(-1)", show=False),
        Binding("shift+up,K", "editor('move', -1)", "Ext up", show=False),
        Binding("shift+down,J", "editor('move', 1)", "Ext down", show=False),
        Binding("s", "editor('swap')", "Swap"),
        Binding("p", "editor('set_pe')", "Set PE"),
        Binding("i", "editor('insert_gap')", "Gap", show=False),
        Binding("delete,x", "editor('delete')", "Delete", show=False),
        Binding("a", "editor('accept')", "Accept"),
        Binding("A", "editor('accept_all')", "Accept all", show=False),
        Binding("u,ctrl+z", "editor('undo')", "Undo"),
        Binding("r,ctrl+y", "editor('redo')", "Redo"),
    ]

    cursor_row = reactive(0, repaint=False)

    @dataclass
    class CursorMoved(Message):
        table: "ExtentTable"
        row: int

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.row_count = 0
        self.row_cells: Any = None      # callable(le) -> list[Text], set by the editor

    def set_rows(self, count: int, cursor: int | None = None) -> None:
        self.row_count = count
        self.virtual_size = Size(sum(w for _, w in COLUMNS), count)
        self.refresh()
        if cursor is not None:
            self.move_cursor(row=cursor)
        elif self.cursor_row >= count:
            self.move_cursor(row=max(0, count - 1))

    def move_cursor(self, row: int, animate: bool = False) -> None:
        if self.row_count == 0:
            self.cursor_row = 0
            return
        row = max(0, min(self.row_count - 1, row))
        old = self.cursor_row
        self.cursor_row = row
        top = int(self.scroll_y)
        height = max(1, self.scrollable_content_region.height)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False)
        self.refresh_row(old)
        self.refresh_row(row)
        self.post_message(ExtentTable.CursorMoved(self, row))

    def refresh_row(self, row: int) -> None:
        y = row - int(self.scroll_y)
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.scrollable_content_region.height))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else self.row_count - 1)

    def action_editor(self, op: str, arg: int = 0) -> None:
        editor = self.parent
        while editor is not None and not isinstance(editor, ExtentEditor):
            editor = editor.parent
        if editor is not None:
            editor.request(op, arg)

    def on_click(self, event) -> None:
        offset = event.get_content_offset(self)
        if offset is not None:
            self.move_cursor(int(self.scroll_y) + offset.y)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        row = int(self.scroll_y) + y
        if row >= self.row_count or self.row_cells is None:
            return Strip.blank(width, base)
        line = Text(no_wrap=True, overflow="crop")
        for (name, w), cell in zip(COLUMNS, self.row_cells(row)):
            cell = cell if isinstance(cell, Text) else Text(str(cell))
            cell.truncate(w - 1, overflow="ellipsis")
            line.append_text(cell)
            # the padding takes the cell's own style, so the next column starts a new run with
            # its first character: SVG renderers (rsvg) drop the leading spaces of a run, which
            # ran "1.00" into "metadata" in the screenshots
            line.append(" " * (w - cell.cell_len), style=cell.style or None)
        style = base
        if row == self.cursor_row:
            style = base + self.get_component_rich_style("extent-table--cursor")
        elif row % 2:
            style = base + self.get_component_rich_style("extent-table--zebra")
        strip = Strip([Segment(t, style + st if st else style, c)
                       for t, st, c in line.render(self.app.console)])
        strip = strip.crop(int(self.scroll_x), int(self.scroll_x) + width)
        return strip.extend_cell_length(width, style)


class ExtentEditor(Vertical):
    """Header line + table of one VDI's extents."""

    DEFAULT_CSS = """
    ExtentEditor { height: 1fr; }
    ExtentEditor > #editor-head { height: auto; max-height: 2; padding: 0 1; background: $boost; }
    ExtentEditor > #editor-columns { height: 1; text-style: bold; color: $text-muted; }
    ExtentEditor > ExtentTable { height: 1fr; }
    """

    # -- edit intents: one message each; the screen applies it to the case -------------------
    @dataclass
    class Edit(Message):
        """An edit of VDI `key`'s map asked for at LE `le` (the cursor's row)."""

        editor: "ExtentEditor"
        key: str
        le: int

    @dataclass
    class MoveExtent(Edit):
        """Move the extent at `le` by `by` rows (shift+up/down, K/J); the cursor follows it."""

        by: int

    @dataclass
    class SwapExtents(Edit):
        """Swap the extent marked at `le` with the one at `with_le` (s on one row, s on another)."""

        with_le: int

    class SetPe(Edit):
        """Ask for the PE of `le` (p)."""

    class InsertGap(Edit):
        """An unknown extent inserted at `le` (i)."""

    class DeleteExtent(Edit):
        """The extent at `le` deleted (Delete, x)."""

    class AcceptSuggestion(Edit):
        """The engine's suggestion for `le` taken (a)."""

    class AcceptAll(Edit):
        """Every suggestion above a confidence taken (A: the screen asks for it)."""

    class Undo(Edit):
        """The last edit of the case undone (u, ctrl+z)."""

    class Redo(Edit):
        """The last undone edit done again (r, ctrl+y)."""

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
        self.candidates: dict[int, Sequence[int]] = {}
        self.check = CheckState()
        self.extent_bytes = 4 << 20
        self.data_offset = 0
        self.marked: int | None = None
        self.edited = False

    def compose(self) -> ComposeResult:
        yield Static("no VDI selected — choose one in the tree (Enter)", id="editor-head")
        yield Static("".join(f"{name:<{w}}" for name, w in COLUMNS), id="editor-columns",
                     markup=False)
        table = ExtentTable(id="extent-table")
        table.row_cells = self._cells
        yield table

    def _cells(self, le: int) -> list[Any]:
        return self._row(le, self.extents[le]) if le < len(self.extents) else []

    @property
    def table(self) -> ExtentTable:
        return self.query_one(ExtentTable)

    @property
    def cursor_le(self) -> int:
        return max(0, self.table.cursor_row)

    # -- content --------------------------------------------------------------------------------
    def show(self, key: str, title: str, extents: Sequence[Extent], *,
             suggestions: Sequence[Extent | None] = (), extent_bytes: int, data_offset: int,
             edited: bool = False, cursor: int | None = None,
             candidates: Mapping[int, Sequence[int]] | None = None) -> None:
        same = key == self.key
        keep = self.cursor_le if cursor is None and same else (cursor or 0)
        if not same:
            self.marked = None
            self.check = CheckState()
        self.key, self.title = key, title
        self.extents = list(extents)
        self.suggestions = suggestions
        # LEs the engine could not decide: the PEs that fit (shown, never applied by `a`)
        self.candidates = dict(candidates or {})
        self.extent_bytes, self.data_offset = extent_bytes, data_offset
        self.edited = edited
        self.table.set_rows(len(self.extents), cursor=min(keep, max(0, len(self.extents) - 1)))
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
        elif e.pe is None and self.candidates.get(le):
            sugg_text = Text("|".join(str(p) for p in self.candidates[le][:4]) + " ?",
                             style="magenta")
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
        self.table.refresh()
        self._head()

    def clear_vdi(self, message: str = "") -> None:
        self.key = None
        self.extents = []
        self.table.set_rows(0)
        self._head()
        if message:
            self.query_one("#editor-head", Static).update(message)

    # -- intents --------------------------------------------------------------------------------
    def request(self, op: str, arg: int = 0) -> None:
        """The intent named by a key binding or the command palette (`op`: an INTENTS name; a
        move takes `arg` rows) posted as its message; `swap` marks the first row itself."""
        if self.key is None:
            self.app.bell()
            return
        le = self.cursor_le
        if op == "swap":
            if self.marked is None:
                self.marked = le
                self.table.refresh_row(le)
                self._head()
                return
            other, self.marked = self.marked, None
            if other == le:
                self.show(self.key, self.title, self.extents, suggestions=self.suggestions,
                          extent_bytes=self.extent_bytes, data_offset=self.data_offset,
                          edited=self.edited, candidates=self.candidates)
                return
            self.post_message(ExtentEditor.SwapExtents(self, self.key, other, le))
        elif op == "move":
            self.post_message(ExtentEditor.MoveExtent(self, self.key, le, arg))
        else:
            self.post_message(INTENTS[op](self, self.key, le))

    def on_extent_table_cursor_moved(self, event: ExtentTable.CursorMoved) -> None:
        if self.key is None or not 0 <= event.row < len(self.extents):
            return
        le = event.row
        self.post_message(ExtentEditor.RowHighlighted(self, self.key, le, self.extents[le].pe))


# the intents by the names the key bindings and the command palette use (`editor('set_pe')`)
INTENTS: dict[str, type[ExtentEditor.Edit]] = {
    "move": ExtentEditor.MoveExtent, "swap": ExtentEditor.SwapExtents,
    "set_pe": ExtentEditor.SetPe, "insert_gap": ExtentEditor.InsertGap,
    "delete": ExtentEditor.DeleteExtent, "accept": ExtentEditor.AcceptSuggestion,
    "accept_all": ExtentEditor.AcceptAll, "undo": ExtentEditor.Undo, "redo": ExtentEditor.Redo,
}
