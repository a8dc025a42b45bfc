"""Shared helpers for the workstation's Pilot and snapshot tests (no tests here).

The demo SR (core.demo.build_demo) is built once per test session; each test gets its own case
file so tests stay independent.
"""

from __future__ import annotations

import hashlib
import time

import pytest

DEMO_NAME = "demo.img"


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """(image path, manifest) of the demo SR, built once."""
    demo_mod = pytest.importorskip("core.demo", reason="demo builder (core.demo) not written yet")
    folder = tmp_path_factory.mktemp("demo-sr")
    path = str(folder / DEMO_NAME)
    manifest = demo_mod.build_demo(path)
    return path, manifest


async def wait_until(pilot, predicate, timeout: float = 30.0, step: float = 0.02) -> None:
    """Let the app run until `predicate()` holds (fails the test after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        await pilot.pause(step)


async def wait_idle(app, pilot, timeout: float = 60.0) -> None:
    """Analysis done and no background job running."""
    await wait_until(pilot, lambda: app.main.analysed, timeout)
    await wait_until(pilot, lambda: not app.main._jobs, timeout)
    await pilot.pause(0.05)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def deleted_intact(manifest):
    """The deleted VDI whose extents no newer LV took."""
    return next(v for v in manifest.vdis if v.status == "deleted" and not v.claimed_by
                and v.disk_type is not None)


def deleted_claimed(manifest):
    """The deleted VDI whose first extents a newer LV claimed."""
    return next(v for v in manifest.vdis if v.status == "deleted" and v.claimed_by)


def holding_generation(report, vdi):
    """(vg, gen): the newest generation whose LVs include the VDI's LV."""
    for vg in report.volume_groups:
        for gen in vg.generations:
            if vdi.lv_name in gen.lvs:
                return vg, gen
    raise AssertionError(f"{vdi.lv_name} in no generation")


def quiet_inputs(app) -> None:
    """No blinking cursors in screenshots."""
    from textual.widgets import Input

    for screen in app.screen_stack:
        for widget in screen.query(Input):
            widget.cursor_blink = False


__all__ = ["demo", "wait_until", "wait_idle", "sha256_file", "deleted_intact", "deleted_claimed",
           "holding_generation", "quiet_inputs"]
