"""The extent grid of a reconstruction: where PE 0 is, the extent size and the PE count.

From the metadata (core.match.reconstruct uses core.lvm's analysis), else from a surviving LVM
label (pe_start), else inferred from where VHD heads sit, the MGT volume's header and sm's
pe_start (formats.md pitfall 16). Split out of core/match/reconstruct.py unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.findings import Finding
from core.lvm.label import parse_label_sector
from core.match.features import SECTOR, SectorReader, find_cookie_pairs
from core.progress import Ticker
from core.structs.lvm import LABEL_SCAN_SECTORS
from core.structs.lvhd import SM_PE_START_BYTES

MGT_SEARCH_POINTS = 4096          # grid points looked at for the MGT header without a grid


@dataclass
class Grid:
    """Where the PEs are."""

    data_offset: int
    extent_bytes: int
    pe_count: int
    source: str                       # metadata | label | inferred | given
    vg_name: str | None = None
    vg_id: str | None = None
    pv_id: str | None = None
    pv_offset: int | None = None
    pe_start: int | None = None       # bytes from the PV start
    dev_size: int | None = None       # bytes

    def to_json(self) -> dict[str, Any]:
        return {"name": self.vg_name, "extent_bytes": self.extent_bytes,
                "data_offset": self.data_offset, "pe_count": self.pe_count,
                "grid_source": self.source, "id": self.vg_id, "pv_id": self.pv_id,
                "pv_offset": self.pv_offset}


def _label_at(ev, pv_offset: int) -> dict | None:
    """A surviving LVM label in sectors 0..3 of a PV at pv_offset: pv id, pe_start, size
    (parsed by core.lvm.label; its CRC and sector field are not insisted on: a damaged label's
    pe_start is still the best evidence of the grid)."""
    raw = ev.read(pv_offset, LABEL_SCAN_SECTORS * SECTOR)
    for s in range(LABEL_SCAN_SECTORS):
        label = parse_label_sector(raw[s * SECTOR:(s + 1) * SECTOR], pv_offset + s * SECTOR)
        if label is None or not label.pv_header_ok or label.pe_start is None:
            continue
        pe_start = int(label.pe_start)
        # bounded by the evidence's real size before it drives any arithmetic (issue 11: a
        # huge pe_start overflowed int64 in compute_pe_features)
        if pe_start <= 0 or pe_start % SECTOR or pv_offset + pe_start >= ev.size:
            continue
        return {"pv_id": label.pv_uuid, "pe_start": pe_start, "dev_size": int(label.device_size)}
    return None


def _grid_from_label(ev, report, extent_bytes: int) -> Grid | None:
    offsets = [0]
    for part in getattr(report, "partitions", []) or []:
        offsets.append(int(part.offset))
    for off in dict.fromkeys(offsets):
        lab = _label_at(ev, off)
        if lab is None:
            continue
        data_offset = off + lab["pe_start"]
        dev = lab["dev_size"] or (ev.size - off)
        count = max(0, (min(dev, ev.size - off) - lab["pe_start"]) // extent_bytes)
        return Grid(data_offset, extent_bytes, count, "label", pv_id=lab["pv_id"], pv_offset=off,
                    pe_start=lab["pe_start"], dev_size=dev)
    return None


def _mgt_grid_point(reader: SectorReader, residue: int, E: int, first: int) -> int | None:
    """The first extent-grid point before the first VHD head whose sector starts with the MGT
    volume's `XSSM:` header (sm creates MGT right after vgcreate: PE 0, formats.md 3.3)."""
    start = residue
    while start < (1 << 20):
        start += E
    points = np.arange(start, first, E, dtype=np.int64)[:MGT_SEARCH_POINTS]
    if not len(points):
        return None
    heads = reader.gather(points, SECTOR)
    hit = np.nonzero((heads[:, :5] == np.frombuffer(b"XSSM:", np.uint8)).all(axis=1))[0]
    return int(points[hit[0]]) if len(hit) else None


def _grid_from_anchors(ev, reader: SectorReader, extent_bytes: int, ticker: Ticker,
                       findings: list[Finding], report=None, index=None) -> Grid | None:
    """No metadata and no label: the extent grid from where VHD heads sit (their offsets modulo
    the extent size), and PE 0 from two pieces of evidence (formats.md pitfall 16): the MGT
    volume's header on that grid (sm's first LV, PE 0), and a PV start (0 or a partition's)
    plus sm's pe_start (11 MiB, from `pvcreate --metadatasize 10M`) landing on it. With both
    agreeing, PE 0 and the PV start are known; with one, it is used and said; with none, PE 0
    is the first grid point past 1 MiB and the numbering is only relative."""
    E = extent_bytes
    hits = index.sectors.cookie_pairs(64) if index is not None else None
    if hits is None:
        hits = find_cookie_pairs(reader, 0, ev.size, limit=64, ticker=ticker)
    if not hits:
        return None
    residues: dict[int, int] = {}
    for h in hits:
        residues[h % E] = residues.get(h % E, 0) + 1
    residue = max(residues, key=lambda r: (residues[r], -r))
    first = min(h for h in hits if h % E == residue)
    parts = {0: ev.size}
    for part in getattr(report, "partitions", []) or []:
        parts.setdefault(int(part.offset), int(part.bytes))
    sm = [p for p in sorted(parts) if (p + SM_PE_START_BYTES) % E == residue
          and p + SM_PE_START_BYTES <= first]
    mgt = _mgt_grid_point(reader, residue, E, first)
    pv: int | None = None
    if mgt is not None:
        data_offset = mgt
        pv = next((p for p in sm if p + SM_PE_START_BYTES == mgt), None)
        if pv is not None:
            how = (f"the MGT volume's header at {mgt} and a PV start at {pv} plus sm's pe_start "
                   f"({SM_PE_START_BYTES}) agree")
        elif mgt >= SM_PE_START_BYTES:
            pv = mgt - SM_PE_START_BYTES
            how = (f"the MGT volume's header at {mgt} (PV start {pv} assumed from sm's pe_start "
                   f"{SM_PE_START_BYTES}; no partition starts there)")
        else:
            how = f"the MGT volume's header at {mgt}; the PV start is unknown"
    elif sm:
        pv = sm[0]
        data_offset = pv + SM_PE_START_BYTES
        how = (f"a PV start at {pv} plus sm's pe_start ({SM_PE_START_BYTES}) lands on the grid; "
               f"no MGT header was found to confirm it")
    else:
        data_offset = residue
        while data_offset < (1 << 20):
            data_offset += E
        data_offset = min(data_offset, first)
        how = "nothing places PE 0: the first grid point past 1 MiB; PE numbers are relative"
    count = (ev.size - data_offset) // E
    findings.append(Finding(
        "grid-inferred", data_offset, "warning",
        f"no LVM metadata or label: PE 0 taken at {data_offset} (VHD heads at offsets "
        f"≡ {residue} mod {E}): {how}",
        {"residue": residue, "heads": len(hits), "mgt_offset": mgt, "pv_offset": pv}))
    grid = Grid(data_offset, E, count, "inferred")
    if pv is not None:
        grid.pv_offset, grid.pe_start = pv, data_offset - pv
        grid.dev_size = parts.get(pv, ev.size - pv)
    return grid
