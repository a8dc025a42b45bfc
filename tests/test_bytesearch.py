"""core.bytesearch.find_all equals a brute-force search, on the memmem path and the re fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import bytesearch
from core.bytesearch import find_all


def brute(data: bytes, needle: bytes) -> list[int]:
    return [i for i in range(len(data) - len(needle) + 1) if data[i:i + len(needle)] == needle]


PATHS = [None, True, False]    # automatic (bytes.find below SMALL, else memmem), memmem, re

# small alphabets make overlapping and repeated occurrences common
small_bytes = st.binary(max_size=300).map(lambda b: bytes(x % 3 for x in b))
needles = st.binary(min_size=1, max_size=6).map(lambda b: bytes(x % 3 for x in b))


@pytest.mark.parametrize("use_memmem", PATHS)
@settings(max_examples=150, deadline=None)
@given(data=small_bytes, needle=needles)
def test_equals_brute_force(use_memmem, data, needle):
    expected = brute(data, needle)
    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8).copy()):
        got = find_all(buf, needle, use_memmem=use_memmem)
        assert got.dtype == np.int64
        assert got.tolist() == expected


@pytest.mark.parametrize("use_memmem", PATHS)
@settings(max_examples=60, deadline=None)
@given(data=small_bytes, needle=needles, limit=st.integers(0, 5))
def test_limit_gives_the_first_ones(use_memmem, data, needle, limit):
    assert find_all(data, needle, limit, use_memmem=use_memmem).tolist() == \
        brute(data, needle)[:limit]


@pytest.mark.parametrize("use_memmem", PATHS)
def test_edges(use_memmem):
    n = b"Rar!\x1a\x07\x00"
    data = n + bytes(100) + n
    assert find_all(data, n, use_memmem=use_memmem).tolist() == [0, 107]
    assert find_all(b"", n, use_memmem=use_memmem).tolist() == []
    assert find_all(n[:-1], n, use_memmem=use_memmem).tolist() == []     # needle longer
    assert find_all(n, n, use_memmem=use_memmem).tolist() == [0]          # exactly the needle
    assert find_all(b"aaaa", b"aa", use_memmem=use_memmem).tolist() == [0, 1, 2]  # overlapping
    assert find_all(b"\0" * 8, b"\0", use_memmem=use_memmem).tolist() == list(range(8))


@pytest.mark.parametrize("use_memmem", PATHS)
def test_views_are_not_copied_and_offsets_are_view_relative(use_memmem):
    big = np.zeros(4096, dtype=np.uint8)
    big[1000:1004] = np.frombuffer(b"ABCD", np.uint8)
    big[3000:3004] = np.frombuffer(b"ABCD", np.uint8)
    sub = big[512:3500]                       # a slice: offsets relative to the slice
    assert find_all(sub, b"ABCD", use_memmem=use_memmem).tolist() == [488, 2488]
    ro = np.frombuffer(bytes(big), np.uint8)  # read-only array over immutable bytes
    assert find_all(ro, b"ABCD", use_memmem=use_memmem).tolist() == [1000, 3000]
    words = big.view(np.uint32)               # another dtype: read as its bytes
    assert find_all(words, b"ABCD", use_memmem=use_memmem).tolist() == [1000, 3000]


def test_bad_arguments():
    with pytest.raises(ValueError):
        find_all(b"abc", b"")
    with pytest.raises(ValueError):
        find_all(np.zeros(16, np.uint8)[::2], b"\0")


def test_fallback_when_libc_has_no_memmem(monkeypatch):
    data = bytes(np.random.default_rng(1).integers(0, 4, 5000, dtype=np.uint8))
    expected = brute(data, b"\x01\x02\x03")
    monkeypatch.setattr(bytesearch, "_MEMMEM", None)
    assert not bytesearch.has_memmem()
    assert find_all(data, b"\x01\x02\x03").tolist() == expected


def test_glibc_path_is_used_here():
    # Linux CI runs glibc: the fast path must be the one in use (musl also exports memmem)
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("memmem availability only asserted on Linux")
    assert bytesearch.has_memmem()


@pytest.mark.parametrize("use_memmem", PATHS)
def test_large_buffers_on_every_path(use_memmem):
    # above SMALL the automatic choice is memmem; sprinkled needles, overlapping ones included
    rng = np.random.default_rng(7)
    data = bytearray(rng.integers(0, 256, bytesearch.SMALL * 4 + 123, dtype=np.uint8))
    for off in (0, 5, 5000, 5003, 20000, len(data) - 7):
        data[off:off + 7] = b"Rar!Rar"
    data = bytes(data)
    expected = [m for m in range(len(data) - 2) if data[m:m + 3] == b"Rar"]
    assert len(expected) >= 8
    assert find_all(data, b"Rar", use_memmem=use_memmem).tolist() == expected
    assert find_all(data, b"Rar", 3, use_memmem=use_memmem).tolist() == expected[:3]
