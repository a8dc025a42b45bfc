"""Put a rebuilt SR back: an LVM metadata file for `vgcfgrestore -f`, and the `xe` commands.

`restore_metadata(rec, ...)` turns a Reconstruction into a `core.lvm.model.VGMetadata`: one PV
(id from the surviving label or metadata, else a fresh one the technician recreates with
`pvcreate --uuid <id> --restorefile <file>`), one LV per VDI whose map is complete (incomplete
ones are left out and named: restoring an LV with holes would hand LVM extents that belong to
someone else), segments from the map runs. LVs get the names the SR gives them
(core.match.names); a VHD nothing names for sure is restored under its unique id, with a note
listing the VDIs it may be; a child whose parent locator would not find its parent in the file
is left out (sm's GC stops on a missing parent). No PE
goes to two LVs, no name to two. Every MGT VDI without its LV is named, with the reason.
`format_restore_file` writes it in the backup form with `core.lvm.textformat.format_vg_metadata`
(engineer "lvm"), which is what `vgcfgrestore -f` reads. `xe_script` gives the commands that
re-create the PV label, restore the VG and introduce the SR on a host. Nothing here touches the
evidence: the caller writes the text to a new file through core.output.
"""

from __future__ import annotations

import random
import shlex
import time
import uuid as _uuid
from dataclasses import dataclass, field

from core.errors import SrsalvageError
from core.escape import lvm_name_ok, shell_comment, terminal_line
from core.xen_names import VG_PREFIX, vg_sr_uuid

_ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def lvm_id(rng: random.Random | None = None) -> str:
    """A fresh LVM uuid: 32 characters of lvm2's alphabet, printed 6-4-4-4-4-4-6 (lib/uuid)."""
    rng = rng or random.SystemRandom()
    raw = "".join(rng.choice(_ID_CHARS) for _ in range(32))
    cuts = [0, 6, 10, 14, 18, 22, 26, 32]
    return "-".join(raw[a:b] for a, b in zip(cuts, cuts[1:]))


@dataclass
class RestorePlan:
    metadata: object                     # core.lvm.model.VGMetadata
    vg_name: str
    pv_id: str
    included: list[str] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)   # (key, why)
    notes: list[str] = field(default_factory=list)

    @property
    def sr_uuid(self) -> str | None:
        return vg_sr_uuid(self.vg_name)


def restore_metadata(rec, vg_name: str | None = None, vg_id: str | None = None,
                     pv_id: str | None = None, seqno: int = 1, device: str | None = None,
                     rng: random.Random | None = None) -> RestorePlan:
    from core.lvm.model import LogicalVolume, PVMetadata, Segment, VGMetadata
    from core.match.rebuilt import rebuilt_segments

    grid = rec.grid
    if grid is None:
        raise SrsalvageError("nothing to restore: no extent grid was found")
    if grid.pe_start is None or grid.pv_offset is None:
        raise SrsalvageError("the PV start is unknown (no label, no metadata): the restore file "
                             "needs pe_start; give the grid explicitly")
    notes: list[str] = []
    name = vg_name or grid.vg_name
    if name and not lvm_name_ok(name):
        # from the evidence (metadata, MGT uuid): lvm2 would refuse it, and written bare as the
        # restore file's section name a newline in it would inject lines (issue 11 item 1)
        notes.append(f"VG name {terminal_line(repr(name))} is not a valid LVM name; not used")
        name = None
    if not name:
        name = VG_PREFIX + str(_uuid.UUID(bytes=bytes((rng or random.SystemRandom()).getrandbits(8)
                                                        for _ in range(16)), version=4))
        notes.append(f"VG name unknown; using {name} (pass the SR's uuid to keep it)")
    pid = pv_id or grid.pv_id
    if not pid:
        pid = lvm_id(rng)
        notes.append(f"PV id unknown; using {pid} (recreate the label with pvcreate --uuid)")
    E = grid.extent_bytes
    dev_size = grid.dev_size or (grid.pe_start + grid.pe_count * E)
    pv = PVMetadata(name="pv0", id=pid, device=device or "/dev/unknown",
                    dev_size=dev_size // 512, pe_start=grid.pe_start // 512,
                    pe_count=grid.pe_count)
    plan = RestorePlan(None, name, pid, notes=notes)
    now = int(time.time())     # lvm2 refuses an LV with creation_host but no creation_time
    mgt = getattr(rec, "mgt", None)
    chosen = _restorable(rec.vdis, plan, getattr(rec, "findings", None) or [])
    lvs = {}
    used: dict[int, str] = {}
    for v, lv_name in chosen:
        pes = v.pes
        for p in pes:
            used[p] = lv_name
        segs = rebuilt_segments(pes)     # complete: linear segments only (core.match.rebuilt)
        status = list(v.lv_status) if v.lv_status else (
            ["READ", "VISIBLE"] if v.hidden else ["READ", "WRITE", "VISIBLE"])
        lvs[lv_name] = LogicalVolume(name=lv_name, id=lvm_id(rng), lvm_status=status,
                                     tags=list(v.lv_tags), creation_host="srsalvage",
                                     creation_time=now,
                                     segments=segs)
        plan.included.append(lv_name)
    if mgt is not None and "MGT" not in lvs and mgt["pe"] not in used:
        # sm's SR metadata volume, found by its header: restored where it is, so the SR keeps
        # its VDI names and descriptions
        lvs["MGT"] = LogicalVolume(name="MGT", id=lvm_id(rng),
                                   lvm_status=["READ", "WRITE", "VISIBLE"], tags=[],
                                   creation_host="srsalvage", creation_time=now,
                                   segments=[Segment(0, 1, "striped", 1, None,
                                                     [("pv0", mgt["pe"])])])
        plan.included.append("MGT")
    _unrestored_records(mgt, plan, getattr(rec, "findings", None) or [])
    plan.metadata = VGMetadata(name=name, id=vg_id or grid.vg_id or lvm_id(rng), seqno=seqno,
                               extent_size=E // 512, pvs=[pv], lvs=lvs)
    return plan


def _restorable(vdis: list, plan: RestorePlan, findings: list) -> list[tuple[object, str]]:
    """The VDIs the restore file can recreate, with their LV names; the others go to
    `plan.left_out` with the reason. Never one PE in two LVs, never two LVs of one name, and
    never a differencing VHD whose parent locator names an LV the file does not recreate: sm's
    GC stops on a VHD whose parent is missing (cleanup.py: "Parent VDI ... not found"), so
    such a child would cost the whole SR its garbage collection."""
    chosen: dict[str, tuple[object, str]] = {}
    used: dict[int, str] = {}
    maybe = {f.details.get("vhd_uuid"): f.details.get("candidates") for f in findings
             if f.kind == "lv-name-undecided"}
    for v in vdis:
        lv_name = v.lv or (f"VHD-{v.vhd_uuid}" if v.vhd_uuid else None)
        if lv_name is None:
            plan.left_out.append((v.key, "no name and no VHD unique id"))
            continue
        if not v.complete or v.missing_les or v.extents_needed == 0:
            why = f"incomplete: LEs {v.missing_les[:8]} not placed" if v.missing_les else \
                "its length (the footer extent) is unknown"
            plan.left_out.append((v.key, why + (f" (its LV would be {lv_name})"
                                                if lv_name != v.key else "")))
            continue
        clash = [p for p in v.pes if p in used]
        if clash:
            plan.left_out.append((v.key, f"PE {clash[0]} is also in {used[clash[0]]}"))
            continue
        if lv_name in chosen:
            plan.left_out.append((v.key, f"a second VDI named {lv_name}"))
            continue
        for p in v.pes:
            used[p] = lv_name
        chosen[lv_name] = (v, lv_name)
    # children whose parent is not recreated under the name their locator holds (repeated:
    # leaving a parent out leaves its children out)
    by_uuid = {v.vhd_uuid: name for name, (v, _) in chosen.items() if v.vhd_uuid}
    changed = True
    while changed:
        changed = False
        for name, (v, _) in list(chosen.items()):
            if not v.parent_uuid:
                continue
            has = by_uuid.get(v.parent_uuid)
            want = getattr(v, "parent_lv", None)
            if has is not None and has in chosen and (want is None or want == has):
                continue
            why = (f"its parent VHD {v.parent_uuid} is not restored"
                   + (f" as {want}, the LV its parent locator names" if want else "")
                   if has is None or has not in chosen else
                   f"its parent locator names {want}, but its parent VHD {v.parent_uuid} is "
                   f"{has} (a VHD the SR removed: sm renamed its parent since)")
            plan.left_out.append((v.key, why))
            del chosen[name]
            changed = True
    for v in vdis:
        name = v.lv or (f"VHD-{v.vhd_uuid}" if v.vhd_uuid else None)
        if name in chosen and chosen[name][0] is v and not v.lv:
            cands = maybe.get(v.vhd_uuid)
            plan.notes.append(
                f"{v.key}: nothing on the SR names its LV for sure "
                + (f"(it may be VDI {' or '.join(cands)} of the MGT volume)" if cands else
                   "(no child's parent locator, no MGT record to match)")
                + f": restored as {name}, after its VHD's unique id; rename it to VHD-<vdi uuid> "
                f"with lvrename once the VDI is known")
    return [chosen[n] for n in chosen]


def _unrestored_records(mgt: dict | None, plan: RestorePlan, findings: list) -> None:
    """A note for every live VDI the MGT volume records that gets no LV of its name."""
    if not mgt:
        return
    maybe: dict[str, list[str]] = {}
    for f in findings:
        if f.kind == "lv-name-undecided":
            for u in f.details.get("candidates", []):
                maybe.setdefault(u, []).append(f.details.get("vhd_uuid"))
    have = {n.lower() for n in plan.included}
    for r in mgt.get("vdi_records") or [{"uuid": u} for u in mgt.get("vdi_uuids", [])]:
        if f"vhd-{r['uuid']}" in have or f"lv-{r['uuid']}" in have:
            continue
        label = r.get("name_label")
        left = next((why for k, why in plan.left_out if r["uuid"] in k or r["uuid"] in why),
                    None)
        if left is None and r["uuid"] in maybe:
            left = ("its VHD is not named for sure: it may be VHD "
                    + " or ".join(maybe[r["uuid"]]))
        plan.notes.append(
            f"VDI {r['uuid']}" + (f" ({terminal_line(repr(label))})" if label else "")
            + f", recorded in the MGT volume, has no LV VHD-{r['uuid']} in the restore file: "
            + (left if left else "no rebuilt VHD is known to be it"))


def format_restore_file(plan: RestorePlan) -> str:
    """The backup-form text `vgcfgrestore -f` reads (engineer "lvm"'s writer)."""
    from core.lvm.writer import format_vg_metadata

    desc = "srsalvage reconstruct: extent maps rebuilt from VHD structure"
    if plan.left_out:
        desc += "; left out: " + ", ".join(k for k, _ in plan.left_out)
    return format_vg_metadata(plan.metadata, form="backup", description=desc,
                              creation_host="srsalvage")


def xe_script(plan: RestorePlan, restore_file: str = "restore.vg", device: str = "/dev/sdX",
              sr_uuid: str | None = None, name_label: str = "recovered SR") -> str:
    """Shell commands to restore the VG and introduce the SR on a XenServer/XCP-ng host."""
    sr = sr_uuid or plan.sr_uuid or "<sr-uuid>"
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# Written by srsalvage reconstruct. Review before running, on the host that has the disk.",
        "# " + shell_comment(f"VG {plan.vg_name}: {len(plan.included)} LVs restored"
        + (f"; left out: {', '.join(k for k, _ in plan.left_out)}" if plan.left_out else "")),
        "set -e",
        f"DEVICE={q(device)}   # the SR's PV (partition or disk) on this host",
        f"RESTORE={q(restore_file)}",
        "HOST=$(xe host-list hostname=$(hostname) --minimal)",
        "# pvcreate refuses a device that still carries the old, broken PV: after checking that",
        "# DEVICE is the right disk, clear its label sector first (this erases nothing else):",
        "#   dd if=/dev/zero of=\"$DEVICE\" bs=4096 count=1 conv=notrunc",
        f"pvcreate -ff -y --uuid {q(plan.pv_id)} --restorefile \"$RESTORE\" \"$DEVICE\"",
        f"vgcfgrestore -f \"$RESTORE\" {q(plan.vg_name)}",
        f"xe sr-introduce uuid={q(sr)} type=lvm name-label={q(name_label)} content-type=user "
        "shared=false",
        f"PBD=$(xe pbd-create sr-uuid={q(sr)} host-uuid=\"$HOST\" device-config:device=\"$DEVICE\")",
        "xe pbd-plug uuid=\"$PBD\"",
        f"xe sr-scan uuid={q(sr)}",
    ]
    for note in plan.notes:
        lines.insert(3, "# note: " + shell_comment(note))
    return "\n".join(lines) + "\n"
