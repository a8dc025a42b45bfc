#!/usr/bin/env python3
"""Generate the README screenshots: drive the workstation headless on the demo SR and save SVGs.

    .venv/bin/python scripts/screenshots.py [--out screenshots] [--image DEMO.img]

Builds the demo SR (core.demo.build_demo) in a temporary folder unless --image is given, then for
each state opens the app with `run_test` at a fixed terminal size, drives it with the Pilot
(choose the older generation, open the deleted VDI, switch the hex view, open dialogs) and calls
`save_screenshot`. Nothing is written next to a given image: the case file goes to the temporary
folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


async def _until(pilot, predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("screenshots: the app did not reach the expected state in time")
        await pilot.pause(0.02)


async def _idle(app, pilot) -> None:
    await _until(pilot, lambda: app.main.analysed)
    await _until(pilot, lambda: not app.main._jobs)
    await pilot.pause(0.1)


def _find(report, lv_name):
    for vg in report.volume_groups:
        for gen in vg.generations:
            if lv_name in gen.lvs:
                return vg, gen, gen.lvs[lv_name]
    raise SystemExit(f"screenshots: {lv_name} not found by the analysis")


async def _open_vdi(app, pilot, lv_name) -> None:
    await _idle(app, pilot)
    vg, gen, lv = _find(app.session.report, lv_name)
    app.main.select_vdi(vg, gen, lv)
    app.main.tree.select_lv(vg.name, gen.seqno, lv_name)
    await _idle(app, pilot)
    await _until(pilot, lambda: app.main.editor.check.ok is not None)


async def shoot(image: str, manifest, out: str, work: str) -> list[str]:
    from textual.widgets import Input

    from app.workstation import WorkstationApp

    deleted = next(v for v in manifest.vdis if v.status == "deleted" and not v.claimed_by)
    reused = next(v for v in manifest.vdis if v.status == "deleted" and v.claimed_by)
    blktap = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap")
    written: list[str] = []

    async def state(name: str, size: tuple[int, int], drive) -> None:
        case = os.path.join(work, f"{name}.case.json")
        if os.path.exists(case):
            os.unlink(case)
        app = WorkstationApp(image, case_path=case)
        async with app.run_test(size=size) as pilot:
            await drive(app, pilot)
            await pilot.pause(0.2)
            for screen in app.screen_stack:
                for widget in screen.query(Input):
                    widget.cursor_blink = False
            path = app.save_screenshot(filename=f"{name}.svg", path=out)
            written.append(path)
            app.exit()

    async def main_deleted(app, pilot):
        await _open_vdi(app, pilot, deleted.lv_name)
        app.main.editor.table.focus()

    async def hex_footer(app, pilot):
        await _open_vdi(app, pilot, blktap.lv_name)
        await pilot.press("v")
        await pilot.pause()
        app.main.hex.goto(0x40)

    async def wide(app, pilot):
        await _open_vdi(app, pilot, blktap.lv_name)
        await pilot.press("v")
        await pilot.pause()
        app.main.hex.goto(0x210)       # dynamic header: table_offset
        app.main.editor.table.focus()

    async def export_dialog(app, pilot):
        await _open_vdi(app, pilot, reused.lv_name)
        await pilot.press("E")
        await _until(pilot, lambda: type(app.screen).__name__ == "ExportDialog")
        app.screen.query_one("#dest", Input).value = f"{reused.key}.vhd"

    async def export_done(app, pilot):
        # the forced export of the VDI a newer LV partly overwrote: what it could not trust
        from textual.widgets import Checkbox
        await _open_vdi(app, pilot, reused.lv_name)
        await pilot.press("E")
        await _until(pilot, lambda: type(app.screen).__name__ == "ExportDialog")
        app.screen.query_one("#dest", Input).value = os.path.join(work, "temp-export.vhd")
        app.screen.query_one("#overwrite", Checkbox).value = True
        app.screen.query_one("#force", Checkbox).value = True
        await pilot.click("#ok")
        await _until(pilot, lambda: type(app.screen).__name__ == "ExportDone")

    async def help_screen(app, pilot):
        await _idle(app, pilot)
        await pilot.press("f1")
        await _until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")

    async def audit(app, pilot):
        await _open_vdi(app, pilot, deleted.lv_name)
        app.main.editor.table.focus()
        await pilot.press("s", "down", "s", "u", "r")
        await _idle(app, pilot)
        await pilot.press("L")
        await _until(pilot, lambda: type(app.screen).__name__ == "AuditScreen")

    await state("main-deleted-vdi-120x40", (120, 40), main_deleted)
    await state("main-80x24", (80, 24), main_deleted)
    await state("hex-vhd-footer-80x24", (80, 24), hex_footer)
    await state("wide-180x50", (180, 50), wide)
    await state("export-dialog", (120, 40), export_dialog)
    await state("export-done-untrusted", (120, 40), export_done)
    await state("help", (120, 40), help_screen)
    await state("audit-log", (120, 40), audit)
    return written


async def shoot_rebuilt(image: str, out: str, work: str) -> list[str]:
    """All LVM metadata gone: the VDIs the engine rebuilt from VHD structure, one opened."""
    from app.workstation import WorkstationApp

    case = os.path.join(work, "rebuilt.case.json")
    app = WorkstationApp(image, case_path=case)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.session.rebuilt is not None and not app.main._jobs)
        s = app.session
        # the VDI with the most unknown extents: what the technician fixes by hand
        lv = max(s.sel.gen.lvs.values(), key=lambda l: (sum(p is None for p in l.pes()), l.name))
        app.main.select_vdi(s.sel.vg, s.sel.gen, lv)
        app.main.tree.select_lv(s.sel.vg.name, s.sel.gen.seqno, lv.name)
        await _until(pilot, lambda: not app.main._jobs and app.main.editor.check.ok is not None)
        app.main.editor.table.focus()
        await pilot.pause(0.2)
        path = app.save_screenshot(filename="rebuilt-no-metadata.svg", path=out)
        # the findings pane of a VDI with an LE the engine could not decide
        undecided = [l for l in s.sel.gen.lvs.values() if s.candidates.get(l.name)]
        if undecided:
            lv = undecided[0]
            app.main.select_vdi(s.sel.vg, s.sel.gen, lv)
            app.main.tree.select_lv(s.sel.vg.name, s.sel.gen.seqno, lv.name)
            await _until(pilot, lambda: not app.main._jobs and app.main.editor.check.ok is not None)
        await pilot.press("f")
        await _until(pilot, lambda: type(app.screen).__name__ == "FindingsScreen")
        from textual.widgets import DataTable
        table = app.screen.query_one(DataTable)
        first = next((i for i, r in enumerate(app.screen.rows) if r.kind == "candidate"), 0)
        table.move_cursor(row=first)
        await pilot.pause(0.2)
        findings = app.save_screenshot(filename="findings-pane.svg", path=out)
        app.exit()
    return [path, findings]


async def shoot_carving(image: str, manifest, out: str, work: str) -> list[str]:
    """The carving screen inside the SQL Server VDI's virtual disk of the demo SR (which carries
    a damaged SQL Server data file, core.demo_payloads): the data file reassembled."""
    from app.workstation import WorkstationApp

    sql = next(v for v in manifest.vdis if v.key == "sql")
    app = WorkstationApp(image, case_path=os.path.join(work, "carving.case.json"))
    async with app.run_test(size=(120, 40)) as pilot:
        await _open_vdi(app, pilot, sql.lv_name)
        await pilot.press("c")
        await _until(pilot, lambda: type(app.screen).__name__ == "CarvingScreen")
        await pilot.press("v", "m")
        await pilot.pause(0.2)
        await _until(pilot, lambda: not app.screen.busy and app.screen.pages is not None)
        await pilot.pause(0.2)
        path = app.save_screenshot(filename="carving-sql-vdi.svg", path=out)
        app.exit()
    return [path]


CHROMIUM = "/usr/bin/chromium"


def shoot_report(image: str, manifest, out: str, work: str) -> list[str]:
    """The recovery report after a command-line export and a manual edit, rendered by a real
    headless Chromium into report.png (skipped, said on stderr, when Chromium is missing)."""
    import shutil
    import subprocess

    from app.cli import main as cli
    from core.case import Case, Extent, evidence_identity
    from core.source import Evidence

    if not os.access(CHROMIUM, os.X_OK):
        print("screenshots: chromium not installed: report.png not made", file=sys.stderr)
        return []
    case_path = os.path.join(work, "report.case.json")
    live = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap")
    reused = next(v for v in manifest.vdis if v.status == "deleted" and v.claimed_by)
    cli(["export", image, "--vdi", live.lv_name, "--format", "raw", "-o",
         os.path.join(work, "live.raw"), "--case", case_path, "--overwrite"])
    cli(["export", image, "--vdi", reused.lv_name, "--format", "vhd", "--force", "-o",
         os.path.join(work, "temp.vhd"), "--case", case_path, "--overwrite"])
    with Evidence(image) as ev:
        case, _ = Case.open(image, case_path, image_bytes=ev.size, identity=evidence_identity(ev))
    case.ensure_map(live.lv_name, [Extent(p) for p in live.pes], origin="generation 62")
    case.swap(live.lv_name, 0, 1)
    case.undo()
    html_path = os.path.join(work, "report.html")
    cli(["report", image, "--case", case_path, "-o", html_path, "--overwrite"])
    profile = tempfile.mkdtemp(prefix="chromium-")
    png = os.path.join(out, "report.png")
    try:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--hide-scrollbars", "--window-size=1100,1800", f"--screenshot={png}",
                        f"file://{html_path}"], capture_output=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return [png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "screenshots"))
    parser.add_argument("--image", help="an already built demo image (its manifest is rebuilt "
                                        "in memory by building a fresh demo beside the temp dir)")
    args = parser.parse_args(argv)
    from core.demo import build_demo

    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="srsalvage-shots-") as work:
        image = os.path.join(work, "demo.img")
        manifest = build_demo(image)
        if args.image:
            image = args.image
        for path in asyncio.run(shoot(image, manifest, args.out, work)):
            print(path)
        nometa = os.path.join(work, "no-metadata.img")
        build_demo(nometa, damage=["partition-table", "metadata"])
        for path in asyncio.run(shoot_rebuilt(nometa, args.out, work)):
            print(path)
        for path in asyncio.run(shoot_carving(image, manifest, args.out, work)):
            print(path)
        for path in asyncio.run(shoot_unreadable(image, manifest, args.out, work)):
            print(path)
        print(shoot_browser(image, args.out, work))
        for path in shoot_report(image, manifest, args.out, work):
            print(path)
    return 0


def shoot_browser(image: str, out: str, work: str) -> str:
    """`srsalvage serve` in headless Chromium (scripts/browser.py): screenshots/serve-browser.png."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import browser

    if browser.find_chromium() is None:
        return "serve-browser.png skipped: chromium not installed"
    path = os.path.join(out, "serve-browser.png")
    asyncio.run(browser.browse(image, path, extra=("--case", os.path.join(work, "served.json"))))
    return path


async def shoot_unreadable(image: str, manifest, out: str, work: str) -> list[str]:
    """A ddrescue mapfile that leaves part of a VDI unread: `!` on the map, `??` in the hex view
    at the VDI's virtual offsets."""
    from app.workstation import WorkstationApp, open_session

    vdi = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap"
               and v.disk_type == "dynamic")
    app = None
    session = open_session(image, os.path.join(work, "unreadable.json"))
    app = WorkstationApp(session=session)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open_vdi(app, pilot, vdi.lv_name)
        # the second extent of the VDI, 1 MiB in: the area a failing disk would not give
        from core.lvm.space import pes_space   # the one LV-as-bytes path
        space = pes_space(app.session.ev, app.session.sel.vg,
                          app.session.pes(app.session.sel.lv), vdi.lv_name)
        disk = space.locate(space.runs[0].length + (1 << 20)) if len(space.runs) > 1 \
            else space.locate(1 << 20)
        mapfile = os.path.join(work, "rescue.map")
        size = session.ev.size
        with open(mapfile, "w") as f:
            f.write("# Mapfile. Created by GNU ddrescue version 1.27\n0x0 +\n"
                    f"0x0 {disk:#x} +\n{disk:#x} 0x20000 -\n"
                    f"{disk + 0x20000:#x} {size - disk - 0x20000:#x} +\n")
        app.exit()
    session = open_session(image, os.path.join(work, "unreadable.json"), mapfile=mapfile)
    app = WorkstationApp(session=session)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open_vdi(app, pilot, vdi.lv_name)
        app.main.hex.set_space(session.ev, title="disk")
        app.main.hex.goto(disk - 64)
        await pilot.pause(0.3)
        path = app.save_screenshot(filename="unreadable-mapfile.svg", path=out)
        app.exit()
    return [path]


if __name__ == "__main__":
    sys.exit(main())
