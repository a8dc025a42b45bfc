"""`srsalvage reconstruct IMAGE [--json] [-o MAP.json] [--backup FILE.vg ...]`: extent maps of
every VDI, from metadata where it survives and from VHD structure where it does not.

Extensions (cli-contract.md allows them): `--vgcfg FILE.vg` writes an LVM metadata file for
`vgcfgrestore -f` with every completely rebuilt VDI, `--xe FILE.sh` the commands that restore
the VG and introduce the SR on a host, `--fix KEY:LE=PE` pins extents (hard constraints),
`--data-offset/--extent-size/--pe-count` state the extent grid when nothing on disk does.
"""

from __future__ import annotations

import argparse
import os
import json
import re
import sys

from app.commands._common import add_index_option, add_more_images, add_pv_offset
from core.escape import terminal_line
from core.spaces import compact_ranges

ORDER = 40


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="rebuild every VDI's extent map (metadata or VHD structure)",
                       description="Rebuild the extent map of every VDI: from LVM metadata where "
                                   "any generation survives, from the VHD structure inside the "
                                   "extents where none does. The image is only read.")
    p.add_argument("image", help="disk image file or block device (opened read-only)")
    add_more_images(p)
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("-o", "--output", metavar="MAP.json",
                   help="write the map document (what `export --map` reads)")
    p.add_argument("--backup", action="append", default=[], metavar="FILE.vg",
                   help="an LVM backup/archive file; its generations are hard constraints")
    p.add_argument("--vgcfg", metavar="FILE.vg",
                   help="write an LVM metadata file for `vgcfgrestore -f` (complete VDIs only)")
    p.add_argument("--xe", metavar="FILE.sh",
                   help="write the pvcreate/vgcfgrestore/xe sr-introduce/pbd commands")
    p.add_argument("--vg-name", metavar="NAME",
                   help="VG name for --vgcfg when no metadata names it (VG_XenStorage-<sr uuid>)")
    p.add_argument("--device", default="/dev/sdX", metavar="DEV",
                   help="the PV's device on the host, for --xe (default: /dev/sdX)")
    p.add_argument("--fix", action="append", default=[], metavar="KEY:LE=PE",
                   help="pin LE of VDI KEY to PE (repeatable); KEY as in the map")
    p.add_argument("--data-offset", type=int, metavar="BYTES", help="absolute offset of PE 0")
    p.add_argument("--extent-size", type=int, metavar="BYTES", help="extent size (default 4 MiB)")
    p.add_argument("--pe-count", type=int, metavar="N", help="number of PEs")
    add_pv_offset(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    from app.commands._caselog import add_case_options
    add_case_options(p)   # --fix edits are recorded in the case's audit log
    add_index_option(p)
    p.set_defaults(func=run)


def parse_fixes(items: list[str]) -> dict[str, dict[int, int]]:
    from core.errors import SrsalvageError

    fixed: dict[str, dict[int, int]] = {}
    for item in items:
        m = re.fullmatch(r"(.+):(\d+)=(\d+)", item.strip())
        if not m:
            raise SrsalvageError(f"--fix {item!r}: expected KEY:LE=PE")
        fixed.setdefault(m.group(1), {})[int(m.group(2))] = int(m.group(3))
    return fixed


def check_fixes(rec, fixed: dict[str, dict[int, int]]) -> None:
    """Every --fix must name a VDI of the result, an LE it has and a PE of the grid: a typo
    must not pass as a pinned extent (issue 11 item 8)."""
    from core.errors import SrsalvageError
    from core.escape import terminal_line
    for key, pins in fixed.items():
        v = rec.vdi(key)
        if v is None:
            keys = ", ".join(x.key for x in rec.vdis[:6])
            raise SrsalvageError(f"--fix {terminal_line(key)}: no VDI with that key "
                                 f"(keys: {keys or 'none'})")
        g = rec.grid
        # the most LEs the VDI can have: its VHD (virtual size + 1 % + 16 MiB of BAT, bitmaps
        # and headers; sm's inflated size is within that), never more than the disk has PEs
        # (the engine grows a VDI to hold a pinned LE, so its own count proves nothing)
        limit = g.pe_count if g is not None else None
        if v.virtual_bytes and g is not None and g.extent_bytes:
            most = -(-(v.virtual_bytes * 101 // 100 + (16 << 20)) // g.extent_bytes)
            limit = most if limit is None else min(limit, most)
        for le, pe in sorted(pins.items()):
            if limit is not None and le >= limit:
                raise SrsalvageError(f"--fix {key}:{le}={pe}: {key} has at most LEs 0-"
                                     f"{limit - 1}")
            if g is not None and pe >= g.pe_count:
                raise SrsalvageError(f"--fix {key}:{le}={pe}: the grid has PEs 0-"
                                     f"{g.pe_count - 1}")


def render_text(rec) -> str:
    out = []
    g = rec.grid
    if g is None:
        out.append("no extent grid: nothing says where the extents are")
    else:
        out.append(f"VG {g.vg_name or '(name unknown)'}: PE 0 at {g.data_offset} ({g.source}), "
                   f"{g.pe_count} extents of {g.extent_bytes} bytes")
    for v in rec.vdis:
        state = "complete" if v.complete else "INCOMPLETE"
        low = [le for le, p in v.extents if p.confidence < 0.75]
        out.append(f"\n{v.key}  [{v.status}, {state}] VHD {v.vhd_uuid or '-'} "
                   f"virtual {v.virtual_bytes if v.virtual_bytes is not None else '?'} bytes, "
                   f"{v.extents_needed} extents")
        runs = ", ".join(f"LE {le}-{le + n - 1} -> PE {pe}-{pe + n - 1}"
                         for le, pe, n in _runs(v.pes))
        out.append(f"  map: {runs or '(nothing placed)'}")
        if v.missing_les:
            out.append(f"  not placed: LEs {compact_ranges(v.missing_les)}")
        if low:
            out.append(f"  low confidence: LEs {compact_ranges(low)}")
        for le, pes in sorted(v.ambiguous.items()):
            out.append(f"  LE {le}: ambiguous between PEs {pes}")
    notable = [f for f in rec.findings if f.severity != "info" or f.kind == "orphan-vhd-extent"]
    if notable:
        out.append("\nfindings:")
        for f in notable[:200]:
            out.append(f"  [{f.severity}] {f.kind}: {terminal_line(f.message)}")
        if len(notable) > 200:
            out.append(f"  ... {len(notable) - 200} more (see --json)")
    return "\n".join(out)


def _runs(pes):
    from core.spaces import pes_to_map_runs
    return pes_to_map_runs(pes)


def run(args: argparse.Namespace) -> int:
    from app.commands._common import StderrProgress, info, print_json, print_text, warn
    from core.match.reconstruct import FixError, reconstruct
    from core.output import AtomicOutput, check_output_path
    from app.commands._common import image_paths, open_images

    outputs = [p for p in (args.output, args.vgcfg, args.xe) if p is not None]
    for path in outputs:
        check_output_path(path, image_paths(args), args.overwrite)
    fixed = parse_fixes(args.fix)
    progress = StderrProgress()
    with open_images(args) as ev:
        try:
            from app.commands._common import evidence_index
            idx = evidence_index(args, ev, args.image, progress)
            rec = reconstruct(ev, backups=args.backup, fixed=fixed, progress=progress,
                              extent_bytes=args.extent_size, data_offset=args.data_offset,
                              pe_count=args.pe_count, pv_offsets=args.pv_offset, index=idx)
        except FixError as exc:          # bad usage: one line, exit 2
            print(f"srsalvage: {exc}", file=sys.stderr)
            return 2
        finally:
            progress.close()
        unreadable = [list(r) for r in ev.unreadable]
    check_fixes(rec, fixed)
    from core.unreadable import annotate_reconstruction
    annotate_reconstruction(rec, unreadable)     # unreadable is never zero (issue 11 item 6)
    doc = rec.to_json()
    doc["image"]["path"] = args.image
    doc["unreadable"] = unreadable
    for key, les in mark_unreadable_extents(rec, doc, unreadable).items():
        warn(f"{key}: LE {les} sit on unreadable evidence (read as zeros): their placement "
             f"and content are not evidence; check them by hand")
    if fixed:
        from app.commands._caselog import record
        for key, les in fixed.items():
            record(args, args.image, "fix", vdi=key,
                   detail="; ".join(f"LE {le} = PE {pe}" for le, pe in sorted(les.items())),
                   fixes={str(le): pe for le, pe in sorted(les.items())},
                   map_output=os.path.abspath(args.output) if args.output else None)
    if args.output is not None:
        with AtomicOutput(args.output, [args.image], args.overwrite) as out:
            out.write((json.dumps(doc, indent=1) + "\n").encode())
        info(f"map written to {args.output}")
    if args.vgcfg is not None or args.xe is not None:
        from core.match.restore import format_restore_file, restore_metadata, xe_script
        plan = restore_metadata(rec, vg_name=args.vg_name, device=args.device)
        for key, why in plan.left_out:
            warn(f"{key} left out of the restore file: {why}")
        for note in plan.notes:
            warn(note)
        if args.vgcfg is not None:
            with AtomicOutput(args.vgcfg, [args.image], args.overwrite) as out:
                out.write(format_restore_file(plan).encode())
            info(f"restore file written to {args.vgcfg} ({len(plan.included)} LVs)")
        if args.xe is not None:
            with AtomicOutput(args.xe, [args.image], args.overwrite) as out:
                out.write(xe_script(plan, args.vgcfg or "restore.vg", args.device).encode())
            info(f"host commands written to {args.xe}")
    if args.json:
        print_json(doc)
    else:
        print_text(render_text(rec))
    return 0


def mark_unreadable_extents(rec, doc: dict, unreadable: list) -> dict[str, str]:
    """Each VDI's placed LEs whose PE holds unreadable bytes, as `unreadable_les` in its JSON
    entry: zeros read there are no evidence of a clear bitmap or of a free extent."""
    from core.spaces import compact_ranges

    named: dict[str, str] = {}
    if not unreadable or rec.grid is None:
        return named
    g = rec.grid
    for v, entry in zip(rec.vdis, doc["vdis"]):
        les = [le for le, pe in enumerate(v.pes) if pe is not None and any(
            a < g.data_offset + (pe + 1) * g.extent_bytes and b > g.data_offset + pe * g.extent_bytes
            for a, b in unreadable)]
        entry["unreadable_les"] = les
        if les:
            named[v.key] = compact_ranges(les)
    return named
