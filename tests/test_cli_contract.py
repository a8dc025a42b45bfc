"""Every headless command, end to end on the demo SR: the evidence is never changed, `--json`
prints one parseable document, and bad input (a missing path, a directory, an empty file,
garbage) gives a short message on stderr and a contract exit code, never a traceback."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from app.cli import main
from core.demo import build_demo


def _digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest(), os.stat(path).st_mtime_ns


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    image = str(root / "demo-sr.img")
    manifest = build_demo(image, damage="partition-table", attach_cycles=2)
    return image, manifest, root


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _commands(image, manifest, out_dir):
    live = next(v for v in manifest.vdis if v.layout == "blktap" and v.status == "live" and v.disk_type == "dynamic")
    return {
        "scan": ["scan", image, "--json"],
        "lvm": ["lvm", image, "--json"],
        "reconstruct": ["reconstruct", image, "--json"],
        "check": ["check", image, "--vdi", live.lv_name, "--json"],
        "export-raw": ["export", image, "--vdi", live.lv_name, "--format", "raw",
                       "-o", str(out_dir / "live.raw"), "--json"],
        "export-vhd": ["export", image, "--vdi", live.lv_name, "--format", "vhd",
                       "-o", str(out_dir / "live.vhd"), "--json"],
        "carve-rar": ["carve-rar", image, "-o", str(out_dir / "rar"), "--json"],
        "carve-mdf": ["carve-mdf", image, "-o", str(out_dir / "mdf"), "--json"],
        # the demo's carved data file (it has no catalog: a finding, no tables)
        "mdf-tables": ["mdf-tables", str(out_dir / "mdf" / "webshop.mdf"), "--json"],
    }


@pytest.mark.slow
def test_every_command_leaves_the_evidence_unchanged_and_prints_json(demo, capsys, tmp_path):
    image, manifest, _ = demo
    before = _digest(image)
    for name, argv in _commands(image, manifest, tmp_path).items():
        rc, out, err = _run(capsys, argv)
        assert rc == 0, f"{name}: exit {rc}: {err}"
        json.loads(out)  # exactly one JSON document on stdout
        assert "Traceback" not in err, name
        assert _digest(image) == before, f"{name} changed the evidence"
    # the raw export is the virtual disk the demo wrote
    live = next(v for v in manifest.vdis if v.layout == "blktap" and v.status == "live" and v.disk_type == "dynamic")
    assert _digest(str(tmp_path / "live.raw"))[0] == live.sha256


def _bad_inputs(tmp_path):
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(hashlib.sha256(b"seed").digest() * (1 << 15))  # 1 MiB of noise
    return {"missing": str(tmp_path / "nope.img"), "directory": str(tmp_path),
            "empty": str(empty), "garbage": str(garbage)}


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "garbage"])
@pytest.mark.parametrize("command", ["scan", "lvm", "reconstruct", "check", "export",
                                     "carve-rar", "carve-mdf", "mdf-tables"])
def test_bad_input_gives_a_short_message_not_a_traceback(command, kind, tmp_path, capsys):
    source = _bad_inputs(tmp_path)[kind]
    out_dir = tmp_path / "out"
    argv = {
        "scan": ["scan", source, "--json"],
        "lvm": ["lvm", source, "--json"],
        "reconstruct": ["reconstruct", source, "--json"],
        "check": ["check", source, "--vdi", "VHD-x", "--json"],
        "export": ["export", source, "--vdi", "VHD-x", "--format", "raw",
                   "-o", str(out_dir / "x.raw")],
        "carve-rar": ["carve-rar", source, "-o", str(out_dir / "rar")],
        "carve-mdf": ["carve-mdf", source, "-o", str(out_dir / "mdf")],
        "mdf-tables": ["mdf-tables", source, "--json", "--csv", str(out_dir / "csv")],
    }[command]
    rc, out, err = _run(capsys, argv)
    assert "Traceback" not in err and "internal error" not in err, err
    if kind in ("missing", "directory"):
        assert rc == 1
    if kind in ("missing", "directory") or command in ("check", "export"):
        # nothing to find: a failure with one short reason
        assert rc == 1, (rc, out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 3 and lines[-1].startswith("srsalvage:"), err
    else:
        assert rc in (0, 1), (rc, err)
        if rc == 0 and "--json" in argv:
            json.loads(out)
    assert not os.path.exists(out_dir / "x.raw")


@pytest.mark.slow
def test_deleted_vdi_exports_warn_on_stderr_and_refuse_reused_extents(demo, capsys, tmp_path):
    """cli-contract `export`: a deleted VDI comes from the newest older generation with a warning
    on stderr (stdout stays one JSON document); one whose extents a newer LV took exits 3 and
    names the extents, and is exported only with --force."""
    image, manifest, _ = demo
    before = _digest(image)
    intact = next(v for v in manifest.vdis if v.status == "deleted" and not v.claimed_by)
    taken = next(v for v in manifest.vdis if v.status == "deleted" and v.claimed_by)
    out = tmp_path / "intact.raw"
    rc, stdout, err = _run(capsys, ["export", image, "--vdi", intact.lv_name, "--format", "raw",
                                    "-o", str(out), "--json"])
    assert rc == 0, err
    doc = json.loads(stdout)
    assert doc["sha256"] == intact.sha256 == _digest(str(out))[0]
    assert "warning" in err and f"seqno {intact.removed_seqno - 1}" in err
    assert doc["generation"] == intact.removed_seqno - 1 < max(manifest.seqnos)
    out2 = tmp_path / "taken.raw"
    rc, stdout, err = _run(capsys, ["export", image, "--vdi", taken.lv_name, "--format", "raw",
                                    "-o", str(out2), "--json"])
    assert rc == 3 and stdout == "" and not out2.exists() and not os.path.exists(f"{out2}.part")
    first = min(taken.claimed_by)
    assert str(first) in err and taken.claimed_by[first] in err and "--force" in err
    rc, stdout, err = _run(capsys, ["export", image, "--vdi", taken.lv_name, "--format", "raw",
                                    "-o", str(out2), "--json", "--force"])
    assert rc == 0, err
    assert json.loads(stdout)["bytes"] == taken.virtual_bytes and out2.exists()
    assert _digest(image) == before
