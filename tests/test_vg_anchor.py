"""Every VG the disk remembers, usable (issue 12), on SRs made by REAL lvm2 on loop devices.

* label and metadata area zeroed, the host's `vgcfgbackup` file kept (GPT and whole disk):
  `lvm --backup` places the PV from the LVs' own contents, gives the maps, `data_offset` and
  the MGT names; `export --backup` of every live VDI equals qemu-img's raw source;
* an SR initialised again over the old one (real `pvcreate -ff` + `vgcreate`, one new VDI over
  the old first extents): both VGs; the old VG placed by the metadata area holding its text;
  old VDIs the new SR left alone export equal; the one it wrote over is refused (exit 3) naming
  the new VG's LV, and `--force` lists the overwritten ranges on stderr and in `--json`;
* sm's journal LVs read as interrupted operations;
* `--pv-offset` overrides what the evidence says.
"""

from __future__ import annotations

import json

import pytest

import lvm_sr as L
import realtools as rt
from test_vhd_support import cli

E, MiB = L.E, L.MiB


def _build_sr(tmp_path, gpt: bool, journal: bool = False):
    rt.need_lvm()
    rt.need_qemu_img()
    img = tmp_path / "sr.img"
    part = L.new_image(img, 160 * MiB, gpt)
    names = [L.vdi_name() for _ in range(3)]
    with rt.loop_device(str(img), offset=part, sizelimit=150 * MiB if gpt else None) as dev:
        sr = L.new_sr(dev, img, part)
        sr.create(names[0], 8)
        sr.create(names[1], 8)
        sr.extend(names[0], 8)                    # interleaved, as VDIs grow in turns
        sr.create(names[2], 12)
        sr.extend(names[1], 4)
        if journal:   # sm's journaler: an inflate interrupted (lvhdutil.inflate, journaler.py)
            sr.create(f"inflate_{names[2][4:]}_12582912", 4)
        sr.refresh_maps()
        backup = tmp_path / "VG_XenStorage.vg"
        sr.lvm("vgcfgbackup", "-f", str(backup), sr.vg)
    for i, n in enumerate(names):
        sr.put_vdi(tmp_path, n, 8, seed=10 + i)
    sr.write_mgt({n: f"disk {i}" for i, n in enumerate(names)})
    return sr, img, part, names, backup


def _wipe(img, start: int, length: int) -> None:
    with open(img, "r+b") as f:
        f.seek(start)
        f.write(bytes(length))


def _lvm_json(*args) -> dict:
    p = cli("lvm", *args, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _maps(doc_vg, seqno=None) -> dict:
    gen = doc_vg["generations"][0] if seqno is None else next(
        g for g in doc_vg["generations"] if g["seqno"] == seqno)
    return {lv["name"]: lv for lv in gen["logical_volumes"]}


def _runs(les) -> list[list[int]]:
    runs: list[list[int]] = []
    for le, (_, pe) in enumerate(les):
        if runs and runs[-1][1] + runs[-1][2] == pe:
            runs[-1][2] += 1
        else:
            runs.append([le, pe, 1])
    return runs


@pytest.mark.parametrize("gpt", [False, True], ids=["whole-disk", "gpt"])
def test_backup_places_a_label_less_sr(tmp_path, gpt):
    sr, img, part, names, backup = _build_sr(tmp_path, gpt)
    _wipe(img, part, sr.pe_start)               # label, mda header and ring: all zero
    # without the backup nothing names this VG
    assert _lvm_json(str(img))["volume_groups"] == []
    doc = _lvm_json(str(img), "--backup", str(backup))
    (vg,) = doc["volume_groups"]
    assert vg["name"] == sr.vg
    assert vg["data_offset"] == sr.data_offsets[0] == part + sr.pe_start
    (pv,) = vg["pvs"]
    assert pv["offset"] == part and pv["anchor"] == "content" and not pv["label_found"]
    assert any(f["kind"] == "lvm-pv-anchored" and f["details"]["source"] == "content"
               for f in doc["findings"])
    lvs = _maps(vg)
    for lv, les in sr.maps.items():
        assert lvs[lv]["map"] == _runs(les), lv
    for i, n in enumerate(names):
        assert lvs[n]["label"] == f"disk {i}"          # the MGT volume read at its place
    for n in names:
        out = tmp_path / f"{n}.raw"
        p = cli("export", str(img), "--backup", str(backup), "--vdi", n, "--format", "raw",
                "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == sr.raws[n], n
    # the carvers and reconstruct start from the same anchor
    p = cli("reconstruct", str(img), "--backup", str(backup), "--json")
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["volume_groups"][0]["data_offset"] == sr.data_offsets[0]
    assert rec["volume_groups"][0]["grid_source"] == "metadata"
    by_lv = {v["lv"]: v for v in rec["vdis"]}
    for n in names:
        assert by_lv[n]["map"] == _runs(sr.maps[n])
    p = cli("check", str(img), "--backup", str(backup), "--vdi", names[0], "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["counts"].get("error", 0) == 0


def test_pv_offset_overrides_the_evidence(tmp_path):
    sr, img, part, names, backup = _build_sr(tmp_path, gpt=True)
    _wipe(img, part, sr.pe_start)
    # the technician says where the PV starts; a wrong place is said, not hidden
    doc = _lvm_json(str(img), "--backup", str(backup), "--pv-offset", "pv0=1MiB")
    (pv,) = doc["volume_groups"][0]["pvs"]
    assert pv["offset"] == MiB and pv["anchor"] == "given"
    doc = _lvm_json(str(img), "--backup", str(backup), "--pv-offset", "0")
    vg = doc["volume_groups"][0]
    assert vg["pvs"][0]["offset"] == 0 and vg["data_offset"] == sr.pe_start
    assert all(lv["label"] is None for lv in _maps(vg).values())   # no MGT header there
    p = cli("lvm", str(img), "--pv-offset", "pv0=twelve")
    assert p.returncode == 1 and "--pv-offset" in p.stderr and "Traceback" not in p.stderr


def test_sm_journal_lv_is_an_interrupted_operation(tmp_path):
    sr, img, part, names, backup = _build_sr(tmp_path, gpt=False, journal=True)
    doc = _lvm_json(str(img))
    found = [f for f in doc["findings"] if f["kind"] == "sm-journal"]
    assert len(found) == 1, doc["findings"]
    f = found[0]
    assert f["details"]["operation"] == "inflate" and f["details"]["vdi_uuid"] == names[2][4:]
    assert f["details"]["lv_bytes_before"] == 12582912
    assert "disk 2" in f["message"] and "footer" in f["message"]


def test_reinitialised_sr(tmp_path):
    """sr-create over an old SR: a new PV label, VG and MGT, one new VDI over the old VDI's
    first extents. Everything of the old SR the new one did not touch is still exportable."""
    rt.need_lvm()
    rt.need_qemu_img()
    img = tmp_path / "sr.img"
    L.new_image(img, 160 * MiB)
    old_names = [L.vdi_name() for _ in range(3)]
    new_name = L.vdi_name()
    with rt.loop_device(str(img)) as dev:
        old = L.new_sr(dev, img)
        old.create(old_names[0], 12)
        old.create(old_names[1], 12)
        old.create(old_names[2], 12)
        old.extend(old_names[1], 4)
        old.refresh_maps()
        for i, n in enumerate(old_names):
            old.put_vdi(tmp_path, n, 8, seed=30 + i)
        old.write_mgt({n: f"old disk {i}" for i, n in enumerate(old_names)})
        # the SR initialised again: as sm's sr-create does it, on the same device
        new = L.new_sr(dev, img)
        new.create(new_name, 8)
        new.refresh_maps()
        new.put_vdi(tmp_path, new_name, 6, seed=40)
        new.write_mgt({new_name: "new disk"})
    assert new.data_offsets == old.data_offsets
    taken = {pe for _, pe in new.maps[new_name]}
    hit = [n for n in old_names if taken & {pe for _, pe in old.maps[n]}]
    assert hit == [old_names[0]]           # lvm2 put the new VDI over the old first VDI

    doc = _lvm_json(str(img))
    vgs = {v["name"]: v for v in doc["volume_groups"]}
    assert set(vgs) == {old.vg, new.vg}
    ov = vgs[old.vg]
    assert ov["data_offset"] == old.data_offsets[0] and ov["pvs"][0]["anchor"] == "metadata-area"
    lvs = _maps(ov)
    for n in old_names:
        assert lvs[n]["map"] == _runs(old.maps[n])
    claimed = lvs[old_names[0]]["claimed_by"]
    assert claimed and set(claimed.values()) == {f"{new.vg}/{new_name}"}
    assert {int(k) for k in claimed} == taken & {pe for _, pe in old.maps[old_names[0]]}
    assert not lvs[old_names[1]]["claimed_by"] and not lvs[old_names[2]]["claimed_by"]
    assert any(f["kind"] == "lvm-vg-overwritten" for f in doc["findings"])

    for n in old_names[1:]:
        out = tmp_path / f"{n}.raw"
        p = cli("export", str(img), "--vdi", n, "--format", "raw", "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == old.raws[n]
    out = tmp_path / "hit.raw"
    p = cli("export", str(img), "--vdi", old_names[0], "--format", "raw", "-o", str(out))
    assert p.returncode == 3, p.stderr
    assert f"{new.vg}/{new_name}" in p.stderr and not out.exists()
    first = min(taken & {pe for _, pe in old.maps[old_names[0]]})
    assert str(first) in p.stderr
    p = cli("export", str(img), "--vdi", old_names[0], "--format", "vhd", "-o", str(out),
            "--force", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["overwritten"] and all(r["claimed_by"] == f"{new.vg}/{new_name}"
                                      for r in res["overwritten"])
    les = {r["le"] + i for r in res["overwritten"] for i in range(r["count"])}
    assert les == {le for le, (_, pe) in enumerate(old.maps[old_names[0]]) if pe in taken}
    assert "overwritten" in p.stderr and f"{new.vg}/{new_name}" in p.stderr
    # the workstation refuses the same export unless forced, naming the new VG's LV
    from app.workstation import open_session
    from core.errors import UnsafeError
    s = open_session(str(img), str(tmp_path / "case.json"))
    try:
        s.set_report(s.analyse())
        ovg = next(v for v in s.volume_groups if v.name == old.vg)
        s.choose_generation(ovg, ovg.generations[0])
        lv = ovg.generations[0].lvs[old_names[0]]
        assert set(s.conflicts(ovg, lv).values()) == {f"{new.vg}/{new_name}"}
        with pytest.raises(UnsafeError, match=new_name):
            s.export(ovg, lv, str(tmp_path / "ws.vhd"), "vhd")
        keep = ovg.generations[0].lvs[old_names[1]]
        s.export(ovg, keep, str(tmp_path / "ws.raw"), "raw")
        assert (tmp_path / "ws.raw").read_bytes() == old.raws[old_names[1]]
    finally:
        s.ev.close()
    # the new SR's VDI is whole
    out = tmp_path / "new.raw"
    p = cli("export", str(img), "--vdi", new_name, "--format", "raw", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == new.raws[new_name]


def test_deleted_snapshot_exports_flattened_through_its_base(tmp_path):
    """sm's snapshot: the VDI's LV became the hidden base copy, the VDI and its snapshot are
    leaves over it. The snapshot leaf is lvremove'd (real lvm2) and the base stays: the export
    from the older generation is the snapshot's whole disk, flattened through its base."""
    import numpy as np

    from core.vhd.build import blktap_parent, build_vhd
    rt.need_lvm()
    rt.need_qemu_img()
    img = tmp_path / "sr.img"
    L.new_image(img, 160 * MiB)
    base, leaf, snap = L.vdi_name(), L.vdi_name(), L.vdi_name()
    vsize = 8 * MiB
    rng = np.random.default_rng(61)
    snap_blocks = {1: rng.integers(0, 256, 2 * MiB, dtype=np.uint8).tobytes(),
                   3: rng.integers(0, 256, 2 * MiB, dtype=np.uint8).tobytes()}
    leaf_blocks = {0: rng.integers(0, 256, 2 * MiB, dtype=np.uint8).tobytes()}
    with rt.loop_device(str(img)) as dev:
        sr = L.new_sr(dev, img)
        sr.create(base, 12)
        sr.create(leaf, 12)
        sr.create(snap, 12)
        sr.refresh_maps()
        sr.put_vdi(tmp_path, base, 8, seed=60)            # qemu-img's VHD: the base copy
        uid = sr.vhds[base][68:84]
        for name, blocks, seed in ((leaf, leaf_blocks, 1), (snap, snap_blocks, 2)):
            built = build_vhd(vsize, blocks, layout="blktap", lv_size=12 * MiB, seed=seed,
                              parent=blktap_parent(sr.sr_uuid, base, uid))
            sr.write_lv(name, built.data)
        sr.lvm("lvremove", f"{sr.vg}/{snap}")             # the snapshot deleted
        sr.create(L.vdi_name(), 4, f"{dev}:30")           # and the SR went on elsewhere
        sr.extend(base, 4, f"{dev}:31")                   # the base copy resized since
    expect = bytearray(sr.raws[base])
    for b, data in snap_blocks.items():
        expect[b * 2 * MiB:(b + 1) * 2 * MiB] = data
    out = tmp_path / "snap.raw"
    p = cli("export", str(img), "--vdi", snap, "--format", "raw", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "generation" in p.stderr           # said: exported from an older generation
    assert f"parent {base} (the base copy) was inflated from 3 to 4 extents" in p.stderr
    assert out.read_bytes() == bytes(expect)


async def test_workstation_opens_a_label_less_sr_with_its_backup(tmp_path):
    """`srsalvage open IMAGE --backup FILE.vg`: the same anchor, maps, names and exports."""
    from app.workstation import WorkstationApp, open_session
    from test_ui_support import wait_idle, wait_until

    sr, img, part, names, backup = _build_sr(tmp_path, gpt=True)
    _wipe(img, part, sr.pe_start)
    session = open_session(str(img), str(tmp_path / "case.json"), backups=[str(backup)])
    app = WorkstationApp(session=session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_idle(app, pilot, timeout=90)
        s, main = app.session, app.main
        vg, gen = s.sel.vg, s.sel.gen
        assert vg.name == sr.vg and vg.data_offset == sr.data_offsets[0]
        for i, n in enumerate(names):
            lv = gen.lvs[n]
            assert s.label(lv, vg) == f"disk {i}"
            main.select_vdi(vg, gen, lv)
            await wait_until(pilot, lambda: not main._jobs and main.editor.check.ok is not None,
                             timeout=60)
            assert main.editor.check.ok, main.editor.check.summary
            out = tmp_path / f"{n}.ws.raw"
            s.export(vg, lv, str(out), "raw")
            assert out.read_bytes() == sr.raws[n]
        await pilot.press("q")
