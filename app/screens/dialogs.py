"""Modal dialogs: error, one-line input (go to offset, find, set PE, confidence), confirm."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DIALOG_CSS = """
.dialog { width: 72; max-width: 95%; height: auto; border: thick $primary; background: $surface;
          padding: 1 2; }
.dialog > .title { text-style: bold; width: 100%; margin-bottom: 1; }
.dialog > .buttons { height: auto; margin-top: 1; align-horizontal: right; }
.dialog > .buttons > Button { margin-left: 2; min-width: 10; }
.dialog > .error-text { color: $error; height: auto; }
.dialog > .hint { color: $text-muted; height: auto; }
"""


class MessageDialog(ModalScreen):
    """A title, a message and a row of buttons (BUTTONS: label, variant, id; the one FOCUSED
    has the focus)."""

    BUTTONS: tuple[tuple[str, str, str], ...] = ()
    FOCUSED = ""
    MESSAGE_CLASSES = ""

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Static(self.message, classes=self.MESSAGE_CLASSES, markup=False)
            with Horizontal(classes="buttons"):
                for label, variant, button_id in self.BUTTONS:
                    yield Button(label, variant=variant, id=button_id)

    def on_mount(self) -> None:
        self.query_one(f"#{self.FOCUSED}", Button).focus()


class ErrorDialog(MessageDialog):
    """A failure the technician must see (a worker failed, a file could not be written)."""

    DEFAULT_CSS = DIALOG_CSS + """
    ErrorDialog { align: center middle; }
    ErrorDialog > .dialog { border: thick $error; }
    """
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]
    BUTTONS = (("Close", "error", "close"),)
    FOCUSED = "close"
    MESSAGE_CLASSES = "error-text"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)


class SubmitOrCancel:
    """Enter in an input or the "ok" button calls `_submit()`; any other button or Esc
    (`action_cancel`) dismisses the dialog with None. For modal dialogs that ask for a value."""

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class InputDialog(SubmitOrCancel, ModalScreen[str | None]):
    """One line of input with validation; dismisses with the text (None when cancelled)."""

    DEFAULT_CSS = DIALOG_CSS + """
    InputDialog { align: center middle; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, hint: str = "", value: str = "",
                 validate: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.hint = hint
        self.value = value
        self.validate_fn = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Input(value=self.value, id="dialog-input")
            yield Static(self.hint, classes="hint", markup=False)
            yield Static("", classes="error-text", id="dialog-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _submit(self) -> None:
        text = self.query_one(Input).value
        if self.validate_fn is not None:
            problem = self.validate_fn(text)
            if problem:
                self.query_one("#dialog-error", Static).update(problem)
                return
        self.dismiss(text)



class ConfirmDialog(MessageDialog):
    """Yes/no for a consequential action."""

    DEFAULT_CSS = DIALOG_CSS + """
    ConfirmDialog { align: center middle; }
    """
    BINDINGS = [Binding("escape,n", "no", "No"), Binding("y", "yes", "Yes")]
    BUTTONS = (("Yes", "warning", "yes"), ("No", "default", "no"))
    FOCUSED = "no"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)
