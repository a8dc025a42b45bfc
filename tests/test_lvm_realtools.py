"""`srsalvage lvm` against PVs written by the real lvm2 tools (loop devices, as root).

Truth comes from lvm2 itself: `lvs --segments` for the extent maps and
`pvck --dump metadata_all / metadata_search` for the generations in the metadata area.
Then the images are damaged (partition table wiped, label and mda header wiped) and the same
answers must come back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from contextlib import redirect_stdout

import pytest

import realtools
from realtools import (loop_device, lvm, lvs_segments, lvs_segments_by_pv, need_lvm,
                       pvck_generations)

MIB = 1 << 20
pytestmark = pytest.mark.realtools


def srsalvage_lvm_json(image: str, *extra: str) -> dict:
    from app.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["lvm", image, "--json", *extra])
    assert rc == 0
    return json.loads(buf.getvalue())


def merged(runs) -> list[tuple[int, int, int]]:
    out: list[list[int]] = []
    for le, pe, n in sorted(tuple(r[:3]) for r in runs):
        if out and out[-1][0] + out[-1][2] == le and out[-1][1] + out[-1][2] == pe:
            out[-1][2] += n
        else:
            out.append([le, pe, n])
    return [tuple(r) for r in out]


def build_sr(dev: str, metadatasize: str = "10M", dataalignment: str | None = None,
             extra_lvs: int = 0) -> tuple[str, dict[str, str]]:
    """A small XenServer-like SR with interleaved extents and a deleted VDI whose extents a
    later VDI took over.  Returns (vg name, {role: lv name})."""
    vg = f"VG_XenStorage-{uuid.uuid4()}"
    names = {"gone": f"VHD-{uuid.uuid4()}", "b": f"VHD-{uuid.uuid4()}",
             "raw": f"LV-{uuid.uuid4()}", "taker": f"VHD-{uuid.uuid4()}"}
    args = ["--metadatasize", metadatasize]
    if dataalignment:
        args += ["--dataalignment", dataalignment]
    d = [dev]
    lvm("pvcreate", *args, dev, devices=d)
    lvm("vgcreate", "-s", "4M", vg, dev, devices=d)
    lvm("lvcreate", "-L", "4M", "-n", "MGT", vg, devices=d)
    lvm("lvcreate", "-L", "8M", "-n", names["gone"], vg, devices=d)
    lvm("lvcreate", "-L", "8M", "-n", names["b"], vg, devices=d)
    lvm("lvextend", "-L", "+4M", f"{vg}/{names['gone']}", devices=d)
    lvm("lvcreate", "-L", "4M", "-n", names["raw"], vg, devices=d)
    lvm("lvextend", "-L", "+8M", f"{vg}/{names['b']}", devices=d)
    for i in range(extra_lvs):
        lvm("lvcreate", "-L", "4M", "-n", f"VHD-{uuid.uuid4()}", "--addtag", "x" * 64, vg,
            devices=d)
    lvm("lvremove", f"{vg}/{names['gone']}", devices=d)
    lvm("lvcreate", "-l", "100%FREE", "-n", names["taker"], vg, devices=d)
    return vg, names


def doc_vg(doc: dict, vg: str) -> dict:
    found = [v for v in doc["volume_groups"] if v["name"] == vg]
    assert len(found) == 1, [v["name"] for v in doc["volume_groups"]]
    return found[0]


def current_maps(v: dict) -> dict[str, list]:
    cur = [g for g in v["generations"] if g["current"]]
    gen = cur[0] if cur else v["generations"][0]
    return {lv["name"]: merged(lv["map"]) for lv in gen["logical_volumes"]}


def mda_copies(v: dict) -> set[tuple[int, int]]:
    return {(c["offset"], g["seqno"]) for g in v["generations"] for c in g["copies"]
            if c["source"] == "mda"}


def complete_mda_copies(v: dict) -> set[tuple[int, int]]:
    return {(c["offset"], g["seqno"]) for g in v["generations"] for c in g["copies"]
            if c["source"] == "mda" and not c.get("partial")}


def check_deleted_and_claimed(v: dict, names: dict[str, str]) -> None:
    gone = names["gone"]
    newest = v["generations"][0]
    assert gone not in {lv["name"] for lv in newest["logical_volumes"]}
    olds = [lv for g in v["generations"] for lv in g["logical_volumes"] if lv["name"] == gone]
    assert olds and all(lv["status"] == "deleted" for lv in olds)
    taker_pes = {pe + i for le, pe, n in current_maps(v)[names["taker"]] for i in range(n)}
    last = olds[0]   # newest generation that still had it
    gone_pes = {pe + i for le, pe, n in merged(last["map"]) for i in range(n)}
    expect = {str(pe): names["taker"] for pe in sorted(gone_pes & taker_pes)}
    assert expect, "the scenario must make the new LV take the deleted LV's extents"
    assert {k: v2 for k, v2 in last["claimed_by"].items() if v2 == names["taker"]} == expect
    for g in v["generations"]:
        for lv in g["logical_volumes"]:
            if lv["name"] != gone:
                assert lv["status"] == "live"


def file_state(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest(), os.stat(path).st_mtime_ns


@pytest.mark.slow
def test_whole_disk_pv_matches_lvs_and_pvck(tmp_path):
    need_lvm()
    img = str(tmp_path / "disk.img")
    with open(img, "wb") as fh:
        fh.truncate(64 * MIB)
    backup = str(tmp_path / "vgcfgbackup.vg")
    with loop_device(img) as dev:
        vg, names = build_sr(dev)
        truth = lvs_segments(vg, [dev])
        lvm("vgcfgbackup", "-f", backup, vg, devices=[dev])
    pvck = {(c["offset"], c["seqno"]) for c in pvck_generations(img) if c["vg"] == vg}
    before = file_state(img)
    doc = srsalvage_lvm_json(img, "--backup", backup)
    assert file_state(img) == before, "srsalvage lvm changed the evidence"
    v = doc_vg(doc, vg)
    assert v["sr_uuid"] == vg.split("-", 1)[1]
    assert v["extent_bytes"] == 4 * MIB
    assert v["pvs"][0]["offset"] == 0 and v["pvs"][0]["label_found"] is True
    assert v["pvs"][0]["pe_start"] == 11 * MIB          # XenServer's --metadatasize 10M
    assert v["data_offset"] == 11 * MIB
    assert current_maps(v) == {k: merged(r) for k, r in truth.items()}
    assert len(pvck) >= 9
    assert mda_copies(v) == pvck
    cur = [g for g in v["generations"] if g["current"]]
    assert len(cur) == 1 and cur[0]["seqno"] == max(s for _, s in pvck)
    assert all(g["crc_ok"] for g in v["generations"])
    # lvm2's own backup file of the current generation is one more place of that generation
    assert [c["source"] for c in cur[0]["copies"]] == ["mda", "backup"]
    assert cur[0]["copies"][1]["path"] == backup
    assert len(v["generations"]) == len(pvck)
    check_deleted_and_claimed(v, names)
    assert doc["partitions"] == []


@pytest.mark.slow
def test_gpt_partition_then_table_wiped(tmp_path):
    need_lvm()
    if not realtools.have("sgdisk"):
        pytest.skip("sgdisk not installed")
    img = str(tmp_path / "gpt.img")
    with open(img, "wb") as fh:
        fh.truncate(80 * MIB)
    realtools.run("sgdisk", "-n", "1:2048:0", "-t", "1:8E00", img)
    end_lba = int(realtools.run("sgdisk", "-i", "1", img).stdout.split("Last sector: ")[1].split()[0])
    part_bytes = (end_lba - 2048 + 1) * 512
    with loop_device(img, offset=MIB, sizelimit=part_bytes) as dev:
        vg, names = build_sr(dev)
        truth = lvs_segments(vg, [dev])
        pvck = {(c["offset"] + MIB, c["seqno"]) for c in pvck_generations(dev) if c["vg"] == vg}
    doc = srsalvage_lvm_json(img)
    assert doc["partitions"] == [{"index": 1, "scheme": "gpt", "offset": MIB,
                                  "bytes": part_bytes, "type": "lvm"}]
    v = doc_vg(doc, vg)
    assert v["pvs"][0]["offset"] == MIB and v["data_offset"] == 12 * MIB
    assert current_maps(v) == {k: merged(r) for k, r in truth.items()}
    assert mda_copies(v) == pvck
    # wipe the protective MBR, both GPT headers and both entry arrays
    with open(img, "r+b") as fh:
        fh.write(bytes(34 * 512))
        fh.seek(80 * MIB - 33 * 512)
        fh.write(bytes(33 * 512))
    doc = srsalvage_lvm_json(img)
    assert doc["partitions"] == [{"index": 1, "scheme": "found-by-scan", "offset": MIB,
                                  "bytes": part_bytes, "type": "lvm"}]
    v = doc_vg(doc, vg)
    assert v["pvs"][0]["offset"] == MIB and v["data_offset"] == 12 * MIB
    assert current_maps(v) == {k: merged(r) for k, r in truth.items()}
    assert mda_copies(v) == pvck
    check_deleted_and_claimed(v, names)
    # and now the label and the mda header inside the partition too: pitfall 16
    with open(img, "r+b") as fh:
        fh.seek(MIB)
        fh.write(bytes(2048))
        fh.seek(MIB + 4096)
        fh.write(bytes(512))
    with loop_device(img, offset=MIB, sizelimit=part_bytes) as dev:
        search = {(c["offset"] + MIB, c["seqno"]) for c in pvck_generations(
            dev, settings=f"mda_offset=4096 mda_size={11 * MIB - 4096}") if c["vg"] == vg}
    doc = srsalvage_lvm_json(img)
    assert doc["partitions"] == [{"index": 1, "scheme": "found-by-scan", "offset": MIB,
                                  "bytes": part_bytes, "type": "lvm"}]
    v = doc_vg(doc, vg)
    assert v["pvs"][0]["offset"] == MIB and v["pvs"][0]["label_found"] is False
    assert v["data_offset"] == 12 * MIB
    assert current_maps(v) == {k: merged(r) for k, r in truth.items()}
    assert complete_mda_copies(v) == search and len(search) >= 9


@pytest.mark.slow
def test_label_and_mda_header_wiped_matches_pvck_search(tmp_path):
    need_lvm()
    img = str(tmp_path / "nolabel.img")
    with open(img, "wb") as fh:
        fh.truncate(64 * MIB)
    with loop_device(img) as dev:
        vg, names = build_sr(dev)
        truth = lvs_segments(vg, [dev])
    mda_size = 11 * MIB - 4096
    with open(img, "r+b") as fh:
        fh.write(bytes(4 * 512))          # label sectors 0..3
        fh.seek(4096)
        fh.write(bytes(512))              # mda header
    assert pvck_generations(img) == []    # lvm itself sees nothing any more
    search = {(c["offset"], c["seqno"]) for c in
              pvck_generations(img, settings=f"mda_offset=4096 mda_size={mda_size}")
              if c["vg"] == vg}
    assert len(search) >= 9
    doc = srsalvage_lvm_json(img)
    v = doc_vg(doc, vg)
    pv = v["pvs"][0]
    assert pv["offset"] == 0 and pv["label_found"] is False
    assert any("4608" in how for how in pv["how_found"])
    assert v["data_offset"] == 11 * MIB
    assert current_maps(v) == {k: merged(r) for k, r in truth.items()}
    assert complete_mda_copies(v) == search
    # nothing says which copy LVM would use: no mda header
    assert not any(g["current"] for g in v["generations"])
    assert v["generations"][0]["seqno"] == max(s for _, s in search)
    inferred = [f for f in doc["findings"] if f["kind"] == "lvm-pv-start-inferred"]
    assert inferred and inferred[0]["offset"] == 0


@pytest.mark.slow
def test_wrapped_ring_every_pvck_copy_found(tmp_path):
    need_lvm()
    img = str(tmp_path / "wrap.img")
    with open(img, "wb") as fh:
        fh.truncate(128 * MIB)
    with loop_device(img) as dev:
        vg, names = build_sr(dev, metadatasize="16k", dataalignment="64k", extra_lvs=14)
        truth = lvs_segments(vg, [dev])
        mda_size = int(lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o",
                           "pv_mda_size", dev, devices=[dev]).stdout.split()[0])
    copies = pvck_generations(img)
    pvck = {(c["offset"], c["seqno"]) for c in copies if c["vg"] == vg}
    wrapped = [c for c in copies if c["offset"] - 4096 + c["length"] > mda_size]
    seqnos = sorted(s for _, s in pvck)
    assert seqnos[0] > 1, "the ring must have wrapped (seqno 1 overwritten)"
    doc = srsalvage_lvm_json(img)
    v = doc_vg(doc, vg)
    ours = mda_copies(v)
    assert pvck <= ours
    assert complete_mda_copies(v) <= pvck
    assert current_maps(v) == {k: merged(r) for k, r in truth.items()}
    assert wrapped, "the scenario must leave a copy that wraps from the area end to its start"
    w = {(c["offset"], c["seqno"]) for c in wrapped}
    flagged = {(c["offset"], g["seqno"]) for g in v["generations"] for c in g["copies"]
               if c.get("wrapped")}
    assert w <= flagged
    assert all(g["crc_ok"] for g in v["generations"] if (g["offset"], g["seqno"]) in w)
    check_deleted_and_claimed(v, names)


@pytest.mark.slow
def test_vgcfgrestore_accepts_our_backup_of_an_old_generation(tmp_path):
    """The writer's backup form is what `vgcfgrestore -f` needs: restore the generation that
    still held a removed VDI, and lvm2 lists it again with its old extents."""
    need_lvm()
    from core.lvm.analyse import analyse_disk
    from core.lvm.writer import format_vg_metadata
    from core.source import Evidence

    img = str(tmp_path / "restore.img")
    with open(img, "wb") as fh:
        fh.truncate(64 * MIB)
    vg = f"VG_XenStorage-{uuid.uuid4()}"
    keep, gone = f"VHD-{uuid.uuid4()}", f"VHD-{uuid.uuid4()}"
    with loop_device(img) as dev:
        d = [dev]
        lvm("pvcreate", "--metadatasize", "10M", dev, devices=d)
        lvm("vgcreate", "-s", "4M", vg, dev, devices=d)
        lvm("lvcreate", "-L", "8M", "-n", gone, vg, devices=d)
        lvm("lvcreate", "-L", "4M", "-n", keep, vg, devices=d)
        lvm("lvextend", "-L", "+8M", f"{vg}/{gone}", devices=d)
        before = lvs_segments(vg, d)
        lvm("lvremove", f"{vg}/{gone}", devices=d)
        assert gone not in lvs_segments(vg, d)
        with Evidence(img) as ev:
            rep = analyse_disk(ev)
        (v,) = [x for x in rep.volume_groups if x.name == vg]
        old = next(g for g in v.generations if gone in g.lvs)
        assert old.lvs[gone].status == "deleted" and not old.lvs[gone].claimed_by
        old.metadata.seqno = v.current.seqno        # restore on top of the newest
        backup = tmp_path / "restore.vg"
        backup.write_text(format_vg_metadata(old.metadata, "backup",
                                             description="srsalvage: restore deleted VDI"))
        lvm("vgcfgrestore", "-f", str(backup), vg, devices=d)
        after = lvs_segments(vg, d)
    assert after == before
    seqnos = [c["seqno"] for c in pvck_generations(img) if c["vg"] == vg]
    assert max(seqnos) == v.current.seqno + 1


@pytest.mark.slow
def test_lvm2_reads_images_built_with_our_writers(tmp_path):
    """Label, mda header, ring placement, raw text and CRCs written by our builders (the demo
    builder uses them) are what lvm2 itself accepts: pvck lists every copy, lvs the maps."""
    need_lvm()
    from test_lvm_analyse import VG, build_image, history

    img = str(tmp_path / "ours.img")
    gens = history()
    texts, placed = build_image(img, gens=gens)
    copies = pvck_generations(img)
    assert [(c["offset"], c["seqno"]) for c in copies] == [(o, i + 1) for i, o in enumerate(placed)]
    with loop_device(img) as dev:
        truth = lvs_segments(VG, [dev])
    assert truth == {name: merged(lv.map_runs) for name, lv in gens[-1].lvs.items()}


@pytest.mark.slow
def test_vg_over_two_partitions_of_one_image(tmp_path):
    """Two PVs (two MBR partitions of one image), an LV spanning both: maps name their PV."""
    need_lvm()
    if not realtools.have("sfdisk"):
        pytest.skip("sfdisk not installed")
    img = str(tmp_path / "two.img")
    with open(img, "wb") as fh:
        fh.truncate(96 * MIB)
    realtools.run("sh", "-c", "printf 'label: dos\\nstart=2048, size=81920, type=8e\\n"
                  f"start=83968, size=81920, type=8e\\n' | sfdisk -q {img}")
    offsets = (MIB, 41 * MIB)
    vg = f"VG_XenStorage-{uuid.uuid4()}"
    span, small = f"VHD-{uuid.uuid4()}", f"LV-{uuid.uuid4()}"
    with loop_device(img, offset=offsets[0], sizelimit=40 * MIB) as d0, \
            loop_device(img, offset=offsets[1], sizelimit=40 * MIB) as d1:
        devs = [d0, d1]
        for d in devs:
            lvm("pvcreate", "--metadatasize", "1M", d, devices=devs)
        lvm("vgcreate", "-s", "4M", vg, d0, d1, devices=devs)
        lvm("lvcreate", "-L", "8M", "-n", small, vg, d1, devices=devs)
        lvm("lvcreate", "-L", "48M", "-n", span, vg, d0, d1, devices=devs)
        uuids = dict(line.split() for line in lvm(
            "pvs", "--noheadings", "-o", "pv_name,pv_uuid", devices=devs).stdout.splitlines()
            if line.strip())
        segments = lvs_segments_by_pv(vg, devs)
        pvck = {(c["offset"] + off, c["seqno"]) for d, off in zip(devs, offsets)
                for c in pvck_generations(d) if c["vg"] == vg}
    truth: dict[str, list] = {}
    for name, runs in segments.items():
        for le, dev, pe, count in runs:
            truth.setdefault(name, []).append((le, pe, count, uuids[dev]))
    doc = srsalvage_lvm_json(img)
    assert [(p["scheme"], p["offset"], p["type"]) for p in doc["partitions"]] == \
        [("mbr", offsets[0], "lvm"), ("mbr", offsets[1], "lvm")]
    v = doc_vg(doc, vg)
    pv_ids = {p["name"]: p["id"] for p in v["pvs"]}
    assert sorted(p["offset"] for p in v["pvs"]) == list(offsets)
    cur = next(g for g in v["generations"] if g["current"])
    got = {lv["name"]: sorted((r[0], r[1], r[2], pv_ids[r[3]]) for r in lv["map"])
           for lv in cur["logical_volumes"]}
    assert got == {k: sorted(r) for k, r in truth.items()}
    assert any(len({r[3] for r in runs}) == 2 for runs in got.values())
    assert mda_copies(v) == pvck
    assert all(len(g["copies"]) == 2 for g in v["generations"])   # one per PV's mda
