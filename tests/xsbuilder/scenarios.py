"""Life cycles of XenServer-like SRs, one per kind of layout, varied by seed.

Kinds (what the reconstruction must survive):
* ``thick``  - thick-provisioned VDIs (calcSizeVHDLV LVs), created and written in turns;
* ``thin``   - thin SR: VDIs created small, inflated on every attach, deflated on detach;
* ``resized`` - VDIs grown with VDI.resize (thick: inflate + `vhd-util resize`, the old footer
  stays inside the LV; thin: only the footers change), written before and after;
* ``snapshots`` - nightly snapshot backups: snapshots, writes, snapshot deletes and the GC's
  coalesce of a base copy into its parent (libvhd zero-filling writes), garbage removal;
* ``reused`` - VDIs deleted and their extents reused by later lvcreate/lvresize;
* ``label-gone`` - any of the above, and the PV label wiped too.
Every kind: a disk with a previous life, GPT partition or whole disk, ext4 or NTFS guests,
partitioned or not, and at the end the metadata area zeroed (sector 1 label kept unless
``label-gone``).
"""

from __future__ import annotations

import random
import uuid as uuidlib
from pathlib import Path

import realtools as rt

from . import truth as T
from .guest import GuestDisk
from .lvmsr import LvmSr
from .pastlife import write_previous_life
from .smops import XsSr, calc_size_vhd_lv

MiB = 1 << 20
KINDS = ("thick", "thin", "resized", "snapshots", "reused", "label-gone")


def _need_tools() -> None:
    rt.need_lvm()
    for tool in ("sgdisk", "sfdisk", "mkfs.ext4", "debugfs", "mkntfs", "ntfscp", "ntfslabel"):
        if not rt.have(tool):
            import pytest
            pytest.skip(f"{tool} not installed")


class Builder:
    """One SR's life; `run()` returns (image path, truth)."""

    def __init__(self, kind: str, seed: int, workdir: Path, damage: bool = True,
                 life: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.damage = damage
        self.life = life
        self.seed = seed
        self.rng = random.Random(f"{kind}:{seed}")
        self.dir = Path(workdir)
        self.image = self.dir / "sr.img"
        self.guests = 0
        self.snap_n = 0
        self.dirty: set[str] = set()

    # -- disk ----------------------------------------------------------------------------------
    def _disk(self) -> tuple[int, int, bool]:
        size = self.rng.choice((256, 320, 384, 448, 512)) * MiB
        with open(self.image, "wb") as f:
            f.truncate(size)
        gpt = self.rng.random() < 0.5
        if not gpt:
            return 0, size, False
        # a XenServer install disk: boot and log partitions first, the SR in the last one
        rt.run("sgdisk", "-n", "1:2048:+16M", "-n", "2:0:+4M", "-n", "3:0:0",
               "-t", "3:8E00", str(self.image))
        out = rt.run("sgdisk", "-i", "3", str(self.image)).stdout
        first = int(out.split("First sector: ")[1].split()[0])
        last = int(out.split("Last sector: ")[1].split()[0])
        return first * 512, (last - first + 1) * 512, True

    def _guest(self, size: int) -> GuestDisk:
        self.guests += 1
        fs = self.rng.choice(("ext4", "ntfs"))
        return GuestDisk(self.dir, f"g{self.guests}", size, fs, self.rng.random() < 0.7,
                         self.rng)

    # -- guest activity --------------------------------------------------------------------------
    def _io(self, xs: XsSr, vdi, rounds: int = 1, first: bool = False) -> None:
        g = vdi.guest
        need = calc_size_vhd_lv(vdi.vhd.curr_size) - xs.lvm.lv_size(vdi.lv_name)
        if need > 0 and not self._fits(xs, need):
            return                                      # no room to inflate: not attached
        bursts = []
        if first:
            bursts.append(g.format())
        for _ in range(rounds):
            room = g.size // 6
            bursts.append(g.write_files(self.rng.randint(1, 6),
                                        self.rng.randint(room // 8, room)))
        xs.guest_io(vdi, bursts)
        self.dirty.add(vdi.uuid)

    def _settle(self, xs: XsSr) -> None:
        """Save the guest disks written since the last look (what their VDIs now hold)."""
        for u in sorted(self.dirty):
            v = xs.vdis.get(u)
            if v is not None and v.guest is not None:
                v.expected = v.guest.state(f"{u[:8]}-{len(xs.events)}")
        self.dirty.clear()

    def _new_vdi(self, xs: XsSr, label: str):
        size = self.rng.choice((24, 32, 40, 48, 64, 80, 96)) * MiB
        return xs.create_vdi(size, label, self._guest(size))

    def _fits(self, xs: XsSr, extra: int) -> bool:
        used = sum(len(p) for p in xs.lvm.maps.values())
        return (used + extra // xs.lvm.extent + 2) <= self.pe_count

    # -- the life ----------------------------------------------------------------------------------
    def run(self) -> tuple[str, dict]:
        _need_tools()
        part_offset, part_bytes, gpt = self._disk()
        sr_uuid = str(uuidlib.UUID(bytes=self.rng.randbytes(16), version=4))
        provision = "thin" if self.kind == "thin" or (
            self.kind in ("resized", "snapshots", "reused", "label-gone")
            and self.rng.random() < 0.4) else "thick"
        lvm = LvmSr(str(self.image), part_offset, part_bytes, sr_uuid)
        with lvm:
            xs = XsSr(lvm, provision, self.rng)
            xs.create_sr()
            self.pe_count = int(rt.lvm("vgs", "--noheadings", "-o", "vg_extent_count",
                                       lvm.vg, devices=[lvm.dev]).stdout.strip())
            past = write_previous_life(lvm, self.pe_count, self.rng)
            xs.introduce_mgt()
            getattr(self, "_life_" + self.kind.replace("-", "_"))(xs)
            self._settle(xs)
            wipe_label = self.kind == "label-gone"
            meta = {"kind": self.kind, "seed": self.seed, "gpt": gpt,
                    "part_offset": part_offset, "pe_start": lvm.pe_start,
                    "data_offset": part_offset + lvm.pe_start, "vg": lvm.vg,
                    "pv_uuid": lvm.pv_uuid, "provision": provision,
                    "label_wiped": wipe_label, "image": str(self.image),
                    "lvm_commands": lvm.log}
            truth = T.collect(xs, meta, past, str(self.dir))
        if self.damage:
            self._damage(part_offset, lvm.pe_start, wipe_label)
        truth["meta"]["damaged"] = self.damage
        return str(self.image), truth

    def _damage(self, part_offset: int, pe_start: int, wipe_label: bool) -> None:
        """The metadata area zeroed (mda header and ring, 4 KiB .. pe_start); with the label,
        the PV's first 4 KiB too (the label in sector 1)."""
        with open(self.image, "r+b") as f:
            f.seek(part_offset + 4096)
            f.write(bytes(pe_start - 4096))
            if wipe_label:
                f.seek(part_offset)
                f.write(bytes(4096))

    def _life_thick(self, xs: XsSr) -> None:
        self._populate(xs, self.rng.randint(2, 5))

    _life_thin = _life_thick

    def _populate(self, xs: XsSr, n: int) -> list:
        vdis = []
        for i in range(n):
            if not self._fits(xs, 140 * MiB if xs.provision == "thick" else 8 * MiB):
                break
            vdis.append(self._new_vdi(xs, f"disk {i}"))
            if self.rng.random() < 0.5:                 # used at once, or later in turns
                self._io(xs, vdis[-1], first=True)
        for v in vdis:
            if v.expected is None:
                self._io(xs, v, first=True)
        for _ in range(self.rng.randint(1, 3)):         # more turns, interleaved
            for v in self.rng.sample(vdis, len(vdis)):
                if self.rng.random() < 0.6 and self._fits(xs, 16 * MiB):
                    self._io(xs, v)
        return vdis

    def _life_resized(self, xs: XsSr) -> None:
        vdis = self._populate(xs, self.rng.randint(2, 4))
        for v in vdis:
            if self.rng.random() < 0.8 or v is vdis[0]:
                new = v.vhd.curr_size + self.rng.choice((8, 16, 32, 64)) * MiB
                if not self._fits(xs, new - v.vhd.curr_size + 8 * MiB):
                    continue
                xs.resize(v, new)
                burst = v.guest.grow(v.vhd.curr_size)
                xs.guest_io(v, [burst])
                self.dirty.add(v.uuid)
                if self.rng.random() < 0.5:
                    self._io(xs, v)

    def _life_snapshots(self, xs: XsSr) -> None:
        vdis = self._populate(xs, self.rng.randint(1, 2))
        snaps = []
        nights = self.rng.randint(2, 3)
        for night in range(nights):
            for v in vdis:
                if not self._fits(xs, calc_size_vhd_lv(v.vhd.curr_size) + 16 * MiB):
                    break
                self.snap_n += 1
                self._settle(xs)
                snaps.append(xs.snapshot(v, f"backup {night} of {v.label}"))
                self._io(xs, v)
            # the backup is exported, then the snapshot deleted (most nights; tonight's
            # backups are still there when the SR fails)
            for s in list(snaps):
                if night < nights - 1 and self.rng.random() < 0.7:
                    xs.delete_vdi(s)
                    snaps.remove(s)

    def _life_reused(self, xs: XsSr) -> None:
        vdis = self._populate(xs, self.rng.randint(2, 4))
        for v in self.rng.sample(vdis, self.rng.randint(1, max(1, len(vdis) - 1))):
            xs.delete_vdi(v)
            vdis.remove(v)
        self._populate(xs, self.rng.randint(1, 3))
        for v in vdis:
            if self.rng.random() < 0.5 and self._fits(xs, 16 * MiB):
                self._io(xs, v)

    def _life_label_gone(self, xs: XsSr) -> None:
        life = self.life or self.rng.choice(("thick", "resized", "snapshots", "reused"))
        getattr(self, "_life_" + life)(xs)


def build(kind: str, seed: int, workdir, damage: bool = True,
          life: str | None = None) -> tuple[str, dict]:
    """Build one SR image in `workdir`: (image path, truth). `damage=False` leaves the LVM
    metadata in place (to check the truth against lvm2); `life` picks the life cycle of a
    `label-gone` SR (thick, resized, snapshots, reused)."""
    return Builder(kind, seed, Path(workdir), damage, life).run()
