"""Workstation behaviours on the demo SR: engine suggestions accepted in the editor, a scan in the
background (progress, carve hits, Esc cancels), the command palette, help, the 80x24 layout."""

from __future__ import annotations

import pytest

from test_ui_support import (deleted_intact, demo, footer_flood_image,  # noqa: F401
                             holding_generation, wait_until, workstation)

pytestmark = pytest.mark.slow


async def test_engine_suggestions_fix_a_scrambled_map(demo, workstation):
    image, manifest = demo
    vdi = deleted_intact(manifest)
    async with workstation(image) as ws:
        app, pilot, s, main = ws.app, ws.pilot, ws.session, ws.main
        ws.select(vdi)
        editor = main.editor
        editor.table.focus()
        editor.table.move_cursor(row=0)
        await pilot.press("s", "down", "down", "s")      # LE 0 <-> LE 2 by hand: wrong
        await wait_until(pilot, lambda: [e.pe for e in editor.extents][0] == vdi.pes[2])
        await wait_until(pilot, lambda: not main.running("check") and editor.check.ok is not None)
        assert editor.check.ok is False
        await pilot.press("a")                            # no suggestions yet: a notice only
        await pilot.press("R")                            # rebuild maps in the background
        await wait_until(pilot, lambda: bool(s.suggestions), timeout=120)
        await wait_until(pilot, lambda: not main._jobs)
        assert [e.pe for e in s.suggestions[vdi.lv_name]] == vdi.pes
        await pilot.press("A")                            # accept all above a confidence
        await ws.screen("InputDialog")
        await pilot.press("enter")                        # default 0.9
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == vdi.pes)
        await wait_until(pilot, lambda: not main.running("check") and editor.check.ok is not None)
        assert editor.check.ok
        assert s.case.audit[-1]["action"] in ("accept", "case-open") or any(
            a["action"] == "accept" for a in s.case.audit)


async def test_scan_runs_in_the_background_and_esc_cancels(tmp_path, workstation):
    from widgets.worker_status import WorkerStatus

    # 2 TiB sparse with 64 MiB of VHD-footer-like sectors: seconds of candidate checks
    image = footer_flood_image(tmp_path / "busy.img")
    async with workstation(image) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        status = main.query_one(WorkerStatus)
        before = app.session.scan_result      # the triage's signatures (from the evidence index)
        await pilot.press("S")
        await wait_until(pilot, lambda: main.running("scan"))
        assert status.has_class("-busy") and status.jobs
        # (how fast keys are answered during a scan is measured for real in test_ui_tmux: the
        # Pilot itself waits for the process to look idle, which a busy worker never does)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not main.running("scan"), timeout=60)
        await pilot.pause()
        assert not status.has_class("-busy")
        assert app.session.scan_result is before        # a cancelled scan reports nothing


async def test_scan_of_the_demo_reports_its_structures(demo, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot = ws.app, ws.pilot
        await pilot.press("S")
        await wait_until(pilot, lambda: app.session.scan_result is not None, timeout=120)
        kinds = {f.kind for f in app.session.scan_result.findings}
        assert {"vhd-footer", "lvm-label"} <= kinds


async def test_command_palette_lists_actions_generations_and_vdis(demo, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot = ws.app, ws.pilot
        from app.screens.palette import ACTIONS, WorkstationCommands

        provider = WorkstationCommands(app.screen)
        entries = provider._entries()
        titles = [t for t, _, _ in entries]
        for title, _, _ in ACTIONS:
            assert title in titles
        assert any(t.startswith("Choose generation seqno 1 ") for t in titles)
        assert any(t.startswith("Open VDI MGT") for t in titles)
        # every palette action names a real action of the main screen or the app
        import re as _re

        for _, action, _ in ACTIONS:
            name = _re.match(r"(?:app\.)?(\w+)", action).group(1)
            target = app if action.startswith("app.") else app.main
            assert callable(getattr(target, f"action_{name}", None)), action
        # run one through the palette UI: the help screen
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: "CommandPalette" in type(app.screen).__name__)
        await pilot.press(*"Help")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await ws.screen("HelpScreen")
        await pilot.press("escape")


async def test_80x24_shows_editor_or_hex_and_help_with_question_mark(demo, workstation):
    image, manifest = demo
    vdi = deleted_intact(manifest)
    async with workstation(image, (80, 24)) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        assert main.has_class("-compact")
        vg, gen = holding_generation(app.session.report, vdi)
        main.choose_generation(vg, gen)
        main.select_vdi(vg, gen, gen.lvs[vdi.lv_name])
        await pilot.pause()
        # the one-line header still names the chosen generation at 80 columns
        header = main.query_one("#header")
        assert f"seqno {gen.seqno}" in header.render_line(0).text and header.region.height == 1
        await pilot.press("3")
        await pilot.pause()
        assert main.editor.display and main.editor.region.height > 3
        # the editor's keys are in the footer while it has the focus, even at 80 columns
        from textual.widgets import Footer

        footer = main.query_one(Footer)
        shown = " ".join(str(k.render()) for k in footer.children if k.region.right <= 80)
        for label in ("Swap", "Undo", "Redo"):
            assert label in shown, shown
        assert main.query_one("#hexpane").region.height == 0
        await pilot.press("4")
        await pilot.pause()
        assert main.query_one("#hexpane").region.height > 3 and main.editor.region.height == 0
        # the hex rows fit the width: the ASCII column is whole
        row = main.hex.render_line(0).text
        assert len(row.rstrip()) <= main.hex.size.width and row.rstrip().endswith(
            "".join(chr(b) if 32 <= b < 127 else "." for b in main.hex.space.read(
                main.hex.scroll_offset.y * 16, 16)))
        await pilot.press("question_mark")
        await ws.screen("HelpScreen")
        await pilot.press("escape")


@pytest.fixture(scope="module")
def demo_no_metadata(tmp_path_factory):
    demo_mod = pytest.importorskip("core.demo")
    path = str(tmp_path_factory.mktemp("demo-nometa") / "nometa.img")
    return path, demo_mod.build_demo(path, damage=["partition-table", "metadata"])


async def test_no_metadata_vdis_rebuilt_fixed_by_hand_and_exported(
        demo_no_metadata, tmp_path, workstation):
    """All LVM metadata gone: the engine's maps from VHD structure appear as a generation; a
    wrong or unknown extent is set by hand (p), the checks pass, the export is byte-exact."""
    image, manifest = demo_no_metadata
    async with workstation(image, idle=False) as ws:
        app, pilot, s, main = ws.app, ws.pilot, ws.session, ws.main
        await ws.rebuilt()
        assert s.sel.vg is s.rebuilt and s.sel.gen.source == "reconstruct"
        by_uuid = {v.vhd_unique_id: v for v in manifest.vdis if v.vhd_unique_id}
        # each rebuilt LV by its VHD's unique id, as the reconstruction found it
        rebuilt = {s.reconstruction.vdi(lv.name).vhd_uuid: lv for lv in s.sel.gen.lvs.values()}
        assert set(rebuilt) <= set(by_uuid) and len(rebuilt) >= 5
        # a VDI the engine could not place completely or correctly
        wrong = [u for u, lv in rebuilt.items()
                 if lv.pes() != by_uuid[u].pes and by_uuid[u].parent_key is None]
        target = wrong[0] if wrong else next(iter(rebuilt))
        truth = by_uuid[target]
        lv = rebuilt[target]
        main.select_vdi(s.sel.vg, s.sel.gen, lv)
        await wait_until(pilot, lambda: not main._jobs and main.editor.check.ok is not None)
        editor = main.editor
        editor.table.focus()
        # an LE the engine could not decide shows the PEs that fit it, the true one among them
        shown = [le for le, e in enumerate(editor.extents) if e.pe is None
                 and editor.candidates.get(le)]
        for le in shown:
            text = editor._row(le, editor.extents[le])[5].plain
            assert str(truth.pes[le]) in text.split(" ")[0].split("|"), (le, text)
        for le, pe in enumerate(truth.pes):
            if editor.extents[le].pe == pe:
                continue
            editor.table.move_cursor(row=le)
            await pilot.press("p")
            await ws.screen("InputDialog")
            from textual.widgets import Input

            app.screen.query_one(Input).value = str(pe)
            await pilot.press("enter")
            await wait_until(pilot, lambda le=le, pe=pe: editor.extents[le].pe == pe)
        await wait_until(pilot, lambda: not main._jobs and editor.check.ok is not None)
        assert [e.pe for e in editor.extents] == truth.pes
        assert editor.check.ok, editor.check.summary
        out = str(tmp_path / "rebuilt.raw")
        # the engine may have given some of these PEs to another rebuilt VDI as well: refused
        # unless forced, and the audit log says it was forced
        conflicts = s.conflicts(s.sel.vg, s.sel.lv)
        res = s.export(s.sel.vg, s.sel.lv, out, "raw", force=bool(conflicts))
        assert s.case.audit[-1]["forced"] == bool(conflicts)
        from test_ui_support import sha256_file

        assert sha256_file(out) == res.sha256 == truth.sha256


async def test_go_to_and_find_in_the_hex_view(demo, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        await pilot.press("g")
        await ws.screen("InputDialog")
        await pilot.press(*"0x200", "enter")
        await wait_until(pilot, lambda: main.hex.cursor == 0x200)
        await pilot.press("g")
        await ws.screen("InputDialog")
        await pilot.press(*"9T", "enter")                     # outside the image: said, not done
        await pilot.pause()
        assert "outside" in str(app.screen.query_one("#dialog-error").render())
        await pilot.press("escape")
        assert main.hex.cursor == 0x200
        await pilot.press("slash")
        await ws.screen("InputDialog")
        await pilot.press(*"LABELONE", "enter")
        label_at = manifest.pv_offset + 512                   # LVM label in sector 1 of the PV
        await wait_until(pilot, lambda: main.hex.cursor == label_at)
        info = main.hex.cursor_info()
        assert info.field is not None and info.field.struct == "LVM label_header"


async def test_a_failing_job_becomes_an_error_dialog_and_the_app_goes_on(demo, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot = ws.app, ws.pilot

        def broken(cancel, progress):
            raise RuntimeError("disk fell off the desk")

        app.session.scan = broken
        await pilot.press("S")
        await ws.screen("ErrorDialog")
        assert "disk fell off the desk" in app.screen.message
        await pilot.press("escape")
        await ws.screen("MainScreen")
        await pilot.press("4", "down")
        assert app.main.hex.cursor == 16


def test_disk_overlay_places_partition_and_lvm_structures(tmp_path):
    """On an undamaged demo disk: MBR, GPT header and entries, LVM label_header, pv_header (its
    disk-area lists measured by parsing), mda_header and every metadata text, from the structs."""
    demo_mod = pytest.importorskip("core.demo")
    from app.screens.session import Session

    path = str(tmp_path / "clean.img")
    m = demo_mod.build_demo(path, damage="none")
    s = Session(path, str(tmp_path / "c.json"))
    s.set_report(s.analyse())
    ov = s.disk_overlay()

    def at(offset):
        f = ov.at(offset)
        return None if f is None else (f.struct, f.name)

    assert at(510) == ("MBR", "signature")
    assert at(512) == ("GPT header", "signature")
    assert at(2 * 512) == ("GPT entry 0", "type")
    label = m.pv_offset + 512
    assert at(label) == ("LVM label_header", "id")
    assert at(label + 32) == ("LVM pv_header", "pv_uuid")
    assert at(label + 32 + 40) == ("LVM pv_header", "data_areas")
    assert at(m.mda_offset + 4) == ("LVM mda_header", "magic")
    assert at(m.mda_offset + 40) == ("LVM mda_header", "raw_locns")
    g = m.generations[-1]
    assert at(g.offset) == ("LVM metadata seqno %d" % g.seqno, "text")


async def test_editor_keys_move_insert_delete_set_and_the_hex_view_follows(demo, workstation):
    image, manifest = demo
    vdi = deleted_intact(manifest)
    async with workstation(image, (160, 50)) as ws:
        app, pilot, s, main = ws.app, ws.pilot, ws.session, ws.main
        ws.select(vdi)
        editor = main.editor
        p = list(vdi.pes)
        editor.table.focus()
        editor.table.move_cursor(row=0)
        await pilot.press("J")                                    # LE 0 moves down
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == [p[1], p[0]] + p[2:])
        assert editor.table.cursor_row == 1                       # the cursor follows the extent
        await pilot.press("K")                                    # and back up
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == p)
        await pilot.press("i")                                    # an unknown extent at LE 0
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == [None] + p)
        await pilot.press("x")                                    # removed again
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == p)
        await pilot.press("v")                                    # hex view on the LV's space
        await pilot.pause()
        assert main.hex_mode == "lv"
        editor.table.focus()
        editor.table.move_cursor(row=0)
        await pilot.press("p")
        await ws.screen("InputDialog")
        from textual.widgets import Input

        app.screen.query_one(Input).value = str(p[1])
        await pilot.press("enter")
        await wait_until(pilot, lambda: [e.pe for e in editor.extents][0] == p[1])
        # the LV space shown by the hex view is made of the edited map
        assert main.hex.space.locate(0) == manifest.data_offset + p[1] * manifest.extent_bytes
        assert [e.source for e in editor.extents][0] == "manual"
        actions = [a["action"] for a in s.case.audit]
        assert actions.count("move") == 2 and "insert-gap" in actions and "delete" in actions
        assert "set-pe" in actions


async def test_cancelled_analysis_says_so_and_f5_runs_it_again(demo, workstation):
    image, manifest = demo
    async with workstation(image, idle=False) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        await wait_until(pilot, lambda: main.running("analyse") or main.analysed)
        if main.analysed:
            pytest.skip("the analysis finished before it could be cancelled")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not main.running("analyse"))
        if main.analysed:
            pytest.skip("the analysis finished before it could be cancelled")
        assert "cancelled" in " ".join(str(n.label) for n in main.tree.root.children)
        await pilot.press("f5")
        await wait_until(pilot, lambda: main.analysed, timeout=60)
        assert app.session.report.volume_groups


async def test_the_mouse_moves_the_map_and_hex_cursors(demo, workstation):
    image, manifest = demo
    async with workstation(image) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        from widgets.disk_map import DiskMap
        from widgets.hex_view import HexView

        # inside the round border: content starts at (1, 1)
        await pilot.click(DiskMap, offset=(1 + DiskMap.LABEL_WIDTH + 1 + 5, 1))
        await pilot.pause()
        assert main.map.cursor == 5
        # the hex view followed the map's cursor to the start of cell 5
        assert main.hex.cursor == main.map.cell_range(5)[0]
        top = int(main.hex.scroll_y)
        digits = main.hex.offset_digits
        await pilot.click(HexView, offset=(digits + 1 + 3 * 3, 1))   # row 1, byte 3
        await pilot.pause()
        assert main.hex.cursor == (top + 1) * 16 + 3 and main.hex.has_focus


async def test_compact_hex_view_shows_where_the_map_cursor_went_while_hidden(demo, workstation):
    image, manifest = demo
    async with workstation(image, (80, 24)) as ws:
        app, pilot, main = ws.app, ws.pilot, ws.main
        await pilot.press("2")
        for _ in range(12):
            await pilot.press("right")
        target = main.map.cell_range(main.map.cursor)[0]
        assert main.hex.cursor == target                          # followed while hidden
        await pilot.press("4")
        await pilot.pause(0.2)
        top = int(main.hex.scroll_y)
        assert top <= target // 16 < top + main.hex.size.height  # and is shown on the screen


async def test_findings_pane_lists_findings_and_candidates_takes_and_shows_one(
        demo_no_metadata, workstation):
    """f: every finding of the VDI in full; for an LE the engine could not decide, its candidate
    PEs: h shows one in the hex view, t takes it (undoable); the p dialog lists them too."""
    image, manifest = demo_no_metadata
    async with workstation(image, idle=False) as ws:
        app, pilot, s, main = ws.app, ws.pilot, ws.session, ws.main
        await ws.rebuilt()
        by_uuid = {v.vhd_unique_id: v for v in manifest.vdis if v.vhd_unique_id}
        undecided = [(lv, le) for lv in s.sel.gen.lvs.values()
                     for le in sorted(s.candidates.get(lv.name, {}) or {})]
        assert undecided, "the demo without metadata leaves some LE undecided"
        lv, le = undecided[0]
        truth = by_uuid[s.reconstruction.vdi(lv.name).vhd_uuid].pes[le]
        fits = list(s.candidates[lv.name][le])
        assert truth in fits
        main.select_vdi(s.sel.vg, s.sel.gen, lv)
        await wait_until(pilot, lambda: not main._jobs and main.editor.check.ok is not None)
        # the p dialog names the PEs that fit
        main.editor.table.focus()
        main.editor.table.move_cursor(row=le)
        await pilot.press("p")
        await ws.screen("InputDialog")
        assert ", ".join(map(str, fits[:3])) in str(app.screen.query_one(".hint").render())
        await pilot.press("escape")
        await pilot.press("f")
        await ws.screen("FindingsScreen")
        pane = app.screen
        kinds = [r.kind for r in pane.rows]
        assert kinds.count("finding") == len(main.editor.check.findings)
        for f in main.editor.check.findings:   # full text, never cut
            assert any(f.message in r.text for r in pane.rows)
        row = next(i for i, r in enumerate(pane.rows) if r.kind == "candidate" and r.le == le
                   and r.pe == truth)
        from textual.widgets import DataTable

        pane.query_one(DataTable).move_cursor(row=row)
        await pilot.pause()
        assert f"PE {truth} fits" in str(pane.query_one("#finding-text").render())
        await pilot.press("h")
        await ws.screen("MainScreen")
        vg = s.sel.vg
        assert main.hex_mode == "disk" and main.hex.cursor == vg.data_offset + truth * vg.extent_bytes
        await pilot.press("f")
        await ws.screen("FindingsScreen")
        app.screen.query_one(DataTable).move_cursor(row=row)
        await pilot.press("t")
        await wait_until(pilot, lambda: main.editor.extents[le].pe == truth)
        assert s.case.audit[-1]["action"] == "set-pe"
        await pilot.press("escape")
