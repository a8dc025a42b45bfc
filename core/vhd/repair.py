"""Repairs applied to an *export*, never to the evidence.

* primary footer rebuilt from the copy at offset 0 (or the copy from the primary), checksums
  recomputed (what `vhd-util repair [-b]` does: it only rewrites the footer; blktap
  vhd/lib/vhd-util-repair.c);
* a BAT whose entries point into the metadata, past the end or onto another block: each damaged
  entry is given back a block found at the positions the producer places blocks (blktap: data on
  a 4 KiB boundary, stride 4104 sectors; qemu: packed, stride 4097) that no good entry claims and
  that holds a plausible sector bitmap; when the orphan blocks and the damaged entries cannot be
  paired one to one, the entries are cleared and listed as not repaired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.structs import vhd as S
from core.vhd.reader import VhdImage

MAX_ORPHAN_PROBES = 1 << 16


@dataclass
class RepairPlan:
    footer: bytes                        # the primary footer to write (checksum good)
    footer_copy: bytes                   # what goes at offset 0
    header: bytes | None                 # dynamic header to write (checksum good)
    bat: np.ndarray                      # the first len(img.bat) entries, repaired
    bat_changed: bool
    data_end: int                        # end of the last kept block
    repairs: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)


def _with_footer_checksum(raw: bytes) -> bytes:
    raw = bytearray(raw[:512].ljust(512, b"\0"))
    raw[S.FOOTER_CHECKSUM_OFFSET:S.FOOTER_CHECKSUM_OFFSET + 4] = \
        S.footer_checksum(bytes(raw)).to_bytes(4, "big")
    return bytes(raw)


def _with_header_checksum(raw: bytes) -> bytes:
    raw = bytearray(raw[:1024])
    raw[S.HEADER_CHECKSUM_OFFSET:S.HEADER_CHECKSUM_OFFSET + 4] = \
        S.header_checksum(bytes(raw)).to_bytes(4, "big")
    return bytes(raw)


def plan_footers(img: VhdImage, plan: RepairPlan) -> None:
    chosen = next(c for c in img.footer_candidates + [None]
                  if c is None or c.offset == img.footer_offset)
    primary = img.footer_raw
    if chosen is not None and not chosen.checksum_ok:
        primary = _with_footer_checksum(primary)
        plan.repairs.append(f"footer checksum recomputed (footer at {img.footer_offset} had "
                            f"0x{img.footer.checksum:08x})")
    elif len(primary) != 512 or img.footer_source == "end-511":
        primary = _with_footer_checksum(primary)
    if img.footer_source == "copy":
        plan.repairs.append("primary footer rebuilt from the copy at offset 0")
    plan.footer = primary
    copy = img.copy_footer
    if img.disk_type == S.HD_TYPE_FIXED:
        plan.footer_copy = b""
    elif copy is None or not copy.good:
        plan.footer_copy = primary
        if copy is None or not copy.cookie_ok:
            plan.repairs.append("footer copy at offset 0 rebuilt from the primary footer")
        elif copy.raw[:512] != primary:
            plan.repairs.append("footer copy at offset 0 (bad checksum) replaced by the primary")
    else:
        plan.footer_copy = copy.raw


def plan_repair(img: VhdImage) -> RepairPlan:
    plan = RepairPlan(b"", b"", None, img.bat.copy(), False, img.data_end)
    plan_footers(img, plan)
    if img.header is None:
        return plan
    if img.header_rebuilt:
        plan.header = img.header_raw
        plan.repairs.append(f"dynamic header rebuilt from the producer's layout "
                            f"({img.bat_entries_declared} BAT entries at "
                            f"{int(img.header.table_offset)}, 2 MiB blocks)")
    elif not img.header_checksum_ok:
        plan.header = _with_header_checksum(img.header_raw)
        plan.repairs.append(f"dynamic header checksum recomputed (was 0x{img.header.checksum:08x})")
    else:
        plan.header = img.header_raw
    _plan_table_entries(img, plan)
    _plan_bat(img, plan)
    return plan


MAX_TABLE_ENTRIES_OFFSET = 28   # dd_hdr.max_bat_size (spec "Max Table Entries")


def _plan_table_entries(img: VhdImage, plan: RepairPlan) -> None:
    """A max_table_entries whose table would run past the end of the volume is damage (the
    producers reserve the whole table before the first block): the exported header declares the
    entries that were read instead, so that other tools open the export (qemu refuses a table
    over INT_MAX / 4 entries)."""
    declared = img.bat_entries_declared
    table = int(img.header.table_offset)
    if declared <= len(img.bat) or table + S.roundup(declared * 4, 512) <= img.space.size:
        return
    raw = bytearray(plan.header)
    raw[MAX_TABLE_ENTRIES_OFFSET:MAX_TABLE_ENTRIES_OFFSET + 4] = len(img.bat).to_bytes(4, "big")
    plan.header = _with_header_checksum(bytes(raw))
    plan.repairs.append(f"max table entries {declared} (a table past the end of the "
                        f"{img.space.size}-byte volume) set to the {len(img.bat)} entries read")


def _plan_bat(img: VhdImage, plan: RepairPlan) -> None:
    bat = plan.bat
    used = np.nonzero(bat != S.DD_BLK_UNUSED)[0]
    if not len(used):
        plan.data_end = img.metadata_end
        return
    span = (img.bitmap_bytes + img.block_size) // 512
    meta_sector = -(-img.metadata_end // 512)
    limit = img.footer_offset if img.footer_source in ("end", "end-511", "after-data", "scan") \
        else img.space.size
    limit_sector = limit // 512
    sectors = bat[used].astype(np.int64)
    good = (sectors >= meta_sector) & (sectors + span <= limit_sector)
    # overlaps: walk by position, keep the first block at each place
    order = np.argsort(np.where(good, sectors, np.iinfo(np.int64).max), kind="stable")
    last_end = -1
    for i in order:
        if not good[i]:
            continue
        if sectors[i] < last_end:
            good[i] = False
        else:
            last_end = sectors[i] + span
    damaged = used[~good]
    kept = sectors[good]
    if len(damaged):
        aligned = bool(len(kept)) and bool(np.all((kept + img.bitmap_bytes // 512) % 8 == 0))
        if not len(kept):
            aligned = img.footer.crtr_app == S.CREATOR_TAP
        orphans = _orphan_blocks(img, kept, span, meta_sector, limit_sector, aligned, len(damaged))
        if len(orphans) == len(damaged):
            # producers allocate in write order; with nothing better, pair by order
            for b, pos in zip(sorted(damaged.tolist()), sorted(orphans)):
                plan.repairs.append(f"BAT entry {b} (was sector {int(bat[b])}) set to the "
                                    f"unclaimed block at sector {pos}")
                bat[b] = pos
        else:
            for b in damaged.tolist():
                plan.unrepaired.append(
                    f"BAT entry {b} = sector {int(bat[b])} is damaged and no unclaimed block "
                    f"could be paired with it ({len(orphans)} orphan blocks for {len(damaged)} "
                    f"damaged entries); the block reads as absent")
                bat[b] = S.DD_BLK_UNUSED
        plan.bat_changed = True
    used_now = bat[bat != S.DD_BLK_UNUSED]
    plan.data_end = max(img.metadata_end,
                        (int(used_now.max()) + span) * 512 if len(used_now) else 0)


def _orphan_blocks(img: VhdImage, kept: np.ndarray, span: int, meta_sector: int,
                   limit_sector: int, aligned: bool, n_damaged: int) -> list[int]:
    """Positions on the producer's grid not claimed by a kept block, holding a plausible bitmap,
    below the last kept block plus one stride per damaged entry."""
    bm_sectors = img.bitmap_bytes // 512
    if aligned:
        first = meta_sector + (-(meta_sector + bm_sectors)) % 8
        stride = span + (-span) % 8
    else:
        first, stride = meta_sector, span
    top = int(kept.max()) + span if len(kept) else first
    top = min(limit_sector - span, top + n_damaged * stride)
    occupied = np.sort(kept)
    found = []
    spb = img.block_size // 512
    bm_len = -(-spb // 8)
    probes = 0
    pos = first
    while pos <= top and probes < MAX_ORPHAN_PROBES:
        probes += 1
        i = np.searchsorted(occupied, pos, side="right") - 1
        clash = (i >= 0 and occupied[i] + span > pos) or \
            (i + 1 < len(occupied) and occupied[i + 1] < pos + span)
        if not clash:
            raw = img.space.read(pos * 512, img.bitmap_bytes)
            if _plausible_bitmap(raw, bm_len):
                found.append(pos)
        pos += stride
    return found


def _plausible_bitmap(raw: bytes, bits_bytes: int) -> bool:
    if not raw or raw[:8] in (S.HD_COOKIE, S.DD_COOKIE, S.BATMAP_COOKIE):
        return False
    head, pad = raw[:bits_bytes], raw[bits_bytes:]
    return any(head) and not any(pad)
