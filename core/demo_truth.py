"""The demo SR's ground truth (split out of core/demo.py): what `build_demo` wrote, per
metadata generation and per VDI, so tests and the tool's own checks can compare byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from core.demo_payloads import CarvingTruth


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
