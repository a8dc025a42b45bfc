"""The long whole-image fuzz run (issue 11): `python bench/fuzz.py --minutes 30`.

Mutates the demo SR images with the strategies of tests/fuzz_images.py and runs every command on
each case in a forked child (address space capped at the child's start + 1 GiB, 60 s timeout).
Prints the number of cases, runs and findings; each finding (traceback, hang, signal, RSS over
1 GiB, changed evidence) is written to --findings as JSON with its case so it can become a
regression test. `make test` runs the same strategies on a small budget
(tests/test_fuzz_campaign.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main() -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    import fuzz_images as fz

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--findings", default="fuzz-findings.json")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="srsalvage-fuzz-")
    bases = fz.build_bases(work)
    spaces = []
    for i, b in enumerate(bases):
        os.makedirs(os.path.join(work, f"ws{i}"), exist_ok=True)
        spaces.append(fz.Workspace(b, os.path.join(work, f"ws{i}")))
    stop = time.monotonic() + args.minutes * 60
    stats = {"cases": 0, "runs": 0, "findings": 0, "max_rss": 0, "slowest": 0.0}
    found: list[dict] = []

    # batches of 10 examples: the loop below checks the clock between batches (a hypothesis
    # run cannot be stopped from inside without counting as a failure)
    @settings(max_examples=10, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(st.data())
    def one(data):
        i = data.draw(st.integers(0, len(spaces) - 1))
        case = data.draw(fz.cases(spaces[i].base))
        results = fz.run_case(spaces[i], case, timeout=60.0, stats=stats)
        stats["cases"] += 1
        for r in results:
            stats["findings"] += 1
            found.append({"base": i, "status": r.status, "command": r.command,
                          "seconds": round(r.seconds, 1), "max_rss": r.max_rss,
                          "detail": r.detail, "patches": [[o, d.hex()] for o, d in case.patches],
                          "truncate": case.truncate,
                          "backup_text": case.backup_text.decode("utf-8", "replace")
                          if case.backup_text else None, "map_doc": case.map_doc})
            with open(args.findings, "w") as f:
                json.dump(found, f, indent=1)
            print(f"FINDING {r.status} {' '.join(r.command[:1])}: {r.detail[:300]}",
                  file=sys.stderr, flush=True)
        if stats["cases"] % 20 == 0:
            print(f"{stats['cases']} cases, {stats['runs']} runs, {stats['findings']} findings, "
                  f"max RSS {stats['max_rss'] >> 20} MiB", file=sys.stderr, flush=True)

    while time.monotonic() < stop:
        one()
    print(json.dumps({"cases": stats["cases"], "runs": stats["runs"],
                      "findings": stats["findings"], "max_rss": stats["max_rss"],
                      "slowest_run_seconds": round(stats["slowest"], 1),
                      "minutes": args.minutes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
