"""Snapshot tests (pytest-textual-snapshot) of the workstation's main states on the demo SR:
the main screen with a deleted VDI open, the hex view over a VHD's structures at 80x24, the
export dialog warning about reused extents, and the help screen.

Baselines live in tests/__snapshots__ (accepted with --snapshot-update after eyeballing them)."""

from __future__ import annotations

import pytest

from test_ui_support import (Workstation, deleted_claimed, deleted_intact, demo,  # noqa: F401
                             quiet_inputs, wait_idle, wait_until)

pytestmark = pytest.mark.slow


def _app(image, tmp_path):
    from app.workstation import WorkstationApp

    return WorkstationApp(image, case_path=str(tmp_path / "demo.case.json"))


async def _open(app, pilot, manifest, vdi):
    ws = Workstation(app, pilot)
    await ws.idle()
    vg, gen = ws.select(vdi)
    app.main.tree.select_lv(vg.name, gen.seqno, vdi.lv_name)
    await ws.idle()
    await ws.until(lambda: app.main.editor.check.ok is not None)


def test_main_screen_with_the_deleted_vdi(demo, tmp_path, snap_compare):
    image, manifest = demo
    vdi = deleted_intact(manifest)
    app = _app(image, tmp_path)

    async def run_before(pilot):
        await _open(app, pilot, manifest, vdi)
        app.main.editor.table.focus()
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 40))


def test_hex_view_on_a_vhd_footer_at_80x24(demo, tmp_path, snap_compare):
    image, manifest = demo
    vdi = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap")
    app = _app(image, tmp_path)

    async def run_before(pilot):
        await _open(app, pilot, manifest, vdi)
        await pilot.press("v")          # the LV's space, VHD structures overlaid
        await pilot.pause()
        app.main.hex.goto(0x40)          # footer checksum
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def test_export_dialog_warns_about_reused_extents(demo, tmp_path, snap_compare):
    image, manifest = demo
    vdi = deleted_claimed(manifest)
    app = _app(image, tmp_path)

    async def run_before(pilot):
        await _open(app, pilot, manifest, vdi)
        await pilot.press("E")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ExportDialog")
        from textual.widgets import Input

        app.screen.query_one("#dest", Input).value = "export.vhd"
        quiet_inputs(app)
        await pilot.pause()

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 40))


def test_help_screen(demo, tmp_path, snap_compare):
    image, manifest = demo
    app = _app(image, tmp_path)

    async def run_before(pilot):
        await wait_idle(app, pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.pause(0.2)

    assert snap_compare(app, run_before=run_before, terminal_size=(120, 40))
