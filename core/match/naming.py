"""Names for VDIs the reconstruction found by VHD structure alone: from the parent names in
their children's headers and from the MGT volume's list of live VDIs.
Split out of core/match/reconstruct.py unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from core.findings import Finding
from core.match.anchors import split_dm_name
from core.match.assign import VdiState

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LV_NAME = re.compile(r"(VHD|LV)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.I)


def _name_vdis(states: list[VdiState], mgt: dict | None, findings: list[Finding]
               ) -> dict[int, str]:
    """LV names for VDIs found by structure alone, from what the SR still says; returns
    {state index: how the name was found}.

    * a differencing VHD's header parent name (and locators) hold the parent's device-mapper
      name (sm vhdutil.snapshot -> vhd-util snapshot -p /dev/mapper/...; libvhd
      vhd_initialize_header_parent_name takes its basename, formats.md 4.5): the parent
      VHD (unique id = the child's parent id) is the LV `VHD-<vdi uuid>` named there, which is
      what the children's locators must find again after a restore;
    * the MGT volume lists the SR's live VDI uuids: where exactly one visible VHD is still
      unnamed and exactly one live MGT uuid is not yet an LV's name, they are the same VDI.
    The footer's unique id is NOT the VDI uuid (vhd-util create makes its own), so no name is
    made up from it here."""
    by_uid = {v.anchor.uid: v for v in states if v.anchor is not None}
    how: dict[int, str] = {}
    for child in states:
        a = child.anchor
        if a is None or not any(a.parent_uid):
            continue
        parent = by_uid.get(a.parent_uid)
        split = split_dm_name(a.parent_name) if a.parent_name else None
        m = _LV_NAME.fullmatch(split[1]) if split else None
        if parent is None or m is None:
            continue
        name = f"{m.group(1).upper()}-{m.group(2).lower()}"
        if parent.lv_name is None:
            parent.lv_name = name
            how[parent.index] = "parent-locator"
            findings.append(Finding(
                "lv-name-from-parent-locator", None, "info",
                f"VHD {parent.anchor.uid_str} is LV {name}: the parent name in the header of "
                f"its child VHD {a.uid_str}", {"vhd_uuid": parent.anchor.uid_str, "lv": name}))
        elif parent.lv_name != name:
            findings.append(Finding(
                "lv-name-conflict", None, "warning",
                f"VHD {parent.anchor.uid_str} is LV {parent.lv_name}, but its child "
                f"{a.uid_str} names its parent {name}: the child's locator will not resolve "
                f"after a restore", {"vhd_uuid": parent.anchor.uid_str, "lv": parent.lv_name,
                                     "child_says": name}))
    if mgt and mgt.get("vdi_uuids"):
        named = {(v.lv_name or "").lower() for v in states}
        free_uuids = [u for u in mgt["vdi_uuids"] if f"vhd-{u}" not in named
                      and f"lv-{u}" not in named]
        unnamed = [v for v in states if v.lv_name is None and v.anchor is not None
                   and v.anchor.plausible and not v.anchor.hidden]
        if len(free_uuids) == 1 and len(unnamed) == 1:
            v = unnamed[0]
            v.lv_name = f"VHD-{free_uuids[0]}"
            how[v.index] = "mgt"
            findings.append(Finding(
                "lv-name-from-mgt", None, "info",
                f"VHD {v.anchor.uid_str} is LV {v.lv_name}: the one live VDI of the MGT volume "
                f"that no LV is named after, and the one visible VHD still unnamed",
                {"vhd_uuid": v.anchor.uid_str, "lv": v.lv_name}))
    return how


def _find_mgt(ev, feats, D: int, E: int, findings: list[Finding]) -> dict[str, Any] | None:
    """The first PE that starts with sm's `XSSM:` header: the MGT volume (4 MiB, one extent of
    4 MiB), parsed for the SR uuid and its VDI slots."""
    from core.xen import MGT_BYTES, parse_mgt
    cand = np.nonzero(feats.head_xssm)[0] if feats.head_xssm is not None else []
    if not len(cand) or E < MGT_BYTES:
        return None
    pe = int(cand[0])
    content = parse_mgt(ev.read(D + pe * E, MGT_BYTES), D + pe * E)
    findings.extend(content.findings)
    if not content.header_ok:
        return None
    if len(cand) > 1:
        findings.append(Finding("mgt-several", D + int(cand[1]) * E, "warning",
                                f"{len(cand)} PEs start with an MGT header; PE {pe} taken, the "
                                f"others are stale copies", {"pes": [int(c) for c in cand[:16]]}))
    live = [v for v in content.vdis if not v.deleted]
    return {"pe": pe, "sr_uuid": content.sr_uuid, "sr_name_label": content.sr_name_label,
            "allocation": content.allocation, "vdi_slots": len(content.vdis),
            "live_vdis": len(live),
            "vdi_uuids": [v.uuid.lower() for v in live if v.uuid and _UUID.fullmatch(v.uuid.lower())]}
