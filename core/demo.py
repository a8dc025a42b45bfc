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
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from core.demo_payloads import CarvingTruth, demo_carving_plan
from core.lvm.crc import lvm_crc
from core.lvm.label import build_label_sector
from core.lvm.mda import RawLocn, build_mda_header, ring_write_offset
from core.lvm.model import LogicalVolume, PVMetadata, Segment, VGMetadata
from core.lvm.writer import format_vg_metadata
from core.output import AtomicOutput
from core.structs import gpt as G
from core.structs import mbr as M
from core.structs import vhd as SV
from core.vhd.build import blktap_parent, build_vhd, lvhd_lv_size
from core.xen import build_mgt

SECTOR = 512
MIB = 1 << 20
EXTENT_BYTES = 4 * MIB                  # sm never passes -s: lvm's default 4 MiB
EXTENT_SECTORS = EXTENT_BYTES // SECTOR
BLOCK = SV.VHD_BLOCK_SIZE               # 2 MiB VHD blocks
MDA_OFFSET = 4096                       # mda1 at 4096 of the PV (lvm2 format-text.c)
MDA_SIZE = 11_530_240                   # lvm 2.03 with --metadatasize 10M (formats.md 2.4)
PE_START = 11 * MIB                     # 22528 sectors (formats.md 2.4)
GPT_PARTITION_START = MIB               # partition grid: 1 MiB
DISK_BYTES = 1536 * MIB
BASE_TIME = 1_700_000_000               # 2023-11-14: creation times are reproducible
HOST = "xenserver-demo"
DAMAGES = ("none", "partition-table", "label", "metadata")
LAYOUTS = ("gpt", "whole-disk")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # lvm2 uuid.c _c


# -- the manifest: ground truth ------------------------------------------------------------------
@dataclass
class GenerationTruth:
    seqno: int
    offset: int              # absolute image offset of the copy
    bytes: int               # text bytes including the NUL
    checksum: int            # lvm_crc of those bytes
    wrapped: bool
    description: str
    creation_time: int
    intact: bool = True      # no later copy overwrote any of its bytes (small rings wrap)


@dataclass
class VdiTruth:
    key: str                 # short stable name used by tests and `payloads`
    label: str               # MGT name-label
    lv_name: str             # LV name in the last generation that holds it
    vdi_uuid: str
    layout: str              # 'blktap' | 'qemu' | 'raw'
    disk_type: str | None    # 'dynamic' | 'differencing' | None (raw)
    virtual_bytes: int
    lv_bytes: int
    vhd_bytes: int | None    # bytes of the VHD inside the LV (to the end of its footer)
    vhd_unique_id: str | None
    parent_key: str | None
    hidden: bool
    read_only: bool
    status: str              # 'live' | 'deleted'
    pes: list[int]           # PE of each LE (the last generation that holds the LV)
    map: list[list[int]]     # [[le, pe, count], ...]
    claimed_by: dict[int, str]   # PE -> LV that the newest generation gives it to
    sha256: str              # of the virtual disk (raw: the LV), flattened through parents
    stale_sectors: list[list[int]]   # [[first virtual sector, count]]: bitmap clear, bytes stale
    allocated_blocks: list[int]
    created_seqno: int
    removed_seqno: int | None
    name_description: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["claimed_by"] = {str(k): v for k, v in self.claimed_by.items()}
        return d


@dataclass
class DemoManifest:
    path: str
    layout: str
    damage: list[str]
    seed: int
    image_bytes: int
    sr_uuid: str
    vg_name: str
    vg_id: str
    pv_uuid: str
    pv_offset: int            # absolute offset of the PV (partition start)
    pv_bytes: int
    pe_start: int             # bytes from the PV start
    pe_count: int
    extent_bytes: int
    data_offset: int          # absolute offset of PE 0
    mda_offset: int           # absolute offset of the mda header
    mda_size: int
    disk_guid: str | None
    generations: list[GenerationTruth]
    vdis: list[VdiTruth]
    mgt_pes: list[int]
    data_bytes_written: int
    carving: CarvingTruth | None = None   # the carving payloads and what a carve gives back

    @property
    def seqnos(self) -> list[int]:
        return [g.seqno for g in self.generations]

    def vdi(self, key: str) -> VdiTruth:
        """By key, label, LV name or VDI uuid."""
        for v in self.vdis:
            if key in (v.key, v.label, v.lv_name, v.vdi_uuid):
                return v
        raise KeyError(key)

    def lv_offset(self, vdi: VdiTruth, lv_offset: int) -> int:
        """Absolute image offset of byte `lv_offset` of the VDI's LV."""
        le, rest = divmod(lv_offset, self.extent_bytes)
        return self.data_offset + vdi.pes[le] * self.extent_bytes + rest

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["vdis"] = [v.to_json() for v in self.vdis]
        d["seqnos"] = self.seqnos
        return d

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1)
            f.write("\n")


# -- ids -----------------------------------------------------------------------------------------
def lvm_id(rng: random.Random) -> str:
    """A 32-char lvm2 id printed 6-4-4-4-4-4-6 (lib/uuid/uuid.c id_create, id_write_format)."""
    raw = "".join(rng.choice(_ID_CHARS) for _ in range(32))
    out, pos = [], 0
    for n in (6, 4, 4, 4, 4, 4, 6):
        out.append(raw[pos:pos + n])
        pos += n
    return "-".join(out)


def _uuid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


# -- the VG as lvm2 would change it: one generation per command ----------------------------------
@dataclass
class _LV:
    name: str
    id: str
    pes: list[int]
    created: int
    read_only: bool = False
    tags: list[str] = field(default_factory=list)


class _VolumeGroup:
    """Extent allocation and metadata generations, command by command."""

    def __init__(self, name: str, vg_id: str, pv: PVMetadata, device: str, rng: random.Random):
        self.name, self.id, self.pv, self.device, self.rng = name, vg_id, pv, device, rng
        self.used: dict[int, str] = {}
        self.lvs: dict[str, _LV] = {}
        self.seqno = 0
        self.texts: list[tuple[int, bytes, str, int]] = []   # (seqno, text+NUL, description, time)
        self.history: dict[str, list[tuple[int, list[int]]]] = {}   # lv -> [(seqno, pes)]
        self.removed: dict[str, int] = {}

    # allocation: continue contiguously after the LV's last PE when free, else lowest free PE
    def _alloc(self, n: int, after: int | None = None) -> list[int]:
        out: list[int] = []
        pe = after + 1 if after is not None else None
        while len(out) < n:
            if pe is None or pe >= self.pv.pe_count or pe in self.used or pe in out:
                pe = next((p for p in range(self.pv.pe_count)
                           if p not in self.used and p not in out), None)
                if pe is None:
                    raise ValueError("demo VG is full")
            out.append(pe)
            pe += 1
        return out

    def _time(self) -> int:
        return BASE_TIME + 600 * self.seqno

    def _commit(self, command: str) -> None:
        self.seqno += 1
        ctime = self._time()
        lvs: dict[str, LogicalVolume] = {}
        for lv in self.lvs.values():
            status = ["READ", "VISIBLE"] if lv.read_only else ["READ", "WRITE", "VISIBLE"]
            lvs[lv.name] = LogicalVolume(lv.name, lv.id, status, [], list(lv.tags), lv.created,
                                         HOST, _segments(lv.pes))
            self.history.setdefault(lv.name, []).append((self.seqno, list(lv.pes)))
        meta = VGMetadata(self.name, self.id, self.seqno, EXTENT_SECTORS, [self.pv], lvs)
        description = f"Write from {command}."
        text = format_vg_metadata(meta, "raw", description=description, creation_host=HOST,
                                  creation_time=ctime)
        self.texts.append((self.seqno, text.encode("utf-8") + b"\0", description, ctime))

    def vgcreate(self) -> None:
        self._commit(f"vgcreate --metadatasize 10M {self.name} {self.device}")

    def lvcreate(self, name: str, extents: int, tags: Sequence[str] = ()) -> _LV:
        lv = _LV(name, lvm_id(self.rng), self._alloc(extents), self._time() + 600,
                 tags=list(tags))
        for pe in lv.pes:
            self.used[pe] = name
        self.lvs[name] = lv
        self._commit(f"lvcreate -n {name} -L {extents * 4}M {self.name}")
        return lv

    def lvextend(self, name: str, extents: int, command: str = "lvextend") -> None:
        lv = self.lvs[name]
        new = self._alloc(extents, after=lv.pes[-1])
        for pe in new:
            self.used[pe] = name
        lv.pes += new
        self._commit(f"{command} -L {len(lv.pes) * 4}M {self.name}/{name}")

    def lvreduce(self, name: str, extents: int, command: str = "lvreduce") -> None:
        lv = self.lvs[name]
        for pe in lv.pes[len(lv.pes) - extents:]:
            del self.used[pe]
        del lv.pes[len(lv.pes) - extents:]
        self._commit(f"{command} -f -L {len(lv.pes) * 4}M {self.name}/{name}")

    def lvrename(self, old: str, new: str) -> None:
        lv = self.lvs.pop(old)
        lv.name = new
        for pe in lv.pes:
            self.used[pe] = new
        self.lvs[new] = lv
        self.history[new] = [(s, list(p)) for s, p in self.history.pop(old, [])]
        self._commit(f"lvrename {self.name} {old} {new}")

    def lvchange_readonly(self, name: str) -> None:
        self.lvs[name].read_only = True
        self._commit(f"lvchange -p r {self.name}/{name}")

    def lvremove(self, name: str) -> None:
        lv = self.lvs.pop(name)
        for pe in lv.pes:
            del self.used[pe]
        self.removed[name] = self.seqno + 1
        self._commit(f"lvremove -f {self.name}/{name}")


def _segments(pes: list[int]) -> list[Segment]:
    segs: list[Segment] = []
    for le, pe in enumerate(pes):
        if segs and segs[-1].stripes[0][1] + segs[-1].extent_count == pe:
            segs[-1].extent_count += 1
        else:
            segs.append(Segment(le, 1, "striped", 1, None, [("pv0", pe)]))
    return segs


def _map_runs(pes: list[int]) -> list[list[int]]:
    return [[s.start_extent, s.stripes[0][1], s.extent_count] for s in _segments(pes)]


# -- virtual disk contents -----------------------------------------------------------------------
class _Content:
    """The virtual disk of one VDI, block by block (regenerated on demand: bounded memory)."""

    def __init__(self, key: str, label: str, vdi_uuid: str, virtual: int,
                 blocks: Iterable[int], partial: Mapping[int, np.ndarray] | None = None,
                 payloads: Sequence[tuple[int, bytes]] = ()) -> None:
        self.key, self.label, self.vdi_uuid, self.virtual = key, label, vdi_uuid, virtual
        self.spb = BLOCK // SECTOR
        self.partial = dict(partial or {})
        self.payloads = [(int(o), bytes(b)) for o, b in payloads]
        for off, data in self.payloads:
            if off < 0 or off + len(data) > virtual:
                raise ValueError(f"payload at {off} ({len(data)} bytes) outside VDI {key}")
        touched = {b for off, data in self.payloads
                   for b in range(off // BLOCK, (off + max(len(data), 1) - 1) // BLOCK + 1)}
        self.pattern_blocks = set(blocks)
        self.blocks = sorted(self.pattern_blocks | touched)

    def _sector_lines(self, first_sector: int, count: int) -> bytes:
        """`count` sectors, each one text line: '<label> | VDI <uuid> | sector <n> |' + filler."""
        head = f"{self.label[:200]} | VDI {self.vdi_uuid} | sector ".encode()
        line = (head + b"0000000000 |" + b" srsalvage demo data" * 30)[:SECTOR - 1] + b"\n"
        rows = np.tile(np.frombuffer(line, dtype=np.uint8), (count, 1))
        numbers = np.arange(first_sector, first_sector + count, dtype=np.int64)
        for k in range(10):                       # the sector number, 10 digits, vectorised
            rows[:, len(head) + 9 - k] = 48 + (numbers // 10 ** k) % 10
        return rows.tobytes()

    def block(self, b: int) -> tuple[bytes, np.ndarray]:
        """(stored bytes, written mask): unwritten sectors hold stale bytes."""
        first = b * self.spb
        n = min(self.spb, max(0, self.virtual // SECTOR - first))
        written = np.zeros(self.spb, dtype=bool)
        if b in self.pattern_blocks:
            data = bytearray(self._sector_lines(first, n).ljust(BLOCK, b"\0"))
            mask = self.partial.get(b)
            written[:n] = True if mask is None else mask[:n]
            if mask is not None:
                stale = (b"STALE bytes of a freed block, never part of this disk. " * 10)[:SECTOR]
                for s in np.flatnonzero(~written[:n]).tolist():
                    data[s * SECTOR:(s + 1) * SECTOR] = stale
        else:
            data = bytearray(BLOCK)
        for off, payload in self.payloads:
            lo, hi = max(off, b * BLOCK), min(off + len(payload), (b + 1) * BLOCK)
            if lo >= hi:
                continue
            s0, s1 = (lo - b * BLOCK) // SECTOR, (hi - b * BLOCK - 1) // SECTOR + 1
            for s in range(s0, s1):       # a sector the payload touches is written whole
                if not written[s]:
                    data[s * SECTOR:(s + 1) * SECTOR] = bytes(SECTOR)
                written[s] = True
            data[lo - b * BLOCK:hi - b * BLOCK] = payload[lo - off:hi - off]
        return bytes(data), written

    def visible(self, b: int) -> tuple[bytes, np.ndarray]:
        """What a reader sees of block b in this VHD alone (unwritten sectors zero)."""
        data, written = self.block(b)
        arr = np.frombuffer(data, dtype=np.uint8).reshape(self.spb, SECTOR).copy()
        arr[~written] = 0
        return arr.tobytes(), written

    def stale_runs(self) -> list[list[int]]:
        runs: list[list[int]] = []
        for b in sorted(self.partial):
            if b not in self.pattern_blocks:
                continue
            _, written = self.block(b)
            n = min(self.spb, max(0, self.virtual // SECTOR - b * self.spb))
            for s in np.flatnonzero(~written[:n]).tolist():
                v = b * self.spb + s
                if runs and runs[-1][0] + runs[-1][1] == v:
                    runs[-1][1] += 1
                else:
                    runs.append([v, 1])
        return runs


def _virtual_sha256(content: _Content, parent: _Content | None = None) -> str:
    """sha256 of the virtual disk: blocks in order, unallocated/unwritten sectors zero or the
    parent's (a differencing disk)."""
    h = hashlib.sha256()
    nblocks = -(-content.virtual // BLOCK)
    mine = set(content.blocks)
    theirs = set(parent.blocks) if parent is not None else set()
    zero = bytes(BLOCK)
    for b in range(nblocks):
        size = min(BLOCK, content.virtual - b * BLOCK)
        if b in mine:
            data, written = content.visible(b)
            if parent is not None and not written.all():
                pdata = parent.visible(b)[0] if b in theirs else zero
                arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, SECTOR).copy()
                parr = np.frombuffer(pdata, dtype=np.uint8).reshape(-1, SECTOR)
                arr[~written] = parr[~written]
                data = arr.tobytes()
        elif parent is not None and b in theirs:
            data = parent.visible(b)[0]
        else:
            data = zero
        h.update(data[:size])
    return h.hexdigest()


def _raw_sha256(content: _Content, lv_bytes: int) -> str:
    h = hashlib.sha256()
    for b in range(lv_bytes // BLOCK):
        h.update(content.block(b)[0] if b in set(content.blocks) else bytes(BLOCK))
    return h.hexdigest()


# -- writing through an LV's extent map ----------------------------------------------------------
class _ExtentFile:
    """File-like view of one LV inside the image file: seek/write in LV offsets go to the PEs."""

    def __init__(self, f, data_offset: int, pes: list[int]) -> None:
        self.f, self.data_offset, self.pes, self.pos = f, data_offset, pes, 0
        self.written = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            le, rest = divmod(self.pos, EXTENT_BYTES)
            if le >= len(self.pes):
                raise ValueError(f"write past the end of the LV ({len(self.pes)} extents)")
            n = min(len(view) - done, EXTENT_BYTES - rest)
            self.f.seek(self.data_offset + self.pes[le] * EXTENT_BYTES + rest)
            self.f.write(view[done:done + n])
            self.pos += n
            done += n
        self.written += len(data)
        return len(data)


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
    spb = BLOCK // SECTOR
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
        full = lvhd_lv_size(virtual[key], 0, thick=True) // EXTENT_BYTES
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
    pe_start = PE_START if mda_size == MDA_SIZE else \
        -(-(MDA_OFFSET + mda_size) // MIB) * MIB
    pe_count = (pv_bytes - pe_start) // EXTENT_BYTES
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
            return -(-c.virtual // EXTENT_BYTES)
        if plans[k].layout == "qemu":
            return -(-_qemu_size(c) // EXTENT_BYTES)
        return lvhd_lv_size(c.virtual, len(c.blocks)) // EXTENT_BYTES

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
        _ExtentFile(f, data_offset, mgt_pes).write(mgt)
        written += len(mgt)

        truths: list[VdiTruth] = []
        for k in ("web", "sql", "appliance", "scratch", "golden", "vm", "backup", "export", "logs"):
            p, c = plans[k], contents[k]
            name = lv_name(k)
            pes = vg.history[name][-1][1]
            lvf = _ExtentFile(f, data_offset, pes)
            lv_bytes = len(pes) * EXTENT_BYTES
            parent_ref = None
            if k == "vm":
                parent_ref = blktap_parent(sr_uuid, golden, unique_ids["golden"],
                                           timestamp=0x2F000000)
            blocks = _LazyBlocks(c)
            if p.layout == "raw":
                for b in c.blocks:
                    lvf.seek(b * BLOCK)
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
        pv_bytes=pv_bytes, pe_start=pe_start, pe_count=pe_count, extent_bytes=EXTENT_BYTES,
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
            le, rest = divmod(lv_off, EXTENT_BYTES)
            m = min(n, EXTENT_BYTES - rest)
            disk = data_offset + pes[le] * EXTENT_BYTES + rest
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


class _LazyBlocks(Mapping):
    """block index -> (bytes, written mask), produced when build_vhd asks (bounded memory)."""

    def __init__(self, content: _Content) -> None:
        self.content = content

    def __getitem__(self, b: int):
        if b not in self.content.blocks:
            raise KeyError(b)
        return self.content.block(b)

    def __iter__(self):
        return iter(self.content.blocks)

    def __len__(self) -> int:
        return len(self.content.blocks)


def _qemu_size(c: _Content) -> int:
    """Bytes of a qemu-layout VHD of this content: footer copy, header, BAT, packed blocks,
    footer (core.vhd.build 'qemu')."""
    nblocks = -(-c.virtual // BLOCK)
    bat = -(-nblocks * 4 // SECTOR) * SECTOR
    return 1536 + bat + len(c.blocks) * (BLOCK + SECTOR) + SECTOR


__all__ = ["build_demo", "DemoManifest", "VdiTruth", "GenerationTruth", "DAMAGES", "LAYOUTS",
           "lvm_id"]
