"""Quitting while jobs run: the technician is asked, sees what is running and what this session
did, and the audit log records that the work was left unfinished."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from app.screens.dialogs import DIALOG_CSS


def session_summary(case) -> str:
    """What this case holds: maps, edits, exports, carves (one line)."""
    audit = case.audit
    n = {k: sum(1 for a in audit if a.get("action") == k) for k in ("export", "carve")}
    edits = len(case.undo_stack)
    return (f"case: {len(case.maps)} VDI map(s), {edits} edit(s) to undo, {n['export']} "
            f"export(s), {n['carve']} carve(s) recorded"
            + (f" in {case.path}" if case.path else " (no case file: nothing recorded)"))


class QuitDialog(ModalScreen[bool]):
    """'N jobs are running: quit anyway?' — True quits (jobs cancelled), False stays."""

    DEFAULT_CSS = DIALOG_CSS + """
    QuitDialog { align: center middle; }
    QuitDialog > .dialog { border: thick $warning; width: 84; }
    QuitDialog #quit-text { height: auto; }
    """
    BINDINGS = [Binding("escape", "stay", "Stay")]

    def __init__(self, running: list[str], summary: str) -> None:
        super().__init__()
        self.running = running
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"{len(self.running)} job(s) still running — quit anyway?", classes="title")
            text = "\n".join(f"• {r}" for r in self.running)
            text += ("\n\nQuitting cancels them: an export or carve in progress leaves no file "
                     "(only its .part is removed); the audit log records what was running.\n\n"
                     + self.summary)
            yield Static(text, id="quit-text", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Stay", variant="primary", id="stay")
                yield Button("Quit anyway", variant="error", id="quit-anyway")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    def action_stay(self) -> None:
        self.dismiss(False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "quit-anyway")
