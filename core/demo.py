"""The demo SR builder: a realistic, damaged XenServer LVM storage repository in pure Python.

`build_demo(path)` writes a sparse image (1.5 GiB apparent, well under 300 MiB of data, a few
seconds, no root) and returns a `DemoManifest` with the ground truth, so the tool can be shown
and tested end to end. Everything on it is written with the structure builders of their owners:
the GPT with `core.structs.gpt` / `core.structs.mbr`, the PV label and mda header with
`core.lvm.label.build_label_sector` / `core.lvm.mda.build_mda_header` (construct structures of
`core.structs.lvm`), every metadata generation with `core.lvm.writer.format_vg_metadata`
from a `core.lvm.model.VGMetadata`, the MGT volume with `core.xen.build_mgt`, the VHDs with
`core.vhd.build.build_vhd` written through the LV's extent map.

What is on the disk (deterministic for a seed):
* layout `gpt` (default): protective MBR + GPT, one Linux-LVM partition from 1 MiB to the end
  (XenServer local-SR style); layout `whole-disk`: the PV is the whole disk (iSCSI/HBA SR style);
* a PV made like `pvcreate --metadatasize 10M` by lvm 2.03: label in sector 1, one mda at 4096
  of 11,530,240 bytes, pe_start 11 MiB, 4 MiB extents, VG `VG_XenStorage-<sr uuid>`;
* MANY metadata generations in the ring, each written after the previous one, 512-aligned, with
  lvm2's wrap rule (`core.lvm.mda.ring_write_offset`) and zero padding, `description` = the
  command (`Write from lvcreate -n ... .`), seqno +1 each; the mda header points at the last;
* `MGT` (first allocation, PE 0) with a name-label for every VDI, deleted ones flagged;
* VDIs: two blktap VHDs grown in turns (interleaved extents; one with partially written blocks,
  bitmap bits clear over stale bytes), one VHD *file* copied into an LV (qemu packed layout,
  footer right after the data), one raw `LV-` VDI, a snapshot chain (hidden read-only base
  copy, deflated, + differencing child with blktap parent locators), one deleted VDI left
  intact, and one deleted VDI whose first extents a newer LV claimed (and partly overwrote);
* thin-provisioning attach/detach cycles (lvextend to the full size, lvreduce back) that add
  generations without moving data (`attach_cycles`);
* every virtual sector holds a text line naming the VDI and the sector, so exports can be
  checked byte for byte against `VdiTruth.sha256`; `payloads` places given bytes at given
  virtual offsets of a named VDI (e.g. database pages for the carving tests);
* for the carvers (`carve_payloads`, on by default when no `payloads` are given;
  `core.demo_payloads`): in "sql-server-data" a generated SQL Server data file ("webshop",
  8 KiB aligned) with some pages overwritten by later writes and an older copy of a few pages
  elsewhere; in "web01 system disk" a RAR 5 backup archive and a second copy of it with a
  corrupted header CRC. `DemoManifest.carving` records what a carve must give back.

Damage (`damage=`, one name or several): `partition-table` zeroes the protective MBR and both
GPT copies (the tool must find the PV by scanning), `label` zeroes the PV label sector, `metadata`
zeroes the whole metadata area (header and ring: only VHD structures remain), `none`.
`srsalvage demo` uses `partition-table`.

Not modelled: stale footers left in freed extents by inflate/deflate, journals, CBT logs,
second metadata areas.

Beside this module: core/demo_truth.py (the manifest), core/demo_vg.py (the VG, one generation
per lvm2 command), core/demo_content.py (virtual disk contents, writing through an extent map).
"""

from __future__ import annotations

import random
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from core.demo_content import (_Content, ExtentFile, _LazyBlocks, _qemu_size, _raw_sha256,
                               _virtual_sha256)
from core.demo_payloads import demo_carving_plan
from core.demo_truth import DemoManifest, GenerationTruth, VdiTruth
from core.demo_vg import _map_runs, _uuid, _VolumeGroup, lvm_id
from core.lvm.crc import lvm_crc
from core.lvm.label import build_label_sector
from core.lvm.mda import RawLocn, build_mda_header, ring_write_offset
from core.lvm.model import PVMetadata
from core.output import AtomicOutput
from core.structs import gpt as G
from core.structs import mbr as M
from core.structs import vhd as SV
from core.structs.lvhd import LVHD_EXTENT_BYTES, SM_PE_START_BYTES, lvhd_lv_size
from core.structs.vhd import VHD_BLOCK_BYTES
from core.vhd.build import blktap_parent, build_vhd
from core.xen import build_mgt

SECTOR = 512
MIB = 1 << 20
MDA_OFFSET = 4096                       # mda1 at 4096 of the PV (lvm2 format-text.c)
MDA_SIZE = 11_530_240                   # lvm 2.03 with --metadatasize 10M (formats.md 2.4)
GPT_PARTITION_START = MIB               # partition grid: 1 MiB
DISK_BYTES = 1536 * MIB
DAMAGES = ("none", "partition-table", "label", "metadata")
LAYOUTS = ("gpt", "whole-disk")


# -- partition table -----------------------------------------------------------------------------
def _gpt(disk_bytes: int, disk_guid: uuidlib.UUID, part_guid: uuidlib.UUID
         ) -> tuple[list[tuple[int, bytes]], int, int]:
    """[(offset, bytes)] of protective MBR, primary and backup GPT; (partition start, bytes)."""
    last = disk_bytes // SECTOR - 1
    first_usable, last_usable = 34, last - 33
    start_lba = GPT_PARTITION_START // SECTOR
    name = "LVM".encode("utf-16-le").ljust(72, b"\0")
    entry = G.gpt_entry.build(dict(type=G.LINUX_LVM_GUID.bytes_le, partition_guid=part_guid.bytes_le,
                                   lba_start=start_lba, lba_end=last_usable, attrs=0, name=name))
    array = entry + bytes(G.GPT_ENTRY_SIZE * (G.GPT_NPARTITIONS - 1))
    array_crc = G.gpt_crc32(array)

    def header(my_lba: int, alt_lba: int, entries_lba: int) -> bytes:
        fields = dict(signature=G.GPT_HEADER_SIGNATURE, revision=G.GPT_HEADER_REVISION_V1_00,
                      size=G.GPT_HEADER_MINSIZE, crc32=0, reserved1=0, my_lba=my_lba,
                      alternative_lba=alt_lba, first_usable_lba=first_usable,
                      last_usable_lba=last_usable, disk_guid=disk_guid.bytes_le,
                      partition_entry_lba=entries_lba, npartition_entries=G.GPT_NPARTITIONS,
                      sizeof_partition_entry=G.GPT_ENTRY_SIZE,
                      partition_entry_array_crc32=array_crc)
        raw = G.gpt_header.build(fields)
        fields["crc32"] = G.gpt_crc32(raw[:G.GPT_HEADER_MINSIZE])
        return G.gpt_header.build(fields).ljust(SECTOR, b"\0")

    empty = dict(boot_ind=0, bh=0, bs=0, bc=0, sys_ind=0, eh=0, es=0, ec=0, start_sect=0,
                 nr_sects=0)
    protective = dict(empty, bs=2, sys_ind=M.TYPE_GPT_PROTECTIVE, eh=0xFF, es=0xFF, ec=0xFF,
                      start_sect=1, nr_sects=min(last, 0xFFFFFFFF))
    mbr = M.mbr.build(dict(bootstrap=bytes(440), disk_signature=0, unused=0,
                           partitions=[protective, empty, empty, empty]))
    pieces = [(0, mbr), (SECTOR, header(1, last, 2)), (2 * SECTOR, array),
              ((last - 32) * SECTOR, array), (last * SECTOR, header(last, 1, last - 32))]
    return pieces, start_lba * SECTOR, (last_usable - start_lba + 1) * SECTOR


# -- the build -----------------------------------------------------------------------------------
@dataclass
class _VdiPlan:
    key: str
    label: str
    description: str
    layout: str                 # blktap | qemu | raw
    virtual_mib: int
    blocks: list[int]
    partial: dict[int, np.ndarray] = field(default_factory=dict)


def _half_written(spb: int, rng: random.Random) -> np.ndarray:
    """A block written in a few runs of sectors, like a guest file system does."""
    mask = np.zeros(spb, dtype=bool)
    for _ in range(5):
        a = rng.randrange(0, spb - 64)
        mask[a:a + rng.randrange(8, 400)] = True
    mask[:8] = True
    return mask


def _vdi_plans(rng: random.Random) -> dict[str, _VdiPlan]:
    """The demo's VDIs: key -> what it is, how big, which blocks hold data."""
    spb = VHD_BLOCK_BYTES // SECTOR
    return {
        "web": _VdiPlan("web", "web01 system disk", "Debian 12 web server, root file system",
                        "blktap", 128, [0, 1, 2, 3, 4, 5, 6, 7, 40, 41, 50, 63],
                        {5: _half_written(spb, rng), 41: _half_written(spb, rng)}),
        "sql": _VdiPlan("sql", "sql-server-data", "SQL Server data disk (D:)", "blktap", 128,
                        list(range(10))),
        "appliance": _VdiPlan("appliance", "imported appliance",
                              "VHD file copied into the LV with dd", "qemu", 48, list(range(8))),
        "scratch": _VdiPlan("scratch", "install-iso-scratch", "raw scratch volume", "raw", 16,
                            list(range(8))),
        "golden": _VdiPlan("golden", "base copy", "ubuntu golden image", "blktap", 64,
                           [0, 1, 2, 3, 4, 5]),
        "vm": _VdiPlan("vm", "ubuntu vm disk", "ubuntu 22.04 test VM", "blktap", 64, [1, 3, 30],
                       {1: _half_written(spb, rng), 3: _half_written(spb, rng)}),
        "backup": _VdiPlan("backup", "old backup disk", "deleted, left intact", "blktap", 32,
                           [0, 1, 2, 3]),
        "export": _VdiPlan("export", "temp export", "deleted, partly reused by 'new log disk'",
                           "blktap", 48, list(range(10))),
        "logs": _VdiPlan("logs", "new log disk", "created after 'temp export' was deleted",
                         "blktap", 16, [0, 1]),
    }


def _story(vg: _VolumeGroup, lv_name: Callable[[str], str], extents_for: Callable[[str], int],
           virtual: Mapping[str, int], attach_cycles: int) -> None:
    """What happened to the SR, one metadata generation per lvm command (as sm issues them)."""
    vg.vgcreate()
    vg.lvcreate("MGT", 1)
    # web and sql grown in turns: interleaved extents
    web, sql = lv_name("web"), lv_name("sql")
    need = {web: extents_for("web"), sql: extents_for("sql")}
    vg.lvcreate(web, 2)
    vg.lvcreate(sql, 2)
    while any(len(vg.lvs[n].pes) < need[n] for n in (web, sql)):
        for n in (web, sql):
            grow = min(2, need[n] - len(vg.lvs[n].pes))
            if grow > 0:
                vg.lvextend(n, grow)
    vg.lvcreate(lv_name("appliance"), extents_for("appliance"))
    vg.lvcreate(lv_name("scratch"), extents_for("scratch"))
    # snapshot: the VM's LV becomes the base copy, a differencing child takes the VDI's name
    vm, golden = lv_name("vm"), lv_name("golden")
    vg.lvcreate(vm, extents_for("golden") + 1)          # inflated while the VM ran
    vg.lvrename(vm, golden)
    vg.lvchange_readonly(golden)
    vg.lvcreate(vm, extents_for("vm"))
    vg.lvreduce(golden, 1, command="lvresize")          # the base is deflated
    # thin provisioning: VDIs inflated on attach, deflated on detach (no data moves)
    for i in range(attach_cycles):
        name = (web, vm, sql)[i % 3]
        key = {web: "web", vm: "vm", sql: "sql"}[name]
        full = lvhd_lv_size(virtual[key], 0, thick=True) // LVHD_EXTENT_BYTES
        grow = max(1, full - len(vg.lvs[name].pes))
        vg.lvextend(name, grow, command="lvresize")
        vg.lvreduce(name, grow, command="lvresize")
    backup, export, logs = lv_name("backup"), lv_name("export"), lv_name("logs")
    vg.lvcreate(backup, extents_for("backup"))
    vg.lvcreate(export, extents_for("export"))
    vg.lvremove(export)
    vg.lvcreate(logs, extents_for("logs"))               # lowest free PEs: export's first ones
    vg.lvremove(backup)


def _write_ring(put: Callable[[int, bytes], None], texts: Sequence[tuple[int, bytes, str, int]],
                mda_abs: int, mda_size: int) -> list[GenerationTruth]:
    """Every generation into the metadata area as lvm2 writes it: each copy after the previous
    one rounded up to 512 (core.lvm.mda.ring_write_offset), wrapping to mda+512 past the end,
    zero-padded to a sector (formats.md 2.4)."""
    gens: list[GenerationTruth] = []
    area_end = mda_size
    prev_off = prev_size = 0
    max_copy = (mda_size - SECTOR) // 2 - SECTOR
    for seqno, text, description, ctime in texts:
        size = len(text)
        if size > max_copy:
            raise ValueError(f"metadata of {size} bytes does not fit a {mda_size}-byte mda")
        off = ring_write_offset(prev_off, prev_size, mda_size, size)
        padded = text + bytes(-size % SECTOR)
        first = min(len(padded), area_end - off)
        put(mda_abs + off, padded[:first])
        if first < len(padded):
            put(mda_abs + SECTOR, padded[first:])
        gens.append(GenerationTruth(seqno, mda_abs + off, size, lvm_crc(text),
                                    off + size > area_end, description, ctime))
        prev_off, prev_size = off, size
    return gens


def _apply_damage(put: Callable[[int, bytes], None], damages: Sequence[str],
                  gpt_pieces: Sequence[tuple[int, bytes]], pv_offset: int, mda_abs: int,
                  mda_size: int, gens: Sequence[GenerationTruth]) -> None:
    """Zero what each damage names: both GPT copies and the protective MBR, the PV label
    sector, or the metadata area (header and every copy)."""
    if "partition-table" in damages:
        for off, data in gpt_pieces:
            put(off, bytes(len(data)))
    if "label" in damages:
        put(pv_offset + SECTOR, bytes(SECTOR))
    if "metadata" in damages:
        ring_end = max(g.offset + g.bytes for g in gens) - mda_abs
        wrapped = any(g.wrapped for g in gens)
        put(mda_abs, bytes(mda_size if wrapped else -(-ring_end // SECTOR) * SECTOR))


def _normalise_damage(damage: str | Iterable[str]) -> list[str]:
    items = [damage] if isinstance(damage, str) else list(damage)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if part and part != "none":
                if part not in DAMAGES:
                    raise ValueError(f"unknown damage {part!r}; choose from {', '.join(DAMAGES)}")
                if part not in out:
                    out.append(part)
    return out


def build_demo(path: str, damage: str | Iterable[str] = "partition-table", seed: int = 0,
               layout: str = "gpt", payloads: Mapping[str, Sequence[tuple[int, bytes]]] | None = None,
               attach_cycles: int = 20, disk_bytes: int = DISK_BYTES, mda_size: int = MDA_SIZE,
               overwrite: bool = False, progress: Callable[[str], None] | None = None,
               carve_payloads: bool | None = None) -> DemoManifest:
    """Build the demo SR image at `path` (written to path.part, renamed when complete).

    damage: 'partition-table' (default), 'label', 'metadata', 'none', or several of them.
    layout: 'gpt' (PV in partition 1 at 1 MiB) or 'whole-disk' (PV at 0).
    payloads: {vdi key | label | LV name: [(virtual offset, bytes), ...]} placed into the
    virtual disk of that VDI (its blocks are allocated and their sectors marked written).
    carve_payloads: place the SQL Server data file and the RAR archives of
    `core.demo_payloads.demo_carving_plan(seed)` (before any `payloads`); None (default) = only
    when no `payloads` are given, so a caller's own payloads are the only carvable things.
    attach_cycles: thin-provisioning inflate/deflate pairs (2 generations each).
    mda_size: metadata area bytes (default as lvm 2.03 --metadatasize 10M; smaller values make
    the ring wrap, pe_start follows as mda end rounded up to 1 MiB).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    damages = _normalise_damage(damage)
    if "partition-table" in damages and layout != "gpt":
        raise ValueError("damage 'partition-table' needs layout 'gpt' (a whole-disk PV has none)")
    if mda_size < 64 * 1024 or mda_size % SECTOR:
        raise ValueError("mda_size must be a multiple of 512 and at least 64 KiB")
    say = progress or (lambda msg: None)
    rng = random.Random(seed)
    payloads = dict(payloads or {})
    if carve_payloads is None:
        carve_payloads = not payloads
    plan = demo_carving_plan(seed) if carve_payloads else None
    # (target name, items) in the order they are applied: later bytes overwrite earlier ones
    payload_items = (list(plan.payloads.items()) if plan else []) + list(payloads.items())

    sr_uuid = _uuid(rng)
    vg_name = f"VG_XenStorage-{sr_uuid}"
    disk_guid, part_guid = uuidlib.UUID(_uuid(rng)), uuidlib.UUID(_uuid(rng))
    if layout == "gpt":
        gpt_pieces, pv_offset, pv_bytes = _gpt(disk_bytes, disk_guid, part_guid)
        device = "/dev/sda3"
    else:
        gpt_pieces, pv_offset, pv_bytes = [], 0, disk_bytes
        device = "/dev/disk/by-id/scsi-demo"
    pe_start = SM_PE_START_BYTES if mda_size == MDA_SIZE else \
        -(-(MDA_OFFSET + mda_size) // MIB) * MIB
    pe_count = (pv_bytes - pe_start) // LVHD_EXTENT_BYTES
    pv_uuid = lvm_id(rng)
    pv_meta = PVMetadata("pv0", pv_uuid, device, ["ALLOCATABLE"], [], [], pv_bytes // SECTOR,
                         pe_start // SECTOR, pe_count)
    vg = _VolumeGroup(vg_name, lvm_id(rng), pv_meta, device, rng)
    data_offset = pv_offset + pe_start

    plans = _vdi_plans(rng)
    uuids = {k: _uuid(rng) for k in plans}
    unique_ids = {k: bytes(uuidlib.UUID(_uuid(rng)).bytes) for k in plans}
    contents: dict[str, _Content] = {}
    lookup = {}
    for k, p in plans.items():
        lookup.update({k: k, p.label: k, uuids[k]: k,
                       f"{'LV' if p.layout == 'raw' else 'VHD'}-{uuids[k]}": k})
    for name, _ in payload_items:
        if name not in lookup:
            raise ValueError(f"payload target {name!r} is not a demo VDI "
                             f"({', '.join(plans)})")
    for k, p in plans.items():
        mine = [item for name, items in payload_items if lookup[name] == k for item in items]
        contents[k] = _Content(k, p.label, uuids[k], p.virtual_mib * MIB, p.blocks, p.partial, mine)

    def lv_name(k: str) -> str:
        return f"{'LV' if plans[k].layout == 'raw' else 'VHD'}-{uuids[k]}"

    def extents_for(k: str) -> int:
        c = contents[k]
        if plans[k].layout == "raw":
            return -(-c.virtual // LVHD_EXTENT_BYTES)
        if plans[k].layout == "qemu":
            return -(-_qemu_size(c) // LVHD_EXTENT_BYTES)
        return lvhd_lv_size(c.virtual, len(c.blocks)) // LVHD_EXTENT_BYTES

    say("metadata generations")
    _story(vg, lv_name, extents_for, {k: c.virtual for k, c in contents.items()}, attach_cycles)
    golden = lv_name("golden")
    newest_owner = dict(vg.used)

    # -- the image -------------------------------------------------------------------------------
    say("writing the image")
    with AtomicOutput(path, overwrite=overwrite) as out:
        f = out.file
        f.truncate(disk_bytes)
        written = 0

        def put(off: int, data: bytes) -> None:
            nonlocal written
            f.seek(off)
            f.write(data)
            written += len(data)

        for off, data in gpt_pieces:
            put(off, data)
        mda_abs = pv_offset + MDA_OFFSET
        gens = _write_ring(put, vg.texts, mda_abs, mda_size)
        _mark_overwritten(gens, mda_abs, mda_size)
        last = gens[-1]
        put(mda_abs, build_mda_header(MDA_OFFSET, mda_size, [RawLocn(
            last.offset - mda_abs, last.bytes, last.checksum, 0)]))
        put(pv_offset + SECTOR, build_label_sector(pv_uuid, pv_bytes, pe_start,
                                                   [(MDA_OFFSET, mda_size)]))

        # MGT: every VDI's slot, deleted ones flagged (sm only sets <deleted>1</deleted>)
        say("MGT and virtual disks")
        slots = _mgt_slots(plans, uuids)
        mgt_pes = vg.lvs["MGT"].pes
        mgt = build_mgt(sr_uuid, "Local storage", "demo SR built by srsalvage", slots)
        ExtentFile(f, data_offset, mgt_pes).write(mgt)
        written += len(mgt)

        truths: list[VdiTruth] = []
        for k in ("web", "sql", "appliance", "scratch", "golden", "vm", "backup", "export", "logs"):
            p, c = plans[k], contents[k]
            name = lv_name(k)
            pes = vg.history[name][-1][1]
            lvf = ExtentFile(f, data_offset, pes)
            lv_bytes = len(pes) * LVHD_EXTENT_BYTES
            parent_ref = None
            if k == "vm":
                parent_ref = blktap_parent(sr_uuid, golden, unique_ids["golden"],
                                           timestamp=0x2F000000)
            blocks = _LazyBlocks(c)
            if p.layout == "raw":
                for b in c.blocks:
                    lvf.seek(b * VHD_BLOCK_BYTES)
                    lvf.write(c.block(b)[0])
                vhd = None
            else:
                order = list(c.blocks)
                if k == "web":   # blocks appear in write order, not index order
                    order = order[:4] + order[8:] + order[4:8]
                vhd = build_vhd(c.virtual, blocks, layout=p.layout, out=lvf, order=order,
                                lv_size=lv_bytes if p.layout == "blktap" else None,
                                parent=parent_ref, unique_id=unique_ids[k], seed=seed,
                                hidden=k == "golden")
            written += lvf.written
            if plan is not None and vhd is not None:
                for item in [plan.truth.data_file, *plan.truth.archives]:
                    if item.vdi == k:
                        item.disk_ranges = _disk_ranges(vhd, pes, data_offset,
                                                        item.virtual_offset, item.bytes)
            removed = vg.removed.get(name)
            claimed = {pe: newest_owner[pe] for pe in pes if removed and pe in newest_owner}
            if p.layout == "raw":
                sha = _raw_sha256(c, lv_bytes)
            else:
                sha = _virtual_sha256(c, contents["golden"] if k == "vm" else None)
            truths.append(VdiTruth(
                key=k, label=p.label, lv_name=name, vdi_uuid=uuids[k], layout=p.layout,
                disk_type=None if vhd is None else ("differencing" if k == "vm" else "dynamic"),
                virtual_bytes=c.virtual if p.layout != "raw" else lv_bytes, lv_bytes=lv_bytes,
                vhd_bytes=None if vhd is None else vhd.size,
                vhd_unique_id=None if vhd is None else str(uuidlib.UUID(bytes=unique_ids[k])),
                parent_key="golden" if k == "vm" else None, hidden=k == "golden",
                read_only=k == "golden", status="deleted" if removed else "live", pes=list(pes),
                map=_map_runs(pes), claimed_by=claimed, sha256=sha,
                stale_sectors=c.stale_runs() if p.layout == "blktap" else [],
                allocated_blocks=list(c.blocks),
                created_seqno=vg.history[name][0][0],
                removed_seqno=removed, name_description=p.description))

        _apply_damage(put, damages, gpt_pieces, pv_offset, mda_abs, mda_size, gens)

    return DemoManifest(
        path=path, layout=layout, damage=damages or ["none"], seed=seed, image_bytes=disk_bytes,
        sr_uuid=sr_uuid, vg_name=vg_name, vg_id=vg.id, pv_uuid=pv_uuid, pv_offset=pv_offset,
        pv_bytes=pv_bytes, pe_start=pe_start, pe_count=pe_count, extent_bytes=LVHD_EXTENT_BYTES,
        data_offset=data_offset, mda_offset=mda_abs, mda_size=mda_size,
        disk_guid=str(disk_guid) if layout == "gpt" else None, generations=gens,
        vdis=truths, mgt_pes=list(mgt_pes), data_bytes_written=written,
        carving=plan.truth if plan else None)


def _disk_ranges(vhd, pes: Sequence[int], data_offset: int, virtual_offset: int,
                 length: int) -> list[list[int]]:
    """[[image offset, bytes], ...] that hold virtual bytes [virtual_offset, +length) of a VHD
    written from LV offset 0 into an LV with these PEs (adjacent pieces merged)."""
    bitmap = SV.bitmap_bytes(vhd.block_size)
    out: list[list[int]] = []
    pos, end = virtual_offset, virtual_offset + length
    while pos < end:
        b, within = divmod(pos, vhd.block_size)
        if b not in vhd.block_offsets:
            raise ValueError(f"virtual offset {pos} lies in an unallocated block")
        n = min(end - pos, vhd.block_size - within)
        lv_off = vhd.block_offsets[b] + bitmap + within
        while n > 0:
            le, rest = divmod(lv_off, LVHD_EXTENT_BYTES)
            m = min(n, LVHD_EXTENT_BYTES - rest)
            disk = data_offset + pes[le] * LVHD_EXTENT_BYTES + rest
            if out and out[-1][0] + out[-1][1] == disk:
                out[-1][1] += m
            else:
                out.append([disk, m])
            lv_off += m
            pos += m
            n -= m
    return out


def _mgt_slots(plans: Mapping[str, _VdiPlan], uuids: Mapping[str, str]) -> list[dict[str, Any]]:
    """The MGT VDI slots as sm keeps them: every VDI ever created, deleted ones flagged."""
    slots = []
    for k in ("web", "sql", "appliance", "scratch", "vm", "golden", "backup", "export", "logs"):
        p = plans[k]
        slots.append({"uuid": uuids[k], "name_label": p.label, "name_description": p.description,
                      "vdi_type": "aio" if p.layout == "raw" else "vhd",
                      "read_only": 1 if k == "golden" else 0,
                      "managed": 0 if k == "golden" else 1,
                      "deleted": 1 if k in ("backup", "export") else 0,
                      "snapshot_time": "", "type": "user"})
    return slots


def _mark_overwritten(gens: list[GenerationTruth], mda_abs: int, mda_size: int) -> None:
    """intact=False for every copy a later (padded) copy overlaps in the ring."""
    def spans(g: GenerationTruth) -> list[tuple[int, int]]:
        off = g.offset - mda_abs
        size = g.bytes + (-g.bytes % SECTOR)
        first = min(size, mda_size - off)
        out = [(off, off + first)]
        if first < size:
            out.append((SECTOR, SECTOR + size - first))
        return out

    all_spans = [spans(g) for g in gens]
    for i, g in enumerate(gens):
        for later in all_spans[i + 1:]:
            if any(a < d and c < b for a, b in all_spans[i] for c, d in later):
                g.intact = False
                break


__all__ = ["build_demo", "DemoManifest", "VdiTruth", "GenerationTruth", "DAMAGES", "LAYOUTS",
           "lvm_id"]
