"""`srsalvage lvm IMAGE [--json] [--backup FILE.vg ...]`: partitions, PVs, VGs and every
metadata generation found (metadata areas, stray copies on the disk, backup files)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from app.commands._common import add_index_option, add_more_images, add_pv_offset
from core.escape import terminal_line
from core.xen_names import vg_sr_uuid

if TYPE_CHECKING:   # the engine is imported when the command runs (a quick --help)
    from core.lvm.model import LogicalVolume, VolumeGroup
    from core.sr import SrReport

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lvm", help="partitions, PVs, VGs and every LVM metadata generation",
                       description="List partitions, LVM physical volumes, volume groups and "
                                   "every metadata generation found in the metadata areas, as "
                                   "stray copies elsewhere on the disk, and in backup files. "
                                   "The image is only read.")
    p.add_argument("image", help="disk image file or block device (opened read-only)")
    add_more_images(p)
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--backup", action="append", default=[], metavar="FILE.vg",
                   help="an LVM backup/archive file (vgcfgbackup, /etc/lvm/archive); repeatable")
    p.add_argument("--no-stray", action="store_true",
                   help="skip the whole-disk search for metadata text outside metadata areas")
    add_pv_offset(p)
    add_index_option(p)
    p.set_defaults(func=run)


def _when(ts: int | None) -> str:
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _runs(runs: list) -> str:
    parts = []
    for r in runs:
        le, pe, count = r[0], r[1], r[2]
        pv = f"{r[3]}:" if len(r) > 3 else ""
        parts.append(f"LE {le}-{le + count - 1} -> {pv}PE {pe}-{pe + count - 1}")
    return ", ".join(parts) or "(no extents)"


def _label(report: "SrReport", vg: "VolumeGroup", lv: "LogicalVolume") -> str:
    """` "name label"` of the VDI in `lv` (the SR's MGT volume), or nothing."""
    label = report.label(vg, lv)
    return f' "{terminal_line(label)}"' if label else ""


def render_text(report: "SrReport", image: str) -> str:
    out = [f"image {image}: {report.image_bytes} bytes"]
    if report.table.scheme:
        out.append(f"partition table: {report.table.scheme}")
    elif not report.partitions:
        out.append("partition table: none")
    for p in report.partitions:
        out.append(f"  partition {p.index} [{p.scheme}] at {p.offset}, {p.bytes} bytes, type {p.type}")
    if not report.volume_groups:
        out.append("no LVM volume group found")
    for vg in report.volume_groups:
        out.append("")
        out.append(terminal_line(f"VG {vg.name}  id {vg.id}"))
        sr_uuid = vg_sr_uuid(vg.name)
        if sr_uuid:
            out.append(f"  SR uuid {sr_uuid}")
        out.append(f"  extent size {vg.extent_bytes}, PE 0 at {vg.data_offset}")
        for pv in vg.pvs:
            where = "not on this image" if pv.offset is None else f"at {pv.offset}"
            label = "label found" if pv.label_found else "NO LABEL"
            out.append(f"  PV {pv.name} {pv.id} {where}, {label}, pe_start {pv.pe_start}, "
                       f"{pv.pe_count} extents")
            for how in pv.inferred_by:
                out.append(f"      {how}")
        cur = vg.current.seqno if vg.current else None
        out.append(f"  {len(vg.generations)} generation(s); LVM would use: "
                   f"{cur if cur is not None else 'none (no valid committed slot)'}")
        for g in vg.generations:
            flags = []
            if g.current:
                flags.append("CURRENT")
            if not g.crc_ok:
                flags.append("bad checksum" if not g.partial else "partial")
            places = ", ".join(f"{c.source}@{c.offset}" + ("(wrapped)" if c.wrapped else "")
                               + ("(partial)" if c.partial else "") for c in g.copies[:4])
            if len(g.copies) > 4:
                places += f", +{len(g.copies) - 4} more"
            out.append(f"  seqno {g.seqno:>5} {' '.join(flags):<14} {_when(g.creation_time)}  "
                       f"{places}")
            if g.description:
                out.append(f"        {terminal_line(g.description[:110])}")
            if g.note:
                out.append(f"        note: {terminal_line(g.note)}")
            if g is vg.generations[0] or g.current:
                multi = len(vg.pvs) > 1
                for lv in g.lvs.values():
                    label = _label(report, vg, lv)
                    runs = lv.map_runs_pv() if multi else lv.map_runs
                    out.append(f"        {terminal_line(lv.name)}{label}: {_runs(runs)}")
            else:
                for lv in g.lvs.values():
                    if lv.status == "deleted":
                        claim = (f", {len(lv.claimed_by)} PE(s) now used by others"
                                 if lv.claimed_by else "")
                        label = _label(report, vg, lv)
                        out.append(f"        deleted since: {terminal_line(lv.name)}{label}: "
                                   f"{_runs(lv.map_runs)}{claim}")
    unreadable = report.unreadable
    if unreadable:      # unreadable is never zero (issue 11 item 6)
        from core.unreadable import ranges_text
        out.append("")
        out.append(f"UNREADABLE: {len(unreadable)} range(s) of the image could not be read and "
                   f"read as zeros: {ranges_text(unreadable)}")
    if report.findings:
        out.append("")
        out.append("findings:")
        for f in report.findings:
            where = "" if f.offset is None else f" @{f.offset}"
            out.append(f"  [{f.severity}] {f.kind}{where}: {terminal_line(f.message)}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import StderrProgress, image_paths, open_images, print_json, print_text
    from app.commands._common import evidence_index
    from core.sr import analyse_sr

    progress = StderrProgress()
    with open_images(args) as ev:
        try:
            idx = evidence_index(args, ev, args.image, progress)
            report = analyse_sr(ev, backups=args.backup, progress=progress,
                                search_stray=not args.no_stray, pv_offsets=args.pv_offset,
                                hits=None if idx is None else idx.disk_hits(not args.no_stray))
        finally:
            progress.close()
        layers = unreadable_layers(ev, report)
        members = getattr(ev, "members", None)
        if args.json:
            doc = report.to_json(args.image)
            doc.update(layers)
            if members:
                add_image_places(doc, ev)
            print_json(doc)
        else:
            print_text(render_text(report, ev.path))
            if members:
                for start, member in members:
                    print(f"image {member.path}: {member.size} bytes, at {start} in the "
                          f"offsets above")
            for row in layers["unreadable_pv"]:
                print(f"unreadable in PV {row['vg']}/{row['pv']} (PV bytes): {row['ranges']}")
            for row in layers["unreadable_lv"]:
                print(f"unreadable in LV {row['vg']}/{row['lv']} (seqno {row['seqno']}, "
                      f"LV bytes): {row['ranges']}")
    return 0


def add_image_places(doc: dict, ev) -> None:
    """Several images: which image (and where in it) each PV and partition lies."""
    doc["images"] = [{"path": m.path, "bytes": m.size, "offset": start}
                     for start, m in ev.members]
    doc["image"] = {"path": ev.paths[0], "bytes": ev.size}
    for part in doc.get("partitions", []):
        where = ev.locate(part["offset"])
        if where is not None:
            part["image"], part["image_offset"] = where
    for vg in doc.get("volume_groups", []):
        for pv in vg.get("pvs", []):
            where = None if pv.get("offset") is None else ev.locate(pv["offset"])
            if where is not None:
                pv["image"], pv["image_offset"] = where


def unreadable_layers(ev, report) -> dict:
    """The evidence's unreadable ranges at PV offsets and at the LV offsets of each VG's
    newest generation (only the PVs and LVs they touch)."""
    from core.errors import SrsalvageError
    from core.evidence.layers import unreadable_in
    from core.vdi import lv_space

    doc: dict = {"unreadable_pv": [], "unreadable_lv": []}
    if not ev.unreadable:
        return doc
    for vg in report.volume_groups:
        for pv in vg.pvs:
            if pv.offset is None:
                continue
            end = pv.offset + (pv.device_size or ev.size - pv.offset)
            ranges = [[a - pv.offset, b - pv.offset] for a, b in ev.unreadable_in(pv.offset, end)]
            if ranges:
                doc["unreadable_pv"].append({"vg": vg.name, "pv": pv.name, "ranges": ranges})
        if not vg.generations:
            continue
        gen = vg.generations[0]
        for lv in gen.lvs.values():
            try:
                ranges = unreadable_in(lv_space(ev, vg, gen, lv))
            except SrsalvageError:
                continue
            if ranges:
                doc["unreadable_lv"].append({"vg": vg.name, "seqno": gen.seqno, "lv": lv.name,
                                             "ranges": [list(r) for r in ranges]})
    return doc
