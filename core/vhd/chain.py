"""Differencing chains: child -> parent by unique id, loop-safe, flattened into one space.

LV names do not link VHDs (after a snapshot or a leaf-coalesce the LV-name uuid differs from the
footer unique id; formats.md 3.2): a child's header parent id is compared with every candidate's
footer unique id (raw 16 bytes, so Windows' GUID byte order needs no conversion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from core.findings import Finding
from core.spaces import ByteSpace
from core.structs import vhd as S
from core.structs.vhd import format_uuid
from core.vhd.reader import VhdImage

MAX_CHAIN = 64  # sm limits chains to 30 (vhdutil.MAX_CHAIN_SIZE); bounded well above that


@dataclass
class Chain:
    """leaf first; `raw_parent` is a raw volume under the last VHD (blktap zero parent id)."""

    images: list[VhdImage]
    findings: list[Finding] = field(default_factory=list)
    raw_parent: ByteSpace | None = None

    @property
    def complete(self) -> bool:
        return not any(f.kind in ("vhd-parent-missing", "vhd-parent-loop", "vhd-parent-depth")
                       for f in self.findings)

    def virtual_space(self) -> ByteSpace:
        """The leaf's virtual disk with every sector resolved down the chain."""
        below: ByteSpace | None = self.raw_parent
        for img in reversed(self.images):
            below = img.virtual_space(below)
        assert below is not None
        return below


def index_by_unique_id(images: Iterable[VhdImage]) -> dict[bytes, VhdImage]:
    return {img.unique_id: img for img in images}


def resolve_chain(leaf: VhdImage, find_parent: Callable[[bytes], VhdImage | None],
                  find_raw_parent: Callable[[VhdImage], ByteSpace | None] | None = None
                  ) -> Chain:
    """Follow parents from `leaf`; stop with a finding at a missing parent or a loop."""
    chain = Chain([leaf])
    seen = {leaf.unique_id}
    cur = leaf
    while cur.disk_type == S.HD_TYPE_DIFF and cur.header is not None:
        pid = cur.parent_unique_id
        if not any(pid):
            raw = find_raw_parent(cur) if find_raw_parent is not None else None
            if raw is None:
                chain.findings.append(Finding(
                    "vhd-parent-missing", cur.header_offset + 40, "error",
                    f"raw parent of {format_uuid(cur.unique_id)} ({cur.parent_name or 'no name'}) "
                    f"not found", {"parent_name": cur.parent_name}, space="vhd"))
            chain.raw_parent = raw
            break
        parent = find_parent(pid)
        if parent is None:
            chain.findings.append(Finding(
                "vhd-parent-missing", cur.header_offset + 40, "error",
                f"parent {format_uuid(pid)} ({cur.parent_name or 'no name'}) of "
                f"{format_uuid(cur.unique_id)} not found; its sectors read as zeros",
                {"parent_unique_id": format_uuid(pid), "parent_name": cur.parent_name,
                 "locators": [l.text for l in cur.locators if l.text]}, space="vhd"))
            break
        if parent.unique_id in seen:
            chain.findings.append(Finding(
                "vhd-parent-loop", cur.header_offset + 40, "error",
                f"parent chain of {format_uuid(leaf.unique_id)} loops back to "
                f"{format_uuid(parent.unique_id)}", {"parent_unique_id": format_uuid(pid)},
                space="vhd"))
            break
        if len(chain.images) >= MAX_CHAIN:
            chain.findings.append(Finding("vhd-parent-depth", None, "error",
                                          f"parent chain deeper than {MAX_CHAIN}", space="vhd"))
            break
        seen.add(parent.unique_id)
        chain.images.append(parent)
        cur = parent
    return chain
