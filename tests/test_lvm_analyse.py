"""analyse_sr (the LVM analysis, and the SR meaning on top) on images built here with our own
writers (label, mda header, ring, text, MGT): stray copies, backup files, PVs without label or
mda header, MGT names, bad input, cancel."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import Cancelled
from core.sr import analyse_sr
from core.lvm.crc import lvm_crc
from core.lvm.label import build_label_sector
from core.lvm.mda import RawLocn, build_mda_header, ring_write_offset
from core.lvm.model import LogicalVolume, PVMetadata, Segment, VGMetadata
from core.lvm.writer import format_vg_metadata
from core.source import Evidence
from core.xen import build_mgt

MIB = 1 << 20
EXTENT = 4 * MIB
SR = "6b1e2c86-1a3d-4b6e-9f00-0a1b2c3d4e5f"
VG = f"VG_XenStorage-{SR}"
U = [f"{i:08x}-1111-4222-8333-444455556666" for i in range(8)]


def lv(name, *runs, tags=()):
    segs, le = [], 0
    for pe, n in runs:
        segs.append(Segment(le, n, stripes=[("pv0", pe)]))
        le += n
    return LogicalVolume(name, f"lvid{abs(hash(name)) % 10**6:06d}-aaaa-aaaa-aaaa-aaaa-aaaaaa"[:38],
                         tags=list(tags), creation_time=1700000000, creation_host="xs",
                         segments=segs)


def history(pe_count=40):
    """seqno 1..6: MGT, three VHDs, one removed, a new one takes its extents."""
    steps = [
        {},
        {"MGT": lv("MGT", (0, 1))},
        {"MGT": lv("MGT", (0, 1)), f"VHD-{U[0]}": lv(f"VHD-{U[0]}", (1, 3))},
        {"MGT": lv("MGT", (0, 1)), f"VHD-{U[0]}": lv(f"VHD-{U[0]}", (1, 3)),
         f"VHD-{U[1]}": lv(f"VHD-{U[1]}", (4, 2))},
        {"MGT": lv("MGT", (0, 1)), f"VHD-{U[0]}": lv(f"VHD-{U[0]}", (1, 3), (6, 2)),
         f"VHD-{U[1]}": lv(f"VHD-{U[1]}", (4, 2))},
        {"MGT": lv("MGT", (0, 1)), f"VHD-{U[1]}": lv(f"VHD-{U[1]}", (4, 2))},
        {"MGT": lv("MGT", (0, 1)), f"VHD-{U[1]}": lv(f"VHD-{U[1]}", (4, 2)),
         f"LV-{U[2]}": lv(f"LV-{U[2]}", (1, 3), (8, 1))},
    ]
    out = []
    for seq, lvs in enumerate(steps, 1):
        out.append(VGMetadata(VG, "vgid00-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa", seq,
                              pvs=[PVMetadata("pv0", "pvid00-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa",
                                              "/dev/sdb", dev_size=0, pe_start=0,
                                              pe_count=pe_count)],
                              lvs=lvs))
    return out


def build_image(path, pv_offset=0, image_bytes=64 * MIB, mda_size=11 * MIB - 4096,
                pe_start=11 * MIB, gens=None, label=True, mda_header=True, contents=True,
                extra=()):
    """Write a PV (label, mda header, ring of `gens`, MGT + VHD heads) into a sparse file."""
    gens = gens or history()
    dev_size = image_bytes - pv_offset
    for g in gens:
        g.pvs[0].dev_size = dev_size // 512
        g.pvs[0].pe_start = pe_start // 512
        g.pvs[0].pe_count = (dev_size - pe_start) // EXTENT
    texts = [format_vg_metadata(g, "raw", description=f"Write from step {g.seqno}.",
                                creation_host="xs", creation_time=1700000000 + g.seqno).encode()
             for g in gens]
    area = bytearray(mda_size - 512)
    prev = (0, 0)
    placed = []
    for t in texts:
        data = t + b"\0"
        off = ring_write_offset(prev[0], prev[1], mda_size)
        for i in range(len(data)):
            area[(off - 512 + i) % len(area)] = data[i]
        placed.append(pv_offset + 4096 + off)
        prev = (off, len(data))
    with open(path, "wb") as fh:
        fh.truncate(image_bytes)
        if label:
            fh.seek(pv_offset + 512)
            fh.write(build_label_sector("pvid00aaaaaaaaaaaaaaaaaaaaaaaaaa", dev_size, pe_start,
                                        [(4096, mda_size)]))
        fh.seek(pv_offset + 4096)
        hdr = build_mda_header(4096, mda_size, [RawLocn(prev[0], prev[1],
                                                        lvm_crc(texts[-1] + b"\0"), 0)])
        fh.write((hdr if mda_header else bytes(512)) + bytes(area))
        if contents:
            data0 = pv_offset + pe_start
            fh.seek(data0)   # MGT at PE 0
            fh.write(build_mgt(SR, "Local storage", "", [
                {"uuid": U[0], "name_label": "old disk <deleted>", "deleted": 1},
                {"uuid": U[1], "name_label": "web01 disk"},
                {"uuid": U[2], "name_label": "raw & fast", "vdi_type": "aio"}]))
            for pe in (1, 4):   # VHD footer copies at the LV starts
                fh.seek(data0 + pe * EXTENT)
                fh.write(b"conectix" + bytes(504))
        for off, blob in extra:
            fh.seek(off)
            fh.write(blob)
    return texts, placed


def lvm_json(path, *args):
    from app.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["lvm", str(path), "--json", *args])
    return rc, (json.loads(out.getvalue()) if rc == 0 else None), err.getvalue()


def analyse(path, **kw):
    with Evidence(str(path)) as ev:
        return analyse_sr(ev, **kw)


def test_synthetic_image_generations_deleted_claimed_and_mgt_labels(tmp_path):
    img = tmp_path / "sr.img"
    texts, placed = build_image(img)
    before = (hashlib.sha256(img.read_bytes()).hexdigest(), os.stat(img).st_mtime_ns)
    rc, doc, err = lvm_json(img)
    assert rc == 0 and err == ""
    assert (hashlib.sha256(img.read_bytes()).hexdigest(), os.stat(img).st_mtime_ns) == before
    (vg,) = doc["volume_groups"]
    assert vg["sr_uuid"] == SR and vg["data_offset"] == 11 * MIB
    gens = vg["generations"]
    assert [g["seqno"] for g in gens] == [7, 6, 5, 4, 3, 2, 1]
    assert [g["offset"] for g in gens] == placed[::-1]
    assert gens[0]["current"] and gens[0]["crc_ok"]
    assert gens[0]["description"] == "Write from step 7."
    assert gens[0]["creation_time"] == 1700000007
    cur = {lv["name"]: lv for lv in gens[0]["logical_volumes"]}
    assert cur[f"LV-{U[2]}"]["map"] == [[0, 1, 3], [3, 8, 1]]
    assert cur[f"LV-{U[2]}"]["kind"] == "raw" and cur["MGT"]["kind"] == "mgt"
    assert cur[f"VHD-{U[1]}"]["label"] == "web01 disk"
    assert vg["mgt"]["name_label"] == "Local storage" and vg["mgt"]["sr_uuid"] == SR
    assert [(v["uuid"], v["deleted"]) for v in vg["mgt"]["vdis"]] == [(U[0], True), (U[1], False), (U[2], False)]
    assert cur[f"LV-{U[2]}"]["label"] == "raw & fast"
    old = {lv["name"]: lv for lv in gens[2]["logical_volumes"]}     # seqno 5
    gone = old[f"VHD-{U[0]}"]
    assert gone["status"] == "deleted" and gone["label"] == "old disk <deleted>"
    assert gone["map"] == [[0, 1, 3], [3, 6, 2]]
    assert gone["claimed_by"] == {"1": f"LV-{U[2]}", "2": f"LV-{U[2]}", "3": f"LV-{U[2]}"}
    assert old[f"VHD-{U[1]}"]["status"] == "live" and old[f"VHD-{U[1]}"]["claimed_by"] == {}


def test_text_report_is_readable(tmp_path, capsys):
    from app.cli import main
    img = tmp_path / "sr.img"
    build_image(img)
    assert main(["lvm", str(img)]) == 0
    out = capsys.readouterr().out
    assert f"VG {VG}" in out and "seqno     7 CURRENT" in out
    assert f"deleted since: VHD-{U[0]} \"old disk <deleted>\"" in out


def test_stray_copies_outside_metadata_areas(tmp_path):
    img = tmp_path / "stray.img"
    other = history()[3]
    other.name, other.id = "VG_old", "oldvg0-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
    other.pvs[0].id = "oldpv0-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
    raw_text = format_vg_metadata(other, "raw").encode() + b"\0"
    other2 = history()[4]
    other2.name, other2.id = "VG_backup", "bakvg0-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
    backup_text = format_vg_metadata(other2, "backup").encode() + b"\0"
    build_image(img, extra=[(40 * MIB + 7 * 512, raw_text), (50 * MIB, backup_text)])
    rep = analyse(img)
    by_name = {vg.name: vg for vg in rep.volume_groups}
    assert set(by_name) == {VG, "VG_old", "VG_backup"}
    g = by_name["VG_old"].generations
    assert [(x.seqno, x.source, x.offset) for x in g] == [(4, "scan", 40 * MIB + 7 * 512)]
    assert g[0].crc_ok and not g[0].current and by_name["VG_old"].current is None
    g = by_name["VG_backup"].generations
    assert [(x.seqno, x.source, x.offset) for x in g] == [(5, "scan", 50 * MIB)]
    # copies inside the known mda are not repeated as stray
    assert all(c.source == "mda" for x in by_name[VG].generations for c in x.copies)


def test_no_stray_search_option(tmp_path):
    img = tmp_path / "stray.img"
    other = history()[3]
    other.name, other.id = "VG_old", "oldvg0-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
    build_image(img, extra=[(40 * MIB, format_vg_metadata(other, "raw").encode() + b"\0")])
    rc, doc, _ = lvm_json(img, "--no-stray")
    assert [v["name"] for v in doc["volume_groups"]] == [VG]


def test_backup_files_merge_with_same_generation_and_split_when_different(tmp_path):
    img = tmp_path / "sr.img"
    gens = history()
    build_image(img, gens=gens)
    same = tmp_path / "same.vg"
    same.write_text(format_vg_metadata(gens[-1], "backup", description="vgcfgbackup"))
    changed = gens[-1]
    changed.lvs.pop("MGT")
    other = tmp_path / "other.vg"
    other.write_text(format_vg_metadata(changed, "backup"))
    rep = analyse(img, backups=[str(same), str(other)])
    (vg,) = rep.volume_groups
    sevens = [g for g in vg.generations if g.seqno == 7]
    assert len(sevens) == 2
    first = next(g for g in sevens if g.current)
    assert [c.source for c in first.copies] == ["mda", "backup"]
    assert first.copies[1].path == str(same)
    second = next(g for g in sevens if not g.current)
    assert [c.source for c in second.copies] == ["backup"] and "MGT" not in second.lvs
    assert first.note and "seqno 7" in second.note


def test_backup_file_errors_are_one_line(tmp_path):
    img = tmp_path / "sr.img"
    build_image(img)
    rc, doc, err = lvm_json(img, "--backup", str(tmp_path / "missing.vg"))
    assert rc == 1 and err.count("\n") == 1 and "missing.vg" in err
    bad = tmp_path / "bad.vg"
    bad.write_text("this { is not = [ metadata\n")
    rc, doc, err = lvm_json(img, "--backup", str(bad))
    assert rc == 0
    assert any(f["kind"] == "lvm-backup-unparsable" for f in doc["findings"])


def test_label_wiped_pv_found_by_mda_header(tmp_path):
    img = tmp_path / "nolabel.img"
    build_image(img, pv_offset=MIB, image_bytes=80 * MIB, label=False)
    rep = analyse(img)
    (vg,) = rep.volume_groups
    assert vg.pvs[0].offset == MIB and not vg.pvs[0].label_found
    assert "start field (4096)" in vg.pvs[0].inferred_by[0]
    assert vg.current.seqno == 7 and vg.data_offset == 12 * MIB
    assert [(p.scheme, p.offset, p.bytes) for p in rep.partitions] == \
        [("found-by-scan", MIB, 79 * MIB)]


def test_label_and_mda_header_wiped_pv_start_inferred_and_checked(tmp_path):
    img = tmp_path / "nothing.img"
    build_image(img, pv_offset=MIB, image_bytes=80 * MIB, label=False, mda_header=False)
    rep = analyse(img)
    (vg,) = rep.volume_groups
    pv = vg.pvs[0]
    assert pv.offset == MIB and not pv.label_found
    how = " | ".join(pv.inferred_by)
    assert "ring start" in how and "1 MiB partition grid" in how
    assert "2 of 2 VHD/MGT LVs" in how or "LVs start with their signature" in how
    assert "FAILED" not in how
    assert vg.current is None and vg.generations[0].seqno == 7
    assert vg.data_offset == 12 * MIB
    assert [(p.scheme, p.offset) for p in rep.partitions] == [("found-by-scan", MIB)]
    finding = next(f for f in rep.findings if f.kind == "lvm-pv-start-inferred")
    assert finding.offset == MIB and finding.severity == "warning"


def test_inference_says_when_checks_fail(tmp_path):
    img = tmp_path / "odd.img"
    # PV at an odd sector, LV contents absent: the grid and content checks cannot hold
    build_image(img, pv_offset=MIB + 4096, image_bytes=80 * MIB, label=False, mda_header=False,
                contents=False)
    rep = analyse(img)
    finding = next(f for f in rep.findings if f.kind == "lvm-pv-start-inferred")
    assert finding.offset == MIB + 4096 and finding.severity == "error"
    assert any("FAILED" in c for c in finding.details["checks"])


def test_cancel_stops_the_analysis(tmp_path):
    img = tmp_path / "sr.img"
    build_image(img)
    ev = Evidence(str(img))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        analyse_sr(ev, cancel=stop)
    ev.close()


def test_progress_is_reported(tmp_path):
    img = tmp_path / "sr.img"
    build_image(img)
    seen = []
    with Evidence(str(img)) as ev:
        analyse_sr(ev, progress=seen.append)
    assert seen and seen[-1].done == seen[-1].total


@pytest.mark.parametrize("cut", [0, 1, 511, 600, 4096 + 100, 5000, 11 * MIB + 3])
def test_truncated_images(tmp_path, cut):
    img = tmp_path / "sr.img"
    build_image(img)
    with open(img, "r+b") as fh:
        fh.truncate(cut)
    rc, doc, err = lvm_json(img)
    assert rc == 0 and "Traceback" not in err


def test_bad_paths_are_one_line_errors(tmp_path):
    for target, words in ((tmp_path / "missing.img", "no such file"),
                          (tmp_path, "is a directory")):
        rc, doc, err = lvm_json(target)
        assert rc == 1 and words in err and err.count("\n") == 1
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    rc, doc, err = lvm_json(empty)
    assert rc == 0 and doc["volume_groups"] == [] and doc["image"]["bytes"] == 0


def test_cli_subprocess_exit_codes(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app.cli", "lvm", str(tmp_path / "nope")],
                          capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@given(st.lists(st.tuples(st.integers(0, 63), st.binary(min_size=1, max_size=64)), max_size=12))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_garbage_in_headers_never_crashes(tmp_path_factory, patches):
    """Overwrite bytes of the label sector, mda header and ring start with garbage."""
    path = tmp_path_factory.mktemp("g") / "g.img"
    if not hasattr(test_garbage_in_headers_never_crashes, "base"):
        p0 = tmp_path_factory.mktemp("b") / "base.img"
        build_image(p0, image_bytes=16 * MIB, mda_size=64 * 1024 - 4096, pe_start=64 * 1024)
        test_garbage_in_headers_never_crashes.base = p0.read_bytes()
    data = bytearray(test_garbage_in_headers_never_crashes.base)
    for where, blob in patches:
        off = [512, 512 + 32, 512 + 64, 4096, 4096 + 20, 4096 + 40, 4608, 5120][where % 8] + where
        data[off: off + len(blob)] = blob
    path.write_bytes(bytes(data))
    with Evidence(str(path)) as ev:
        rep = analyse_sr(ev)
    json.dumps(rep.to_json(str(path)))


def test_absurd_counts_in_headers_are_bounded(tmp_path):
    img = tmp_path / "absurd.img"
    build_image(img, image_bytes=16 * MIB, mda_size=64 * 1024 - 4096, pe_start=64 * 1024)
    with open(img, "r+b") as fh:
        # mda header: size 2^62, raw_locn size 2^63 (CRC made valid so it is believed)
        fh.seek(4096)
        fh.write(build_mda_header(4096, 1 << 62, [RawLocn(512, 1 << 63, 0, 0)]))
        # label: metadata area of 2^60 bytes at 2^61
        fh.seek(512)
        fh.write(build_label_sector("pvid00aaaaaaaaaaaaaaaaaaaaaaaaaa", 1 << 62, 1 << 61,
                                    [(1 << 61, 1 << 60)]))
    rep = analyse(img)
    json.dumps(rep.to_json(str(img)))
    assert rep.findings


def test_mda_header_wiped_label_intact_reads_ring_from_label(tmp_path):
    img = tmp_path / "nohdr.img"
    _, placed = build_image(img, mda_header=False)
    rep = analyse(img)
    (vg,) = rep.volume_groups
    assert vg.pvs[0].label_found and vg.current is None
    assert [g.offset for g in vg.generations] == placed[::-1]
    assert "lvm-mda-header-missing" in {f.kind for f in rep.findings}


def test_precommitted_slot_and_bad_committed_checksum(tmp_path):
    img = tmp_path / "pre.img"
    gens = history()
    mda_size = 11 * MIB - 4096
    texts, placed = build_image(img, gens=gens, mda_size=mda_size)
    newer = gens[-1]
    newer.seqno = 8
    newer.lvs.pop("MGT")
    text8 = format_vg_metadata(newer, "raw").encode() + b"\0"
    last_rel = placed[-1] - 4096
    rel8 = ring_write_offset(last_rel, len(texts[-1]) + 1, mda_size)
    committed = RawLocn(last_rel, len(texts[-1]) + 1, lvm_crc(texts[-1] + b"\0"), 0)
    pre = RawLocn(rel8, len(text8), lvm_crc(text8), 0)
    with open(img, "r+b") as fh:
        fh.seek(4096 + rel8)
        fh.write(text8)
        fh.seek(4096)
        fh.write(build_mda_header(4096, mda_size, [committed, pre]))
    rep = analyse(img)
    (vg,) = rep.volume_groups
    assert vg.current.seqno == 7                      # what LVM uses: the committed slot
    g8 = vg.generations[0]
    assert g8.seqno == 8 and g8.copies[0].slot == "precommitted" and g8.crc_ok
    assert "lvm-precommitted" in {f.kind for f in rep.findings}
    # deleted/claimed are judged against the current generation, not the uncommitted one
    assert all(lv.status == "live" for lv in vg.current.lvs.values())
    assert g8.lvs[f"LV-{U[2]}"].status == "live"
    # now break the committed copy's checksum: LVM would refuse it, so nothing is current
    with open(img, "r+b") as fh:
        fh.seek(placed[-1] + 40)
        fh.write(b"#")
    rep = analyse(img)
    (vg,) = rep.volume_groups
    assert vg.current is None
    assert "lvm-slot-crc" in {f.kind for f in rep.findings}


def test_inference_ignores_a_stray_old_copy_below_the_ring(tmp_path):
    """A leftover copy of the same VG far below the ring must not pull the PV start down."""
    img = tmp_path / "leftover.img"
    gens = history()
    build_image(img, gens=gens, pv_offset=32 * MIB, image_bytes=96 * MIB, label=False,
                mda_header=False)
    leftover = format_vg_metadata(gens[2], "raw", description="Write from step 3.",
                                  creation_host="xs", creation_time=1700000003).encode()
    with open(img, "r+b") as fh:
        fh.seek(3 * MIB)
        fh.write(leftover + b"\0")
    rep = analyse(img)
    (vg,) = rep.volume_groups
    assert vg.pvs[0].offset == 32 * MIB and vg.data_offset == 43 * MIB
    g3 = vg.generation(3)
    assert {c.source for c in g3.copies} == {"mda", "scan"}
    assert (3 * MIB) in {c.offset for c in g3.copies}


def test_guest_pv_inside_an_lv_is_not_a_partition(tmp_path):
    """A VM that uses LVM inside its virtual disk leaves a PV label in the SR's extents: its VG
    is reported (it is evidence) but it is not a partition of this disk."""
    img = tmp_path / "nested.img"
    build_image(img)
    guest = history()[:2]
    for g in guest:
        g.name, g.id = "vg_guest", "guest0-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
    inner = tmp_path / "inner.img"
    build_image(inner, image_bytes=4 * MIB, mda_size=64 * 1024 - 4096, pe_start=64 * 1024,
                gens=guest, contents=False)
    with open(img, "r+b") as fh:
        fh.seek(11 * MIB + 4 * EXTENT)          # inside VHD-U1's first extent
        fh.write(inner.read_bytes()[: 256 * 1024])
    rep = analyse(img)
    assert rep.partitions == []
    names = {vg.name for vg in rep.volume_groups}
    assert names == {VG, "vg_guest"}
    assert "lvm-nested-pv" in {f.kind for f in rep.findings}
