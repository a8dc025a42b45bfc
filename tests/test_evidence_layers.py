"""Unreadable disk ranges carried up the layers (core.evidence.layers): LV run lists, VHD
dynamic and differencing disks, checked against byte-by-byte brute force and built VHDs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from core.evidence.layers import merge, unreadable_in
from core.source import Evidence
from core.spaces import Run, RunList
from core.vhd.build import ParentRef, build_vhd
from core.vhd.chain import resolve_chain
from core.vhd.reader import VhdImage

MiB = 1 << 20


class _Disk:
    """A small in-memory 'evidence' with unreadable ranges (it has `unreadable` and `windows`)."""

    def __init__(self, size: int, unreadable) -> None:
        self.size = size
        self.unreadable = merge(unreadable)
        self.windows = None

    def read(self, offset: int, length: int) -> bytes:
        return bytes(max(0, min(self.size, offset + length) - offset))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_runlist_ranges_equal_brute_force(data):
    size = 512
    disk_bad = data.draw(st.lists(st.tuples(st.integers(0, size), st.integers(0, 40)), max_size=6))
    bad = [(a, min(size, a + n)) for a, n in disk_bad]
    disk = _Disk(size, bad)
    # an LV of up to 8 runs of 16-byte 'extents' over the disk, some unmapped
    pes = data.draw(st.lists(st.one_of(st.none(), st.integers(0, size // 16 - 1)), max_size=12))
    runs = [Run(i * 16, 16, None if pe is None else pe * 16) for i, pe in enumerate(pes)]
    lv = RunList(disk, runs, size=len(pes) * 16)
    bad_bytes = np.zeros(size, bool)
    for a, b in disk.unreadable:
        bad_bytes[a:b] = True
    want = [i for i in range(lv.size) if lv.locate(i) is not None and bad_bytes[lv.locate(i)]]
    got = [i for a, b in unreadable_in(lv) for i in range(a, b)]
    assert got == want


def _image(tmp_path, parts):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        for offset, data in parts:
            f.seek(offset)
            f.write(data)
    return Evidence(str(path))


def test_differencing_chain_parent_bytes_count_only_where_the_child_has_none(tmp_path):
    bs = 2 * MiB
    parent = build_vhd(8 * MiB, {0: b"\x11" * bs, 1: b"\x22" * bs}, seed=1)
    half = np.zeros(bs // 512, bool)
    half[: bs // 1024] = True                       # the child holds the first half of block 0
    child = build_vhd(8 * MiB, {0: (b"\x33" * bs, half)}, seed=2,
                      parent=ParentRef(parent.unique_id, "parent.vhd"))
    P, C = 0, 16 * MiB
    ev = _image(tmp_path, [(P, parent.data), (C, child.data)])
    try:
        pspace = RunList(ev, [Run(0, len(parent.data), P)])
        cspace = RunList(ev, [Run(0, len(child.data), C)])
        pimg, cimg = VhdImage.open(pspace), VhdImage.open(cspace)
        chain = resolve_chain(cimg, lambda uid: pimg if uid == pimg.unique_id else None)
        virtual = chain.virtual_space()
        p0 = P + parent.block_offsets[0] + 512            # parent block 0 data on the disk
        ev._record_unreadable(p0, p0 + bs)                  # all of it unreadable
        assert unreadable_in(virtual) == [(bs // 2, bs)]    # the child covers the first half
        assert unreadable_in(pimg.virtual_space()) == [(0, bs)]
        # the child's bitmap of block 0 unreadable: the whole block is unknown
        c_bm = C + child.block_offsets[0]
        ev._record_unreadable(c_bm, c_bm + 512)
        assert unreadable_in(virtual) == [(0, bs)]
        # a BAT entry unreadable (parent's block 1): that block is unknown in the parent and,
        # as the child holds nothing there, in the child's virtual disk too
        bat1 = P + parent.table_offset + 4
        ev._record_unreadable(bat1, bat1 + 4)
        assert unreadable_in(virtual) == [(0, 2 * bs)]
        # unreadable bytes the child's bitmap says are not written do not matter
        ev.unreadable = []
        c0 = C + child.block_offsets[0] + 512
        ev._record_unreadable(c0 + bs - 4096, c0 + bs)      # in the child's unwritten half
        assert unreadable_in(virtual) == []
        ev._record_unreadable(c0, c0 + 4096)                # in its written half
        assert unreadable_in(virtual) == [(0, 4096)]
    finally:
        ev.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 50)), max_size=10),
       st.integers(0, 1100), st.integers(0, 200))
def test_unreadable_in_clips_like_brute_force(bad, start, length):
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        f.write(bytes(1100))
        f.flush()
        ev = Evidence(f.name)
        ev.unreadable = merge((a, a + n) for a, n in bad)
        end = start + length
        want = [(max(a, start), min(b, end)) for a, b in ev.unreadable if a < end and b > start]
        assert ev.unreadable_in(start, end) == want
        ev.close()
