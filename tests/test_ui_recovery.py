"""The whole recovery of the demo SR through the workstation, driven by keys (Pilot):
open, choose an older generation, find the deleted VDI, fix a wrongly ordered extent by hand,
undo / redo, export, check the exported bytes against the demo's ground truth, and reopen the
case after a restart."""

from __future__ import annotations

import json
import os
import re

import pytest

from test_ui_support import (deleted_claimed, deleted_intact, demo, holding_generation,  # noqa: F401
                             sha256_file, wait_until, workstation)

pytestmark = pytest.mark.slow


async def _choose_generation_in_tree(ws, vg, gen):
    tree, pilot = ws.main.tree, ws.pilot
    node = tree._gen_nodes[(vg.name, gen.seqno)]
    tree.focus()
    tree.move_cursor(node)
    await pilot.pause()
    # → opens the generation (its LVs listed), ← closes it again, as in any file-manager tree
    assert not node.is_expanded
    await pilot.press("right")
    assert node.is_expanded and node.children
    await pilot.press("left")
    assert not node.is_expanded and tree.cursor_node is node
    await pilot.press("enter")
    await ws.until(lambda: ws.session.sel.gen is gen)
    # the chosen generation is marked with its own sign, not the tree's "collapsed" arrow
    assert node.label.plain.startswith("● seqno")


async def test_whole_recovery_of_the_deleted_vdi(demo, tmp_path, workstation):
    image, manifest = demo
    case = str(tmp_path / "demo.case.json")
    vdi = deleted_intact(manifest)
    async with workstation(image, case="demo.case.json") as ws:
        app, pilot, main, s = ws.app, ws.pilot, ws.main, ws.session
        assert s.recognised and s.report.volume_groups[0].name == manifest.vg_name
        # the newest generation no longer lists the deleted VDI
        newest = s.report.volume_groups[0].generations[0]
        assert vdi.lv_name not in newest.lvs

        # -- choose the older generation that still holds it: the map recolours ------------------
        vg, gen = holding_generation(s.report, vdi)
        assert gen.seqno < newest.seqno
        await _choose_generation_in_tree(ws, vg, gen)
        owners = {o.name: o for o in main.map.model.owners}
        assert vdi.lv_name in owners and owners[vdi.lv_name].deleted
        assert s.case.generation == {"vg": vg.name, "seqno": gen.seqno}

        # -- open the deleted VDI: its map is the manifest's truth, and the VHD checks pass ------
        await ws.open_lv(vg, gen, vdi.lv_name)
        # the tree pane is narrow: "DELETED" is on screen on the VDI's line, and the generation's
        # line says it holds a deleted VDI, without scrolling sideways
        tree = main.tree
        await pilot.pause()

        def visible(node):
            y = node.line - int(tree.scroll_y)
            assert 0 <= y < tree.size.height
            return tree.render_line(y).text

        assert "DELETED" in visible(tree._lv_nodes[(vg.name, gen.seqno, vdi.lv_name)])
        from widgets.vg_tree import gen_label

        n_deleted = sum(1 for lv in gen.lvs.values() if lv.status == "deleted")
        assert n_deleted and f"{n_deleted} deleted" in gen_label(gen).plain[:tree.size.width - 6]
        editor = main.editor
        assert [e.pe for e in editor.extents] == vdi.pes
        check = await ws.checked()
        assert check.ok, check.summary

        # -- a wrongly ordered map (two extents swapped in the case): the checks fail ---------------
        s.ensure_case_map(s.sel.lv, gen)
        s.case.swap(vdi.lv_name, 0, 1)
        main.after_edit(0)
        check = await ws.checked()
        assert check.ok is False, check.summary
        assert re.match(r"\d+ errors?, \d+ warnings?", check.summary), check.summary
        assert not re.search(r"\b1 (errors|warnings)\b", check.summary), check.summary
        assert [e.pe for e in editor.extents][:2] == [vdi.pes[1], vdi.pes[0]]

        # -- fixed by hand in the editor: mark LE 0, move to LE 1, swap -----------------------------
        await pilot.press("3")                      # focus the editor
        table = editor.table
        table.move_cursor(row=0)
        await pilot.press("s")
        await pilot.press("down")
        await pilot.press("s")
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == vdi.pes)
        check = await ws.checked()
        assert check.ok, check.summary
        assert s.case.map_of(vdi.lv_name).pes == vdi.pes

        # -- undo brings the bad order back, redo fixes it again -----------------------------------
        await pilot.press("u")
        await wait_until(pilot, lambda: [e.pe for e in editor.extents][:2] == [vdi.pes[1], vdi.pes[0]])
        assert (await ws.checked()).ok is False
        await pilot.press("r")
        await wait_until(pilot, lambda: [e.pe for e in editor.extents] == vdi.pes)
        assert (await ws.checked()).ok

        # -- export as raw: the bytes are the VDI's virtual disk -----------------------------------
        out = str(tmp_path / "recovered.raw")
        await pilot.press("E")
        await ws.screen("ExportDialog")
        dialog = app.screen
        from textual.widgets import Input, RadioButton

        dialog.query_one("#fmt-raw", RadioButton).value = True
        dialog.query_one("#dest", Input).value = out
        await pilot.click("#ok")
        await ws.screen("ExportDone", timeout=120)
        assert os.path.exists(out) and not os.path.exists(out + ".part")
        digest = sha256_file(out)
        assert digest == vdi.sha256
        assert os.path.getsize(out) == vdi.virtual_bytes
        assert digest in str(app.screen.query_one("#export-result").render())
        await pilot.press("escape")

        # -- the audit log has the edits, undo/redo and the export --------------------------------
        await pilot.press("L")
        await ws.screen("AuditScreen")
        actions = [a["action"] for a in s.case.audit]
        for needed in ("choose-generation", "swap", "undo", "redo", "export"):
            assert needed in actions
        export = [a for a in s.case.audit if a["action"] == "export"][-1]
        assert export["sha256"] == vdi.sha256 and export["bytes"] == vdi.virtual_bytes
        from textual.widgets import DataTable

        table = app.screen.query_one(DataTable)
        assert table.row_count == len(s.case.audit)
        # the table cuts long details; the highlighted entry is shown whole below it
        table.move_cursor(row=[a["action"] for a in s.case.audit].index("export"))
        await pilot.pause()
        whole = str(app.screen.query_one("#audit-detail").render())
        assert vdi.sha256 in whole and out in whole
        table.move_cursor(row=[a["action"] for a in s.case.audit].index("choose-generation"))
        await pilot.pause()
        assert f"seqno: {gen.seqno}" in str(app.screen.query_one("#audit-detail").render())
        await pilot.press("escape")
        await pilot.press("q")

    # the case file beside (here: given) survived, never inside the image
    doc = json.loads(open(case).read())
    assert doc["format"] == "srsalvage-case" and doc["maps"][vdi.lv_name]

    # -- restart: the edits, the chosen generation and the history are still there ---------------
    async with workstation(image, case="demo.case.json") as ws:
        app2, pilot, s2 = ws.app, ws.pilot, ws.session
        assert s2.sel.gen.seqno == gen.seqno            # the case's generation was reselected
        assert s2.case.map_of(vdi.lv_name).pes == vdi.pes
        assert s2.case.can_undo()
        lv = s2.find_lv(s2.sel.gen, vdi.lv_name)
        app2.main.select_vdi(s2.sel.vg, s2.sel.gen, lv)
        await pilot.pause()
        assert app2.main.editor.edited
        assert [e.pe for e in app2.main.editor.extents] == vdi.pes
        # undo after the restart reaches the edits made before it
        app2.main.editor.table.focus()
        await pilot.press("u")
        await wait_until(pilot, lambda: [e.pe for e in app2.main.editor.extents][:2]
                         == [vdi.pes[1], vdi.pes[0]])


async def test_export_of_reused_extents_warns_and_needs_force(demo, tmp_path, workstation):
    image, manifest = demo
    vdi = deleted_claimed(manifest)
    async with workstation(image) as ws:
        app, pilot, s = ws.app, ws.pilot, ws.session
        await ws.open_vdi(vdi)
        await pilot.press("E")
        await ws.screen("ExportDialog")
        dialog = app.screen
        warning = str(dialog.query_one("#conflict-warning").render())
        assert f"{len(vdi.claimed_by)} extents" in warning
        from textual.widgets import Input

        out = str(tmp_path / "x.raw")
        dialog.query_one("#dest", Input).value = out
        await pilot.click("#ok")
        await pilot.pause()
        assert "export anyway" in str(dialog.query_one("#export-error").render())
        assert not os.path.exists(out)
        await pilot.press("escape")
        assert not [a for a in s.case.audit if a["action"] == "export"]


async def test_hex_view_follows_the_editor_and_names_vhd_fields(demo, workstation):
    image, manifest = demo
    vdi = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap")
    async with workstation(image, (160, 50)) as ws:
        app, pilot, s, main = ws.app, ws.pilot, ws.session, ws.main
        vg, gen = await ws.open_vdi(vdi)
        # the editor's row puts the hex view (on the disk) at that extent's first byte
        main.editor.table.focus()
        main.editor.table.move_cursor(row=1)
        await pilot.pause()
        assert main.hex.cursor == manifest.data_offset + vdi.pes[1] * manifest.extent_bytes
        # switch to the LV's space: the VHD footer copy at 0 is overlaid field by field
        await pilot.press("v")
        await pilot.pause()
        assert main.hex_mode == "lv"
        main.hex.goto(64)
        await pilot.pause()
        info = main.hex.cursor_info()
        assert info.field is not None and info.field.name == "checksum"
        assert info.disk_offset == manifest.lv_offset(vdi, 64)
        # the virtual disk: every sector names its VDI (demo content)
        await pilot.press("v")
        await pilot.pause()
        assert main.hex_mode == "virtual"
        first = main.hex.space.read(0, 512)
        assert first == s.vhd_image(vg, s.sel.lv).virtual_space().read(0, 512)
