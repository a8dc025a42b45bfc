"""Progress reporting and cancellation for long work (scan, match, carve, export).

Long work is a plain function that takes `cancel: threading.Event | None` and
`progress: ProgressFn | None`. It calls `ticker.tick(done)` as often as it likes; the ticker
forwards to the callback at most every `interval` seconds (time-throttled, so the UI and the
stderr bar are never flooded) and raises Cancelled as soon as the event is set.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from core.errors import Cancelled


@dataclass(frozen=True)
class ProgressUpdate:
    """done/total in the work's own unit (usually bytes), seconds since start, a short label."""

    done: int
    total: int
    elapsed: float
    label: str

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> Optional[float]:
        rate = self.rate
        if rate <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)


ProgressFn = Callable[[ProgressUpdate], None]


class Ticker:
    """Throttles progress callbacks by elapsed time and turns a set cancel event into Cancelled."""

    def __init__(
        self,
        total: int,
        label: str = "",
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        interval: float = 0.2,
    ) -> None:
        self.total = total
        self.label = label
        self._progress = progress
        self._cancel = cancel
        self._interval = interval
        self._start = time.monotonic()
        self._last = 0.0

    def check(self) -> None:
        """Raise Cancelled if the cancel event is set."""
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"{self.label or 'work'} cancelled")

    def tick(self, done: int, label: str | None = None, force: bool = False) -> None:
        self.check()
        if label is not None:
            self.label = label
        if self._progress is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            self._progress(ProgressUpdate(done, self.total, now - self._start, self.label))

    def done(self) -> None:
        self.tick(self.total, force=True)
