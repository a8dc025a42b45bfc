"""Reconstruction precision and recall over many real-lvm2 layouts (root, lvm2, qemu-img).

Builds the "6 VDIs grown in 4 turns" SR of tests/test_reconstruct_lvm.py for every seed (real
`pvcreate`/`vgcreate`/`lvcreate`/`lvextend` on a loop device, LVHD VHDs and one real qemu-img
VHD written where `lvs --segments` puts their extents, the metadata area zeroed), rebuilds it
with core.match.reconstruct, and scores every placement against lvm2's own maps:
precision = placed on the right PE / placed, recall = extents holding VHD data (some byte of
the VHD there is not zero) placed right / all of them, and the placements with confidence
>= 0.75 that are wrong (there should be none). `--stale`: the extents held random data
before (reused extents; inflated LVs' gaps keep it).

    sudo .venv/bin/python bench/reconstruct_layouts.py [--seeds 1-60] [--stale]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def seeds_of(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1-60", help="seeds, e.g. 1-60 or 1,5,9 (default 1-60)")
    ap.add_argument("--stale", action="store_true", help="extents reused: stale data first")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("lvm") or not shutil.which("qemu-img"):
        print("needs root, lvm2 and qemu-img (loop devices)", file=sys.stderr)
        return 1
    import test_reconstruct_lvm as layouts
    from core.match.reconstruct import reconstruct
    from core.source import Evidence

    placed = correct = found = needed = 0
    confident_wrong: list[tuple] = []
    print(f"{'seed':>4} {'placed':>6} {'right':>6} {'found':>9} {'precision':>9} {'recall':>7}  missed")
    for seed in seeds_of(args.seeds):
        work = Path(tempfile.mkdtemp(prefix="srsalvage-layout-"))
        try:
            img, truth = layouts.build_sr_turns(work, seed, stale=args.stale)
            rec = reconstruct(Evidence(str(img)))
            res = layouts.score(rec, truth)
            for v in rec.vdis:
                t = next((t for n, t in truth.items() if not n.startswith("_") and "uid" in t
                          and layouts._k(t["uid"]) == v.vhd_uuid), None)
                for le, p in v.extents:
                    if p.confidence >= 0.75 and (t is None or le >= len(t["pes"])
                                                 or t["pes"][le] != p.pe):
                        confident_wrong.append((seed, v.key, le, p.pe, p.confidence))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        placed += res["placed"]
        correct += res["correct"]
        found += res["found"]
        needed += res["needed"]
        missed = {k: m for k, (_, _, m) in res["per"].items() if m}
        print(f"{seed:>4} {res['placed']:>6} {res['correct']:>6} "
              f"{res['found']:>4}/{res['needed']:<4} {res['precision']:>9.3f} "
              f"{res['recall']:>7.3f}  {missed or ''}", flush=True)
    print(f"all: precision {correct / max(1, placed):.4f} ({correct}/{placed}), recall "
          f"{found / max(1, needed):.4f} ({found}/{needed}), wrong with confidence >= 0.75: "
          f"{len(confident_wrong)} {confident_wrong or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
