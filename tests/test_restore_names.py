"""LV names in the restore file come from what the SR still says (issue 10), checked with real
lvm2: a snapshot chain (grandparent and parent base copies, one leaf) on an SR whose PV label
and metadata area are gone. A child's header parent name holds its parent's `VHD-<vdi uuid>`
device-mapper name, the MGT volume lists the VDIs; the footer unique ids are NOT the VDI uuids.
The restore file applied with `pvcreate --uuid --restorefile` + `vgcfgrestore -f` gives every
LV its `VHD-<vdi uuid>` name with its true extents, and every child's parent locator resolves
to an LV that exists."""

from __future__ import annotations

import uuid

import pytest

import realtools as rt
from core.match.reconstruct import reconstruct
from core.match.restore import format_restore_file, restore_metadata
from core.match.synth import lvhd_vdi, place_extents
from core.source import Evidence
from core.spaces import extent_space
from core.vhd.build import blktap_parent
from core.vhd.reader import VhdImage
from core.xen import build_mgt

E = 4 << 20
MiB = 1 << 20


def _pes(segs) -> list[int]:
    out: list[int] = []
    for le, pe, count in sorted(segs):
        assert le == len(out)
        out.extend(range(pe, pe + count))
    return out


@pytest.mark.slow
def test_restore_file_names_a_snapshot_chain_from_locators_and_mgt(tmp_path):
    rt.need_lvm()
    sr = str(uuid.uuid4())
    vg = f"VG_XenStorage-{sr}"
    ids = {k: str(uuid.uuid4()) for k in ("g", "p", "c")}      # VDI uuids (LV names)
    g = lvhd_vdi(40 * MiB, [0, 1, 2, 3], seed=61, hidden=True)
    p = lvhd_vdi(40 * MiB, [1, 5], seed=62, hidden=True,
                 parent=blktap_parent(sr, f"VHD-{ids['g']}", g.unique_id))
    c = lvhd_vdi(40 * MiB, [2, 7, 8], seed=63,
                 parent=blktap_parent(sr, f"VHD-{ids['p']}", p.unique_id))
    built = {"g": g, "p": p, "c": c}
    assert all(b.unique_id.hex() != ids[k].replace("-", "") for k, b in built.items())
    img = tmp_path / "sr.img"
    with open(img, "wb") as f:
        f.truncate(160 * MiB)
    with rt.loop_device(str(img)) as dev:
        rt.lvm("pvcreate", "-ff", "-y", "--metadatasize", "10M", dev, devices=[dev])
        rt.lvm("vgcreate", "-s", "4M", vg, dev, devices=[dev])
        pe_start = int(rt.lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o",
                              "pe_start", dev, devices=[dev]).stdout.strip())
        rt.lvm("lvcreate", "-L", "4M", "-n", "MGT", vg, devices=[dev])
        for k in ("g", "p", "c"):        # grown in turns so the chain's extents interleave
            rt.lvm("lvcreate", "-L", f"{len(built[k].data) // MiB - 4}M", "-n",
                   f"VHD-{ids[k]}", vg, devices=[dev])
        for k in ("g", "p", "c"):
            rt.lvm("lvextend", "-L", "+4M", f"{vg}/VHD-{ids[k]}", devices=[dev])
        maps = {k: _pes(v) for k, v in rt.lvs_segments(vg, [dev]).items()}
    with open(img, "r+b") as f:
        for k, b in built.items():
            place_extents(f, b.data, maps[f"VHD-{ids[k]}"], pe_start)
        f.seek(pe_start + maps["MGT"][0] * E)
        # sm records base copies too (managed 0); the leaf is the VDI the guest uses
        f.write(build_mgt(sr, "chain SR", vdis=[
            {"uuid": ids["g"], "name_label": "base copy", "managed": 0},
            {"uuid": ids["p"], "name_label": "base copy", "managed": 0},
            {"uuid": ids["c"], "name_label": "web"}]))
        f.seek(0)
        f.write(bytes(pe_start))          # label, mda header and metadata ring gone
    rec = reconstruct(Evidence(str(img)))
    assert rec.grid.source == "inferred" and rec.grid.vg_name == vg
    by_uid = {v.vhd_uuid: v for v in rec.vdis}
    for k, b in built.items():
        u = b.unique_id.hex()
        v = by_uid[f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"]
        assert v.lv == f"VHD-{ids[k]}", (k, v.lv)
        assert v.lv_source == ("mgt" if k == "c" else "parent-locator")
        assert v.complete and v.pes == maps[v.lv], (k, v.pes, maps[v.lv])
    plan = restore_metadata(rec)
    assert not plan.left_out, plan.left_out
    restore = tmp_path / "restore.vg"
    restore.write_text(format_restore_file(plan))
    copy = tmp_path / "copy.img"
    copy.write_bytes(b"")
    import shutil
    shutil.copyfile(img, copy)
    with rt.loop_device(str(copy)) as dev:
        rt.lvm("pvcreate", "-ff", "-y", "--uuid", plan.pv_id, "--restorefile", str(restore),
               dev, devices=[dev])
        rt.lvm("vgcfgrestore", "-f", str(restore), vg, devices=[dev])
        got = {k: _pes(v) for k, v in rt.lvs_segments(vg, [dev]).items()}
    assert got == maps
    # every child's parent locator names an LV that exists, holding the parent's VHD
    ev = Evidence(str(copy))
    for k, parent in (("c", "p"), ("p", "g")):
        child = VhdImage.open(extent_space(ev, pe_start, E, got[f"VHD-{ids[k]}"]))
        hint = child.parent_lv_hint
        assert hint is not None and hint.endswith(f"VHD-{ids[parent]}"), hint
        name = hint.rsplit("-VHD-", 1)[-1] if "-VHD-" in hint else hint
        lv = next(n for n in got if hint.endswith(n))
        par = VhdImage.open(extent_space(ev, pe_start, E, got[lv]))
        assert par.unique_id == child.parent_unique_id, (k, name)
