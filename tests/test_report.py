"""`srsalvage report`: after a command-line export and a manual edit the HTML names every VDI
touched with its sha256, the edit and its audit entry; the chained hashes verify, and altering
one audit entry makes the report say the chain is broken. Evidence strings are escaped. The
HTML renders in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from app.cli import main
from core.case import Case, Extent, evidence_identity
from core.report import esc, render_html, build_report
from core.source import Evidence
from test_ui_support import demo, sha256_file  # noqa: F401

CHROMIUM = "/usr/bin/chromium"


def _report(capsys, image, case, out):
    rc = main(["report", image, "--case", case, "-o", out, "--json", "--overwrite"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(stdout), open(out, encoding="utf-8").read()


@pytest.fixture
def worked_case(demo, tmp_path, capsys):
    """A command-line export and a manual edit, both in one case."""
    image, manifest = demo
    case_path = str(tmp_path / "case.json")
    live = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap"
                and v.disk_type == "dynamic")
    out = str(tmp_path / "live.raw")
    rc = main(["export", image, "--vdi", live.lv_name, "--format", "raw", "-o", out,
               "--case", case_path])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    with Evidence(image) as ev:
        case, _ = Case.open(image, case_path, image_bytes=ev.size, identity=evidence_identity(ev))
    case.ensure_map(live.lv_name, [Extent(p) for p in live.pes], origin="generation 62")
    case.swap(live.lv_name, 0, 1)
    return image, manifest, case_path, live, out


def test_report_names_the_export_the_edit_and_verifies_the_chain(worked_case, tmp_path, capsys):
    image, manifest, case_path, live, out = worked_case
    html_path = str(tmp_path / "report.html")
    doc, page = _report(capsys, image, case_path, html_path)
    assert doc["audit_chain_ok"] is True
    sha = sha256_file(out)
    assert [x["sha256"] for x in doc["exports"]] == [sha]
    assert doc["exports"][0]["via"] == "command line" and doc["exports"][0]["generation"]
    assert live.lv_name in page and sha in page and live.label in page
    swap = next(a for a in doc["audit"] if a["action"] == "swap")
    assert "LE 0 &lt;-&gt; LE 1" in page and swap["hash"][:16] in page
    vdi = next(v for v in doc["vdis"] if v["key"] == live.lv_name)
    assert vdi["manual_extents"] == 2 and [e["action"] for e in vdi["edits"]] == ["swap"]
    assert "hash chain intact" in page
    # every LV of the newest generation is named with its label
    for v in manifest.vdis:
        if v.status == "live":
            assert v.lv_name in page
    # one audit entry altered afterwards: the report says the chain is broken, and where
    raw = json.load(open(case_path))
    raw["audit"][0]["sha256"] = "0" * 64
    json.dump(raw, open(case_path, "w"))
    doc, page = _report(capsys, image, case_path, html_path)
    assert doc["audit_chain_ok"] is False and doc["audit_chain"]["broken_at"] == 0
    assert "HASH CHAIN BROKEN" in page and "altered" in page


def test_hostile_strings_are_escaped_in_the_report(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    with Evidence(str(image)) as ev:
        case = Case(None, str(image), ev.size)
        case.ensure_map("VHD-<b>x</b>", [Extent(1)], origin="<img src=x onerror=alert(1)>")
        case.log("export", vdi="VHD-<b>x</b>", detail="\x1b]0;PWNED\x07<script>alert(1)</script>",
                 path="/tmp/\x1b[2J\"'<a>", sha256="ab" * 32, untrusted=[
                     {"virtual_start": 0, "virtual_end": 512, "trust": "overwritten",
                      "evidence_offset": 1, "note": "<script>x</script>"}])
        page = render_html(build_report(ev, case))
    assert "<script" not in page and "<b>x" not in page and "<img" not in page
    assert "\x1b" not in page and "\x07" not in page
    assert "\\x1b]0;PWNED\\x07" in page and "&lt;script&gt;" in page
    assert esc("\u202eevil") == "\\u202eevil"


def test_report_of_a_case_made_on_other_evidence_is_refused(tmp_path, capsys):
    a = tmp_path / "a.img"
    a.write_bytes(b"\1" * 65536)
    case_path = str(tmp_path / "c.json")
    with Evidence(str(a)) as ev:
        Case.open(str(a), case_path, image_bytes=ev.size, identity=evidence_identity(ev))[0].log("x")
    b = tmp_path / "b.img"
    b.write_bytes(b"\2" * 65536)
    rc = main(["report", str(b), "--case", case_path, "-o", str(tmp_path / "r.html")])
    assert rc == 3 and "other evidence" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(worked_case, tmp_path, capsys):
    image, manifest, case_path, live, out = worked_case
    html_path = str(tmp_path / "report.html")
    _report(capsys, image, case_path, html_path)
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}"]
        dom = subprocess.run(base + ["--dump-dom", f"file://{html_path}"], capture_output=True,
                             text=True, timeout=120)
        assert "Recovery report" in dom.stdout and live.lv_name in dom.stdout
        subprocess.run(base + ["--window-size=1200,1600", f"--screenshot={shot}",
                               f"file://{html_path}"], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000   # not a blank page
