"""An LVM SR on a loop device, made with real lvm2 the way sm makes and changes it.

* SR create: xapi-project/sm libs/sm/lvutil.py `createVG`: `dd if=/dev/zero bs=1M count=10`
  over the device, `pvcreate -ff -y --metadatasize 10M`, `vgcreate --metadatasize 10M
  VG_XenStorage-<sr uuid>` (lvm2's default 4 MiB extents); drivers/LVHDSR.py
  `_introduceMetaDataVolume` then creates the 4 MiB `MGT` LV.
* LV create / resize / rename / remove / read-only: lvutil.py `create` (`lvcreate -n NAME -L
  MB`, lvm2 zeroes the first 4 KiB of a new LV by default), `setSize` (`lvresize -L MB`),
  `rename` (`lvrename`), `remove` (`lvremove -f`), `setReadonly` (`lvchange -p r`).
There is no device-mapper here, so LVs are never activated (tests/realtools.py): data is
written into the image file at the offsets `lvs --segments` reports for each LE.
"""

from __future__ import annotations

import os
import subprocess

import realtools as rt

MiB = 1 << 20
EXTENT = 4 * MiB                     # lvm2 vgcreate default; sm lvutil.LVM_SIZE_INCREMENT


class LvmSr:
    """A VG on a loop device over `image` (at byte `part_offset` when partitioned)."""

    def __init__(self, image: str, part_offset: int, part_bytes: int, sr_uuid: str):
        self.path = image
        self.part_offset = part_offset
        self.part_bytes = part_bytes
        self.sr_uuid = sr_uuid
        self.vg = f"VG_XenStorage-{sr_uuid}"
        self.extent = EXTENT
        self.maps: dict[str, list[int]] = {}
        self.dev: str | None = None
        self.pe_start = 0
        self.pv_uuid = ""
        self.image = None
        self.log: list[str] = []

    # -- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> "LvmSr":
        self.dev = rt.run("losetup", "-f", "--show", "-o", str(self.part_offset),
                          "--sizelimit", str(self.part_bytes), self.path).stdout.strip()
        self.image = open(self.path, "r+b")
        return self

    def __exit__(self, *exc) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None
        if self.dev:
            subprocess.run(["losetup", "-d", self.dev], capture_output=True)
            self.dev = None

    def _lvm(self, cmd: str, *args: str) -> str:
        self.image.flush()
        os.fsync(self.image.fileno())
        self.log.append(" ".join((cmd,) + args))
        return rt.lvm(cmd, *args, devices=[self.dev]).stdout

    def pe_offset(self, pe: int) -> int:
        return self.part_offset + self.pe_start + pe * self.extent

    # -- sm lvutil.createVG + LVHDSR._introduceMetaDataVolume ----------------------------------
    def create(self) -> None:
        self.image.seek(self.part_offset)
        self.image.write(bytes(10 * MiB))                    # createVG: dd count=10 bs=1M
        self._lvm("pvcreate", "-ff", "-y", "--metadatasize", "10M", self.dev)
        self._lvm("vgcreate", "--metadatasize", "10M", self.vg, self.dev)
        out = self._lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o",
                        "pe_start,pv_uuid,vg_extent_size", self.dev).split()
        self.pe_start, self.pv_uuid, ext = int(out[0]), out[1], int(out[2])
        assert ext == EXTENT, f"lvm2 default extent size {ext} is not 4 MiB"

    def refresh(self) -> None:
        self.maps = {}
        for name, segs in rt.lvs_segments(self.vg, [self.dev]).items():
            pes: list[int] = []
            for le, pe, count in sorted(segs):
                assert le == len(pes)
                pes.extend(range(pe, pe + count))
            self.maps[name] = pes

    def lv_create(self, name: str, size: int) -> None:
        """lvutil.create: `lvcreate -n NAME -L MB` (size in 4 MiB steps, sm rounds first)."""
        self._lvm("lvcreate", "-n", name, "-L", f"{size // MiB}m", self.vg)
        self.refresh()
        # lvm2 zeroes the start of a new LV (lvcreate -Z y, the default; 4 KiB)
        self.image.seek(self.pe_offset(self.maps[name][0]))
        self.image.write(bytes(4096))

    def lv_resize(self, name: str, size: int) -> None:
        """lvutil.setSize: `lvresize -L MB` (grows in PE order from free space, shrinks from
        the end)."""
        cur = len(self.maps[name]) * self.extent
        if size == cur:
            return
        args = ["-L", f"{size // MiB}m", f"{self.vg}/{name}"]
        if size < cur:
            args.insert(0, "-f")
        self._lvm("lvresize", *args)
        self.refresh()

    def lv_rename(self, old: str, new: str) -> None:
        self._lvm("lvrename", self.vg, old, new)
        self.refresh()

    def lv_remove(self, name: str) -> None:
        self._lvm("lvremove", f"{self.vg}/{name}")
        self.refresh()

    def lv_readonly(self, name: str, readonly: bool = True) -> None:
        proc = rt.lvm("lvchange", "-p", "r" if readonly else "rw", f"{self.vg}/{name}",
                      devices=[self.dev], check=False)
        self.log.append(f"lvchange -p {'r' if readonly else 'rw'} {name} -> {proc.returncode}")

    def lv_size(self, name: str) -> int:
        return len(self.maps[name]) * self.extent
