"""Round trips through independent tools: qemu-img writes the VHDs, real lvm2 lays out the LVs
(non-contiguous extents), srsalvage exports them, qemu-img reads the exports back."""

from __future__ import annotations

import os

import pytest

import realtools
from core.source import Evidence
from core.vhd.checks import check_vhd
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdImage
from test_vhd_support import EXTENT, cli, lvm_sr, qemu_img, qemu_to_raw, random_raw, same_file

pytestmark = pytest.mark.realtools

VARIANTS = {
    "dynamic": [],
    "dynamic-force-size": ["-o", "force_size=on"],
    "fixed": ["-o", "subformat=fixed"],
}


def _make_vhd(tmp_path, variant: str, size: int = 20 << 20, seed: int = 1):
    raw = tmp_path / "orig.raw"
    random_raw(raw, size, seed=seed)
    vhd = tmp_path / "orig.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", *VARIANTS[variant], str(raw), str(vhd))
    ref = tmp_path / "ref.raw"
    qemu_to_raw(str(vhd), str(ref))
    return vhd, ref


def _place_in_lv(sr, vhd_path, name="VHD-0b7e4c62-93a5-4c0e-9a47-5f0d0c4b3f11"):
    """An LV with non-contiguous extents (a filler LV sits between its first and later PEs)."""
    need = -(-os.path.getsize(vhd_path) // EXTENT)
    sr.lvcreate(name, 2)
    sr.lvcreate("filler", 1)
    sr.lvextend(name, max(1, need - 2) + 1)  # one spare extent: the LV end is past the VHD
    runs = sr.segments()[name]
    assert len(runs) >= 2, runs  # really non-contiguous
    sr.write_lv(name, str(vhd_path))
    return name


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_qemu_vhd_in_lvm_lv_round_trip(tmp_path, variant):
    realtools.need_qemu_img()
    vhd, ref = _make_vhd(tmp_path, variant)
    with lvm_sr(tmp_path) as sr:
        name = _place_in_lv(sr, vhd)
        with Evidence(sr.path) as ev:
            img = VhdImage.open(sr.space(ev, name), name=name)
            assert img.footer_source in ("after-data", "scan")  # the LV end holds zeros
            assert [f for f in check_vhd(img) if f.severity == "error"] == []
            out_vhd = tmp_path / "out.vhd"
            r = export_vhd(img, str(out_vhd), [sr.path])
            assert r.repairs == []
            # byte-identical to the VHD that was copied into the LV
            assert same_file(out_vhd, vhd)
            back = tmp_path / "back.raw"
            qemu_to_raw(str(out_vhd), str(back))
            assert same_file(back, ref)
            out_raw = tmp_path / "out.raw"
            rr = export_raw(img, str(out_raw), [sr.path])
            assert same_file(out_raw, ref)
            assert rr.bytes == os.path.getsize(ref)
            # sparse: holes were seeked over
            assert os.stat(out_raw).st_blocks * 512 < rr.bytes
        # the same through the command line, extents from the LVM analysis (no map)
        if _have_analysis():
            cli_vhd, cli_raw = tmp_path / "cli.vhd", tmp_path / "cli.raw"
            p = cli("export", sr.path, "--vdi", name, "--format", "vhd", "-o", str(cli_vhd))
            assert p.returncode == 0, p.stderr
            assert same_file(cli_vhd, vhd)
            p = cli("export", sr.path, "--vdi", name, "--format", "raw", "-o", str(cli_raw))
            assert p.returncode == 0, p.stderr
            assert same_file(cli_raw, ref)


def _have_analysis() -> bool:
    try:
        import core.lvm.analyse  # noqa: F401  (engineer lvm)
    except ImportError:
        return False
    return True


def test_qemu_vhd_exported_through_cli_with_map(tmp_path):
    realtools.need_qemu_img()
    vhd, ref = _make_vhd(tmp_path, "dynamic", seed=7)
    with lvm_sr(tmp_path) as sr:
        name = _place_in_lv(sr, vhd)
        mp = sr.write_map(tmp_path / "map.json")
        before = os.stat(sr.path)
        out = tmp_path / "cli.raw"
        p = cli("export", sr.path, "--map", mp, "--vdi", name, "--format", "raw", "-o", str(out))
        assert p.returncode == 0, p.stderr
        size, digest, path = p.stdout.split()
        assert int(size) == os.path.getsize(ref)
        assert same_file(out, ref)
        import hashlib
        assert digest == hashlib.sha256(ref.read_bytes()).hexdigest()
        outv = tmp_path / "cli.vhd"
        p = cli("export", sr.path, "--map", mp, "--vdi", name, "--format", "vhd", "-o", str(outv),
                "--json")
        assert p.returncode == 0, p.stderr
        import json
        doc = json.loads(p.stdout)
        assert doc["bytes"] == os.path.getsize(vhd) and doc["format"] == "vhd"
        assert same_file(outv, vhd)
        after = os.stat(sr.path)
        assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)


@pytest.mark.slow
def test_qemu_vhd_exported_through_lvm_analysis(tmp_path):
    """Without a map: core.vdi asks engineer lvm's analyse_disk for the LV's extents."""
    realtools.need_qemu_img()
    pytest.importorskip("core.lvm.analyse", reason="core.lvm.analyse (engineer lvm) not written yet")
    vhd, ref = _make_vhd(tmp_path, "dynamic-force-size", seed=11)
    with lvm_sr(tmp_path) as sr:
        name = _place_in_lv(sr, vhd)
        for key in (name, name[4:]):  # LV name, VDI uuid
            out = tmp_path / f"a-{len(key)}.raw"
            p = cli("export", sr.path, "--vdi", key, "--format", "raw", "-o", str(out))
            assert p.returncode == 0, p.stderr
            assert same_file(out, ref)
        # the VHD footer unique id works as a key too
        with Evidence(str(vhd)) as ev:
            uid = VhdImage.open(ev).describe()["unique_id"]
        out = tmp_path / "by-uid.vhd"
        p = cli("export", sr.path, "--vdi", uid, "--format", "vhd", "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert same_file(out, vhd)
        p = cli("check", sr.path, "--vdi", name, "--json")
        assert p.returncode == 0, p.stderr
