"""Measure: how often the guest's own file system tells one VDI's 2 MiB block from another's.

Pairs of guest disks of one geometry (two VDIs made alike, the hard case for reconstruction),
built exactly as the XenServer-like SR builder builds its guests (tests/xsbuilder/guest.py:
sfdisk, mkfs.ext4 -b 4096 + debugfs write / mkntfs -Q + ntfscp, in bursts), sizes as its
scenarios choose them.  For every 2 MiB block where the two disks differ, guest A's file system
(core.guestfs, read from A) is asked whether B's block could be A's:

* landmark: some landmark of the block passes on A's bytes and fails on B's;
* allocation: B wrote sectors (its VHD bitmap would say so) that A's file system calls free;
* content: A's file system says at least 32 KiB of content lies in the block and B wrote less
  than half of it (a file's zero pages are never written by the builder: the rule must not fire
  on A's own block either, counted as own_content_miss).

Prints per file system kind: blocks compared, blocks with a landmark, blocks told apart by
landmarks / allocation / either, and A's own written-but-free sectors (must be 0).

    .venv/bin/python bench/guestfs_evidence.py [--pairs 12] [--seed 1] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from core.guestfs import open_guest, write_agreement  # noqa: E402
from xsbuilder.guest import GuestDisk  # noqa: E402

MiB = 1 << 20
BLOCK = 2 * MiB
SECTOR = 512


def guest(work: Path, name: str, size: int, fs: str, part: bool, seed: int) -> bytes:
    rng = random.Random(seed)
    g = GuestDisk(work, name, size, fs, part, rng)
    g.format()
    for _ in range(rng.randint(1, 4)):
        room = size // 6
        g.write_files(rng.randint(1, 6), rng.randint(room // 8, room))
    return g.raw.read_bytes()


def written(disk: bytes) -> np.ndarray:
    """The sectors a VHD's bitmaps would mark written: the builder writes every 4 KiB page that
    changed from the zeroed disk, whole (GuestDisk.burst)."""
    pages = np.frombuffer(disk, np.uint8).reshape(-1, 4096).any(axis=1)
    return np.repeat(pages, 4096 // SECTOR)


def content_says_no(agree) -> bool:
    total = agree.content_written + agree.content_unwritten
    return total >= 64 and agree.content_unwritten > total // 2


def compare(a: bytes, b: bytes, stats: dict) -> None:
    fs = open_guest(lambda o, n: a[o:o + n], len(a))
    assert fs is not None
    wa, wb = written(a), written(b)
    spb = BLOCK // SECTOR
    for k in range(len(a) // BLOCK):
        ra, rb = a[k * BLOCK:(k + 1) * BLOCK], b[k * BLOCK:(k + 1) * BLOCK]
        stats["blocks"] += 1
        lms = fs.landmarks(k * BLOCK, BLOCK)
        stats["with_landmark"] += bool(lms)
        if ra == rb:
            stats["identical"] += 1
            continue
        stats["compared"] += 1
        rel = lambda lm: slice(lm.offset - k * BLOCK, lm.offset - k * BLOCK + lm.size)  # noqa
        by_lm = any(lm.check(ra[rel(lm)]) and not lm.check(rb[rel(lm)]) for lm in lms)
        state = fs.allocation_state(k * BLOCK, BLOCK)
        content = fs.content_state(k * BLOCK, BLOCK)
        own = write_agreement(wa[k * spb:(k + 1) * spb], state, content)
        other = write_agreement(wb[k * spb:(k + 1) * spb], state, content)
        stats["own_written_free"] += own.written_free
        stats["own_content_miss"] += content_says_no(own)
        by_alloc = other.written_free > 0
        by_content = content_says_no(other)
        stats["by_landmark"] += by_lm
        stats["by_allocation"] += by_alloc
        stats["by_content"] += by_content
        stats["by_either"] += by_lm or by_alloc or by_content


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="guestfs-bench-", dir=args.dir))
    keys = ("blocks", "with_landmark", "identical", "compared", "by_landmark", "by_allocation",
            "by_content", "by_either", "own_written_free", "own_content_miss")
    stats = {k: dict.fromkeys(keys, 0) for k in ("ext4", "ntfs")}
    try:
        for i in range(args.pairs):
            size = rng.choice((24, 32, 40, 48, 64, 80, 96)) * MiB
            fs = ("ext4", "ntfs")[i % 2]
            part = rng.random() < 0.7
            a = guest(work, f"{i}a", size, fs, part, rng.getrandbits(32))
            b = guest(work, f"{i}b", size, fs, part, rng.getrandbits(32))
            compare(a, b, stats[fs])
            compare(b, a, stats[fs])
            shutil.rmtree(work / f"guest-{i}a")
            shutil.rmtree(work / f"guest-{i}b")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'fs':5} " + " ".join(f"{k:>14}" for k in keys))
    for fs, s in stats.items():
        print(f"{fs:5} " + " ".join(f"{s[k]:>14}" for k in keys))
    for fs, s in stats.items():
        if s["compared"]:
            print(f"{fs}: told apart {s['by_either'] / s['compared']:.3f} of differing blocks "
                  f"(landmarks {s['by_landmark'] / s['compared']:.3f}, allocation "
                  f"{s['by_allocation'] / s['compared']:.3f}, content "
                  f"{s['by_content'] / s['compared']:.3f}); blocks with a landmark "
                  f"{s['with_landmark'] / s['blocks']:.3f}")


if __name__ == "__main__":
    main()
