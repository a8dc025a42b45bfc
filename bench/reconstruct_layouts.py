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

`--xs KINDS` (comma list or `all`: thick, thin, resized, snapshots, reused, label-gone) runs the
XenServer-like builder instead (tests/xsbuilder: sm's life cycle over real lvm2, VHDs written
as libvhd/tapdisk on LVM write them, guest disks made by mkfs/debugfs/ntfscp, every disk with
a previous life, metadata area zeroed). Per seed it runs the command line a technician would:
`srsalvage reconstruct IMAGE -o map.json`, then `srsalvage export IMAGE --map map.json --vdi
KEY --format raw` for every VDI, and prints per kind: precision (right/placed; a removed or
older VHD's placement is right on the PE it had), recall over the live VHDs' extents holding
non-zero VHD data, placements with confidence >= 0.5 that are wrong, and the exports: equal to
the guest's disk / refused (exit 3) / WRONG (exit 0 with other bytes: the worst outcome) /
failed / absent from the map.

    sudo .venv/bin/python bench/reconstruct_layouts.py --xs all --seeds 1-30 [--jobs 2]
        [--report xs.json] [--keep DIR] [--cache DIR]
    .venv/bin/python bench/reconstruct_layouts.py --summary xs.json [more.json ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
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


def xs_seed(job: tuple[str, int, str | None]) -> dict:
    """Build one XenServer-like SR, reconstruct and export it through the CLI; the scores."""
    import json
    import time

    from xsbuilder import build
    from xsbuilder import truth as T

    kind, seed, keep, cache = job
    row: dict = {"kind": kind, "seed": seed}
    built = Path(cache) / f"{kind}-{seed}" if cache else None
    if built is not None and (built / "truth.json").exists():
        # A cached build: the same builder output, so engine changes can be compared on the
        # same images without rebuilding (the builder is deterministic per kind and seed).
        truth = json.loads((built / "truth.json").read_text())
        img = str(built / (built / "image.name").read_text().strip())
        work = Path(tempfile.mkdtemp(prefix=f"srsalvage-xs-{kind}-{seed}-"))
        row["build_s"] = 0.0
    else:
        work = Path(tempfile.mkdtemp(prefix=f"srsalvage-xs-{kind}-{seed}-"))
        img = truth = None
    try:
        if truth is None:
            t0 = time.time()
            img, truth = build(kind, seed, work)
            row["build_s"] = round(time.time() - t0, 1)
            T.save(truth, str(work / "truth.json"))
            if built is not None:
                shutil.rmtree(built, ignore_errors=True)
                built.mkdir(parents=True)
                subprocess.run(["cp", "--sparse=always", img, str(built)], check=True)
                (built / "image.name").write_text(os.path.basename(img))
                T.save(truth, str(built / "truth.json"))
        map_path = str(work / "map.json")
        t0 = time.time()
        code, err = T.run_cli("reconstruct", img, "-o", map_path)
        row["reconstruct_s"] = round(time.time() - t0, 1)
        if code != 0:
            row.update(error=f"reconstruct exit {code}: {err[-300:]}")
            return row
        doc = json.loads(Path(map_path).read_text())
        res = T.score(doc, truth)
        row.update({k: res[k] for k in ("placed", "right", "needed", "found", "missed")})
        row["wrong_confident"] = res["wrong_confident"]
        row["exports"] = T.check_exports(img, truth, map_path, doc)
        row["events"] = truth["events"]
        row["meta"] = {k: truth["meta"][k] for k in ("gpt", "provision", "label_wiped")}
    except Exception as exc:                      # a builder failure is reported, not hidden
        import traceback
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["trace"] = traceback.format_exc()[-1500:]
    finally:
        if keep and ("error" in row or row.get("wrong_confident") or any(
                e["outcome"] != "equal" for e in row.get("exports", []))):
            dst = Path(keep) / f"{kind}-{seed}"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(work, dst, ignore=shutil.ignore_patterns("part.img", "disk.raw",
                                                                      "src*"))
        shutil.rmtree(work, ignore_errors=True)
    return row


def xs_table(rows: list[dict], kinds: tuple[str, ...]) -> None:
    """The per-kind summary (markdown) of --xs result rows."""
    outcomes = ("equal", "refused", "WRONG", "failed", "absent")
    print("\n| kind | seeds | precision | recall | wrong placements conf >= 0.5 | exports "
          "equal / refused / WRONG (exit 0) / failed / absent | builder errors |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds + ("all",):
        rs = [r for r in rows if kind in ("all", r["kind"])]
        ok = [r for r in rs if "error" not in r]
        placed = sum(r["placed"] for r in ok)
        right = sum(r["right"] for r in ok)
        needed = sum(r["needed"] for r in ok)
        found = sum(r["found"] for r in ok)
        wrong = sum(len(r["wrong_confident"]) for r in ok)
        ex = [sum(e["outcome"] == o for r in ok for e in r["exports"]) for o in outcomes]
        print(f"| {kind} | {len(ok)} | {right / max(1, placed):.3f} ({right}/{placed}) | "
              f"{found / max(1, needed):.3f} ({found}/{needed}) | {wrong} | "
              f"{' / '.join(map(str, ex))} | {len(rs) - len(ok)} |")


def xs_main(args) -> int:
    import json
    from concurrent.futures import ProcessPoolExecutor

    from xsbuilder import KINDS
    kinds = KINDS if args.xs == "all" else tuple(args.xs.split(","))
    jobs = [(k, s, args.keep, args.cache) for s in seeds_of(args.seeds) for k in kinds]   # every kind early
    rows: list[dict] = []
    outcomes = ("equal", "refused", "WRONG", "failed", "absent")
    print(f"{'kind':<11}{'seed':>5} {'placed':>6} {'right':>6} {'found':>9} "
          f"{'wrong>=.5':>9}  exports (equal/refused/WRONG/failed/absent)", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(xs_seed, jobs):
            rows.append(row)
            if "error" in row:
                print(f"{row['kind']:<11}{row['seed']:>5}  ERROR {row['error']}", flush=True)
                if args.report:
                    Path(args.report).write_text(json.dumps(rows, indent=1))
                continue
            ex = [sum(e["outcome"] == o for e in row["exports"]) for o in outcomes]
            print(f"{row['kind']:<11}{row['seed']:>5} {row['placed']:>6} {row['right']:>6} "
                  f"{row['found']:>4}/{row['needed']:<4} {len(row['wrong_confident']):>9}  "
                  f"{'/'.join(map(str, ex))}", flush=True)
            if args.report:                      # partial results survive an interrupted sweep
                Path(args.report).write_text(json.dumps(rows, indent=1))
    xs_table(rows, kinds)
    if args.report:
        Path(args.report).write_text(json.dumps(rows, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1-60", help="seeds, e.g. 1-60 or 1,5,9 (default 1-60)")
    ap.add_argument("--stale", action="store_true", help="extents reused: stale data first")
    ap.add_argument("--xs", help="XenServer-like builder kinds (comma list or 'all')")
    ap.add_argument("--jobs", type=int, default=1, help="seeds built in parallel (--xs)")
    ap.add_argument("--report", help="write per-seed results as JSON (--xs)")
    ap.add_argument("--cache", help="keep every built SR image here and reuse it on later runs "
                    "(--xs; the engine is compared on the same images)")
    ap.add_argument("--keep", help="keep images whose results are not perfect here (--xs)")
    ap.add_argument("--summary", nargs="+", metavar="REPORT.json",
                    help="print the per-kind table of saved --xs reports (merged) and exit")
    args = ap.parse_args()
    if args.summary:
        import json
        rows = [r for p in args.summary for r in json.loads(Path(p).read_text())]
        xs_table(rows, tuple(dict.fromkeys(r["kind"] for r in rows)))
        return 0
    if args.xs:
        if os.geteuid() != 0 or not shutil.which("lvm"):
            print("needs root and lvm2 (loop devices)", file=sys.stderr)
            return 1
        return xs_main(args)
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
