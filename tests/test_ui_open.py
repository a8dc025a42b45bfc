"""`srsalvage open` on bad input: a missing path, a directory, something that is not a disk, an
unopenable or unreadable device, the evidence given as case file, a blank image — a clear message,
never a traceback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from app.cli import main
from test_ui_support import workstation  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def _one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_missing_path_is_one_line_before_the_app_starts(tmp_path):
    proc = _cli("open", str(tmp_path / "nope.img"))
    assert proc.returncode == 1
    assert "no such file" in _one_line(proc.stderr)
    assert proc.stdout == ""  # the terminal was never taken over


def test_directory_is_one_line(tmp_path):
    proc = _cli("open", str(tmp_path))
    assert proc.returncode == 1
    assert "is a directory" in _one_line(proc.stderr)


def test_character_device_is_not_a_disk():
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    proc = _cli("open", "/dev/null")
    assert proc.returncode == 1
    assert "not a regular file or block device" in _one_line(proc.stderr)


def test_unopenable_device_is_one_line(tmp_path, monkeypatch, capsys):
    image = tmp_path / "locked.img"
    image.write_bytes(bytes(4096))
    import core.source

    real_open = os.open

    def deny(path, flags, *a, **kw):
        if os.fspath(path) == str(image):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(core.source.os, "open", deny)
    assert main(["open", str(image)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "cannot open read-only: Permission denied" in line


def test_case_file_on_the_evidence_is_refused(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))
    proc = _cli("open", str(image), "--case", str(image))
    assert proc.returncode == 3
    assert "is the evidence" in _one_line(proc.stderr)
    assert image.read_bytes() == bytes(4096)


async def test_unreadable_sectors_open_and_are_reported_in_the_header(tmp_path, workstation):
    from app.workstation import open_session

    image = tmp_path / "dying.img"
    image.write_bytes(b"\xaa" * (1 << 20))
    session = open_session(str(image))

    def failing(offset, length):
        raise OSError(5, "Input/output error")

    session.ev._pread_raw = failing
    async with workstation(None, case=None, idle=False, session=session) as ws:
        app, pilot = ws.app, ws.pilot
        await pilot.pause(0.3)
        main_screen = app.main
        main_screen._update_header()
        await pilot.pause()
        header = str(main_screen.query_one("#header").render())
        assert "unreadable ranges" in header
        assert session.ev.unreadable  # the hex view's reads were recorded, zeros shown


@pytest.mark.skipif(importlib.util.find_spec("core.lvm.analyse") is None,
                    reason="LVM analysis engine (core.lvm.analyse) not written yet")
async def test_blank_image_opens_to_nothing_recognised_scan(tmp_path, workstation):
    image = tmp_path / "blank.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    async with workstation(str(image), case=None, idle=False) as ws:
        app, pilot = ws.app, ws.pilot
        await ws.until(lambda: app.main.analysed, timeout=30)
        await pilot.pause(0.1)
        status = str(app.main.query_one("#status").render())
        assert "nothing recognised" in status and "scan" in status
        tree_text = " ".join(str(n.label) for n in app.main.tree.root.children)
        assert "nothing recognised" in tree_text
        from textual.widgets import Footer

        footer = app.main.query_one(Footer)                 # key bindings shown without a key press
        assert len(footer.children) >= 5 and footer.region.height == 1


@pytest.mark.skipif(importlib.util.find_spec("core.lvm.analyse") is None,
                    reason="LVM analysis engine (core.lvm.analyse) not written yet")
@pytest.mark.parametrize("size", [0, 1000])
async def test_empty_and_tiny_images_open_without_a_traceback(tmp_path, size, workstation):
    image = tmp_path / "tiny.img"
    image.write_bytes(b"\x01" * size)
    async with workstation(str(image), (80, 24), case=None, idle=False) as ws:
        app, pilot = ws.app, ws.pilot
        await ws.until(lambda: app.main.analysed or app.session.analysis_error, timeout=30)
        assert type(app.screen).__name__ == "MainScreen"
        await pilot.press("4", "down", "end", "pagedown", "2", "right", "minus", "plus")
        await pilot.pause()
        assert type(app.screen).__name__ == "MainScreen"
