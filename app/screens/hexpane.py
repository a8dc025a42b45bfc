"""The hex pane of the workstation: which space it shows (disk, LV, virtual disk), the field
panel and subtitle naming the structure under the cursor, go to offset and find."""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual.widgets import Static

from app.screens.dialogs import InputDialog
from core.errors import SrsalvageError
from core.lvm.space import pes_space
from widgets.hex_view import HexView, find_bytes, parse_needle, parse_offset
from widgets.vg_tree import short_lv_name


class HexPaneMixin:
    """Hex-view actions of the main screen (uses its `session`, `hex`, `start_job`)."""

    hex_mode: str
    last_needle: bytes | None

    def on_hex_view_cursor_moved(self, event: HexView.CursorMoved) -> None:
        # drawn from the space shown now, not from the message: a message posted before the
        # space changed (`v`, another VDI) must not paint the previous space's labels
        self.show_hex_info()

    def show_hex_info(self) -> None:
        """Title, subtitle and field panel of the hex pane, from the space it shows now."""
        if self.hex.space is None:
            return
        info = self.hex.cursor_info()
        if self.hex_mode == "disk":
            info.disk_offset = info.offset
        t = Text()
        t.append(f"{self.hex.space_title} {info.offset:#x}", style="bold")
        if info.disk_offset is not None and self.hex_mode != "disk":
            t.append(f"  disk {info.disk_offset:#x}")
        elif self.hex_mode != "disk":
            t.append("  disk —", style="dim")
        if info.field is not None:
            f = info.field
            t.append(f"  {f.struct}", style="cyan")
            name = f.name
            if f.name == "bat":
                name = f"bat[{(info.offset - f.start) // 4}]"
            t.append(f".{name}", style="bold cyan")
            t.append(f" +{info.offset - f.start}")
        pane = self.query_one("#hexpane")
        pane.border_title = f"4 Hex — {self.hex.space_title}"
        pane.border_subtitle = t.plain[:120]
        panel = Text()
        panel.append("cursor\n", style="bold")
        panel.append(f"{info.offset:#x}\n")
        panel.append("disk\n", style="bold")
        panel.append(f"{info.disk_offset:#x}\n" if info.disk_offset is not None else "—\n")
        if info.field is not None:
            panel.append("structure\n", style="bold")
            panel.append(f"{info.field.struct}\n", style="cyan")
            panel.append("field\n", style="bold")
            panel.append(f"{info.field.name}\n", style="bold cyan")
            panel.append(f"{info.field.start:#x}, {info.field.end - info.field.start} bytes\n")
        if info.value:
            v = info.value
            panel.append("value\n", style="bold")
            panel.append(f"u32be {int.from_bytes(v[:4], 'big')}\n")
            panel.append(f"u32le {int.from_bytes(v[:4], 'little')}\n")
            panel.append(f"u64be {int.from_bytes(v[:8], 'big'):#x}\n")
        self.query_one("#fieldpanel", Static).update(panel)

    def set_hex_mode(self, mode: str) -> None:
        s = self.session
        lv, vg = s.sel.lv, s.sel.vg
        if mode == "disk" or lv is None:
            self.hex_mode = "disk"
            self.hex.set_space(s.ev, overlay=s.disk_overlay(), title="disk",
                               cursor=self.hex.cursor if self.hex.space is s.ev else 0)
            self.show_hex_info()
            return
        space = pes_space(s.ev, vg, s.pes(lv), lv.name)
        if mode == "lv":
            overlay = None
            try:
                img = s.vhd_image(vg, lv)
                overlay = s.vhd_overlay(img)
            except SrsalvageError:
                pass
            self.hex_mode = "lv"
            self.hex.set_space(space, locate=space.locate, overlay=overlay, title=f"LV {short_lv_name(lv.name)}")
            self.show_hex_info()
            return
        try:
            img = s.vhd_image(vg, lv)
            virtual = img.virtual_space()
        except SrsalvageError as exc:
            self.notify(f"no virtual disk: {exc}", severity="warning")
            self.set_hex_mode("disk")
            return
        self.hex_mode = "virtual"
        self.hex.set_space(virtual, locate=_virtual_locate(img, space), title=f"virtual {short_lv_name(lv.name)}")
        self.show_hex_info()

    def action_cycle_space(self) -> None:
        order = ["disk", "lv", "virtual"]
        if self.session.sel.lv is None:
            self.notify("select a VDI first: the hex view shows the disk", severity="warning")
            self.set_hex_mode("disk")
            return
        self.set_hex_mode(order[(order.index(self.hex_mode) + 1) % 3])
        self.action_focus_pane("hex")

    def action_goto(self) -> None:
        hexv = self.hex
        size = hexv.space.size if hexv.space is not None else 0

        def validate(text: str) -> str | None:
            try:
                parse_offset(text, size, hexv.cursor)
            except ValueError as exc:
                return str(exc)
            return None

        def done(text: str | None) -> None:
            if text is not None:
                hexv.goto(parse_offset(text, size, hexv.cursor))
                self.action_focus_pane("hex")

        self.app.push_screen(InputDialog(f"Go to offset in {hexv.space_title}",
                                         "0x1000, 4096, 4k, 1.5G, s2048 (sector), +512, end-512",
                                         "", validate), done)

    def action_find(self) -> None:
        def validate(text: str) -> str | None:
            try:
                parse_needle(text)
            except ValueError as exc:
                return str(exc)
            return None

        def done(text: str | None) -> None:
            if text is not None:
                self.last_needle = parse_needle(text)
                self._find(self.hex.cursor)

        self.app.push_screen(InputDialog(f"Find in {self.hex.space_title}",
                                         "text, or hex:4c 41 42 45 4c", "", validate), done)

    def action_find_next(self) -> None:
        if self.last_needle is None:
            self.action_find()
            return
        self._find(self.hex.cursor + 1)

    def _find(self, start: int) -> None:
        hexv = self.hex
        space, needle = hexv.space, self.last_needle
        shown = needle_text(needle)

        def work(cancel, progress):
            found = find_bytes(space, needle, start, cancel, progress)
            if found is None and start > 0:
                # wrap: from the start of the space up to where this search began
                found = find_bytes(space, needle, 0, cancel, progress)
                if found is not None and found >= start:
                    found = None
                return found, found is not None
            return found, False

        def done(result) -> None:
            found, wrapped = result
            if found is None:
                self.notify(f"{shown} not found in {hexv.space_title}", severity="warning")
            elif hexv.space is space:
                if wrapped:
                    self.notify(f"{shown}: wrapped to the start, found at {found:#x}")
                hexv.goto(found)
                self.action_focus_pane("hex")

        self.start_job("find", f"find {shown[:24]}", work, done, exclusive=True)


def needle_text(needle: bytes) -> str:
    """A search needle as a technician typed it: "text" when printable, else hex bytes."""
    if needle and all(32 <= b < 127 for b in needle):
        return f'"{needle.decode("ascii")}"'
    return "hex:" + needle[:32].hex(" ") + (" …" if len(needle) > 32 else "")


def _virtual_locate(img: Any, lv_space: Any) -> Callable[[int], int | None]:
    """Virtual-disk offset -> disk offset, through the BAT and the LV's extents."""
    block_size = getattr(img, "block_size", 0) or 0
    bitmap = getattr(img, "bitmap_bytes", 0) or 0

    def locate(off: int) -> int | None:
        if block_size <= 0:
            return lv_space.locate(off)
        block, rel = divmod(off, block_size)
        start = img.block_bitmap_offset(block)
        if start is None:
            return None
        return lv_space.locate(start + bitmap + rel)

    return locate
