"""The XenServer-like SR builder (tests/xsbuilder) checked against real tools, not against itself.

* lvm2 reads the undamaged SR back: `lvs --segments` gives the truth's maps, and the LV names
  are the VDIs' (`VHD-<uuid>`, MGT).
* qemu-img reads every built dynamic VHD (extracted through lvm2's map): its raw conversion
  equals the guest's own disk (made by sfdisk/mkfs/debugfs/ntfscp) in every sector the VHD's
  bitmap marks written and every unallocated block; qemu-img ignores sector bitmaps, so the
  clear-bitmap sectors it returns are the previous life tapdisk on LVM leaves there, and the
  builder must leave some (else it could not surprise an engine that assumes zeros).
* Resize leaves the old footer (old size, same unique id) inside the LV; the copy at offset 0
  and the last sector give the new size.
* Snapshots: the children's parent locators name the parent's LV (`VHD-<uuid>`), the MGT
  volume (read by core.xen.parse_mgt) records `snapshot_of`, base copies are hidden.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import realtools as rt
from core.structs import vhd as S
from core.xen import dm_name_parts, parse_mgt

pytestmark = [pytest.mark.realtools, pytest.mark.slow]

E = 4 << 20


def _need():
    rt.need_lvm()
    rt.need_qemu_img()


def _lv_bytes(img: str, truth: dict, name: str) -> bytes:
    D = truth["meta"]["data_offset"]
    out = bytearray()
    with open(img, "rb") as f:
        for pe in truth["lvs"][name]["pes"]:
            f.seek(D + pe * E)
            out += f.read(E)
    return bytes(out)


def _footers(lv: bytes, uid: bytes) -> list[tuple[int, int]]:
    """(offset, curr_size) of every valid footer of unique id `uid` on a sector boundary."""
    arr = np.frombuffer(lv, np.uint8).reshape(-1, 512)
    cookie = np.frombuffer(S.HD_COOKIE, np.uint8)
    hits = np.flatnonzero((arr[:, :8] == cookie).all(axis=1))
    out = []
    for s in hits:
        raw = lv[s * 512:(s + 1) * 512]
        f = S.parse_footer(raw)
        if f.uuid == uid and S.footer_checksum(raw) == f.checksum:
            out.append((int(s) * 512, f.curr_size))
    return out


def _stale_sectors(lv: bytes, virtual: int) -> int:
    """Sectors of allocated blocks whose bitmap bit is clear and whose bytes are not zero."""
    bat = S.parse_bat(lv[1536:1536 + 4 * (virtual // S.VHD_BLOCK_BYTES)])
    n = 0
    for entry in bat[bat != S.DD_BLK_UNUSED].tolist():
        at = entry * 512
        bm = np.unpackbits(np.frombuffer(lv[at:at + 512], np.uint8)).astype(bool)
        data = np.frombuffer(lv[at + 512:at + 512 + S.VHD_BLOCK_BYTES], np.uint8)
        n += int((data.reshape(-1, 512).any(axis=1) & ~bm).sum())
    return n


@pytest.mark.parametrize("kind,seed", [("resized", 2), ("snapshots", 22)])
def test_truth_agrees_with_lvm2_and_qemu_img(tmp_path, kind, seed):
    _need()
    from xsbuilder import build
    img, truth = build(kind, seed, tmp_path, damage=False)
    meta = truth["meta"]
    # lvm2 itself reads the SR back: same LVs, same maps
    with rt.loop_device(img, offset=meta["part_offset"]) as dev:
        segs = rt.lvs_segments(meta["vg"], [dev])
    maps = {}
    for name, runs in segs.items():
        pes = []
        for le, pe, count in sorted(runs):
            pes.extend(range(pe, pe + count))
        maps[name] = pes
    assert maps == {n: t["pes"] for n, t in truth["lvs"].items()}
    stale_sectors = 0
    for name, t in truth["lvs"].items():
        if t["kind"] != "vhd":
            continue
        assert name == f"VHD-{t['vdi_uuid']}"
        lv = _lv_bytes(img, truth, name)
        uid = bytes.fromhex(t["vhd_uid"].replace("-", ""))
        foot0 = S.parse_footer(lv[:512])
        assert foot0.uuid == uid and foot0.curr_size == t["virtual_bytes"]
        assert lv[-512:] == lv[:512], f"{name}: the LV's last sector is not the footer"
        stale_sectors += _stale_sectors(lv, t["virtual_bytes"])
        if t["parent_lv"]:
            hdr = S.parse_header(lv[512:1536])
            loc = hdr.loc[0]
            path = lv[loc.data_offset:loc.data_offset + loc.data_len].decode()
            assert dm_name_parts(path)[-1] == t["parent_lv"]
            assert S.decode_utf16be_name(hdr.prt_name).endswith(
                t["parent_lv"].replace("-", "--"))
            continue
        # qemu-img's reading of the dynamic VHD against the guest's own disk
        vhd = tmp_path / "x.vhd"
        vhd.write_bytes(lv)
        out = tmp_path / "x.raw"
        rt.run("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(out))
        q = np.fromfile(out, np.uint8)
        if t["expected_raw"]:
            g = np.fromfile(t["expected_raw"], np.uint8)
        else:
            continue
        assert len(q) >= len(g) == t["virtual_bytes"]
        bat = S.parse_bat(lv[1536:1536 + 4 * (len(g) // S.VHD_BLOCK_BYTES)])
        differ = np.flatnonzero((q[:len(g)].reshape(-1, 512) != g.reshape(-1, 512)).any(1))
        for s in differ.tolist():
            blk, k = divmod(s, 4096)
            assert bat[blk] != S.DD_BLK_UNUSED, f"{name}: unallocated block {blk} not zeros"
            bm = np.unpackbits(np.frombuffer(lv[bat[blk] * 512:bat[blk] * 512 + 512], np.uint8))
            assert not bm[k], f"{name}: sector {s} marked written differs from the guest disk"
    assert stale_sectors > 0, "no clear-bitmap sector holds stale bytes: nothing to surprise"
    if kind == "resized":
        # an older footer of the same unique id (the old, smaller size) inside a resized LV
        olds = 0
        for name, t in truth["lvs"].items():
            if t["kind"] != "vhd":
                continue
            lv = _lv_bytes(img, truth, name)
            fs = _footers(lv, bytes.fromhex(t["vhd_uid"].replace("-", "")))
            olds += sum(1 for off, size in fs if size < t["virtual_bytes"]
                        and 0 < off < len(lv) - 512)
        assert olds > 0
    if kind == "snapshots":
        mgt = parse_mgt(_lv_bytes(img, truth, "MGT"))
        assert mgt.sr_uuid == meta["vg"].removeprefix("VG_XenStorage-")
        live = {v.uuid: v for v in mgt.vdis if not v.deleted}
        snaps = [t for t in truth["lvs"].values() if t.get("is_snapshot")]
        bases = [t for t in truth["lvs"].values() if t.get("hidden")]
        assert bases, truth["events"]
        for t in snaps:
            assert live[t["vdi_uuid"]].fields["snapshot_of"] == t["snapshot_of"]
        for t in bases:
            assert live[t["vdi_uuid"]].name_label == "base copy"
        assert any("gc: coalesced" in e for e in truth["events"]), truth["events"]
    json.dumps(truth)      # the truth is JSON-able
