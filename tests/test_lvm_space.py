"""Unit and hypothesis tests for the pieces issue 12 added: `--pv-offset` parsing, several
images as one space (core.evidence_set), VG-wide PE numbers and the LV-as-bytes path
(core.lvm.space), sm journal names (core.xen)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import SrsalvageError
from core.evidence_set import ALIGN, EvidenceSet
from core.lvm.anchor import PvOffset
from core.lvm.space import pes_space, space_of_locations, vg_pe_location, vg_pes
from core.source import Evidence
from core.spaces import BytesSpace
from core.xen import JOURNAL_RE

E = 4096


@pytest.mark.parametrize("text,pv,offset", [
    ("1048576", None, 1 << 20), ("1MiB", None, 1 << 20), ("2048s", None, 1 << 20),
    ("pv0=0x100000", "pv0", 1 << 20), ("VG_XenStorage-x/pv1=12m", "VG_XenStorage-x/pv1", 12 << 20),
    ("abc-def=0", "abc-def", 0)])
def test_pv_offset_parses(text, pv, offset):
    got = PvOffset.parse(text)
    assert (got.pv, got.offset) == (pv, offset)


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_pv_offset_garbage_is_one_line_error(text):
    try:
        got = PvOffset.parse(text)
    except SrsalvageError as exc:
        assert "\n" not in str(exc)
    else:
        assert got.offset >= 0


@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=4),
       st.integers(0, 12000), st.integers(0, 5000))
@settings(max_examples=60, deadline=None)
def test_evidence_set_reads_images_end_to_end(tmp_path_factory, blobs, offset, length):
    tmp = tmp_path_factory.mktemp("set")
    paths = []
    for i, b in enumerate(blobs):
        p = tmp / f"{i}.img"
        p.write_bytes(b)
        paths.append(str(p))
    with EvidenceSet.open(paths) as ev:
        flat = bytearray()
        for (start, member), b in zip(ev.members, blobs):
            assert start % ALIGN == 0 and start >= len(flat)
            flat += bytes(start - len(flat)) + b
        assert ev.size == len(flat)
        assert ev.read(offset, length) == bytes(flat[offset:offset + length])
        for (start, member), b in zip(ev.members, blobs):
            assert ev.locate(start) == (member.path, 0)
        seen = {off: bytes(view) for off, view in ev.windows(window=1 << 20)}
        for (start, _), b in zip(ev.members, blobs):
            if any(b):
                assert seen[start][:len(b)] == b


def _vg(pvs):
    return SimpleNamespace(name="vg", extent_bytes=E, data_offset=pvs[0][1] + pvs[0][2],
                           pvs=[SimpleNamespace(name=n, offset=o, pe_start=s, pe_count=c)
                                for n, o, s, c in pvs])


def test_two_pv_lv_reads_each_extent_from_its_pv():
    disk = bytearray(64 * E)
    for i in range(64):
        disk[i * E:(i + 1) * E] = bytes([i]) * E
    base = BytesSpace(bytes(disk))
    vg = _vg([("pv0", 0, 2 * E, 10), ("pv1", 20 * E, 3 * E, 10)])
    lv = SimpleNamespace(name="lv", locations=lambda: [("pv0", 1), ("pv1", 1), None, ("pv1", 0)],
                         pes=lambda: [1, 1, None, 0])
    numbers = vg_pes(vg, lv)
    assert numbers == [1, 11, None, 10]
    assert [vg_pe_location(vg, n) for n in numbers] == [("pv0", 1), ("pv1", 1), None, ("pv1", 0)]
    space = pes_space(base, vg, numbers, "lv")
    got = space.read(0, 4 * E)
    assert got == bytes([3]) * E + bytes([24]) * E + bytes(E) + bytes([23]) * E
    assert space.locate(E) == 24 * E


def test_unplaced_pv_reads_zeros_and_is_named():
    vg = _vg([("pv0", 0, E, 4), ("pv1", None, E, 4)])
    space = space_of_locations(BytesSpace(bytes(8 * E)), vg, [("pv0", 0), ("pv1", 0)], E)
    assert space.unplaced_les == [1]
    with pytest.raises(SrsalvageError):
        space_of_locations(BytesSpace(b""), SimpleNamespace(name="v", pvs=[], data_offset=None),
                           [("pv0", 0)], E)


@pytest.mark.parametrize("name,op", [
    ("inflate_0b1c2d3e-0000-4000-8000-000000000001_12582912", "inflate"),
    ("clone_0b1c2d3e-0000-4000-8000-000000000001_1", "clone"),
    ("VHD-0b1c2d3e-0000-4000-8000-000000000001", None), ("MGT", None),
    ("inflate_notauuid_1", None)])
def test_journal_names(name, op):
    m = JOURNAL_RE.fullmatch(name)
    assert (m.group(1) if m else None) == op
