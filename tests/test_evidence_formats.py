"""Evidence as technicians bring it: E01 from real ewfacquire, split raw, ddrescue image + mapfile.

The SR images come from real lvm2 (tests/test_reconstruct_lvm.py's builder, root and loop
devices); the E01 segment sets from real `ewfacquire`, the rescued images and mapfiles from a
real `ddrescue` run over a FUSE file that fails with EIO on chosen ranges
(tests/fuse_badblocks.py, mfusepy over libfuse 3). Each test skips with the reason when a tool
is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

import realtools as rt
from app.cli import main

MiB = 1 << 20
E = 4 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys, argv, rc_ok=(0,)):
    rc, out, err = _run(capsys, argv)
    assert rc in rc_ok, err
    return json.loads(out), err


def _sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lvm_doc(capsys, image, *extra):
    doc, _ = _json(capsys, ["lvm", image, "--json", *extra])
    doc["image"].pop("path")
    return doc


def _rec_doc(capsys, image, *extra):
    doc, _ = _json(capsys, ["reconstruct", image, "--json", *extra])
    doc["image"].pop("path")
    return doc


@pytest.fixture(scope="module")
def real_sr(tmp_path_factory):
    """A real-lvm2 SR image with its metadata intact (lvm, reconstruct and export all work)."""
    from test_reconstruct_lvm import build_sr
    tmp = tmp_path_factory.mktemp("evidence-sr")
    img, truth = build_sr(tmp, wipe=False)
    return img, truth


def _ewfacquire(raw, target, segment_bytes: int) -> list[str]:
    if not rt.have("ewfacquire"):
        pytest.skip("ewfacquire not installed (apt-get install ewf-tools)")
    rt.run("ewfacquire", "-u", "-q", "-t", str(target), "-f", "encase6", "-S", str(segment_bytes),
           "-c", "none", "-d", "sha1", "-C", "case-16", "-e", "srsalvage tests", str(raw))
    d = os.path.dirname(str(target))
    base = os.path.basename(str(target))
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith(base + ".E"))


@pytest.mark.slow
@pytest.mark.realtools
def test_e01_from_real_ewfacquire_gives_what_the_raw_image_gives(real_sr, tmp_path, capsys):
    """lvm, reconstruct, export (raw and vhd) and verify on a 3-segment E01 made by ewfacquire
    from a real-lvm2 SR image answer exactly what they answer on the raw image."""
    img, truth = real_sr
    segments = _ewfacquire(img, tmp_path / "sr", 80 * MiB)
    assert [os.path.splitext(s)[1] for s in segments] == [".E01", ".E02", ".E03"]
    e01 = segments[0]
    assert _lvm_doc(capsys, e01) == _lvm_doc(capsys, img)
    assert _rec_doc(capsys, e01) == _rec_doc(capsys, img)
    names = truth["_names"]
    for key in ("A", "B", "C", "Q"):
        for fmt in ("raw", "vhd"):
            docs = []
            for source in (img, e01):
                out = tmp_path / f"{key}-{fmt}-{os.path.basename(str(source))}"
                doc, _ = _json(capsys, ["export", source, "--vdi", names[key], "--format", fmt,
                                        "-o", out, "--json"])
                assert doc["sha256"] == _sha(out) and doc["unreadable_virtual"] == []
                docs.append((doc["bytes"], doc["sha256"]))
            assert docs[0] == docs[1], (key, fmt)
    # verify: the MD5 and SHA1 ewfacquire stored match the raw image's
    doc, _ = _json(capsys, ["verify", e01, "--json"])
    md5, sha1 = hashlib.md5(), hashlib.sha1()
    with open(img, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            md5.update(block)
            sha1.update(block)
    assert doc["stored"] == {"MD5": md5.hexdigest(), "SHA1": sha1.hexdigest()}
    assert doc["computed"] == doc["stored"] and doc["ok"] and doc["format"] == "ewf"
    assert doc["header"]["case_number"] == "case-16"


@pytest.mark.slow
@pytest.mark.realtools
def test_e01_corrupted_chunk_is_unreadable_and_fails_verify(tmp_path, capsys):
    """A chunk whose bytes were changed in segment 2 fails libewf's checksum: verify exits 1
    naming the MD5/SHA1 mismatch and exactly that chunk as unreadable; lvm lists it too."""
    import random
    rng = random.Random(16)
    raw = tmp_path / "disk.raw"
    data = bytearray(6 * MiB)
    for at in range(0, len(data), 64 << 10):
        data[at: at + 4096] = rng.randbytes(4096)
    raw.write_bytes(bytes(data))
    segments = _ewfacquire(raw, tmp_path / "disk", 1 * MiB)
    assert len(segments) >= 3
    ok, _ = _json(capsys, ["verify", segments[0], "--json"])
    assert ok["ok"] and ok["unreadable"] == []
    # flip bytes of a chunk stored (uncompressed) in the second segment
    seg2 = bytearray(open(segments[1], "rb").read())
    probe_at = None
    for at in range(0, len(data), 64 << 10):
        i = seg2.find(bytes(data[at: at + 4096]))
        if i >= 0:
            probe_at, seg_off = at, i
            break
    assert probe_at is not None
    seg2[seg_off + 100: seg_off + 116] = b"\xff" * 16
    with open(segments[1], "wb") as f:
        f.write(seg2)
    chunk = probe_at // 32768 * 32768
    rc, out, err = _run(capsys, ["verify", segments[0], "--json"])
    doc = json.loads(out)
    assert rc == 1 and "MD5" in err
    assert doc["mismatched"] == ["MD5", "SHA1"] and not doc["ok"]
    assert doc["unreadable"] == [[chunk, chunk + 32768]]
    lvm, _ = _json(capsys, ["lvm", segments[0], "--json"])
    assert lvm["unreadable"] == [[chunk, chunk + 32768]]


def test_not_an_ewf_and_missing_segment_are_one_line_errors(tmp_path, capsys):
    fake = tmp_path / "x.E01"
    fake.write_bytes(b"EVF\x09\x0d\x0a\xff\x00" + bytes(600))
    rc, out, err = _run(capsys, ["lvm", fake])
    assert rc == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
