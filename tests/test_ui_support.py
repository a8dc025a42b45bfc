"""Shared helpers for the workstation's Pilot and snapshot tests (no tests here).

The demo SR (core.demo.build_demo) is built once per test session; each test gets its own case
file so tests stay independent. The `workstation` fixture runs the WorkstationApp under Textual's
Pilot, the setup every workstation test shares:

    async def test_something(demo, workstation):
        image, manifest = demo
        async with workstation(image) as ws:        # analysis done, no job running
            vg, gen = await ws.open_vdi(deleted_intact(manifest))   # in the tree, Enter
            await ws.pilot.press("s", "down", "s")
            await ws.until(lambda: ...)
        # leaving the block presses q (when the test did not quit itself)

A screen alone (the carving screen, the tables) runs under `host(screen)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
from typing import Any, AsyncIterator, Callable

import pytest
from textual.app import App

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


async def wait_while(pilot, busy: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app run while `busy()` holds (at most `timeout` seconds), then settle."""
    t0 = time.monotonic()
    await pilot.pause()
    while busy() and time.monotonic() - t0 < timeout:
        await pilot.pause(0.05)
    await pilot.pause()


class Workstation:
    """The WorkstationApp under the Pilot: its app, pilot, session, main screen, and the steps
    the tests take again and again."""

    def __init__(self, app: Any, pilot: Any) -> None:
        self.app = app
        self.pilot = pilot

    @property
    def session(self) -> Any:
        return self.app.session

    @property
    def main(self) -> Any:
        return self.app.main

    async def idle(self, timeout: float = 60.0) -> None:
        await wait_idle(self.app, self.pilot, timeout)

    async def until(self, predicate: Callable[[], Any], timeout: float = 30.0) -> None:
        await wait_until(self.pilot, predicate, timeout)

    async def rebuilt(self, timeout: float = 120.0) -> None:
        """Wait for the maps rebuilt from VHD structure (evidence without LVM metadata: the
        reconstruction starts after the analysis) and no job running."""
        await self.until(lambda: self.session.rebuilt is not None and not self.main._jobs,
                         timeout)

    async def screen(self, name: str, timeout: float = 30.0) -> Any:
        """Wait until the screen on top is the one of class `name`; that screen."""
        await wait_until(self.pilot, lambda: type(self.app.screen).__name__ == name, timeout)
        return self.app.screen

    def select(self, vdi: Any) -> tuple[Any, Any]:
        """The manifest's VDI selected in the generation that holds it (as Enter in the tree
        would, without the keys); (vg, gen)."""
        vg, gen = holding_generation(self.session.report, vdi)
        self.main.select_vdi(vg, gen, gen.lvs[vdi.lv_name])
        return vg, gen

    async def open_vdi(self, vdi: Any) -> tuple[Any, Any]:
        """The manifest's VDI opened with the keys: its LV highlighted in the tree, Enter;
        (vg, gen) of the generation that holds it."""
        vg, gen = holding_generation(self.session.report, vdi)
        await self.open_lv(vg, gen, vdi.lv_name)
        return vg, gen

    async def open_lv(self, vg: Any, gen: Any, lv_name: str) -> None:
        tree, s = self.main.tree, self.session
        assert tree.select_lv(vg.name, gen.seqno, lv_name)
        tree.focus()
        await self.until(lambda: tree.cursor_node is not None
                         and tree.cursor_node.data.lv is not None
                         and tree.cursor_node.data.lv.name == lv_name)
        await self.pilot.press("enter")
        await self.until(lambda: s.sel.lv is not None and s.sel.lv.name == lv_name)

    async def checked(self) -> Any:
        """The editor's check result once the check of the map shown has run."""
        editor = self.main.editor
        await self.until(lambda: not editor.check.running and editor.check.ok is not None)
        await self.until(lambda: not self.main.running("check"))
        return editor.check


@pytest.fixture
def workstation(tmp_path):
    """workstation(image, size=(120, 40), case="c.json", idle=True, **app options): an async
    context giving a `Workstation` — the app on `image` with the case file tmp_path/case (None:
    the app's default), run under the Pilot at `size`, the analysis done and no job running
    (idle=False: at once); `image` None with session=Session: that session. Leaving it presses
    q when the app still runs."""

    @contextlib.asynccontextmanager
    async def run(image: str | None, size: tuple[int, int] = (120, 40), *,
                  case: str | None = "c.json", idle: bool = True,
                  **options: Any) -> AsyncIterator[Workstation]:
        from app.workstation import WorkstationApp

        case_path = str(tmp_path / case) if case is not None else None
        app = WorkstationApp(image, case_path=case_path, **options)
        async with app.run_test(size=size) as pilot:
            ws = Workstation(app, pilot)
            if idle:
                await ws.idle()
            yield ws
            if app.is_running and app.return_code is None:
                await pilot.press("q")

    return run


class Host(App):
    """An app that shows one screen (a screen tested without the workstation)."""

    def __init__(self, screen: Any) -> None:
        super().__init__()
        self.first = screen

    def on_mount(self) -> None:
        self.push_screen(self.first)


def scattered_pages(data: bytes, rng: random.Random) -> bytearray:
    """The non-empty 8 KiB pages of a data file, shuffled, with random bytes before and
    between them (SQL Server pages scattered over an evidence)."""
    pages = [data[i:i + 8192] for i in range(0, len(data), 8192)
             if data[i:i + 8192].count(0) != 8192]
    rng.shuffle(pages)
    out = bytearray(rng.randbytes(4096))
    for p in pages:
        out += p + rng.randbytes(512 * rng.randrange(0, 3))
    return out


def footer_flood_image(path: Any) -> str:
    """A 2 TiB sparse image with 64 MiB of sectors that all start like a VHD footer at 1 GiB:
    a scan verifies 131072 candidates, seconds of work in its thread. Its path."""
    with open(path, "wb") as f:
        f.truncate(2 << 40)
        f.seek(1 << 30)
        block = (b"conectix" + bytes(504)) * 2048
        for _ in range(64):
            f.write(block)
    return str(path)


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


__all__ = ["demo", "wait_until", "wait_idle", "wait_while", "sha256_file", "deleted_intact",
           "deleted_claimed", "holding_generation", "quiet_inputs", "Workstation", "workstation",
           "Host", "scattered_pages", "footer_flood_image"]
