"""An SR over two PVs (real lvm2): given as two image files, and as two partitions of one image.

LVs span both PVs with the same PE numbers on each, so reading an extent from the wrong PV gives
other bytes. `lvm IMAGE IMAGE` lists both PVs with their image and the maps with the PV of each
run; `export` of each VDI equals qemu-img's raw source; the workstation (Pilot) exports, checks
and shows in the LV hex view the bytes of the right PV (before the one LV-as-bytes path it read
every extent from the first PV).
"""

from __future__ import annotations

import json

import pytest

import lvm_sr as L
import realtools as rt
from test_ui_support import wait_idle, wait_until
from test_vhd_support import cli

E, MiB = L.E, L.MiB
SIZE = 96 * MiB


def _build(tmp_path, layout: str):
    rt.need_lvm()
    rt.need_qemu_img()
    if layout == "two-files":
        files = [tmp_path / "disk1.img", tmp_path / "disk2.img"]
        for f in files:
            L.new_image(f, SIZE)
        places = [(files[0], 0, None), (files[1], 0, None)]
    else:
        if not rt.have("sgdisk"):
            pytest.skip("sgdisk not installed (apt-get install gdisk)")
        files = [tmp_path / "disk.img"]
        L.new_image(files[0], 2 * SIZE + 2 * MiB)
        rt.run("sgdisk", "-n", f"1:2048:+{SIZE // MiB}M", "-t", "1:8e00",
               "-n", f"2:0:+{SIZE // MiB}M", "-t", "2:8e00", str(files[0]))
        second = (SIZE + MiB)
        places = [(files[0], MiB, SIZE), (files[0], second, SIZE)]
    x, y = L.vdi_name(), L.vdi_name()
    with rt.loop_device(str(places[0][0]), places[0][1], places[0][2]) as d1, \
            rt.loop_device(str(places[1][0]), places[1][1], places[1][2]) as d2:
        for d in (d1, d2):
            L.pv_create(d)
        sr = L.SR(L.vg_name(), [d1, d2], [p[0] for p in places], [p[1] for p in places])
        sr.lvm("vgcreate", "-s", "4M", sr.vg, d1, d2)
        sr.data_offsets = [places[0][1] + L.pe_start(d1), places[1][1] + L.pe_start(d2)]
        sr.create("MGT", 4, f"{d1}:0")
        sr.create(x, 8, f"{d1}:3-4")              # X: PV1 PE 3-4, then PV2 PE 0-1
        sr.extend(x, 8, f"{d2}:0-1")
        sr.create(y, 8, f"{d2}:3-4")              # Y: PV2 PE 3-4, then PV1 PE 0-1 ... 1-2
        sr.extend(y, 8, f"{d1}:1-2")
        sr.refresh_maps()
    assert {d for d, _ in sr.maps[x]} == {0, 1} and {d for d, _ in sr.maps[y]} == {0, 1}
    sr.put_vdi(tmp_path, x, 8, seed=51)
    sr.put_vdi(tmp_path, y, 8, seed=52)
    sr.write_mgt({x: "disk X", y: "disk Y"})
    return sr, [str(f) for f in files], x, y


@pytest.fixture(params=["two-files", "two-partitions"])
def two_pv_sr(request, tmp_path):
    return _build(tmp_path, request.param)


def _pv_runs(les) -> list[list]:
    runs: list[list] = []
    for le, (d, pe) in enumerate(les):
        pv = f"pv{d}"
        if runs and runs[-1][3] == pv and runs[-1][1] + runs[-1][2] == pe:
            runs[-1][2] += 1
        else:
            runs.append([le, pe, 1, pv])
    return runs


def test_lvm_and_export_read_each_extent_from_its_pv(two_pv_sr, tmp_path):
    sr, images, x, y = two_pv_sr
    p = cli("lvm", *images, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    (vg,) = doc["volume_groups"]
    pvs = {pv["name"]: pv for pv in vg["pvs"]}
    assert len(pvs) == 2 and all(pv["label_found"] for pv in pvs.values())
    if len(images) > 1:
        assert [pvs[n]["image"] for n in ("pv0", "pv1")] == images
        assert [pvs[n]["image_offset"] + pvs[n]["pe_start"] for n in ("pv0", "pv1")] == \
            sr.data_offsets
    else:
        assert [pvs[n]["data_offset"] for n in ("pv0", "pv1")] == sr.data_offsets
    lvs = {lv["name"]: lv for lv in vg["generations"][0]["logical_volumes"]}
    for lv in (x, y):
        assert lvs[lv]["map"] == _pv_runs(sr.maps[lv])
    assert lvs[x]["label"] == "disk X"
    for lv in (x, y):
        out = tmp_path / f"{lv}.out.raw"
        p = cli("export", *images, "--vdi", lv, "--format", "raw", "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == sr.raws[lv]
        out = tmp_path / f"{lv}.out.vhd"
        p = cli("export", *images, "--vdi", lv, "--format", "vhd", "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == sr.vhds[lv]
    if len(images) > 1:
        # one image of the two: the LEs on the missing PV are said, not read from the other
        out = tmp_path / "half.raw"
        p = cli("export", images[0], "--vdi", x, "--format", "vhd", "-o", str(out))
        assert "on none of the images given" in p.stderr


async def test_workstation_reads_the_right_pv(two_pv_sr, tmp_path):
    from app.workstation import WorkstationApp, open_session

    sr, images, x, y = two_pv_sr
    session = open_session(images[0], str(tmp_path / "case.json"), images[1:])
    app = WorkstationApp(session=session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_idle(app, pilot, timeout=90)
        s, main = app.session, app.main
        vg = s.sel.vg
        assert vg.name == sr.vg and len(vg.pvs) == 2
        gen = s.sel.gen
        for name in (x, y):
            lv = gen.lvs[name]
            main.select_vdi(vg, gen, lv)
            await wait_until(pilot, lambda: not main._jobs and main.editor.check.ok is not None,
                             timeout=60)
            assert main.editor.check.ok, main.editor.check.summary
            out = tmp_path / f"{name}.ws.raw"
            res = s.export(vg, lv, str(out), "raw")
            assert out.read_bytes() == sr.raws[name] and res.bytes == len(sr.raws[name])
            main.set_hex_mode("lv")
            space = main.hex.space
            vhd = sr.vhds[name]
            assert space.read(0, len(vhd)) == vhd
            # the hex view says where on the disk each byte is: the second PV for LE 2
            le2 = sr.maps[name][2]
            assert space.locate(2 * E) == sr.data_offsets[le2[0]] + le2[1] * E \
                + (session.ev.members[le2[0]][0] if len(images) > 1 else 0)
            main.set_hex_mode("disk")
        # the disk map shows both PVs: the extents of X are painted on both
        model = s.disk_model()
        assert model.owners and any(o.name == x for o in model.owners)
        await pilot.press("q")


def test_reconstruct_never_maps_an_extent_of_another_pv_on_the_first(two_pv_sr, tmp_path):
    """reconstruct's grid is the first PV's: LEs on the second PV are missing in its map (and
    said), never read from the first PV's PE of the same number."""
    sr, images, x, y = two_pv_sr
    p = cli("reconstruct", *images, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert any(f["kind"] == "multi-pv-vg" for f in doc["findings"])
    by_lv = {v["lv"]: v for v in doc["vdis"]}
    for lv in (x, y):
        placed = {e["le"]: e["pe"] for e in by_lv[lv]["extents"]}
        want = {le: pe for le, (d, pe) in enumerate(sr.maps[lv]) if d == 0}
        assert {le: placed[le] for le in want} == want
        assert not set(placed) - set(want)
        assert set(by_lv[lv]["missing_les"]) == {le for le, (d, _) in enumerate(sr.maps[lv])
                                                if d == 1}
