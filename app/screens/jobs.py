"""Background jobs of the workstation: thread workers around core functions.

Every long piece of work (analysis, scan, reconstruction, checks, chain discovery, export, find)
is `fn(cancel, progress)` from core, run in a Textual thread worker with the worker's own
cancel event (set by Esc or when the app quits) and a progress callback that reaches the
WorkerStatus widget through `call_from_thread`. A result comes back to `on_done` on the UI
thread; a missing engine module, a cancellation or a failure end in `job_ended` (and a failure in
an error dialog, with the traceback when it is a bug) — never in a crash of the UI.

Every started job ends — done, failed or cancelled — within a bounded time after it is
cancelled: a Textual worker cancelled before its task ran never runs its body (nothing would
ever end the job: the bar "checking … --%" of fast edits), so a cancelled job whose body has not
started is ended at once; one whose body ignores the cancel event for CANCEL_GRACE seconds is
abandoned (its result dropped when it comes).
"""

from __future__ import annotations

import itertools
import traceback
from typing import Any, Callable

from textual.worker import Worker, get_current_worker

from app.screens.dialogs import ErrorDialog
from app.screens.session import EngineMissing
from core.errors import Cancelled, SrsalvageError
from core.progress import ProgressUpdate
from widgets.worker_status import WorkerStatus


def run_in_worker(fn: Callable[..., Any], progress: Callable[[ProgressUpdate], None]
                  ) -> tuple[str, Any]:
    """Run fn(cancel, progress) in the current thread worker, with the worker's cancel event;
    what happened, as (outcome, value): ("done", result), ("cancelled", None), ("missing",
    message) for an engine module that is not there, ("failed", (message, traceback or None)),
    the traceback only for a bug (an exception that is not an SrsalvageError). Never raises."""
    worker = get_current_worker()
    try:
        result = fn(worker.cancelled_event, progress)
    except Cancelled:
        return "cancelled", None
    except EngineMissing as exc:
        return "missing", str(exc)
    except SrsalvageError as exc:
        return "failed", (str(exc), None)
    except Exception as exc:  # a bug in the engine: shown, never a crash of the UI
        return "failed", (f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=6))
    if worker.is_cancelled:
        return "cancelled", None
    return "done", result


CANCEL_GRACE = 5.0   # seconds a cancelled job's body may take to notice before it is abandoned


class JobsMixin:
    """start_job / running / cancel for a Screen that has a WorkerStatus child."""

    _jobs: dict[str, tuple[str, Worker]]
    _job_ids: Any

    def init_jobs(self) -> None:
        self._jobs = {}
        self._job_ids = itertools.count(1)
        self._started: set[str] = set()
        self._labels: dict[str, str] = {}

    def start_job(self, kind: str, label: str, fn: Callable[..., Any],
                  on_done: Callable[[Any], None], exclusive: bool = False,
                  byte_unit: bool = True) -> Worker:
        """Run fn(cancel, progress) in a thread worker; on_done(result) back on the UI thread."""
        if exclusive:
            for jid, (k, w) in list(self._jobs.items()):
                if k == kind:
                    self.cancel_job(jid, quiet=True)
        job_id = f"{kind}-{next(self._job_ids)}"
        status = self.query_one(WorkerStatus)
        status.add_job(job_id, label, byte_unit)
        app = self.app

        def progress(update: ProgressUpdate) -> None:
            try:
                app.call_from_thread(status.update_job, job_id, update.done, update.total,
                                     update.rate, update.eta, update.label or None)
            except RuntimeError:  # the app is closing
                pass

        def body() -> None:
            if job_id not in self._jobs:       # ended before it could start
                return
            self._started.add(job_id)
            outcome, value = run_in_worker(fn, progress)
            if outcome == "done":
                self._from_thread(self._job_done, job_id, on_done, value)
            elif outcome == "cancelled":
                self._from_thread(self._job_cancelled, job_id, label)
            elif outcome == "missing":
                self._from_thread(self._job_missing, job_id, label, value)
            else:
                self._from_thread(self._job_failed, job_id, label, *value)

        worker = self.run_worker(body, name=job_id, group=kind, description=label, thread=True,
                                 exit_on_error=False)
        self._jobs[job_id] = (kind, worker)
        self._labels[job_id] = label
        return worker

    def cancel_job(self, job_id: str, quiet: bool = False) -> None:
        """Cancel one job; it ends (cancelled) within CANCEL_GRACE seconds whatever its body does."""
        if job_id not in self._jobs:
            return
        kind, worker = self._jobs[job_id]
        worker.cancel()
        if not quiet:
            self.notify(f"cancelling {worker.description}…")
        self.set_timer(0.05, lambda: self._reap(job_id, abandon=False))
        self.set_timer(CANCEL_GRACE, lambda: self._reap(job_id, abandon=True))

    def _reap(self, job_id: str, abandon: bool) -> None:
        """End a cancelled job that never started (or, after the grace time, one that ignores
        its cancel event: its result, when it comes, is dropped)."""
        if job_id not in self._jobs:
            return
        if job_id in self._started and not abandon:
            return
        kind, worker = self._jobs[job_id]
        self._end_job(job_id)
        if abandon:
            self.notify(f"{worker.description}: did not stop within {CANCEL_GRACE:g} s; "
                        f"abandoned (its result will be dropped)", severity="warning")
        self.job_ended(kind, "cancelled", "")

    def running_jobs(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Labels of the jobs still running (of these kinds), oldest first."""
        return [self._labels.get(jid, jid) for jid, (k, _) in self._jobs.items()
                if kinds is None or k in kinds]

    def _from_thread(self, fn: Callable, *args: Any) -> None:
        try:
            self.app.call_from_thread(fn, *args)
        except RuntimeError:
            pass

    def _end_job(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._started.discard(job_id)
        self._labels.pop(job_id, None)
        try:
            self.query_one(WorkerStatus).remove_job(job_id)
        except Exception:  # the screen is closing
            pass

    def _job_done(self, job_id: str, on_done: Callable[[Any], None], result: Any) -> None:
        if job_id not in self._jobs:      # cancelled and reaped already: the result is dropped
            return
        self._end_job(job_id)
        try:
            on_done(result)
        except SrsalvageError as exc:
            self.show_error("Error", str(exc))
        except Exception as exc:  # a bug: shown in a dialog, the workstation goes on
            self.show_error("Internal error", f"{type(exc).__name__}: {exc}\n\n"
                                              f"{traceback.format_exc(limit=6)}")

    def _job_cancelled(self, job_id: str, label: str) -> None:
        if job_id not in self._jobs:
            return
        kind = self._jobs.get(job_id, ("", None))[0]
        self._end_job(job_id)
        self.notify(f"{label}: cancelled", severity="warning")
        self.job_ended(kind, "cancelled", "")

    def _job_missing(self, job_id: str, label: str, message: str) -> None:
        """An engine module is not there: said where the result would have appeared."""
        if job_id not in self._jobs:
            return
        kind = self._jobs.get(job_id, ("", None))[0]
        self._end_job(job_id)
        self.job_ended(kind, "missing", message)
        self.notify(message, severity="warning")

    def _job_failed(self, job_id: str, label: str, message: str, trace: str | None) -> None:
        if job_id not in self._jobs:
            return
        kind = self._jobs.get(job_id, ("", None))[0]
        self._end_job(job_id)
        self.job_ended(kind, "failed", message)
        text = message if trace is None else f"{message}\n\n{trace}"
        self.show_error(f"{label} failed", text)

    def job_ended(self, kind: str, outcome: str, message: str) -> None:
        """Hook: a job of `kind` ended without a result ("cancelled", "missing", "failed")."""

    def show_error(self, title: str, message: str) -> None:
        self.app.push_screen(ErrorDialog(title, message))

    def action_cancel_job(self) -> None:
        if not self._jobs:
            return
        self.cancel_job(list(self._jobs)[-1])

    def running(self, kind: str) -> bool:
        return any(k == kind for k, _ in self._jobs.values())
