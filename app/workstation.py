"""The srsalvage workstation: a Textual App over one evidence image, read-only.

`run_workstation(image_path, case_path=None)` is what `srsalvage open` and `srsalvage demo` call.
The evidence is opened (read-only) and the case loaded before the terminal is taken over, so a bad
path, a directory or an unreadable device gives one line on stderr (SourceError) — never a
traceback or a half-drawn screen.
"""

from __future__ import annotations

import os
import sys

from textual.app import App

from app.screens.main import MainScreen
from app.screens.palette import WorkstationCommands
from app.screens.quit import QuitDialog, session_summary
from app.screens.session import Session


# jobs whose loss a technician would regret: quitting while one runs asks first (a scan, the
# checks, chain discovery and the analysis are simply redone on the next open)
LASTING_JOBS = ("export", "carve")


class WorkstationApp(App):
    """One screen from which the whole recovery is done."""

    CSS_PATH = "workstation.tcss"
    TITLE = "srsalvage"
    COMMANDS = App.COMMANDS | {WorkstationCommands}
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, image_path: str | None = None, case_path: str | None = None, *,
                 session: Session | None = None, case_mode: str = "case") -> None:
        super().__init__()
        self.exit_after_triage = False      # `open --headless`: leave once the triage is done
        if session is None:
            if image_path is None:
                raise ValueError("an image path or a session is needed")
            session = Session(image_path, case_path, case_mode=case_mode)
        self.session = session
        self.sub_title = os.path.basename(session.image_path)

    # background jobs (scan verify loops, reconstruction) are Python threads sharing the GIL with
    # the UI: a 1 ms switch interval (Python's default is 5 ms) lets a key reach the screen sooner
    SWITCH_INTERVAL = 0.001

    def on_load(self) -> None:
        self._previous_switch = sys.getswitchinterval()
        sys.setswitchinterval(self.SWITCH_INTERVAL)

    def get_default_screen(self) -> MainScreen:
        return MainScreen(self.session)

    @property
    def main(self) -> MainScreen:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                return screen
        raise LookupError("main screen not mounted")  # pragma: no cover

    def action_quit(self) -> None:
        """Quit; with jobs running (an export, a carve, a scan) ask first and say what ran."""
        try:
            running = self.main.running_jobs(LASTING_JOBS)
        except LookupError:
            running = []
        running += [s.job_label for s in self.screen_stack if getattr(s, "busy", False)
                    and getattr(s, "job_label", "") == "exporting"]   # the carving screen's export
        if not running:
            self._leave()
            return
        if isinstance(self.screen, QuitDialog):
            return

        def answered(quit_anyway: bool | None) -> None:
            if quit_anyway:
                try:
                    self.session.case.log("quit", detail="left with jobs running: "
                                          + "; ".join(running))
                except Exception:  # a case that cannot be saved must not keep the app open
                    pass
                self._leave()

        self.push_screen(QuitDialog(running, session_summary(self.session.case)), answered)

    def _leave(self) -> None:
        # thread workers cannot be killed: ask every job to stop, then leave
        self.workers.cancel_all()
        self.exit()

    def on_unmount(self) -> None:
        sys.setswitchinterval(getattr(self, "_previous_switch", 0.005))
        self.session.ev.close()


def open_session(image_path: str, case_path: str | None = None, more_images=(),
                 backups=(), pv_offsets=(), mapfile: str | None = None,
                 case_mode: str = "case", no_index: bool = False) -> Session:
    """Open evidence and case; SourceError / UnsafeError (one line) when impossible (a case
    made on other evidence: CaseMismatch, which names --no-case and --new-case).
    `more_images`: the other disks of an SR over several PVs, read as one space; `mapfile`:
    the ddrescue mapfile of the first image (found beside it when not given)."""
    from core.evidence_set import open_images
    ev = open_images([image_path, *more_images], mapfile)
    try:
        return Session(image_path, case_path, evidence=ev, backups=backups,
                       pv_offsets=pv_offsets, case_mode=case_mode, no_index=no_index)
    except BaseException:
        ev.close()
        raise


def run_workstation(image_path: str, case_path: str | None = None, more_images=(),
                    backups=(), pv_offsets=(), mapfile: str | None = None,
                    case_mode: str = "case", no_index: bool = False) -> int:
    """Run the workstation on `image_path` until the technician quits; returns an exit code."""
    session = open_session(image_path, case_path, more_images, backups, pv_offsets, mapfile,
                           case_mode, no_index)
    app = WorkstationApp(session=session)
    app.run()
    return int(app.return_code or 0)


def run_headless_triage(image_path: str, case_path: str | None = None, more_images=(),
                        backups=(), pv_offsets=(), mapfile: str | None = None,
                        case_mode: str = "case", no_index: bool = False,
                        size: tuple[int, int] = (120, 40)) -> dict:
    """Open the workstation without a terminal (Textual's headless driver), let it run its
    triage as it does on screen (analysis, VHD chains, reconstruction when the metadata is
    gone) and return what it found once every triage job ended (MainScreen.triage_summary).
    `srsalvage open --headless` prints it; bench/io.py measures what opening reads with it."""
    session = open_session(image_path, case_path, more_images, backups, pv_offsets, mapfile,
                           case_mode, no_index)
    app = WorkstationApp(session=session)
    app.exit_after_triage = True
    result = app.run(headless=True, size=size)
    return result if isinstance(result, dict) else {}
