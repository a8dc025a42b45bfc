"""WorkerStatus: one line per running background job with a progress bar, rate and ETA.

Jobs are the app's thread workers (scan, analysis, reconstruction, checks, carving, export). The
widget does not start or cancel anything itself: the app calls `add_job`, `update_job` (from
`ProgressUpdate`s it received via `call_from_thread`) and `remove_job`; Esc in the app cancels the
newest job. Hidden when nothing runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from widgets.disk_map import human


def fmt_rate(bytes_per_s: float) -> str:
    return f"{human(bytes_per_s)}/s" if bytes_per_s > 0 else ""


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s >= 3600:
        return f"ETA {s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"ETA {s // 60}m{s % 60:02d}s"
    return f"ETA {s}s"


def fmt_bytes_done(done: int, total: int) -> str:
    """'1.2 GiB/8.0 GiB': how far a byte-counted pass is (issue 14)."""
    return f"{human(done)}/{human(total)}" if total > 0 else ""


def estimate_text(total_bytes: int, seconds: float | None, rate: float) -> str:
    """What a pass will cost, said before it starts: 'reading 8.0 GiB: about 1m40s at
    85.0 MiB/s' (core.throughput.PassEstimate's numbers)."""
    head = f"reading {human(total_bytes)}"
    if seconds is None or rate <= 0:
        return head
    return f"{head}: about {fmt_eta(seconds).removeprefix('ETA ')} at {fmt_rate(rate)}"


@dataclass
class JobView:
    job_id: str
    label: str
    done: int = 0
    total: int = 0
    rate: float = 0.0
    eta: float | None = None
    byte_unit: bool = True
    detail: str = ""
    estimate: str = ""        # said before the pass starts, until progress comes


class JobRow(Horizontal):
    DEFAULT_CSS = """
    JobRow { height: 1; }
    JobRow > .job-label { width: 24; text-overflow: ellipsis; text-wrap: nowrap; }
    JobRow > ProgressBar { width: 28; }
    JobRow > ProgressBar > Bar { width: 20; }
    JobRow > .job-rate { width: 1fr; color: $text-muted; text-wrap: nowrap; }
    """

    def __init__(self, job: JobView) -> None:
        super().__init__(id=f"job-{job.job_id}")
        self.job = job

    def compose(self) -> ComposeResult:
        yield Label(self.job.label, classes="job-label")
        yield ProgressBar(total=None, show_eta=False, show_percentage=True)
        yield Label("", classes="job-rate")

    def on_mount(self) -> None:
        self.refresh_job()          # what was said before the row was mounted (an estimate)

    def refresh_job(self) -> None:
        job = self.job
        self.query_one(".job-label", Label).update(job.label)
        bar = self.query_one(ProgressBar)
        if job.total > 0:
            bar.update(total=job.total, progress=job.done)
        parts = [job.detail[:20], fmt_rate(job.rate) if job.byte_unit else (f"{job.rate:.0f}/s" if job.rate else ""),
                 fmt_eta(job.eta), "Esc cancels"]
        if job.byte_unit and job.done > 0:
            parts.insert(1, fmt_bytes_done(job.done, job.total))
        elif job.estimate:
            parts.insert(1, job.estimate)
        self.query_one(".job-rate", Label).update("  ".join(p for p in parts if p))


class WorkerStatus(Vertical):
    """The running jobs; hidden when there are none."""

    DEFAULT_CSS = """
    WorkerStatus { height: auto; max-height: 4; background: $boost; display: none; }
    WorkerStatus.-busy { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.jobs: dict[str, JobView] = {}

    def add_job(self, job_id: str, label: str, byte_unit: bool = True) -> None:
        job = JobView(job_id, label, byte_unit=byte_unit)
        self.jobs[job_id] = job
        self.mount(JobRow(job))
        self.set_class(True, "-busy")

    def update_job(self, job_id: str, done: int, total: int, rate: float, eta: float | None,
                   label: str | None = None) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.done, job.total, job.rate, job.eta = done, total, rate, eta
        if label and label != job.label:
            job.detail = label
        for row in self.query(JobRow):
            if row.job is job:
                row.refresh_job()

    def set_estimate(self, job_id: str, text: str) -> None:
        """The cost of a long pass, shown on its line before its first progress."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.estimate = text
        for row in self.query(JobRow):
            if row.job is job and row.is_mounted:   # else its on_mount shows it
                row.refresh_job()

    def remove_job(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        for row in list(self.query(JobRow)):
            if row.job is job:
                row.remove()
        self.set_class(bool(self.jobs), "-busy")
