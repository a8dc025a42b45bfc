"""Issue 15's numbered items in a real terminal (tmux), on the demo SR: keys typed together as a
terminal delivers them, the screen read back with `capture-pane`.

1  the forced export of the partly overwritten "temp export" VDI: the done dialog says it is not
   the whole disk and lists the overwritten range;
2  after `v` the hex pane's title and footer name the space shown (not the previous one);
3  a case file made on other evidence: `open` refuses and names both ways on;
4  fast edits typed in one burst (`J u J u J u s Down s u`) then Esc: no job stays on screen.

Item 6 (quit asks while an export or carve runs) needs a job that lasts: the demo's exports take
milliseconds, so it is shown with Pilot (test_ui_trust.py) where the job is held open.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

import pytest

from test_ui_support import demo  # noqa: F401
from tmux_term import Term

SRSALVAGE = os.path.join(os.path.dirname(sys.executable), "srsalvage")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed"),
              pytest.mark.skipif(not os.path.exists(SRSALVAGE), reason="srsalvage not installed")]


def _open(image, case, status=None):
    tail = f"; echo $? > {status}" if status else "; sleep 30"
    t = Term(f"{SRSALVAGE} open {image} --case {case}{tail}", prefix="srs15")
    t.wait(r"generations, seqno \d+ has", timeout=60)
    return t


def _jump(t: Term, text: str) -> None:
    t.keys("'")
    t.wait("Jump to a VDI")
    t.type(text)
    t.keys("Enter")


def _open_web01(t: Term) -> None:
    """Down to "web01 system disk" in the tree and Enter, as a technician would (Partitions, VG,
    PV, seqno 62, MGT, then the LVs sorted by name: web01 is the ninth row; no row is
    highlighted before the first Down)."""
    for _ in range(9):
        t.keys("Down")
        time.sleep(0.05)
    t.wait(r"VHD-71eacd05")
    t.keys("Enter")
    t.wait(r"web01 system disk.*LE")


def test_tmux_hex_labels_follow_v(demo, tmp_path):
    image, manifest = demo
    t = _open(image, tmp_path / "c.json")
    try:
        _open_web01(t)
        t.keys("4")
        vdi = next(v for v in manifest.vdis if v.label == "web01 system disk")
        disk = manifest.data_offset + vdi.pes[0] * manifest.extent_bytes
        t.keys("v")
        # title and footer name the LV, its offset 0 and the disk offset under it, without a
        # cursor move
        s = t.wait(r"4 Hex — LV VHD-71eacd05")
        s = t.wait(rf"LV VHD-71eacd05\S* 0x0 +disk {disk:#x}", timeout=5)
        t.keys("v")
        s = t.wait(r"4 Hex — virtual VHD-71eacd05")
        s = t.wait(r"virtual VHD-71eacd05\S* 0x0 +disk 0x", timeout=5)
    finally:
        t.close()


def test_tmux_fast_edits_leave_no_job_behind(demo, tmp_path):
    image, manifest = demo
    t = _open(image, tmp_path / "c.json")
    try:
        _open_web01(t)
        t.keys("3")
        for _ in range(3):
            # one burst, as a terminal delivers keys typed fast
            t.keys("J", "u", "J", "u", "J", "u", "s", "Down", "s", "u", "J", "u", "Escape")
        deadline = time.monotonic() + 30    # checks take a few seconds on a loaded machine
        while time.monotonic() < deadline:
            s = t.screen()
            if "checking" not in s and "running…" not in s:
                break
            time.sleep(0.2)
        assert "checking" not in s and "running…" not in s, s
        # ended: a result for the map, or cancelled by the Esc when the last check was still
        # running (a slower machine); never "checking" forever
        assert re.search(r"check: (PASS|FAIL|check cancelled)", s), s
    finally:
        t.close()


def test_tmux_case_of_other_evidence_is_refused_with_both_choices(tmp_path):
    a = tmp_path / "a.img"
    a.write_bytes(b"\1" * (1 << 20))
    case = tmp_path / "c.json"
    # a case made on image a (an earlier session that decided something)
    from core.case import Case, evidence_identity
    from core.source import Evidence

    with Evidence(str(a)) as ev:
        Case.open(str(a), str(case), image_bytes=ev.size,
                  identity=evidence_identity(ev))[0].log("note", detail="decided something")
    a.write_bytes(b"\2" * (1 << 20))      # another disk at the same path
    t = Term(f"{SRSALVAGE} open {a} --case {case}; echo rc=$?; sleep 20")
    try:
        s = t.wait(r"rc=\d", timeout=30).replace("\n", "")    # long lines wrap
        assert "rc=3" in s and "other evidence" in s and "--no-case" in s and "--new-case" in s
    finally:
        t.close()


def test_tmux_forced_export_done_dialog_lists_the_overwritten_range(demo, tmp_path):
    image, manifest = demo
    vdi = next(v for v in manifest.vdis if v.status == "deleted" and v.claimed_by)
    t = _open(image, tmp_path / "c.json")
    try:
        _jump(t, vdi.label)
        t.wait(rf"{vdi.label}.*LE")
        t.keys("E")
        t.wait("Destination file")
        time.sleep(0.5)
        t.keys("C-u")
        time.sleep(0.3)
        t.type(str(tmp_path / "temp.vhd"))
        t.wait("temp.vhd")
        # the boxes show their state in shape: [ ] until ticked
        s = t.wait(r"▐ ▌ export anyway")
        t.keys("Tab")        # to "export anyway" (focus moves on the next frame)
        time.sleep(0.4)
        t.keys("Space")
        t.wait(r"▐X▌ export anyway")
        for key in ("Tab", "Tab", "Enter"):
            time.sleep(0.3)
            t.keys(key)
        t.wait(r"NOT the whole disk", timeout=60)
        # the dialog may be caught half painted: wait for its untrusted line itself
        s = t.wait(r"untrusted: virtual 0x0-0x3000000 lost", timeout=20)
        owner = next(iter(vdi.claimed_by.values()))
        assert owner[:20] in s, s
    finally:
        t.close()
