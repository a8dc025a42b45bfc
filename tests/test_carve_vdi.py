"""Carving inside a VDI. With real lvm2: a blktap-layout VHD (core.vhd.build) whose virtual disk
holds scattered SQL Server pages and a RAR archive, written into a `VHD-<uuid>` LV with
non-contiguous extents of a real `VG_XenStorage-<uuid>` VG; `carve-mdf/--vdi` and
`carve-rar --vdi` (core.vdi + core.lvm.analyse) find them through the LV and the VHD. And in
the demo SR (core.demo, partition table destroyed) with pages placed by `payloads=`."""

from __future__ import annotations

import hashlib
import io
import json
import random

import pytest

import realtools
from conftest import SHARED_FIXTURES, fixture_bytes
from test_mssql_carve import FIXTURES, scatter

MIB = 1 << 20
MDF = "mdf/ITHelpdesk/Database.mdf.gz"
NAME = "VHD-3f6a7c1e-8b2d-4e5f-9a0b-1c2d3e4f5a6b"


@pytest.mark.realtools
@pytest.mark.slow
def test_carve_through_vdi_in_real_lvm(tmp_path):
    realtools.need_lvm()
    pytest.importorskip("core.lvm.analyse", reason="core.lvm.analyse not available")
    from core.structs.lvhd import lvhd_lv_size
    from core.vhd.build import build_vhd
    from test_vhd_support import EXTENT, cli, lvm_sr

    data = fixture_bytes(MDF)
    rar = fixture_bytes("rar/rarfile/rar5-subdirs.rar")
    payload, planted = scatter(data, seed=31, stale=3, bad=3)
    rng = random.Random(31)
    block = 2 * MIB
    vsize = 12 * block
    disk = bytearray(vsize)
    disk[4096: 4096 + len(payload)] = payload            # a partition at 4 KiB, say
    rar_at = 9 * block + 1234
    disk[rar_at: rar_at + len(rar)] = rar
    blocks = {i: bytes(disk[i * block:(i + 1) * block]) for i in range(vsize // block)
              if any(disk[i * block:(i + 1) * block])}
    order = list(blocks)
    rng.shuffle(order)                                   # blocks in allocation order, not LBA

    with lvm_sr(tmp_path, size_mib=128) as sr:
        need = lvhd_lv_size(vsize, len(blocks)) // EXTENT
        sr.lvcreate(NAME, 2)
        sr.lvcreate("filler", 1)
        sr.lvextend(NAME, need - 2 + 1)
        assert len(sr.segments()[NAME]) >= 2             # really non-contiguous
        buf = io.BytesIO()
        build_vhd(vsize, blocks, layout="blktap", order=order, out=buf,
                  lv_size=sr.lv_size(NAME))
        sr.write_lv(NAME, buf.getvalue())

        out = tmp_path / "mdf-out"
        p = cli("carve-mdf", sr.path, "-o", str(out), "--vdi", NAME, "--json")
        assert p.returncode == 0, p.stderr
        f = json.loads(p.stdout)["files"][0]
        assert hashlib.sha256(open(f["path"], "rb").read()).hexdigest() == FIXTURES[MDF][0]
        assert f["database"] == FIXTURES[MDF][2] and f["sql_server_version"] == 706
        assert f["missing_pages"] == [] and f["bad_checksum_copies"] == 3

        p = cli("carve-rar", sr.path, "-o", str(tmp_path / "rar-out"), "--vdi", NAME[4:],
                "--json")
        assert p.returncode == 0, p.stderr
        archives = json.loads(p.stdout)["archives"]
        assert [a["offset"] for a in archives] == [rar_at]   # offsets in the virtual disk
        assert open(archives[0]["path"], "rb").read() == rar
        assert len(archives[0]["files"]) == 10

        p = cli("carve-mdf", sr.path, "-o", str(tmp_path / "x"), "--vdi", "VHD-nope")
        assert p.returncode == 1 and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_carve_inside_demo_sr_vdi(tmp_path):
    """The demo SR (engineer scan's core.demo, partition table destroyed): pages and an archive
    placed in the virtual disks of two VDIs; carved with --vdi through the LVM analysis."""
    demo = pytest.importorskip("core.demo")
    pytest.importorskip("core.lvm.analyse")
    from test_vhd_support import cli

    data = fixture_bytes("mdf/dotnetnuke/Database.mdf.gz")
    payload, planted = scatter(data, seed=41, stale=4, bad=2)
    rar = fixture_bytes("rar/rarfile/rar3-subdirs.rar")
    page_at = (3 << 20) + 4096 + 1536            # 512-aligned, not 8 KiB aligned
    rar_at = (5 << 20) + 333
    path = str(tmp_path / "demo.img")
    manifest = demo.build_demo(path, payloads={"sql": [(page_at, payload)],
                                               "web": [(rar_at, rar)]})
    sql = next(v for v in manifest.vdis if v.key == "sql")
    web = next(v for v in manifest.vdis if v.key == "web")

    p = cli("carve-mdf", path, "-o", str(tmp_path / "m"), "--vdi", sql.lv_name, "--json")
    assert p.returncode == 0, p.stderr
    (f,) = json.loads(p.stdout)["files"]
    assert hashlib.sha256(open(f["path"], "rb").read()).hexdigest() == \
        FIXTURES["mdf/dotnetnuke/Database.mdf.gz"][0]
    assert f["sql_server_version"] == 661 and f["bad_checksum_copies"] == 2
    assert {c["page"] for c in f["conflicting_pages"]} == planted["stale"]

    p = cli("carve-rar", path, "-o", str(tmp_path / "r"), "--vdi", web.vdi_uuid, "--json")
    assert p.returncode == 0, p.stderr
    arcs = [a for a in json.loads(p.stdout)["archives"] if a["offset"] == rar_at]
    assert len(arcs) == 1 and arcs[0]["complete"]
    assert open(arcs[0]["path"], "rb").read() == rar
