"""Issue 11: hostile evidence and careless commands. One regression test per numbered item of
the red-team report (each failed on the code before the fix), named test_issue11_item<N>_...
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from app.cli import main
from core.match.synth import lvhd_vdi, place_extents

E = 4 << 20
MiB = 1 << 20
D = 11 << 20
EVIL_UUID = "x\necho PWNED > pwned-marker #"


def _sr(path, mgt_uuid=None, mgt_label="", vdi_labels=()):
    """A metadata-wiped SR: the PV label survives, two LVHD VDIs in interleaved extents, and
    (optionally) the MGT volume at PE 16 naming the SR `mgt_uuid`."""
    from core.lvm.label import build_label_sector
    from core.match.restore import lvm_id
    from core.xen import build_mgt

    a = lvhd_vdi(40 * MiB, list(range(9)), seed=31)
    b = lvhd_vdi(40 * MiB, list(range(8)), seed=32)
    with open(path, "wb") as f:
        f.truncate(D + 20 * E)
        f.seek(512)
        f.write(build_label_sector(lvm_id(), D + 20 * E, D, [(4096, D - 4096)]))
        place_extents(f, a.data, [0, 1, 2, 8, 9, 10], D)
        place_extents(f, b.data, [3, 4, 5, 11, 12, 13], D)
        if mgt_uuid is not None:
            f.seek(D + 16 * E)
            f.write(build_mgt(mgt_uuid, mgt_label, "",
                              [{"uuid": f"00000000-0000-0000-0000-00000000000{i}",
                                "name_label": lab} for i, lab in enumerate(vdi_labels)]))
    return a, b


def _stub_host(tmp_path):
    """A PATH where the host's tools (xe, pvcreate, vgcfgrestore, hostname) only log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("xe", "pvcreate", "vgcfgrestore", "hostname"):
        p = bin_dir / tool
        p.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> \"$STUB_LOG\"\necho stub\n")
        p.chmod(0o755)
    return bin_dir


# -- item 1: shell injection through the generated xe script -------------------------------------
def test_issue11_item1_xe_script_and_restore_file_from_evil_mgt_uuid(tmp_path, capsys):
    img = tmp_path / "sr.img"
    _sr(img, mgt_uuid=EVIL_UUID)
    xe, vg = tmp_path / "x.sh", tmp_path / "r.vg"
    assert main(["reconstruct", str(img), "--xe", str(xe), "--vgcfg", str(vg)]) == 0
    capsys.readouterr()
    script = xe.read_text()
    # every line the script has is one we wrote: the evidence added none
    for line in script.splitlines():
        assert not line.startswith("echo PWNED"), script
    work = tmp_path / "host"
    work.mkdir()
    env = dict(os.environ, PATH=f"{_stub_host(tmp_path)}:/usr/bin:/bin",
               STUB_LOG=str(tmp_path / "log"))
    subprocess.run(["sh", str(xe)], cwd=work, env=env, capture_output=True, timeout=30)
    assert not (work / "pwned-marker").exists(), script
    # the restore file's VG section: a valid LVM name (the evil one is not used), and it parses
    from core.escape import lvm_name_ok
    from core.lvm.model import VGMetadata
    text = vg.read_text()
    assert "PWNED" not in text.split("description")[0]
    meta = VGMetadata.from_text(text)
    assert lvm_name_ok(meta.name) and "\n" not in meta.name and "PWNED" not in meta.name


def _key(uid: bytes) -> str:
    h = uid.hex()
    return f"vhd:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@pytest.fixture(scope="module")
def sr_with_map(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("i11")
    img = tmp / "sr.img"
    a, b = _sr(img)
    mp = tmp / "map.json"
    assert main(["reconstruct", str(img), "--json", "-o", str(mp)]) == 0
    return img, mp, a


def _digest(path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- item 3: outputs by identity: a read-only loop device's backing file -------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a loop device (losetup)")
def test_issue11_item3_export_overwrite_refuses_loop_backing_file(sr_with_map, tmp_path, capsys):
    import shutil
    if not shutil.which("losetup"):
        pytest.skip("losetup not installed")
    img, mp, a = sr_with_map
    victim = tmp_path / "victim.img"
    shutil.copyfile(img, victim)
    before = _digest(victim)
    ino = os.stat(victim).st_ino
    dev = subprocess.run(["losetup", "-r", "-f", "--show", str(victim)], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        link = tmp_path / "hardlink.img"
        os.link(victim, link)
        for out in (victim, link):
            for fmt in ("raw", "vhd"):
                rc = main(["export", dev, "--map", str(mp), "--vdi", _key(a.unique_id),
                           "--format", fmt, "-o", str(out), "--overwrite"])
                err = capsys.readouterr().err
                assert rc == 3, err
                assert "evidence" in err and "backing file" in err, err
        rc = main(["reconstruct", dev, "-o", str(victim), "--overwrite"])
        assert rc == 3, capsys.readouterr().err
        rc = main(["export", dev, "--map", str(mp), "--vdi", _key(a.unique_id),
                   "--format", "raw", "-o", dev, "--overwrite"])
        assert rc == 3
        capsys.readouterr()
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
    assert _digest(victim) == before and os.stat(victim).st_ino == ino
    assert not os.path.exists(str(victim) + ".part")


def test_issue11_item3_output_identity_unit(tmp_path):
    """The identity check without root: hard link, symlink, /proc, /sys, /dev, and a block
    device's partition -> disk -> loop backing file chain (walked through sysfs)."""
    from core.errors import UnsafeError
    from core.output import check_output_path
    ev = tmp_path / "ev.img"
    ev.write_bytes(b"x" * 4096)
    os.link(ev, tmp_path / "hard")
    os.symlink(ev, tmp_path / "sym")
    for out in (tmp_path / "hard", tmp_path / "sym"):
        with pytest.raises(UnsafeError, match="evidence"):
            check_output_path(str(out), [str(ev)], overwrite=True)
    for out in ("/proc/self/fd/1", "/sys/kernel/x", "/dev/null", "/dev/shm/x"):
        with pytest.raises(UnsafeError, match="under /(proc|sys|dev)"):
            check_output_path(out, [str(ev)], overwrite=True)


# -- item 7: EFBIG on a checksum-valid page id 0x7FFFFFFF; AtomicOutput cleans its .part -------
def _mdf_image_with_far_page(path):
    import struct
    from core.demo_payloads import build_data_file
    from core.structs.mssql import PAGE_SIZE, page_checksum
    df = build_data_file(seed=3)
    data = bytearray(df.data)
    far = bytearray(data[20 * PAGE_SIZE:21 * PAGE_SIZE])
    struct.pack_into("<I", far, 32, 0x7FFFFFFF)          # m_pageId
    struct.pack_into("<I", far, 60, page_checksum(bytes(far)))
    with open(path, "wb") as f:
        f.write(bytes(1 << 20) + bytes(data) + bytes(far) + bytes(1 << 20))
    return df


def _run_limited(args, cwd, fsize=None, timeout=120):
    """srsalvage in a subprocess with RLIMIT_AS 1 GiB (and RLIMIT_FSIZE when given)."""
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            + (f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n" if fsize else "")
            + "from app.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    env.pop("SRSALVAGE_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_issue11_item7_mdf_page_id_0x7fffffff_carves_the_rest(tmp_path):
    img = tmp_path / "pages.img"
    df = _mdf_image_with_far_page(img)
    out = tmp_path / "out"
    p = _run_limited(["carve-mdf", str(img), "-o", str(out), "--json"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "internal error" not in p.stderr
    doc = json.loads(p.stdout)
    f1 = [f for f in doc["files"] if f["file_id"] == 1][0]
    assert 0x7FFFFFFF in f1["ignored_unverified_pages"]
    assert os.path.getsize(f1["path"]) <= len(df.data)
    assert not [n for n in os.listdir(out) if n.endswith(".part")]


def test_issue11_item7_atomic_output_cleans_part_when_close_fails(tmp_path):
    import resource
    from core.errors import SrsalvageError
    from core.output import AtomicOutput
    out = tmp_path / "big.bin"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        with pytest.raises(SrsalvageError, match="cannot write"):
            with AtomicOutput(str(out)) as o:
                o.file.seek(4 << 20)
                o.file.write(b"x" * 100)        # buffered: fails in flush/close, EFBIG
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not os.path.exists(str(out) + ".part") and not out.exists()


# -- a small demo SR shared by items 4, 5, 6 ----------------------------------------------------
EVIL_LABEL = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mred\x9b2J"


@pytest.fixture(scope="module")
def demo_sr(tmp_path_factory):
    from core.demo import MIB, build_demo
    tmp = tmp_path_factory.mktemp("demo11")
    path = tmp / "demo.img"
    manifest = build_demo(str(path), damage="none", mda_size=64 * 1024, attach_cycles=1,
                          disk_bytes=256 * MIB)
    return path, manifest


def _copy(src, dst):
    import shutil
    shutil.copyfile(src, dst)
    return dst


# -- item 4: terminal escape sequences from the evidence never reach the terminal ----------------
def test_issue11_item4_mgt_label_escapes_not_printed(demo_sr, tmp_path, capsys):
    from core.xen import SECTOR, _element, _sector
    path = _copy(demo_sr[0], tmp_path / "evil.img")
    data = path.read_bytes()
    at = data.find(b"<vdi><name_label>web01 system disk</name_label>")
    assert at > 0
    sector = _sector(b"<vdi>" + _element("name_label", EVIL_LABEL) + _element("name_description", ""))
    with open(path, "r+b") as f:
        f.seek(at - at % SECTOR)
        f.write(sector)
    for argv in (["lvm", str(path)], ["reconstruct", str(path)], ["scan", str(path)]):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        for text in (out, err):
            assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, argv
    assert main(["lvm", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;PWNED-TITLE\\x07" in out          # shown, as an escape
    # the workstation's tree labels
    from types import SimpleNamespace
    from widgets.vg_tree import lv_label
    lv = SimpleNamespace(name="VHD-x", status="live", claimed_by={}, le_count=1, pes=lambda: [1])
    plain = lv_label(lv, 4 << 20, EVIL_LABEL).plain
    assert "\x1b" not in plain and "\x07" not in plain and "PWNED-TITLE" in plain


def _edit_current_metadata(path, edit):
    """Rewrite the metadata text the mda header's slot points to with `edit(text)`, the
    raw_locn size/checksum and the mda header checksum fixed (what the red team did)."""
    import struct
    from core.lvm.crc import lvm_crc
    data = open(path, "rb").read(64 << 20)
    label = data.find(b"LABELONE")
    mda = label - 512 + 4096
    hdr = bytearray(data[mda:mda + 512])
    off, size = struct.unpack_from("<QQ", hdr, 40)
    text = data[mda + off:mda + off + size].rstrip(b"\0").decode()
    raw = edit(text).encode() + b"\0"
    struct.pack_into("<QQI", hdr, 40, off, len(raw), lvm_crc(raw))
    hdr[0:4] = lvm_crc(bytes(hdr[4:512])).to_bytes(4, "little")
    with open(path, "r+b") as f:
        f.seek(mda + off)
        f.write(raw)
        f.seek(mda)
        f.write(bytes(hdr))
    return text


# -- item 5: one number in the metadata drives neither memory nor time nor output size ----------
def test_issue11_item5_huge_extent_count_bounded(demo_sr, tmp_path):
    import re
    path = _copy(demo_sr[0], tmp_path / "huge.img")
    names = []

    def edit(text):
        m = re.search(r"(VHD-[0-9a-f-]+) \{.*?extent_count = ([0-9]+)", text, re.S)
        names.append(m.group(1))
        return text[:m.start(2)] + "16777215" + text[m.end(2):]

    text = _edit_current_metadata(path, edit)
    other = [n for n in re.findall(r"(VHD-[0-9a-f-]+) \{", text) if n != names[0]][0]
    for argv in (["reconstruct", str(path), "--json"], ["lvm", str(path), "--json"],
                 ["check", str(path), "--vdi", other, "--json"]):
        p = _run_limited(argv, tmp_path, timeout=90)       # RLIMIT_AS 1 GiB
        assert p.returncode == 0, (argv, p.stderr[-2000:])
        assert "internal error" not in p.stderr
    doc = json.loads(_run_limited(["lvm", str(path), "--json"], tmp_path).stdout)
    past = [f for f in doc.get("findings", []) if f["kind"] == "lv-segment-past-pv"]
    assert past and names[0] in past[0]["message"]


def test_issue11_item5_backup_with_1tib_raw_lv_refused_or_named(demo_sr, tmp_path):
    from core.lvm.model import LogicalVolume, Segment
    from core.lvm.writer import format_vg_metadata
    from core.source import Evidence
    from core.lvm.analyse import analyse_disk
    path = demo_sr[0]
    with Evidence(str(path)) as ev:
        rep = analyse_disk(ev)
    vg = rep.volume_groups[0]
    meta = vg.generations[0].metadata
    name = "LV-11111111-2222-3333-4444-555555555555"
    meta.lvs[name] = LogicalVolume(name=name, id="abcdef-ghij-klmn-opqr-stuv-wxyz-012345",
                                   creation_time=1, creation_host="x",
                                   segments=[Segment(0, 262144, "striped", 1, None,
                                                     [(meta.pvs[0].name, 0)])])
    meta.seqno += 1
    backup = tmp_path / "one-tib.vg"
    backup.write_text(format_vg_metadata(meta, "backup"))
    out = tmp_path / "lv.raw"
    p = _run_limited(["export", str(path), "--backup", str(backup), "--vdi", name,
                      "--format", "raw", "-o", str(out)], tmp_path, timeout=60)
    assert p.returncode == 3, p.stderr
    assert "past the end of the disk" in p.stderr and not out.exists()
    p = _run_limited(["export", str(path), "--backup", str(backup), "--vdi", name,
                      "--format", "raw", "-o", str(out), "--force"], tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "past the end of the disk" in p.stderr
    assert os.path.getsize(out) <= os.path.getsize(path)


# -- item 6: unreadable sectors flow into lvm text, check and reconstruct -----------------------
def _failing_evidence(monkeypatch, bad: list[tuple[int, int]]):
    """core.source.Evidence whose reads of `bad` byte ranges fail with EIO (as a dying disk)."""
    import errno
    import core.source as source

    class Failing(source.Evidence):
        def _pread_raw(self, offset, length):
            for a, b in bad:
                if offset < b and a < offset + length:
                    raise OSError(errno.EIO, "Input/output error")
            return super()._pread_raw(offset, length)

    monkeypatch.setattr(source, "Evidence", Failing)
    import core.evidence     # the commands open plain images through core.evidence.open_image
    monkeypatch.setattr(core.evidence, "Evidence", Failing)


def _vhd_bat_offset(path, index=0):
    import struct
    from core.scan import scan
    from core.source import Evidence
    with Evidence(str(path)) as ev:
        heads = [f.offset for f in scan(ev, kinds=["vhd-header"]).findings]
        hdr = ev.read(heads[index], 1024)
    return heads[index] - 512 + struct.unpack_from(">Q", hdr, 16)[0], heads[index]


@pytest.fixture(scope="module")
def wiped_sr(tmp_path_factory):
    from core.demo import MIB, build_demo
    path = tmp_path_factory.mktemp("wiped11") / "wiped.img"
    manifest = build_demo(str(path), damage="metadata", mda_size=64 * 1024, attach_cycles=1,
                          disk_bytes=256 * MIB)
    return path, manifest


def test_issue11_item6_unreadable_in_lvm_text_and_check(demo_sr, monkeypatch, capsys):
    path = demo_sr[0]
    bat, head = _vhd_bat_offset(path)
    _failing_evidence(monkeypatch, [(bat, bat + 512)])
    assert main(["lvm", str(path)]) == 0
    out = capsys.readouterr().out
    assert "UNREADABLE" in out and f"{bat}-{bat + 511}" in out
    from core.source import Evidence
    import core.source
    # which VDI holds that VHD: the map document of the intact image says
    monkeypatch.undo()
    assert main(["reconstruct", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _failing_evidence(monkeypatch, [(bat, bat + 512)])
    E_, D_ = doc["volume_groups"][0]["extent_bytes"], doc["volume_groups"][0]["data_offset"]
    pe = (head - D_) // E_
    key = next(v["key"] for v in doc["vdis"] if any(e["pe"] == pe for e in v["extents"]))
    assert main(["check", str(path), "--vdi", key, "--json"]) == 1    # errors found: exit 1
    chk = json.loads(capsys.readouterr().out)
    assert chk["unreadable"] == [[bat, bat + 512]]
    kinds = [f["kind"] for f in chk["findings"]]
    assert "vhd-unreadable-sectors" in kinds
    f = next(f for f in chk["findings"] if f["kind"] == "vhd-unreadable-sectors")
    assert "BAT" in f["message"]


def test_issue11_item6_unreadable_bat_named_by_reconstruct(wiped_sr, monkeypatch, capsys):
    path = wiped_sr[0]
    bat, head = _vhd_bat_offset(path)
    # one unreadable BAT sector + 64 KiB of data (as the red team's disk)
    _failing_evidence(monkeypatch, [(bat, bat + 512), (head + (1 << 20), head + (1 << 20) + 65536)])
    assert main(["reconstruct", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unreadable"] and doc["unreadable"][0][0] <= bat
    kinds = {f["kind"] for f in doc["findings"]}
    assert "unreadable-sectors" in kinds
    assert kinds & {"vdi-unreadable-extents", "unreadable-unplaced-extents"}
    for v in doc["vdis"]:          # nothing over an unreadable sector is called certain
        for e in v["extents"]:
            lo = doc["volume_groups"][0]["data_offset"] + e["pe"] * doc["volume_groups"][0]["extent_bytes"]
            if any(a < lo + doc["volume_groups"][0]["extent_bytes"] and lo < b for a, b in doc["unreadable"]):
                assert e["confidence"] <= 0.5 and "unreadable" in e.get("note", "")
    assert main(["reconstruct", str(path)]) == 0
    assert "unreadable" in capsys.readouterr().out


# -- item 8: the small ones -----------------------------------------------------------------------
def test_issue11_item8_short_reads_are_continued_not_zeros(tmp_path):
    import random
    from core.source import Evidence
    data = random.Random(8).randbytes(1 << 20)
    path = tmp_path / "ev.img"
    path.write_bytes(data)

    class Stingy(Evidence):              # a FUSE file that returns 100 bytes per read
        def _pread_raw(self, offset, length):
            return super()._pread_raw(offset, min(length, 100))

    with Stingy(str(path)) as ev:
        assert ev.read(12345, 600000) == data[12345:12345 + 600000]
        got = b"".join(bytes(v) for _, v in ev.windows(window=256 << 10))
        assert got == data
        assert ev.unreadable == []


def test_issue11_item8_hanging_read_times_out_into_unreadable(tmp_path):
    import threading
    import time
    from core.source import Evidence
    path = tmp_path / "ev.img"
    path.write_bytes(bytes(range(256)) * 4096)
    release = threading.Event()

    class Hanging(Evidence):             # sectors 8-15 never answer (until the test ends)
        def _pread_raw(self, offset, length):
            if offset < 8192 and 4096 < offset + length:
                release.wait(600)
            return super()._pread_raw(offset, length)

    ev = Hanging(str(path))
    ev.guarded, ev.read_timeout = True, 1.0
    box = {}
    t = threading.Thread(target=lambda: box.update(data=ev.read(0, 16384)), daemon=True)
    start = time.monotonic()
    t.start()
    t.join(20)
    try:
        assert not t.is_alive(), "the read hung"
        assert time.monotonic() - start < 15
        # the whole request that hung counts as unreadable (not salvaged sector by sector:
        # every sector would hang again), and reads as zeros
        assert box["data"] == bytes(16384)
        assert ev.unreadable == [(0, 16384)] and ev.timed_out == [(0, 16384)]
        assert ev.read(16384, 4096) == (bytes(range(256)) * 16)     # elsewhere: read
        # a cancel point: a hanging read gives up when the job is cancelled
        ev2 = Hanging(str(path))
        ev2.guarded, ev2.read_timeout = True, 600.0
        ev2.cancel = threading.Event()
        threading.Timer(0.5, ev2.cancel.set).start()
        from core.errors import Cancelled
        with pytest.raises(Cancelled):
            ev2._pread_full(4096, 512)
    finally:
        release.set()


_HANG_RUNNER = r"""
import sys, threading, core.source as source
class Hanging(source.Evidence):
    def _pread_raw(self, offset, length):
        if offset > (40 << 20):
            threading.Event().wait(600)
        return super()._pread_raw(offset, length)
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.guarded, self.read_timeout = True, 600.0
source.Evidence = Hanging
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_issue11_item8_sigterm_during_hanging_read(demo_sr, tmp_path):
    import signal
    import time
    path = demo_sr[0]
    out = tmp_path / "out.raw"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", _HANG_RUNNER, "carve-rar", str(path),
                             "-o", str(tmp_path / "rar")], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.part"))
    assert not out.exists()


def test_issue11_item8_bad_outputs_are_one_line_errors(sr_with_map, tmp_path, capsys):
    img, mp, a = sr_with_map
    base = ["export", str(img), "--map", str(mp), "--vdi", _key(a.unique_id), "--format", "raw"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(base + ["-o", ""]) == 1
        err = capsys.readouterr().err
        assert "empty" in err and "internal error" not in err
        assert not list(tmp_path.glob("*.part")) and not (tmp_path / ".part").exists()
        for bad in ("/proc/self/environ", "/proc/srsalvage-test", "/sys/kernel/x", "/dev/full"):
            assert main(base + ["-o", bad, "--overwrite"]) == 3
            err = capsys.readouterr().err
            assert "refused" in err and "internal error" not in err and len(err.splitlines()) == 1
        assert main(["reconstruct", str(img), "-o", ""]) == 1
        assert main(["carve-rar", str(img), "-o", ""]) == 1
        assert "internal error" not in capsys.readouterr().err
    finally:
        os.chdir(cwd)
    # a full output disk: a 1 MiB tmpfs as root, else a 1 MiB file size limit
    full = tmp_path / "full"
    full.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)],
                                 capture_output=True).returncode == 0
    try:
        p = _run_limited(base + ["-o", str(full / "x.raw")], tmp_path,
                         fsize=None if mounted else 1 << 20)
        assert p.returncode == 1, p.stderr
        assert "internal error" not in p.stderr and "Traceback" not in p.stderr
        # the error is one line (the map's warnings about unsure extents come before it)
        errors = [ln for ln in p.stderr.strip().splitlines()
                  if not ln.startswith("srsalvage: warning:")]
        assert len(errors) == 1, p.stderr
        assert not list(full.iterdir())
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], check=False)


def test_issue11_item8_fix_with_unknown_key_or_le_fails(sr_with_map, capsys):
    img, mp, a = sr_with_map
    key = _key(a.unique_id)
    # a --fix that names nothing real is bad usage: one line, exit 2
    assert main(["reconstruct", str(img), "--fix", "VHD-no-such-vdi:0=1"]) == 2
    assert "no VDI with that key" in capsys.readouterr().err
    assert main(["reconstruct", str(img), "--fix", f"{key}:4000=1"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["reconstruct", str(img), "--fix", f"{key}:0=99999"]) == 2
    assert "no such PE" in capsys.readouterr().err
    assert main(["reconstruct", str(img), "--fix", f"{key}:0=0"]) == 0
    capsys.readouterr()


def test_issue11_item8_segments_past_end_of_disk_flagged(demo_sr, tmp_path, capsys):
    path = _copy(demo_sr[0], tmp_path / "short.img")
    os.truncate(path, 96 << 20)          # the image stops part-way through the PV
    assert main(["lvm", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lv-segment-past-disk" in out and "past the end of this image" in out


def test_issue11_item4_audit_log_text_escaped_and_absurd_time_shown():
    from app.screens.audit import entry_text
    text = entry_text({"time": 1e400, "action": "export", "vdi": EVIL_LABEL, "detail": "x\ny"})
    assert "\x1b" not in text and "\x07" not in text and "PWNED-TITLE" in text
    assert "inf" in text and "x\\x0ay" in text
