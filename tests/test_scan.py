"""The scan engine (core.scan) with test kinds: exact offsets against a brute-force search,
window edges, sparse files, ranges, cancellation, progress, the evidence left untouched."""

from __future__ import annotations

import os
import random
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core.errors import Cancelled
from core.kinds import Kind, Verdict
from core.scan import ScanResult, UnknownKindError, scan
from core.source import Evidence


def _accept(data, offset, read):
    return Verdict(True, len(data), {"head": data[:4].hex()})


def _reject_odd(data, offset, read):
    # a verify that reads beyond its data and rejects some candidates
    more = read(offset, 16)
    if more[-1] % 2:
        return None
    return Verdict(more[-2] % 3 == 0, 16, {})


K_FOOT = Kind("t-foot", "8-byte magic at 0", _accept, magic=b"ftMAGIC1")
K_MDA = Kind("t-mda", "16-byte magic at 4", _accept, magic=b" TEST2 x[5A%r0N*", magic_offset=4)
K_TAIL = Kind("t-tail", "2-byte magic at 510", _accept, magic=b"\x5a\xa5", magic_offset=510)
K_FAR = Kind("t-far", "magic in the structure's 3rd sector, 4 KiB aligned", _accept,
             magic=b"FARMAGIC", magic_offset=1024 + 100, align=4096, length=2048)
K_BYTE = Kind("t-byte", "align-1 magic", _accept, magic=b"Rz!\x1a\x07\x00", align=1, length=64)
K_BYTE2 = Kind("t-byte2", "align-1 magic sharing a prefix", _reject_odd,
               magic=b"Rz!\x1a\x07\x01\x00", align=1, length=64)
K_SHORT = Kind("t-short", "two-byte align-1 magic", _accept, magic=b"\xfe\xed", align=1)
ALL = [K_FOOT, K_MDA, K_TAIL, K_FAR, K_BYTE, K_BYTE2]


def brute_force(data: bytes, kinds, start=0, end=None) -> list[tuple[int, str]]:
    """Every structure start whose magic matches, by a plain Python search (the reference)."""
    end = len(data) if end is None else end
    out = []
    for k in kinds:
        i = data.find(k.magic)
        while i >= 0:
            s = i - k.magic_offset
            if s >= 0 and s % k.align == 0 and start <= s < end:
                v = k.verify(data[s:s + k.length], s, lambda o, n: data[o:o + n])
                if v is not None:
                    out.append((s, k.name))
            i = data.find(k.magic, i + 1)
    return sorted(out)


def plant(buf: bytearray, kind: Kind, start: int) -> None:
    p = start + kind.magic_offset
    buf[p:p + len(kind.magic)] = kind.magic


def found(result: ScanResult) -> list[tuple[int, str]]:
    return sorted((f.offset, f.kind) for f in result.findings)


def write(tmp_path, data: bytes, name="img") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def random_image(seed: int, size: int, n_structs: int = 60) -> bytearray:
    rng = random.Random(seed)
    buf = bytearray(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    for _ in range(n_structs):
        k = rng.choice(ALL)
        start = rng.randrange(0, size - 4096)
        start -= start % k.align
        plant(buf, k, start)
    return buf


@pytest.mark.parametrize("window", [4096, 8192, 65536])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exact_offsets_match_brute_force(tmp_path, window, seed):
    data = random_image(seed, 300_000)
    path = write(tmp_path, bytes(data))
    with Evidence(path) as ev:
        res = scan(ev, ALL, window=window)
    assert found(res) == brute_force(bytes(data), ALL)
    assert [f.offset for f in res.findings] == sorted(f.offset for f in res.findings)
    assert sum(res.counts.values()) == len(res.findings)


def test_structures_straddling_window_edges_found_once(tmp_path):
    window = 4096
    size = 10 * window
    buf = bytearray(size)
    expected = []
    # a magic that begins before the edge and ends after it, for every kind shape
    plant(buf, K_BYTE, 2 * window - 3); expected.append((2 * window - 3, "t-byte"))
    plant(buf, K_BYTE2, 3 * window - 1); expected.append((3 * window - 1, "t-byte2"))
    plant(buf, K_MDA, 4 * window - 512); expected.append((4 * window - 512, "t-mda"))
    plant(buf, K_TAIL, 5 * window - 512); expected.append((5 * window - 512, "t-tail"))
    # structure starts in window 6, magic lies in window 7
    plant(buf, K_FAR, 6 * window); expected.append((6 * window, "t-far"))
    plant(buf, K_FOOT, 8 * window); expected.append((8 * window, "t-foot"))  # exactly on an edge
    plant(buf, K_FOOT, size - 512); expected.append((size - 512, "t-foot"))  # last sector
    path = write(tmp_path, bytes(buf))
    with Evidence(path) as ev:
        res = scan(ev, ALL, window=window)
    got = [(f.offset, f.kind) for f in res.findings if f.kind != "t-byte2" or f.valid or True]
    exp = [e for e in sorted(expected)
           if e[1] != "t-byte2" or brute_force(bytes(buf), [K_BYTE2]) == [e]]
    assert sorted(got) == exp
    assert sorted(got) == brute_force(bytes(buf), ALL)


def test_sparse_image_holes_skipped_and_offsets_exact(tmp_path):
    path = str(tmp_path / "sparse.img")
    size = 64 << 20
    places = [(0, K_FOOT), (5 << 20, K_MDA), ((20 << 20) + 4096 - 2, K_BYTE),
              ((40 << 20) + 512 * 7, K_TAIL), (size - 8192, K_FAR)]
    with open(path, "wb") as f:
        f.truncate(size)
        for off, k in places:
            piece = bytearray(8192)
            rel = off % 4096
            plant(piece, k, rel)
            f.seek(off - rel)
            f.write(piece)
    data = open(path, "rb").read()
    with Evidence(path) as ev:
        ranges = ev.data_ranges()
        res = scan(ev, ALL, window=1 << 20)
    assert sum(b - a for a, b in ranges) < size // 100        # really sparse
    assert found(res) == brute_force(data, ALL) == sorted((o, k.name) for o, k in places)


def test_range_limits_structure_starts(tmp_path):
    data = random_image(7, 200_000)
    path = write(tmp_path, bytes(data))
    with Evidence(path) as ev:
        res = scan(ev, ALL, start=50_000, end=150_000, window=8192)
    assert res.scanned == (50_000, 150_000)
    assert found(res) == brute_force(bytes(data), ALL, 50_000, 150_000)
    with Evidence(path) as ev:  # a range past the end scans nothing
        assert scan(ev, ALL, start=10 << 20).findings == []


def test_short_magic_and_kind_names(tmp_path):
    buf = bytearray(20000)
    for off in (0, 777, 4095, 4097, 19998):
        buf[off:off + 2] = K_SHORT.magic
    path = write(tmp_path, bytes(buf))
    with Evidence(path) as ev:
        res = scan(ev, [K_SHORT], window=4096)
    assert [f.offset for f in res.findings] == [0, 777, 4095, 4097, 19998]
    with Evidence(path) as ev, pytest.raises(UnknownKindError, match="valid kinds"):
        scan(ev, ["no-such-kind"])


def test_cancel_and_progress(tmp_path):
    path = write(tmp_path, bytes(random_image(4, 1 << 20)))
    cancel = threading.Event()
    cancel.set()
    with Evidence(path) as ev, pytest.raises(Cancelled):
        scan(ev, ALL, cancel=cancel, window=4096)
    updates = []
    cancel2 = threading.Event()

    def progress(u):
        updates.append(u)
        if len(updates) == 1 and u.done < u.total:
            cancel2.set()               # cancel while running: stops at the next tick

    with Evidence(path) as ev, pytest.raises(Cancelled):
        scan(ev, ALL, cancel=cancel2, window=4096, progress=progress)
    updates.clear()
    with Evidence(path) as ev:
        scan(ev, ALL, window=4096, progress=updates.append)
    assert updates and updates[-1].done == updates[-1].total == 1 << 20


def test_verify_errors_become_invalid_findings_and_cap(tmp_path):
    def broken(data, offset, read):
        raise ValueError("garbage")

    k = Kind("t-broken", "", broken, magic=b"ftMAGIC1")
    buf = bytearray(8192)
    for off in range(0, 8192, 512):
        plant(buf, k, off)
    path = write(tmp_path, bytes(buf))
    with Evidence(path) as ev:
        res = scan(ev, [k], max_findings=5)
    assert len(res.findings) == 5 and res.counts == {"t-broken": 16} and res.truncated
    assert all(not f.valid and "garbage" in f.details["error"] for f in res.findings)
    assert res.to_json("x")["truncated"] is True


def test_evidence_unchanged(tmp_path):
    path = write(tmp_path, bytes(random_image(5, 100_000)))
    before = (open(path, "rb").read(), os.stat(path).st_mtime_ns)
    with Evidence(path) as ev:
        scan(ev, ALL)
        scan(ev)
    assert (open(path, "rb").read(), os.stat(path).st_mtime_ns) == before


def test_json_document_shape(tmp_path):
    buf = bytearray(4096)
    plant(buf, K_FOOT, 1024)
    path = write(tmp_path, bytes(buf))
    with Evidence(path) as ev:
        doc = scan(ev, [K_FOOT]).to_json(path)
    assert doc["image"] == {"path": path, "bytes": 4096}
    assert doc["scanned"] == [0, 4096] and doc["unreadable"] == []
    assert doc["findings"] == [{"kind": "t-foot", "offset": 1024, "bytes": 512, "valid": True,
                                "details": {"head": b"ftMA".hex()}}]
    assert doc["counts"] == {"t-foot": 1} and isinstance(doc["seconds"], float)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=6000), st.lists(st.integers(0, 6000), max_size=8),
       st.sampled_from([512, 1024, 4096]))
def test_garbage_scans_like_brute_force(tmp_path, blob, spots, window):
    buf = bytearray(blob)
    for i, off in enumerate(spots):
        k = ALL[i % len(ALL)]
        if off + k.magic_offset + len(k.magic) <= len(buf):
            plant(buf, k, off)
    path = write(tmp_path, bytes(buf), "g.img")
    with Evidence(path) as ev:
        res = scan(ev, ALL, window=window)
    assert found(res) == brute_force(bytes(buf), ALL)


def test_unreadable_sectors_are_reported_and_skipped(tmp_path, monkeypatch):
    """A failing disk (every read goes through `_pread_raw`): the bad range reads as zeros, is
    listed in `unreadable`, and the structures elsewhere are still found."""
    buf = bytearray(64 * 1024)
    plant(buf, K_FOOT, 4096)
    plant(buf, K_FOOT, 40960)                      # inside the bad range
    plant(buf, K_MDA, 60 * 1024)
    path = write(tmp_path, bytes(buf))
    bad = (40960, 41984)
    with Evidence(path) as ev:
        real = ev._pread_raw

        def pread(offset, length):
            if offset < bad[1] and offset + length > bad[0]:
                raise OSError(5, "Input/output error")
            return real(offset, length)

        monkeypatch.setattr(ev, "_pread_raw", pread)
        res = scan(ev, [K_FOOT, K_MDA], window=16384)
    assert res.unreadable == [bad]
    assert found(res) == [(4096, "t-foot"), (60 * 1024, "t-mda")]
    assert res.to_json("x")["unreadable"] == [[40960, 41984]]


def test_image_ending_mid_sector(tmp_path):
    buf = bytearray(700)
    plant(buf, K_FOOT, 512)                        # in a partial last sector
    plant(buf, K_BYTE2, 690)                       # an align-1 magic in the last bytes
    path = write(tmp_path, bytes(buf))
    with Evidence(path) as ev:
        res = scan(ev, [K_FOOT, K_BYTE2])
    assert found(res) == brute_force(bytes(buf), [K_FOOT, K_BYTE2])
    assert (512, "t-foot") in found(res)
