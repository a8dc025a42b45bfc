"""`srsalvage check IMAGE --vdi KEY [--json]`: VHD validation findings for one VDI.

The catalogue of `vhd-util check` (core.vhd.checks): footer, header, BAT, batmap, bitmaps and
the parent chain (parents looked up by unique id among the SR's other VDIs). Findings never stop
each other; the command exits 0 when it could look, whatever it found.
"""

from __future__ import annotations

import argparse

from app.commands._common import add_vdi_selection

ORDER = 55


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="VHD validation findings for one VDI",
                       description="Check one VDI's VHD structures (footer, header, BAT, "
                                   "bitmaps, chain) and list the findings.")
    p.add_argument("image", metavar="IMAGE", help="disk image or device (opened read-only)")
    add_vdi_selection(p)
    p.add_argument("--force", action="store_true",
                   help="check even if a newer generation gave the VDI's extents to another LV")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import print_json, warn
    from core.source import Evidence
    from core.vdi import map_coverage_findings, resolve_vdi
    from core.vhd.checks import check_vhd
    from core.findings import Finding

    with Evidence(args.image) as ev:
        resolved = resolve_vdi(ev, args.vdi, map_path=args.map, generation=args.generation,
                               force=args.force, backups=args.backup, warn=warn)
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
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    if args.json:
        print_json({"image": {"path": args.image, "bytes": ev.size},
                    "vdi": {"key": vol.key, "lv": vol.lv_name, "generation": resolved.generation,
                            "source": resolved.source, "vhd": described},
                    "warnings": resolved.warnings,
                    "findings": [f.to_json() for f in findings], "counts": counts})
    else:
        print(f"{vol.key}: " + (f"{described['disk_type']} VHD {described['unique_id']}, "
                                f"{described['virtual_size']} bytes virtual, creator "
                                f"{described['creator']} {described['creator_version']}"
                                if described else "no VHD"))
        for f in findings:
            where = "" if f.offset is None else f" @{f.offset}"
            print(f"  {f.severity:<7} {f.kind}{where}: {f.message}")
        print(f"  {len(findings)} finding(s): " +
              (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"))
    return 0
