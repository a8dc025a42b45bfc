"""The findings pane (f) of the selected VDI: the full text of every check finding, and for each
LE the engine could not decide, the PEs that fit it.

On a candidate row, `t` takes that PE for the LE (an undoable edit in the case, like `p`), `h`
shows the candidate extent's first byte in the hex view; on a finding with an offset, `h` shows
that byte. Esc goes back. The text of the highlighted row is shown whole below the table (a
finding's message is never cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static


@dataclass
class FindingRow:
    kind: str                  # "finding" | "candidate"
    text: str                  # the full text shown below the table
    le: int | None = None
    pe: int | None = None
    hex_offset: int | None = None      # where `h` goes (disk offset, or LV offset for "lv")
    hex_space: str = "disk"            # "disk" | "lv"


def finding_rows(findings: Sequence[Any], candidates: Mapping[int, Sequence[int]],
                 extent_bytes: int, data_offset: int) -> list[FindingRow]:
    """Rows for the pane: findings (errors first), then undecided LEs with each fitting PE."""
    order = {"error": 0, "warning": 1, "info": 2}
    rows = []
    for f in sorted(findings, key=lambda f: order.get(getattr(f, "severity", ""), 3)):
        off = getattr(f, "offset", None)
        where = "" if off is None else f" at {getattr(f, 'space', '') or 'vhd'} offset {off:#x}"
        le = off // extent_bytes if off is not None and extent_bytes else None
        rows.append(FindingRow("finding", f"[{f.severity}] {f.kind}{where}"
                               + (f" (LE {le})" if le is not None else "") + f": {f.message}",
                               le=le, hex_offset=off, hex_space="lv"))
    for le in sorted(candidates):
        pes = list(candidates[le])
        for pe in pes:
            rows.append(FindingRow(
                "candidate", f"LE {le} was not decided by the engine: PE {pe} fits it "
                             f"(one of {len(pes)}: {', '.join(map(str, pes[:12]))}); disk offset "
                             f"{data_offset + pe * extent_bytes:#x}. t takes it, h shows it.",
                le=le, pe=pe, hex_offset=data_offset + pe * extent_bytes))
    return rows


class FindingsScreen(Screen):
    """Findings and undecided LEs of one VDI."""

    DEFAULT_CSS = """
    FindingsScreen { layout: vertical; }
    FindingsScreen #findings-title { height: 1; text-style: bold; padding: 0 1; background: $panel; }
    FindingsScreen DataTable { height: 1fr; }
    FindingsScreen #finding-text { height: auto; min-height: 3; max-height: 12; padding: 0 1;
                                   border-top: solid $primary; }
    """
    BINDINGS = [
        Binding("t", "take", "Take this PE"),
        Binding("h", "show_hex", "Show in hex"),
        Binding("escape,f", "back", "Back"),
    ]

    def __init__(self, title: str, rows: list[FindingRow],
                 on_take: Callable[[int, int], None] | None = None,
                 on_hex: Callable[[int, str], None] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.rows = rows
        self.on_take = on_take
        self.on_hex = on_hex

    def compose(self) -> ComposeResult:
        yield Label(self.title_text, id="findings-title")
        table = DataTable(cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="finding-text", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("what", "LE", "PE", "text")
        for i, r in enumerate(self.rows):
            what = Text("candidate", style="magenta") if r.kind == "candidate" else Text(
                r.text.split("]")[0].lstrip("["),
                style="bold red" if r.text.startswith("[error") else "yellow")
            table.add_row(what, "" if r.le is None else str(r.le),
                          "" if r.pe is None else str(r.pe), r.text[:90], key=str(i))
        if not self.rows:
            self.query_one("#finding-text", Static).update(
                "no findings and no undecided extents for this VDI (run the checks: an edit "
                "or R rebuilds the maps and their candidates)")
        table.focus()
        self._show(0)

    @property
    def current(self) -> FindingRow | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row is None:
            return None
        return self.rows[max(0, min(len(self.rows) - 1, table.cursor_row))]

    def _show(self, row: int) -> None:
        if 0 <= row < len(self.rows):
            self.query_one("#finding-text", Static).update(self.rows[row].text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.cursor_row)

    def action_take(self) -> None:
        r = self.current
        if r is None or r.kind != "candidate" or self.on_take is None:
            self.notify("t takes a candidate PE: move to a candidate row", severity="warning")
            return
        self.app.pop_screen()
        self.on_take(r.le, r.pe)

    def action_show_hex(self) -> None:
        r = self.current
        if r is None or r.hex_offset is None or self.on_hex is None:
            self.notify("this row has no offset to show", severity="warning")
            return
        self.app.pop_screen()
        self.on_hex(r.hex_offset, r.hex_space)

    def action_back(self) -> None:
        self.app.pop_screen()
