"""Export dialog (E): destination, format (VHD / raw), a warning when a newer generation gave some
of the VDI's extents to another LV; and the result dialog with size and sha256."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from widgets.toggles import ShapeCheckbox, ShapeRadioButton

from app.screens.dialogs import DIALOG_CSS, SubmitOrCancel
from core.escape import terminal_line
from core.spaces import compact_ranges


@dataclass
class ExportRequest:
    dest: str
    fmt: str          # "vhd" | "raw"
    force: bool
    overwrite: bool


def conflict_text(conflicts: dict[int, str], place: str = "in a newer generation") -> str:
    """'3 extents (PE 37-39) of this VDI belong to VHD-ec4f… in a newer generation'."""
    by_owner: dict[str, list[int]] = {}
    for pe, owner in conflicts.items():
        by_owner.setdefault(owner, []).append(pe)
    owners = "; ".join(f"PE {compact_ranges(pes, ', ')} → {owner}" for owner, pes in sorted(by_owner.items()))
    return (f"⚠ {len(conflicts)} extents of this VDI belong to another LV {place} "
            f"({owners}). Their content may have been overwritten.")


class ExportDialog(SubmitOrCancel, ModalScreen[ExportRequest | None]):
    """Where and how to export one VDI."""

    DEFAULT_CSS = DIALOG_CSS + """
    ExportDialog { align: center middle; }
    ExportDialog .dialog { width: 84; }
    ExportDialog RadioSet { layout: horizontal; height: auto; border: none; }
    ExportDialog #conflict-warning { color: $warning; text-style: bold; height: auto; }
    ExportDialog Checkbox { border: none; height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, key: str, label: str, default_dir: str, conflicts: dict[int, str],
                 vhd_possible: bool = True, place: str = "in a newer generation") -> None:
        super().__init__()
        self.key = key
        self.label = label
        self.default_dir = default_dir
        self.conflicts = conflicts
        self.vhd_possible = vhd_possible
        self.place = place

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(terminal_line(f"Export {self.key}" + (f" “{self.label}”" if self.label else "")), classes="title", markup=False)
            with RadioSet(id="format"):
                yield ShapeRadioButton("VHD (as XenServer held it)", value=self.vhd_possible, id="fmt-vhd")
                yield ShapeRadioButton("raw virtual disk", value=not self.vhd_possible, id="fmt-raw")
            yield Label("Destination file:")
            yield Input(value=self._default_dest("vhd" if self.vhd_possible else "raw"), id="dest")
            if self.conflicts:
                yield Static(conflict_text(self.conflicts, self.place), id="conflict-warning", markup=False)
                yield ShapeCheckbox("export anyway (recorded as forced in the audit log)", id="force")
            yield ShapeCheckbox("overwrite an existing file", id="overwrite")
            yield Static("", classes="error-text", id="export-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def _default_dest(self, fmt: str) -> str:
        # no ':' in the name (a map key like "vhd:<uuid>"): Windows shares and scp refuse it
        name = re.sub(r"[:/\\]", "-", self.key)
        return os.path.join(self.default_dir, f"{name}.{'vhd' if fmt == 'vhd' else 'raw'}")

    def on_mount(self) -> None:
        self.query_one("#dest", Input).focus()

    @property
    def fmt(self) -> str:
        return "vhd" if self.query_one("#fmt-vhd", RadioButton).value else "raw"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        dest = self.query_one("#dest", Input)
        for fmt in ("vhd", "raw"):
            other = "raw" if fmt == "vhd" else "vhd"
            if dest.value == self._default_dest(other) and self.fmt == fmt:
                dest.value = self._default_dest(fmt)

    def _submit(self) -> None:
        dest = self.query_one("#dest", Input).value.strip()
        error = self.query_one("#export-error", Static)
        if not dest:
            error.update("a destination file is needed")
            return
        force = bool(self.conflicts) and self.query_one("#force", Checkbox).value
        if self.conflicts and not force:
            error.update("tick “export anyway” to export extents a newer generation reused")
            return
        overwrite = self.query_one("#overwrite", Checkbox).value
        if os.path.isdir(dest):
            error.update(f"{dest} is a directory")
            return
        if os.path.exists(dest) and not overwrite:
            error.update(f"{dest} exists: tick “overwrite” or choose another name")
            return
        self.dismiss(ExportRequest(os.path.abspath(os.path.expanduser(dest)), self.fmt, force, overwrite))


class ExportDone(ModalScreen[None]):
    """The export's size and sha256."""

    DEFAULT_CSS = DIALOG_CSS + """
    ExportDone { align: center middle; }
    ExportDone .dialog { width: 90; border: thick $success; }
    ExportDone .dialog.untrusted { border: thick $warning; }
    ExportDone #export-result { height: auto; max-height: 24; overflow-y: auto; }
    """
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, path: str, fmt: str, size: int, sha256: str, notes: list[str]) -> None:
        super().__init__()
        self.out_path, self.fmt, self.out_bytes, self.sha256, self.notes = path, fmt, size, sha256, notes

    def compose(self) -> ComposeResult:
        bad = [n for n in self.notes if n.startswith("untrusted:")]
        with Vertical(classes="dialog untrusted" if bad else "dialog"):
            yield Label("Export complete" if not bad else
                        f"Export written — ⚠ NOT the whole disk: {len(bad)} range(s) could not be "
                        f"trusted (read as zeros or unproven; listed below)", classes="title")
            text = (f"{self.fmt.upper()} written to {self.out_path}\n"
                    f"size   {self.out_bytes} bytes\nsha256 {self.sha256}")
            if self.notes:
                text += "\n" + "\n".join(self.notes)
            yield Static(text, id="export-result", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Close", variant="success", id="close")

    def on_mount(self) -> None:
        self.query_one(Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)
