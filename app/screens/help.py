"""Help screen (F1 / ?): what every pane shows and every key does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# srsalvage workstation

The evidence is opened **read-only** and never written. Your decisions (chosen generation, extent
edits, exports) live in the *case file* beside the image, saved after every change, with an
append-only audit log (`L`).

## Panes — `1` `2` `3` `4` focus them, `Tab` cycles, the mouse works too

**1 VG tree** — partitions, PVs, VGs, every metadata generation (seqno, source, checksum, time,
description) with its LVs; deleted VDIs are marked `DELETED` (a generation that still holds some
says `N deleted`), VHD snapshot chains nested under their parent. `→` / `←` (or `Space`) open and
close a node; `Enter` on a generation chooses it (`●`) and recolours the map; `Enter` on an LV opens it in the editor.
`'` then part of a name label, LV name or uuid: jump to that VDI (type-ahead) · `G`: only the
generations where an LV was created, removed, resized or moved (again: all).

**2 Disk map** — one cell per PE (or per bucket of PEs when the disk is large), coloured by the
owner LV in the chosen generation. Arrows move, `+` / `-` zoom, `Enter` opens the LV under the
cursor. Legend: `█` LV · `▒` deleted LV · `·` free PE · `M` label / metadata area ·
`X` PE claimed twice (two LVs, or a newer generation) · `*` carve hit · `|` partition start ·
`?` unknown · blank: outside the PV.

**3 Extent editor** — LE → PE of the selected VDI, with confidence, source, the engine's
suggestion (or, magenta `9|41 ?`, the PEs that fit an LE it could not decide) and the VHD
check result; every edit re-runs the checks and is saved in the case.
- `shift+↑` / `shift+↓` (or `K` / `J`): move the extent up / down
- `s` on one row, then `s` on another: swap the two
- `p`: set the PE by number · `i`: insert an unknown extent · `x` / `Del`: delete it
- `a`: accept the suggestion for this LE · `A`: accept all above a confidence
- `u` / `ctrl+z`: undo · `r` / `ctrl+y`: redo
- `f`: findings pane — every check finding in full; for an LE the engine could not decide, the
  PEs that fit it: `t` takes one, `h` shows it in the hex view

**4 Hex view** — the disk, the selected LV or its virtual disk (`v` switches), with offsets in
that space and on the disk, and the structure field under the cursor.
- arrows, `PgUp` / `PgDn`, `Home` / `End` · `g`: go to offset (`0x…`, `4k`, `s2048`, `end-512`)
- `/`: find text or `hex:4c 56 4d` · `n`: find next

## Work — runs in the background, `Esc` cancels the newest job
- `S`: signature scan of the whole image (carve hits appear on the map) · `F5`: analyse again
- `R`: rebuild extent maps from VHD structure (engine suggestions in the editor)
- `E`: export the selected VDI (VHD or raw); ends with size and sha256, and lists every virtual
  range it could not trust (extents a newer LV overwrote are never read)
- `c`: carving screen (SQL Server pages, RAR archives), on the disk or inside the selected VDI
  (`v` there); hits are marked on the map, `Enter` on one shows it in the hex view
- `L`: audit log of this case (hash-chained) · `P`: write the recovery report (HTML) beside the
  case · `ctrl+p`: every action by name
- `F1` / `?`: this help · `q`: quit (asks first while an export or carve runs)
"""


class HelpScreen(ModalScreen[None]):
    """Keys and panes."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 96%; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
