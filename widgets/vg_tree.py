"""VGTree: partitions, PVs, VGs, every metadata generation and its LVs, VHD chains as sub-trees.

Fed with the engine's DiskReport (core.lvm.analyse) — it only reads the documented attributes.
Enter on a generation posts `GenerationChosen`; Enter on an LV posts `VdiChosen` (its generation
is chosen too). Deleted VDIs (absent from the newest generation) are marked, name-labels from the
MGT volume are shown, and once the app knows VHD parents (`set_parents`) differencing disks hang
under their parents.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from core.escape import terminal_line
from core.sr import SrReport
from core.xen_names import lv_kind
from widgets.disk_map import human


@dataclass
class NodeRef:
    kind: str                 # "disk" | "partition" | "pv" | "vg" | "generation" | "lv" | "info"
    vg: Any = None
    gen: Any = None
    lv: Any = None
    obj: Any = None


def _joined(parts: list[tuple[str, str]]) -> Text:
    """Text from (text, style) parts; a part's leading spaces go to the end of the part before it
    (a space shows no colour), so no styled run starts with spaces before text: SVG renderers
    (rsvg) drop such spaces and the screenshots read "seqno 61mda", "MGTmgt"."""
    t = Text()
    carry = ""
    for i, (text, style) in enumerate(parts):
        stripped = text.lstrip(" ")
        lead = text[: len(text) - len(stripped)]
        if i and lead:
            t.append(lead, style=parts[i - 1][1] if "strike" not in parts[i - 1][1] else "")
        elif lead:
            carry = lead
        # evidence text (labels, names, descriptions): control characters shown, not sent
        t.append(terminal_line(carry + stripped), style=style)
        carry = ""
    return t


def gen_label(gen: Any) -> Text:
    parts: list[tuple[str, str]] = []
    if getattr(gen, "source", "") == "reconstruct":
        parts.append(("rebuilt from VHD structure", "bold magenta"))
        parts.append((f" {len(gen.lvs)} VDIs", "dim"))
        return _joined(parts)
    parts.append((f"seqno {gen.seqno}", "bold"))
    parts.append((f" {gen.source}", ""))
    crc = getattr(gen, "crc_ok", None)
    if crc is None:
        parts.append((" crc ?", "dim"))   # an older copy in the ring: no checksum covers it
    else:
        parts.append((" crc ok" if crc else " CRC BAD", "green" if crc else "bold red"))
    # which generations still hold deleted VDIs, visible without expanding each one (and early
    # in the label: the tree pane is narrow)
    deleted = sum(1 for lv in (getattr(gen, "lvs", {}) or {}).values()
                  if getattr(lv, "status", "live") == "deleted")
    if deleted:
        parts.append((f" {deleted} deleted", "bold yellow"))
    if getattr(gen, "current", False):
        parts.append((" current", "bold cyan"))
    when = getattr(gen, "creation_time", None)
    if when:
        parts.append((" " + time.strftime("%Y-%m-%d %H:%M", time.gmtime(when)), "dim"))
    desc = getattr(gen, "description", "") or ""
    if desc:
        parts.append((f" “{desc[:40]}”", "dim italic"))
    return _joined(parts)


def short_lv_name(name: str) -> str:
    """VHD-<uuid> -> VHD-<first uuid group>… (enough to tell VDIs apart on a narrow screen)."""
    m = re.match(r"^((?:VHD-|LV-|vhd:)[0-9a-f]{8})-[0-9a-f-]{27}$", name)
    return m.group(1) + "…" if m else name


def lv_label(lv: Any, extent_bytes: int, label: str | None = None) -> Text:
    """An LV's line in the tree; `label` is the VDI's name label (core.sr.SrReport.label)."""
    parts: list[tuple[str, str]] = []
    deleted = getattr(lv, "status", "live") == "deleted"
    name = short_lv_name(lv.name)  # the full name is in the editor's title
    if deleted:  # first, so a narrow pane still shows it (strike-through alone is easy to miss)
        parts.append(("DELETED", "bold yellow"))
    parts.append(((" " if deleted else "") + name, "strike" if deleted else ""))
    claimed = getattr(lv, "claimed_by", {}) or {}
    if claimed:  # before the label: an export of it needs --force, that must show
        parts.append((f" {len(claimed)} PE reused", "bold red"))
    if label:
        parts.append((f" “{label}”", "italic"))
    parts.append((f" {lv_kind(lv.name)}", "dim"))
    parts.append((f" {human(lv.le_count * extent_bytes)}", "dim"))
    missing = sum(1 for p in lv.pes() if p is None) if getattr(lv, "status", "") == "rebuilt" else 0
    if missing:
        parts.append((f" {missing} LE unknown", "bold red"))
    return _joined(parts)


class VGTree(Tree[NodeRef]):
    """The analysis report as a tree."""

    DEFAULT_CSS = """
    VGTree { background: $surface; }
    """
    # → / ← open and close generations like any file-manager tree (Textual's Tree would only
    # scroll sideways); Space still toggles, Enter chooses
    BINDINGS = [
        Binding("right", "expand_or_scroll", "Expand", show=False),
        Binding("left", "collapse_or_parent", "Collapse", show=False),
        Binding("G", "toggle_changed_only", "Only changes", show=False),
    ]

    @dataclass
    class GenerationChosen(Message):
        tree: "VGTree"
        vg: Any
        gen: Any

    @dataclass
    class VdiChosen(Message):
        tree: "VGTree"
        vg: Any
        gen: Any
        lv: Any

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("image", data=NodeRef("disk"), id=id)
        self.show_root = False
        self.report: SrReport | None = None
        self.volume_groups: list = []
        self.parents: dict[str, str] = {}
        self.chosen: tuple[str, int] | None = None
        self._gen_nodes: dict[tuple[str, int], TreeNode[NodeRef]] = {}
        self._lv_nodes: dict[tuple[str, int, str], TreeNode[NodeRef]] = {}
        self._populated: set[int] = set()
        self.changed_only = False   # G: only generations whose LVs differ from the next older

    def action_toggle_changed_only(self) -> None:
        """Show only the generations where an LV was created, removed, resized or moved."""
        self.changed_only = not self.changed_only
        self.rebuild()

    @staticmethod
    def _lv_signature(gen: Any) -> frozenset:
        return frozenset((name, tuple(tuple(r) for r in getattr(lv, "map_runs", []) or []))
                         for name, lv in gen.lvs.items())

    def _changed(self, vg: Any) -> set[int]:
        """seqnos of the generations whose LVs differ from the next older one (the oldest
        counts as a change), plus the current and the chosen one."""
        gens = list(vg.generations)
        keep = set()
        for i, gen in enumerate(gens):
            older = gens[i + 1] if i + 1 < len(gens) else None
            if older is None or self._lv_signature(gen) != self._lv_signature(older) \
                    or getattr(gen, "current", False) or self.chosen == (vg.name, gen.seqno):
                keep.add(gen.seqno)
        return keep

    def action_expand_or_scroll(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()
        else:
            self.scroll_right(animate=False)

    def action_collapse_or_parent(self) -> None:
        node = self.cursor_node
        if self.scroll_x > 0:
            self.scroll_left(animate=False)
        elif node is not None and node.allow_expand and node.is_expanded:
            node.collapse()
        elif node is not None and node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)

    def show_message(self, message: str) -> None:
        self.clear()
        self.root.add_leaf(Text(message, style="italic"), data=NodeRef("info"))

    def set_report(self, report: SrReport | None, volume_groups: list | None = None) -> None:
        """The analysis report; `volume_groups` replaces its VG list (e.g. plus rebuilt VDIs)."""
        self.report = report
        self.volume_groups = list(volume_groups) if volume_groups is not None else list(
            getattr(report, "volume_groups", []) or [])
        self.rebuild()

    def set_parents(self, parents: dict[str, str]) -> None:
        """{child LV name: parent LV name} from the VHD headers; rebuilds the LV sub-trees."""
        self.parents = dict(parents)
        self.rebuild()

    def rebuild(self) -> None:
        report = self.report
        self.clear()
        self._gen_nodes.clear()
        self._lv_nodes.clear()
        self._populated.clear()
        if report is None:
            return
        parts = getattr(report, "partitions", []) or []
        if parts:
            pnode = self.root.add(Text(f"Partitions ({len(parts)})", style="bold"), data=NodeRef("info"),
                                  expand=False)
            for p in parts:
                pnode.add_leaf(f"#{p.index} {p.scheme} at {p.offset:#x} {human(p.bytes)} {p.type}",
                               data=NodeRef("partition", obj=p))
        vgs = self.volume_groups
        if not parts and not vgs:
            self.root.add_leaf(Text("nothing recognised — press S to scan", style="bold yellow"),
                               data=NodeRef("info"))
        for vg in vgs:
            vnode = self.root.add(Text(terminal_line(vg.name), style="bold"), data=NodeRef("vg", vg=vg), expand=True)
            for pv in vg.pvs:
                vnode.add_leaf(
                    Text(f"PV {terminal_line(pv.name)} at {pv.offset:#x} {pv.pe_count} PE"
                         + ("" if pv.label_found else " (label lost)"), style="dim"),
                    data=NodeRef("pv", vg=vg, obj=pv))
            keep = self._changed(vg) if self.changed_only else None
            if keep is not None:
                hidden = len(vg.generations) - len(keep)
                vnode.add_leaf(Text(f"{hidden} generation(s) without LV changes hidden — G shows all",
                                    style="italic dim"), data=NodeRef("info"))
            for gen in vg.generations:
                if keep is not None and gen.seqno not in keep:
                    continue
                show = bool(getattr(gen, "current", False)) or self.chosen == (vg.name, gen.seqno)
                gnode = vnode.add(gen_label(gen), data=NodeRef("generation", vg=vg, gen=gen),
                                  expand=show, allow_expand=True)
                self._gen_nodes[(vg.name, gen.seqno)] = gnode
                if show:
                    self._populate(gnode)
        self.root.expand()
        self._mark_chosen()

    def _populate(self, gnode: TreeNode[NodeRef]) -> None:
        """LV nodes of a generation, added when it is first shown (a ring of a thousand
        generations stays a thousand nodes until the technician opens one)."""
        ref = gnode.data
        if ref is None or ref.kind != "generation" or id(gnode) in self._populated:
            return
        self._populated.add(id(gnode))
        self._add_lvs(gnode, ref.vg, ref.gen)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[NodeRef]) -> None:
        self._populate(event.node)

    def _add_lvs(self, gnode: TreeNode[NodeRef], vg: Any, gen: Any) -> None:
        lvs = dict(gen.lvs)
        children: dict[str, list[str]] = {}
        roots = []
        for name in sorted(lvs, key=lambda n: (lv_kind(n) != "mgt", n)):
            parent = self.parents.get(name)
            if parent and parent in lvs and parent != name:
                children.setdefault(parent, []).append(name)
            else:
                roots.append(name)
        seen: set[str] = set()

        def add(node: TreeNode[NodeRef], name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            lv = lvs[name]
            kids = children.get(name, [])
            ref = NodeRef("lv", vg=vg, gen=gen, lv=lv)
            label = lv_label(lv, vg.extent_bytes,
                             self.report.label(vg, lv) if self.report is not None else None)
            child = node.add(label, data=ref, expand=True) if kids else node.add_leaf(label, data=ref)
            self._lv_nodes[(vg.name, gen.seqno, name)] = child
            for k in kids:
                add(child, k)

        for name in roots:
            add(gnode, name)
        for name in lvs:  # a parent cycle would leave some unplaced
            add(gnode, name)

    def _mark_chosen(self) -> None:
        for (vgname, seqno), node in self._gen_nodes.items():
            ref = node.data
            label = gen_label(ref.gen)
            if self.chosen == (vgname, seqno):
                # not "▶": that is the tree's own "collapsed" arrow ("▼ ▶ seqno 61" misled)
                label = Text("● ", style="bold cyan") + label
            node.set_label(label)

    def choose(self, vg_name: str, seqno: int) -> None:
        """Mark a generation as the chosen one (and expand it)."""
        self.chosen = (vg_name, seqno)
        node = self._gen_nodes.get((vg_name, seqno))
        if node is not None:
            self._populate(node)
            node.expand()
        self._mark_chosen()

    def select_lv(self, vg_name: str, seqno: int, lv_name: str) -> bool:
        gnode = self._gen_nodes.get((vg_name, seqno))
        if gnode is not None:
            self._populate(gnode)
        node = self._lv_nodes.get((vg_name, seqno, lv_name))
        if node is None:
            return False
        parent = node.parent
        while parent is not None:
            parent.expand()
            parent = parent.parent
        # expanded nodes get their line numbers when the tree is next laid out
        self.call_after_refresh(self.move_cursor, node)
        return True

    def on_tree_node_selected(self, event: Tree.NodeSelected[NodeRef]) -> None:
        ref = event.node.data
        if ref is None:
            return
        if ref.kind == "generation":
            event.stop()
            self.post_message(VGTree.GenerationChosen(self, ref.vg, ref.gen))
        elif ref.kind == "lv":
            event.stop()
            self.post_message(VGTree.VdiChosen(self, ref.vg, ref.gen, ref.lv))
