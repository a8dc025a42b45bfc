"""`srsalvage check IMAGE --vdi KEY [--json]`: VHD validation findings for one VDI.

The catalogue of `vhd-util check` (core.vhd.checks): footer, header, BAT, batmap, bitmaps and
the parent chain (parents looked up by unique id among the SR's other VDIs). Findings never stop
each other; the command exits 1 when it found errors (the findings are printed all the same), 0
when it found none.
"""

from __future__ import annotations

import argparse

from app.commands._common import add_more_images, add_vdi_selection

ORDER = 55


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="VHD validation findings for one VDI",
                       description="Check one VDI's VHD structures (footer, header, BAT, "
                                   "bitmaps, chain) and list the findings.")
    p.add_argument("image", metavar="IMAGE", help="disk image or device (opened read-only)")
    add_more_images(p)
    add_vdi_selection(p)
    p.add_argument("--force", action="store_true",
                   help="check even if a newer generation gave the VDI's extents to another LV")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    from app.commands._common import add_index_option
    add_index_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import open_images, print_json, print_text, warn
    from core.escape import terminal_line
    from core.vdi import resolve_vdi
    from core.vdi_coverage import map_coverage_findings
    from core.vhd.checks import check_vhd
    from core.findings import Finding

    from app.commands._common import indexed_lvm_report
    with open_images(args) as ev:
        resolved = resolve_vdi(ev, args.vdi, map_path=args.map, generation=args.generation,
                               force=args.force, backups=args.backup, warn=warn,
                               pv_offsets=args.pv_offset,
                               report=indexed_lvm_report(args, ev, args.image))
        vol = resolved.volume
        img = vol.image()
        if img is None and vol.kind == "raw":
            findings = [Finding("vdi-raw", None, "info",
                                "raw volume (LV-<uuid>): no VHD structures to check", space="lv")]
            described = None
        elif img is None:
            findings = [Finding("vhd-unreadable", None, "error", vol.image_error or "no VHD",
                                space="lv")]
            described = None
        else:
            # a map that leaves the VHD short is an error (issue 10: nothing lost in silence)
            findings = map_coverage_findings(vol, img) + check_vhd(img, resolved.find_parent)
            described = img.describe()
        from core.evidence.layers import unreadable_in
        bad = unreadable_in(vol.space)
        if bad:  # zeros nobody read: findings about those bytes may be artefacts
            shown = ", ".join(f"{a}-{b}" for a, b in bad[:8]) + (" ..." if len(bad) > 8 else "")
            findings.append(Finding("lv-unreadable", bad[0][0], "warning",
                                    f"{len(bad)} range(s) of the LV come from unreadable "
                                    f"evidence, read as zeros: {shown}",
                                    {"ranges": [list(r) for r in bad]}, space="lv"))
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    if args.json:
        print_json({"image": {"path": args.image, "bytes": ev.size},
                    "vdi": {"key": vol.key, "lv": vol.lv_name, "generation": resolved.generation,
                            "source": resolved.source, "vhd": described},
                    "warnings": resolved.warnings,
                    "unreadable": [list(r) for r in ev.unreadable],
                    "findings": [f.to_json() for f in findings], "counts": counts})
    else:
        print_text(f"{vol.key}: " + (f"{described['disk_type']} VHD {described['unique_id']}, "
                                f"{described['virtual_size']} bytes virtual, creator "
                                f"{described['creator']} {described['creator_version']}"
                                if described else "no VHD"))
        for f in findings:
            where = "" if f.offset is None else f" @{f.offset}"
            print_text(f"  {f.severity:<7} {f.kind}{where}: {terminal_line(f.message)}")
        print(f"  {len(findings)} finding(s): " +
              (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"))
    return 1 if counts.get("error") else 0
