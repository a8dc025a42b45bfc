"""`srsalvage export IMAGE --vdi KEY --format vhd|raw -o OUT`: one VDI out of the SR.

cli-contract.md `export`: the VHD as XenServer held it (footer rebuilt from the copy when
damaged, said on stderr) or the flat virtual disk (sparse, flattened through parents found in
the same SR). Size and sha256 on stdout (`--json`: one document). Exit 3 when the VDI's extents
were given to another LV by a newer generation (unless --force), when a map leaves out what the
VHD needs (the BAT points into an extent the map does not place or past the mapped LV, or the
footer at the mapped LV's end disagrees with the copy at offset 0 on the size; the virtual byte
ranges are named; unless --force), or when OUT exists (unless --overwrite) or is the evidence.
"""

from __future__ import annotations

import argparse
import os

from app.commands._caselog import add_case_options
from app.commands._common import add_more_images, add_vdi_selection

ORDER = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export one VDI as a VHD file or a raw disk image",
                       description="Export one VDI: the VHD bytes as they were in the LV "
                                   "(--format vhd) or the flat virtual disk (--format raw).")
    p.add_argument("image", metavar="IMAGE", help="disk image or device (opened read-only)")
    add_more_images(p)
    add_vdi_selection(p)
    p.add_argument("--format", required=True, choices=("vhd", "raw"))
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--force", action="store_true",
                   help="export even if a newer generation gave the VDI's extents to another LV "
                        "or the map leaves part of the VHD unplaced")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_case_options(p)
    from app.commands._common import add_index_option
    add_index_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import image_paths, info, open_images, print_json, warn
    from core.errors import SrsalvageError
    from core.output import check_output_path
    from core.provenance import describe_export, untrusted_lines
    from core.vdi import resolve_vdi

    evidence_paths = image_paths(args) + ([args.map] if args.map else []) + list(args.backup)
    check_output_path(args.output, evidence_paths, args.overwrite)  # refuse before any work
    with open_images(args) as ev:
        resolved = vol = None
        try:
            from app.commands._common import indexed_lvm_report
            resolved = resolve_vdi(ev, args.vdi, map_path=args.map, generation=args.generation,
                                   force=args.force, backups=args.backup, warn=warn,
                                   pv_offsets=args.pv_offset,
                                   report=indexed_lvm_report(args, ev, args.image))
            vol = resolved.volume
            guard = resolved.guard()   # taken extents: overwritten ones are never read
            result, img = _export(args, resolved, vol, guard, evidence_paths)
            describe_export(result, img, vol.space, guard)
        except SrsalvageError as exc:
            if args.json and ev.unreadable:  # damage is named whatever the exit code
                doc = {"error": str(exc), "vdi": vol.key if vol else args.vdi}
                doc.update(_unreadable_doc(ev, resolved))
                print_json(doc)
            raise
        unreadable_doc = _unreadable_doc(ev, resolved)
        unreadable = list(ev.unreadable)
    if unreadable:
        shown = ", ".join(f"{a}-{b}" for a, b in unreadable[:8])
        warn(f"{len(unreadable)} unreadable range(s) of {ev.path} read as zeros: {shown}"
             + (" ..." if len(unreadable) > 8 else ""))
    if unreadable_doc["unreadable_virtual"]:
        missing = unreadable_doc["unreadable_virtual"]
        shown = ", ".join(f"{a}-{b}" for a, b in missing[:8])
        warn(f"the export holds zeros for {len(missing)} unreadable range(s) of the virtual "
             f"disk: {shown}" + (" ..." if len(missing) > 8 else ""))
    for r in result.repairs:
        info(f"repaired in the export (evidence untouched): {r}")
    for u in result.unrepaired:
        warn(f"not repaired: {u}")
    for line in untrusted_lines(result.ranges):
        warn(f"untrusted: {line}")
    from app.commands._caselog import record
    from core.spaces import pes_to_map_runs
    record(args, args.image, "export", vdi=vol.key, detail=f"{args.format} -> {result.path}",
           path=os.path.abspath(result.path), format=args.format, bytes=result.bytes,
           sha256=result.sha256, forced=bool(args.force and vol.claimed_by),
           generation=resolved.generation, map=args.map or f"generation {resolved.generation}",
           map_runs=[list(r) for r in vol.map_runs] if vol.map_runs else [],
           untrusted=result.untrusted[:1000], taken_extents=result.taken,
           repairs=result.repairs, unrepaired=result.unrepaired)
    if args.json:
        doc = result.to_json()
        doc.update(vdi=vol.key, lv=vol.lv_name, generation=resolved.generation,
                   source=resolved.source, warnings=resolved.warnings,
                   unreadable=[list(r) for r in unreadable],
                   overwritten=resolved.overwritten)
        doc.update(unreadable_doc)
        print_json(doc)
    else:
        print(f"{result.bytes} {result.sha256} {result.path}")
    return 0


def _export(args: argparse.Namespace, resolved, vol, guard, evidence_paths: list[str]):
    """(export result, the VHD image exported or None for a raw LV); extents a newer LV
    overwrote are never read (core.provenance's guard)."""
    from app.commands._common import StderrProgress, warn
    from core.errors import SrsalvageError
    from core.provenance import guarded_space
    from core.vdi import refuse_unsafe_map
    from core.vhd.export import export_raw, export_vhd

    progress = StderrProgress()
    try:
        img = vol.image()
        if img is None:
            if args.format == "raw" and vol.kind == "raw":
                return export_raw(guarded_space(vol.space, guard), args.output, evidence_paths,
                                  args.overwrite, progress=progress), None
            raise SrsalvageError(f"{vol.key}: no VHD in this volume ({vol.image_error})")
        if args.format == "vhd":
            refuse_unsafe_map(resolved, [img], args.force, warn)
            return export_vhd(img, args.output, evidence_paths, args.overwrite,
                              progress=progress), img
        known = len(resolved.warnings)
        chain = resolved.chain()
        refuse_unsafe_map(resolved, chain.images, args.force, warn)
        for w in resolved.warnings[known:]:
            warn(w)
        for f in chain.findings:
            warn(f.message)
        return export_raw(chain, args.output, evidence_paths, args.overwrite,
                          progress=progress), img
    finally:
        progress.close()


def _unreadable_doc(ev, resolved) -> dict:
    """The evidence's unreadable ranges at the VDI's LV (`unreadable_lv`) and virtual-disk
    (`unreadable_virtual`) offsets; None where the VDI could not be resolved or read."""
    from core.evidence.layers import unreadable_in
    from core.errors import SrsalvageError

    doc: dict = {"unreadable": [list(r) for r in ev.unreadable],
                 "unreadable_lv": None, "unreadable_virtual": None}
    if resolved is None:
        return doc
    vol = resolved.volume
    doc["unreadable_lv"] = [list(r) for r in unreadable_in(vol.space)]
    known = len(resolved.warnings)  # the export already reported the chain's warnings
    try:
        img = vol.image()
        if img is None:
            virtual = vol.space if vol.kind == "raw" else None
        else:
            virtual = resolved.chain().virtual_space()
    except SrsalvageError:
        virtual = None
    del resolved.warnings[known:]
    if virtual is not None:
        doc["unreadable_virtual"] = [list(r) for r in unreadable_in(virtual)]
    return doc
