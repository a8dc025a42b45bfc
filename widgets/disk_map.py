"""DiskMap: the whole image as a grid of cells coloured by owner LV, with marks.

The model (`DiskMapModel`, no Textual) divides the disk into grains of one physical extent,
aligned on PE 0, and keeps one int32 code per grain (numpy; 2 TiB of 4 MiB PEs is 512k grains):
an owner index >= 0 (an LV of the selected generation) or a mark (free, metadata area, outside any
PV, conflict, unknown). Carve/scan hits and partition boundaries are separate flags. At zoom level
z a cell covers 2**z grains; the cell shows the most telling thing inside it (conflict > hit >
boundary > metadata > owner > free > outside > unknown), computed with numpy reductions once per
zoom level.

The widget (Line API: ScrollView + render_line + Strip) draws rows of cells with the offset of the
row's first cell on the left, a cursor, and posts `CursorMoved` (cell, offset range, owner) and
`JumpToLV` (Enter on an owned cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

FREE, META, OUTSIDE, CONFLICT, UNKNOWN = -1, -2, -3, -4, -5
# precedence when several grains fall into one cell (higher wins); owners rank just above FREE
RANK = {CONFLICT: 100, META: 40, UNKNOWN: 1, OUTSIDE: 2, FREE: 5}
OWNER_RANK = 10

LV_COLOURS = ["#5f87ff", "#5fd75f", "#ffaf5f", "#d787ff", "#5fd7d7", "#ff87af", "#d7d75f",
              "#87afd7", "#afd787", "#d7af87", "#af87d7", "#87d7af"]

GLYPHS = {FREE: "·", META: "M", OUTSIDE: " ", CONFLICT: "X", UNKNOWN: "?"}
LEGEND = [("█", "LV"), ("▒", "deleted LV"), ("·", "free"), ("M", "metadata"), ("X", "conflict"),
          ("*", "hit"), ("|", "partition"), ("?", "unknown"), ("!", "unreadable")]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@dataclass
class Owner:
    """An LV drawn on the map."""

    name: str
    label: str = ""
    deleted: bool = False
    key: str = ""


@dataclass
class DiskMapModel:
    """Per-grain codes over the disk; grain i covers [origin + i*grain, origin + (i+1)*grain)."""

    size: int
    grain: int
    origin: int = 0
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    boundary: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    owners: list[Owner] = field(default_factory=list)
    pe0_grain: int = 0            # grain index of PE 0 (when a VG is known)
    pe_count: int = 0
    les: np.ndarray | None = None  # per grain: LE inside its owner (or -1)
    unreadable: np.ndarray | None = None  # per grain: holds evidence bytes nobody could read

    @classmethod
    def blank(cls, size: int, grain: int = 4 << 20, code: int = UNKNOWN) -> "DiskMapModel":
        n = max(1, -(-size // grain))
        return cls(size, grain, 0, np.full(n, code, np.int32), np.zeros(n, bool), np.zeros(n, bool))

    @classmethod
    def for_vg(cls, size: int, extent_bytes: int, data_offset: int, pe_count: int,
               meta_ranges: Sequence[tuple[int, int]] = (),
               boundaries: Sequence[int] = ()) -> "DiskMapModel":
        """Grains aligned on PE 0; PEs start FREE, the rest OUTSIDE; metadata ranges marked."""
        before = -(-data_offset // extent_bytes)          # grains before PE 0
        origin = data_offset - before * extent_bytes      # <= 0
        n = max(1, -(-(size - origin) // extent_bytes))
        m = cls(size, extent_bytes, origin, np.full(n, OUTSIDE, np.int32), np.zeros(n, bool),
                np.zeros(n, bool), pe0_grain=before, pe_count=pe_count)
        m.les = np.full(n, -1, np.int32)
        stop = min(n, before + pe_count)
        m.codes[before:stop] = FREE
        for start, end in meta_ranges:
            m.mark_range(start, end, META)
        for b in boundaries:
            g = m.grain_of(b)
            if 0 <= g < n:
                m.boundary[g] = True
        return m

    # -- geometry -------------------------------------------------------------------------------
    @property
    def grains(self) -> int:
        return len(self.codes)

    def grain_of(self, offset: int) -> int:
        return (offset - self.origin) // self.grain

    def grain_range(self, g: int) -> tuple[int, int]:
        start = self.origin + g * self.grain
        return max(0, start), min(self.size, start + self.grain)

    def pe_of_grain(self, g: int) -> int | None:
        pe = g - self.pe0_grain
        return pe if 0 <= pe < self.pe_count else None

    # -- painting the model -----------------------------------------------------------------------
    def mark_range(self, start: int, end: int, code: int) -> None:
        a, b = max(0, self.grain_of(start)), min(self.grains, self.grain_of(max(start, end - 1)) + 1)
        if a < b:
            self.codes[a:b] = code

    def set_owner(self, owner: Owner, pes: Sequence[int | None], claimed: Sequence[int] = ()) -> int:
        """Paint the PEs of one LV; a PE already owned by another LV becomes a conflict."""
        index = len(self.owners)
        self.owners.append(owner)
        if self.les is None:
            self.les = np.full(self.grains, -1, np.int32)
        for le, pe in enumerate(pes):
            if pe is None or pe < 0 or (self.pe_count and pe >= self.pe_count):
                continue
            g = self.pe0_grain + pe
            if not 0 <= g < self.grains:
                continue
            if self.codes[g] >= 0 and self.codes[g] != index:
                self.codes[g] = CONFLICT
            elif self.codes[g] != CONFLICT:
                self.codes[g] = index
                self.les[g] = le
        for pe in claimed:
            g = self.pe0_grain + pe
            if 0 <= g < self.grains:
                self.codes[g] = CONFLICT
        return index

    def add_hits(self, offsets: Sequence[int]) -> None:
        if len(offsets) == 0:
            return
        g = (np.asarray(offsets, dtype=np.int64) - self.origin) // self.grain
        g = g[(g >= 0) & (g < self.grains)]
        self.hits[g] = True

    def add_unreadable(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Mark the grains holding unreadable evidence (bad sectors, failed EWF chunks, areas a
        ddrescue mapfile does not call finished): drawn `!` above everything but the cursor."""
        if self.unreadable is None:
            self.unreadable = np.zeros(self.grains, bool)
        for start, end in ranges:
            a = max(0, self.grain_of(start))
            b = min(self.grains, self.grain_of(max(start, end - 1)) + 1)
            if a < b:
                self.unreadable[a:b] = True

    def unreadable_cells(self, zoom: int) -> np.ndarray | None:
        """Per cell at `zoom`: some grain in it is unreadable (None when nothing is)."""
        if self.unreadable is None or not self.unreadable.any():
            return None
        k = 1 << zoom
        pad = (-self.grains) % k
        return np.concatenate([self.unreadable, np.zeros(pad, bool)]).reshape(-1, k).any(axis=1)

    # -- zoom -----------------------------------------------------------------------------------
    def cells(self, zoom: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(code, hit, boundary) per cell at zoom level `zoom` (2**zoom grains per cell)."""
        k = 1 << zoom
        n = self.grains
        pad = (-n) % k
        codes = np.concatenate([self.codes, np.full(pad, UNKNOWN, np.int32)]) if pad else self.codes
        rank = np.where(codes >= 0, OWNER_RANK, 0).astype(np.int32)
        for code, r in RANK.items():
            rank[codes == code] = r
        rank = rank.reshape(-1, k)
        codes2 = codes.reshape(-1, k)
        # pick the highest-ranked grain; among owners, the first one in the cell
        best = np.argmax(rank, axis=1)
        cell_codes = codes2[np.arange(len(codes2)), best]
        hits = np.concatenate([self.hits, np.zeros(pad, bool)]).reshape(-1, k).any(axis=1)
        bnd = np.concatenate([self.boundary, np.zeros(pad, bool)]).reshape(-1, k).any(axis=1)
        return cell_codes, hits, bnd

    def max_zoom(self) -> int:
        return max(0, int(np.ceil(np.log2(max(1, self.grains)))))


class DiskMap(ScrollView, can_focus=True):
    """The disk as rows of cells; arrows move the cursor, +/- zoom, Enter jumps to the LV."""

    DEFAULT_CSS = """
    DiskMap { background: $surface; }
    DiskMap > .diskmap--label { color: $text-muted; }
    DiskMap > .diskmap--cursor { text-style: reverse bold; }
    DiskMap > .diskmap--mark { color: $text-muted; }
    DiskMap > .diskmap--conflict { color: $error; text-style: bold; }
    DiskMap > .diskmap--hit { color: $warning; text-style: bold; }
    DiskMap > .diskmap--boundary { color: $secondary; text-style: bold; }
    DiskMap > .diskmap--unreadable { color: $error; text-style: bold reverse; }
    """
    COMPONENT_CLASSES = {"diskmap--label", "diskmap--cursor", "diskmap--mark",
                         "diskmap--conflict", "diskmap--hit", "diskmap--boundary",
                         "diskmap--unreadable"}

    BINDINGS = [
        Binding("left", "move(-1)", show=False),
        Binding("right", "move(1)", show=False),
        Binding("up", "move_row(-1)", show=False),
        Binding("down", "move_row(1)", show=False),
        Binding("pageup", "move_page(-1)", show=False),
        Binding("pagedown", "move_page(1)", show=False),
        Binding("home", "first", show=False),
        Binding("end", "last", show=False),
        Binding("plus,equals_sign", "zoom(-1)", "Zoom in"),
        Binding("minus", "zoom(1)", "Zoom out"),
        Binding("enter", "jump", "Jump to LV"),
    ]

    zoom = reactive(0)
    cursor = reactive(0, repaint=False)

    @dataclass
    class CursorMoved(Message):
        """The cursor is on another cell."""

        map: "DiskMap"
        cell: int
        start: int
        end: int
        owner: Owner | None
        pe: int | None
        le: int | None
        code: int

    @dataclass
    class JumpToLV(Message):
        """Enter on a cell owned by an LV."""

        map: "DiskMap"
        owner: Owner
        le: int | None

    def __init__(self, model: DiskMapModel | None = None, *, name=None, id=None, classes=None):
        super().__init__(name=name, id=id, classes=classes)
        self.model = model
        self.selected_owner: int | None = None
        self._cells: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._fitted = False

    LABEL_WIDTH = 11

    # -- model ----------------------------------------------------------------------------------
    def set_model(self, model: DiskMapModel, keep_cursor: bool = True) -> None:
        old_offset = self.cursor_offset() if keep_cursor and self.model is not None else 0
        self.model = model
        self._cells = None
        self._fitted = False
        self.selected_owner = None
        self._fit_zoom()
        self._recompute()
        self.cursor_to_offset(old_offset)

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cells is None and self.model is not None:
            self._cells = self.model.cells(self.zoom)
            self._bad_cells = self.model.unreadable_cells(self.zoom)
        return self._cells  # type: ignore[return-value]

    @property
    def per_row(self) -> int:
        return max(8, self.scrollable_content_region.width - self.LABEL_WIDTH - 1)

    @property
    def n_cells(self) -> int:
        return 0 if self.model is None else len(self.cells()[0])

    def _fit_zoom(self) -> None:
        """Coarsest detail that still shows the whole disk on screen: PEs when they fit."""
        if self.model is None or self.size.height == 0:
            return
        room = self.per_row * max(1, self.scrollable_content_region.height)
        z = 0
        while (self.model.grains >> z) > room and z < self.model.max_zoom():
            z += 1
        self.set_reactive(DiskMap.zoom, z)
        self._fitted = True

    def _recompute(self) -> None:
        self._cells = None
        rows = -(-self.n_cells // self.per_row) if self.model is not None else 0
        self.virtual_size = Size(self.per_row + self.LABEL_WIDTH + 1, rows)
        self.refresh()

    def on_resize(self) -> None:
        offset = self.cursor_offset()
        if not self._fitted:
            self._fit_zoom()
        self._recompute()
        self.cursor_to_offset(offset)

    def watch_zoom(self, old: int, new: int) -> None:
        pass

    def cell_range(self, cell: int) -> tuple[int, int]:
        m = self.model
        k = 1 << self.zoom
        a = m.grain_range(cell * k)[0]
        b = m.grain_range(min(m.grains - 1, cell * k + k - 1))[1]
        return a, b

    def cursor_offset(self) -> int:
        if self.model is None:
            return 0
        return self.cell_range(min(self.cursor, max(0, self.n_cells - 1)))[0]

    def cursor_to_offset(self, offset: int) -> None:
        if self.model is None:
            return
        g = max(0, min(self.model.grains - 1, self.model.grain_of(offset)))
        self.set_cursor(g >> self.zoom)

    def set_cursor(self, cell: int) -> None:
        if self.model is None:
            return
        cell = max(0, min(self.n_cells - 1, cell))
        old = self.cursor
        self.cursor = cell
        per = self.per_row
        row = cell // per
        top = int(self.scroll_y)
        h = max(1, self.scrollable_content_region.height)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + h:
            self.scroll_to(y=row - h + 1, animate=False)
        self._refresh_cell(old)
        self._refresh_cell(cell)
        self.post_message(self._cursor_message())

    def _refresh_cell(self, cell: int) -> None:
        y = cell // self.per_row - int(self.scroll_y)
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def describe(self, cell: int) -> tuple[Owner | None, int | None, int | None, int]:
        """(owner, PE, LE, code) of the cell's first grain that decides its colour."""
        m = self.model
        codes = self.cells()[0]
        code = int(codes[cell])
        k = 1 << self.zoom
        g0 = cell * k
        grains = m.codes[g0: g0 + k]
        idx = np.nonzero(grains == code)[0]
        g = g0 + (int(idx[0]) if len(idx) else 0)
        owner = m.owners[code] if code >= 0 else None
        le = None
        if m.les is not None and code >= 0 and 0 <= g < len(m.les) and m.les[g] >= 0:
            le = int(m.les[g])
        return owner, m.pe_of_grain(g), le, code

    def _cursor_message(self) -> "DiskMap.CursorMoved":
        start, end = self.cell_range(self.cursor)
        owner, pe, le, code = self.describe(self.cursor)
        return DiskMap.CursorMoved(self, self.cursor, start, end, owner, pe, le, code)

    def select_owner(self, index: int | None) -> None:
        """Highlight the cells of one LV (the one chosen in the tree)."""
        self.selected_owner = index
        self.refresh()

    def goto_pe(self, pe: int) -> None:
        if self.model is not None:
            self.set_cursor((self.model.pe0_grain + pe) >> self.zoom)

    # -- actions --------------------------------------------------------------------------------
    def action_move(self, delta: int) -> None:
        self.set_cursor(self.cursor + delta)

    def action_move_row(self, delta: int) -> None:
        self.set_cursor(self.cursor + delta * self.per_row)

    def action_move_page(self, delta: int) -> None:
        h = max(1, self.scrollable_content_region.height)
        self.set_cursor(self.cursor + delta * self.per_row * h)

    def action_first(self) -> None:
        self.set_cursor(0)

    def action_last(self) -> None:
        self.set_cursor(self.n_cells - 1)

    def action_zoom(self, delta: int) -> None:
        if self.model is None:
            return
        new = max(0, min(self.model.max_zoom(), self.zoom + delta))
        if new == self.zoom:
            return
        offset = self.cursor_offset()
        self.zoom = new
        self._recompute()
        self.cursor_to_offset(offset)

    def action_jump(self) -> None:
        if self.model is None:
            return
        owner, pe, le, code = self.describe(self.cursor)
        if owner is not None:
            self.post_message(DiskMap.JumpToLV(self, owner, le))

    def on_click(self, event) -> None:
        if self.model is None:
            return
        off = event.get_content_offset(self)
        if off is None:
            return
        x = off.x - self.LABEL_WIDTH - 1
        if 0 <= x < self.per_row:
            self.set_cursor((int(self.scroll_y) + off.y) * self.per_row + x)

    # -- rendering ------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if self.model is None:
            return Strip.blank(width, base)
        codes, hits, bnd = self.cells()
        per = self.per_row
        row = int(self.scroll_y) + y
        first = row * per
        if first >= len(codes):
            return Strip.blank(width, base)
        label_style = base + self.get_component_rich_style("diskmap--label")
        mark = base + self.get_component_rich_style("diskmap--mark")
        conflict = base + self.get_component_rich_style("diskmap--conflict")
        hit = base + self.get_component_rich_style("diskmap--hit")
        boundary = base + self.get_component_rich_style("diskmap--boundary")
        bad = getattr(self, "_bad_cells", None)
        unreadable = base + self.get_component_rich_style("diskmap--unreadable")
        cursor = self.get_component_rich_style("diskmap--cursor")
        start = self.cell_range(first)[0]
        label = human(start)
        # the right-aligning spaces in a run of their own: SVG renderers drop the leading spaces
        # of a run, which shifted the labels left in the screenshots
        segs = [Segment(" " * max(0, self.LABEL_WIDTH - len(label)), base),
                Segment(f"{label} ", label_style)]
        last = min(len(codes), first + per)
        owners = self.model.owners
        for c in range(first, last):
            code = int(codes[c])
            if bad is not None and bad[c]:
                ch, st = "!", unreadable
            elif bnd[c]:
                ch, st = "|", boundary
            elif hits[c] and code != CONFLICT:
                ch, st = "*", hit
            elif code >= 0:
                o = owners[code]
                colour = LV_COLOURS[code % len(LV_COLOURS)]
                ch = "▒" if o.deleted else "█"
                st = base + Style(color=colour)
                if self.selected_owner is not None and code == self.selected_owner:
                    ch = "▓" if o.deleted else "█"
                    st = base + Style(color=colour, bold=True, underline=True)
            elif code == CONFLICT:
                ch, st = "X", conflict
            else:
                ch, st = GLYPHS.get(code, "?"), mark
            if c == self.cursor and self.has_focus:
                st = st + cursor
            elif c == self.cursor:
                st = st + Style(underline=True, bold=True)
            segs.append(Segment(ch, st))
        strip = Strip(segs)
        return strip.extend_cell_length(width, base).crop(0, width)

    def on_focus(self) -> None:
        self._refresh_cell(self.cursor)

    def on_blur(self) -> None:
        self._refresh_cell(self.cursor)
