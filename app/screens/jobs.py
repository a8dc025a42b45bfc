"""Background jobs of the workstation: thread workers around core functions.

Every long piece of work (analysis, scan, reconstruction, checks, chain discovery, export, find,
carving) is `fn(cancel, progress)` from core, run by `JobsMixin.start_job` in a Textual thread
worker with the worker's own cancel event (set by Esc or when the screen goes) and a progress
callback that reaches the screen's job display (`JobDisplay`: the WorkerStatus widget by default)
through `call_from_thread`, at most PROGRESS_PER_SECOND times a second. Each job is started with
its own outcome callbacks, called on the UI thread: `on_done(result)`, and optionally
`on_cancelled()` and `on_failed(failure)` (a `JobFailure`: the message, the traceback when it is
a bug, whether an engine module is missing). The screen says a cancellation and a failure itself
(`say_cancelled`, `say_failed`: a notice, an error dialog; a screen with its own status line sets
JOB_OUTCOMES_SAID = False and says them in its callbacks) — never a crash of the UI.

    self.start_job("scan", "scanning the image", session.scan, on_done=show_findings,
                   on_failed=lambda failure: status.update(failure.message))

Every started job ends — done, failed or cancelled — within a bounded time after it is
cancelled: a Textual worker cancelled before its task ran never runs its body (nothing would
ever end the job: the bar "checking … --%" of fast edits), so a cancelled job whose body has not
started is ended at once; one whose body ignores the cancel event for CANCEL_GRACE seconds is
abandoned (its result dropped when it comes).
"""

from __future__ import annotations

import itertools
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from textual.worker import Worker, get_current_worker

from app.screens.dialogs import ErrorDialog
from core.errors import Cancelled, SrsalvageError
from core.progress import ProgressUpdate
from widgets.worker_status import WorkerStatus


@dataclass(frozen=True)
class JobFailure:
    """Why a job gave no result: `message` (one line), `trace` (the traceback, only for a bug:
    an exception that is not an SrsalvageError)."""

    message: str
    trace: str | None = None

    @property
    def text(self) -> str:
        """The message, with the traceback under it when there is one."""
        return self.message if self.trace is None else f"{self.message}\n\n{self.trace}"


@dataclass(frozen=True)
class Outcome:
    """How fn(cancel, progress) ended in its worker: its result, or cancelled, or a failure."""

    result: Any = None
    cancelled: bool = False
    failure: JobFailure | None = None


def run_in_worker(fn: Callable[..., Any], progress: Callable[[ProgressUpdate], None]) -> Outcome:
    """Run fn(cancel, progress) in the current thread worker, with the worker's cancel event.
    Never raises: an exception becomes the Outcome's failure."""
    worker = get_current_worker()
    try:
        result = fn(worker.cancelled_event, progress)
    except Cancelled:
        return Outcome(cancelled=True)
    except SrsalvageError as exc:
        return Outcome(failure=JobFailure(str(exc)))
    except Exception as exc:  # a bug in the engine: shown, never a crash of the UI
        return Outcome(failure=JobFailure(f"{type(exc).__name__}: {exc}",
                                          traceback.format_exc(limit=6)))
    if worker.is_cancelled:
        return Outcome(cancelled=True)
    return Outcome(result)


CANCEL_GRACE = 5.0   # seconds a cancelled job's body may take to notice before it is abandoned
PROGRESS_PER_SECOND = 10   # progress posts to the UI thread per job at most (the rest dropped)


class JobDisplay(Protocol):
    """Where a screen shows its running jobs (WorkerStatus, or a screen's own progress bar)."""

    def add_job(self, job_id: str, label: str, byte_unit: bool = True) -> None: ...

    def update_job(self, job_id: str, done: int, total: int, rate: float, eta: float | None,
                   label: str | None = None) -> None: ...

    def remove_job(self, job_id: str) -> None: ...


@dataclass
class Job:
    """One started job and the callbacks it was started with."""

    kind: str
    label: str
    worker: Worker
    on_done: Callable[[Any], None]
    on_cancelled: Callable[[], None] | None = None
    on_failed: Callable[[JobFailure], None] | None = None
    started: bool = field(default=False)      # its body runs in the worker thread


class JobsMixin:
    """start_job / running / cancel_job for a Screen; progress goes to `job_display()`."""

    _jobs: dict[str, Job]
    _job_ids: Any

    def init_jobs(self) -> None:
        self._jobs = {}
        self._job_ids = itertools.count(1)

    def job_display(self) -> JobDisplay:
        """Where progress is shown: the screen's WorkerStatus (a screen may show it otherwise)."""
        return self.query_one(WorkerStatus)

    def start_job(self, kind: str, label: str, fn: Callable[..., Any],
                  on_done: Callable[[Any], None], *, exclusive: bool = False,
                  byte_unit: bool = True, on_cancelled: Callable[[], None] | None = None,
                  on_failed: Callable[[JobFailure], None] | None = None) -> Worker:
        """Run fn(cancel, progress) in a thread worker. Back on the UI thread, when it ends:
        on_done(result), or on_cancelled(), or on_failed(JobFailure) (and the screen says the
        cancellation or failure: say_cancelled, say_failed). `exclusive`: a running job of the
        same kind is cancelled first (quietly). `byte_unit`: the progress counts bytes (the rate
        is shown as B/s)."""
        if exclusive:
            for jid, job in list(self._jobs.items()):
                if job.kind == kind:
                    self.cancel_job(jid, quiet=True)
        job_id = f"{kind}-{next(self._job_ids)}"
        display = self.job_display()
        display.add_job(job_id, label, byte_unit)
        app = self.app
        last_post = [0.0]

        def progress(update: ProgressUpdate) -> None:
            # a callback called too often would flood the UI thread's queue: one post per
            # 1/PROGRESS_PER_SECOND s at most, and always the last one (done == total)
            now = time.monotonic()
            final = 0 < update.total <= update.done
            if now - last_post[0] < 1 / PROGRESS_PER_SECOND and not final:
                return
            last_post[0] = now
            try:
                app.call_from_thread(display.update_job, job_id, update.done, update.total,
                                     update.rate, update.eta, update.label or None)
            except RuntimeError:  # the app is closing
                pass

        def body() -> None:
            job = self._jobs.get(job_id)
            if job is None:                    # ended before it could start
                return
            job.started = True
            outcome = run_in_worker(fn, progress)
            self._from_thread(self._job_ended, job_id, outcome)

        worker = self.run_worker(body, name=job_id, group=kind, description=label, thread=True,
                                 exit_on_error=False)
        self._jobs[job_id] = Job(kind, label, worker, on_done, on_cancelled, on_failed)
        return worker

    def cancel_job(self, job_id: str, quiet: bool = False) -> None:
        """Cancel one job; it ends (cancelled) within CANCEL_GRACE seconds whatever its body does."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        job.worker.cancel()
        if not quiet:
            self.notify(f"cancelling {job.label}…")
        self.set_timer(0.05, lambda: self._reap(job_id, abandon=False))
        self.set_timer(CANCEL_GRACE, lambda: self._reap(job_id, abandon=True))

    def cancel_all_jobs(self) -> None:
        """Cancel every job of this screen (it is going away), quietly."""
        for job_id in list(self._jobs):
            job = self._jobs.pop(job_id)
            job.worker.cancel()

    def _reap(self, job_id: str, abandon: bool) -> None:
        """End a cancelled job that never started (or, after the grace time, one that ignores
        its cancel event: its result, when it comes, is dropped)."""
        job = self._jobs.get(job_id)
        if job is None or (job.started and not abandon):
            return
        self._end_job(job_id)
        if abandon:
            self.notify(f"{job.label}: did not stop within {CANCEL_GRACE:g} s; "
                        f"abandoned (its result will be dropped)", severity="warning")
        if job.on_cancelled is not None:
            job.on_cancelled()

    def running_jobs(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Labels of the jobs still running (of these kinds), oldest first."""
        return [job.label for job in self._jobs.values() if kinds is None or job.kind in kinds]

    def running(self, kind: str) -> bool:
        return any(job.kind == kind for job in self._jobs.values())

    def action_cancel_job(self) -> None:
        """Cancel the newest job."""
        if self._jobs:
            self.cancel_job(list(self._jobs)[-1])

    def _from_thread(self, fn: Callable, *args: Any) -> None:
        try:
            self.app.call_from_thread(fn, *args)
        except RuntimeError:
            pass

    def _end_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        try:
            self.job_display().remove_job(job_id)
        except Exception:  # the screen is closing
            pass

    def _job_ended(self, job_id: str, outcome: Outcome) -> None:
        """The job's body returned: its callback for how it ended, on the UI thread."""
        job = self._jobs.get(job_id)
        if job is None:      # cancelled and reaped already: the result is dropped
            return
        self._end_job(job_id)
        if outcome.cancelled:
            self.say_cancelled(job.label)
            if job.on_cancelled is not None:
                job.on_cancelled()
        elif outcome.failure is not None:
            if job.on_failed is not None:
                job.on_failed(outcome.failure)
            self.say_failed(job.label, outcome.failure)
        else:
            self._call_on_done(job.on_done, outcome.result)

    def _call_on_done(self, on_done: Callable[[Any], None], result: Any) -> None:
        try:
            on_done(result)
        except SrsalvageError as exc:
            self.show_error("Error", str(exc))
        except Exception as exc:  # a bug: shown in a dialog, the workstation goes on
            self.show_error("Internal error", f"{type(exc).__name__}: {exc}\n\n"
                                              f"{traceback.format_exc(limit=6)}")

    # -- how the screen says an outcome --------------------------------------------------------
    JOB_OUTCOMES_SAID = True    # False: the screen's own status line says them (its callbacks)

    def say_cancelled(self, label: str) -> None:
        if self.JOB_OUTCOMES_SAID:
            self.notify(f"{label}: cancelled", severity="warning")

    def say_failed(self, label: str, failure: JobFailure) -> None:
        if not self.JOB_OUTCOMES_SAID:
            return
        self.show_error(f"{label} failed", failure.text)

    def show_error(self, title: str, message: str) -> None:
        self.app.push_screen(ErrorDialog(title, message))
