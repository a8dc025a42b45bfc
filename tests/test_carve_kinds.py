"""The carvers' scan kinds (in core.scan's table of kinds) inside the one-pass scan: mssql-page only when
asked for (group "carve", not a default kind), rar4/rar5 at any byte offset (SFX)."""

from __future__ import annotations

import random

import pytest

from conftest import SHARED_FIXTURES, fixture_bytes
from core.scan import available_kinds
from core.source import Evidence


def test_kinds_registered():
    kinds = available_kinds()
    page, r4, r5 = kinds["mssql-page"], kinds["rar4"], kinds["rar5"]
    assert page.prefilter is not None and page.default is False and page.group == "carve"
    assert page.align == 512 and page.length == 8192
    assert r4.align == 1 and r5.align == 1 and r4.group == r5.group == "carve"


def test_scan_finds_pages_and_archives(tmp_path):
    scan_mod = pytest.importorskip("core.scan")
    data = fixture_bytes("mdf/dotnetnuke/Database.mdf.gz")
    sfx = fixture_bytes("rar/rarfile/rar3-seektest.sfx")
    rng = random.Random(4)
    pages = [data[i:i + 8192] for i in range(0, len(data), 8192)
             if data[i:i + 8192].count(0) != 8192]
    image = bytearray(rng.randbytes(1536))
    page_offsets = []
    for p in pages[:40]:
        page_offsets.append(len(image))
        image += p + rng.randbytes(512)
    sfx_at = len(image) + 3
    image += b"abc" + sfx + rng.randbytes(999)
    img = tmp_path / "d.img"
    img.write_bytes(bytes(image))
    with Evidence(str(img)) as ev:
        default = scan_mod.scan(ev)
        carve = scan_mod.scan(ev, kinds=["mssql-page", "rar4", "rar5"])
    assert not any(f.kind == "mssql-page" for f in default.findings)
    found_pages = [f for f in carve.findings if f.kind == "mssql-page"]
    assert [f.offset for f in found_pages] == page_offsets
    assert all(f.valid and f.bytes == 8192 for f in found_pages)
    assert {f.details["file_id"] for f in found_pages} == {1}
    rars = [f for f in carve.findings if f.kind == "rar4"]
    assert [f.offset for f in rars] == [sfx_at + 728000]
    assert rars[0].valid and rars[0].details["files"] == 2 and rars[0].bytes == 2253


def test_sparse_vdi_windows_skip_absent_blocks():
    """A 64 GiB VHD virtual disk with one allocated block: only that block is read."""
    from core.carve.rar import carve_rar
    from core.spaces import BytesSpace
    from core.vhd.build import build_vhd
    from core.vhd.reader import VhdImage
    rar = fixture_bytes("rar/rarfile/rar5-solid.rar")
    block = bytearray(2 << 20)
    block[1000: 1000 + len(rar)] = rar
    built = build_vhd(64 << 30, {20000: bytes(block)}, layout="qemu")
    space = VhdImage.open(BytesSpace(built.data)).virtual_space()
    result = carve_rar(space, None)
    assert [a.offset for a in result.archives] == [20000 * (2 << 20) + 1000]
    assert result.archives[0].complete
