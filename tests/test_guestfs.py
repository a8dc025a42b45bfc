"""core.guestfs against guest disks made by the real tools, exactly as tests/xsbuilder/guest.py
makes them (sfdisk; mkfs.ext4 -b 4096 + debugfs write; mkntfs -Q + ntfscp), partitioned and
whole-disk.  Tool versions this was measured with: e2fsprogs 1.47.0, ntfs-3g 2022.10.3.

* allocation(): every sector the tools wrote (it differs from the freshly zeroed disk) is
  allocated, and the free sectors are exactly the free blocks/clusters the tools' own readers
  (dumpe2fs, ntfscluster) report.
* landmarks(): every check passes on the real bytes, fails on the same offset of another guest
  disk of the same geometry made with another seed (unless those bytes are identical), and
  fails on the bytes 2 MiB further on.
* content_state(): what it calls content was written (but for the all-zero pages inside
  files, which the builder never writes), and nearly all that was written it calls content;
  the guest's own blocks never trip the evidence, a like-made guest's differing blocks often do.
* GPT disks (sgdisk), two file systems on one disk (NTFS + ext4), a 16 GiB ext4 read sparingly.
* `read` returning None (bytes not placed yet): open_guest/allocation/landmarks degrade as
  documented, never raise.
* garbage (random bytes, truncated images, corrupted metadata, random superblocks/boot sectors)
  never raises, and what the parser reads stays bounded.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.guestfs import (ALLOCATED, UNKNOWN, WriteAgreement, open_guest, write_agreement,
                          written_not_allocated)
from core.guestfs.base import CONTENT, NO_CONTENT
from core.guestfs.base import SECTOR
from xsbuilder.guest import GuestDisk

MiB = 1 << 20
BLOCK = 2 * MiB                  # a VHD block: the unit the solver asks about

# name: (disk size, fs, partitioned)
CASES = {
    "ext4-part": (96 * MiB, "ext4", True),
    "ext4-disk": (288 * MiB, "ext4", False),      # 3 groups: a backup superblock and GDT
    "ntfs-part": (64 * MiB, "ntfs", True),
    "ntfs-disk": (160 * MiB, "ntfs", False),
}
TOOLS = {"ext4": ("sfdisk", "mkfs.ext4", "debugfs", "dumpe2fs"),
         "ntfs": ("sfdisk", "mkntfs", "ntfscp", "ntfscluster")}

FAST = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _need(fs: str) -> None:
    missing = [t for t in TOOLS[fs] if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def _build(workdir, name: str, size: int, fs: str, partitioned: bool, seed: int) -> GuestDisk:
    """A guest as the SR builder makes one: formatted, then files copied in three bursts."""
    rng = random.Random(seed)
    g = GuestDisk(workdir, name, size, fs, partitioned, rng)
    g.format()
    for _ in range(3):
        room = size // 6
        g.write_files(rng.randint(1, 6), rng.randint(room // 8, room))
    return g


class Guest:
    def __init__(self, disk: GuestDisk, other: GuestDisk) -> None:
        self.disk = disk
        self.raw = disk.raw.read_bytes()
        self.other = other.raw.read_bytes()
        self.size = len(self.raw)
        self.reads = 0

    def read(self, offset: int, n: int) -> bytes | None:
        self.reads += n
        return self.raw[offset:offset + n]

    def written(self) -> np.ndarray:
        """Sectors the tools wrote: everything that differs from the zeroed file."""
        return np.frombuffer(self.raw, dtype=np.uint8).reshape(-1, SECTOR).any(axis=1)


@pytest.fixture(scope="module", params=sorted(CASES))
def guest(request, tmp_path_factory):
    size, fs, partitioned = CASES[request.param]
    _need(fs)
    work = tmp_path_factory.mktemp(request.param)
    seed = sum(map(ord, request.param))
    g = Guest(_build(work, "a", size, fs, partitioned, seed),
              _build(work, "b", size, fs, partitioned, seed + 1000))
    g.name = request.param
    yield g
    shutil.rmtree(work, ignore_errors=True)


def _free_sectors_by_tool(g: Guest, fs) -> np.ndarray:
    """bool per sector of the virtual disk: free according to the tools' own reader."""
    free = np.zeros(g.size // SECTOR, dtype=bool)
    part = str(g.disk.part)
    if fs.kind == "ext4":
        out = subprocess.run(["dumpe2fs", part], capture_output=True, text=True).stdout
        bs = int(re.search(r"Block size:\s+(\d+)", out).group(1))
        for line in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
            for piece in filter(None, (p.strip() for p in line.split(","))):
                a, _, b = piece.partition("-")
                lo, hi = int(a), int(b or a) + 1
                free[(fs.offset + lo * bs) // SECTOR:(fs.offset + hi * bs) // SECTOR] = True
    return free


def _free_clusters_by_ntfscluster(g: Guest) -> int:
    out = subprocess.run(["ntfscluster", "-f", "-i", str(g.disk.part)], capture_output=True,
                         text=True).stdout
    return int(re.search(r"clusters of free space\s*:\s*(\d+)", out).group(1))


# -- allocation ----------------------------------------------------------------------------------
def test_allocation_covers_every_written_sector(guest):
    fs = open_guest(guest.read, guest.size)
    assert fs is not None and fs.kind == guest.disk.fs
    assert fs.offset == guest.disk.part_off
    alloc = fs.allocation(0, guest.size)
    written = guest.written()
    assert alloc.shape == written.shape
    # nothing the tools wrote is outside what the file system says it holds
    assert written_not_allocated(written, alloc) == 0
    if fs.kind == "ext4":
        # and the free sectors are exactly the free blocks dumpe2fs lists
        free = _free_sectors_by_tool(guest, fs)
        np.testing.assert_array_equal(~alloc, free)
    else:
        # and as many as ntfscluster counts (it lists no places)
        assert (~alloc).sum() == _free_clusters_by_ntfscluster(guest) * fs.cluster // SECTOR
    assert (~alloc).sum() > 0.2 * alloc.size


def _written_pages(g: Guest) -> np.ndarray:
    """Sectors a VHD's bitmaps would mark written: the builder writes each changed 4 KiB page
    whole (GuestDisk.burst), and so does a guest writing file-system blocks."""
    pages = np.frombuffer(g.raw, dtype=np.uint8).reshape(-1, 4096).any(axis=1)
    return np.repeat(pages, 4096 // SECTOR)


def test_content_state_is_what_was_written(guest):
    fs = open_guest(guest.read, guest.size)
    content = fs.content_state(0, guest.size)
    alloc = fs.allocation(0, guest.size)
    written = _written_pages(guest)
    claimed = content == CONTENT
    # content only where the file system holds something
    assert not (claimed & ~alloc).any()
    # what it calls content was written, but for the all-zero pages inside files (the builder's
    # files have zero runs, and a zero page that never changed is never written)
    missing = claimed & ~written
    assert missing.sum() <= 0.03 * claimed.sum(), (missing.sum(), claimed.sum())
    for s in np.flatnonzero(missing)[::97].tolist():
        assert not any(guest.raw[s * SECTOR:(s + 1) * SECTOR])
    # and nearly all that was written it calls content (it leaves out what it is unsure of:
    # reserved inodes, the resize inode's blocks, system files' zero-padded streams)
    inside = np.zeros(written.size, dtype=bool)
    inside[fs.offset // SECTOR:(fs.offset + fs.size) // SECTOR] = True
    assert ((content == NO_CONTENT) & written).sum() <= 0.01 * (written & inside).sum()
    # agreement as the solver will compute it, block by block: the right bytes never trip it
    for k in range(guest.size // BLOCK):
        sl = slice(k * BLOCK // SECTOR, (k + 1) * BLOCK // SECTOR)
        agree = write_agreement(written[sl], fs.allocation_state(k * BLOCK, BLOCK),
                                content[sl])
        assert agree.written_free == 0
        assert agree.content_unwritten <= max(256, agree.content_written // 4), (k, agree)


def test_allocation_of_subranges_matches_the_whole(guest):
    fs = open_guest(guest.read, guest.size)
    whole = fs.allocation(0, guest.size)
    for start in range(0, guest.size, 7 * MiB + 4096):
        part = fs.allocation(start, BLOCK)
        n = min(BLOCK, guest.size - start) // SECTOR
        np.testing.assert_array_equal(part[:n], whole[start // SECTOR:start // SECTOR + n])


def test_written_not_allocated_counts_only_written_free_sectors():
    w = np.array([1, 1, 0, 0, 1], dtype=bool)
    a = np.array([1, 0, 0, 1, 0], dtype=bool)
    assert written_not_allocated(w, a) == 2
    with pytest.raises(ValueError):
        written_not_allocated(w, a[:3])
    state = np.array([1, 0, -1, 1, -1], dtype=np.int8)
    assert write_agreement(w, state) == WriteAgreement(written_free=1, written_allocated=1,
                                                       allocated_unwritten=1, unknown=2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 1 << 13)), max_size=20),
       st.integers(0, 200), st.integers(0, 200), st.sampled_from([0, 1024, 4096]))
def test_interval_and_unit_states_match_a_plain_loop(pairs, first, n, fs_offset):
    from core.guestfs.base import merge_intervals, states_from_intervals, states_from_units
    starts, ends = merge_intervals([(a, a + d) for a, d in pairs])
    first += fs_offset // SECTOR
    got = states_from_intervals(first, first + n, fs_offset, starts, ends, UNKNOWN)
    for i, s in enumerate(range(first, first + n)):
        lo = s * SECTOR - fs_offset
        inside = any(a < lo + SECTOR and lo < b for a, d in pairs for b in [a + d])
        assert got[i] == (CONTENT if inside else UNKNOWN)
    unit = 4096
    u0 = (first * SECTOR - fs_offset) // unit
    u1 = -(-((first + n) * SECTOR - fs_offset) // unit)
    units = np.arange(u0, max(u1, u0), dtype=np.int64) % 3
    got = states_from_units(first, first + n, fs_offset, unit, u0, units)
    want = [((s * SECTOR - fs_offset) // unit) % 3 for s in range(first, first + n)]
    assert got.tolist() == want


# -- landmarks -----------------------------------------------------------------------------------
def _landmark_census(g: Guest):
    fs = open_guest(g.read, g.size)
    kinds: dict[str, int] = {}
    blocks_with = 0
    identical: list[str] = []
    for start in range(0, g.size, BLOCK):
        lms = fs.landmarks(start, BLOCK)
        blocks_with += bool(lms)
        for lm in lms:
            assert start <= lm.offset and lm.offset + lm.size <= start + BLOCK
            kinds[lm.what] = kinds.get(lm.what, 0) + 1
            real = g.raw[lm.offset:lm.offset + lm.size]
            assert lm.check(real), f"{lm.what} at {lm.offset}: its own bytes fail"
            foreign = g.other[lm.offset:lm.offset + lm.size]
            if foreign == real:
                identical.append(lm.what)
                assert lm.what.startswith("ext4") or lm.size == 512 or \
                    int.from_bytes(real[0x2C:0x30], "little") < 64, lm.what
            else:
                assert not lm.check(foreign), f"{lm.what} at {lm.offset}: another disk passes"
            shifted = g.raw[lm.offset + BLOCK:lm.offset + BLOCK + lm.size]
            if shifted != real:
                assert not lm.check(shifted), f"{lm.what} at {lm.offset}: +2 MiB passes"
            assert not lm.check(b""), "short bytes pass"
    return fs, kinds, blocks_with, identical


EXPECTED_KINDS = {
    "ext4-part": {"mbr", "ext4-superblock", "ext4-gdt", "ext4-block-bitmap", "ext4-inode-bitmap",
                  "ext4-inode-table", "ext4-dir-block", "jbd2-superblock"},
    "ext4-disk": {"ext4-superblock", "ext4-backup-superblock", "ext4-gdt", "ext4-gdt-backup",
                  "ext4-block-bitmap", "ext4-inode-bitmap", "ext4-inode-table",
                  "ext4-dir-block", "ext4-extent-block", "jbd2-superblock"},
    "ntfs-part": {"mbr", "ntfs-boot-sector", "ntfs-backup-boot-sector", "ntfs-mft-record",
                  "ntfs-mftmirr-record", "ntfs-indx"},
    "ntfs-disk": {"ntfs-boot-sector", "ntfs-backup-boot-sector", "ntfs-mft-record",
                  "ntfs-mftmirr-record", "ntfs-indx"},
}


def test_landmarks_are_this_file_systems_own(guest):
    fs, kinds, blocks_with, identical = _landmark_census(guest)
    assert EXPECTED_KINDS[guest.name] <= set(kinds), kinds
    if fs.kind == "ext4":
        # every checksum is seeded with the fs uuid: nothing of another guest passes, unless
        # its bytes are the very same (a bitmap's checksum covers only its bits: two groups
        # filled alike have identical bitmaps)
        assert set(identical) <= {"ext4-block-bitmap", "ext4-inode-bitmap"}, identical
    else:
        # mkntfs -T (the guest builder's fake time) makes the system files of two volumes of one
        # size byte for byte the same; those pass on each other, as they should
        # (ntfs-3g numbers user files from 64 on: those always differ)
        assert set(identical) <= {"ntfs-boot-sector", "ntfs-backup-boot-sector",
                                  "ntfs-mft-record", "ntfs-mft-record-unnamed",
                                  "ntfs-mftmirr-record"}, identical
    assert blocks_with >= 1


def _rejects(fs, k: int, data: bytes, written: np.ndarray) -> bool:
    """Would the guest file system's evidence reject `data` / `written` as 2 MiB block k?"""
    for lm in fs.landmarks(k * BLOCK, BLOCK):
        if not lm.check(data[lm.offset - k * BLOCK:lm.offset - k * BLOCK + lm.size]):
            return True
    agree = write_agreement(written, fs.allocation_state(k * BLOCK, BLOCK),
                            fs.content_state(k * BLOCK, BLOCK))
    total = agree.content_written + agree.content_unwritten
    return agree.written_free > 0 or (total >= 64 and agree.content_unwritten > total // 2)


def test_another_guests_blocks_are_told_apart(guest):
    """Two guests made alike (two VDIs of one template size): the guest's own blocks are never
    rejected, and a good share of the other's differing blocks are."""
    fs = open_guest(guest.read, guest.size)
    mine = _written_pages(guest)
    pages = np.frombuffer(guest.other, dtype=np.uint8).reshape(-1, 4096).any(axis=1)
    theirs = np.repeat(pages, 4096 // SECTOR)
    spb = BLOCK // SECTOR
    differing = rejected = 0
    for k in range(guest.size // BLOCK):
        sl = slice(k * spb, (k + 1) * spb)
        own = guest.raw[k * BLOCK:(k + 1) * BLOCK]
        assert not _rejects(fs, k, own, mine[sl]), f"own block {k} rejected"
        other = guest.other[k * BLOCK:(k + 1) * BLOCK]
        if other != own:
            differing += 1
            rejected += _rejects(fs, k, other, theirs[sl])
    print(f"{guest.name}: {rejected} of {differing} differing blocks rejected")
    assert differing and rejected >= 1


def test_landmarks_of_a_range_are_those_of_its_parts(guest):
    fs = open_guest(guest.read, guest.size)
    whole = [(lm.offset, lm.what) for lm in fs.landmarks(0, guest.size)]
    parts = [(lm.offset, lm.what) for s in range(0, guest.size, BLOCK)
             for lm in fs.landmarks(s, BLOCK)]
    assert sorted(whole) == sorted(parts) and whole


def test_gpt_disk_second_partition(tmp_path):
    """A GPT disk (sgdisk) whose first partition holds no file system: the second is found."""
    if shutil.which("sgdisk") is None or shutil.which("mkfs.ext4") is None:
        pytest.skip("sgdisk / mkfs.ext4 not installed")
    disk = tmp_path / "gpt.raw"
    with open(disk, "wb") as f:
        f.truncate(48 * MiB)
    subprocess.run(["sgdisk", "-n", "1:2048:+4M", "-t", "1:EF02", "-n", "2:0:0", str(disk)],
                   check=True, capture_output=True)
    out = subprocess.run(["sgdisk", "-i", "2", str(disk)], capture_output=True, text=True,
                         check=True).stdout
    first = int(re.search(r"First sector: (\d+)", out).group(1))
    last = int(re.search(r"Last sector: (\d+)", out).group(1))
    part = tmp_path / "part.img"
    with open(part, "wb") as f:
        f.truncate((last - first + 1) * SECTOR)
    subprocess.run(["mkfs.ext4", "-F", "-q", "-b", "4096", str(part)], check=True,
                   capture_output=True)
    with open(disk, "r+b") as f:
        f.seek(first * SECTOR)
        f.write(part.read_bytes())
    raw = disk.read_bytes()
    fs = open_guest(lambda o, n: raw[o:o + n], len(raw))
    assert fs is not None and fs.kind == "ext4" and fs.offset == first * SECTOR
    alloc = fs.allocation(0, len(raw))
    written = np.frombuffer(raw, dtype=np.uint8).reshape(-1, SECTOR).any(axis=1)
    assert written_not_allocated(written, alloc) == 0       # GPT headers and arrays included
    assert alloc[-33:].all()                # the backup GPT: outside the file system
    heads = [lm for lm in fs.landmarks(0, len(raw)) if lm.what.startswith("gpt")]
    assert {lm.what for lm in heads} == {"gpt-header", "gpt-backup-header"}
    for lm in heads:
        assert lm.check(raw[lm.offset:lm.offset + lm.size])
        assert not lm.check(raw[lm.offset - 512:lm.offset - 512 + lm.size])
        other = bytearray(raw[lm.offset:lm.offset + lm.size])
        other[56] ^= 1                       # another disk's GUID
        assert not lm.check(bytes(other))
    assert not alloc[fs.offset // SECTOR:(fs.offset + fs.size) // SECTOR].all()


def test_two_file_systems_on_one_disk(tmp_path):
    """A disk with an NTFS partition and an ext4 partition (a dual-boot, or Windows' System
    Reserved + C:): both are read, each for its own partition."""
    if any(shutil.which(t) is None for t in ("sfdisk", "mkntfs", "ntfscp", "mkfs.ext4",
                                                "debugfs")):
        pytest.skip("sfdisk / ntfs-3g / e2fsprogs not installed")
    size = 64 * MiB
    disk = tmp_path / "two.raw"
    with open(disk, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)],
                   input="label: dos\nstart=2048, size=49152, type=7\nstart=51200, type=83\n",
                   text=True, check=True, capture_output=True)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(random.Random(5).randbytes(3 * MiB))
    ntfs, ext4 = tmp_path / "p1.img", tmp_path / "p2.img"
    for img, nbytes in ((ntfs, 49152 * SECTOR), (ext4, size - 51200 * SECTOR)):
        with open(img, "wb") as f:
            f.truncate(nbytes)
    subprocess.run(["mkntfs", "-F", "-Q", "-q", "-p", "2048", str(ntfs)], check=True,
                   capture_output=True)
    subprocess.run(["ntfscp", "-f", "-q", str(ntfs), str(payload), "/a.bin"], check=True,
                   capture_output=True)
    subprocess.run(["mkfs.ext4", "-F", "-q", "-b", "4096", str(ext4)], check=True,
                   capture_output=True)
    subprocess.run(["debugfs", "-w", "-R", f"write {payload} b.bin", str(ext4)], check=True,
                   capture_output=True)
    with open(disk, "r+b") as f:
        for img, lba in ((ntfs, 2048), (ext4, 51200)):
            f.seek(lba * SECTOR)
            f.write(img.read_bytes())
    raw = disk.read_bytes()
    fs = open_guest(lambda o, n: raw[o:o + n], len(raw))
    assert fs is not None and fs.kind == "multi"
    assert [(p.kind, p.offset) for p in fs.parts] == [("ntfs", 2048 * SECTOR),
                                                     ("ext4", 51200 * SECTOR)]
    alloc = fs.allocation(0, len(raw))
    written = np.frombuffer(raw, dtype=np.uint8).reshape(-1, SECTOR).any(axis=1)
    assert written_not_allocated(written, alloc) == 0
    for p in fs.parts:          # each part's own answer stands for its partition
        sl = slice(p.offset // SECTOR, (p.offset + p.size) // SECTOR)
        np.testing.assert_array_equal(alloc[sl], p.allocation(0, len(raw))[sl])
        assert not alloc[sl].all()
    lms = fs.landmarks(0, len(raw))
    kinds = {lm.what.split("-")[0] for lm in lms}
    assert {"mbr", "ntfs", "ext4"} <= kinds
    for lm in lms:
        assert lm.check(raw[lm.offset:lm.offset + lm.size]), lm.what
    content = fs.content_state(0, len(raw))
    assert ((content == CONTENT) & written).sum() > 0.9 * written.sum()


def test_large_file_system_reads_stay_bounded(tmp_path):
    """A 16 GiB ext4 (128 groups; mkfs.ext4 on a sparse file): open_guest and the evidence for
    scattered 2 MiB ranges read a few MiB, not the disk."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    img = tmp_path / "big.img"
    with open(img, "wb") as f:
        f.truncate(16 << 30)
    subprocess.run(["mkfs.ext4", "-F", "-q", "-b", "4096", str(img)], check=True,
                   capture_output=True)
    spent = [0]
    with open(img, "rb") as f:
        def read(offset: int, n: int) -> bytes:
            spent[0] += n
            f.seek(offset)
            return f.read(n)
        fs = open_guest(read, 16 << 30)
        assert fs is not None and fs.ngroups == 128
        opened = spent[0]
        rng = random.Random(3)
        for start in [0] + [rng.randrange(8192) * BLOCK for _ in range(40)]:
            fs.landmarks(start, BLOCK)
            assert fs.allocation(start, BLOCK) is not None
            fs.content_state(start, BLOCK)
    assert opened <= 64 << 10
    assert spent[0] <= 16 * MiB, spent[0]


# -- unknown bytes (not placed yet) --------------------------------------------------------------
def _reader_without(g: Guest, holes: list[tuple[int, int]]):
    def read(offset: int, n: int):
        for a, b in holes:
            if offset < b and a < offset + n:
                return None
        return g.raw[offset:offset + n]
    return read


def test_unknown_first_sector_or_superblock_means_no_guest(guest):
    assert open_guest(_reader_without(guest, [(0, 512)]), guest.size) is None
    fs = open_guest(guest.read, guest.size)
    at = fs.offset + (1024 if fs.kind == "ext4" else 0)
    assert open_guest(_reader_without(guest, [(at, at + 1)]), guest.size) is None


def test_unknown_bitmap_gives_unknown_for_its_range_only(guest):
    fs = open_guest(guest.read, guest.size)
    if fs.kind == "ext4":      # group 0's block bitmap: group 0's blocks
        hole = fs.offset + int(fs.bb[0]) * fs.block_size
        covered = min(fs.bpg * fs.block_size, fs.size)
    else:                      # the first 4 KiB of $Bitmap's data: its first 32768 clusters
        hole = fs.offset + fs.bitmap_runs.runs[0][1] * fs.cluster
        covered = min(32768 * fs.cluster, fs.size)
    blind = open_guest(_reader_without(guest, [(hole, hole + 1)]), guest.size)
    whole = fs.allocation_state(0, guest.size)
    st_ = blind.allocation_state(0, guest.size)
    dark = slice(fs.offset // SECTOR, (fs.offset + covered) // SECTOR)
    assert (st_[dark] == UNKNOWN).all()
    rest = np.ones(st_.size, dtype=bool)
    rest[dark] = False
    np.testing.assert_array_equal(st_[rest], whole[rest])
    assert (st_[:fs.offset // SECTOR] == ALLOCATED).all()     # the partition table area
    assert blind.allocation(fs.offset, BLOCK) is None
    # landmarks still come, minus what needed the missing bytes
    assert blind.landmarks(0, guest.size)


def test_unread_inodes_make_content_unknown_not_absent(guest):
    fs = open_guest(guest.read, guest.size)
    if fs.kind == "ext4":       # the inode table block holding the root directory
        hole = fs.offset + int(fs.it[0]) * fs.block_size
    else:                       # the MFT record of the first user file
        hole = fs.offset + fs.record_offset(64)
    blind = open_guest(_reader_without(guest, [(hole, hole + 1)]), guest.size)
    full = fs.content_state(0, guest.size)
    part = blind.content_state(0, guest.size)
    # never NO_CONTENT where there is content; what it still knows is right
    assert not ((part == NO_CONTENT) & (full == CONTENT)).any()
    assert ((part == CONTENT) <= (full == CONTENT)).all()
    assert (part == UNKNOWN).sum() > (full == UNKNOWN).sum()


def test_unread_mft_bitmap_makes_content_unknown_not_absent(guest):
    """An NTFS whose $MFT:$BITMAP cannot be read (an extent not placed yet) knows no record in
    use: that is "unknown", never "nothing was written" (a base copy's guest read through its
    sure placements said NO_CONTENT over files' data, and its own extents were withdrawn)."""
    fs = open_guest(guest.read, guest.size)
    if fs.kind != "ntfs":
        pytest.skip("an NTFS structure")
    a = fs.mft_bitmap_attr
    if a is None or a.resident:
        pytest.skip("this volume keeps $MFT:$BITMAP resident (in the readable $MFT record)")
    hole = fs.offset + a.runs[0][1] * fs.cluster
    blind = open_guest(_reader_without(guest, [(hole, hole + 1)]), guest.size)
    full = fs.content_state(0, guest.size)
    part = blind.content_state(0, guest.size)
    assert not ((part == NO_CONTENT) & (full == CONTENT)).any()
    assert (part == UNKNOWN).sum() > (full == UNKNOWN).sum()


@FAST
@given(data=st.data())
def test_random_unknown_ranges_never_raise_and_never_lie(guest, data):
    chunk = 256 << 10
    n = guest.size // chunk
    holes = data.draw(st.lists(st.integers(0, n - 1), max_size=12))
    read = _reader_without(guest, [(h * chunk, (h + 1) * chunk) for h in holes])
    fs = open_guest(read, guest.size)
    if fs is None:
        return
    st_ = fs.allocation_state(0, guest.size)
    truth = open_guest(guest.read, guest.size).allocation_state(0, guest.size)
    known = st_ != UNKNOWN
    np.testing.assert_array_equal(st_[known], truth[known])
    full = open_guest(guest.read, guest.size).content_state(0, guest.size)
    part = fs.content_state(0, guest.size)
    assert not ((part == NO_CONTENT) & (full == CONTENT)).any()
    for lm in fs.landmarks(0, guest.size):
        # a landmark found through a partly placed disk is still a true one
        assert lm.check(guest.raw[lm.offset:lm.offset + lm.size]), lm.what


# -- garbage -------------------------------------------------------------------------------------
def _exercise(image: bytes, size: int | None = None) -> int:
    """open_guest + allocation + landmarks + every check over `image`; bytes read."""
    size = len(image) if size is None else size
    spent = [0]

    def read(offset: int, n: int):
        spent[0] += n
        return image[offset:offset + n] if offset + n <= len(image) else None

    fs = open_guest(read, size)
    event(f"opened {fs.kind}" if fs is not None else "not opened")
    if fs is not None:
        for start in range(0, size, 8 * MiB):
            st_ = fs.allocation_state(start, 8 * MiB)
            assert st_.shape == ((8 * MiB) // SECTOR,)
            assert fs.content_state(start, 8 * MiB).shape == st_.shape
        for start in range(0, size, BLOCK):
            for lm in fs.landmarks(start, BLOCK):
                lm.check(image[lm.offset:lm.offset + lm.size])
    return spent[0]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=1 << 14), st.sampled_from(["none", "ext4", "ntfs", "mbr"]),
       st.integers(4096, 4 * MiB))
def test_random_bytes_never_raise(blob, stamp, size):
    image = bytearray(size)
    image[:len(blob)] = blob[:size]
    if stamp == "ext4" and size >= 2048:
        image[1024 + 0x38:1024 + 0x3A] = b"\x53\xef"
    elif stamp == "ntfs":
        image[3:11] = b"NTFS    "
        image[510:512] = b"\x55\xaa"
    elif stamp == "mbr":
        image[510:512] = b"\x55\xaa"
    assert _exercise(bytes(image)) <= 24 * MiB


@FAST
@given(data=st.data())
def test_corrupted_and_truncated_guests_never_raise(guest, data):
    image = bytearray(guest.raw[:min(guest.size, 32 * MiB)])
    fs = open_guest(guest.read, guest.size)
    # aim at the metadata: the first MiB of the file system, and the landmark places
    targets = [lm.offset for lm in fs.landmarks(0, 32 * MiB)] + [fs.offset]
    for _ in range(data.draw(st.integers(1, 40))):
        base = data.draw(st.sampled_from(targets))
        at = min(len(image) - 1, base + data.draw(st.integers(0, 8191)))
        image[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(4096, len(image)))
    spent = _exercise(bytes(image[:cut]), data.draw(st.sampled_from([cut, guest.size])))
    assert spent <= 24 * MiB


def _superblock(fields: dict) -> bytes:
    from core.guestfs.base import crc32c_raw
    from core.structs import ext4 as E
    base = {sc.name: 0 for sc in E.ext4_super_block.subcons if sc.name}
    base.update(s_uuid=bytes(16), s_volume_name=bytes(16), s_last_mounted=bytes(64),
                s_journal_uuid=bytes(16), s_hash_seed=[0] * 4, s_jnl_blocks=[0] * 17,
                s_first_error_func=bytes(32), s_last_error_func=bytes(32),
                s_mount_opts=bytes(64), s_backup_bgs=[0, 0], s_encrypt_algos=bytes(4),
                s_encrypt_pw_salt=bytes(16), s_time_hi=bytes(8), s_reserved=bytes(376),
                s_magic=E.EXT4_SUPER_MAGIC, s_rev_level=1, s_inode_size=256, s_first_ino=11)
    base.update(fields)
    raw = bytearray(E.ext4_super_block.build(base))
    raw[E.S_CHECKSUM_OFFSET:] = crc32c_raw(0xFFFFFFFF, bytes(raw[:E.S_CHECKSUM_OFFSET])
                                           ).to_bytes(4, "little")
    return bytes(raw)


# a superblock mke2fs could write (4 KiB blocks, metadata_csum, 64bit, flex_bg), then up to four
# fields replaced by anything their width holds
REAL_SB = dict(s_blocks_count_lo=2000, s_blocks_count_hi=0, s_log_block_size=2,
               s_blocks_per_group=32768, s_clusters_per_group=32768, s_inodes_per_group=512,
               s_first_data_block=0, s_desc_size=64, s_feature_incompat=0x2C2,
               s_feature_ro_compat=0x46B, s_feature_compat=0x3C, s_reserved_gdt_blocks=3,
               s_first_meta_bg=0, s_inode_size=256, s_log_cluster_size=2, s_log_groups_per_flex=4,
               s_jnl_backup_type=1, s_journal_inum=8)
WIDTH16 = {"s_desc_size", "s_reserved_gdt_blocks", "s_inode_size"}
WIDTH8 = {"s_log_groups_per_flex", "s_jnl_backup_type"}


@st.composite
def ext4_superblock_fields(draw):
    fields = dict(REAL_SB)
    for name in draw(st.lists(st.sampled_from(sorted(REAL_SB)), max_size=4)):
        bits = 8 if name in WIDTH8 else 16 if name in WIDTH16 else 32
        fields[name] = draw(st.integers(0, 2**bits - 1) | st.integers(0, 64))
    return fields


@settings(max_examples=80, deadline=None)
@given(ext4_superblock_fields(), st.binary(min_size=64, max_size=4096))
def test_random_ext4_superblocks_never_raise(fields, tail):
    from core.guestfs.base import Reader
    from core.guestfs.ext4 import Ext4, _sane
    from core.structs import ext4 as E
    image = bytearray(8 * MiB)
    raw = _superblock(fields)
    image[1024:2048] = raw
    sb = E.ext4_super_block.parse(raw)
    if _sane(sb, len(image)):
        # descriptors of random content but valid checksums, so the walk goes past the GDT
        fs = Ext4(Reader(lambda o, n: bytes(image[o:o + n]), len(image)), len(image), raw, sb,
                  len(image))
        at = (fs.first_data_block + 1) * fs.block_size
        ds = fs.desc_size
        for g in range(min(fs.ngroups, 64, len(tail) // ds)):
            desc = bytearray(tail[g * ds:(g + 1) * ds])
            for k in range(3):          # bitmaps and inode table inside the file system
                v = int.from_bytes(desc[4 * k:4 * k + 4], "little") % fs.blocks_count
                desc[4 * k:4 * k + 4] = v.to_bytes(4, "little")
            if ds >= 64:
                desc[0x20:0x2C] = bytes(12)
            want = fs._desc_csum(bytes(desc), g)
            if want is not None:
                desc[E.BG_CHECKSUM_OFFSET:E.BG_CHECKSUM_OFFSET + 2] = want.to_bytes(2, "little")
            if at + (g + 1) * ds <= len(image):
                image[at + g * ds:at + (g + 1) * ds] = desc
    assert _exercise(bytes(image)) <= 24 * MiB


def _protect(rec: bytearray, usn: int = 7) -> bytes:
    """Re-apply an update sequence array to a fixed-up record (what ntfs_mst_pre_write_fixup
    does), so a mutated record still passes the fixup and reaches the parsers behind it."""
    usa_ofs, usa_count = int.from_bytes(rec[4:6], "little"), int.from_bytes(rec[6:8], "little")
    rec[usa_ofs:usa_ofs + 2] = usn.to_bytes(2, "little")
    for i in range(1, usa_count):
        end = i * 512
        rec[usa_ofs + 2 * i:usa_ofs + 2 * i + 2] = rec[end - 2:end]
        rec[end - 2:end] = usn.to_bytes(2, "little")
    return bytes(rec)


@FAST
@given(data=st.data())
def test_mutated_ntfs_boot_sectors_and_records_never_raise(guest, data):
    fs = open_guest(guest.read, guest.size)
    if fs.kind != "ntfs":
        pytest.skip("NTFS structures")
    from core.guestfs.ntfs import fixup
    image = bytearray(guest.raw[:32 * MiB])      # the metadata; the rest reads as unknown
    boot = fs.offset
    # up to two boot sector fields replaced by anything their width holds
    fields = ((0x0B, 2), (0x0D, 1), (0x28, 8), (0x30, 8), (0x38, 8), (0x40, 1), (0x44, 1))
    for off, width in data.draw(st.lists(st.sampled_from(fields), max_size=2)):
        v = data.draw(st.integers(0, 2 ** (8 * width) - 1) | st.integers(0, 64))
        image[boot + off:boot + off + width] = v.to_bytes(width, "little")
    # system and user records with bytes changed behind a valid update sequence array
    for n in data.draw(st.lists(st.sampled_from([0, 1, 5, 6, 9, 11, 64, 65]), max_size=3)):
        at = fs.record_offset(n)
        if at is None:
            continue
        at += fs.offset
        if at + fs.record_size > len(image):
            continue
        rec = fixup(bytes(image[at:at + fs.record_size]), fs.record_size, b"FILE")
        if rec is None:
            continue
        rec = bytearray(rec)
        for _ in range(data.draw(st.integers(1, 12))):
            i = data.draw(st.integers(0x30, fs.record_size - 1))
            rec[i] = data.draw(st.integers(0, 255))
        image[at:at + fs.record_size] = _protect(rec)
    spent = _exercise(bytes(image), guest.size)
    assert spent <= 24 * MiB
