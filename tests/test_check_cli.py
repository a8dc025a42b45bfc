"""`srsalvage check` and chain flattening on a real lvm2 SR: a snapshot-style chain where the
parent LV's name no longer matches its VHD unique id, an orphaned child, a damaged BAT."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from core.vhd.build import blktap_parent, build_vhd
from core.structs.lvhd import lvhd_lv_size
from core.vhd.reader import format_uuid
from test_vhd_support import EXTENT, cli, lvm_sr

pytestmark = [pytest.mark.realtools, pytest.mark.slow]
MIB = 1 << 20
BASE = "VHD-0a0a0a0a-1111-4222-8333-444455556666"     # renamed base copy
LEAF = "VHD-1b1b1b1b-1111-4222-8333-444455556666"     # keeps the VDI uuid
ORPHAN = "VHD-2c2c2c2c-1111-4222-8333-444455556666"


def test_check_and_export_chain_via_lvm_analysis(tmp_path):
    pytest.importorskip("core.lvm.analyse", reason="core.lvm.analyse (engineer lvm) not written yet")
    rng = np.random.default_rng(17)
    vsize = 3 * 2 * MIB
    pblocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (0, 1, 2)}
    written = np.zeros(4096, dtype=bool)
    written[8:16] = True
    cdata = rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes()
    with lvm_sr(tmp_path, size_mib=128) as sr:
        sr.lvcreate("MGT", 1)
        sr.lvcreate(BASE, lvhd_lv_size(vsize, 3) // EXTENT)
        sr.lvcreate(LEAF, 3)
        sr.lvcreate(ORPHAN, 3)
        pbuf = io.BytesIO()
        parent = build_vhd(vsize, pblocks, layout="blktap", out=pbuf, lv_size=sr.lv_size(BASE),
                           seed=5, hidden=True)
        sr.write_lv(BASE, pbuf.getvalue())
        sr_uuid = sr.vg.split("-", 1)[1]
        cbuf = io.BytesIO()
        build_vhd(vsize, {1: (cdata, written)}, layout="blktap", out=cbuf,
                  lv_size=sr.lv_size(LEAF), seed=6,
                  parent=blktap_parent(sr_uuid, BASE, parent.unique_id))
        sr.write_lv(LEAF, cbuf.getvalue())
        obuf = io.BytesIO()
        build_vhd(vsize, {0: cdata}, layout="blktap", out=obuf, lv_size=sr.lv_size(ORPHAN),
                  seed=7, parent=blktap_parent(sr_uuid, "VHD-gone", bytes(range(1, 17))))
        data = bytearray(obuf.getvalue())
        data[1536 + 8:1536 + 12] = (3).to_bytes(4, "big")   # block 2 -> into the header
        sr.write_lv(ORPHAN, bytes(data))

        p = cli("check", sr.path, "--vdi", LEAF, "--json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert doc["vdi"]["lv"] == LEAF
        assert doc["vdi"]["vhd"]["parent_unique_id"] == format_uuid(parent.unique_id)
        assert not [f for f in doc["findings"] if f["severity"] == "error"]

        p = cli("check", sr.path, "--vdi", ORPHAN, "--json")
        assert p.returncode == 1, p.stderr      # errors found: exit 1, the findings printed
        kinds = {f["kind"] for f in json.loads(p.stdout)["findings"]}
        assert {"vhd-parent-missing", "vhd-bat-entry-in-metadata"} <= kinds

        p = cli("check", sr.path, "--vdi", BASE)
        assert p.returncode == 0 and "vhd-hidden" in p.stdout

        out = tmp_path / "leaf.raw"
        p = cli("export", sr.path, "--vdi", LEAF[4:], "--format", "raw", "-o", str(out))
        assert p.returncode == 0, p.stderr
        flat = bytearray(b"".join(pblocks[b] for b in range(3)))
        lo = 2 * MIB + 8 * 512
        flat[lo:lo + 8 * 512] = cdata[8 * 512:16 * 512]
        assert out.read_bytes() == bytes(flat)

        p = cli("export", sr.path, "--vdi", ORPHAN, "--format", "raw", "-o",
                str(tmp_path / "orphan.raw"))
        assert p.returncode == 0, p.stderr
        assert "not found" in p.stderr and "not repaired" in p.stderr
