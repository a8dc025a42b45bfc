"""blktap-layout VHDs (XenServer LVHD): 2 TiB BAT, batmap, 4 KiB-aligned blocks in allocation
order, bitmap bits only for written sectors over stale bytes, the footer at the end of an
inflated LV; chains linked by unique id with dm-name locators; repairs into the export."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest

import realtools
from core.source import Evidence
from core.spaces import BytesSpace, extent_space
from core.structs import vhd as S
from core.vhd.build import blktap_parent, build_vhd, dm_name
from core.structs.lvhd import lvhd_lv_size
from core.vhd.chain import resolve_chain
from core.vhd.checks import check_vhd
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdImage, format_uuid, undouble_dm_name
from test_vhd_support import EXTENT, lvm_sr, qemu_to_raw, same_file

MIB = 1 << 20
SR_UUID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"


def blocks_with_stale(seed: int, nblocks: int, which: list[int]):
    """{block: bytes | (bytes, written)}: full blocks and partly written ones whose unwritten
    sectors hold stale non-zero bytes; plus the virtual disk they must read as."""
    rng = np.random.default_rng(seed)
    blocks = {}
    virtual = bytearray(nblocks * 2 * MIB)
    for i, b in enumerate(which):
        data = rng.integers(1, 256, 2 * MIB, dtype=np.uint8)  # never zero: stale shows
        if i % 2:
            written = rng.random(4096) < 0.3
            written[:7] = True
            blocks[b] = (data.tobytes(), written)
            seen = np.where(np.repeat(written, 512), data, 0).astype(np.uint8)
        else:
            blocks[b] = data.tobytes()
            seen = data
        virtual[b * 2 * MIB:(b + 1) * 2 * MIB] = seen.tobytes()
    return blocks, bytes(virtual)


def test_blktap_layout_matches_lvhd_arithmetic():
    blocks, _ = blocks_with_stale(1, 6, [4, 1])
    built = build_vhd(6 * 2 * MIB, blocks, layout="blktap", order=[4, 1])
    img = VhdImage.open(BytesSpace(built.data))
    assert img.creator == "tap\0" and img.creator_version == (1, 3)
    assert img.bat_entries_declared == 1048576 and int(img.header.table_offset) == 1536
    assert img.batmap_header_offset == 4_195_840 and img.batmap_valid
    assert int(img.bat[4]) == 8455 and int(img.bat[1]) == 8455 + 4104     # allocation order
    assert all((int(img.bat[b]) + 1) % 8 == 0 for b in (1, 4))             # data 4 KiB aligned
    assert bool(img.batmap[4]) and not bool(img.batmap[1])                 # full / partial
    assert img.metadata_end == 4_327_424
    assert [f for f in check_vhd(img) if f.severity != "info"] == []


@pytest.mark.parametrize("seed", [2, 3])
def test_blktap_in_inflated_lv_exports_exactly_the_written_disk(tmp_path, seed):
    nblocks = 8
    blocks, virtual = blocks_with_stale(seed, nblocks, [6, 0, 3, 5])
    lv_size = lvhd_lv_size(nblocks * 2 * MIB, 4) + 3 * EXTENT   # inflated: footer far away
    built = build_vhd(nblocks * 2 * MIB, blocks, layout="blktap", order=[6, 0, 3, 5],
                      lv_size=lv_size, seed=seed)
    assert built.footer_offset == lv_size - 512 > built.data_end + EXTENT
    # lay the LV out over a disk in non-contiguous extents
    les = lv_size // EXTENT
    pes = [(7 * le + 3) % (les + 5) for le in range(les)]
    disk = bytearray((les + 5) * EXTENT)
    for le, pe in enumerate(pes):
        disk[pe * EXTENT:(pe + 1) * EXTENT] = built.data[le * EXTENT:(le + 1) * EXTENT]
    src = tmp_path / "disk.img"
    src.write_bytes(disk)
    with Evidence(str(src)) as ev:
        img = VhdImage.open(extent_space(ev, 0, EXTENT, pes))
        assert img.footer_source == "end" and img.footer_offset == lv_size - 512
        assert img.virtual_space().read(0, len(virtual)) == virtual
        r = export_raw(img, str(tmp_path / "v.raw"), [str(src)])
        assert (tmp_path / "v.raw").read_bytes() == virtual
        assert r.sha256 == hashlib.sha256(virtual).hexdigest()
        rv = export_vhd(img, str(tmp_path / "v.vhd"), [str(src)])
    out = (tmp_path / "v.vhd").read_bytes()
    # compact: the LV's bytes up to the last block, then the footer
    assert len(out) == built.data_end + 512 == rv.bytes
    assert out[:built.data_end] == built.data[:built.data_end]
    assert out[-512:] == built.footer
    again = VhdImage.open(BytesSpace(out))
    assert again.footer_source == "end" and again.virtual_space().read(0, len(virtual)) == virtual


def test_blktap_vhd_in_real_lvm_lv_reads_like_qemu(tmp_path):
    """Full blocks only (qemu-img ignores bitmaps): qemu-img reads our compact export the same."""
    realtools.need_qemu_img()
    rng = np.random.default_rng(5)
    blocks = {b: rng.integers(0, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (2, 0, 7)}
    vsize = 10 * 2 * MIB
    with lvm_sr(tmp_path) as sr:
        name = "VHD-5d0c7f5e-1d3b-4e2a-9c6f-2b7a8e9d0c1f"
        sr.lvcreate(name, 1)
        sr.lvcreate("filler", 1)
        need = lvhd_lv_size(vsize, 3) // EXTENT
        sr.lvextend(name, need - 1 + 2)
        lv_size = sr.lv_size(name)
        buf = io.BytesIO()
        built = build_vhd(vsize, blocks, layout="blktap", order=[2, 0, 7], out=buf,
                          lv_size=lv_size)
        sr.write_lv(name, buf.getvalue())
        with Evidence(sr.path) as ev:
            img = VhdImage.open(sr.space(ev, name), name=name)
            assert img.footer_offset == lv_size - 512
            export_vhd(img, str(tmp_path / "e.vhd"), [sr.path])
            export_raw(img, str(tmp_path / "e.raw"), [sr.path])
    qemu_to_raw(str(tmp_path / "e.vhd"), str(tmp_path / "q.raw"))
    assert same_file(tmp_path / "q.raw", tmp_path / "e.raw")
    raw = (tmp_path / "e.raw").read_bytes()
    for b, data in blocks.items():
        assert raw[b * 2 * MIB:(b + 1) * 2 * MIB] == data
    assert os.path.getsize(tmp_path / "e.vhd") == built.data_end + 512


def test_blktap_chain_by_unique_id_with_dm_name_locators(tmp_path):
    vsize = 4 * 2 * MIB
    rng = np.random.default_rng(9)
    pdata = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in range(4)}
    parent = build_vhd(vsize, pdata, layout="blktap", seed=1, hidden=True)
    parent_lv = "VHD-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"  # renamed base: LV uuid != footer id
    written = np.zeros(4096, dtype=bool)
    written[100:200] = True
    cdata = rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes()
    ref = blktap_parent(SR_UUID, parent_lv, parent.unique_id)
    child = build_vhd(vsize, {1: (cdata, written)}, layout="blktap", parent=ref, seed=2)
    pimg = VhdImage.open(BytesSpace(parent.data))
    cimg = VhdImage.open(BytesSpace(child.data))
    assert pimg.hidden and "vhd-hidden" in {f.kind for f in check_vhd(pimg)}
    assert cimg.disk_type_name == "differencing"
    assert cimg.parent_name == dm_name(f"VG_XenStorage-{SR_UUID}", parent_lv)
    assert "VG_XenStorage--3f1c2d4e--5a6b" in cimg.parent_name
    assert cimg.parent_lv_hint == parent_lv
    assert undouble_dm_name("file://./" + cimg.parent_name) == parent_lv
    assert {l.platform for l in cimg.locators} == {"MacX", "W2ku", "W2ru"}
    assert [l.text for l in cimg.locators if l.platform == "MacX"] == [
        "file://./" + cimg.parent_name]
    chain = resolve_chain(cimg, {pimg.unique_id: pimg}.get)
    assert chain.complete
    flat = chain.virtual_space().read(0, vsize)
    expect = bytearray(b"".join(pdata[b] for b in range(4)))
    lo = 2 * MIB + 100 * 512
    expect[lo: lo + 100 * 512] = cdata[100 * 512:200 * 512]
    assert flat == bytes(expect)
    assert check_vhd(cimg, {pimg.unique_id: pimg}.get) == check_vhd(cimg)  # parent found
    missing = check_vhd(cimg, lambda uid: None)
    assert "vhd-parent-missing" in {f.kind for f in missing}


def test_parent_loop_is_a_finding_not_a_hang():
    a_id, b_id = bytes(range(16)), bytes(range(16, 32))
    a = build_vhd(2 * MIB, {}, layout="qemu", unique_id=a_id, parent=blktap_parent(SR_UUID, "VHD-b", b_id))
    b = build_vhd(2 * MIB, {}, layout="qemu", unique_id=b_id, parent=blktap_parent(SR_UUID, "VHD-a", a_id))
    imgs = {i.unique_id: i for i in (VhdImage.open(BytesSpace(a.data)), VhdImage.open(BytesSpace(b.data)))}
    chain = resolve_chain(imgs[a_id], imgs.get)
    assert not chain.complete and "vhd-parent-loop" in {f.kind for f in chain.findings}
    assert "vhd-parent-loop" in {f.kind for f in check_vhd(imgs[a_id], imgs.get)}
    assert chain.virtual_space().read(0, 2 * MIB) == bytes(2 * MIB)


def test_damaged_primary_footer_rebuilt_from_copy(tmp_path):
    blocks, virtual = blocks_with_stale(4, 4, [1, 2])
    lv_size = 3 * EXTENT
    built = build_vhd(8 * MIB, blocks, layout="blktap", lv_size=lv_size)
    lv = bytearray(built.data)
    lv[-512:] = bytes(512)                   # the inflate journal zeroed the LV end
    img = VhdImage.open(BytesSpace(bytes(lv)))
    assert img.footer_source == "copy"
    assert "vhd-footer-primary-missing" in {f.kind for f in img.findings}
    r = export_vhd(img, str(tmp_path / "r.vhd"))
    assert r.repairs == ["primary footer rebuilt from the copy at offset 0"]
    out = (tmp_path / "r.vhd").read_bytes()
    assert out == built.data[:built.data_end] + built.footer
    lv[-512:] = b"conectix" + bytes(504)     # a garbage footer with the right cookie
    img = VhdImage.open(BytesSpace(bytes(lv)))
    assert img.footer_source == "copy"
    assert "vhd-footer-primary-checksum" in {f.kind for f in img.findings}
    assert img.virtual_space().read(0, len(virtual)) == virtual


def test_damaged_copy_rebuilt_from_primary(tmp_path):
    built = build_vhd(4 * MIB, {0: b"x" * 4096}, layout="qemu")
    data = bytearray(built.data)
    data[64] ^= 0xFF                         # copy at 0: checksum broken
    img = VhdImage.open(BytesSpace(bytes(data)))
    assert img.footer_source == "end"
    r = export_vhd(img, str(tmp_path / "c.vhd"))
    assert any("copy at offset 0" in x for x in r.repairs)
    assert (tmp_path / "c.vhd").read_bytes() == built.data


@pytest.mark.parametrize("layout", ["blktap", "qemu"])
def test_damaged_bat_entries_rebuilt_from_orphan_blocks(tmp_path, layout):
    rng = np.random.default_rng(12)
    blocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (0, 1, 2, 3)}
    built = build_vhd(5 * 2 * MIB, blocks, layout=layout)
    virtual = b"".join(blocks[b] for b in range(4)) + bytes(2 * MIB)
    data = bytearray(built.data)
    table = 1536
    data[table + 4:table + 8] = (0x2).to_bytes(4, "big")           # block 1 -> into metadata
    data[table + 12:table + 16] = (0x7FFFFFF0).to_bytes(4, "big")  # block 3 -> past the end
    img = VhdImage.open(BytesSpace(bytes(data)))
    kinds = {f.kind for f in check_vhd(img)}
    assert {"vhd-bat-entry-in-metadata", "vhd-bat-entry-past-end"} <= kinds
    r = export_raw(img, str(tmp_path / "b.raw"))
    assert len(r.repairs) == 2 and r.unrepaired == []
    assert (tmp_path / "b.raw").read_bytes() == virtual
    rv = export_vhd(img, str(tmp_path / "b.vhd"))
    assert (tmp_path / "b.vhd").read_bytes() == built.data         # the BAT as it was
    assert len(rv.repairs) == 2
    # evidence image object untouched by the repair
    assert int(img.bat[1]) == 0x2


def test_unpairable_bat_damage_is_listed_not_guessed(tmp_path):
    rng = np.random.default_rng(13)
    blocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (0, 1)}
    built = build_vhd(2 * 2 * MIB, blocks, layout="qemu")
    data = bytearray(built.data)
    # block 1's bitmap wiped (no orphan to find) and its entry damaged
    data[built.block_offsets[1]: built.block_offsets[1] + 512] = bytes(512)
    data[1536 + 4:1536 + 8] = (0x7FFFFFF0).to_bytes(4, "big")
    img = VhdImage.open(BytesSpace(bytes(data)))
    r = export_raw(img, str(tmp_path / "u.raw"))
    assert r.repairs == [] and len(r.unrepaired) == 1 and "BAT entry 1" in r.unrepaired[0]
    out = (tmp_path / "u.raw").read_bytes()
    assert out[:2 * MIB] == blocks[0] and out[2 * MIB:] == bytes(2 * MIB)


def test_511_byte_footer_of_old_virtual_pc_files(tmp_path):
    built = build_vhd(4 * MIB, {1: b"v" * 512}, layout="qemu", creator=b"vpc ")
    data = built.data[:-1]                       # 512*n + 511 bytes, footer without its last byte
    img = VhdImage.open(BytesSpace(data))
    assert img.footer_source == "end-511" and img.unique_id == built.unique_id
    assert img.virtual_space().read(2 * MIB, 512) == b"v" * 512
    export_vhd(img, str(tmp_path / "o.vhd"))
    assert (tmp_path / "o.vhd").read_bytes() == built.data


def test_hidden_flag_with_stale_checksum_is_accepted(tmp_path):
    built = build_vhd(2 * MIB, {}, layout="blktap", max_entries=8)
    data = bytearray(built.data)
    for off in (0, len(data) - 512):
        data[off + S.FOOTER_HIDDEN_OFFSET] = 1   # early blktap: checksum not updated
    img = VhdImage.open(BytesSpace(bytes(data)))
    assert img.hidden and img.footer_source == "end"
    kinds = {f.kind for f in check_vhd(img)}
    assert "vhd-footer-hidden-checksum" in kinds and "vhd-footer-checksum" not in kinds


def test_fixed_vhd_truncated_is_reported():
    built = build_vhd(4 * MIB, {0: b"f" * 4096}, layout="fixed")
    img = VhdImage.open(BytesSpace(built.data))
    assert img.disk_type_name == "fixed" and img.virtual_space().read(0, 4096) == b"f" * 4096
    short = built.data[:2 * MIB] + built.data[-512:]
    img = VhdImage.open(BytesSpace(short))
    assert "vhd-fixed-size" in {f.kind for f in check_vhd(img)}


def test_child_of_a_raw_parent_flattens_over_the_raw_lv(tmp_path):
    from core.vhd.build import ParentRef
    from core.vdi import VdiVolume, ResolvedVdi
    raw_lv = "LV-9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a"
    name = dm_name(f"VG_XenStorage-{SR_UUID}", raw_lv)
    raw = bytes(range(256)) * (4 * MIB // 256)
    written = np.zeros(4096, dtype=bool)
    written[0] = True
    child = build_vhd(4 * MIB, {0: (b"C" * 512, written)}, layout="blktap",
                      parent=ParentRef(bytes(16), name), max_entries=16)
    cimg = VhdImage.open(BytesSpace(child.data))
    assert cimg.parent_lv_hint == raw_lv
    vol = VdiVolume("VHD-x", "VHD-x", None)
    vol._image = cimg
    sib = VdiVolume(raw_lv, raw_lv, BytesSpace(raw), kind="raw")
    chain = ResolvedVdi(vol, [sib]).chain()
    assert chain.complete and chain.raw_parent is sib.space
    flat = chain.virtual_space().read(0, 4 * MIB)
    assert flat[:512] == b"C" * 512 and flat[512:] == raw[512:]


def test_stale_footer_of_an_older_vhd_at_the_lv_end_is_not_trusted(tmp_path):
    old = build_vhd(8 * MIB, {0: b"o" * 512}, layout="blktap", lv_size=3 * EXTENT, seed=1)
    new = build_vhd(4 * MIB, {1: b"n" * 4096}, layout="qemu", seed=2)
    lv = bytearray(old.data)
    lv[:len(new.data)] = new.data            # qemu VHD file copied over the start of the LV
    img = VhdImage.open(BytesSpace(bytes(lv)))
    assert img.unique_id == new.unique_id and img.footer_source == "after-data"
    assert "vhd-footer-stale-end" in {f.kind for f in img.findings}
    export_vhd(img, str(tmp_path / "n.vhd"))
    assert (tmp_path / "n.vhd").read_bytes() == new.data


def test_lv_whose_start_another_vhd_took_is_an_identity_conflict():
    mine = build_vhd(8 * MIB, {0: b"m" * 512}, layout="blktap", lv_size=3 * EXTENT, seed=1)
    other = build_vhd(4 * MIB, {0: b"o" * 512}, layout="blktap", lv_size=2 * EXTENT, seed=2)
    lv = bytearray(mine.data)
    lv[:EXTENT] = other.data[:EXTENT]        # a newer LV reused this LV's first extent
    img = VhdImage.open(BytesSpace(bytes(lv)))
    assert img.unique_id == mine.unique_id and img.footer_source == "end"
    conflict = [f for f in img.findings if f.kind == "vhd-footer-identity-conflict"]
    assert conflict and conflict[0].details["copy_unique_id"] == format_uuid(other.unique_id)


def test_blocks_in_unmapped_extents_are_reported(tmp_path):
    """A reconstruction that missed an LE: the blocks there read as zeros, and say so."""
    rng = np.random.default_rng(40)
    blocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in range(4)}
    lv_size = lvhd_lv_size(8 * MIB, 4)
    built = build_vhd(8 * MIB, blocks, layout="blktap", lv_size=lv_size)
    les = lv_size // EXTENT
    src = tmp_path / "d.img"
    src.write_bytes(built.data)
    pes = list(range(les))
    pes[2] = None                                   # LE 2 unknown
    with Evidence(str(src)) as ev:
        img = VhdImage.open(extent_space(ev, 0, EXTENT, pes))
        bad = [f for f in check_vhd(img) if f.kind == "vhd-block-unmapped"]
        hit = sorted(f.details["block"] for f in bad)
        for b in range(4):
            start = built.block_offsets[b]
            end = start + 512 + 2 * MIB
            assert (b in hit) == (start < 3 * EXTENT and end > 2 * EXTENT)
        assert hit
        r = export_raw(img, str(tmp_path / "d.raw"), [str(src)])
        assert any("no map places" in u for u in r.unrepaired)
        pes_full = list(range(les))
        img2 = VhdImage.open(extent_space(ev, 0, EXTENT, pes_full))
        assert not [f for f in check_vhd(img2) if f.kind == "vhd-block-unmapped"]


def test_bitmap_findings():
    none = np.zeros(4096, dtype=bool)
    built = build_vhd(3 * 2 * MIB, {0: (b"z" * 512, none), 2: b"full"}, layout="blktap",
                      max_entries=8)
    img = VhdImage.open(BytesSpace(built.data))
    empty = [f for f in check_vhd(img) if f.kind == "vhd-bitmap-empty"]
    assert len(empty) == 1 and empty[0].details["blocks"] == [0]
    assert img.virtual_space().read(0, 512) == bytes(512)   # stale "z" hidden


@pytest.mark.realtools
def test_blktap_with_stale_sectors_in_inflated_real_lvm_lv(tmp_path):
    """Real lvm2 places the (inflated, non-contiguous) LV; stale bytes under clear bitmap bits
    never reach the export."""
    vsize = 10 * 2 * MIB
    blocks, _ = blocks_with_stale(21, 10, [9, 2, 5, 0])
    virtual = bytearray(vsize)
    for b, v in blocks.items():
        data, written = v if isinstance(v, tuple) else (v, np.ones(4096, dtype=bool))
        arr = np.frombuffer(data, dtype=np.uint8)
        virtual[b * 2 * MIB:(b + 1) * 2 * MIB] = np.where(np.repeat(written, 512), arr, 0).tobytes()
    with lvm_sr(tmp_path) as sr:
        name = "VHD-7e6d5c4b-3a29-4817-a6f5-e4d3c2b1a098"
        sr.lvcreate(name, 2)
        sr.lvcreate("filler", 1)
        sr.lvextend(name, lvhd_lv_size(vsize, 4) // EXTENT + 2)   # inflated beyond need
        lv_size = sr.lv_size(name)
        buf = io.BytesIO()
        built = build_vhd(vsize, blocks, layout="blktap", order=[9, 2, 5, 0], out=buf,
                          lv_size=lv_size)
        assert lv_size - built.data_end > EXTENT
        sr.write_lv(name, buf.getvalue())
        with Evidence(sr.path) as ev:
            img = VhdImage.open(sr.space(ev, name), name=name)
            assert img.footer_offset == lv_size - 512 and img.batmap_valid
            r = export_raw(img, str(tmp_path / "s.raw"), [sr.path])
    assert (tmp_path / "s.raw").read_bytes() == bytes(virtual)
    assert r.sha256 == hashlib.sha256(bytes(virtual)).hexdigest()


def test_builder_is_deterministic_and_streams(tmp_path):
    import tracemalloc
    from collections.abc import Mapping

    a = build_vhd(4 * MIB, {1: b"d" * 100}, layout="blktap", seed=9, max_entries=16)
    b = build_vhd(4 * MIB, {1: b"d" * 100}, layout="blktap", seed=9, max_entries=16)
    c = build_vhd(4 * MIB, {1: b"d" * 100}, layout="blktap", seed=10, max_entries=16)
    assert a.data == b.data and a.unique_id != c.unique_id

    class Lazy(Mapping):
        """64 blocks (128 MiB) produced one at a time."""
        def __getitem__(self, k):
            return bytes([k + 1]) * (2 * MIB)

        def __iter__(self):
            return iter(range(64))

        def __len__(self):
            return 64

    tracemalloc.start()
    try:
        with open(tmp_path / "big.vhd", "wb") as f:
            built = build_vhd(128 * MIB, Lazy(), layout="blktap", out=f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * MIB
    img = VhdImage.open(Evidence(str(tmp_path / "big.vhd")))
    assert img.virtual_space().read(63 * 2 * MIB, 4) == bytes([64]) * 4
    assert built.size == os.path.getsize(tmp_path / "big.vhd")


@pytest.mark.parametrize("layout", ["blktap", "qemu"])
def test_destroyed_dynamic_header_is_rebuilt_from_the_layout(tmp_path, layout):
    rng = np.random.default_rng(50)
    blocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (3, 1)}
    built = build_vhd(5 * 2 * MIB, blocks, layout=layout, order=[3, 1],
                      lv_size=3 * EXTENT if layout == "blktap" else None)
    data = bytearray(built.data)
    data[512:1536] = bytes(1024)                       # header sectors overwritten
    img = VhdImage.open(BytesSpace(bytes(data)))
    kinds = {f.kind for f in img.findings}
    assert {"vhd-header-cookie", "vhd-header-rebuilt"} <= kinds
    virtual = bytes(2 * MIB) + blocks[1] + bytes(2 * MIB) + blocks[3] + bytes(2 * MIB)
    assert img.virtual_space().read(0, len(virtual)) == virtual
    r = export_vhd(img, str(tmp_path / "h.vhd"))
    assert any("header rebuilt" in x for x in r.repairs)
    expect = built.data[:built.data_end] + built.footer
    assert (tmp_path / "h.vhd").read_bytes() == expect   # the very header the producer wrote


def test_destroyed_header_of_a_real_qemu_vhd(tmp_path):
    realtools.need_qemu_img()
    from test_vhd_support import qemu_img, random_raw
    random_raw(tmp_path / "r.raw", 12 << 20, seed=4)
    qemu_img("convert", "-f", "raw", "-O", "vpc", str(tmp_path / "r.raw"), str(tmp_path / "q.vhd"))
    orig = (tmp_path / "q.vhd").read_bytes()
    data = bytearray(orig)
    data[512:1536] = b"\xde\xad" * 512
    img = VhdImage.open(BytesSpace(bytes(data)))
    assert "vhd-header-rebuilt" in {f.kind for f in img.findings}
    export_vhd(img, str(tmp_path / "fixed.vhd"))
    assert (tmp_path / "fixed.vhd").read_bytes() == orig


def test_header_of_a_differencing_disk_is_not_guessed():
    child = build_vhd(4 * MIB, {0: b"c" * 512}, layout="blktap", max_entries=16,
                      parent=blktap_parent(SR_UUID, "VHD-p", bytes(range(16))))
    data = bytearray(child.data)
    data[512:1536] = bytes(1024)
    img = VhdImage.open(BytesSpace(bytes(data)))
    assert "vhd-header-rebuilt" not in {f.kind for f in img.findings}
    assert not img.usable
