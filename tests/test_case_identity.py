"""The case file is bound to its evidence by identity (size, sampled-sector sha256, VG/PV ids),
never moves a file that is not one of ours, turns absurd numbers into a named finding, and keeps
a tamper-evident audit chain. Issue 15 item 3; issue 11 items 2 and 7 (case part)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.cli import main
from core.case import (CASE_FORMAT, Case, CaseError, CaseMismatch, evidence_identity,
                       verify_chain)
from core.errors import UnsafeError
from core.spaces import BytesSpace


def _image(tmp_path, name="disk.img", fill=b"\0", size=1 << 20):
    p = tmp_path / name
    p.write_bytes(fill * size)
    return p


def _ident(path):
    data = path.read_bytes()
    return evidence_identity(BytesSpace(data))


# -- issue 11 item 2: `open --case X` never moves or replaces a file that is not a case ---------
@pytest.mark.parametrize("content", [b"#!/bin/sh\necho important\n", b"", b"{not json",
                                     b'{"format": "other"}', b"\0" * 4096],
                         ids=["script", "empty", "bad-json", "other-format", "zeros"])
def test_issue11_item2_case_option_refuses_a_file_that_is_not_a_case(tmp_path, content):
    image = _image(tmp_path)
    other = tmp_path / "precious.txt"
    other.write_bytes(content)
    before = os.stat(other)
    with pytest.raises(UnsafeError) as err:
        Case.open(str(image), str(other), image_bytes=1 << 20, identity=_ident(image))
    assert "\n" not in str(err.value) and "not" in str(err.value)
    assert other.read_bytes() == content and os.stat(other).st_ino == before.st_ino
    assert [p for p in os.listdir(tmp_path) if "damaged" in p] == []


def _srsalvage(*args, timeout=60):
    """The command in a subprocess without a terminal (a workstation that starts would hang
    until the timeout: the test then fails instead of hanging)."""
    try:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        pytest.fail(f"srsalvage {' '.join(args)} did not refuse: it started")


def test_issue11_item2_open_command_exits_3_and_leaves_the_file(tmp_path):
    image = _image(tmp_path)
    other = tmp_path / "backing.img"
    other.write_bytes(b"some disk bytes" * 100)
    p = _srsalvage("open", str(image), "--case", str(other))
    err = p.stderr
    assert p.returncode == 3 and "not a srsalvage case" in err and err.count("\n") == 1
    assert other.read_bytes() == b"some disk bytes" * 100
    assert sorted(os.listdir(tmp_path)) == ["backing.img", "disk.img"]


def test_issue11_item2_a_damaged_case_of_ours_is_still_moved_aside(tmp_path):
    image = _image(tmp_path)
    ours = tmp_path / "c.json"
    ours.write_bytes(b'{"format": "srsalvage-case", "version": 1, "maps": {"a": 3}')
    case, note = Case.open(str(image), str(ours), image_bytes=1 << 20)
    assert note and "damaged" in note
    assert [p for p in os.listdir(tmp_path) if ".damaged-" in p]


# -- issue 11 item 7 (case part): absurd numbers are a named finding, not an OverflowError ------
@pytest.mark.parametrize("field,body", [
    ("case-created", '{"format": "srsalvage-case", "version": 1, "created": 1e400}'),
    ("case-created", '{"format": "srsalvage-case", "version": 1, "created": -1e400}'),
    ("case-image-bytes", '{"format": "srsalvage-case", "version": 1, "image": {"bytes": 1e400}}'),
    ("case-image-bytes", '{"format": "srsalvage-case", "version": 1, "image": {"bytes": '
                         + "9" * 400 + '}}'),
])
def test_issue11_item7_case_overflow_is_a_named_finding(tmp_path, field, body):
    path = tmp_path / "c.json"
    path.write_text(body)
    with pytest.raises(CaseError) as err:
        Case.load(str(path))
    assert field in str(err.value) and "\n" not in str(err.value)
    image = _image(tmp_path)
    case, note = Case.open(str(image), str(path), image_bytes=1 << 20)
    assert note and field in note
    assert [p for p in os.listdir(tmp_path) if ".damaged-" in p]   # ours: moved aside


def test_issue11_item7_case_overflow_through_the_command_is_not_an_internal_error(tmp_path):
    image = _image(tmp_path)
    case = tmp_path / "c.json"
    case.write_text('{"format": "srsalvage-case", "version": 1, "created": 1e400}')
    p = _srsalvage("report", str(image), "--case", str(case), "-o", str(tmp_path / "r.html"))
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr
    assert p.returncode == 1 and "case-created" in p.stderr and p.stderr.count("\n") == 1
    assert case.exists()      # a report only reads the case: nothing moved


# -- issue 15 item 3: the case is bound to the evidence's identity --------------------------------
def test_identity_samples_are_cheap_and_see_a_different_image(tmp_path):
    a = _image(tmp_path, "a.img")
    b = _image(tmp_path, "b.img")
    data = bytearray(b.read_bytes())
    data[((1 << 20) * 16 // 33) & ~4095] = 1   # one byte in the 16th sampled window
    b.write_bytes(bytes(data))
    ia, ib = _ident(a), _ident(b)
    assert ia["bytes"] == ib["bytes"] and ia["sample_sha256"] != ib["sample_sha256"]
    assert _ident(a) == ia


def test_a_case_refuses_other_evidence_at_the_same_path_and_offers_both_ways(tmp_path):
    image = _image(tmp_path)
    case, _ = Case.open(str(image), image_bytes=1 << 20, identity=_ident(image))
    case.ensure_map("VHD-a", [], origin="x")
    case.log("export", vdi="VHD-a", sha256="ab" * 32)
    # another image of the same size at the same path
    image.write_bytes(b"\x01" * (1 << 20))
    with pytest.raises(CaseMismatch) as err:
        Case.open(str(image), image_bytes=1 << 20, identity=_ident(image))
    msg = str(err.value)
    assert "--no-case" in msg and "--new-case" in msg and "\n" not in msg
    # a new case: the old one is kept aside, nothing inherited
    fresh, note = Case.open(str(image), image_bytes=1 << 20, identity=_ident(image), new_case=True)
    assert fresh.maps == {} and not [a for a in fresh.audit if a["action"] == "export"]
    assert note and ".other-evidence-" in note
    assert [p for p in os.listdir(tmp_path) if ".other-evidence-" in p]


def test_vg_ids_bind_the_case_too():
    case = Case(None)
    assert case.bind_lvm([{"vg": "VG_a", "id": "ID-1", "pvs": ["PV-1"]}]) == ""
    assert case.bind_lvm([{"vg": "VG_a", "id": "ID-1", "pvs": ["PV-1"]}]) == ""
    why = case.bind_lvm([{"vg": "VG_a", "id": "ID-2", "pvs": ["PV-9"]}])
    assert "ID-1" in why and "ID-2" in why


def test_open_command_refuses_a_case_of_other_evidence_with_exit_3(tmp_path):
    image = _image(tmp_path)
    Case.open(str(image), image_bytes=1 << 20, identity=_ident(image))[0].log("x")
    image.write_bytes(b"\x02" * (1 << 20))
    p = _srsalvage("open", str(image))
    err = p.stderr
    assert p.returncode == 3 and "other evidence" in err and "--no-case" in err and "--new-case" in err


# -- the audit chain -----------------------------------------------------------------------------
def test_audit_chain_verifies_and_detects_an_altered_entry(tmp_path):
    image = _image(tmp_path)
    case, _ = Case.open(str(image), image_bytes=1 << 20, identity=_ident(image))
    case.ensure_map("VHD-a", [], origin="x")
    for i in range(5):
        case.log("note", detail=f"entry {i}", n=i)
    again = Case.load(case.path)
    assert verify_chain(again.audit)[0]
    doc = json.loads(open(case.path).read())
    doc["audit"][3]["detail"] = "entry 2 (edited afterwards)"
    open(case.path, "w").write(json.dumps(doc))
    ok, index, why = verify_chain(Case.load(case.path).audit)
    assert not ok and index == 3 and "altered" in why
    doc["audit"][3]["detail"] = "entry 2"
    del doc["audit"][2]
    open(case.path, "w").write(json.dumps(doc))
    ok, index, why = verify_chain(Case.load(case.path).audit)
    assert not ok and index == 2
