"""The carving screen driven with Textual's Pilot: scans list pages and archives with their
offsets, export writes the reassembled data file and the carved archives, Esc cancels a running
carve (the worker stops, nothing is written) and goes back when nothing runs."""

from __future__ import annotations

import hashlib
import os
import random
import time

from textual.widgets import DataTable

from app.screens.carving import CarvingScreen
from conftest import SHARED_FIXTURES, fixture_bytes
from core.spaces import BytesSpace
from test_ui_support import Host, scattered_pages, wait_while, workstation  # noqa: F401

MDF = "mdf/dotnetnuke/Database.mdf.gz"
MDF_SHA = "d618685038e6ee92215c1b38e8378a49b9eae4b0b04d75284d9eb86983cc4bd4"


def _image(tmp_path) -> tuple[str, int]:
    data = fixture_bytes(MDF)
    rar = fixture_bytes("rar/rarfile/rar5-crc.rar")
    rng = random.Random(9)
    out = scattered_pages(data, rng)
    rar_at = len(out) + 77
    out += rng.randbytes(77) + rar + rng.randbytes(3000)
    path = tmp_path / "evidence.img"
    path.write_bytes(bytes(out))
    return str(path), rar_at


async def _wait_idle(pilot, screen: CarvingScreen, timeout: float = 30.0) -> None:
    await wait_while(pilot, lambda: screen.busy, timeout)


async def test_scan_list_and_export(tmp_path):
    path, rar_at = _image(tmp_path)
    out = tmp_path / "carved"
    screen = CarvingScreen(path, out_dir=str(out), window=256 << 10)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        from textual.widgets import ProgressBar

        bar = screen.query_one("#carve-bar", ProgressBar)
        assert bar.total is not None and bar.progress == 0      # idle: no "busy" animation
        await pilot.press("m")
        await _wait_idle(pilot, screen)
        table = screen.query_one(DataTable)
        kinds = [table.get_row_at(i)[0] for i in range(table.row_count)]
        assert kinds[0] == "mdf file 1" and kinds.count("page") == 167
        # the file's row names the database (boot page 1:9) and how many pages are missing
        assert str(table.get_row_at(0)[4]).startswith(
            r"C:\INETPUB\WWWROOT\DOTNETNUKE\APP_DATA\DATABASE.MDF — 0 missing, 0 bad copies")
        await pilot.press("r")
        await _wait_idle(pilot, screen)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        rar_rows = [r for r in rows if r[0] == "rar5"]
        assert len(rar_rows) == 1 and rar_rows[0][1] == f"{rar_at:,}"
        assert rar_rows[0][3] == "complete"
        await pilot.press("x")
        await _wait_idle(pilot, screen)
        assert "files written" in str(screen.query_one("#carve-status").render())
    mdfs = list((out / "mdf").glob("*.mdf"))
    assert len(mdfs) == 1
    assert hashlib.sha256(mdfs[0].read_bytes()).hexdigest() == MDF_SHA
    rar = fixture_bytes("rar/rarfile/rar5-crc.rar")
    assert (out / "rar" / f"at-{rar_at}.rar").read_bytes() == rar


class SlowSpace(BytesSpace):
    """A space whose reads take time, so a carve is still running when Esc is pressed."""

    def read(self, offset: int, length: int) -> bytes:
        time.sleep(0.02)
        return super().read(offset, length)


async def test_escape_cancels_then_goes_back(tmp_path):
    path, _ = _image(tmp_path)
    slow = SlowSpace(open(path, "rb").read() * 8)
    screen = CarvingScreen(path, space=slow, out_dir=str(tmp_path / "o"), window=16 << 10)
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("m")
        await pilot.pause(0.2)
        assert screen.busy
        await pilot.press("escape")
        await _wait_idle(pilot, screen)
        assert not screen.busy
        assert "cancelled" in str(screen.query_one("#carve-status").render())
        assert screen.pages is None                      # a cancelled scan lists nothing
        await pilot.press("x")                           # nothing to export: a notice only
        await pilot.pause()
        assert not os.path.exists(tmp_path / "o")
        await pilot.press("escape")                      # idle: back to the previous screen
        await pilot.pause()
        assert app.screen is not screen


async def test_pushed_from_the_workstation_with_c(tmp_path, workstation):
    path, rar_at = _image(tmp_path)
    async with workstation(path, (140, 45), case=None, idle=False) as ws:
        app, pilot = ws.app, ws.pilot
        await pilot.pause()
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CarvingScreen)
        assert screen.image_path == os.path.realpath(path) or screen.image_path == path
        await pilot.press("r")
        await _wait_idle(pilot, screen)
        table = screen.query_one(DataTable)
        assert [table.get_row_at(i)[1] for i in range(table.row_count)] == [f"{rar_at:,}"]
        # the hit is marked on the disk map
        model = app.main.map.model
        assert rar_at in app.session.carve_hits
        assert model.hits[(rar_at - model.origin) // model.grain]
        # Enter on the hit: back to the workstation, the hex view on its first byte
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, CarvingScreen)
        assert app.main.hex_mode == "disk" and app.main.hex.cursor == rar_at
        assert app.main.hex.has_focus
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("v")                  # no VDI selected: a notice, the disk stays
        await pilot.pause()
        assert app.screen.scope == 0
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, CarvingScreen)
        app.workers.cancel_all()


async def test_carving_inside_the_selected_vdi_of_the_demo_sr(tmp_path, workstation):
    """A RAR archive placed in a VDI's virtual disk of the demo SR: `v` switches the carving
    screen to that virtual disk, the hit is listed at its virtual offset, marked on the map at
    its disk offset, and Enter shows it in the hex view of the virtual disk."""
    import pytest

    demo = pytest.importorskip("core.demo")

    rar = fixture_bytes("rar/rarfile/rar3-subdirs.rar")
    rar_at = (5 << 20) + 333
    path = str(tmp_path / "demo.img")
    manifest = demo.build_demo(path, payloads={"web": [(rar_at, rar)]})
    web = next(v for v in manifest.vdis if v.key == "web")
    async with workstation(path) as ws:
        app, pilot, s = ws.app, ws.pilot, ws.session
        vg = s.report.volume_groups[0]
        gen = vg.generations[0]
        app.main.select_vdi(vg, gen, gen.lvs[web.lv_name])
        await ws.idle()
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CarvingScreen)
        await pilot.press("v")
        await pilot.pause()
        assert screen.scope == 1 and "inside VDI" in str(screen.query_one("#carve-title").render())
        assert screen.space.size == web.virtual_bytes
        await pilot.press("r")
        await _wait_idle(pilot, screen)
        table = screen.query_one(DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert [r[1] for r in rows] == [f"{rar_at:,}"] and rows[0][3] == "complete"
        # on the map at the disk offset the VHD's BAT and the LV's extents put it: the RAR
        # signature is there on the disk
        (hit,) = s.carve_hits
        assert hit != rar_at and s.ev.read(hit, 7) == rar[:7]
        model = app.main.map.model
        assert model.hits[(hit - model.origin) // model.grain]
        await pilot.press("enter")
        await pilot.pause()
        assert app.main.hex_mode == "virtual" and app.main.hex.cursor == rar_at
        assert app.main.hex.space.read(rar_at, 7) == rar[:7]
        await pilot.press("q")


def test_file_summaries_count_the_missing_pages_like_carve_mdf(tmp_path):
    """The list's missing count is carve-mdf's missing_pages for the same copies."""
    from app.screens.carving import file_summaries
    from core.carve.mssql import carve_mdf, collect_records, fill_digests, find_page_records

    data = fixture_bytes(MDF)
    pages = [data[i:i + 8192] for i in range(0, len(data), 8192)]
    drop = {30, 31, 77}                     # allocated pages of the dotnetnuke file (PFS says so)
    kept = b"".join(p for i, p in enumerate(pages) if i not in drop and p.count(0) != 8192)
    space = BytesSpace(bytes(1536) + kept)
    recs = collect_records(find_page_records(space))
    fill_digests(space, recs)
    (report,) = carve_mdf(space, str(tmp_path / "o"), copies=recs).files
    assert report.missing_pages and set(report.missing_pages) <= drop
    assert file_summaries(space, recs) == {1: (report.database, len(report.missing_pages))}


async def test_archive_members_listed_then_unpacked(tmp_path):
    """The highlighted archive's members are listed from its headers, then with their status
    after `x` (exported, unpacked by libarchive, verified); a damaged member says so."""
    import pytest
    pytest.importorskip("libarchive")
    from widgets.rar_members import RarMembers
    from core.carve.rar import walk_archive
    data = bytearray(fixture_bytes("rar/libarchive/test_read_format_rar5_multiple_files.rar"))
    arc = walk_archive(lambda o, n: bytes(data[o:o + n]), 0, len(data))
    data[arc.files[1].data_offset + 9] ^= 0xFF
    img = tmp_path / "evidence.img"
    img.write_bytes(bytes(8192) + bytes(data) + bytes(512))
    out = tmp_path / "carved"
    screen = CarvingScreen(str(img), out_dir=str(out))
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("r")
        await _wait_idle(pilot, screen)
        members = screen.query_one(RarMembers)
        assert members.row_count == 4
        assert [members.get_row_at(i)[2] for i in range(4)] == ["not unpacked yet"] * 4
        await pilot.press("x")
        await _wait_idle(pilot, screen)
        rows = [members.get_row_at(i) for i in range(4)]
        assert [r[0] for r in rows] == ["test1.bin", "test2.bin", "test3.bin", "test4.bin"]
        assert [r[2] for r in rows[::2]] == ["ok", "ok"] and rows[3][2] == "ok"
        assert rows[1][2] in ("bad-checksum", "decompression-error", "truncated")
        assert "libarchive" in str(rows[1][3])
    unpacked = out / "rar-unpacked" / "at-8192"
    assert sorted(p.name for p in unpacked.iterdir()) == ["test1.bin", "test3.bin", "test4.bin"]
