"""Benchmark: the one-pass signature scan against `cat IMAGE > /dev/null` (target: <= 3x).

Builds (or takes with --image) an image of realistic non-zero content (random blocks with a
share of log-like text) with real structures sprinkled over it (VHD footers/headers, LVM labels
and mda headers, GPT headers), warms the page cache, then times `cat` and the scan side by side
in this process (best of N) and prints the ratio. Also prints `grep -F` on the same file as a
second reference. Default size 4 GiB (--size to shrink; the built image is deleted afterwards
unless --keep).

    .venv/bin/python bench/scan.py [--size 4G] [--image IMG] [--repeat 3] [--kinds K,...]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import bench_image, command, parse_size, side_by_side  # noqa: E402


def sprinkle_structures(path: str, count: int, seed: int = 1) -> int:
    """Write `count` real structures at random sector-aligned places; returns how many."""
    from core.structs import vhd as SV

    rng = np.random.default_rng(seed)
    size = os.path.getsize(path)
    footer = SV.build_footer(cookie=SV.HD_COOKIE, features=SV.HD_RESERVED,
                             ff_version=SV.HD_FF_VERSION, data_offset=512, timestamp=0,
                             crtr_app=b"tap\0", crtr_ver=0x00010003, crtr_os=0,
                             orig_size=1 << 30, curr_size=1 << 30, geometry=0, type=3,
                             uuid=bytes(range(16)), saved=0, hidden=0)
    label = bytearray(512)
    label[0:8], label[24:32] = b"LABELONE", b"LVM2 001"
    mda = bytearray(512)
    mda[4:20] = b" LVM2 x[5A%r0N*>"
    gpt = bytearray(512)
    gpt[0:8] = b"EFI PART"
    samples = [footer, bytes(label), bytes(mda), bytes(gpt)]
    with open(path, "r+b") as f:
        for i, off in enumerate(rng.integers(0, size // 512, count).tolist()):
            f.seek(off * 512)
            f.write(samples[i % len(samples)])
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4G", help="image size to build (default 4G)")
    ap.add_argument("--image", help="use this image instead of building one")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    ap.add_argument("--kinds", help="kinds to scan (default: the default kinds)")
    ap.add_argument("--keep", action="store_true", help="keep the built image")
    ap.add_argument("--window", default=None, help="scan window (default: the scan's own)")
    args = ap.parse_args(argv)

    from core.scan import scan
    from core.source import Evidence

    with bench_image(args.image, args.size, "srsalvage-bench-scan-", lambda p: sprinkle_structures(p, 400),
                     keep=args.keep) as path:
        kinds = args.kinds.split(",") if args.kinds else None
        ev = Evidence(path)
        result = {}
        window = {"window": parse_size(args.window)} if args.window else {}

        def run_scan():
            result["r"] = scan(ev, kinds=kinds, **window)

        cmp = side_by_side("srsalvage scan", run_scan, "cat IMAGE >/dev/null",
                           command(["cat", path]), repeat=args.repeat)
        r = result["r"]
        print(f"image {ev.size} bytes; kinds {', '.join(r.kinds)}")
        print(f"found {sum(r.counts.values())} structures: {dict(sorted(r.counts.items()))}")
        print(cmp.line())
        grep = side_by_side("srsalvage scan", run_scan, "grep -acF conectix IMAGE",
                            command(["grep", "-acF", "conectix", path], to_pipe=True),
                            repeat=args.repeat)
        print(grep.line())
        if not args.kinds:   # where the time goes: structure kinds vs carving signatures
            from core.scan import resolve_kinds

            groups: dict[str, list[str]] = {}
            for k in resolve_kinds(None):
                groups.setdefault(k.group, []).append(k.name)
            for group, names in sorted(groups.items()):
                part = side_by_side(f"scan {group} kinds only", lambda n=names: scan(ev, kinds=n),
                                    "cat", command(["cat", path]), repeat=args.repeat)
                print(f"  {group} kinds ({', '.join(names)}): {part.ratio:.2f}x wall, "
                      f"{part.cpu_ratio:.2f}x cpu")
        print(f"RATIO scan/cat = {cmp.ratio:.2f}x wall, {cmp.cpu_ratio:.2f}x cpu (target <= 3x)")
        ev.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
