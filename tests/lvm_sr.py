"""Real-lvm2 SR images for the VG-anchoring, re-initialised-SR and multi-PV tests (issue 12).

Every layout decision is lvm2's: `pvcreate --metadatasize 10M` (sm's), `vgcreate -s 4M`,
`lvcreate`/`lvextend` in turns so LVs interleave, `lvs --segments` for the true maps. VDI
contents are real `qemu-img convert -O vpc` images (dynamic VHDs whose raw disk is known),
written into the LVs' extents where lvm2 put them. The MGT volume is written as sm writes it
(core.xen.build_mgt) with name-labels. Run as root with lvm2 and qemu-img (tests skip otherwise).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import realtools as rt
from core.match.synth import place_extents
from core.xen import build_mgt

E = 4 << 20
MiB = 1 << 20


def qemu_vhd(tmp, name: str, size: int, seed: int) -> tuple[bytes, bytes]:
    """(vhd bytes, raw disk bytes) of a real qemu-img vpc image with scattered data (the
    reconstruction tests' builder, its work files kept apart from the tests' outputs)."""
    from test_reconstruct_lvm import _qemu_vhd
    work = tmp / "qemu"
    work.mkdir(exist_ok=True)
    return _qemu_vhd(work, name, size, seed)


def pes_of(segs) -> list[tuple[int, int]]:
    """[(pv index in `devs`, pe)] per LE from lvs --segments (single-device form: pv 0)."""
    out = []
    for le, pe, count in sorted(segs):
        assert le == len(out)
        out.extend((0, p) for p in range(pe, pe + count))
    return out


def pe_start(dev: str) -> int:
    out = rt.lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", dev,
                 devices=[dev]).stdout
    return int(out.strip())


def segments_by_pv(vg: str, devs: list[str]) -> dict[str, list[tuple[int, str, int, int]]]:
    """{lv: [(le, device, pe, count)]} from `lvs --segments` with the PV of each range."""
    return {k: sorted(v) for k, v in rt.lvs_segments_by_pv(vg, devs).items()}


@dataclass
class SR:
    """One SR on real lvm2; `devs` the loop devices (open while building), `data_offsets`
    the image offset of PE 0 of each device's PV, `files` the image file of each device."""

    vg: str
    devs: list[str]
    files: list
    dev_offsets: list[int]                      # where each device starts in its image file
    data_offsets: list[int] = field(default_factory=list)
    maps: dict = field(default_factory=dict)    # lv -> [(device index, pe)] per LE
    raws: dict = field(default_factory=dict)    # lv -> raw disk bytes (qemu-img's source)
    vhds: dict = field(default_factory=dict)    # lv -> VHD bytes
    labels: dict = field(default_factory=dict)  # lv -> MGT name-label
    pe_start: int = 0                           # bytes from the (first) PV start to its PE 0

    @property
    def sr_uuid(self) -> str:
        return self.vg.removeprefix("VG_XenStorage-")

    def lvm(self, command: str, *args: str, check: bool = True):
        return rt.lvm(command, *args, devices=self.devs, check=check)

    def create(self, name: str, mib: int, *where: str) -> None:
        self.lvm("lvcreate", "-L", f"{mib}M", "-n", name, self.vg, *where)

    def extend(self, name: str, mib: int, *where: str) -> None:
        self.lvm("lvextend", "-L", f"+{mib}M", f"{self.vg}/{name}", *where)

    def refresh_maps(self) -> None:
        self.maps = {}
        for lv, segs in segments_by_pv(self.vg, self.devs).items():
            les = []
            for le, dev, pe, count in segs:
                assert le == len(les)
                les.extend((self.devs.index(dev), pe + i) for i in range(count))
            self.maps[lv] = les

    def write_lv(self, lv: str, data: bytes) -> None:
        """The LV's bytes at the PEs lvm2 gave it (device by device)."""
        les = self.maps[lv]
        assert len(data) <= len(les) * E, lv
        for le, (d, pe) in enumerate(les):
            chunk = data[le * E:(le + 1) * E]
            if not chunk:
                break
            with open(self.files[d], "r+b") as f:
                place_extents(f, chunk, [pe], self.data_offsets[d])

    def write_mgt(self, names: dict[str, str]) -> None:
        self.labels.update(names)
        self.write_lv("MGT", build_mgt(self.sr_uuid, "issue-12 SR", vdis=[
            {"uuid": lv.split("-", 1)[1], "name_label": label} for lv, label in names.items()]))

    def put_vdi(self, tmp, lv: str, virtual_mib: int, seed: int) -> None:
        vhd, raw = qemu_vhd(tmp, lv, virtual_mib * MiB, seed)
        self.vhds[lv], self.raws[lv] = vhd, raw
        self.write_lv(lv, vhd)


def new_image(path, size: int, gpt: bool = False) -> int:
    """A sparse image; with `gpt`, one sgdisk Linux LVM partition from 1 MiB (its offset)."""
    with open(path, "wb") as f:
        f.truncate(size)
    if not gpt:
        return 0
    if not rt.have("sgdisk"):
        import pytest
        pytest.skip("sgdisk not installed (apt-get install gdisk)")
    rt.run("sgdisk", "-n", "1:2048:0", "-t", "1:8e00", str(path))
    return 1 * MiB


def pv_create(dev: str, *extra: str) -> None:
    rt.lvm("pvcreate", "-ff", "-y", "--metadatasize", "10M", *extra, dev, devices=[dev])


def new_sr(dev: str, image, offset: int = 0) -> SR:
    """sm's sr-create on one device: PV (10 MiB metadata), `VG_XenStorage-<uuid>` with 4 MiB
    extents, the 4 MiB MGT volume first. `offset`: where the device starts in `image`."""
    pv_create(dev)
    sr = SR(vg_name(), [dev], [image], [offset])
    sr.lvm("vgcreate", "-s", "4M", sr.vg, dev)
    sr.pe_start = pe_start(dev)
    sr.data_offsets = [offset + sr.pe_start]
    sr.create("MGT", 4)
    return sr


def vg_name() -> str:
    return f"VG_XenStorage-{uuid.uuid4()}"


def vdi_name() -> str:
    return f"VHD-{uuid.uuid4()}"
