"""Widgets over plain data: HexView on a sparse 2 TiB Evidence, DiskMap model and widget,
structure overlays derived from the construct structs, WorkerStatus."""

from __future__ import annotations


import pytest
from textual import on
from textual.app import App, ComposeResult

from core.source import Evidence
from core.spaces import BytesSpace, extent_space
from widgets.disk_map import CONFLICT, FREE, META, OUTSIDE, DiskMap, DiskMapModel, Owner
from widgets.extent_editor import ExtentEditor
from widgets.hex_view import ROW, HexView, find_bytes, parse_needle, parse_offset
from widgets.overlay import Field, Overlay, fields_of
from widgets.worker_status import WorkerStatus, fmt_eta

TIB = 1 << 40


@pytest.fixture
def big_image(tmp_path):
    """A sparse 2 TiB image with a few bytes written far apart."""
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        f.truncate(2 * TIB)
        f.seek(3 * TIB // 2)
        f.write(b"LABELONE-at-1.5T")
        f.seek(2 * TIB - 16)
        f.write(b"the last 16 byte")
    return str(path)


class HexApp(App):
    def __init__(self, space, **kw):
        super().__init__()
        self.space = space
        self.kw = kw
        self.moves = []

    def compose(self) -> ComposeResult:
        yield HexView(self.space, **self.kw)

    def on_hex_view_cursor_moved(self, event: HexView.CursorMoved) -> None:
        self.moves.append(event.info)


def _screen_text(app) -> str:
    hexv = app.query_one(HexView)
    return "\n".join(hexv.render_line(y).text for y in range(hexv.size.height))


# -- offsets and needles -------------------------------------------------------------------------
def test_parse_offset_forms():
    size = 2 * TIB
    assert parse_offset("0x1000", size) == 4096
    assert parse_offset("4096", size) == 4096
    assert parse_offset("4k", size) == 4096
    assert parse_offset("1.5T", size) == 3 * TIB // 2
    assert parse_offset("s2048", size) == 1 << 20
    assert parse_offset("+512", size, current=100) == 612
    assert parse_offset("-100", size, current=100) == 0
    assert parse_offset("end", size) == size - 1
    assert parse_offset("end-512", size) == size - 512
    for bad in ("", "zz", "3T", "-1", "infk", "1e999G", "nanM"):
        with pytest.raises(ValueError):
            parse_offset(bad, size)


def test_parse_needle():
    assert parse_needle("hex:4c 41 42") == b"LAB"
    assert parse_needle("LABELONE") == b"LABELONE"
    with pytest.raises(ValueError):
        parse_needle("hex:zz")


def test_find_bytes_skips_the_holes_of_a_2tib_image(big_image):
    with Evidence(big_image) as ev:
        assert find_bytes(ev, b"LABELONE", 0) == 3 * TIB // 2
        assert find_bytes(ev, b"LABELONE", 3 * TIB // 2 + 1) is None
        assert find_bytes(ev, b"last 16", 0) == 2 * TIB - 12


def test_find_bytes_across_window_boundary():
    data = bytearray(100)
    data[62:66] = b"ABCD"
    assert find_bytes(BytesSpace(bytes(data)), b"ABCD", 0, window=64) == 62


# -- HexView ---------------------------------------------------------------------------------------
async def test_hexview_pages_a_2tib_image_reading_only_what_is_shown(big_image):
    with Evidence(big_image) as ev:
        app = HexApp(ev, title="disk")
        async with app.run_test(size=(100, 30)) as pilot:
            hexv = app.query_one(HexView)
            assert hexv.virtual_size.height == 2 * TIB // ROW
            await pilot.press("end")
            await pilot.pause()
            assert hexv.cursor == 2 * TIB - 1
            assert "the last 16 byte" in _screen_text(app)
            hexv.goto(parse_offset("1.5T", ev.size))
            await pilot.pause()
            assert "LABELONE-at-1.5T" in _screen_text(app)
            before = hexv.cache.reads
            for _ in range(20):
                await pilot.press("pagedown")
            await pilot.pause()
            # 20 pages of ~28 rows of 16 bytes: a handful of 64 KiB chunks, never the image
            assert hexv.cache.reads - before <= 3
            assert hexv.cursor > 3 * TIB // 2 + 20 * 20 * ROW
            assert app.moves and app.moves[-1].offset == hexv.cursor


async def test_hexview_shows_disk_offsets_of_an_lv_and_cursor_keys(tmp_path):
    disk = bytes(range(256)) * 64  # 16 KiB
    base = BytesSpace(disk)
    lv = extent_space(base, data_offset=4096, extent_bytes=4096, pes=[2, 0, None])
    app = HexApp(lv, locate=lv.locate, title="LV")
    async with app.run_test(size=(120, 20)) as pilot:
        hexv = app.query_one(HexView)
        assert hexv.show_disk_column
        first = hexv.render_line(0).text
        assert first.split()[0] == "00000000" and first.split()[1] == f"{4096 + 2 * 4096:08x}"
        await pilot.press("down", "right", "right")
        assert hexv.cursor == 18
        assert app.moves[-1].disk_offset == 4096 + 2 * 4096 + 18
        hexv.goto(2 * 4096 + 5)  # the unknown extent: a hole, no disk offset
        await pilot.pause()
        assert app.moves[-1].disk_offset is None


# -- overlays ------------------------------------------------------------------------------------
def test_fields_of_the_vhd_footer_struct_match_the_spec_offsets():
    vhd = pytest.importorskip("core.structs.vhd")
    table = fields_of(vhd.hd_ftr)
    by_name = {f.name: f for f in table}
    assert by_name["cookie"] == Field(0, 8, "cookie")
    assert by_name["checksum"].offset == vhd.FOOTER_CHECKSUM_OFFSET == 64
    assert by_name["hidden"].offset == vhd.FOOTER_HIDDEN_OFFSET
    assert sum(f.size for f in table) == 512
    header = {f.name: f for f in fields_of(vhd.dd_hdr)}
    assert header["cookie"].offset == 0 and header["table_offset"].offset == 16


async def test_hexview_names_the_field_under_the_cursor():
    vhd = pytest.importorskip("core.structs.vhd")
    space = BytesSpace(b"conectix" + bytes(1024))
    overlay = Overlay.build([(0, "VHD footer", fields_of(vhd.hd_ftr))])
    app = HexApp(space, overlay=overlay, title="LV")
    async with app.run_test(size=(100, 20)) as pilot:
        hexv = app.query_one(HexView)
        hexv.goto(66)
        await pilot.pause()
        f = app.moves[-1].field
        assert (f.struct, f.name, f.start) == ("VHD footer", "checksum", 64)
        hexv.goto(600)
        await pilot.pause()
        assert app.moves[-1].field is None


def test_overlay_nested_structures_later_one_wins():
    ov = Overlay.build([(0, "big", [Field(0, 100, "blob")]), (10, "small", [Field(0, 4, "x")])])
    assert ov.at(5).name == "blob" and ov.at(11).name == "x" and ov.at(50).name == "blob"
    assert ov.at(100) is None
    assert [f.name for f in ov.in_range(8, 16)] == ["blob", "x", "blob"]


# -- DiskMap model ---------------------------------------------------------------------------------
def _vg_model():
    # 1 GiB disk, 4 MiB PEs, PE 0 at 13 MiB (not PE-aligned on purpose), 200 PEs
    size, ext = 1 << 30, 4 << 20
    m = DiskMapModel.for_vg(size, ext, 13 << 20, 200, meta_ranges=[(1 << 20, 13 << 20)],
                            boundaries=[1 << 20])
    m.set_owner(Owner("VHD-a"), [0, 1, 2, 10])
    m.set_owner(Owner("VHD-b", deleted=True), [3, 4, 10], claimed=[4])
    return m


def test_disk_map_model_grains_owners_marks_and_conflicts():
    m = _vg_model()
    assert m.origin == (13 << 20) - 4 * (4 << 20) and m.pe0_grain == 4
    assert m.grain_range(m.pe0_grain) == (13 << 20, 17 << 20)
    assert m.codes[m.pe0_grain + 0] == 0 and m.codes[m.pe0_grain + 3] == 1
    assert m.codes[m.pe0_grain + 10] == CONFLICT     # both LVs claim PE 10
    assert m.codes[m.pe0_grain + 4] == CONFLICT      # a newer generation took PE 4
    assert m.codes[m.pe0_grain + 50] == FREE
    assert m.codes[m.pe0_grain + 250] == OUTSIDE      # past the PV
    assert m.codes[1] == META and m.boundary[m.grain_of(1 << 20)]
    m.add_hits([(13 << 20) + 5 * (4 << 20) + 100])
    assert m.hits[m.pe0_grain + 5]


def test_disk_map_zoom_keeps_the_most_telling_mark():
    m = _vg_model()
    codes, hits, bnd = m.cells(3)  # 8 grains per cell
    assert len(codes) == -(-m.grains // 8)
    # the cell holding PE 10 (grain 14, cell 1) shows the conflict over owners and free PEs
    assert codes[14 // 8] == CONFLICT
    assert bnd[m.grain_of(1 << 20) // 8]


def test_disk_map_model_for_2tib_is_cheap():
    m = DiskMapModel.for_vg(2 * TIB, 4 << 20, 12 << 20, (2 * TIB - (12 << 20)) // (4 << 20))
    assert m.grains == 2 * TIB // (4 << 20)
    m.set_owner(Owner("LV"), list(range(0, 100_000)))
    codes, _, _ = m.cells(6)
    assert (codes[: 100_000 // 64] == 0).sum() >= 100_000 // 64 - 1


class MapApp(App):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.moves, self.jumps = [], []

    def compose(self) -> ComposeResult:
        yield DiskMap(id="map")

    def on_mount(self) -> None:
        self.query_one(DiskMap).set_model(self.model)
        self.query_one(DiskMap).focus()

    def on_disk_map_cursor_moved(self, event):
        self.moves.append(event)

    def on_disk_map_jump_to_lv(self, event):
        self.jumps.append(event)


async def test_disk_map_widget_cursor_zoom_and_jump():
    m = _vg_model()
    app = MapApp(m)
    async with app.run_test(size=(80, 12)) as pilot:
        dm = app.query_one(DiskMap)
        assert dm.zoom == 0  # 260 grains fit on 80x12 at PE level
        dm.goto_pe(1)
        await pilot.pause()
        ev = app.moves[-1]
        assert ev.owner.name == "VHD-a" and ev.pe == 1 and ev.le == 1
        assert ev.start == (13 << 20) + (4 << 20)
        await pilot.press("enter")
        await pilot.pause()
        assert app.jumps and app.jumps[-1].owner.name == "VHD-a" and app.jumps[-1].le == 1
        await pilot.press("minus")
        assert dm.zoom == 1
        await pilot.press("plus")
        assert dm.zoom == 0
        assert app.moves[-1].pe == 0  # zooming keeps the start of the cursor's cell
        await pilot.press("right", "right", "right")
        await pilot.pause()
        assert app.moves[-1].pe == 3 and app.moves[-1].owner.deleted
        line = dm.render_line(0).text
        assert "▒" in line and "█" in line and "X" in line and "M" in line


async def test_disk_map_fits_a_2tib_blank_image():
    m = DiskMapModel.blank(2 * TIB)
    app = MapApp(m)
    async with app.run_test(size=(80, 12)) as pilot:
        dm = app.query_one(DiskMap)
        rows = -(-dm.n_cells // dm.per_row)
        assert rows <= dm.size.height
        await pilot.press("end")
        await pilot.pause()
        assert app.moves[-1].end == 2 * TIB


# -- worker status ---------------------------------------------------------------------------------
class StatusApp(App):
    def compose(self) -> ComposeResult:
        yield WorkerStatus(id="jobs")


async def test_worker_status_rows_appear_update_and_hide():
    app = StatusApp()
    async with app.run_test(size=(80, 10)) as pilot:
        ws = app.query_one(WorkerStatus)
        assert not ws.display or not ws.has_class("-busy")
        ws.add_job("scan-1", "scanning")
        await pilot.pause()
        assert ws.has_class("-busy")
        ws.update_job("scan-1", 50 << 20, 100 << 20, 10 << 20, 5.0)
        await pilot.pause()
        text = str(ws.query_one(".job-rate").render())
        assert "10.0 MiB/s" in text and "ETA 5s" in text
        ws.remove_job("scan-1")
        await pilot.pause()
        assert not ws.has_class("-busy")


async def test_worker_status_says_the_cost_before_the_pass_then_bytes_and_time_left():
    """Issue 14: before a long pass reports progress its line says what it will cost; then
    the bytes read of the total and the time left at the measured rate."""
    from widgets.worker_status import estimate_text
    app = StatusApp()
    async with app.run_test(size=(100, 10)) as pilot:
        ws = app.query_one(WorkerStatus)
        ws.add_job("index-1", "reading the evidence once")
        ws.set_estimate("index-1", estimate_text(8 << 30, 100.0, 82 << 20))
        await pilot.pause()
        text = str(ws.query_one(".job-rate").render())
        assert "reading 8.0 GiB: about 1m40s at 82.0 MiB/s" in text, text
        ws.update_job("index-1", 2 << 30, 8 << 30, 100 << 20, 61.0)
        await pilot.pause()
        text = str(ws.query_one(".job-rate").render())
        assert "2.0 GiB/8.0 GiB" in text and "ETA 1m01s" in text and "about" not in text, text


def test_fmt_eta():
    assert fmt_eta(None) == "" and fmt_eta(75) == "ETA 1m15s" and fmt_eta(7300) == "ETA 2h01m"


# -- garbage in: parsers of technician input and of on-disk bytes never raise anything else ----------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=24), size=st.integers(0, 1 << 42), current=st.integers(0, 1 << 42))
def test_parse_offset_garbage_is_a_value_error_or_in_range(text, size, current):
    try:
        off = parse_offset(text, size, current)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert 0 <= off < max(1, size)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_parse_needle_garbage_is_a_value_error_or_bytes(text):
    try:
        needle = parse_needle(text)
    except ValueError:
        return
    assert isinstance(needle, bytes) and needle


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_fields_of_variable_structs_over_garbage_never_raises(data):
    lvm = pytest.importorskip("core.structs.lvm")
    for struct in (lvm.pv_header, lvm.mda_header):
        table = fields_of(struct, data=data)
        pos = 0
        for f in table:                        # contiguous, inside what was given
            assert f.offset == pos and f.size > 0
            pos += f.size


class EditorApp(App):
    """An extent editor alone; the edit intents it posts are kept in `edits`."""

    def __init__(self) -> None:
        super().__init__()
        self.edits: list = []

    def compose(self) -> ComposeResult:
        yield ExtentEditor(id="e")

    @on(ExtentEditor.Edit)              # every intent is an ExtentEditor.Edit
    def _edit(self, event: ExtentEditor.Edit) -> None:
        self.edits.append(event)


async def test_extent_editor_keys_post_one_intent_message_each():
    from core.case import Extent
    from widgets.extent_editor import ExtentEditor as E

    app = EditorApp()
    async with app.run_test(size=(120, 20)) as pilot:
        editor = app.query_one(E)
        editor.show("VHD-k", "k", [Extent(i) for i in range(6)], extent_bytes=4 << 20,
                    data_offset=0)
        editor.table.focus()
        editor.table.move_cursor(row=2)
        await pilot.press("J", "K", "p", "i", "x", "a", "A", "u", "r", "ctrl+z", "ctrl+y")
        await pilot.press("s", "down", "down", "s")      # mark LE 2, swap it with LE 4
        await pilot.press("s", "s")                      # marked and unmarked: no intent
        await pilot.pause()
        got = [(type(e), e.key, e.le) for e in app.edits]
        assert got == [(E.MoveExtent, "VHD-k", 2), (E.MoveExtent, "VHD-k", 2),
                       (E.SetPe, "VHD-k", 2), (E.InsertGap, "VHD-k", 2),
                       (E.DeleteExtent, "VHD-k", 2), (E.AcceptSuggestion, "VHD-k", 2),
                       (E.AcceptAll, "VHD-k", 2), (E.Undo, "VHD-k", 2), (E.Redo, "VHD-k", 2),
                       (E.Undo, "VHD-k", 2), (E.Redo, "VHD-k", 2),
                       (E.SwapExtents, "VHD-k", 2)]
        assert [e.by for e in app.edits[:2]] == [1, -1]
        assert app.edits[-1].with_le == 4 and editor.marked is None


async def test_extent_editor_renders_only_visible_rows_of_a_huge_map():
    from core.case import Extent
    from widgets.extent_editor import ExtentEditor, ExtentTable

    app = EditorApp()
    async with app.run_test(size=(120, 30)) as pilot:
        editor = app.query_one(ExtentEditor)
        table = editor.query_one(ExtentTable)
        calls = []
        real = table.row_cells
        table.row_cells = lambda le: calls.append(le) or real(le)
        extents = [Extent(i) for i in range(100_000)]       # a 400 GiB VDI
        editor.show("VHD-big", "big", extents, extent_bytes=4 << 20, data_offset=0)
        await pilot.pause()
        table.move_cursor(row=99_999)
        await pilot.pause()
        assert table.row_count == 100_000 and editor.cursor_le == 99_999
        assert len(calls) < 20 * table.size.height            # never the whole map
        assert 99_999 in calls
        line = table.render_line(table.cursor_row - int(table.scroll_y)).text
        assert line.split()[:2] == ["99999", "99999"]


async def test_extent_editor_columns_never_start_a_styled_run_with_spaces():
    """Each column's padding carries its cell's style: no run of the rendered row starts with
    spaces before text (SVG renderers drop those spaces: "1.00" ran into "metadata")."""
    from core.case import Extent
    from widgets.extent_editor import ExtentEditor, ExtentTable

    app = EditorApp()
    async with app.run_test(size=(120, 20)) as pilot:
        editor = app.query_one(ExtentEditor)
        table = editor.query_one(ExtentTable)
        extents = [Extent(30, 1.0, "metadata"), Extent(None, 0.0, "gap"), Extent(7, 0.6, "vhd-match")]
        editor.show("VHD-x", "x", extents, suggestions=[None, Extent(9, 0.95, "vhd-match"), None],
                    extent_bytes=4 << 20, data_offset=0)
        table.move_cursor(row=2)
        await pilot.pause()
        for y in range(3):
            segments = [seg.text for seg in table.render_line(y)]
            text = "".join(segments)
            assert "1.00  metadata" in text or "0.00  gap" in text or "0.60  vhd-match" in text
            for run in segments[1:]:
                assert not (run.startswith(" ") and run.strip()), (y, segments)


async def test_hex_and_map_rows_never_start_a_run_with_spaces_before_text():
    """Screenshot-safe rows: no run of the hex view or the disk map starts with spaces before
    text (SVG renderers drop them: bytes ran together, map labels shifted left)."""
    from rich.segment import Segment

    app = HexApp(BytesSpace(bytes(range(256)) * 4), title="disk")   # zero and non-zero bytes
    async with app.run_test(size=(100, 20)) as pilot:
        hexv = app.query_one(HexView)
        hexv.goto(3)                       # the cursor inside the first row
        await pilot.pause()
        for y in range(3):
            runs = [s.text for s in Segment.simplify(hexv.render_line(y))]
            for run in runs[1:]:
                assert not (run.startswith(" ") and run.strip()), (y, runs)

    class MapApp(App):
        def compose(self) -> ComposeResult:
            yield DiskMap()

    app = MapApp()
    async with app.run_test(size=(100, 12)) as pilot:
        dmap = app.query_one(DiskMap)
        dmap.set_model(_vg_model())
        await pilot.pause()
        for y in range(3):
            runs = [s.text for s in Segment.simplify(dmap.render_line(y))]
            assert runs[0].strip() == "" or not runs[0].startswith(" "), runs
            for run in runs[1:]:
                assert not (run.startswith(" ") and run.strip()), (y, runs)


def test_tree_labels_mark_deleted_first_and_never_start_a_run_with_spaces():
    """Generation and LV labels: "N deleted" / "DELETED" early (the tree pane is narrow), and no
    styled run starting with spaces before text (SVG renderers drop them: "seqno 61mda")."""
    from types import SimpleNamespace as NS

    from rich.console import Console
    from rich.segment import Segment

    from widgets.vg_tree import gen_label, lv_label

    gen = NS(seqno=61, source="mda", crc_ok=True, current=True, creation_time=1700000000,
             description="Deleted VDI", lvs={"a": NS(status="deleted"), "b": NS(status="live")})
    lv = NS(name="VHD-e07405eb-2156-43ab-81f2-54b8adc0da7a", status="deleted", claimed_by={3: "x", 4: "x", 5: "x"},
            le_count=4, pes=lambda: [1, 2, 3, 4])
    g, l = gen_label(gen), lv_label(lv, 4 << 20, "old backup disk")
    assert g.plain.startswith("seqno 61 mda crc ok 1 deleted")
    assert l.plain.startswith("DELETED VHD-e07405eb… 3 PE reused “old backup disk” vhd")
    console = Console(width=200)
    for text in (g, l):
        runs = [s.text for s in Segment.simplify(console.render(text)) if s.text != "\n"]
        for run in runs[1:]:
            assert not (run.startswith(" ") and run.strip()), runs
