"""Extent reconstruction on small synthetic SR images (no root, no real tools; fast).

The images hold LVHD VHDs from core.vhd.build laid out extent by extent on a PE grid whose map
the test knows, so every placement can be checked; the grid is given (no LVM metadata at all).
"""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import Cancelled
from core.match.anchors import parse_anchor
from core.match.features import SectorReader, bitmap_likeness
from core.match.predict import predict
from core.match.reconstruct import lvhd_le_of_offset, reconstruct
from core.match.synth import lvhd_vdi, place_extents
from core.source import Evidence
from core.spaces import BytesSpace, extent_space
from core.structs import vhd as S
from core.vhd.build import build_vhd

E = 4 << 20
D = 3 << 20          # PE 0 (the grid is given: no metadata in these images)
MiB = 1 << 20


def _k(uid: bytes) -> str:
    h = uid.hex()
    return f"vhd:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def make_image(path, layout: dict[str, tuple[object, list[int]]], n_pes: int = 24,
               garbage: tuple[int, ...] = ()) -> None:
    """layout: name -> (built VHD, [pe per LE]); garbage: PEs filled with random bytes."""
    rng = random.Random(99)
    with open(path, "wb") as f:
        f.truncate(D + n_pes * E)
        for pe in garbage:
            f.seek(D + pe * E)
            f.write(rng.randbytes(E))
        for built, pes in layout.values():
            place_extents(f, built.data, pes, D)


@pytest.fixture(scope="module")
def vdis():
    # two LVHD VDIs whose extents interleave (grown in turns), one packed (qemu layout)
    a = lvhd_vdi(40 * MiB, list(range(10)), seed=1)
    b = lvhd_vdi(40 * MiB, list(range(3, 13)), seed=2)
    rng = random.Random(5)
    q = build_vhd(24 * MiB, {i: rng.randbytes(2 * MiB) for i in (0, 2, 5)}, layout="qemu", seed=9)
    return {"A": (a, [0, 1, 2, 10, 11, 12, 13]), "B": (b, [3, 4, 5, 14, 15, 16, 17]),
            "Q": (q, [6, 7])}


def _rebuild(path, **kw):
    ev = Evidence(str(path))
    return ev, reconstruct(ev, data_offset=D, use_metadata=False, **kw)


def test_interleaved_vdis_placed_and_exported(tmp_path, vdis):
    from core.vhd.reader import VhdImage

    img = tmp_path / "sr.img"
    make_image(img, vdis, garbage=(20,))
    ev, rec = _rebuild(img)
    for name, (built, pes) in vdis.items():
        v = rec.vdi(_k(built.unique_id))
        assert v is not None, name
        assert v.pes == pes, name
        assert v.complete and not v.missing_les
        # content decided, or (another VDI's LE fitting as well) adjacency, said and low
        for _, p in v.extents:
            assert p.source == "vhd-match" or (p.source == "adjacency" and p.confidence < 0.75
                                               and p.note)
        got = VhdImage.open(extent_space(ev, D, E, v.pes)).virtual_space()
        want = VhdImage.open(BytesSpace(built.data)).virtual_space()
        assert got.read(0, built.current_size) == want.read(0, built.current_size)
    # the JSON document is what export --map reads
    doc = json.loads(json.dumps(rec.to_json()))
    assert doc["volume_groups"][0]["data_offset"] == D
    assert doc["volume_groups"][0]["extent_bytes"] == E
    entry = next(x for x in doc["vdis"] if x["key"] == _k(vdis["A"][0].unique_id))
    assert entry["map"] == [[0, 0, 3], [3, 10, 4]]
    assert entry["lv"] is None and entry["complete"] is True
    assert {e["source"] for e in entry["extents"]} <= {"metadata", "vhd-match", "adjacency",
                                                       "manual"}
    # garbage is not given to anyone
    assert 20 not in [p for v in rec.vdis for p in v.pes]


def test_export_map_roundtrip_through_core_vdi(tmp_path, vdis):
    from core.vdi import resolve_vdi

    img = tmp_path / "sr.img"
    make_image(img, vdis)
    ev, rec = _rebuild(img)
    mp = tmp_path / "map.json"
    mp.write_text(json.dumps(rec.to_json()))
    built, pes = vdis["B"]
    res = resolve_vdi(ev, _k(built.unique_id), map_path=str(mp))
    img_b = res.volume.image()
    assert img_b is not None and img_b.unique_id == built.unique_id


def test_head_overwritten_others_rebuilt_and_orphans_named(tmp_path, vdis):
    img = tmp_path / "sr.img"
    make_image(img, vdis)
    with open(img, "r+b") as f:            # A's head extent overwritten
        f.seek(D + 0 * E)
        f.write(random.Random(3).randbytes(E))
    ev, rec = _rebuild(img)
    assert rec.vdi(_k(vdis["A"][0].unique_id)) is None
    for name in ("B", "Q"):
        built, pes = vdis[name]
        assert rec.vdi(_k(built.unique_id)).pes == pes
    # A's surviving extents are named (orphans), its LE 1 by its tdbatmap, its last by its footer
    orphans = {o["pe"]: o for o in rec.orphans}
    assert orphans[1].get("tdbatmap") is True
    assert orphans[13].get("footer_uuid") == _k(vdis["A"][0].unique_id)[4:]
    for le, pe in enumerate(vdis["A"][1][1:6], start=1):
        assert pe in orphans, le
        if "lvhd_le" in orphans[pe]:
            assert orphans[pe]["lvhd_le"] == le
    kinds = [f for f in rec.findings if f.kind == "orphan-vhd-extent"]
    assert {f.details["pe"] for f in kinds} >= {1, 2, 10, 11, 12, 13}


def _lone_vdi_with_copy(tmp_path, src: int, dst: int, count: int, seed: int = 11,
                        pes: list[int] | None = None):
    """One LVHD VDI laid at `pes` (default LE 3.. far from LE 2), and an exact copy of the
    `count` extents from PE `src` written at PE `dst`: (image path, built VHD, pes)."""
    a = lvhd_vdi(40 * MiB, list(range(10)), seed=seed)
    pes = pes or [0, 1, 2, 8, 9, 10, 11]
    img = tmp_path / "sr.img"
    make_image(img, {"A": (a, pes)}, n_pes=24)
    with open(img, "r+b") as f:
        f.seek(D + src * E)
        chunk = f.read(count * E)
        f.seek(D + dst * E)
        f.write(chunk)
    return img, a, pes


def test_identical_copy_told_apart_only_by_its_run_and_said_so(tmp_path):
    """An exact copy of LE 3 in a distant free PE: content cannot choose. The original starts a
    run that goes on (the PE after it fits LE 4), the copy does not: the original is placed, by
    adjacency, with low confidence, the copy named in the note."""
    img, a, pes = _lone_vdi_with_copy(tmp_path, 8, 16, 1)
    ev, rec = _rebuild(img)
    v = rec.vdi(_k(a.unique_id))
    assert v.pes == pes
    p3 = dict(v.extents)[3]
    assert p3.source == "adjacency" and p3.confidence < 0.75 and "16" in p3.note


def test_identical_run_copy_gets_low_confidence_not_a_claim(tmp_path):
    """Exact copies of LEs 3 and 4 in distant free PEs: by content both runs fit. The one that
    leads on into LEs 5 and 6 is taken (LVM allocates runs), with low confidence, and the
    copies are named."""
    img, a, pes = _lone_vdi_with_copy(tmp_path, 8, 16, 2)
    ev, rec = _rebuild(img)
    v = rec.vdi(_k(a.unique_id))
    assert v.pes == pes
    ext = dict(v.extents)
    for le, copy in ((3, 16), (4, 17)):
        assert ext[le].confidence < 0.75 and ext[le].source == "adjacency", le
        assert str(copy) in ext[le].note, ext[le].note


def test_identical_candidates_are_ambiguous_not_guessed(tmp_path):
    """An exact copy of the last data extent elsewhere, and nothing after either of them:
    not guessed."""
    # exact copies of LEs 3 to 6 in distant free PEs: both runs are whole, nothing tells them
    # apart
    img, a, pes = _lone_vdi_with_copy(tmp_path, 8, 16, 4)
    ev, rec = _rebuild(img)
    v = rec.vdi(_k(a.unique_id))
    assert v.pes[:3] == [0, 1, 2]
    assert v.pes[3] is None, "a guess between two identical extents"
    assert 3 in v.missing_les and not v.complete
    assert sorted(v.ambiguous[3]) == [8, 16]
    assert any(f.kind == "extent-ambiguous" for f in rec.findings)
    # the technician decides: the fixed pair is a hard constraint and the rest follows
    ev2, rec2 = _rebuild(img, fixed={_k(a.unique_id): {3: 8}})
    v2 = rec2.vdi(_k(a.unique_id))
    assert v2.pes == pes and v2.complete
    assert dict(v2.extents)[3].source == "manual"


def test_adjacent_copy_wins_only_with_lower_confidence(tmp_path):
    img, a, pes = _lone_vdi_with_copy(tmp_path, 3, 15, 1, seed=12, pes=list(range(7)))
    ev, rec = _rebuild(img)
    v = rec.vdi(_k(a.unique_id))
    assert v.pes == pes        # the walk follows the run; the distant copy is left alone
    assert 15 not in v.pes


def test_inflated_gap_not_guessed(tmp_path):
    # 3 blocks in a 32 MiB LV: data in LEs 0-2, LEs 3-6 hold nothing, footer in LE 7
    a = lvhd_vdi(24 * MiB, [0, 1, 2], seed=13, lv_size=32 * MiB)
    pes = [0, 1, 2, 12, 13, 14, 15, 5]
    img = tmp_path / "sr.img"
    make_image(img, {"A": (a, pes)}, n_pes=24)
    ev, rec = _rebuild(img)
    v = rec.vdi(_k(a.unique_id))
    assert v.pes[:3] == [0, 1, 2]
    assert v.pes[7] == 5                      # footer extent: LE from sm's sizing rule
    assert dict(v.extents)[7].confidence < 0.9
    assert v.missing_les == [3, 4, 5, 6] and not v.complete
    # contiguous LV: the gap is inferred from the free run, low confidence, and said so
    img2 = tmp_path / "sr2.img"
    make_image(img2, {"A": (a, list(range(8)))}, n_pes=24)
    ev2, rec2 = _rebuild(img2)
    v2 = rec2.vdi(_k(a.unique_id))
    assert v2.pes == list(range(8)) and v2.complete
    gap = [p for le, p in v2.extents if le in (3, 4, 5, 6)]
    assert all(p.source == "adjacency" and p.confidence <= 0.5 and p.note for p in gap)


def test_differencing_child_found_with_parent_link(tmp_path):
    from core.vhd.build import blktap_parent

    parent = lvhd_vdi(40 * MiB, list(range(6)), seed=21)
    ref = blktap_parent("0f0e0d0c-0b0a-4908-8706-050403020100",
                        "VHD-11111111-2222-4333-8444-555555555555", parent.unique_id)
    child = lvhd_vdi(40 * MiB, [1, 7], seed=22, parent=ref, lv_size=12 * MiB)
    img = tmp_path / "sr.img"
    make_image(img, {"P": (parent, [0, 1, 2, 3, 4]), "C": (child, [9, 10, 11])}, n_pes=16)
    ev, rec = _rebuild(img)
    c = rec.vdi(_k(child.unique_id))
    assert c.pes == [9, 10, 11] and c.complete
    assert c.parent_uuid == _k(parent.unique_id)[4:]
    # the child's parent name (a device-mapper name) gives the VG name for the restore file
    assert rec.grid.vg_name == "VG_XenStorage-0f0e0d0c-0b0a-4908-8706-050403020100"


def test_cancel_stops_the_work(tmp_path, vdis):
    img = tmp_path / "sr.img"
    make_image(img, vdis)
    ev = Evidence(str(img))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        reconstruct(ev, data_offset=D, use_metadata=False, cancel=stop)


def test_progress_is_reported(tmp_path, vdis):
    img = tmp_path / "sr.img"
    make_image(img, vdis)
    seen = []
    reconstruct(Evidence(str(img)), data_offset=D, use_metadata=False, progress=seen.append)
    assert seen and all(u.total > 0 for u in seen)


def test_real_qemu_img_vhd_in_extents(tmp_path):
    """A packed VHD written by real qemu-img, laid over non-adjacent extents."""
    import subprocess

    import realtools as rt
    rt.need_qemu_img()
    rng = random.Random(4)
    raw = bytearray(14 * MiB)
    for at in (0, 5 * MiB, 9 * MiB + 4096, 13 * MiB):
        raw[at: at + 300_000] = rng.randbytes(300_000)
    (tmp_path / "d.raw").write_bytes(bytes(raw))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on",
                    str(tmp_path / "d.raw"), str(tmp_path / "d.vhd")], check=True)
    vhd = (tmp_path / "d.vhd").read_bytes()
    n = -(-len(vhd) // E)
    pes = [4, 9, 2, 3][:n]
    img = tmp_path / "sr.img"
    with open(img, "wb") as f:
        f.truncate(D + 12 * E)
        place_extents(f, vhd, pes, D)
    ev, rec = _rebuild(img)
    v = rec.vdi(_k(vhd[68:84]))
    assert v.pes == pes and v.complete
    from core.vhd.reader import VhdImage
    got = VhdImage.open(extent_space(ev, D, E, v.pes)).virtual_space().read(0, len(raw))
    assert got == bytes(raw)


# -- pieces ------------------------------------------------------------------------------------
def test_bitmap_likeness():
    bm = np.zeros((4, 512), np.uint8)
    bm[0, :100] = 0xFF            # a bitmap: runs of ones then zeros
    bm[1] = np.random.default_rng(1).integers(0, 256, 512)   # data
    bm[3, :] = 0xFF
    like = bitmap_likeness(bm)
    assert like[0] == 1.0 and like[1] < 0.1 and like[2] == 0.0 and like[3] == 1.0


def test_lvhd_lattice_le_numbers():
    # block k's bitmap sits at LV sector 8455 + 4104 k; LE 1 holds blocks 0 and 1
    assert lvhd_le_of_offset(263) == 1
    assert lvhd_le_of_offset(263 + 4104) == 1
    assert lvhd_le_of_offset(279) == 2


def test_predictions_of_an_lvhd_vhd():
    a = lvhd_vdi(40 * MiB, list(range(4)), seed=5)
    sp = BytesSpace(a.data)
    anc = parse_anchor(0, lambda o, n: sp.read(o, n), E, 64 * E)
    # the BAT runs into LE 1, but the entries a 40 MiB disk uses all lie in LE 0
    assert anc.lvhd and anc.bat_complete and anc.plausible and len(anc.bat) == 20
    p = predict(anc, E)
    assert p.slots[1].le1_batmap and p.slots[1].bat_tail
    assert list(p.slots[1].bitmap_offsets // 512) == [263, 263 + 4104]
    assert p.slots[1].straddle_out is not None


# -- garbage -----------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=st.lists(st.sampled_from(["zero", "random", "anchor", "tail", "batmap"]),
                      min_size=6, max_size=6),
       seed=st.integers(0, 2**32 - 1),
       block_size=st.sampled_from([0, 512, 3000, 4096, 2 << 20, 1 << 31]),
       entries=st.sampled_from([0, 1, 7, 1 << 20, 1 << 24, 0xFFFFFFFF]),
       table=st.sampled_from([0, 512, 1536, 4096, (1 << 20) - 4, 1 << 40]),
       disk_type=st.sampled_from([0, 2, 3, 4, 99]),
       size=st.sampled_from([0, 512, 40 << 20, 1 << 50, 2**64 - 1]))
def test_garbage_anchors_and_extents_never_crash(kinds, seed, block_size, entries, table,
                                                 disk_type, size):
    """Random extents, heads with absurd fields and random BATs: no traceback, bounded."""
    rng = random.Random(seed)
    E_small = 1 << 20        # small extents keep the example fast
    buf = bytearray(len(kinds) * E_small)
    for pe, kind in enumerate(kinds):
        base = pe * E_small
        if kind == "random":
            buf[base: base + 8192] = rng.randbytes(8192)
        elif kind == "batmap":
            buf[base: base + 1536] = b"\xff" * 1536
            buf[base + 1536: base + 1544] = S.BATMAP_COOKIE
            buf[base + 1544: base + 2048] = rng.randbytes(504)
        elif kind in ("anchor", "tail"):
            ftr = bytearray(rng.randbytes(512))
            ftr[:8] = S.HD_COOKIE
            ftr[48:56] = size.to_bytes(8, "big")
            ftr[60:64] = disk_type.to_bytes(4, "big")
            hdr = bytearray(rng.randbytes(1024))
            hdr[:8] = S.DD_COOKIE
            hdr[16:24] = table.to_bytes(8, "big")
            hdr[28:32] = entries.to_bytes(4, "big")
            hdr[32:36] = block_size.to_bytes(4, "big")
            if kind == "anchor":
                buf[base: base + 512] = ftr
                buf[base + 512: base + 1536] = hdr
                buf[base + 1536: base + 1536 + 8192] = rng.randbytes(8192)   # the "BAT"
            else:
                buf[base + E_small - 512: base + E_small] = ftr
    space = BytesSpace(bytes(buf))
    rec = reconstruct(space, data_offset=0, extent_bytes=E_small, use_metadata=False)
    json.dumps(rec.to_json())
    for v in rec.vdis:
        assert len(v.extents) <= len(kinds)
        assert all(0 <= p.pe < len(kinds) for _, p in v.extents)


def test_anchor_with_absurd_bat_is_bounded(tmp_path):
    a = lvhd_vdi(40 * MiB, list(range(4)), seed=6)
    data = bytearray(a.data)
    # BAT entries pointing far past any PV, into the metadata, and onto each other
    data[1536:1536 + 16] = (b"\x7f\xff\xff\xf0" + b"\x00\x00\x00\x01" + b"\x00\x00\x21\x07" * 2)
    img = tmp_path / "sr.img"
    with open(img, "wb") as f:
        f.truncate(D + 12 * E)
        place_extents(f, bytes(data), [0, 1, 2, 3, 4], D)
    ev, rec = _rebuild(img)
    assert any(f.kind == "vhd-bat-implausible" for f in rec.findings)
    v = rec.vdi(_k(a.unique_id))
    assert v is not None and v.pes[0] == 0


def test_sector_reader_skips_holes_and_coalesces(tmp_path):
    p = tmp_path / "sparse.img"
    with open(p, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(10 * MiB)
        f.write(b"\x01" * 4096)
    ev = Evidence(str(p))
    r = SectorReader(ev)
    offs = np.array([0, 10 * MiB, 10 * MiB + 1024, 40 * MiB])
    got, valid = r.gather(offs, 512, with_valid=True)
    assert list(valid) == [False, True, True, False]
    assert got[1].all() and not got[0].any()
    cov = r.covered(np.array([8 * MiB]), np.array([0, 2 * MiB, 2 * MiB + 4096]), 512)
    assert cov.tolist() == [[False, True, False]]


def test_demo_without_any_lvm_is_rebuilt_and_its_gaps_get_suggestions(tmp_path):
    """The demo SR with its partition table, PV label and metadata area all wiped: PE 0 and the
    VG name come from the MGT volume, every placement made is right. The demo's web VDI has
    bitmap bits clear over stale bytes: zeros there are measured as untrustworthy for it
    (issue 10), so its continuity no longer fails; what only layout could place is listed."""
    from core.demo import build_demo

    path = tmp_path / "demo.img"
    manifest = build_demo(str(path), damage="partition-table,label,metadata", attach_cycles=2)
    rec = reconstruct(Evidence(str(path)))
    assert rec.grid.data_offset == manifest.data_offset
    assert rec.grid.vg_name == manifest.vg_name
    assert rec.mgt is not None and rec.mgt["pe"] == manifest.mgt_pes[0]
    by_uid = {t.vhd_unique_id: t for t in manifest.vdis if t.vhd_unique_id}
    for v in rec.vdis:
        t = by_uid.get(v.vhd_uuid)
        assert t is not None, v.key
        for le, p in v.extents:
            assert p.pe == t.pes[le], (t.key, le, p)
        for le, cands in v.ambiguous.items():
            assert t.pes[le] in cands, (t.key, le, cands)
    # the web VDI: every extent placed right or, where only layout placed it on this disk
    # with a previous life, listed with the true PE among its candidates
    web = next(v for v in rec.vdis if by_uid[v.vhd_uuid].key == "web")
    truth = by_uid[web.vhd_uuid].pes
    for le, pe in enumerate(truth):
        assert web.pes[le] == pe or pe in web.ambiguous.get(le, []), (le, web.pes, web.ambiguous)


def test_unplaced_lvhd_le_gets_the_orphans_on_its_lattice_as_suggestions():
    """An LE that must hold bitmaps but was not placed lists, as candidates, the unclaimed
    extents whose bitmaps sit where that LE's do (the LVHD lattice repeats every 513 LEs)."""
    from types import SimpleNamespace as NS

    from core.match.reconstruct import _suggest_orphans

    slots = {2: NS(bitmap_offsets=np.array([7 * 512])), 3: NS(bitmap_offsets=np.zeros(0))}
    state = NS(pred=NS(slots=slots), anchor=NS(lvhd=True))
    vmap = NS(missing_les=[2, 3], ambiguous={})
    orphans = [{"pe": 40, "lvhd_le": 2}, {"pe": 9, "lvhd_le": 2}, {"pe": 11, "lvhd_le": 5},
               {"pe": 12, "lvhd_le": 515 % 513}]
    _suggest_orphans([state], [vmap], orphans)
    assert vmap.ambiguous == {2: [9, 12, 40]}      # LE 3 holds no bitmap: nothing suggested
