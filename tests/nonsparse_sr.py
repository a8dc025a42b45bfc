"""A NON-sparse SR image for read-count measurements (issue 14): every byte is real data.

Sparse images hide how often a command reads the evidence (holes are skipped and cost nothing),
so this builder fills the image (or its first `data_bytes`) with realistic bytes first: a disk's
previous life (random blocks with a share of log-like text, bench/_common.realistic_chunk).
Then, as sm builds an SR (xapi-project/sm libs/sm/lvutil.py `createVG`: 10 MiB zeroed,
`pvcreate -ff -y --metadatasize 10M`, `vgcreate` with 4 MiB extents, the 4 MiB `MGT` LV), VDIs
are created and grown in turns with real lvm2 on a loop device (tests/lvm_sr.py, so their extents
interleave) and LVHD VHDs written into them where `lvs --segments` puts each LE: blocks full of
guest data (two thirds fully written, the rest partly, with stale bytes under clear bitmap bits
as tapdisk on LVM leaves them), thin VDIs leaving the tail of their LV to the previous life.
One VDI carries a SQL Server data file and a RAR archive (core.demo_payloads) for the carvers.
Without root or lvm2 the same layout is laid out by this module (label sector, extents in
turns) with no metadata text: the "metadata wiped" case.

`damage="metadata"` (default) zeroes the metadata area (mda header and ring, label kept), as
after the metadata was lost: `reconstruct` then rebuilds the maps from VHD structure.
"""

from __future__ import annotations

import os
import random
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from core.demo_content import ExtentFile

MiB = 1 << 20
E = 4 * MiB                       # lvm2's default extent size, sm's LVM_SIZE_INCREMENT
BLOCK = 2 * MiB                   # VHD block size (blktap)
SECTORS = BLOCK // 512
SM_OVERHEAD = 4_329_472           # sm lvhdutil.calcOverheadEmpty for 2 TiB of metadata


@dataclass
class BuiltImage:
    path: str
    size: int
    data_bytes: int               # bytes holding real data from the start (the rest: a hole)
    lvm2: bool                    # True: real lvm2 made the PV/VG/LVs
    pe_start: int
    vg: str
    maps: dict[str, list[int]] = field(default_factory=dict)   # LV name -> PE per LE
    damage: str = "metadata"

    @property
    def allocated_bytes(self) -> int:
        """Bytes the file system holds for the image (du): equal to data_bytes when not sparse."""
        return os.stat(self.path).st_blocks * 512


def can_use_lvm2() -> bool:
    import shutil
    return (os.geteuid() == 0 and bool(shutil.which("lvm")) and bool(shutil.which("losetup"))
            and os.path.exists("/dev/loop-control"))


def fill(path: str, nbytes: int, seed: int, chunk: int = 64 * MiB) -> None:
    """Write `nbytes` of realistic data from the start of the (existing) file."""
    from bench._common import realistic_chunk

    rng = np.random.default_rng(seed)
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < nbytes:
            n = min(chunk, nbytes - done)
            os.pwrite(fd, realistic_chunk(rng, n), done)
            done += n
    finally:
        os.close(fd)


class _GuestBlocks(Mapping):
    """Lazy blocks for build_vhd: produced one at a time (memory bounded by one block)."""

    def __init__(self, ids: list[int], seed: int, payloads: dict[int, bytes]) -> None:
        self.ids, self.seed, self.payloads = ids, seed, payloads

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, b: int):
        from bench._common import realistic_chunk
        from core.match.synth import written_pattern

        rng = np.random.default_rng([self.seed, b])
        data = bytearray(realistic_chunk(rng, BLOCK))
        prng = random.Random(self.seed * 1_000_003 + b)
        written = written_pattern(prng, full=(b % 3 != 2))
        payload = self.payloads.get(b)
        if payload is not None:      # a file the guest wrote: those sectors are written
            data[:len(payload)] = payload
            written[: -(-len(payload) // 512)] = True
        return bytes(data), written


def _plan(pe_count: int, n_vdis: int, turns: int, rng: random.Random,
          fill_fraction: float) -> list[list[int]]:
    """Sizes in extents of each VDI's segment per turn (created, then extended in turns)."""
    target = int(pe_count * fill_fraction)
    per = max(2, target // (n_vdis * turns))
    plan = [[max(1, rng.randint(per * 2 // 3, per * 4 // 3)) for _ in range(turns)]
            for _ in range(n_vdis)]
    used = sum(map(sum, plan))
    if used > target:                       # shrink the last turns to fit
        over = used - target
        for segs in plan:
            cut = min(over, segs[-1] - 1)
            segs[-1] -= cut
            over -= cut
    return plan


def _vhd_geometry(lv_bytes: int, thin: bool) -> tuple[int, int]:
    """(virtual size, allocated blocks) of an inflated LVHD VDI in an LV of lv_bytes: the
    largest virtual size whose inflated LV (sm lvhdutil.calcSizeVHDLV) fits."""
    blocks = max(1, (lv_bytes - SM_OVERHEAD - 512) // (BLOCK + 4096))
    return blocks * BLOCK, max(1, blocks // 3) if thin else blocks


def build(path: str, size: int, *, data_bytes: int | None = None, seed: int = 1,
          n_vdis: int = 10, turns: int = 3, fill_fraction: float = 0.85,
          damage: str = "metadata", use_lvm2: bool | None = None,
          log=lambda msg: None) -> BuiltImage:
    """Build the image at `path` (`size` bytes; only the first `data_bytes` hold data, the rest
    is a hole: a large sparse disk with a small SR at its start). See the module docstring."""
    if damage not in ("metadata", "none"):
        raise ValueError(f"unknown damage {damage!r}")
    data_bytes = size if data_bytes is None else min(size, data_bytes)
    use_lvm2 = can_use_lvm2() if use_lvm2 is None else use_lvm2
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
    log(f"filling {data_bytes / (1 << 30):.2f} GiB with a previous life ...")
    fill(path, data_bytes, seed)
    # sm lvutil.createVG: the first 10 MiB zeroed before pvcreate
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(10 * MiB), 0)
    finally:
        os.close(fd)
    names = [f"VHD-{uuidlib.UUID(int=rng.getrandbits(128), version=4)}" for _ in range(n_vdis)]
    if use_lvm2:
        vg, pe_start, maps = _layout_lvm2(path, data_bytes, names, turns, rng, fill_fraction, log)
    else:
        vg, pe_start, maps = _layout_python(path, size, data_bytes, names, turns, rng,
                                            fill_fraction)
    built = BuiltImage(path, size, data_bytes, use_lvm2, pe_start, vg, maps, damage)
    _write_contents(built, names, rng, seed, log)
    if damage == "metadata" or not use_lvm2:
        fd = os.open(path, os.O_WRONLY)
        try:          # the mda header and ring, label sector kept
            os.pwrite(fd, bytes(pe_start - 4096), 4096)
        finally:
            os.close(fd)
    return built


def _layout_lvm2(path: str, data_bytes: int, names: list[str], turns: int, rng: random.Random,
                 fill_fraction: float, log) -> tuple[str, int, dict[str, list[int]]]:
    import lvm_sr
    import realtools as rt

    with rt.loop_device(path) as dev:
        sr = lvm_sr.new_sr(dev, path)
        pe_count = (data_bytes - sr.pe_start) // E - 1          # the MGT took one
        plan = _plan(pe_count, len(names), turns, rng, fill_fraction)
        log(f"real lvm2: {len(names)} VDIs over {sum(map(sum, plan))} of {pe_count} extents, "
            f"{turns} turns")
        for turn in range(turns):
            for name, segs in zip(names, plan):
                if turn == 0:
                    sr.create(name, segs[0] * 4)
                else:
                    sr.extend(name, segs[turn] * 4)
        sr.refresh_maps()
        maps = {lv: [pe for _d, pe in les] for lv, les in sr.maps.items()}
        return sr.vg, sr.pe_start, maps


def _layout_python(path: str, size: int, data_bytes: int, names: list[str], turns: int,
                   rng: random.Random, fill_fraction: float
                   ) -> tuple[str, int, dict[str, list[int]]]:
    """The same layout without lvm2: a label sector (pe_start 11 MiB, sm's), the MGT at PE 0,
    segments allocated from the lowest free PE in turns (lvm2's normal policy)."""
    from core.lvm.label import build_label_sector
    from core.match.restore import lvm_id

    pe_start = 11 * MiB
    pe_count = (data_bytes - pe_start) // E - 1
    plan = _plan(pe_count, len(names), turns, rng, fill_fraction)
    maps: dict[str, list[int]] = {"MGT": [0]}
    nxt = 1
    for turn in range(turns):
        for name, segs in zip(names, plan):
            maps.setdefault(name, []).extend(range(nxt, nxt + segs[turn]))
            nxt += segs[turn]
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, build_label_sector(lvm_id(rng), size, pe_start,
                                         [(4096, pe_start - 4096)]), 512)
    finally:
        os.close(fd)
    return f"VG_XenStorage-{uuidlib.UUID(int=rng.getrandbits(128), version=4)}", pe_start, maps


def _write_contents(built: BuiltImage, names: list[str], rng: random.Random, seed: int,
                    log) -> None:
    from core.demo_payloads import backup_members, build_data_file, build_rar_archive
    from core.vhd.build import build_vhd
    from core.xen import build_mgt

    mdf = build_data_file(seed).data
    rar, _ = build_rar_archive(backup_members(seed))
    fd = os.open(built.path, os.O_WRONLY)
    image = os.fdopen(fd, "wb", closefd=False)      # the LVs' writes through their maps
    try:
        sr_uuid = built.vg.removeprefix("VG_XenStorage-")
        os.pwrite(fd, build_mgt(sr_uuid, "bench SR", vdis=[
            {"uuid": n.removeprefix("VHD-"), "name_label": f"disk {i}"}
            for i, n in enumerate(names)]), built.pe_start + built.maps["MGT"][0] * E)
        for i, name in enumerate(names):
            pes = built.maps[name]
            thin = i % 4 == 3
            virtual, nblocks = _vhd_geometry(len(pes) * E, thin)
            ids = random.Random(seed + i).sample(range(virtual // BLOCK), nblocks)
            payloads: dict[int, bytes] = {}
            if i == 0:     # a data file and an archive the guest wrote (for the carvers)
                chunks = [mdf[k:k + BLOCK] for k in range(0, len(mdf), BLOCK)] + [rar]
                payloads = dict(zip(ids, chunks))
            log(f"  {name}: {len(pes)} extents, {nblocks} blocks{' (thin)' if thin else ''}")
            build_vhd(virtual, _GuestBlocks(ids, seed * 100 + i, payloads), layout="blktap",
                      out=ExtentFile(image, built.pe_start, pes), lv_size=len(pes) * E,
                      order=ids, seed=seed * 100 + i,
                      unique_id=uuidlib.UUID(name.removeprefix("VHD-")).bytes)
        image.flush()
        os.fsync(fd)
    finally:
        image.close()
        os.close(fd)
