"""Issue 15 item 1: a forced export of a partly overwritten deleted VDI says exactly what it
contains. A foreign VHD's footer, header or BAT in an extent a newer LV took is never read as the
VDI's; every overwritten virtual range is listed with its evidence offset; VHD and raw exports of
one VDI describe the same disk (checked through our reader and through qemu-img)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from app.cli import main
from core.provenance import assess, export_provenance, guarded_space, open_guarded_image
from core.vhd.export import untrusted
from core.spaces import BytesSpace, extent_space
from core.vhd.build import build_vhd
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdImage, format_uuid
from test_ui_support import deleted_claimed, demo  # noqa: F401

MIB = 1 << 20
EXTENT = 4 * MIB


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _vhd_as_raw(path) -> bytes:
    """Our reader over the exported VHD file."""
    data = open(path, "rb").read()
    img = VhdImage.open(BytesSpace(data))
    return img.virtual_space().read(0, img.virtual_size)


def test_forced_export_of_the_overwritten_demo_vdi_is_one_disk_and_says_what_is_missing(
        demo, tmp_path, capsys):
    image, manifest = demo
    vdi = deleted_claimed(manifest)
    outs = {}
    docs = {}
    for fmt in ("vhd", "raw"):
        out = tmp_path / f"x.{fmt}"
        rc = main(["export", image, "--vdi", vdi.lv_name, "--format", fmt, "-o", str(out),
                   "--force", "--json"])
        o, err = capsys.readouterr()
        assert rc == 0, err
        docs[fmt] = json.loads(o)
        outs[fmt] = out
        assert "untrusted" in err
    # the VHD is the VDI's (its footer: its unique id, its 48 MiB), not the newer LV's
    img = VhdImage.open(BytesSpace(outs["vhd"].read_bytes()))
    assert format_uuid(img.unique_id) == vdi.vhd_unique_id
    assert img.virtual_size == vdi.virtual_bytes == os.path.getsize(outs["raw"])
    # both exports describe the same disk
    assert _vhd_as_raw(outs["vhd"]) == outs["raw"].read_bytes()
    if shutil.which("qemu-img"):
        q = tmp_path / "q.raw"
        subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(outs["vhd"]), str(q)],
                       check=True)
        assert q.read_bytes() == outs["raw"].read_bytes()
    # not a byte of the newer LV's disk is passed off as this one's
    logs = next(v for v in manifest.vdis if v.lv_name in set(vdi.claimed_by.values()))
    assert docs["raw"]["sha256"] != logs.sha256
    # every overwritten virtual range is listed, in both documents alike
    for fmt, doc in docs.items():
        bad = doc["untrusted"]
        covered = sum(r["virtual_end"] - r["virtual_start"] for r in bad)
        assert covered == vdi.virtual_bytes, fmt   # the BAT was in PE 37: nothing is placeable
        assert all(r["trust"] in ("lost", "overwritten") for r in bad)
        assert any(logs.lv_name in r["note"] for r in bad)
        assert {t["pe"] for t in doc["taken_extents"] if t["overwritten"]} == \
            {int(p) for p in vdi.claimed_by}
        assert doc["unrepaired"] and doc["untrusted"] == [r for r in doc["ranges"]
                                                          if r["trust"] != "ok"]


def _sr_with_taken_tail(tmp_path, overwrite_with_vhd: bool):
    """A 4-extent blktap VDI (blocks 0..4 written) whose third extent a newer LV took; the newer
    LV wrote its own VHD there (or nothing)."""
    rng = np.random.default_rng(3)
    vsize = 12 * MIB
    blocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in range(5)}
    built = build_vhd(vsize, blocks, layout="blktap", lv_size=4 * EXTENT)
    disk = bytearray(7 * EXTENT)
    pes = [1, 3, 4, 5]
    for le, pe in enumerate(pes):
        disk[pe * EXTENT:(pe + 1) * EXTENT] = built.data[le * EXTENT:(le + 1) * EXTENT].ljust(EXTENT, b"\0")
    if overwrite_with_vhd:
        other = build_vhd(4 * MIB, {0: b"\x55" * (2 * MIB)}, layout="blktap", lv_size=2 * EXTENT, seed=9)
        disk[4 * EXTENT:5 * EXTENT] = other.data[:EXTENT].ljust(EXTENT, b"\0")
    base = BytesSpace(bytes(disk))
    space = extent_space(base, 0, EXTENT, pes, name="VHD-x")
    truth = b"".join(blocks.get(b, bytes(2 * MIB)) for b in range(6))
    return base, space, pes, truth


@pytest.mark.parametrize("overwritten", [True, False])
def test_blocks_in_an_overwritten_extent_are_zeros_in_both_formats_and_listed(tmp_path, overwritten):
    base, space, pes, truth = _sr_with_taken_tail(tmp_path, overwritten)
    guard = assess(space, pes, {4: "VHD-newer"}, EXTENT)
    assert [t.overwritten for t in guard.taken] == [overwritten]
    img = open_guarded_image(space, guard, name="VHD-x")
    raw, vhd = tmp_path / "o.raw", tmp_path / "o.vhd"
    export_raw(img, str(raw))
    export_vhd(img, str(vhd))
    assert _vhd_as_raw(vhd) == raw.read_bytes()
    ranges = export_provenance(img, space, guard)
    bad = untrusted(ranges)
    got = raw.read_bytes()
    if not overwritten:
        # taken but never written: read as found, listed as unproven
        assert got == truth and bad and all(r["trust"] == "unproven" for r in bad)
        return
    assert bad and all(r["trust"] == "overwritten" and "VHD-newer" in r["note"] for r in bad)
    for r in bad:   # listed ranges read as zeros; their evidence offsets lie in PE 4
        assert not any(got[r["virtual_start"]:r["virtual_end"]])
        assert r["evidence_offset"] is None or 4 * EXTENT <= r["evidence_offset"] < 5 * EXTENT
    ok = [r for r in ranges if r["trust"] == "ok"]
    assert ok
    for r in ok:    # everything else is the VDI's own data, from where the list says
        a, b = r["virtual_start"], r["virtual_end"]
        assert got[a:b] == truth[a:b]
        assert base.read(r["evidence_offset"], b - a) == truth[a:b]
    # nothing unlisted went missing
    listed = sum(r["virtual_end"] - r["virtual_start"] for r in bad)
    differs = sum(1 for i in range(0, len(truth), 512) if got[i:i + 512] != truth[i:i + 512])
    assert differs * 512 <= listed
