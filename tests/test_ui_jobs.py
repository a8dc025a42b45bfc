"""The workstation's job runner (app.screens.jobs) on a bare screen: each job's own outcome
callback is called (done, cancelled, failed, a missing engine), progress reaches the display at
most PROGRESS_PER_SECOND times a second and always at its end; and the scan feeds its kinds'
verify reads from the window in memory (a pread per candidate starved the UI thread)."""

from __future__ import annotations

import os
import threading
import time

from textual.app import App, ComposeResult
from textual.screen import Screen

from app.screens.jobs import PROGRESS_PER_SECOND, JobFailure, JobsMixin
from core.errors import Cancelled, SrsalvageError
from core.progress import ProgressUpdate
from test_ui_support import wait_until
from widgets.worker_status import WorkerStatus


class Recorder:
    """A JobDisplay that keeps what it was told."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.updates: list[tuple[int, int]] = []
        self.removed: list[str] = []

    def add_job(self, job_id, label, byte_unit=True):
        self.added.append(job_id)

    def update_job(self, job_id, done, total, rate, eta, label=None):
        self.updates.append((done, total))

    def remove_job(self, job_id):
        self.removed.append(job_id)


class JobScreen(JobsMixin, Screen):
    def __init__(self) -> None:
        super().__init__()
        self.init_jobs()
        self.display_ = Recorder()
        self.said: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield WorkerStatus()

    def job_display(self):
        return self.display_

    def say_cancelled(self, label: str) -> None:
        self.said.append(("cancelled", label))

    def say_failed(self, label: str, failure: JobFailure) -> None:
        self.said.append(("failed", label))


class Host(App):
    def on_mount(self) -> None:
        self.push_screen(JobScreen())


def _raiser(exc: BaseException):
    def fn(cancel, progress):
        raise exc
    return fn


async def test_each_job_calls_the_callbacks_it_was_started_with():
    app = Host()
    async with app.run_test(size=(80, 12)) as pilot:
        screen = app.screen
        got: dict[str, object] = {}

        def start(name, fn):
            screen.start_job(name, f"job {name}", fn, lambda r: got.setdefault(name, ("done", r)),
                             on_cancelled=lambda: got.setdefault(name, ("cancelled",)),
                             on_failed=lambda f: got.setdefault(name, ("failed", f)))

        start("ok", lambda cancel, progress: 42)
        start("engine", _raiser(SrsalvageError("bad superblock")))
        start("bug", _raiser(ZeroDivisionError("oops")))
        start("stop", _raiser(Cancelled()))
        release = threading.Event()

        def slow(cancel, progress):
            while not cancel.is_set() and not release.is_set():
                time.sleep(0.005)
            return "late"

        start("slow", slow)
        await wait_until(pilot, lambda: len(got) == 4)
        screen.action_cancel_job()                      # Esc: the newest job, the slow one
        await wait_until(pilot, lambda: not screen._jobs)
        release.set()
        assert got["ok"] == ("done", 42)
        failures = {k: v[1] for k, v in got.items() if v[0] == "failed"}
        assert set(failures) == {"engine", "bug"}
        assert failures["engine"] == JobFailure("bad superblock")
        assert failures["bug"].message == "ZeroDivisionError: oops" and failures["bug"].trace
        assert failures["bug"].trace in failures["bug"].text
        assert got["stop"] == ("cancelled",) and got["slow"] == ("cancelled",)
        # the screen said every cancellation and failure, and every job left the display
        assert sorted(screen.said) == sorted(
            [("failed", "job engine"), ("failed", "job bug"),
             ("cancelled", "job stop"), ("cancelled", "job slow")])
        assert sorted(screen.display_.removed) == sorted(screen.display_.added)
        assert len(screen.display_.added) == 5


async def test_progress_posts_are_throttled_and_the_last_one_arrives():
    app = Host()
    async with app.run_test(size=(80, 12)) as pilot:
        screen = app.screen
        calls = 0
        took: list[float] = []

        def chatty(cancel, progress):
            # 20000 updates as fast as they come (a callback with no throttle of its own)
            nonlocal calls
            t0 = time.monotonic()
            for i in range(1, 20001):
                progress(ProgressUpdate(i, 20000, time.monotonic() - t0, "chatty"))
                calls += 1
                if i % 500 == 0:
                    time.sleep(0.005)
            took.append(time.monotonic() - t0)

        screen.start_job("chat", "chatty", chatty, lambda r: None)
        await wait_until(pilot, lambda: not screen._jobs)
        ups = screen.display_.updates
        assert calls == 20000
        assert len(ups) <= took[0] * PROGRESS_PER_SECOND + 2, (len(ups), took)
        assert ups[-1] == (20000, 20000)


def test_scan_verify_reads_come_from_the_window(tmp_path, monkeypatch):
    """2000 VHD-footer-like sectors: the footer kind reads the sector after each candidate (is a
    dynamic header there?); the scan answers those reads from its window, not with one pread
    each, and the answers are right across window boundaries."""
    from core.scan import available_kinds, scan
    from core.source import Evidence

    footer = b"conectix" + bytes(504)
    header = b"cxsparse" + bytes(504)
    sectors = []
    for i in range(2000):
        sectors.append(footer)
        if i % 7 == 0:
            sectors.append(header)          # this footer is followed by a dynamic header
    path = tmp_path / "footers.img"
    path.write_bytes(b"".join(sectors) + bytes(1 << 20))
    followed = {512 * n for n, sec in enumerate(sectors)
                if sec == footer and n + 1 < len(sectors) and sectors[n + 1] == header}
    preads = []
    real = os.pread

    def counting(fd, length, offset):
        preads.append((offset, length))
        return real(fd, length, offset)

    monkeypatch.setattr(os, "pread", counting)
    with Evidence(str(path)) as ev:
        result = scan(ev, kinds=sorted(available_kinds()), window=64 << 10)
    footers = [f for f in result.findings if f.kind == "vhd-footer"]
    assert len(footers) == 2000
    assert {f.offset for f in footers if f.details["header_follows"]} == followed
    assert len(preads) < 200, len(preads)       # a pread per candidate would be > 2000
