"""LV names for VDIs found by VHD structure alone, from what the SR still says.

Nothing in a VHD records its own LV name (`VHD-<vdi uuid>`, the name XenServer and the
children's parent locators expect); the footer's unique id is NOT the VDI uuid (vhd-util
create makes its own). Two things on the SR do name LVs:

* a differencing VHD's header parent name (and locators) hold its parent's device-mapper
  name (sm vhdutil.snapshot -> `vhd-util snapshot -p /dev/mapper/...`; libvhd
  vhd_initialize_header_parent_name keeps its basename; formats.md 4.5);
* the MGT volume lists the SR's VDIs (sm srmetadata.py: uuid, is_a_snapshot, snapshot_of,
  managed, ...), but not which VHD is which.

A locator is only as new as its VHD. xapi-project/sm drivers/cleanup.py renames LVs after
children were made: `_doCoalesceLeaf` unhides the parent, coalesces the leaf into it, renames
the leaf `OLD_<uuid>` and the PARENT to the leaf's name (`parent.rename(vdiUuid)`), then
deletes the old leaf; `LVHDVDI._snapshot` renames the leaf to the base copy's name. A live
child always names its parent's current LV (sm relinks children when it coalesces,
`_relinkSkip`), so a child naming its parent otherwise is a dead VHD (a coalesced leaf, a
deleted snapshot) whose stale bytes survive; and a visible parent that children name was
leaf-coalesced (sm hides every base copy): its LV now carries the leaf VDI's name.

`name_vdis(states, mgt, findings)` sets `lv_name` on the VDIs these say for sure and returns
{state index: how the name was found}; it names nothing on a guess (several readings that fit
the SR equally: a finding, no name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.escape import terminal_line
from core.findings import Finding
from core.match.anchors import split_dm_name
from core.xen_names import UUID_RE

# a VDI's LV name in a parent locator, whatever its case (core.xen_names: `VHD-` / `LV-`)
_LV_NAME = re.compile(rf"(VHD|LV)-({UUID_RE.pattern})", re.I)
MAX_MATCH_STEPS = 200000       # search steps for MGT records <-> VHDs (then: no MGT names)


def locator_lv(anchor) -> str | None:
    """The parent LV name a differencing VHD's header names (`VHD-<uuid>`), or None."""
    if anchor is None or not any(anchor.parent_uid) or not anchor.parent_name:
        return None
    split = split_dm_name(anchor.parent_name)
    m = _LV_NAME.fullmatch(split[1]) if split else None
    return f"{m.group(1).upper()}-{m.group(2).lower()}" if m else None


def _uuid_of(name: str) -> str:
    return name.split("-", 1)[1].lower()


@dataclass
class _Record:
    """One live VDI record of the MGT volume (sm srmetadata.py fields)."""

    uuid: str
    label: str
    managed: bool | None           # base copies are recorded managed 0 (sm _finishSnapshot)
    snapshot_of: str | None        # set for is_a_snapshot 1
    snapshot_time: int | None = None   # seconds since 2000-01-01 UTC (the VHD clock)


def _records(mgt: dict | None) -> list[_Record] | None:
    if not mgt or not mgt.get("vdi_uuids"):
        return None
    recs = mgt.get("vdi_records")
    if recs is None:          # an MGT summary without the records: uuids only
        return [_Record(u, "", None, None) for u in mgt["vdi_uuids"]]
    out = []
    for r in recs:
        managed = r.get("managed")
        snap = r.get("snapshot_of") if str(r.get("is_a_snapshot", "0")) == "1" else None
        out.append(_Record(r["uuid"], r.get("name_label") or "",
                           None if managed in (None, "") else str(managed) not in ("0", "false",
                                                                                 "False"),
                           (snap or "").lower() or None,
                           _vhd_clock(r.get("snapshot_time")) if snap else None))
    return out


def _vhd_clock(text: str | None) -> int | None:
    """xapi's datetime (`YYYYMMDDTHH:MM:SSZ`, UTC; LVHDVDI.update writes a snapshot's
    snapshot_time to the MGT) as seconds since 2000-01-01 UTC, the clock of VHD timestamps
    (libvhd vhd_time); None when absent or unreadable."""
    import datetime
    try:
        t = datetime.datetime.strptime(str(text).strip(), "%Y%m%dT%H:%M:%SZ")
    except ValueError:
        return None
    secs = (t - datetime.datetime(2000, 1, 1)).total_seconds()
    return int(secs) if secs > 0 else None


def name_vdis(states: list, mgt: dict | None, findings: list[Finding]) -> dict[int, str]:
    """Name the VDIs the SR names (see the module doc); {state index: "parent-locator" |
    "mgt"}."""
    records = _records(mgt)
    live = {r.uuid for r in records} if records is not None else None
    how: dict[int, str] = {}
    stale = _names_from_locators(states, live, how, findings)
    if records:
        _names_from_mgt(states, records, stale, how, findings)
    return how


def _names_from_locators(states: list, live: set[str] | None, how: dict[int, str],
                         findings: list[Finding]) -> set[int]:
    """Parents named by their children's locators; returns the children that name their parent
    otherwise than it is named now (dead VHDs, see the module doc)."""
    by_uid = {v.anchor.uid: v for v in states if v.anchor is not None}
    children: dict[bytes, list[tuple[object, str]]] = {}
    for child in states:
        name = locator_lv(child.anchor)
        if name is not None and child.anchor.parent_uid in by_uid:
            children.setdefault(child.anchor.parent_uid, []).append((child, name))
    stale: set[int] = set()
    for puid, kids in children.items():
        parent = by_uid[puid]
        current = parent.lv_name or _current_name(parent, kids, live, findings)
        if current is None:
            if not parent.anchor.hidden:
                # leaf-coalesced and renamed (_current_name): a leaf again, so every VHD that
                # names it as parent is dead (only a snapshot, which hides it again, gives a
                # leaf children)
                stale.update(child.index for child, _ in kids)
            continue
        if parent.lv_name is None:
            parent.lv_name = current
            how[parent.index] = "parent-locator"
            findings.append(Finding(
                "lv-name-from-parent-locator", None, "info",
                f"VHD {parent.anchor.uid_str} is LV {current}: the parent name in the header of "
                f"its child VHD {_newest(kids, current).anchor.uid_str}",
                {"vhd_uuid": parent.anchor.uid_str, "lv": current}))
        for child, name in kids:
            if name != current:
                stale.add(child.index)
                findings.append(Finding(
                    "lv-name-stale-locator", None, "info",
                    f"VHD {child.anchor.uid_str} names its parent {name}, but that VHD is LV "
                    f"{current} now: a VHD made before its parent was renamed (sm's leaf "
                    f"coalesce or snapshot), i.e. one the SR removed; its locator will not "
                    f"resolve after a restore",
                    {"vhd_uuid": child.anchor.uid_str, "lv": current, "child_says": name}))
    return stale


def _newest(kids: list, name: str):
    return max((c for c, n in kids if n == name), key=lambda c: c.anchor.timestamp)


def _current_name(parent, kids: list, live: set[str] | None,
                  findings: list[Finding]) -> str | None:
    """The name the parent's LV has now, among those its children's locators give."""
    names = sorted({n for _, n in kids})
    pid = parent.anchor.uid_str
    in_mgt = [n for n in names if _uuid_of(n) in live] if live is not None else []
    if len(in_mgt) == 1:
        return in_mgt[0]
    if len(in_mgt) > 1:
        names = in_mgt            # several live names: the newest child decides below
    elif not parent.anchor.hidden:
        # sm unhides a parent only to leaf-coalesce into it, then renames it to the leaf VDI's
        # name (cleanup.py _doCoalesceLeaf): what its children say is what it was
        findings.append(Finding(
            "lv-name-renamed", None, "info",
            f"VHD {pid} is visible and its children name it {', '.join(names)}"
            + (", which the MGT volume no longer lists" if live is not None else "")
            + ": sm leaf-coalesced a leaf into it and gave it the leaf VDI's name "
            "(cleanup.py _doCoalesceLeaf); not named from them",
            {"vhd_uuid": pid, "children_say": names}))
        return None
    if len(names) == 1:
        return names[0]
    # the newest child names the parent as it is now (older ones are dead: module doc)
    newest = max((c.anchor.timestamp, n) for c, n in kids if n in names)
    tied = {n for c, n in kids if n in names and c.anchor.timestamp == newest[0]}
    if len(tied) == 1:
        return newest[1]
    findings.append(Finding(
        "lv-name-conflict", None, "warning",
        f"VHD {pid}: its children name it {', '.join(names)} and nothing tells which is its "
        f"LV now; not named", {"vhd_uuid": pid, "children_say": names}))
    return None


def _ancestors(v, by_uid: dict) -> list[bytes] | None:
    """The unique ids up v's chain (parent first); None where a link is not on the SR."""
    out: list[bytes] = []
    a = v.anchor
    while any(a.parent_uid):
        if a.parent_uid in out:
            return None
        out.append(a.parent_uid)
        nxt = by_uid.get(a.parent_uid)
        if nxt is None:
            return None if len(out) == 1 else out
        a = nxt.anchor
    return out


def _names_from_mgt(states: list, records: list[_Record], stale: set[int],
                    how: dict[int, str], findings: list[Finding]) -> None:
    """The MGT's live VDIs that no LV is named after, matched to the unnamed VHDs: a record is
    a VHD's when every way of pairing all of them that fits what the SR says agrees."""
    named = {(v.lv_name or "").lower() for v in states}
    recs = [r for r in records if f"vhd-{r.uuid}" not in named and f"lv-{r.uuid}" not in named]
    cands = [v for v in states if v.lv_name is None and v.anchor is not None
             and v.anchor.plausible and v.index not in stale]
    if not recs or len(cands) < len(recs):
        return
    solutions = _pairings(states, recs, cands)
    if solutions is None:
        findings.append(Finding(
            "lv-names-unmatched", None, "warning",
            f"{len(recs)} VDIs of the MGT volume and {len(cands)} unnamed VHDs pair in too many "
            f"ways to tell which is which: not named", {"candidates": [r.uuid for r in recs]}))
        return
    if not solutions:
        return

    # sm's snapshot is an empty VHD (vhd-util snapshot) that nothing writes afterwards, while
    # the leaf it was taken from goes on taking the guest's writes: among pairings that fit,
    # those whose snapshots hold no block are the likelier
    def empty_snaps(sol: dict[str, object]) -> int:
        return sum(1 for r in recs if r.snapshot_of and not len(sol[r.uuid].anchor.blocks))

    best = max(map(empty_snaps, solutions))
    solutions = [s for s in solutions if empty_snaps(s) == best]
    _name_agreed(states, recs, cands, solutions, bool(best), how, findings)


def _pairings(states: list, recs: list[_Record], cands: list) -> list[dict] | None:
    """Every pairing of all of `recs` with distinct `cands` that fits what the SR says (record
    uuid -> state); None when there are too many ways to look at."""
    by_uid = {v.anchor.uid: v for v in states if v.anchor is not None}
    by_name = {v.lv_name.lower(): v for v in states if v.lv_name}
    ancestors = {v.index: _ancestors(v, by_uid) for v in cands}
    ancestors.update({v.index: _ancestors(v, by_uid) for v in by_name.values()
                      if v.anchor is not None})

    def fits(r: _Record, v) -> bool:
        # sm hides base copies and records them managed 0; every VDI a guest sees is managed
        return r.managed is None or r.managed != bool(v.anchor.hidden)

    def snapshot_ok(r: _Record, v, assign: dict[str, object]) -> bool | None:
        """A snapshot's VHD hangs off an ancestor of its VDI's VHD (sm snapshots a leaf by
        making it a base copy with two children, the leaf and the snapshot): True, False, or
        None when it cannot be told."""
        if not any(v.anchor.parent_uid):
            return False
        of = assign.get(r.snapshot_of) or by_name.get(f"vhd-{r.snapshot_of}")
        if of is None or of.anchor is None:
            return None
        up = ancestors.get(of.index)
        if up is None:
            return None
        return v.anchor.parent_uid in up

    def time_ok(r: _Record, v, assign: dict[str, object]) -> bool:
        """Snapshots taken in one order have VHDs made in that order: xapi's snapshot_time and
        the snapshot VHD's footer time (vhd-util snapshot, the same moment) both count UTC."""
        if r.snapshot_time is None:
            return True
        for o in recs:
            w = assign.get(o.uuid)
            if w is None or o is r or o.snapshot_time is None:
                continue
            if (r.snapshot_time - o.snapshot_time) * (v.anchor.timestamp - w.anchor.timestamp) < 0:
                return False
        return True

    # a VDI before its snapshots, so each snapshot is checked as soon as it is placed
    recs = sorted(recs, key=lambda r: r.snapshot_of is not None)
    solutions: list[dict[str, object]] = []
    steps = [0]
    first_only = _swaps(recs) > MAX_MATCH_STEPS

    def search(i: int, assign: dict[str, object], used: set[int]) -> bool:
        steps[0] += 1
        if steps[0] > MAX_MATCH_STEPS:
            return False
        if i == len(recs):
            solutions.append(dict(assign))
            # records that can swap places make every solution k! solutions: past the
            # bound, one solution says the enumeration would not end in time
            return not first_only
        r = recs[i]
        for v in cands:
            if v.index in used or not fits(r, v):
                continue
            assign[r.uuid] = v
            if r.snapshot_of and (snapshot_ok(r, v, assign) is False
                                  or not time_ok(r, v, assign)):
                del assign[r.uuid]
                continue
            used.add(v.index)
            ok = search(i + 1, assign, used)
            used.discard(v.index)
            del assign[r.uuid]
            if not ok:
                return False
        return True

    done = search(0, {}, set())
    if first_only:
        return None if solutions or not done and steps[0] > MAX_MATCH_STEPS else []
    return solutions if done else None


def _swaps(recs: list[_Record]) -> int:
    """A lower bound on the solutions per solution of the pairing search: records that nothing
    tells apart (neither snapshots nor snapshotted, no snapshot time, the same `managed`)
    swap places in any solution, k of them giving k! solutions. The search enumerates every
    solution, so when this passes MAX_MATCH_STEPS, one solution found means it would have run
    out of steps (exactly what it answers then: too many ways), found in a few steps instead
    of 200,000 (a tenth of `reconstruct` on an SR of ten alike VDIs)."""
    import math
    referenced = {r.snapshot_of for r in recs if r.snapshot_of}
    classes: dict[object, int] = {}
    for r in recs:
        if r.snapshot_of is None and r.snapshot_time is None and r.uuid not in referenced:
            classes[r.managed] = classes.get(r.managed, 0) + 1
    return math.prod(math.factorial(k) for k in classes.values())


def _name_agreed(states: list, recs: list[_Record], cands: list, solutions: list[dict],
                 empty_snaps: bool, how: dict[int, str], findings: list[Finding]) -> None:
    """Name the VHD every pairing gives a record; list, for each VHD left, the VDIs it may be
    (for the technician: never a guess)."""
    for r in recs:
        got = {id(s[r.uuid]) for s in solutions}
        if len(got) != 1:
            continue
        v = solutions[0][r.uuid]
        v.lv_name = f"VHD-{r.uuid}"
        how[v.index] = "mgt"
        why = ("the one live VDI of the MGT volume that no LV is named after, and the one "
               "visible VHD still unnamed") if len(recs) == 1 and len(cands) == 1 else (
            "every pairing of the MGT's unnamed VDIs with the unnamed VHDs that fits the SR "
            "(hidden base copies, snapshots next to their VDI's chain and in the order of "
            "their times"
            + (", snapshots empty" if empty_snaps else "") + ") gives it this one")
        findings.append(Finding(
            "lv-name-from-mgt", None, "info",
            f"VHD {v.anchor.uid_str} is LV {v.lv_name}"
            + (f" ({terminal_line(repr(r.label))})" if r.label else "") + f": {why}",
            {"vhd_uuid": v.anchor.uid_str, "lv": v.lv_name}))
    taken = {v.lv_name for v in states if v.lv_name}
    labels = {r.uuid: r.label for r in recs}
    for v in cands:
        if v.lv_name is not None:
            continue
        maybe = sorted({r.uuid for s in solutions for r in recs
                        if s[r.uuid] is v and f"VHD-{r.uuid}" not in taken})
        if not maybe:
            continue
        findings.append(Finding(
            "lv-name-undecided", None, "warning",
            f"VHD {v.anchor.uid_str} may be VDI "
            + " or ".join(u + (f" ({terminal_line(repr(labels[u]))})" if labels[u] else "")
                          for u in maybe)
            + " of the MGT volume; nothing on the SR tells which (VDIs of the same kind and "
            "place in their chains): not named",
            {"vhd_uuid": v.anchor.uid_str, "candidates": maybe}))
