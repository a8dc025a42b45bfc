"""The demo SR's volume group as lvm2 would change it, one metadata generation per command
(split out of core/demo.py): ids as lvm2 makes them, LVs, segments and the VGMetadata each
command leaves behind.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Sequence

from core.lvm.label import format_pv_uuid
from core.lvm.model import LogicalVolume, PVMetadata, Segment, VGMetadata
from core.lvm.writer import format_vg_metadata
from core.structs.lvhd import LVHD_EXTENT_BYTES
from core.structs.vhd import SECTOR

EXTENT_SECTORS = LVHD_EXTENT_BYTES // SECTOR
BASE_TIME = 1_700_000_000               # 2023-11-14: creation times are reproducible
HOST = "xenserver-demo"
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # lvm2 uuid.c _c


# -- ids -----------------------------------------------------------------------------------------
def lvm_id(rng: random.Random) -> str:
    """A 32-char lvm2 id printed 6-4-4-4-4-4-6 (lib/uuid/uuid.c id_create, id_write_format)."""
    return format_pv_uuid("".join(rng.choice(_ID_CHARS) for _ in range(32)).encode("ascii"))


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
