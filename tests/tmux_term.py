"""The workstation in a real terminal for the tmux tests (no tests here): a tmux server of this
test process's own (`-L`), so sessions of other test runs on the machine — and the default
server exiting when their last session ends — never meet ours; a session per app run, keys sent
to it, the screen read back with `capture-pane`."""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKET = f"srsalvage-tests-{os.getpid()}"


@atexit.register
def _remove_socket() -> None:
    """No server and no socket file of this test process left behind."""
    try:
        subprocess.run(["tmux", "-L", SOCKET, "kill-server"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass
    folder = os.environ.get("TMUX_TMPDIR") or "/tmp"
    try:
        os.remove(os.path.join(folder, f"tmux-{os.getuid()}", SOCKET))
    except OSError:
        pass


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True,
                          timeout=20).stdout


def capture(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for(session: str, pattern: str, timeout: float = 30, poll: float = 0.05) -> str:
    """The screen once `pattern` (a regex) shows in the pane; fails after `timeout` seconds."""
    rx = re.compile(pattern)
    t0 = time.monotonic()
    while True:
        screen = capture(session)
        if rx.search(screen):
            return screen
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{pattern!r} not on screen after {timeout}s:\n{screen}")
        time.sleep(poll)


class Term:
    """One tmux session of `cols` x `rows` running the shell command `cmd`."""

    def __init__(self, cmd: str, cols: int = 120, rows: int = 40, prefix: str = "srs") -> None:
        self.session = f"{prefix}-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "TERM": "xterm-256color"}
        argv = ["tmux", "-L", SOCKET, "new-session", "-d", "-s", self.session, "-x", str(cols),
                "-y", str(rows), cmd]
        for attempt in range(5):
            # right after the last session ended, the server is on its way out and a new
            # session can meet it there ("server exited unexpectedly"): then again, on a new one
            proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"tmux new-session failed: {proc.stderr.strip()}")

    def keys(self, *keys: str) -> None:
        tmux("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        tmux("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        return capture(self.session)

    def wait(self, pattern: str, timeout: float = 30, poll: float = 0.05) -> str:
        return wait_for(self.session, pattern, timeout, poll)

    def pane_pid(self) -> str:
        return tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").strip()

    def close(self) -> None:
        tmux("kill-session", "-t", self.session)
