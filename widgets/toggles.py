"""Checkbox and radio button whose state shows in the glyph's shape, not only its colour
(a monochrome terminal, a screenshot in print, colour-blind eyes): [X] / [ ] and (●) / (○)."""

from __future__ import annotations

from textual.widgets import Checkbox, RadioButton


class ShapeCheckbox(Checkbox):
    """A Checkbox drawn X when ticked and blank when not."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - the name Textual's ToggleButton reads
        return "X" if self.value else " "


class ShapeRadioButton(RadioButton):
    """A RadioButton drawn ● when chosen and ○ when not."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802
        return "●" if self.value else "○"
