"""MBR (EBR chain, VBR rejection) and GPT (CRCs, backup header, 4096-byte sectors), checked
against what sfdisk, sgdisk and mkntfs wrote."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import realtools
from core.partitions import parse_mbr_sector, read_partition_table
from core.source import Evidence
from core.spaces import BytesSpace
from core.structs.gpt import gpt_crc32, gpt_header
from core.structs.mbr import dos_partition

MIB = 1 << 20
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def need(tool):
    if not realtools.have(tool):
        pytest.skip(f"{tool} not installed")


def table_of(path):
    with Evidence(str(path)) as ev:
        return read_partition_table(ev)


def test_sfdisk_dos_with_extended_and_logicals(tmp_path):
    need("sfdisk")
    img = tmp_path / "dos.img"
    with open(img, "wb") as fh:
        fh.truncate(64 * MIB)
    script = ("label: dos\nstart=2048, size=20480, type=83\nstart=22528, size=61440, type=5\n"
              "start=24576, size=10240, type=8e\nstart=36864, size=20480, type=83\n")
    realtools.run("sh", "-c", f"printf '{script}' | sfdisk -q {img}")
    truth = json.loads(realtools.run("sfdisk", "--json", str(img)).stdout)["partitiontable"]
    want = [(int(p["node"].rsplit("img", 1)[1]), p["start"] * 512, p["size"] * 512,
             "lvm" if p["type"] == "8e" else f"0x{int(p['type'], 16):02x}")
            for p in truth["partitions"] if p["type"] != "5"]
    t = table_of(img)
    assert t.scheme == "mbr" and t.details["disk_signature"] == int(truth["id"], 16)
    assert [(p.index, p.offset, p.bytes, p.type) for p in t.partitions] == want
    assert want[1][3] == "lvm"


def test_ntfs_boot_sector_is_not_a_partition_table(tmp_path):
    need("mkntfs")
    img = tmp_path / "ntfs.img"
    with open(img, "wb") as fh:
        fh.truncate(8 * MIB)
    realtools.run("mkntfs", "-F", "-Q", "-q", str(img))
    sector = img.read_bytes()[:512]
    assert sector[510:] == b"\x55\xaa"
    assert parse_mbr_sector(sector) is None
    t = table_of(img)
    assert t.scheme is None and t.partitions == []
    assert [f.kind for f in t.findings] == ["vbr-not-mbr"]


def sgdisk_image(path, size=64 * MIB):
    with open(path, "wb") as fh:
        fh.truncate(size)
    realtools.run("sgdisk", "-n", "1:2048:+8M", "-t", "1:8300", "-c", "1:root",
                  "-n", "2:0:+4M", "-t", "2:EF00", "-n", "3:0:0", "-t", "3:8E00", str(path))
    out = realtools.run("sgdisk", "-p", str(path)).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and len(parts) >= 6:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[5]))
    return rows


def test_sgdisk_gpt_and_backup_header(tmp_path):
    need("sgdisk")
    img = tmp_path / "gpt.img"
    rows = sgdisk_image(img)
    t = table_of(img)
    assert t.scheme == "gpt" and t.details["used"] == "primary"
    assert [(p.index, p.offset // 512, p.end // 512 - 1) for p in t.partitions] == \
        [(i, a, b) for i, a, b, _ in rows]
    assert [p.type for p in t.partitions][2] == "lvm" and rows[2][3] == "8E00"
    assert t.partitions[0].name == "root"
    # the primary header damaged: the backup at the last LBA is used, and said so
    with open(img, "r+b") as fh:
        fh.seek(512 + 40)
        fh.write(b"\xff" * 8)
    t2 = table_of(img)
    assert t2.details["used"] == "backup" and t2.details["backup_offset"] == 64 * MIB - 512
    assert [(p.index, p.offset, p.bytes, p.type) for p in t2.partitions] == \
        [(p.index, p.offset, p.bytes, p.type) for p in t.partitions]
    assert {"gpt-header-crc", "gpt-backup-used"} <= {f.kind for f in t2.findings}
    # primary entry array damaged (header intact): the array CRC catches it
    img2 = tmp_path / "gpt2.img"
    sgdisk_image(img2)
    with open(img2, "r+b") as fh:
        fh.seek(1024 + 128 + 32)
        fh.write(b"\x01\x02\x03")
    t3 = table_of(img2)
    assert t3.details["used"] == "backup" and "gpt-array-crc" in {f.kind for f in t3.findings}
    assert [(p.offset, p.bytes) for p in t3.partitions] == [(p.offset, p.bytes) for p in t.partitions]


def test_gpt_4096_byte_sectors(tmp_path):
    realtools.need_lvm()          # root + loop devices
    need("sgdisk")
    img = tmp_path / "gpt4k.img"
    with open(img, "wb") as fh:
        fh.truncate(64 * MIB)
    dev = realtools.run("losetup", "-f", "--show", "--sector-size", "4096", str(img)).stdout.strip()
    try:
        realtools.run("sgdisk", "-n", "1:256:+16M", "-t", "1:8E00", dev)
    finally:
        realtools.run("losetup", "-d", dev, check=False)
    data = img.read_bytes()
    assert data[4096:4104] == b"EFI PART" and data[512:520] != b"EFI PART"
    t = table_of(img)
    assert t.scheme == "gpt" and t.sector_size == 4096
    (p,) = t.partitions
    assert (p.offset, p.bytes, p.type) == (MIB, 16 * MIB, "lvm")


def test_ebr_loop_is_bounded():
    disk = bytearray(4 * MIB)
    entry = dos_partition.build(dict(boot_ind=0, bh=0, bs=0, bc=0, sys_ind=0x05, eh=0, es=0, ec=0,
                                     start_sect=100, nr_sects=1000))
    disk[446:462] = entry
    disk[510:512] = b"\x55\xaa"
    ebr = 100 * 512
    disk[ebr + 446: ebr + 462] = dos_partition.build(dict(boot_ind=0, bh=0, bs=0, bc=0,
                                                          sys_ind=0x83, eh=0, es=0, ec=0,
                                                          start_sect=1, nr_sects=10))
    disk[ebr + 462: ebr + 478] = entry[:8] + struct.pack("<II", 0, 1000)   # next EBR = itself
    disk[ebr + 510: ebr + 512] = b"\x55\xaa"
    t = read_partition_table(BytesSpace(bytes(disk)))
    assert [(p.index, p.offset) for p in t.partitions] == [(5, 101 * 512)]
    assert "mbr-ebr-loop" in {f.kind for f in t.findings}


def test_partition_beyond_end_is_a_finding():
    disk = bytearray(MIB)
    disk[446:462] = dos_partition.build(dict(boot_ind=0x80, bh=0, bs=0, bc=0, sys_ind=0x8E,
                                             eh=0, es=0, ec=0, start_sect=2048, nr_sects=1 << 30))
    disk[510:512] = b"\x55\xaa"
    t = read_partition_table(BytesSpace(bytes(disk)))
    assert t.partitions[0].type == "lvm" and t.partitions[0].details["active"]
    assert [f.kind for f in t.findings] == ["partition-beyond-end"]


@given(st.binary(min_size=0, max_size=2048), st.booleans(), st.booleans())
@FAST
def test_garbage_tables_never_crash(data, sig, protective):
    disk = bytearray(data.ljust(8192, b"\0"))
    if sig:
        disk[510:512] = b"\x55\xaa"
    if protective:
        disk[450] = 0xEE
    if len(data) > 600 and data[0] & 1:
        disk[512:520] = b"EFI PART"
    read_partition_table(BytesSpace(bytes(disk)))


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
@FAST
def test_gpt_absurd_counts_are_bounded(count, esize, lba):
    hdr = dict(signature=b"EFI PART", revision=0x10000, size=92, crc32=0, reserved1=0, my_lba=1,
               alternative_lba=lba, first_usable_lba=34, last_usable_lba=lba,
               disk_guid=bytes(16), partition_entry_lba=lba, npartition_entries=count,
               sizeof_partition_entry=esize, partition_entry_array_crc32=0)
    raw = bytearray(gpt_header.build(hdr))
    raw[16:20] = gpt_crc32(bytes(raw[:92])).to_bytes(4, "little")
    disk = bytearray(16384)
    disk[450] = 0xEE
    disk[510:512] = b"\x55\xaa"
    disk[512:512 + 92] = raw
    read_partition_table(BytesSpace(bytes(disk)))
