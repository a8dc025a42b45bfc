"""Helpers for interop tests that drive the real tools (lvm2, qemu-img, sgdisk) as root.

Loop devices are few and shared: take one with `losetup -f --show`, always release it.
LVM commands are restricted to the test's own loop devices with `--devices`, so tests never see
each other's PVs (or the host's), and activation is skipped (`--driverloaded n`, `-an`): there is
no device-mapper here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from typing import Iterator

import pytest

LVM_ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def is_root() -> bool:
    return os.geteuid() == 0


def need_lvm() -> None:
    """Skip the calling test unless real lvm2 and loop devices are usable."""
    if not have("lvm", "losetup"):
        pytest.skip("lvm2 not installed (apt-get install lvm2)")
    if not is_root():
        pytest.skip("real lvm2 tests need root for loop devices")
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no loop devices on this machine")


def need_qemu_img() -> None:
    if not have("qemu-img"):
        pytest.skip("qemu-img not installed (apt-get install qemu-utils)")


def run(*cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or LVM_ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@contextlib.contextmanager
def loop_device(path: str, offset: int = 0, sizelimit: int | None = None) -> Iterator[str]:
    """Attach `path` (from byte `offset`) to a free loop device; detached on exit."""
    cmd = ["losetup", "-f", "--show"]
    if offset:
        cmd += ["-o", str(offset)]
    if sizelimit:
        cmd += ["--sizelimit", str(sizelimit)]
    dev = run(*cmd, path).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def lvm(command: str, *args: str, devices: list[str] | tuple[str, ...] = (),
        check: bool = True) -> subprocess.CompletedProcess:
    """Run one lvm command restricted to `devices`; LV changes never activate anything."""
    cmd = ["lvm", command]
    for dev in devices:
        cmd += ["--devices", dev]
    if command in ("lvcreate", "lvextend", "lvreduce", "lvresize", "lvremove", "lvrename",
                   "lvchange"):
        cmd += ["--driverloaded", "n"]
    if command == "lvcreate":
        cmd += ["-an", "-Zn", "-Wn", "-y"]
    if command in ("lvremove",):
        cmd += ["-f"]
    return run(*cmd, *args, check=check)


def lvs_segments_by_pv(vg: str, devices: list[str] | tuple[str, ...]
                       ) -> dict[str, list[tuple[int, str, int, int]]]:
    """{lv_name: [(le_start, pv device, pe_start, count), ...]} from `lvs --segments`: the
    true maps with the PV of each range."""
    out = lvm("lvs", "--segments", "--noheadings", "--separator", ";", "-o",
              "lv_name,seg_start_pe,seg_pe_ranges", vg, devices=devices).stdout
    maps: dict[str, list[tuple[int, str, int, int]]] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        name, le_text, ranges = (x.strip() for x in line.split(";"))
        le = int(le_text)
        for rng in ranges.split():
            m = re.fullmatch(r"(.*):(\d+)-(\d+)", rng)
            assert m, rng
            a, b = int(m.group(2)), int(m.group(3))
            maps.setdefault(name, []).append((le, m.group(1), a, b - a + 1))
            le += b - a + 1
    return maps


def lvs_segments(vg: str, devices: list[str] | tuple[str, ...]) -> dict[str, list[tuple[int, int, int]]]:
    """{lv_name: [(le_start, pe_start, count), ...]} as `lvs --segments` reports the true maps."""
    return {name: sorted((le, pe, count) for le, _dev, pe, count in runs)
            for name, runs in lvs_segments_by_pv(vg, devices).items()}


def pvck_generations(path: str, settings: str | None = None) -> list[dict]:
    """What `pvck --dump metadata_all` (or metadata_search with settings) lists: one dict per copy
    with absolute `offset`, `length`, `crc`, `vg`, `seqno`."""
    cmd = ["pvck", "--dump", "metadata_search" if settings else "metadata_all"]
    if settings:
        cmd += ["--settings", settings]
    out = run(*cmd, path, check=False)
    found = []
    for m in re.finditer(r"metadata at (\d+) length (\d+) crc ([0-9a-f]+) vg (\S+) seqno (\d+)",
                         out.stdout + out.stderr):
        found.append({"offset": int(m.group(1)), "length": int(m.group(2)), "crc": m.group(3),
                      "vg": m.group(4), "seqno": int(m.group(5))})
    return found
