"""The shared real-world VHD fixtures (qemu, Windows, VirtualBox creators; a differencing disk
whose parent is missing; bad checksums) give what their PROVENANCE.md describes."""

from __future__ import annotations

import hashlib
import os


from conftest import fixture_bytes
from core.source import Evidence
from core.spaces import BytesSpace
from core.vhd.chain import index_by_unique_id, resolve_chain
from core.vhd.checks import check_vhd
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdImage, format_uuid


def _img(rel: str) -> VhdImage:
    return VhdImage.open(BytesSpace(fixture_bytes(rel), name=os.path.basename(rel)))


def _kinds(findings):
    return {f.kind for f in findings}


def test_ext2_vhd_raw_export_holds_the_ext2_filesystem(fixture_file, tmp_path):
    path = fixture_file("vhd/dfvfs/ext2.vhd.gz")
    with Evidence(str(path)) as ev:
        img = VhdImage.open(ev)
        assert (img.creator, img.creator_version) == ("qemu", (5, 3))
        assert img.virtual_size == 4212736 and img.block_size == 2 << 20
        assert len(img.bat) == 3 and len(img.allocated_blocks) == 1
        assert [f for f in check_vhd(img) if f.severity == "error"] == []
        out = tmp_path / "ext2.raw"
        r = export_raw(img, str(out), [str(path)])
        data = out.read_bytes()
        assert r.bytes == len(data) == 4212736
        assert r.sha256 == hashlib.sha256(data).hexdigest()
        sb = data[1024:2048]
        assert sb[56:58] == b"\x53\xef"                       # ext2 magic
        assert sb[120:136].rstrip(b"\0") == b"ext2_test"      # s_volume_name
        # undamaged: the VHD export is the file itself
        outv = tmp_path / "ext2-out.vhd"
        rv = export_vhd(img, str(outv), [str(path)])
        assert rv.repairs == []
        assert outv.read_bytes() == path.read_bytes()


def test_dfvfs_image_vhd_checksum_mismatch_reported_and_repaired_in_export(tmp_path):
    img = _img("vhd/dfvfs/image.vhd.gz")
    kinds = _kinds(check_vhd(img))
    assert "vhd-footer-checksum" in kinds
    assert format_uuid(img.unique_id).startswith("d49c5c80")
    assert img.virtual_size == 104448
    out = tmp_path / "fixed.vhd"
    r = export_vhd(img, str(out))
    assert any("checksum recomputed" in x for x in r.repairs)
    again = VhdImage.open(BytesSpace(out.read_bytes()))
    assert "vhd-footer-checksum" not in _kinds(check_vhd(again))
    assert again.unique_id == img.unique_id
    # the original (2016) version has a valid checksum and an all-zero id
    orig = _img("vhd/dfvfs@51b8f82/image.vhd.gz")
    orig_kinds = _kinds(check_vhd(orig))
    assert "vhd-footer-checksum" not in orig_kinds
    assert "vhd-footer-null-uuid" in orig_kinds        # vhd-util check: "invalid (NULL) uuid"
    assert orig.unique_id == bytes(16)
    # same data block: same virtual disk
    assert orig.virtual_space().read(0, 104448) == img.virtual_space().read(0, 104448)


def test_dfvfs_image_differential_links_to_image_vhd_by_unique_id():
    child = _img("vhd/dfvfs/image-differential.vhd.gz")
    parent = _img("vhd/dfvfs/image.vhd.gz")
    kinds = _kinds(check_vhd(child))
    assert {"vhd-footer-checksum", "vhd-header-checksum"} <= kinds
    assert child.disk_type_name == "differencing"
    assert child.parent_name == "image.vhd" and child.locators == []
    assert child.parent_unique_id == parent.unique_id
    idx = index_by_unique_id([parent])
    chain = resolve_chain(child, idx.get)
    assert chain.complete and [i.unique_id for i in chain.images] == [child.unique_id,
                                                                        parent.unique_id]
    assert chain.virtual_space().read(0, 104448) == parent.virtual_space().read(0, 104448)


def test_fat_differential_orphan_child(tmp_path):
    img = _img("vhd/dfvfs/fat-differential.vhd.gz")
    assert (img.creator, img.creator_version) == ("win ", (10, 0))
    assert int(img.header.table_offset) == 8192
    assert format_uuid(img.parent_unique_id) == "5fa21a55-f394-aa4d-9958-1951a67d5540"
    texts = {l.platform: l.text for l in img.locators}
    assert texts == {"W2ku": "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd",
                     "W2ru": ".\\fat-parent.vhd"}
    findings = check_vhd(img, find_parent=lambda uid: None)
    missing = [f for f in findings if f.kind == "vhd-parent-missing"]
    assert len(missing) == 1
    assert missing[0].details["parent_unique_id"] == "5fa21a55-f394-aa4d-9958-1951a67d5540"
    assert ".\\fat-parent.vhd" in missing[0].details["locators"]
    chain = resolve_chain(img, lambda uid: None)
    assert not chain.complete
    # the VHD export keeps Windows' 4 KiB padding before the footer: byte-identical
    out = tmp_path / "fd.vhd"
    r = export_vhd(img, str(out))
    assert r.repairs == [] and out.read_bytes() == fixture_bytes("vhd/dfvfs/fat-differential.vhd.gz")
    # raw export without the parent: says so, parent sectors read as zeros
    rr = export_raw(chain, str(tmp_path / "fd.raw"))
    assert rr.bytes == 4194304 and any("not found" in u for u in rr.unrepaired)


def test_virtualbox_vhds(tmp_path):
    empty = _img("vhd/vdisk-tools@51f5b39/dynamic.vhd")
    assert (empty.creator, empty.creator_version) == ("vbox", (6, 1))
    assert empty.virtual_size == 4194304 and len(empty.allocated_blocks) == 0
    assert empty.footer_offset == 2048
    assert [f for f in check_vhd(empty) if f.severity == "error"] == []
    r = export_raw(empty, str(tmp_path / "empty.raw"))
    assert r.sha256 == hashlib.sha256(bytes(4194304)).hexdigest()
    assert os.stat(tmp_path / "empty.raw").st_blocks == 0     # all holes

    hello = _img("vhd/vdisk-tools@3063fb8/dynamic.vhd.gz")
    assert list(hello.allocated_blocks) == [0]
    out = tmp_path / "hello.raw"
    export_raw(hello, str(out))
    data = out.read_bytes()
    assert b"hello, world!" in data[:512]
    # only sector 0's bitmap bit is set: the rest of block 0 reads as zeros
    assert not any(data[512:])
