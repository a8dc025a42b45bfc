"""Orphans: data-bearing PEs no VDI explains that look like VHD pieces (footers, tdbatmaps,
LVHD block bitmaps), named in findings and offered as candidates, never placed.
Split out of core/match/reconstruct.py unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.findings import Finding
from core.match.assign import FREE, VdiState
from core.structs.lvhd import LVHD_LATTICE_SLOTS
from core.match.features import SECTOR, SectorReader, bitmap_likeness
from core.match.result import VdiMap
from core.progress import Ticker
from core.structs.lvhd import (LVHD_BLOCK_STRIDE_BYTES, LVHD_EXTENT_BYTES, LVHD_FIRST_BITMAP_BYTES,
                               LVHD_LATTICE_PERIOD_BLOCKS, LVHD_LATTICE_PERIOD_LES)
from core.structs.vhd import format_uuid

ORPHAN_LIMIT = 4096               # orphan PEs examined in detail (1024 sectors each)


def _suggest_orphans(states: list[VdiState], vdis: list[VdiMap], orphans: list[dict]) -> None:
    """An unplaced LVHD LE that must hold bitmaps gets, as candidates for the technician, the
    unclaimed extents whose bitmaps sit where that LE's do (same LE number on the LVHD lattice,
    which repeats every 513 LEs). Nothing is placed: the editor shows them as suggestions."""
    by_le: dict[int, list[int]] = {}
    for o in orphans:
        if "lvhd_le" in o:
            by_le.setdefault(int(o["lvhd_le"]), []).append(int(o["pe"]))
    if not by_le:
        return
    for v, m in zip(states, vdis):
        if v.pred is None or v.anchor is None or not v.anchor.lvhd:
            continue
        for le in m.missing_les:
            slot = v.pred.slots.get(le)
            if slot is None or not len(slot.bitmap_offsets) or le in m.ambiguous:
                continue
            cands = by_le.get(le % LVHD_LATTICE_PERIOD_LES, [])
            if cands:
                m.ambiguous[le] = sorted(set(cands))[:16]


def lvhd_le_of_offset(sector_in_extent: int,
                      extent_sectors: int = LVHD_EXTENT_BYTES // SECTOR) -> int | None:
    """The smallest LE number j at which an LVHD block bitmap (LV sector 8455 + 4104 k) falls
    at this sector of the extent; others are j + 513 m (the lattice repeats every 1024 blocks)."""
    first, stride = LVHD_FIRST_BITMAP_BYTES // SECTOR, LVHD_BLOCK_STRIDE_BYTES // SECTOR
    for k in range(LVHD_LATTICE_PERIOD_BLOCKS):
        rel = first + stride * k - sector_in_extent
        if rel >= 0 and rel % extent_sectors == 0:
            return rel // extent_sectors
    return None


def _orphans(reader: SectorReader, feats, owner: np.ndarray, D: int, E: int, N: int,
             findings: list[Finding], ticker: Ticker, solver=None) -> list[dict[str, Any]]:
    """Data-bearing PEs no VDI explains but that look like VHD pieces: named, not guessed.
    With 4 MiB extents the solver's lattice signatures say which lattice sectors look like
    bitmaps (read once, shared with the search, or from the evidence index)."""
    idx = np.nonzero((owner == FREE) & feats.has_data)[0]
    use_sigs = solver is not None and E == LVHD_LATTICE_SLOTS * 8 * SECTOR
    if use_sigs:
        solver.ensure_sigs(idx[:ORPHAN_LIMIT])
    out: list[dict[str, Any]] = []
    lattice = np.arange(7, E // SECTOR, 8, dtype=np.int64) * SECTOR   # 4 KiB-aligned data
    for n, pe in enumerate(idx[:ORPHAN_LIMIT]):
        ticker.check()
        pe = int(pe)
        item: dict[str, Any] = {"pe": pe}
        if feats.tail_footer[pe]:
            item["footer_uuid"] = format_uuid(feats.tail_uid[pe].tobytes())
        if feats.head_batmap[pe]:
            item["tdbatmap"] = True
        if feats.head_anchor[pe]:
            item["vhd_head_uuid"] = format_uuid(feats.head_uid[pe].tobytes())
        if use_sigs:
            good = np.nonzero(np.unpackbits(solver.sig_good[pe]))[0]
        else:
            secs = reader.gather(D + pe * E + lattice, SECTOR)
            good = np.nonzero(bitmap_likeness(secs) >= 0.95)[0]
        if len(good):
            offs = lattice[good] // SECTOR
            item["bitmap_sectors"] = [int(x) for x in offs[:8]]
            le = lvhd_le_of_offset(int(offs[0]))
            if le is not None:
                item["lvhd_le"] = le
        if len(item) > 1:
            out.append(item)
    for item in out:
        what = []
        if "lvhd_le" in item:
            what.append(f"LVHD block bitmaps as in LE {item['lvhd_le']} (+513k)")
        if "footer_uuid" in item:
            what.append(f"ends with the footer of VHD {item['footer_uuid']}")
        if "tdbatmap" in item:
            what.append("holds a tdbatmap (an LE 1)")
        if "vhd_head_uuid" in item:
            what.append(f"starts with the head of VHD {item['vhd_head_uuid']}")
        if what:
            findings.append(Finding("orphan-vhd-extent", D + item["pe"] * E, "info",
                                    f"PE {item['pe']}: " + "; ".join(what) + " — no VDI claims it",
                                    dict(item)))
    if len(idx) > ORPHAN_LIMIT:
        findings.append(Finding("orphans-truncated", None, "info",
                                f"{len(idx) - ORPHAN_LIMIT} more unexplained PEs hold data; "
                                f"not examined"))
    return out

