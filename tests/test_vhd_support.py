"""Helpers for the VHD/export tests: SR images built with REAL lvm2 (no device-mapper: the LV
contents are written into the image file at data_offset + PE * 4 MiB per `lvs --segments`),
VHDs written by real qemu-img, random-ish raw disks with holes, and map files."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field

import numpy as np

import realtools
from core.spaces import extent_space, map_runs_to_pes

EXTENT = 4 << 20


def random_raw(path, size: int, seed: int = 0, hole_every: int = 3) -> bytes | None:
    """A raw disk of `size` bytes: random 2 MiB-ish chunks, all-zero chunks (holes that qemu
    leaves unallocated) and partly-zero chunks; written to `path` (sparse)."""
    rng = np.random.default_rng(seed)
    chunk = 1 << 20
    with open(path, "wb") as f:
        f.truncate(size)
        for i, off in enumerate(range(0, size, chunk)):
            n = min(chunk, size - off)
            if i % hole_every == 1:
                continue  # hole
            data = rng.integers(0, 256, n, dtype=np.uint8)
            if i % 5 == 0:
                data[: n // 3] = 0  # partly zero
            f.seek(off)
            f.write(data.tobytes())


def qemu_img(*args: str) -> None:
    realtools.run("qemu-img", *args)


def qemu_to_raw(vhd: str, raw: str) -> None:
    if os.path.exists(raw):
        os.unlink(raw)
    qemu_img("convert", "-f", "vpc", "-O", "raw", vhd, raw)


def same_file(a, b) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 << 20), fb.read(8 << 20)
            if x != y:
                return False
            if not x:
                return True


@dataclass
class LvmSr:
    """A VG on a loop device over an image file; LVs created/removed with real lvm2."""

    path: str
    dev: str
    vg: str
    data_offset: int = 0
    written: dict = field(default_factory=dict)

    def lvm(self, cmd: str, *args: str, check: bool = True):
        return realtools.lvm(cmd, *args, devices=[self.dev], check=check)

    def lvcreate(self, name: str, extents: int, tags: tuple[str, ...] = ()) -> None:
        extra = []
        for t in tags:
            extra += ["--addtag", t]
        self.lvm("lvcreate", "-n", name, "-l", str(extents), *extra, self.vg)

    def lvextend(self, name: str, extents: int) -> None:
        self.lvm("lvextend", "-l", f"+{extents}", f"{self.vg}/{name}")

    def lvremove(self, name: str) -> None:
        self.lvm("lvremove", f"{self.vg}/{name}")

    def segments(self) -> dict[str, list[tuple[int, int, int]]]:
        return realtools.lvs_segments(self.vg, [self.dev])

    def pes(self, name: str) -> list[int]:
        return map_runs_to_pes(self.segments()[name])

    def lv_size(self, name: str) -> int:
        return len(self.pes(name)) * EXTENT

    def write_lv(self, name: str, source, lv_offset: int = 0) -> None:
        """Write bytes (or a file's content) into the LV's extents inside the image file."""
        pes = self.pes(name)
        if isinstance(source, (bytes, bytearray)):
            total = len(source)
            read = lambda off, n: bytes(source[off: off + n])  # noqa: E731
            fh = None
        else:
            fh = open(source, "rb")
            total = os.fstat(fh.fileno()).st_size

            def read(off, n):
                fh.seek(off)
                return fh.read(n)
        try:
            assert lv_offset + total <= len(pes) * EXTENT, "data larger than the LV"
            with open(self.path, "r+b") as img:
                pos = 0
                while pos < total:
                    lvpos = lv_offset + pos
                    le, within = divmod(lvpos, EXTENT)
                    n = min(EXTENT - within, total - pos)
                    data = read(pos, n)
                    if any(data):  # keep the image sparse
                        img.seek(self.data_offset + pes[le] * EXTENT + within)
                        img.write(data)
                    pos += n
        finally:
            if fh is not None:
                fh.close()

    def space(self, ev, name: str):
        return extent_space(ev, self.data_offset, EXTENT, self.pes(name), name=name)

    def map_doc(self, names: list[str] | None = None) -> dict:
        """A `reconstruct --json`-shaped map of the LVs (what `export --map` reads)."""
        segs = self.segments()
        vdis = []
        for name, runs in segs.items():
            if names is not None and name not in names:
                continue
            n = sum(r[2] for r in runs)
            vdis.append({"key": name, "lv": name, "vhd_uuid": None, "virtual_bytes": 0,
                         "vhd_bytes": n * EXTENT, "extents_needed": n,
                         "map": [list(r) for r in runs],
                         "extents": [], "missing_les": [], "complete": True})
        return {"volume_groups": [{"name": self.vg, "extent_bytes": EXTENT,
                                   "data_offset": self.data_offset}], "vdis": vdis}

    def write_map(self, path, names=None) -> str:
        with open(path, "w") as f:
            json.dump(self.map_doc(names), f)
        return str(path)


@contextlib.contextmanager
def lvm_sr(tmp_path, size_mib: int = 96):
    """A fresh SR-like VG (`VG_XenStorage-<uuid>`, 4 MiB extents, 10 MiB metadata area)."""
    realtools.need_lvm()
    path = str(tmp_path / "sr.img")
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    with realtools.loop_device(path) as dev:
        vg = f"VG_XenStorage-{uuid.uuid4()}"
        realtools.lvm("pvcreate", "--metadatasize", "10M", dev, devices=[dev])
        realtools.lvm("vgcreate", "-s", "4M", vg, dev, devices=[dev])
        out = realtools.lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start",
                            dev, devices=[dev]).stdout
        sr = LvmSr(path, dev, vg, int(out.strip()))
        try:
            yield sr
        finally:
            subprocess.run(["lvm", "vgremove", "-f", "--devices", dev, "--driverloaded", "n", vg],
                           capture_output=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the srsalvage CLI in a subprocess (exit codes and stdout/stderr as a user sees them)."""
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True,
                          text=True, cwd=root)


def test_random_raw_has_holes_and_data(tmp_path):
    p = tmp_path / "r.raw"
    random_raw(p, 8 << 20, seed=3)
    data = p.read_bytes()
    assert len(data) == 8 << 20
    assert not any(data[1 << 20: 2 << 20])      # a hole
    assert any(data[0: 1 << 20])
