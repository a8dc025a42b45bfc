"""The small frictions of issue 15: `--version`, `check` exits 1 on errors, name labels for
`--vdi`, export file names without ':', find shows hex and wraps."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from test_ui_support import demo  # noqa: F401


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("srsalvage ")


def test_check_exits_1_on_errors_0_without(demo, capsys):
    image, manifest = demo
    live = next(v for v in manifest.vdis if v.status == "live" and v.layout == "blktap")
    assert main(["check", image, "--vdi", live.lv_name]) == 0
    capsys.readouterr()
    taken = next(v for v in manifest.vdis if v.status == "deleted" and v.claimed_by)
    rc = main(["check", image, "--vdi", taken.lv_name, "--force", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["counts"].get("error")


def test_name_labels_are_accepted_for_vdi(demo, capsys, tmp_path):
    image, manifest = demo
    live = next(v for v in manifest.vdis if v.status == "live" and v.label and v.layout == "blktap")
    rc = main(["export", image, "--vdi", live.label, "--format", "raw", "-o",
               str(tmp_path / "x.raw"), "--json", "--no-case"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == live.sha256


def test_export_dialog_names_have_no_colon():
    from app.screens.export import ExportDialog

    d = ExportDialog("vhd:0a1b2c3d-0000-4000-8000-000000000001", "", "/tmp", {})
    assert ":" not in d._default_dest("vhd").split("/")[-1]


def test_find_needle_shown_as_typed():
    from app.screens.hexpane import needle_text

    assert needle_text(b"LABELONE") == '"LABELONE"'
    assert needle_text(b"\x00\x01conectix") == "hex:00 01 63 6f 6e 65 63 74 69 78"
