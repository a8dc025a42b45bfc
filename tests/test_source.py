"""core.source.Evidence: read-only access, clipping, unreadable sectors, windows, holes."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import realtools
from core.errors import SourceError
from core.evidence import open_evidence
from core.source import Evidence


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "d.img"
    data = bytes(range(256)) * 64          # 16 KiB
    path.write_bytes(data)
    return path, data


def test_read_and_clip(data_file):
    path, data = data_file
    with Evidence(str(path)) as ev:
        assert ev.size == len(data) and ev.name == "d.img" and not ev.is_block_device
        assert ev.read(100, 50) == data[100:150]
        assert ev.read(len(data) - 10, 100) == data[-10:]
        assert ev.read(len(data) + 5, 10) == b""
        assert ev.read(0, 0) == b""
        assert ev.read_array(0, 4).tolist() == [0, 1, 2, 3]
        with pytest.raises(ValueError):
            ev.read(-1, 4)
        assert ev.unreadable == []


def test_opened_read_only(data_file):
    path, _ = data_file
    ev = Evidence(str(path))
    with pytest.raises(OSError) as exc:
        os.write(ev._fd, b"x")
    assert exc.value.errno == errno.EBADF
    ev.close()
    ev.close()   # idempotent


def test_bad_paths(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        Evidence(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="is a directory"):
        open_evidence(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="not a regular file"):
        Evidence(str(fifo))


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with Evidence(str(path)) as ev:
        assert ev.size == 0 and ev.read(0, 10) == b""
        assert list(ev.windows()) == [] and ev.data_ranges() == []


class FailingEvidence(Evidence):
    """Sectors in `bad` raise EIO, like a dying disk."""

    bad: set[int] = set()

    def _pread_raw(self, offset, length):
        first, last = offset // 512, (offset + length - 1) // 512
        if any(s in self.bad for s in range(first, last + 1)):
            raise OSError(errno.EIO, "Input/output error")
        return super()._pread_raw(offset, length)


def test_unreadable_sectors_read_as_zeros_and_are_recorded(data_file):
    path, data = data_file
    ev = FailingEvidence(str(path))
    ev.bad = {3, 4, 9}
    got = ev.read(1000, 5000)
    want = bytearray(data[1000:6000])
    for s in (3, 4, 9):
        lo, hi = max(s * 512, 1000), min((s + 1) * 512, 6000)
        want[lo - 1000: hi - 1000] = bytes(hi - lo)
    assert got == bytes(want)
    assert ev.unreadable == [(1536, 2560), (4608, 5120)]   # adjacent sectors merged
    assert ev.read(1536, 512) == bytes(512)
    # re-reading keeps the recorded ranges covering exactly the bad sectors
    covered = {s for a, b in ev.unreadable for s in range(a // 512, b // 512)}
    assert covered == {3, 4, 9}
    assert ev.unreadable == [(1536, 2560), (4608, 5120)]   # re-reads add no duplicate ranges
    ev.close()


def test_windows_survive_unreadable_sectors(data_file):
    """Scans read through the same salvaging path: a bad sector is zeros in the window."""
    path, data = data_file
    ev = FailingEvidence(str(path))
    ev.bad = {5}
    got = b"".join(bytes(v) for _, v in ev.windows(window=2048))
    want = bytearray(data)
    want[2560:3072] = bytes(512)
    assert got == bytes(want)
    assert ev.unreadable == [(2560, 3072)]
    ev.close()


def test_short_read_is_salvaged(data_file):
    path, data = data_file

    class Short(Evidence):
        def _pread_raw(self, offset, length):
            return super()._pread_raw(offset, min(length, 700))

    with Short(str(path)) as ev:
        assert ev.read(0, 4096) == data[:4096]
        assert ev.unreadable == []


def test_windows_cover_with_overlap(data_file):
    path, data = data_file
    with Evidence(str(path)) as ev:
        seen = []
        for off, view in ev.windows(window=4096, overlap=512):
            assert isinstance(view, np.ndarray) and view.dtype == np.uint8
            assert bytes(view) == data[off: off + len(view)]
            seen.append((off, len(view)))
        del view   # a live window view keeps the mmap exported (close() would fail)
        assert seen == [(0, 4608), (4096, 4608), (8192, 4608), (12288, 4096)]
        assert [o for o, _ in ev.windows(1000, 9000, window=4096)] == [1000, 5096]
        with pytest.raises(ValueError):
            list(ev.windows(window=1000))


def test_windows_skip_holes_of_sparse_files(tmp_path):
    path = tmp_path / "sparse.img"
    with open(path, "wb") as fh:
        fh.truncate(64 << 20)
        fh.seek(8 << 20)
        fh.write(b"A" * 4096)
        fh.seek(40 << 20)
        fh.write(b"B" * 4096)
    with Evidence(str(path)) as ev:
        ranges = ev.data_ranges()
        if ranges == [(0, 64 << 20)]:
            pytest.skip("file system without SEEK_DATA holes")
        assert len(ranges) == 2 and ranges[0][0] <= 8 << 20 < ranges[0][1]
        visited = sum(len(v) for _, v in ev.windows(window=1 << 20))
        assert visited < 8 << 20
        found = [off + int(np.flatnonzero(v)[0]) for off, v in ev.windows(window=1 << 20)
                 if v.any()]
        assert found == [8 << 20, 40 << 20]
        assert sum(len(v) for _, v in ev.windows(window=1 << 20, skip_holes=False)) == 64 << 20


def test_block_device_windows_use_pread(tmp_path):
    realtools.need_lvm()
    path = tmp_path / "dev.img"
    data = os.urandom(3 << 20)
    path.write_bytes(data)
    with realtools.loop_device(str(path)) as dev:
        with Evidence(dev) as ev:
            assert ev.is_block_device and ev.size == len(data)
            assert ev.read(12345, 1000) == data[12345:13345]
            got = b"".join(bytes(v[: min(len(v), 1 << 20)]) for _, v in ev.windows(window=1 << 20))
            assert got == data


def test_windows_of_a_small_data_range_are_not_a_whole_window(tmp_path):
    """A 4 KiB island of data in a sparse file is read as 4 KiB plus the overlap, not as a
    whole window (a 1 TiB sparse SR has thousands of such islands)."""
    path = tmp_path / "islands.img"
    with open(path, "wb") as f:
        f.truncate(256 << 20)
        for at in (16 << 20, 100 << 20):
            f.seek(at)
            f.write(b"\x01" * 4096)
    with Evidence(str(path)) as ev:
        ranges = ev.data_ranges()
        if len(ranges) != 2:
            pytest.skip("this file system does not report holes")
        views = [(off, len(v)) for off, v in ev.windows(window=4 << 20, overlap=1024)]
    assert [off for off, _ in views] == [r[0] for r in ranges]
    for (off, n), (rs, re_) in zip(views, ranges):
        assert n == (re_ - rs) + 1024
