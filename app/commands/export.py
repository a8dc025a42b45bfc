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

from app.commands._common import add_vdi_selection

ORDER = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export one VDI as a VHD file or a raw disk image",
                       description="Export one VDI: the VHD bytes as they were in the LV "
                                   "(--format vhd) or the flat virtual disk (--format raw).")
    p.add_argument("image", metavar="IMAGE", help="disk image or device (opened read-only)")
    add_vdi_selection(p)
    p.add_argument("--format", required=True, choices=("vhd", "raw"))
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--force", action="store_true",
                   help="export even if a newer generation gave the VDI's extents to another LV "
                        "or the map leaves part of the VHD unplaced")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import StderrProgress, info, print_json, warn
    from core.errors import SrsalvageError
    from core.output import check_output_path
    from core.source import Evidence
    from core.vdi import refuse_unsafe_map, resolve_vdi
    from core.vhd.export import export_raw, export_vhd

    evidence_paths = [args.image] + ([args.map] if args.map else []) + list(args.backup)
    check_output_path(args.output, evidence_paths, args.overwrite)  # refuse before any work
    with Evidence(args.image) as ev:
        resolved = resolve_vdi(ev, args.vdi, map_path=args.map, generation=args.generation,
                               force=args.force, backups=args.backup, warn=warn)
        vol = resolved.volume
        progress = StderrProgress()
        try:
            img = vol.image()
            if img is None:
                if args.format == "raw" and vol.kind == "raw":
                    result = export_raw(vol.space, args.output, evidence_paths, args.overwrite,
                                        progress=progress)
                else:
                    raise SrsalvageError(f"{vol.key}: no VHD in this volume ({vol.image_error})")
            elif args.format == "vhd":
                refuse_unsafe_map(resolved, [img], args.force, warn)
                result = export_vhd(img, args.output, evidence_paths, args.overwrite,
                                    progress=progress)
            else:
                known = len(resolved.warnings)
                chain = resolved.chain()
                refuse_unsafe_map(resolved, chain.images, args.force, warn)
                for w in resolved.warnings[known:]:
                    warn(w)
                for f in chain.findings:
                    warn(f.message)
                result = export_raw(chain, args.output, evidence_paths, args.overwrite,
                                    progress=progress)
        finally:
            progress.close()
        unreadable = list(ev.unreadable)
    if unreadable:
        shown = ", ".join(f"{a}-{b}" for a, b in unreadable[:8])
        warn(f"{len(unreadable)} unreadable range(s) of {args.image} read as zeros: {shown}"
             + (" ..." if len(unreadable) > 8 else ""))
    for r in result.repairs:
        info(f"repaired in the export (evidence untouched): {r}")
    for u in result.unrepaired:
        warn(f"not repaired: {u}")
    if args.json:
        doc = result.to_json()
        doc.update(vdi=vol.key, lv=vol.lv_name, generation=resolved.generation,
                   source=resolved.source, warnings=resolved.warnings,
                   unreadable=[list(r) for r in unreadable])
        print_json(doc)
    else:
        print(f"{result.bytes} {result.sha256} {result.path}")
    return 0
