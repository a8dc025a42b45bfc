"""How long a whole pass over the evidence will take, said before it starts (issue 14).

A technician about to read a 4 TB disk wants to know whether it is minutes or hours before the
pass begins. `estimate_pass(ev)` times a short sequential read at the start of the evidence (at
most 32 MiB and 1/256 of the data; the pass, which reads an image file around the page cache,
reads them from the disk again) and scales it to the bytes the pass will read (file holes are
skipped, so a sparse image costs its data only). The measured rate is the device's as it is
now, page cache included: on a disk whose start is cached the first estimate is short, and the
running pass's own rate (the jobs line's time left) takes over as soon as it has read a little.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

PROBE_MAX = 32 << 20          # the probe never reads more than this ...
PROBE_SHARE = 256             # ... nor more than 1/256 of the evidence (a few MiB of a small one)
PROBE_MIN = 1 << 20


@dataclass(frozen=True)
class PassEstimate:
    """What a whole pass will read and how long it should take at the probed rate."""

    bytes_to_read: int        # data bytes the pass reads (holes of a sparse image left out)
    probed: int               # bytes the probe read
    rate: float               # bytes per second measured by the probe (0: not measured)

    @property
    def seconds(self) -> float | None:
        return self.bytes_to_read / self.rate if self.rate > 0 else None


def data_bytes(ev) -> int:
    """Bytes a pass over `ev` reads: its data ranges (holes of a sparse file skipped)."""
    ranges = ev.data_ranges() if hasattr(ev, "data_ranges") else [(0, ev.size)]
    return sum(b - a for a, b in ranges)


def estimate_pass(ev, probe: int | None = None) -> PassEstimate:
    """Time a sequential read of the first data bytes of `ev` and scale it to the whole pass."""
    total = data_bytes(ev)
    if probe is None:
        probe = max(PROBE_MIN, min(PROBE_MAX, total // PROBE_SHARE))
    ranges = ev.data_ranges() if hasattr(ev, "data_ranges") else [(0, ev.size)]
    got, t0 = 0, time.perf_counter()
    for start, end in ranges:
        pos = start
        while pos < end and got < probe:
            n = min(4 << 20, end - pos, probe - got)
            got += len(ev.read(pos, n))
            pos += n
        if got >= probe:
            break
    elapsed = time.perf_counter() - t0
    return PassEstimate(total, got, got / elapsed if got and elapsed > 0 else 0.0)
