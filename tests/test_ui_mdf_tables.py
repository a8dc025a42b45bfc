"""The tables view of the carving screen: after a page scan (m) and export (x), `t` lists the
exported data file's user tables with their row counts and shows the rows of the highlighted
one, as written to the CSV files."""

from __future__ import annotations

import random
import time

from textual.app import App
from textual.widgets import DataTable

from app.screens.carving import CarvingScreen
from app.screens.mdf_tables import TablesScreen
from conftest import fixture_bytes


class Host(App):
    def __init__(self, screen) -> None:
        super().__init__()
        self.first = screen

    def on_mount(self) -> None:
        self.push_screen(self.first)


async def _idle(pilot, busy, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    await pilot.pause()
    while busy() and time.monotonic() - t0 < timeout:
        await pilot.pause(0.05)
    await pilot.pause()


async def test_tables_of_the_exported_data_file(tmp_path):
    data = fixture_bytes("mdf/ITHelpdesk/Database.mdf.gz")
    rng = random.Random(5)
    pages = [data[i:i + 8192] for i in range(0, len(data), 8192)
             if data[i:i + 8192].count(0) != 8192]
    rng.shuffle(pages)
    image = bytearray(rng.randbytes(4096))
    for p in pages:
        image += p + rng.randbytes(512 * rng.randrange(0, 3))
    path = tmp_path / "evidence.img"
    path.write_bytes(bytes(image))
    screen = CarvingScreen(str(path), out_dir=str(tmp_path / "out"), window=256 << 10)
    app = Host(screen)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("t")                  # nothing exported yet: a warning, no screen
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("m")
        await _idle(pilot, lambda: screen.busy)
        await pilot.press("x")
        await _idle(pilot, lambda: screen.busy)
        await pilot.press("t")
        await pilot.pause()
        tables = app.screen
        assert isinstance(tables, TablesScreen)
        await _idle(pilot, lambda: tables.busy)
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
