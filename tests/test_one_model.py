"""Issue 13: one model from metadata to bytes, one export strategy.

* The VDIs the reconstruction rebuilds when every metadata copy is gone are a
  `core.lvm.model.VolumeGroup` (core.match.rebuilt), read through `core.lvm.space.lv_space` like
  any other; the workstation's session takes the typed `Reconstruction` as it is (no JSON round
  trip) and exports a rebuilt VDI byte-exact.
* The export strategy is core's (core.vdi_export): the command line and the workstation give the
  same bytes, or the same refusal, for every kind of LV and both formats.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lvm.model import RECONSTRUCT, LogicalVolume, VolumeGroup
from core.lvm.space import lv_space
from core.match.rebuilt import REBUILT_STATUS, rebuilt_lv_name, rebuilt_segments
from core.spaces import extent_space
from core.xen_names import lv_kind
from test_vhd_support import cli

pytestmark = pytest.mark.slow


@given(st.lists(st.one_of(st.none(), st.integers(0, 64)), max_size=40))
@settings(max_examples=200, deadline=None)
def test_rebuilt_segments_give_back_every_pe_and_gap(pes):
    """Runs of consecutive PEs become linear segments, gaps lvm2 `error` segments: the LV maps
    exactly the given PE per LE, None where nothing was placed, and keeps its length."""
    segs = rebuilt_segments(pes)
    lv = LogicalVolume("vhd:x", segments=segs)
    assert lv.pes() == pes and lv.le_count == len(pes)
    assert all(s.type == "error" and not s.stripes for s in segs if not s.linear)
    assert [s.start_extent for s in segs] == sorted(s.start_extent for s in segs)


@pytest.fixture(scope="module")
def nometa(tmp_path_factory):
    demo = pytest.importorskip("core.demo")
    path = str(tmp_path_factory.mktemp("one-model") / "nometa.img")
    return path, demo.build_demo(path, damage=["partition-table", "metadata"])


def test_rebuilt_vdis_are_the_lvm_model_and_export_exact(nometa, tmp_path, monkeypatch):
    from app.screens.session import Session
    from core.match.reconstruct import Reconstruction

    path, manifest = nometa

    def no_json(self):
        raise AssertionError("the session must take the typed Reconstruction as it is")

    monkeypatch.setattr(Reconstruction, "to_json", no_json)
    s = Session(path, case_mode="none")
    s.set_report(s.analyse())
    assert not s.report.volume_groups
    s.reconstruct()
    vg, rec = s.rebuilt, s.reconstruction
    assert isinstance(vg, VolumeGroup) and isinstance(rec, Reconstruction)
    gen = vg.generations[0]
    assert gen.origin == RECONSTRUCT and gen.source == "reconstruct" and gen.rebuilt
    assert vg.extent_bytes == rec.grid.extent_bytes and vg.data_offset == rec.grid.data_offset
    assert len(gen.lvs) == len(rec.vdis) >= 5
    truth = {v.vhd_unique_id: v for v in manifest.vdis if v.vhd_unique_id}
    exact = None
    for vdi in rec.vdis:
        lv = gen.lvs[rebuilt_lv_name(vdi)]
        assert lv.status == REBUILT_STATUS and lv_kind(lv.name) == "vhd"
        assert lv.le_count >= vdi.extents_needed
        assert lv.pes()[:vdi.extents_needed] == vdi.pes
        # the one LV-as-bytes path reads the rebuilt LV where the grid puts each PE
        got = lv_space(s.ev, vg, gen, lv)
        want = extent_space(s.ev, rec.grid.data_offset, rec.grid.extent_bytes, lv.pes())
        assert got.runs == want.runs and got.size == want.size
        # the editor's extents: the reconstruction's placements, gaps up to the LV's length
        shown = s.engine_extents(lv)
        assert [e.pe for e in shown] == lv.pes()
        t = truth.get(vdi.vhd_uuid)
        if exact is None and t is not None and vdi.complete and t.parent_key is None \
                and lv.pes() == t.pes:
            exact = (lv, t)
    assert exact is not None, "the demo leaves at least one VDI rebuilt completely"
    lv, t = exact
    s.choose_generation(vg, gen)
    s.sel.lv = lv
    res = s.export(vg, lv, str(tmp_path / "ws.raw"), "raw", force=bool(s.conflicts(vg, lv)))
    assert res.sha256 == t.sha256 and res.bytes == t.virtual_bytes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    demo = pytest.importorskip("core.demo")
    path = str(tmp_path_factory.mktemp("one-strategy") / "demo.img")
    return path, demo.build_demo(path, damage="partition-table")


def _cli_export(path, key, fmt, out):
    p = cli("export", path, "--vdi", key, "--format", fmt, "-o", out, "--json", "--no-case")
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else p.stderr)


def _ws_export(s, vg, lv, fmt, out):
    from core.errors import SrsalvageError, UnsafeError
    try:
        return 0, s.export(vg, lv, out, fmt)
    except UnsafeError as exc:
        return 3, str(exc)
    except SrsalvageError as exc:
        return 1, str(exc)


def test_cli_and_workstation_decide_the_export_alike(demo, tmp_path):
    """Every kind of LV (a VHD of a snapshot chain, a raw VDI, MGT) in both formats: the same
    bytes from `srsalvage export` and from the workstation, or the same refusal."""
    from app.screens.session import Session

    path, manifest = demo
    s = Session(path, case_mode="none")
    s.set_report(s.analyse())
    vg, gen = s.sel.vg, s.sel.gen
    by_lv = {v.lv_name: v for v in manifest.vdis if v.status == "live"}
    child = next(v for v in by_lv.values() if v.parent_key is not None)
    raw = next(v for v in by_lv.values() if v.layout == "raw")
    cases = [(child.lv_name, "raw"), (child.lv_name, "vhd"), (raw.lv_name, "raw"),
             (raw.lv_name, "vhd"), ("MGT", "raw")]
    outcomes = set()
    for name, fmt in cases:
        lv = gen.lvs[name]
        s.sel.lv = lv
        rc, doc = _cli_export(path, name, fmt, str(tmp_path / f"cli-{name}.{fmt}"))
        wrc, res = _ws_export(s, vg, lv, fmt, str(tmp_path / f"ws-{name}.{fmt}"))
        assert rc == wrc, (name, fmt, doc, res)
        outcomes.add(rc)
        if rc == 0:
            assert (doc["bytes"], doc["sha256"]) == (res.bytes, res.sha256), (name, fmt)
            assert doc["format"] == res.format == fmt
        if name in by_lv and fmt == "raw":
            assert rc == 0 and doc["sha256"] == by_lv[name].sha256
    # a raw LV has no VHD to write: both refuse the same way (one line, no traceback)
    assert outcomes == {0, 1}


def test_lvm_places_are_where_the_demo_wrote_them(demo):
    """The structure overlay's LVM places come from core (core.lvm.places): the label sector
    and pv_header of the PV, its mda header, and a copy of each generation's text in the ring."""
    from core.lvm.analyse import analyse_disk
    from core.lvm.places import lvm_places
    from core.source import Evidence

    path, manifest = demo
    with Evidence(path) as ev:
        report = analyse_disk(ev)
        places = lvm_places(report)
        by_title: dict[str, list[int]] = {}
        for p in places:
            by_title.setdefault(p.title, []).append(p.offset)
        label = manifest.pv_offset + 512
        assert by_title["LVM label_header"] == [label]
        assert ev.read(label, 8) == b"LABELONE"
        assert by_title["LVM pv_header"] == [label + 32]
        assert manifest.mda_offset in by_title["LVM mda_header"]
        texts = [p for p in places if p.struct is None]
        assert texts and all(manifest.mda_offset < p.offset < manifest.mda_offset
                             + manifest.mda_size for p in texts)
        assert {g.seqno for g in manifest.generations if g.intact} <= \
            {int(p.title.rsplit(" ", 1)[1]) for p in texts}
