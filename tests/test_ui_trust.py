"""Issue 15's numbered items in the workstation (Pilot): hex labels follow the space shown (2),
every job ends after fast edits and Esc (4), quitting with jobs running asks (6), the forced
export's done dialog and audit entry list what could not be trusted (1, 5)."""

from __future__ import annotations

import json
import os
import time

import pytest

from test_ui_support import (deleted_claimed, deleted_intact, demo, holding_generation,  # noqa: F401
                             wait_until, workstation)

pytestmark = pytest.mark.slow


def _labels(app):
    main = app.main
    pane = main.query_one("#hexpane")
    return str(pane.border_title), str(pane.border_subtitle), str(main.query_one("#fieldpanel").render())


async def test_hex_labels_follow_the_space_after_v_and_after_another_vdi(demo, workstation):
    image, manifest = demo
    a = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap")
    b = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap" and v is not a)
    async with workstation(image, (160, 50)) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        await ws.open_vdi(a)
        for mode in ("lv", "virtual"):
            await pilot.press("v")
            await pilot.pause()
            assert main.hex_mode == mode
            title, sub, panel = _labels(app)
            info = main.hex.cursor_info()
            assert main.hex.space_title in title and main.hex.space_title in sub
            assert f"{info.offset:#x}" in sub
            disk = f"disk {info.disk_offset:#x}" if info.disk_offset is not None else "disk —"
            assert disk in sub, (sub, disk)
        # another VDI while the hex view shows a virtual disk: its labels, at once
        await ws.open_vdi(b)
        await pilot.pause()
        assert main.hex_mode == "virtual" and b.lv_name[:12] in main.hex.space_title
        title, sub, panel = _labels(app)
        info = main.hex.cursor_info()
        assert main.hex.space_title in title and main.hex.space_title in sub
        want = f"{info.disk_offset:#x}" if info.disk_offset is not None else "—"
        assert want in panel and want in sub


async def test_every_job_ends_after_fast_edits_and_esc(demo, workstation):
    image, manifest = demo
    vdi = deleted_intact(manifest)
    async with workstation(image) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        await ws.open_vdi(vdi)
        main.editor.table.focus()
        await pilot.pause()
        for _ in range(3):
            for key in "J u J u J u s down s u".split():
                await pilot.press(key)
            await pilot.press("escape")
        # edits that reach the screen in one batch (a terminal delivers buffered keys together):
        # each starts a check that cancels the previous one before its worker could run
        for _ in range(4):
            main.run_checks()
        main.action_cancel_job()
        # every started job ends (done, failed or cancelled) within a bounded time
        from widgets.worker_status import WorkerStatus

        bars = main.query_one(WorkerStatus).jobs
        deadline = time.monotonic() + 20
        while (main._jobs or bars) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert not main._jobs and not bars, (main._jobs, list(bars))
        assert not main.editor.check.running


async def test_quit_with_a_job_running_asks_first(demo, tmp_path, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        import threading

        release = threading.Event()

        def slow(cancel, progress):
            while not cancel.is_set() and not release.is_set():
                time.sleep(0.01)
            return None

        main.start_job("export", "export VHD-test", slow, lambda r: None)
        await pilot.pause(0.1)
        await pilot.press("q")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "QuitDialog"
        text = str(app.screen.query_one("#quit-text").render())
        assert "export VHD-test" in text
        await pilot.press("escape")         # stay
        await pilot.pause(0.1)
        assert app.is_running and main._jobs
        await pilot.press("q")
        await pilot.pause(0.1)
        await pilot.click("#quit-anyway")
        await pilot.pause(0.2)
        release.set()
    assert app.return_code in (0, None)
    # the audit log says the job was running when the technician quit
    from core.case import Case

    audit = Case.load(str(tmp_path / "c.json")).audit
    quit_entry = [a for a in audit if a["action"] == "quit"]
    assert quit_entry and "export VHD-test" in quit_entry[-1]["detail"]


async def test_forced_export_dialog_and_audit_list_the_untrusted_ranges(
        demo, tmp_path, workstation):
    image, manifest = demo
    vdi = deleted_claimed(manifest)
    async with workstation(image) as ws:
        app, pilot = ws.app, ws.pilot
        s = app.session
        await ws.open_vdi(vdi)
        from textual.widgets import Checkbox, Input

        await pilot.press("E")
        await ws.screen("ExportDialog")
        out = str(tmp_path / "x.vhd")
        app.screen.query_one("#dest", Input).value = out
        app.screen.query_one("#force", Checkbox).value = True
        await pilot.click("#ok")
        await ws.screen("ExportDone", timeout=60)
        text = str(app.screen.query_one("#export-result").render())
        title = str(app.screen.query_one(".title").render())
        assert "NOT the whole disk" in title
        owner = next(iter(vdi.claimed_by.values()))
        assert "untrusted: virtual 0x0-0x3000000 lost" in text and owner in text
        entry = [a for a in s.case.audit if a["action"] == "export"][-1]
        assert entry["forced"] and entry["generation"] == holding_generation(s.report, vdi)[1].seqno
        assert entry["untrusted"] and entry["untrusted"][0]["trust"] == "lost"
        assert entry["map"] and entry["map_runs"]
        await pilot.press("escape")
        # the export dialog remembers the folder of the last export
        await pilot.press("E")
        await ws.screen("ExportDialog")
        dest = app.screen.query_one("#dest", Input).value
        assert os.path.dirname(dest) == str(tmp_path) and ":" not in os.path.basename(dest)
        await pilot.press("escape")


async def test_carve_export_is_recorded_in_the_audit_log(demo, tmp_path, workstation):
    image, manifest = demo
    out = tmp_path / "carved"
    async with workstation(image) as ws:
        app, pilot = ws.app, ws.pilot
        await pilot.press("c")
        await ws.screen("CarvingScreen")
        screen = app.screen
        from textual.widgets import Input

        screen.query_one("#carve-out", Input).value = str(out)
        await pilot.press("r")
        await wait_until(pilot, lambda: not screen.busy and screen.archives is not None, timeout=120)
        await pilot.press("x")
        await wait_until(pilot, lambda: not screen.busy and screen.exported, timeout=120)
        entry = [a for a in app.session.case.audit if a["action"] == "carve"]
        assert entry, app.session.case.audit
        files = entry[-1]["files"]
        assert files and all(f["sha256"] and f["bytes"] for f in files)
        import hashlib

        for f in files:
            assert hashlib.sha256(open(f["path"], "rb").read()).hexdigest() == f["sha256"]
        archives = list(screen.archives)
        await pilot.press("escape")
        await ws.screen("MainScreen")
        # the carving results are kept when the screen is left and opened again
        await pilot.press("c")
        await ws.screen("CarvingScreen")
        again = app.screen
        assert again is not screen and again.archives == archives
        from textual.widgets import DataTable

        await wait_until(pilot, lambda: again.query_one(DataTable).row_count >= len(archives))
        await pilot.press("escape")


async def test_generation_filter_and_jump_to_a_vdi_by_label(demo, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot = ws.app, ws.pilot
        tree = app.main.tree
        vg = app.session.report.volume_groups[0]
        tree.focus()
        await pilot.press("G")
        await pilot.pause()
        shown = [seq for (name, seq) in tree._gen_nodes]
        assert 1 < len(shown) < len(vg.generations)
        sig = {g.seqno: tree._lv_signature(g) for g in vg.generations}
        order = [g.seqno for g in vg.generations]
        for seq in shown:
            i = order.index(seq)
            older = order[i + 1] if i + 1 < len(order) else None
            assert older is None or sig[seq] != sig[older] or seq == vg.generations[0].seqno
        hidden = [g.seqno for g in vg.generations if g.seqno not in shown]
        assert all(sig[s] == sig[order[order.index(s) + 1]] for s in hidden)
        await pilot.press("G")
        await pilot.pause()
        assert len(tree._gen_nodes) == len(vg.generations)
        # type-ahead: ' then part of a name label opens that VDI
        vdi = next(v for v in manifest.vdis if v.label == "temp export")
        await pilot.press("apostrophe")
        await ws.screen("InputDialog")
        for ch in "temp exp":
            await pilot.press(ch if ch != " " else "space")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.session.sel.lv is not None
                         and app.session.sel.lv.name == vdi.lv_name)


async def test_report_key_find_wraps_and_tree_fits_labels_at_120_columns(
        demo, tmp_path, workstation):
    image, manifest = demo
    case = str(tmp_path / "c.json")
    async with workstation(image) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        # the tree is wide enough for the name labels of the current generation at 120 columns
        tree = main.tree
        labels = [v.label for v in manifest.vdis if v.status == "live" and v.label]
        lines = []
        for (vg, seq, name), node in tree._lv_nodes.items():
            depth = 0
            parent = node.parent
            while parent is not None and parent is not tree.root:
                depth += 1
                parent = parent.parent
            plain = node.label.plain
            # up to the end of the name label (kind and size may be cut at the right)
            lines.append((depth * 4 + (plain.find("”") + 1 if "”" in plain else len(plain)), plain))
        shown = [plain for width, plain in lines if width <= tree.scrollable_content_region.width]
        for label in labels:
            assert any(f"“{label}”" in plain for plain in shown), (label, tree.size)
        # find wraps to the start of the space and says so
        main.hex.goto(main.hex.space.size - 1)
        main.last_needle = b"LABELONE"
        main._find(main.hex.cursor + 1)
        await wait_until(pilot, lambda: not main.running("find") and main.hex.cursor < 2 << 20,
                         timeout=60)
        assert main.session.ev.read(main.hex.cursor, 8) == b"LABELONE"
        # P writes the recovery report beside the case
        await pilot.press("P")
        out = os.path.splitext(case)[0] + ".report.html"
        await wait_until(pilot, lambda: os.path.exists(out) and not main.running("report"),
                         timeout=60)
        page = open(out, encoding="utf-8").read()
        assert "Recovery report" in page and "hash chain intact" in page


async def test_case_of_another_vg_is_set_aside_and_no_case_mode_records_nothing(
        demo, tmp_path, workstation):
    """Item 3 in the workstation: a case whose VG ids are not this evidence's is detached after
    the analysis (nothing recorded, said in an error notification and the header); `--no-case`
    opens read-only without a case; `--new-case` keeps the old one aside."""
    image, manifest = demo
    from core.case import Case, evidence_identity
    from core.source import Evidence

    case_path = tmp_path / "c.json"
    with Evidence(image) as ev:
        case, _ = Case.open(image, str(case_path), image_bytes=ev.size,
                            identity=evidence_identity(ev))
    case.lvm_identity = [{"vg": manifest.vg_name, "id": "OTHER-VG-ID", "pvs": ["OTHER-PV"]}]
    case.log("note", detail="made on another SR with the same first bytes")
    before = case_path.read_bytes()
    async with workstation(image) as ws:
        app, pilot, s = ws.app, ws.pilot, ws.session
        assert s.case_mismatch and "OTHER-VG-ID" in s.case_mismatch and manifest.vg_id in s.case_mismatch
        assert s.case.path is None
        assert "NO CASE" in str(app.main.query_one("#header").render())
        vdi = deleted_intact(manifest)
        await ws.open_vdi(vdi)
        app.main.editor.table.focus()
        await pilot.press("s", "down", "s")
        await pilot.pause(0.2)
        await pilot.press("q")
    # nothing written but the opening itself (before the analysis could see the VG ids)
    after = json.loads(case_path.read_text())
    old = json.loads(before)
    assert [a for a in after["audit"] if a["action"] != "case-open"] == \
        [a for a in old["audit"] if a["action"] != "case-open"]
    assert after["maps"] == old["maps"] and after["undo"] == old["undo"]
    async with workstation(image, case="none.json", case_mode="none") as ws:
        assert ws.session.case.path is None
        await ws.pilot.press("q")
    assert not (tmp_path / "none.json").exists()
    async with workstation(image, case_mode="new") as ws:
        assert ws.session.case.path == str(case_path) and not ws.session.case_mismatch
        await ws.pilot.press("q")
    assert [p for p in os.listdir(tmp_path) if ".previous-" in p]
    assert json.loads(case_path.read_text())["audit"][0]["action"] == "case-new"
