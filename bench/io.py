"""Benchmark: how many times each command reads the evidence, and how long it takes against
`cat IMAGE > /dev/null`, on a NON-sparse SR image with the page cache dropped (issue 14).

Builds (tests/nonsparse_sr.py) a non-sparse SR image of --size (default 8 GiB) under --workdir:
real lvm2 where available (root, lvm2, loop devices; else the same layout written by the
builder, label only), LVHD VDIs full of guest data grown in turns, a previous life in every
byte not written since, a SQL Server data file and a RAR archive inside one VDI, the metadata
area wiped (`--damage none` keeps it). `du` of the image is checked against its size (no holes).

Then, per command (`lvm`, `scan`, `reconstruct`, `carve-mdf`, `carve-rar`, and opening the
workstation until its triage is done: `srsalvage open --headless`), each run as its own process
with the page cache dropped first (`sync; echo 3 > /proc/sys/vm/drop_caches`, as root; skipped
with the reason otherwise or with --no-drop):
* reads: `/proc/PID/io` rchar of the process (every byte it read, page cache or not: the
  index file and Python's own files included) as a multiple of the image size;
* wall: its wall time as a ratio to `cat IMAGE > /dev/null` from a cold cache (the mean of a
  `cat` before and after all runs);
* peak RSS (ru_maxrss).
Side by side in one run, when the build has an evidence index (`--no-index` known to the
commands): without the index (`--no-index`), with a cold index (every index file beside the
image removed first: the command builds it) and with a warm index (left by the run before). The
whole triage (the issue's: lvm, reconstruct, scan, carve-mdf, carve-rar, in that order; then
open after them, reported beside it) is measured the same ways, summed. The measured tree's
modules are compiled to bytecode first, as an installed package's are. Last, peak RSS of lvm /
scan / reconstruct / open on a 2 TiB sparse image (truncate + a small SR at its start) next to
the 8 GiB one. `--read-bps 250M` reads the image's disk at that rate (a blkio cgroup around
every run, `cat` included): a spinning disk's speed, where this VM's virtual disk reads at
about 2 GB/s. Beside `cat`, `dd iflag=direct bs=32M` is timed too: the disk without the page
cache, as the pass reads an image file (O_DIRECT).

    sudo .venv/bin/python bench/io.py [--size 8G] [--workdir /tmp] [--keep] [--no-drop]
        [--damage metadata|none] [--sparse-size 2T] [--no-sparse]
        [--image PATH] [--root DIR] [--modes no-index,cold,warm] [--read-bps 250M]

`--image PATH` measures an existing non-sparse image (checked like a built one, never deleted;
srsalvage's index and case files beside it are removed before each cold run). `--root DIR`
runs the commands of another srsalvage tree (an older commit: `git archive COMMIT | tar -x -C
DIR`), so a change is measured before and after on the same image in the same conditions.

The built images are deleted at the end unless --keep. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# run as a script, this directory comes first on sys.path: `io` must stay the standard module
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(
    os.path.abspath(__file__))]
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from bench._common import ChildRun, parse_size, run_child, srsalvage_argv  # noqa: E402

COMMANDS = ("lvm", "scan", "reconstruct", "carve-mdf", "carve-rar", "open")
TRIAGE = ("lvm", "reconstruct", "scan", "carve-mdf", "carve-rar", "open")
# the issue's whole triage is the first five; opening the workstation after them is reported
# beside it (its own triage reuses the same index)
ISSUE_TRIAGE = TRIAGE[:5]
MODES = ("no-index", "cold", "warm")


def drop_caches() -> str:
    """Drop the page cache; '' when done, else why not."""
    if os.geteuid() != 0:
        return "not root: /proc/sys/vm/drop_caches needs root"
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return ""
    except OSError as exc:
        return f"cannot write /proc/sys/vm/drop_caches: {exc.strerror}"


CMD_ROOT = ROOT          # the tree whose commands are measured (--root)


def supports_index() -> bool:
    """Whether this build's commands know `--no-index` (the evidence index, issue 14)."""
    out = subprocess.run(srsalvage_argv("scan", "--help"), capture_output=True, text=True,
                         cwd=CMD_ROOT).stdout
    return "--no-index" in out


@dataclass
class Bench:
    image: str
    size: int
    outdir: str
    drop: bool
    keep_files: set = field(default_factory=set)     # what lies beside the image when built
    drop_note: str = ""
    throttle_note: str = ""
    indexed: bool = True        # the commands know --no-index

    def argv(self, command: str, no_index: bool) -> list[str]:
        img = self.image
        out = os.path.join(self.outdir, command)
        args = {"lvm": ["lvm", img, "--json"],
                "scan": ["scan", img, "--json"],
                "reconstruct": ["reconstruct", img, "--json"],
                "carve-mdf": ["carve-mdf", img, "-o", out, "--json"],
                "carve-rar": ["carve-rar", img, "-o", out, "--json"],
                "open": ["open", img, "--headless"]}[command]
        return srsalvage_argv(*args, *(["--no-index"] if no_index and self.indexed else []))

    def reset_beside_image(self) -> None:
        """Remove whatever the runs left beside the image (index files, the case): a cold start."""
        folder = os.path.dirname(self.image)
        for name in os.listdir(folder):
            if name not in self.keep_files:
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)

    def run(self, command: str, no_index: bool = False) -> ChildRun:
        shutil.rmtree(self.outdir, ignore_errors=True)
        os.makedirs(self.outdir)
        if self.drop:
            note = drop_caches()
            if note:
                self.drop, self.drop_note = False, note
        r = run_child(self.argv(command, no_index), cwd=CMD_ROOT)
        if r.returncode not in (0, 1):
            print(f"  ! {command} exited {r.returncode}: {r.stderr.strip()[-300:]}", flush=True)
        return r

    def cat(self) -> float:
        if self.drop:
            drop_caches()
        r = run_child(["cat", self.image])
        return r.wall

    def dd_direct(self) -> float | None:
        """Wall time of `dd iflag=direct bs=32M` over the image (None: dd or O_DIRECT not
        had): the disk's own speed without the page cache's copies, as the pass reads it --
        the second yardstick beside `cat`, which reads through the page cache."""
        if self.drop:
            drop_caches()
        try:
            r = run_child(["dd", f"if={self.image}", "of=/dev/null", "bs=32M", "iflag=direct",
                           "status=none"])
        except OSError:
            return None
        return r.wall if r.returncode == 0 else None


def measure_commands(b: Bench, modes: list[str]) -> dict:
    """{mode: {command: ChildRun}} and the whole triage per mode (summed)."""
    results: dict[str, dict[str, ChildRun]] = {m: {} for m in modes}
    for command in COMMANDS:
        for mode in modes:
            if mode != "warm":
                b.reset_beside_image()
            elif "cold" not in modes:
                continue
            # warm: the index the cold run of this command just left
            r = b.run(command, no_index=(mode == "no-index"))
            results[mode][command] = r
            print(f"  {command:<12} {mode:<9} reads {r.rchar / b.size:6.2f}x  "
                  f"{r.wall:7.1f} s  rss {r.max_rss >> 20} MiB", flush=True)
    triage: dict[str, list[ChildRun]] = {}
    for mode in modes:
        if mode == "warm":
            continue        # the triage's own first command builds the index: "cold" below
        b.reset_beside_image()
        runs = []
        for c in TRIAGE:
            runs.append(b.run(c, no_index=(mode == "no-index")))
            print(f"    triage {mode:<9} {c:<12} reads {runs[-1].rchar / b.size:6.3f}x  "
                  f"{runs[-1].wall:7.1f} s", flush=True)
        triage[mode] = runs
        print(f"  triage       {mode:<9} reads {sum(r.rchar for r in runs) / b.size:6.2f}x  "
              f"{sum(r.wall for r in runs):7.1f} s", flush=True)
    return {"commands": results, "triage": triage}


def throttle_reads(image: str, rate: int) -> tuple[str, Callable[[], None] | None]:
    """Make the image's disk read at `rate` bytes/s for this process and its children (the
    commands and `cat` alike): a blkio cgroup (v1 `blkio.throttle.read_bps_device`, or v2
    `io.max` rbps) on the block device holding the image, this process moved into it. The
    issue's disks read at 150-250 MB/s (spinning) to 0.5-3 GB/s (SSD); this VM's virtual disk
    reads at about 2 GB/s, where the pass's CPU and each command's start-up weigh more than
    on a disk of the first kind. Returns (what was done or why not, undo or None)."""
    st = os.stat(image)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sys_dev = f"/sys/dev/block/{dev}"
    if os.path.exists(os.path.join(sys_dev, "partition")):      # throttled per whole disk
        with open(os.path.join(os.path.realpath(sys_dev), "..", "dev")) as f:
            dev = f.read().strip()
    if os.geteuid() != 0:
        return "not root: no cgroup to throttle reads in", None
    name = f"srsalvage-bench-io-{os.getpid()}"
    v1, v2 = "/sys/fs/cgroup/blkio", "/sys/fs/cgroup"
    if os.path.isdir(v1):
        group, limit, line, home = os.path.join(v1, name), "blkio.throttle.read_bps_device", \
            f"{dev} {rate}", v1
    elif "io" in open(os.path.join(v2, "cgroup.controllers")).read().split():
        with open(os.path.join(v2, "cgroup.subtree_control"), "w") as f:
            f.write("+io")
        group, limit, line, home = os.path.join(v2, name), "io.max", f"{dev} rbps={rate}", v2
    else:
        return "no blkio (v1) or io (v2) cgroup controller", None
    try:
        os.mkdir(group)
        with open(os.path.join(group, limit), "w") as f:
            f.write(line)
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    except OSError as e:
        return f"cannot throttle device {dev}: {e}", None

    def undo() -> None:
        with open(os.path.join(home, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        os.rmdir(group)
    return f"reads of device {dev} throttled to {rate / 1e6:.0f} MB/s ({limit})", undo


def compile_bytecode() -> None:
    """Compile the measured tree's modules first, as an installed package has them (pip
    compiles on install): otherwise, with PYTHONDONTWRITEBYTECODE set (as in CI shells), every
    process compiles the engine's sources again, 0.08 s of each start-up, which no technician's
    install pays."""
    dirs = [os.path.join(CMD_ROOT, d) for d in ("app", "core", "widgets")
            if os.path.isdir(os.path.join(CMD_ROOT, d))]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False,
                   stdout=subprocess.DEVNULL)


def rss_runs(b: Bench, commands=("lvm", "scan", "reconstruct", "open")) -> dict[str, ChildRun]:
    out = {}
    for c in commands:
        b.reset_beside_image()
        out[c] = b.run(c)
    return out


def fmt_x(runs: dict, mode: str, command: str, size: int, cat: float) -> tuple[str, str]:
    r = runs.get(mode, {}).get(command)
    if r is None:
        return "n/a", "n/a"
    return f"{r.rchar / size:.2f}x", f"{r.wall / cat:.2f}x"


def table(res: dict, modes: list[str], size: int, cat: float) -> list[str]:
    heads = {"no-index": "no index (`--no-index`)", "cold": "cold index", "warm": "warm index"}
    cols = [heads[m] if len(modes) > 1 else "today (no index)" for m in modes]
    lines = ["| command | " + " | ".join(f"{c}: reads, wall / cat" for c in cols)
             + " | peak RSS |",
             "|---|" + "---|" * len(modes) + "---|"]
    for c in COMMANDS:
        cells = []
        for m in modes:
            reads, wall = fmt_x(res["commands"], m, c, size, cat)
            cells.append(f"{reads}, {wall}")
        rss = max((res["commands"][m][c].max_rss for m in modes if c in res["commands"][m]),
                  default=0)
        name = "open (workstation triage)" if c == "open" else c
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {rss >> 20} MiB |")
    cells = []
    for m in modes:
        runs = res["triage"].get(m if m != "warm" else "cold")
        if runs is None or m == "warm":
            cells.append("(the cold triage builds it once)" if m == "warm" else "n/a")
            continue
        five = runs[:len(ISSUE_TRIAGE)]
        cells.append(f"**{sum(r.rchar for r in five) / size:.2f}x**, "
                     f"**{sum(r.wall for r in five) / cat:.2f}x**; then `open`: "
                     f"{sum(r.rchar for r in runs) / size:.2f}x, "
                     f"{sum(r.wall for r in runs) / cat:.2f}x")
    lines.append("| whole triage (" + ", ".join(ISSUE_TRIAGE) + "; then open) | "
                 + " | ".join(cells) + " | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="8G", help="image size (default 8G; >= 8G for the record)")
    ap.add_argument("--workdir", default="/tmp", help="where to build the images (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the built images")
    ap.add_argument("--no-drop", action="store_true", help="do not drop the page cache")
    ap.add_argument("--damage", default="metadata", choices=("metadata", "none"),
                    help="metadata: wipe the metadata area (default); none: keep it")
    ap.add_argument("--sparse-size", default="2T", help="the sparse image for peak RSS (2T)")
    ap.add_argument("--no-sparse", action="store_true", help="skip the sparse RSS runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--image", help="measure this existing non-sparse image (not built)")
    ap.add_argument("--root", help="the srsalvage tree whose commands are measured "
                                   "(default: this one)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="which of no-index,cold,warm (default: all)")
    ap.add_argument("--read-bps", metavar="RATE",
                    help="read the image's disk at RATE bytes/s (e.g. 250M, a spinning disk): "
                         "a blkio cgroup around every run, cat included (root)")
    args = ap.parse_args(argv)
    import nonsparse_sr

    global CMD_ROOT
    if args.root:
        CMD_ROOT = os.path.abspath(args.root)
    want_modes = [m for m in MODES if m in args.modes.split(",")]
    if args.image:
        return measure_existing(args, os.path.abspath(args.image), want_modes)
    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="srsalvage-bench-io-", dir=args.workdir)
    free = shutil.disk_usage(work).free
    if free < size + (2 << 30):
        print(f"not enough free space in {work}: {free >> 30} GiB free, {size >> 30} GiB needed"
              f" + 2 GiB")
        shutil.rmtree(work, ignore_errors=True)
        return 1
    try:
        imgdir = os.path.join(work, "image")
        os.makedirs(imgdir)
        image = os.path.join(imgdir, "sr.img")
        t0 = time.perf_counter()
        built = nonsparse_sr.build(image, size, seed=args.seed, damage=args.damage,
                                   log=lambda m: print(m, flush=True))
        du = built.allocated_bytes
        print(f"built {size / (1 << 30):.2f} GiB in {time.perf_counter() - t0:.0f} s "
              f"({'real lvm2' if built.lvm2 else 'no lvm2: label-only layout'}, "
              f"{len(built.maps) - 1} VDIs); du {du / (1 << 30):.2f} GiB = "
              f"{du / size:.3f} of its size", flush=True)
        if du < size * 0.999:
            print("the image has holes: the read counts would not be honest")
            return 1
        b = Bench(image, size, os.path.join(work, "out"), not args.no_drop,
                  keep_files=set(os.listdir(imgdir)))
        return report(args, b, want_modes, work, "real lvm2" if built.lvm2 else
                      "label-only layout", len(built.maps) - 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


OURS = (".srsalvage-index.npz", ".srsalvage-case.json")     # what the commands leave beside


def measure_existing(args, image: str, want_modes: list[str]) -> int:
    """--image: measure an image built before (kept by --keep, or by hand)."""
    size = os.path.getsize(image)
    if os.stat(image).st_blocks * 512 < size * 0.999:
        print(f"{image} has holes: the read counts would not be honest")
        return 1
    work = tempfile.mkdtemp(prefix="srsalvage-bench-io-", dir=args.workdir)
    try:
        keep = {n for n in os.listdir(os.path.dirname(image)) if not n.endswith(OURS)}
        b = Bench(image, size, os.path.join(work, "out"), not args.no_drop, keep_files=keep)
        b.reset_beside_image()
        return report(args, b, want_modes, work, "existing image", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args, b: "Bench", want_modes: list[str], work: str, layout: str,
           n_vdis: int | None) -> int:
    """Measure every command and the triage on b.image and print the tables."""
    size, built_note = b.size, f"{layout}" + (f", {n_vdis} VDIs" if n_vdis is not None else "")
    print(f"measuring the commands of {CMD_ROOT}", flush=True)
    compile_bytecode()
    undo = None
    if args.read_bps:
        b.throttle_note, undo = throttle_reads(b.image, parse_size(args.read_bps))
        print(b.throttle_note, flush=True)
    try:
        return _report(args, b, want_modes, work, size, built_note)
    finally:
        if undo is not None:
            undo()


def _report(args, b: "Bench", want_modes: list[str], work: str, size: int,
            built_note: str) -> int:
    if args.no_drop:
        b.drop_note = "--no-drop: page cache kept"
    indexed = b.indexed = supports_index()
    modes = want_modes if indexed else ["no-index"]
    cat0 = b.cat()
    print(f"cat IMAGE > /dev/null: {cat0:.1f} s ({size / cat0 / (1 << 20):.0f} MiB/s)",
          flush=True)
    res = measure_commands(b, modes)
    folder = os.path.dirname(b.image)
    kept = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(OURS[0])]
    index_note = ""
    if kept:            # the index the last triage left beside the image
        nbytes = os.path.getsize(kept[0])
        index_note = (f"evidence index kept beside the image: {nbytes / 1024:.0f} KiB, "
                      f"{nbytes / 1024 / (size / (1 << 30)):.1f} KiB per GiB")
    cat1 = b.cat()
    cat = (cat0 + cat1) / 2
    print(f"cat again: {cat1:.1f} s")
    dd = b.dd_direct()
    sparse = {}
    if not args.no_sparse:
        sparse = sparse_rss(args, work)
    print()
    print(f"### bench/io.py: {size / (1 << 30):.0f} GiB non-sparse SR image "
          f"({built_note}, metadata "
          f"{'wiped' if args.damage == 'metadata' else 'kept'}), "
          f"measured {time.strftime('%Y-%m-%d %H:%M')}")
    print()
    print(f"`cat IMAGE > /dev/null` cold: {cat:.1f} s ({size / cat / (1 << 20):.0f} MiB/s). "
          f"Page cache: {'dropped before every run' if b.drop else 'NOT dropped (' + b.drop_note + ')'}. "
          f"Reads = `/proc/PID/io` rchar / image size; wall = wall time / `cat` time."
          + (f" Disk: {b.throttle_note}." if b.throttle_note else "")
          + (f" `dd iflag=direct bs=32M` (the disk without the page cache, as the index's pass "
             f"reads an image file): {dd:.1f} s, {dd / cat:.2f}x `cat`." if dd else ""))
    print()
    for line in table(res, modes, size, cat):
        print(line)
    cpu = sum(r.cpu for r in res["commands"][modes[-1] if indexed else "no-index"].values())
    print()
    print(f"CPU of the six commands ({modes[-1]}): {cpu:.1f} s, "
          f"{cpu / (size / (1 << 30)):.2f} s per GiB")
    gib = size / (1 << 30)
    if index_note:
        print(index_note)
    scan = res["commands"].get("cold", {}).get("scan")
    if scan is not None:
        print(f"cold-index `scan` (the one pass): {scan.cpu:.1f} s CPU for {scan.wall:.1f} s "
              f"wall: {scan.cpu / gib:.2f} CPU s/GiB, {scan.wall / cat:.2f}x `cat`")
    for mode, runs in res["triage"].items():
        five = runs[:len(ISSUE_TRIAGE)]
        print(f"whole triage ({mode}; {', '.join(ISSUE_TRIAGE)}): reads "
              f"{sum(r.rchar for r in five) / size:.3f}x, wall "
              f"{sum(r.wall for r in five) / cat:.2f}x `cat`"
              + (f" ({sum(r.wall for r in five) / dd:.2f}x `dd iflag=direct`)" if dd else "")
              + "; with `open` after it: reads "
              f"{sum(r.rchar for r in runs) / size:.3f}x, wall "
              f"{sum(r.wall for r in runs) / cat:.2f}x `cat`, CPU "
              f"{sum(r.cpu for r in runs) / gib:.2f} s/GiB; per command: " + ", ".join(
                  f"{c} {r.rchar / size:.3f}x {r.wall / cat:.2f}x" for c, r in zip(TRIAGE, runs)))
    if sparse:
        print()
        print(f"Peak RSS (ru_maxrss): 8 GiB non-sparse vs {args.sparse_size} sparse "
              f"(truncate + a small SR at its start)")
        print()
        print("| command | " + f"{size >> 30} GiB | {args.sparse_size} sparse |")
        print("|---|---|---|")
        for c, r in sparse.items():
            big = res["commands"][modes[0]].get(c)
            print(f"| `{c}` | {big.max_rss >> 20 if big else 0} MiB | {r.max_rss >> 20} MiB"
                  f" ({r.wall:.0f} s) |")
    return 0


def sparse_rss(args, work: str) -> dict[str, ChildRun]:
    import nonsparse_sr

    size = parse_size(args.sparse_size)
    d = os.path.join(work, "sparse")
    os.makedirs(d)
    path = os.path.join(d, "sr2t.img")
    nonsparse_sr.build(path, size, data_bytes=512 << 20, seed=args.seed + 1, n_vdis=4,
                       damage=args.damage)
    b = Bench(path, size, os.path.join(work, "out2"), False, keep_files=set(os.listdir(d)),
              indexed=supports_index())
    out = rss_runs(b)
    for c, r in out.items():
        print(f"  sparse {c:<12} rss {r.max_rss >> 20} MiB  {r.wall:.1f} s  exit {r.returncode}",
              flush=True)
    os.unlink(path)
    return out


if __name__ == "__main__":
    sys.exit(main())
