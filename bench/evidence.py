"""Benchmark: reading evidence as technicians bring it, against the reference tools.

- E01 (compressed with deflate, like labs keep them): `srsalvage verify` (MD5 + SHA1 of every
  byte through libewf-python) against `ewfverify` (libewf's own tool: MD5 of every byte,
  checked against the stored hash).
- split raw (`split -b` pieces): `srsalvage verify` on the pieces against the same on the
  joined image, and `cat PIECES | md5sum` as the reference tool.

Prints ratios (ours / reference) of runs side by side in this process, page cache warm.

    .venv/bin/python bench/evidence.py [--size 1G] [--repeat 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import command, fill_realistic, parse_size, side_by_side, warm_page_cache  # noqa: E402


def _verify(path: str):
    from core.evidence.verify import verify_evidence
    from core.evidence import open_evidence

    def run() -> None:
        with open_evidence(path) as ev:
            verify_evidence(ev)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not shutil.which("ewfacquire"):
        print("ewf-tools not installed (apt-get install ewf-tools)")
        return 1
    tmp = tempfile.mkdtemp(prefix="srsalvage-bench-evidence-")
    try:
        raw = os.path.join(tmp, "disk.raw")
        fill_realistic(raw, parse_size(args.size))
        subprocess.run(["ewfacquire", "-u", "-q", "-t", os.path.join(tmp, "disk"), "-f",
                        "encase6", "-c", "deflate:fast", "-S", str(256 << 20), "-d", "sha1", raw],
                       check=True, capture_output=True)
        e01 = os.path.join(tmp, "disk.E01")
        segments = sorted(glob.glob(os.path.join(tmp, "disk.E*")))
        for seg in segments:
            warm_page_cache(seg)
        c = side_by_side(f"srsalvage verify E01 ({len(segments)} segments)", _verify(e01),
                         "ewfverify", command(["ewfverify", "-q", e01]), args.repeat)
        print(c.line())
        subprocess.run(["split", "-b", str(256 << 20), "-d", "-a", "3", "--numeric-suffixes=1",
                        raw, os.path.join(tmp, "disk.")], check=True)
        pieces = sorted(glob.glob(os.path.join(tmp, "disk.[0-9][0-9][0-9]")))
        for p in pieces + [raw]:
            warm_page_cache(p)
        c = side_by_side(f"srsalvage verify split ({len(pieces)} pieces)", _verify(pieces[0]),
                         "srsalvage verify joined", _verify(raw), args.repeat)
        print(c.line())
        c = side_by_side("srsalvage verify split", _verify(pieces[0]),
                         "cat pieces | md5sum; sha1sum",
                         command(["sh", "-c", f"cat {' '.join(pieces)} | tee >(sha1sum >/dev/null)"
                                  f" | md5sum"] if False else
                                 ["bash", "-c", f"cat {' '.join(pieces)} | "
                                  f"tee >(sha1sum >/dev/null) | md5sum"]), args.repeat)
        print(c.line())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
