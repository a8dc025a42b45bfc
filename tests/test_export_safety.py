"""Output safety and the export/check command line: OUT.part then rename, existing output refused
(exit 3) without --overwrite, output == evidence refused, evidence bytes and mtime unchanged,
cancel leaves nothing behind, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np
import pytest

from core.errors import Cancelled, UnsafeError
from core.source import Evidence
from core.vhd.build import build_vhd
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdImage
from test_vhd_support import EXTENT, cli

MIB = 1 << 20


@pytest.fixture
def vhd_image(tmp_path):
    """A qemu-layout VHD used as the 'disk image', plus a map file that makes it one VDI."""
    rng = np.random.default_rng(31)
    blocks = {b: rng.integers(0, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (0, 3)}
    built = build_vhd(5 * 2 * MIB, blocks, layout="qemu", seed=4)
    path = tmp_path / "evidence.img"
    path.write_bytes(built.data)
    n = -(-len(built.data) // EXTENT)
    mp = tmp_path / "map.json"
    mp.write_text(json.dumps({
        "volume_groups": [{"name": "VG_XenStorage-x", "extent_bytes": EXTENT, "data_offset": 0}],
        "vdis": [{"key": "VHD-11111111-2222-4333-8444-555555555555",
                  "lv": "VHD-11111111-2222-4333-8444-555555555555",
                  "vhd_uuid": None, "map": [[0, 0, n]], "extents_needed": n}]}))
    virtual = bytearray(10 * MIB)
    for b, d in blocks.items():
        virtual[b * 2 * MIB:(b + 1) * 2 * MIB] = d
    return path, mp, built, bytes(virtual)


def _stat(path):
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_part_file_then_rename(vhd_image, tmp_path):
    path, _, built, virtual = vhd_image
    out = str(tmp_path / "o.raw")
    seen = []

    def progress(update):
        seen.append((os.path.exists(out + ".part"), os.path.exists(out)))

    with Evidence(str(path)) as ev:
        img = VhdImage.open(ev)
        export_raw(img, out, [str(path)], progress=progress, chunk=MIB)
    assert seen and all(part and not final for part, final in seen[:-1])
    assert os.path.exists(out) and not os.path.exists(out + ".part")
    assert open(out, "rb").read() == virtual


def test_cancel_leaves_no_output(vhd_image, tmp_path):
    path, _, _, _ = vhd_image
    out = str(tmp_path / "c.raw")
    cancel = threading.Event()

    def progress(update):
        cancel.set()

    with Evidence(str(path)) as ev:
        img = VhdImage.open(ev)
        with pytest.raises(Cancelled):
            export_raw(img, out, [str(path)], cancel=cancel, progress=progress, chunk=MIB)
        with pytest.raises(Cancelled):
            export_vhd(img, out, [str(path)], cancel=cancel, progress=progress)
    assert not os.path.exists(out) and not os.path.exists(out + ".part")


def test_output_onto_evidence_refused_in_api(vhd_image, tmp_path):
    path, _, _, _ = vhd_image
    link = tmp_path / "link.img"
    link.symlink_to(path)
    before = _stat(path)
    with Evidence(str(path)) as ev:
        img = VhdImage.open(ev)
        for target in (str(path), str(link)):
            with pytest.raises(UnsafeError):
                export_vhd(img, target, [str(path)], overwrite=True)
    assert _stat(path) == before


def test_part_file_never_writes_through_to_the_evidence(vhd_image, tmp_path):
    """OUT.part is opened for writing first: an evidence file named OUT.part, or a symlink
    OUT.part -> evidence, must not be truncated (both used to destroy the evidence)."""
    path, mp, built, virtual = vhd_image
    key = "VHD-11111111-2222-4333-8444-555555555555"
    # the evidence itself is called X.part and the output X
    ev_part = tmp_path / "disk.img.part"
    ev_part.write_bytes(path.read_bytes())
    before = _stat(ev_part)
    out = tmp_path / "disk.img"
    p = cli("export", str(ev_part), "--map", str(mp), "--vdi", key, "--format", "raw",
            "-o", str(out))
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "evidence" in p.stderr, p.stderr
    assert _stat(ev_part) == before and not out.exists()
    # a symlink OUT.part pointing at the evidence (left there by accident or malice)
    before = _stat(path)
    out2 = tmp_path / "evil.raw"
    (tmp_path / "evil.raw.part").symlink_to(path)
    p = cli("export", str(path), "--map", str(mp), "--vdi", key, "--format", "raw",
            "-o", str(out2))
    assert p.returncode == 3, p.stderr
    assert _stat(path) == before and not out2.exists()
    with Evidence(str(path)) as ev, pytest.raises(UnsafeError):
        export_raw(VhdImage.open(ev), str(out2), [str(path)])
    assert _stat(path) == before


def test_stale_part_file_is_replaced_not_written_through(vhd_image, tmp_path):
    """A leftover OUT.part (a regular file, or a symlink to some other file) is removed and a
    fresh file written: the symlink's target is left alone."""
    path, _, _, virtual = vhd_image
    other = tmp_path / "someone-elses.txt"
    other.write_bytes(b"not yours")
    out = tmp_path / "a.raw"
    (tmp_path / "a.raw.part").symlink_to(other)
    out_b = tmp_path / "b.raw"
    (tmp_path / "b.raw.part").write_bytes(b"x" * (30 * MIB))   # longer than the export
    with Evidence(str(path)) as ev:
        img = VhdImage.open(ev)
        export_raw(img, str(out), [str(path)])
        export_raw(img, str(out_b), [str(path)])
    assert other.read_bytes() == b"not yours"
    assert not out.is_symlink() and out.read_bytes() == virtual
    assert out_b.read_bytes() == virtual
    assert not (tmp_path / "a.raw.part").exists() and not (tmp_path / "b.raw.part").exists()


def test_cli_export_and_refusals(vhd_image, tmp_path):
    path, mp, built, virtual = vhd_image
    before = _stat(path)
    key = "VHD-11111111-2222-4333-8444-555555555555"
    out = tmp_path / "out.raw"
    p = cli("export", str(path), "--map", str(mp), "--vdi", key, "--format", "raw", "-o", str(out))
    assert p.returncode == 0, p.stderr
    size, digest, where = p.stdout.split()
    assert int(size) == len(virtual) and digest == hashlib.sha256(virtual).hexdigest()
    assert out.read_bytes() == virtual
    # existing output: exit 3, untouched
    out.write_bytes(b"keep me")
    p = cli("export", str(path), "--map", str(mp), "--vdi", key, "--format", "raw", "-o", str(out))
    assert p.returncode == 3 and "exists" in p.stderr and out.read_bytes() == b"keep me"
    p = cli("export", str(path), "--map", str(mp), "--vdi", key[4:], "--format", "vhd",
            "-o", str(out), "--overwrite", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["format"] == "vhd" and doc["bytes"] == len(built.data) == out.stat().st_size
    assert doc["sha256"] == hashlib.sha256(built.data).hexdigest()
    # output == evidence (or the map): exit 3
    for target in (str(path), str(mp)):
        p = cli("export", str(path), "--map", str(mp), "--vdi", key, "--format", "raw",
                "-o", target, "--overwrite")
        assert p.returncode == 3, p.stderr
        assert p.stderr.count("\n") == 1
    assert _stat(path) == before
    # unknown key, bad map: one line, exit 1
    p = cli("export", str(path), "--map", str(mp), "--vdi", "nope", "--format", "raw",
            "-o", str(tmp_path / "n.raw"))
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "nope" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    p = cli("export", str(path), "--map", str(bad), "--vdi", key, "--format", "raw",
            "-o", str(tmp_path / "n.raw"))
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "not JSON" in p.stderr
    p = cli("export", str(path), "--vdi", key, "--format", "qcow2", "-o", str(tmp_path / "q"))
    assert p.returncode == 2
    assert not (tmp_path / "n.raw").exists()


def test_cli_damaged_footer_repair_said_on_stderr(vhd_image, tmp_path):
    path, mp, built, _ = vhd_image
    damaged = tmp_path / "damaged.img"
    data = bytearray(built.data)
    data[-512:] = bytes(512)
    damaged.write_bytes(bytes(data))
    p = cli("export", str(damaged), "--map", str(mp), "--vdi",
            "VHD-11111111-2222-4333-8444-555555555555", "--format", "vhd", "-o",
            str(tmp_path / "r.vhd"))
    assert p.returncode == 0, p.stderr
    assert "primary footer rebuilt from the copy" in p.stderr
    assert (tmp_path / "r.vhd").read_bytes() == built.data


def test_cli_check_json(vhd_image, tmp_path):
    path, mp, built, _ = vhd_image
    data = bytearray(built.data)
    data[1536 + 4:1536 + 8] = (1).to_bytes(4, "big")   # block 1 into the metadata
    bad = tmp_path / "badbat.img"
    bad.write_bytes(bytes(data))
    p = cli("check", str(bad), "--map", str(mp), "--vdi",
            "VHD-11111111-2222-4333-8444-555555555555", "--json")
    assert p.returncode == 1, p.stderr      # errors found: exit 1, the document printed all the same
    doc = json.loads(p.stdout)
    kinds = {f["kind"] for f in doc["findings"]}
    assert "vhd-bat-entry-in-metadata" in kinds
    assert doc["vdi"]["vhd"]["disk_type"] == "dynamic"
    assert all(set(f) >= {"kind", "offset", "severity", "message"} for f in doc["findings"])
    p = cli("check", str(path), "--map", str(mp), "--vdi",
            "VHD-11111111-2222-4333-8444-555555555555")
    assert p.returncode == 0 and "finding(s)" in p.stdout


def test_unreadable_sectors_read_as_zeros_and_are_recorded(vhd_image, tmp_path):
    path, _, built, virtual = vhd_image

    sector = built.block_offsets[3] + 512 + 2 * 512      # data sector 2 of block 3
    bad = (sector, sector + 512)

    class Failing(Evidence):
        def _pread_raw(self, offset, length):
            if offset < bad[1] and offset + length > bad[0]:
                raise OSError(5, "Input/output error")
            return super()._pread_raw(offset, length)

    with Failing(str(path)) as ev:
        img = VhdImage.open(ev)
        r = export_raw(img, str(tmp_path / "io.raw"), [str(path)])
        assert ev.unreadable
    out = (tmp_path / "io.raw").read_bytes()
    assert r.bytes == len(virtual)
    diff = [i for i in range(0, len(virtual), 512) if out[i:i + 512] != virtual[i:i + 512]]
    assert diff == [3 * 2 * MIB + 2 * 512]       # exactly the one unreadable sector, as zeros
    assert out[diff[0]:diff[0] + 512] == bytes(512)
    assert ev.unreadable == [bad]


def test_incomplete_map_is_warned_about(vhd_image, tmp_path):
    path, mp, built, virtual = vhd_image
    doc = json.loads(mp.read_text())
    doc["vdis"][0]["complete"] = False
    doc["vdis"][0]["missing_les"] = [1]
    doc["vdis"][0]["map"] = [[0, 0, 1]]
    doc["vdis"][0]["extents_needed"] = 2
    part = tmp_path / "partial.json"
    part.write_text(json.dumps(doc))
    p = cli("export", str(path), "--map", str(part), "--vdi",
            "VHD-11111111-2222-4333-8444-555555555555", "--format", "raw",
            "-o", str(tmp_path / "p.raw"))
    # issue 10: the BAT points into LE 1, which the map does not place: refused (exit 3),
    # naming the virtual byte range, unless --force; with --force exported and warned
    assert p.returncode == 3, p.stderr
    assert "LE(s) 1" in p.stderr and "virtual bytes" in p.stderr
    assert not (tmp_path / "p.raw").exists()
    p = cli("export", str(path), "--map", str(part), "--vdi",
            "VHD-11111111-2222-4333-8444-555555555555", "--format", "raw",
            "-o", str(tmp_path / "p.raw"), "--force")
    assert p.returncode == 0, p.stderr
    assert "LE(s) 1" in p.stderr and "no extent for LE" in p.stderr


def test_map_placing_one_le_twice_is_a_one_line_error(vhd_image, tmp_path):
    path, mp, _, _ = vhd_image
    doc = json.loads(mp.read_text())
    doc["vdis"][0]["map"] = [[0, 0, 3], [1, 5, 2]]
    bad = tmp_path / "overlap.json"
    bad.write_text(json.dumps(doc))
    p = cli("export", str(path), "--map", str(bad), "--vdi", doc["vdis"][0]["key"],
            "--format", "raw", "-o", str(tmp_path / "o.raw"))
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "LE 1 twice" in p.stderr, p.stderr
    assert not (tmp_path / "o.raw").exists()
