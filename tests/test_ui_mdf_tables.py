"""The tables view of the carving screen: after a page scan (m) and export (x), `t` lists the
exported data file's user tables with their row counts and shows the rows of the highlighted
one, as written to the CSV files."""

from __future__ import annotations

import random

from textual.widgets import DataTable

from app.screens.carving import CarvingScreen
from app.screens.mdf_tables import TablesScreen
from conftest import fixture_bytes
from test_ui_support import Host, scattered_pages, wait_while


async def test_tables_of_the_exported_data_file(tmp_path):
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    path = tmp_path / "evidence.img"
    path.write_bytes(bytes(scattered_pages(data, random.Random(5))))
    screen = CarvingScreen(str(path), out_dir=str(tmp_path / "out"), window=256 << 10)
    app = Host(screen)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("t")                  # nothing exported yet: a warning, no screen
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("m")
        await wait_while(pilot, lambda: screen.busy)
        await pilot.press("x")
        await wait_while(pilot, lambda: screen.busy)
        await pilot.press("t")
        await pilot.pause()
        tables = app.screen
        assert isinstance(tables, TablesScreen)
        await wait_while(pilot, lambda: tables.busy)
        listing = tables.query_one("#tables-list", DataTable)
        rows = {str(listing.get_row_at(i)[0]): listing.get_row_at(i)
                for i in range(listing.row_count)}
        assert rows["dbo.Staff"][1] == "3" and rows["dbo.Technicians"][1] == "4"
        assert all(r[2] == "0" for r in rows.values())          # nothing lost
        grid = tables.query_one("#tables-rows", DataTable)
        assert grid.row_count == int(str(listing.get_row_at(0)[1]))
        status = str(tables.query_one("#tables-status").render())
        assert "0 pages failing their checksum" in status
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
    assert (tmp_path / "out" / "mdf" / "tables" / "Staff.csv").exists()
