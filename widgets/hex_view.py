"""HexView: a read-only hex + ASCII view over any ByteSpace, with disk offsets and overlays.

Line API (ScrollView + render_line + Strip): only the rows on screen are read and rendered, reads
go through an LRU cache of 64 KiB chunks, so paging is instant on a multi-terabyte image. Each
row shows the offset in the viewed space (the disk, an LV, a VHD's virtual disk) and, when the
terminal is wide enough and the space maps onto the disk (`RunList.locate`), the disk offset too.
A structure overlay colours the bytes of known structures; the field under the cursor is named in
`HexView.CursorMoved`, which a side panel shows.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from widgets.overlay import Overlay, PlacedField

ROW = 16
_SEPARATOR = Style(italic=False)   # distinct from any byte style, invisible on a space
CHUNK = 64 << 10
CACHE_CHUNKS = 256  # 16 MiB at most

OVERLAY_COLOURS = ["#5f87d7", "#5faf5f", "#d7875f", "#af5fd7", "#d7af00", "#00afaf"]
PRINTABLE = bytes(range(0x20, 0x7F))


def printable(b: int) -> str:
    return chr(b) if 0x20 <= b < 0x7F else "."


class ChunkCache:
    """LRU cache of fixed-size chunks of a byte space; only what is shown is ever read."""

    def __init__(self, space, chunk: int = CHUNK, capacity: int = CACHE_CHUNKS) -> None:
        self.space = space
        self.chunk = chunk
        self.capacity = capacity
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self.reads = 0

    def _get(self, index: int) -> bytes:
        data = self._chunks.get(index)
        if data is not None:
            self._chunks.move_to_end(index)
            return data
        self.reads += 1
        try:
            data = self.space.read(index * self.chunk, self.chunk)
        except (OSError, ValueError):
            data = b""
        self._chunks[index] = data
        if len(self._chunks) > self.capacity:
            self._chunks.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        out = []
        pos, end = offset, min(offset + length, self.space.size)
        while pos < end:
            idx, rel = divmod(pos, self.chunk)
            data = self._get(idx)[rel: rel + (end - pos)]
            if not data:
                break
            out.append(data)
            pos += len(data)
        return b"".join(out)


def _number(t: str) -> int:
    """'0x1f', '4096', 's8' (sectors), '4k', '1.5G', '2MiB' -> int."""
    if t.startswith("0x"):
        return int(t, 16)
    if t.startswith("s") and t[1:].isdigit():
        return int(t[1:]) * 512
    for suffix in ("kib", "mib", "gib", "tib", "k", "m", "g", "t"):
        if t.endswith(suffix):
            mult = 1024 ** ("kmgt".index(suffix[0]) + 1)
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def parse_offset(text: str, size: int, current: int = 0) -> int:
    """'0x1000', '4096', '4k', '2G', 's2048', '+512', '-1M', 'end', 'end-512' -> an offset in
    [0, size); ValueError with a one-line reason otherwise."""
    t = text.strip().lower().replace("_", "").replace(" ", "")
    if not t:
        raise ValueError("empty offset")
    base = 0
    if t.startswith("end"):
        base, t = size, t[3:] or "-1"
    elif t[0] in "+-":
        base = current
    sign = -1 if t.startswith("-") else 1
    try:
        value = _number(t.lstrip("+-"))
    except (ValueError, OverflowError):  # OverflowError: "infk", "1e999G"
        raise ValueError(f"not an offset: {text!r}") from None
    target = base + sign * value
    if not 0 <= target < max(1, size):
        raise ValueError(f"offset {target:#x} outside 0..{max(0, size - 1):#x}")
    return target


def parse_needle(text: str) -> bytes:
    """'hex:4c 56 4d 32' or 'LABELONE' (text) -> bytes to find."""
    t = text.strip()
    if t.lower().startswith("hex:"):
        try:
            return bytes.fromhex(t[4:].replace(" ", ""))
        except ValueError:
            raise ValueError(f"bad hex bytes: {t[4:]!r}") from None
    if not t:
        raise ValueError("nothing to find")
    return t.encode("utf-8")


def find_bytes(space, needle: bytes, start: int, cancel=None, progress=None,
               window: int = 8 << 20) -> int | None:
    """First offset >= start where `needle` occurs in `space`; holes of sparse files skipped.

    Streams windows (bounded memory); cancel/progress as every long job (core.progress.Ticker).
    """
    from core.progress import Ticker

    if not needle or start >= space.size:
        return None
    ranges = [(start, space.size)]
    if hasattr(space, "data_ranges") and any(needle):
        ranges = space.data_ranges(start, space.size) or []
    total = sum(e - s for s, e in ranges)
    ticker = Ticker(total, "find", progress, cancel)
    done = 0
    overlap = len(needle) - 1
    for rs, re in ranges:
        pos = rs
        while pos < re:
            n = min(window, re - pos)
            data = space.read(pos, n + overlap)
            i = data.find(needle)
            if i >= 0 and pos + i < re + overlap:
                return pos + i
            pos += n
            done += n
            ticker.tick(done)
    return None


@dataclass
class CursorInfo:
    offset: int
    disk_offset: int | None
    value: bytes
    field: PlacedField | None


class HexView(ScrollView, can_focus=True):
    """Hex/ASCII rows of a ByteSpace; cursor, go-to, structure overlay, disk offsets."""

    DEFAULT_CSS = """
    HexView { background: $surface; scrollbar-size-vertical: 1; }
    HexView > .hexview--offset { color: $text-muted; }
    HexView > .hexview--disk { color: $secondary; }
    HexView > .hexview--cursor { background: $accent; color: $text; text-style: bold; }
    HexView > .hexview--zero { color: $text-disabled; }
    HexView > .hexview--hole { color: $text-disabled; }
    HexView > .hexview--unreadable { color: $error; text-style: bold; }
    """
    COMPONENT_CLASSES = {"hexview--offset", "hexview--disk", "hexview--cursor", "hexview--zero",
                         "hexview--hole", "hexview--unreadable"}

    BINDINGS = [
        Binding("up", "move(-16)", "Up", show=False),
        Binding("down", "move(16)", "Down", show=False),
        Binding("left", "move(-1)", "Left", show=False),
        Binding("right", "move(1)", "Right", show=False),
        Binding("pageup", "page(-1)", "PgUp", show=False),
        Binding("pagedown", "page(1)", "PgDn", show=False),
        Binding("home", "home", "Start", show=False),
        Binding("end", "end", "End", show=False),
        Binding("ctrl+home", "home", show=False),
        Binding("ctrl+end", "end", show=False),
    ]

    cursor = reactive(0, always_update=False, repaint=False)

    class CursorMoved(Message):
        """The cursor is on another byte (offset in the viewed space, and on the disk)."""

        def __init__(self, view: "HexView", info: CursorInfo) -> None:
            super().__init__()
            self.view = view
            self.info = info

    def __init__(self, space=None, *, locate: Callable[[int], int | None] | None = None,
                 overlay: Overlay | None = None, title: str = "", name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.space = None
        self.cache: ChunkCache | None = None
        self.locate: Callable[[int], int | None] | None = None
        self.overlay = Overlay()
        self.space_title = ""
        self.unreadable: list[tuple[int, int]] = []
        if space is not None:
            self.set_space(space, locate=locate, overlay=overlay, title=title)

    # -- model ----------------------------------------------------------------------------------
    def set_space(self, space, *, locate: Callable[[int], int | None] | None = None,
                  overlay: Overlay | None = None, title: str = "", cursor: int = 0) -> None:
        """Show another space (the disk, an LV, a virtual disk); `locate` maps to disk offsets."""
        self.space = space
        self.cache = ChunkCache(space)
        self.locate = locate
        # bytes of this space that come from unreadable evidence: shown `??`, never as zeros
        from core.evidence.layers import unreadable_in
        self.unreadable = unreadable_in(space)
        self.overlay = overlay or Overlay()
        self.space_title = title
        self.border_title = title or None
        self.virtual_size = Size(self._row_width(), self.rows)
        self.set_reactive(HexView.cursor, 0)
        self.goto(min(cursor, max(0, space.size - 1)), center=False)
        self.refresh()
        self._announce()   # the same offset in another space is another byte: labels follow

    def set_overlay(self, overlay: Overlay | None) -> None:
        self.overlay = overlay or Overlay()
        self.refresh()
        self._announce()

    @property
    def rows(self) -> int:
        return 0 if self.space is None else (self.space.size + ROW - 1) // ROW

    @property
    def show_disk_column(self) -> bool:
        return self.locate is not None and self.size.width >= 96

    @property
    def offset_digits(self) -> int:
        size = self.space.size if self.space is not None else 0
        return max(8, len(f"{max(0, size - 1):x}"))

    def _row_width(self) -> int:
        d = self.offset_digits
        width = d + 1 + ROW * 3 + 1 + ROW
        if self.locate is not None:
            width += d + 1
        return width

    # -- cursor ---------------------------------------------------------------------------------
    def goto(self, offset: int, center: bool = True) -> None:
        """Put the cursor on `offset` and scroll it into view."""
        if self.space is None or self.space.size == 0:
            return
        offset = max(0, min(int(offset), self.space.size - 1))
        old = self.cursor
        self.cursor = offset
        row = offset // ROW
        height = max(1, self.scrollable_content_region.height)
        top = int(self.scroll_y)
        if center:
            if not top <= row < top + height:
                self.scroll_to(y=max(0, row - height // 3), animate=False)
        else:
            if row < top:
                self.scroll_to(y=row, animate=False)
            elif row >= top + height:
                self.scroll_to(y=row - height + 1, animate=False)
        self._refresh_row(old)
        self._refresh_row(offset)

    def _refresh_row(self, offset: int) -> None:
        y = offset // ROW - int(self.scroll_y)
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self._announce()

    def _announce(self) -> None:
        if self.space is None:
            return
        self.post_message(HexView.CursorMoved(self, self.cursor_info()))

    def cursor_info(self) -> CursorInfo:
        off = self.cursor
        disk = self.locate(off) if self.locate is not None else None
        value = self.cache.read(off, 8) if self.cache is not None else b""
        return CursorInfo(off, disk, value, self.overlay.at(off))

    def action_move(self, delta: int) -> None:
        self.goto(self.cursor + delta, center=False)

    def action_page(self, direction: int) -> None:
        height = max(1, self.scrollable_content_region.height)
        delta = direction * height * ROW
        self.scroll_to(y=max(0, int(self.scroll_y) + direction * height), animate=False)
        self.goto(self.cursor + delta, center=False)

    def action_home(self) -> None:
        self.goto(0)

    def action_end(self) -> None:
        if self.space is not None:
            self.goto(self.space.size - 1)

    def on_click(self, event) -> None:
        if self.space is None:
            return
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = int(self.scroll_y) + offset.y
        d = self.offset_digits
        x = offset.x - (d + 1) - ((d + 1) if self.show_disk_column else 0)
        col = None
        if 0 <= x < ROW * 3:
            col = x // 3
        elif ROW * 3 + 1 <= x < ROW * 3 + 1 + ROW:
            col = x - ROW * 3 - 1
        if col is not None:
            self.goto(row * ROW + col, center=False)

    # -- rendering ------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        row = int(self.scroll_y) + y
        if self.space is None or row >= self.rows:
            return Strip.blank(self.size.width, self.rich_style)
        start = row * ROW
        data = self.cache.read(start, ROW) if self.cache is not None else b""
        base = self.rich_style
        off_style = base + self.get_component_rich_style("hexview--offset")
        disk_style = base + self.get_component_rich_style("hexview--disk")
        cur_style = base + self.get_component_rich_style("hexview--cursor")
        zero_style = base + self.get_component_rich_style("hexview--zero")
        d = self.offset_digits
        segs = [Segment(f"{start:0{d}x} ", off_style)]
        if self.show_disk_column:
            disk = self.locate(start) if self.locate is not None else None
            text = f"{disk:0{d}x} " if disk is not None else "-" * d + " "
            segs.append(Segment(text, disk_style))
        fields = self.overlay.in_range(start, start + ROW) if self.overlay else []
        bad = [(a, b) for a, b in self.unreadable if a < start + ROW and b > start]
        bad_style = base + self.get_component_rich_style("hexview--unreadable")
        styles = []
        for i in range(ROW):
            off = start + i
            if i >= len(data):
                styles.append(None)
                continue
            if off == self.cursor:
                styles.append(cur_style)
                continue
            st = None
            for f in fields:
                if f.start <= off < f.end:
                    st = base + Style(color=OVERLAY_COLOURS[f.colour], bold=f.colour % 2 == 0)
                    break
            if st is None:
                st = zero_style if data[i] == 0 else base
            styles.append(st)
        # the space after a byte takes that byte's style (a space shows no colour), so no run of
        # the row starts with spaces before text: SVG renderers (rsvg) drop such spaces and the
        # screenshots' columns ran together. After the cursor it must not be highlighted: a
        # style of its own that never merges with the next byte.
        for i in range(ROW):
            text = f"{data[i]:02x}" if i < len(data) else "  "
            st = styles[i] or base
            if bad and i < len(data) and any(a <= start + i < b for a, b in bad):
                text = "??"
                st = st if st is cur_style else bad_style
            segs.append(Segment(text, st))
            sep_style = base + _SEPARATOR if st is cur_style else st
            segs.append(Segment(" " if i != 7 else "  ", sep_style))
        for i in range(ROW):
            ch = printable(data[i]) if i < len(data) else " "
            if bad and i < len(data) and any(a <= start + i < b for a, b in bad):
                ch = "?"
            segs.append(Segment(ch, styles[i] or base))
        strip = Strip(segs)
        strip = strip.crop(int(self.scroll_x), int(self.scroll_x) + self.size.width)
        return strip.extend_cell_length(self.size.width, base)

    def on_resize(self) -> None:
        self.virtual_size = Size(self._row_width(), self.rows)
        # a hidden view (the compact layout shows the editor or the hex view) cannot scroll: the
        # cursor may have moved meanwhile, so bring it into view once there is room again
        self.call_after_refresh(self._show_cursor)

    def _show_cursor(self) -> None:
        if self.space is None or self.size.height == 0:
            return
        row = self.cursor // ROW
        top = int(self.scroll_y)
        if not top <= row < top + max(1, self.scrollable_content_region.height):
            self.scroll_to(y=max(0, row - self.scrollable_content_region.height // 3), animate=False)
