"""core.spaces: run lists, LV extent spaces, map run conversions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.spaces import (ByteSpace, BytesSpace, Run, RunList, extent_space, map_runs_to_pes,
                         pes_to_map_runs)

BASE = BytesSpace(bytes(range(256)) * 16)   # 4 KiB


def test_runlist_reads_runs_and_zero_gaps():
    rl = RunList(BASE, [Run(0, 10, 100), Run(20, 5, None), Run(30, 10, 0)], size=50, name="x")
    data = BASE.read(0, 4096)
    got = rl.read(0, 50)
    assert got == data[100:110] + bytes(20) + data[0:10] + bytes(10)
    assert rl.read(5, 10) == data[105:110] + bytes(5)
    assert rl.read(45, 100) == bytes(5)
    assert rl.locate(3) == 103 and rl.locate(15) is None and rl.locate(22) is None
    assert rl.locate(35) == 5 and rl.locate(49) is None
    assert list(rl.pieces(8, 25)) == [(8, 2, 108), (10, 10, None), (20, 5, None), (25, 5, None),
                                     (30, 3, 0)]
    assert isinstance(rl, ByteSpace)
    with pytest.raises(ValueError):
        rl.read(-1, 2)


def test_overlapping_runs_rejected():
    with pytest.raises(ValueError, match="overlapping"):
        RunList(BASE, [Run(0, 10, 0), Run(5, 10, 100)])


def test_extent_space_merges_contiguous_extents():
    sp = extent_space(BASE, data_offset=256, extent_bytes=128, pes=[0, 1, None, 5, 6, 2])
    assert [(r.start, r.length, r.target) for r in sp.runs] == \
        [(0, 256, 256), (384, 256, 256 + 5 * 128), (640, 128, 256 + 2 * 128)]
    assert sp.size == 6 * 128
    assert sp.read(256, 128) == bytes(128)
    assert sp.read(384, 4) == BASE.read(256 + 640, 4)
    assert sp.locate(130) == 256 + 130


def test_runlist_past_base_end_reads_zeros():
    rl = RunList(BytesSpace(b"abc"), [Run(0, 10, 0)])
    assert rl.read(0, 10) == b"abc" + bytes(7)


def test_map_run_conversions():
    pes = [12, 13, 14, 40, None, 7]
    runs = pes_to_map_runs(pes)
    assert runs == [[0, 12, 3], [3, 40, 1], [5, 7, 1]]
    assert map_runs_to_pes(runs, 6) == pes
    assert map_runs_to_pes(runs) == pes
    assert map_runs_to_pes([[0, 5, 2]], le_count=1) == [5]   # clipped to le_count


@given(st.lists(st.one_of(st.none(), st.integers(0, 1000)), max_size=60))
@settings(max_examples=100, deadline=None)
def test_map_runs_round_trip(pes):
    runs = pes_to_map_runs(pes)
    assert map_runs_to_pes(runs, len(pes)) == pes
    for a, b in zip(runs, runs[1:]):   # maximal: consecutive runs never continue each other
        assert not (a[0] + a[2] == b[0] and a[1] + a[2] == b[1])


@given(st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(0, 3000))),
                max_size=12),
       st.integers(0, 200), st.integers(0, 200))
@settings(max_examples=100, deadline=None)
def test_runlist_read_matches_bytewise_model(spec, off, n):
    runs, pos = [], 0
    for gap, tgt in spec:
        pos += gap
        runs.append(Run(pos, 7, tgt))
        pos += 7
    rl = RunList(BASE, runs, size=pos + 3)
    full = BASE.read(0, 4096)
    model = bytearray(rl.size)
    for r in runs:
        if r.target is not None:
            chunk = full[r.target:r.target + r.length]
            model[r.start:r.start + len(chunk)] = chunk
    assert rl.read(off, n) == bytes(model[off:off + n])
    assert sum(p[1] for p in rl.pieces(off, n)) == max(0, min(rl.size, off + n) - off)


def test_compact_ranges():
    from core.spaces import compact_ranges

    assert compact_ranges([3, 1, 2, 7, 9, 8, 8]) == "1-3,7-9"
    assert compact_ranges([5], ", ") == "5"
    assert compact_ranges([]) == ""
    assert compact_ranges([1, 3, 4], ", ") == "1, 3-4"
