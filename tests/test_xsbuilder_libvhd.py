"""The libvhd / tapdisk model of tests/xsbuilder on a plain file (no root, no lvm2).

What blktap does on LVM, checked byte by byte: a new block gets only its alignment gap and
bitmap sector zeroed (block-vhd.c update_bat / schedule_zero_bm_write), so unwritten sectors
keep what the LV held; blocks are placed in write order on the page lattice
(reserve_new_block); footers go to the LV end and offset 0 (vhd_write_footer on a block
device), `modify -s` writes one footer at the new end only (vhd_set_phys_size); libvhd's
vhd_io_write zero-fills a partly written new block (vhd-util coalesce). qemu-img reads what
the model wrote.
"""

from __future__ import annotations

import random
import subprocess

import numpy as np
import pytest

from core.structs import vhd as S
from xsbuilder import libvhd as L

E = 4 << 20


class FileSr:
    """One LV over consecutive PEs of a scratch file (what Lv needs from an SR)."""

    def __init__(self, path, n_pes: int, fill: bytes = b"\xa5"):
        self.extent = E
        self.image = open(path, "w+b")
        self.image.write(fill * (n_pes * E))
        self.maps = {"lv": list(range(n_pes))}

    def pe_offset(self, pe: int) -> int:
        return pe * E


@pytest.fixture
def lv(tmp_path):
    sr = FileSr(tmp_path / "lv.bin", 12)
    yield L.Lv(sr, "lv")
    sr.image.close()


def test_create_lays_out_metadata_as_libvhd(lv):
    v = L.vhd_create(lv, 40 << 20, bytes(range(16)), 0x2F000000)
    ftr = lv.read(0, 512)
    assert lv.read(lv.size - 512, 512) == ftr
    f = S.parse_footer(ftr)
    assert f.crtr_app == b"tap\0" and f.crtr_ver == 0x00010003 and f.curr_size == 40 << 20
    h = S.parse_header(lv.read(512, 1024))
    assert h.table_offset == 1536 and h.max_bat_size == (2 << 40) // (2 << 20)
    bm = S.parse_batmap_header(lv.read(L.BATMAP_HDR_OFF, 512))
    assert bm.cookie == b"tdbatmap" and bm.batmap_offset == L.BATMAP_HDR_OFF + 512
    # the first block's bitmap at sector 8455: data on a 4 KiB boundary after the batmap
    assert -(-v.end_of_headers() // 512) == 8452


def test_tapdisk_on_lvm_leaves_unwritten_sectors_stale(lv):
    v = L.vhd_create(lv, 40 << 20, bytes(range(16)), 0x2F000000)
    tap = L.TapdiskSession(lv, v)
    tap.write(4096 * 3 + 8, b"\x11" * 4096)          # block 3 first: allocation order
    tap.write(0, b"\x22" * 512)                       # then block 0
    tap.close()
    assert int(v.bat[3]) == 8455 and int(v.bat[0]) == 8455 + 4104
    base = int(v.bat[3]) * 512
    assert lv.read(base - 3 * 512, 3 * 512) == bytes(3 * 512)       # gap zeroed
    bitmap = np.unpackbits(np.frombuffer(lv.read(base, 512), np.uint8))
    assert bitmap[8:16].all() and bitmap.sum() == 8
    assert lv.read(base + 512 + 8 * 512, 4096) == b"\x11" * 4096
    assert lv.read(base + 512, 8 * 512) == b"\xa5" * 4096            # never written: stale
    assert lv.read(base + 512 + 16 * 512, 512) == b"\xa5" * 512
    assert L.S.parse_bat(lv.read(1536, 16))[:4].tolist() == [8455 + 4104, 0xFFFFFFFF,
                                                              0xFFFFFFFF, 8455]


def test_set_phys_size_writes_one_footer_at_the_new_end(lv):
    v = L.vhd_create(lv, 40 << 20, bytes(range(16)), 0x2F000000)
    end_before = lv.read(lv.size - 512, 512)
    L.vhd_set_phys_size(lv, v, 8 << 20)
    assert lv.read((8 << 20) - 512, 512) == v.footer()
    assert lv.read(lv.size - 512, 512) == end_before        # the old one stays
    L.vhd_set_virt_size_fast(lv, v, 60 << 20)
    assert S.parse_footer(lv.read(0, 512)).curr_size == 60 << 20
    assert S.parse_footer(lv.read((8 << 20) - 512, 512)).curr_size == 40 << 20
    with pytest.raises(ValueError):
        L.vhd_set_phys_size(lv, v, 4 << 20)                # below the physical size


def test_io_write_zero_fills_a_partly_written_block(lv):
    v = L.vhd_create(lv, 40 << 20, bytes(range(16)), 0x2F000000)
    L.vhd_io_write(lv, v, 4096 * 2 + 100, b"\x33" * 512)
    base = int(v.bat[2]) * 512
    data = lv.read(base + 512, 2 << 20)
    assert data[100 * 512:101 * 512] == b"\x33" * 512
    assert data.count(0) == len(data) - 512
    L.vhd_io_write(lv, v, 4096 * 5, b"\x44" * (2 << 20))  # a whole block: nothing zeroed
    assert v.batmap[5] and v.bitmaps[5].all()


def test_qemu_img_reads_the_model(tmp_path, lv):
    if subprocess.run(["which", "qemu-img"], capture_output=True).returncode:
        pytest.skip("qemu-img not installed")
    rng = random.Random(5)
    v = L.vhd_create(lv, 24 << 20, bytes(range(16)), 0x2F000000)
    tap = L.TapdiskSession(lv, v)
    want = bytearray(24 << 20)
    for _ in range(40):
        sec = rng.randrange(0, (24 << 20) // 512 - 64)
        data = rng.randbytes(rng.randint(1, 64) * 512)
        tap.write(sec, data)
        want[sec * 512:sec * 512 + len(data)] = data
    tap.close()
    src = tmp_path / "x.vhd"
    src.write_bytes(lv.read(0, lv.size))
    out = tmp_path / "x.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(src), str(out)],
                   check=True)
    got = np.fromfile(out, np.uint8)[: 24 << 20].reshape(-1, 512)
    ref = np.frombuffer(bytes(want), np.uint8).reshape(-1, 512)
    read = L.virtual_read([(lv, v)], 24 << 20)
    assert read == bytes(want)                              # the model reads its own writes
    written = np.zeros(len(ref), bool)
    for blk in v.allocated():
        written[blk * 4096:(blk + 1) * 4096] = v.bitmaps[blk]
    assert (got[written] == ref[written]).all()            # qemu-img agrees where written
    assert (got[~written] != ref[~written]).any()          # and shows the stale bytes
