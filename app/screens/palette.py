"""Command palette entries for every workstation action (Ctrl+P), plus one per generation and VDI."""

from __future__ import annotations

from functools import partial
from typing import Any

from core.escape import terminal_line
from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, action on the main screen, help) — the palette lists every action a key also does
ACTIONS = [
    ("Analyse the image again (LVM)", "analyse", "partitions, PVs, every metadata generation"),
    ("Scan the image", "scan", "signature scan of the whole image; carve hits go on the map"),
    ("Rebuild extent maps", "reconstruct", "engine suggestions from VHD structure"),
    ("Export selected VDI", "export", "VHD or raw, ends with size and sha256"),
    ("Audit log", "audit", "every edit and export recorded in the case"),
    ("Carving screen", "carving", "SQL Server pages, RAR archives"),
    ("Go to offset (hex)", "goto", "offset in the hex view's space"),
    ("Find bytes or text (hex)", "find", "search forward from the cursor"),
    ("Find next", "find_next", "repeat the last search"),
    ("Switch hex space (disk / LV / virtual disk)", "cycle_space", "what the hex view shows"),
    ("Cancel newest job", "cancel_job", "stop the most recent background job"),
    ("Focus VG tree", "focus_pane('tree')", ""),
    ("Focus disk map", "focus_pane('map')", ""),
    ("Focus extent editor", "focus_pane('editor')", ""),
    ("Focus hex view", "focus_pane('hex')", ""),
    ("Help", "help", "keys and panes"),
    ("Move extent up", "editor_op('move', -1)", "extent editor (shift+up / K)"),
    ("Move extent down", "editor_op('move', 1)", "extent editor (shift+down / J)"),
    ("Mark / swap extents", "editor_op('swap')", "extent editor (s on one row, s on another)"),
    ("Set PE of extent", "editor_op('set_pe')", "extent editor (p)"),
    ("Insert unknown extent", "editor_op('insert_gap')", "extent editor (i)"),
    ("Delete extent", "editor_op('delete')", "extent editor (x / Del)"),
    ("Accept engine suggestion for extent", "editor_op('accept')", "extent editor (a)"),
    ("Zoom disk map in", "map_op('zoom', -1)", "disk map (+)"),
    ("Zoom disk map out", "map_op('zoom', 1)", "disk map (-)"),
    ("Open the LV under the map cursor", "map_op('jump')", "disk map (Enter)"),
    ("Undo last edit", "editor_op('undo')", "extent editor"),
    ("Redo", "editor_op('redo')", "extent editor"),
    ("Accept engine suggestions above a confidence", "editor_op('accept_all')", "extent editor"),
    ("Quit", "app.quit", ""),
]


class WorkstationCommands(Provider):
    """Every action by name, and each generation / VDI of the analysis to jump to."""

    def _main(self) -> Any:
        from app.screens.main import MainScreen

        for screen in reversed(self.app.screen_stack):
            if isinstance(screen, MainScreen):
                return screen
        return None

    def _entries(self) -> list[tuple[str, Any, str]]:
        main = self._main()
        if main is None:
            return []
        out: list[tuple[str, Any, str]] = []
        for title, action, help_text in ACTIONS:
            target = f"app.{action[4:]}" if action.startswith("app.") else action
            if action.startswith("app."):
                out.append((title, partial(self.app.run_action, target), help_text))
            else:
                out.append((title, partial(main.run_action, target), help_text))
        s = main.session
        for vg in s.volume_groups:
            for gen in vg.generations:
                out.append((f"Choose generation seqno {gen.seqno} ({gen.source})",
                            partial(main.choose_generation, vg, gen), vg.name))
            if s.sel.gen is not None and s.sel.vg is vg:
                for lv in s.sel.gen.lvs.values():
                    label = s.label(lv, vg)
                    label = f" “{label}”" if label else ""
                    out.append((terminal_line(f"Open VDI {lv.name}{label}"), partial(main.select_vdi, vg, s.sel.gen, lv),
                                f"seqno {s.sel.gen.seqno}, {getattr(lv, 'status', '')}"))
        return out

    async def discover(self) -> Hits:
        for title, callback, help_text in self._entries()[: len(ACTIONS)]:
            yield DiscoveryHit(title, callback, help=help_text or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text or None)
