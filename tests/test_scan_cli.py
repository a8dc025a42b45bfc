"""`srsalvage scan` and `srsalvage demo` on the command line: the JSON contract, exit codes,
range parsing, and the demo's hand-over to the workstation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from app.cli import main
from app.commands.scan import parse_range, parse_size
from conftest import ROOT, fixture_bytes

FIXTURE = "lvm/derived/lvm2.vhdx.disk_first_2MiB.bin.gz"


def srsalvage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, cwd=str(ROOT))


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(fixture_bytes(FIXTURE))
    return str(path)


def test_scan_json_contract(disk):
    proc = srsalvage("scan", disk, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)                       # one JSON document, nothing else
    assert set(doc) >= {"image", "scanned", "seconds", "unreadable", "findings", "counts"}
    assert doc["image"] == {"path": disk, "bytes": 2 << 20}
    assert doc["scanned"] == [0, 2 << 20] and doc["unreadable"] == []
    offsets = [f["offset"] for f in doc["findings"]]
    assert offsets == sorted(offsets)
    for f in doc["findings"]:
        assert set(f) == {"kind", "offset", "bytes", "valid", "details"}
    first = {f["kind"]: f for f in reversed(doc["findings"])}
    assert first["lvm-label"]["offset"] == 1049088
    assert first["gpt-header"]["details"]["disk_guid"]
    meta = [f for f in doc["findings"] if f["kind"] == "lvm-metadata"]
    assert doc["counts"]["lvm-metadata"] == len(meta) == 18
    assert {m["details"]["vg"] for m in meta} == {"test"}


def test_scan_kinds_and_range(disk):
    proc = srsalvage("scan", disk, "--json", "--kinds", "lvm-label,gpt-header",
                     "--range", "1M:0x100400")
    doc = json.loads(proc.stdout)
    assert doc["scanned"] == [1 << 20, 0x100400]
    assert [(f["kind"], f["offset"]) for f in doc["findings"]] == [("lvm-label", 1049088)]
    assert doc["counts"] == {"lvm-label": 1}


def test_scan_bad_usage(disk, tmp_path):
    proc = srsalvage("scan", disk, "--kinds", "vhd-footer,nonsense")
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr and "vhd-footer" in proc.stderr and "lvm-label" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = srsalvage("scan", disk, "--range", "2G:1G")
    assert proc.returncode == 2 and "before its start" in proc.stderr
    proc = srsalvage("scan", str(tmp_path / "missing.img"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = srsalvage("scan", str(tmp_path))
    assert proc.returncode == 1 and "directory" in proc.stderr


def test_scan_table(disk, capsys):
    assert main(["scan", disk, "--kinds", "lvm-label,lvm-mda-header"]) == 0
    out = capsys.readouterr().out
    assert "1049088" in out and "0x100200" in out and "lvm-label" in out
    assert "pv_uuid=ggfWay-APBB-AUzO-N4Ix-qTdx-vOh1-k09QQs" in out


def test_scan_leaves_the_evidence_alone(disk):
    before = (open(disk, "rb").read(), os.stat(disk).st_mtime_ns)
    assert srsalvage("scan", disk, "--json").returncode == 0
    assert (open(disk, "rb").read(), os.stat(disk).st_mtime_ns) == before


@pytest.mark.parametrize("text,value", [("0", 0), ("1048576", 1 << 20), ("0x100000", 1 << 20),
                                        ("1M", 1 << 20), ("1G", 1 << 30), ("2048s", 1 << 20),
                                        ("4KiB", 4096), ("1t", 1 << 40)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_parse_range():
    assert parse_range("1G:") == (1 << 30, None)
    assert parse_range(":4096") == (0, 4096)
    for bad in ("5", "1Q:2", "x:y", "4096:512"):
        with pytest.raises(ValueError):
            parse_range(bad)


# -- demo ----------------------------------------------------------------------------------------
def test_demo_no_tui_prints_the_path(tmp_path):
    proc = srsalvage("demo", "--no-tui", "--dir", str(tmp_path), "--damage", "label",
                     "--layout", "whole-disk")
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip()
    assert path == str(tmp_path / "demo-sr.img") and os.path.getsize(path) == 1536 << 20
    manifest = json.loads((tmp_path / "demo-sr.manifest.json").read_text())
    assert manifest["damage"] == ["label"] and manifest["layout"] == "whole-disk"
    with open(path, "rb") as f:
        f.seek(512)
        assert f.read(512) == bytes(512)
    proc = srsalvage("demo", "--no-tui", "--dir", str(tmp_path), "--damage", "flood")
    assert proc.returncode == 2 and "unknown damage" in proc.stderr


def test_demo_opens_the_workstation(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("app.workstation")
    fake.run_workstation = lambda image_path, case_path=None: calls.append((image_path, case_path)) or 0
    monkeypatch.setitem(sys.modules, "app.workstation", fake)
    assert main(["demo", "--dir", str(tmp_path)]) == 0
    assert calls == [(str(tmp_path / "demo-sr.img"), None)]
    with open(calls[0][0], "rb") as f:                   # default damage: table wiped
        assert f.read(34 * 512) == bytes(34 * 512)


def test_demo_without_workstation_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "app.workstation", None)   # import fails
    assert main(["demo", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "workstation is not available" in err[-1]
    assert os.path.exists(tmp_path / "demo-sr.img")
