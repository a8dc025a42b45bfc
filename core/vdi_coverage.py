"""What a map leaves out: where reading a VDI through a map file's placements loses data.

A map file (`reconstruct -o MAP.json`) may leave extents unplaced or place them unsure
(core.vdi reads it: `VdiVolume.map_pes`, `map_unsure`). `map_coverage_findings` names, for one
VHD read through such a map, the virtual byte ranges that would come back as zeros or as
another disk's bytes (issue 10); `refuse_unsafe_map` turns those findings into the export's
refusal (UnsafeError, exit 3) unless forced. Used by `check` and by core.vdi_export.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from core.errors import UnsafeError
from core.spaces import compact_ranges
from core.vdi import EXPORT_SURE, EXPORT_TIED, ResolvedVdi, VdiVolume
from core.vhd.reader import VhdImage


def map_coverage_findings(vol: VdiVolume, img: VhdImage) -> list:
    """Errors where reading VHD `img` through the map of `vol` would lose data in silence
    (issue 10): the BAT points into an extent the map does not place or past the mapped LV
    (the virtual byte ranges of those blocks are named), the VHD's metadata lies in an unplaced
    extent, or the size the export would write (the footer at the mapped LV's end) disagrees
    with the footer copy at offset 0 (a resized VDI whose map ends at an old footer would come
    back truncated). Empty for volumes that do not come from a map."""
    from core.findings import Finding
    from core.structs import vhd as S

    if vol.map_pes is None or not vol.extent_bytes or img.disk_type == S.HD_TYPE_FIXED:
        return []
    E = vol.extent_bytes
    placed = np.array([p is not None for p in vol.map_pes], dtype=bool)
    out = []
    copy = img.copy_footer
    if copy is not None and copy.good and bytes(copy.parsed.uuid) != img.unique_id:
        # the footer at the mapped LV's end is another VHD's: a previous life's, left where
        # this LV's map now ends (its own end lies in an extent the map does not place)
        out.append(Finding(
            "map-footer-foreign", img.footer_offset, "error",
            f"{vol.key}: the footer at the mapped LV's end belongs to another VHD (unique id "
            f"{bytes(img.unique_id).hex()[:8]}, the copy at offset 0 says "
            f"{bytes(copy.parsed.uuid).hex()[:8]}): the map does not reach this VHD's own end; "
            f"the copy at offset 0 describes {int(copy.parsed.curr_size)} virtual bytes",
            {"copy_bytes": int(copy.parsed.curr_size)}, space="lv"))
    elif copy is not None and copy.good and int(copy.parsed.curr_size) != img.current_size:
        out.append(Finding(
            "map-size-mismatch", img.footer_offset, "error",
            f"{vol.key}: the footer at the mapped LV's end describes {img.current_size} virtual "
            f"bytes, the footer copy at offset 0 {int(copy.parsed.curr_size)}: the map ends at "
            f"an old footer (the LV was resized or inflated since)",
            {"footer_bytes": img.current_size, "copy_bytes": int(copy.parsed.curr_size)},
            space="lv"))
    meta_les = range(0, max(1, -(-img.metadata_end // E)))
    unplaced_meta = [le for le in meta_les if le >= len(placed) or not placed[le]]
    if unplaced_meta:
        out.append(Finding(
            "map-metadata-unplaced", unplaced_meta[0] * E, "error",
            f"{vol.key}: the VHD's header/BAT/batmap lie in LE(s) "
            f"{compact_ranges(unplaced_meta)}, which the map does not place", {
                "les": unplaced_meta}, space="lv"))
    blocks = img.allocated_blocks
    if len(blocks) and vol.map_unsure:
        out.extend(_unsure_findings(vol, img, blocks, E))
    if len(blocks):
        span = img.bitmap_bytes + img.block_size
        start = img.bat[blocks].astype(np.int64) * 512
        first, last = start // E, (start + span - 1) // E
        unplaced = np.concatenate([[0], np.cumsum(~placed)])
        inside = last < len(placed)
        bad = ~inside
        ok = np.nonzero(inside)[0]
        bad[ok] = unplaced[last[ok] + 1] - unplaced[first[ok]] > 0
        if bad.any():
            bs, size = img.block_size, img.current_size
            ranges = _byte_ranges([(int(b) * bs, min((int(b) + 1) * bs, size))
                                   for b in blocks[bad]])
            les = sorted({int(j) for a, b in zip(first[bad], last[bad])
                          for j in range(int(a), int(b) + 1)
                          if j >= len(placed) or not placed[j]})
            shown = ", ".join(f"{a}-{b - 1}" for a, b in ranges[:8])
            past = bool((~inside).any())
            out.append(Finding(
                "map-bat-unplaced", None, "error",
                f"{vol.key}: {int(bad.sum())} allocated block(s) lie in LE(s) "
                f"{compact_ranges(les[:64])} that the map does not place"
                + (" or past the mapped LV" if past else "")
                + f": virtual bytes {shown}" + (" ..." if len(ranges) > 8 else ""),
                {"virtual_ranges": [[a, b] for a, b in ranges], "les": les[:1024]},
                space="vhd"))
    return out


def _unsure_findings(vol: VdiVolume, img: VhdImage, blocks: np.ndarray, E: int) -> list:
    """The virtual byte ranges whose blocks lie in LEs the map places below EXPORT_TIED:
    an error below EXPORT_SURE (placed by LVM's allocation order alone), a warning above it
    (content fits, nothing ties the extent to this VDI rather than another alike). An export
    must not return another disk's bytes in silence (issue 10)."""
    from core.findings import Finding

    conf = np.ones(max(le for le, _ in vol.map_unsure) + 1)
    for le, c in vol.map_unsure:
        conf[le] = min(conf[le], c)
    span = img.bitmap_bytes + img.block_size
    start = img.bat[blocks].astype(np.int64) * 512
    first, last = start // E, (start + span - 1) // E
    low = np.array([float(conf[int(a): min(int(b) + 1, len(conf))].min(initial=1.0))
                    for a, b in zip(first, last)])
    out = []
    bs, size = img.block_size, img.current_size
    for severity, hit, what in (
            ("error", low < EXPORT_SURE, f"below {EXPORT_SURE} (placed by LVM's allocation "
                                         f"order alone)"),
            ("warning", (low >= EXPORT_SURE) & (low < EXPORT_TIED),
             f"below {EXPORT_TIED} (content fits, nothing ties them to this VDI rather than "
             f"another alike)")):
        if not hit.any():
            continue
        ranges = _byte_ranges([(int(b) * bs, min((int(b) + 1) * bs, size)) for b in blocks[hit]])
        shown = ", ".join(f"{a}-{b - 1}" for a, b in ranges[:8])
        les = sorted({int(j) for a, b in zip(first[hit], last[hit])
                      for j in range(int(a), int(b) + 1) if j < len(conf) and conf[j] < 1.0})
        out.append(Finding(
            "map-unsure", None, severity,
            f"{vol.key}: {int(hit.sum())} allocated block(s) lie in LE(s) "
            f"{compact_ranges(les[:64])} that the map places with confidence {what}: virtual "
            f"bytes {shown}" + (" ..." if len(ranges) > 8 else "") + "; check them, or pin "
            f"them with `reconstruct --fix`",
            {"virtual_ranges": [[a, b] for a, b in ranges], "les": les[:1024]}, space="vhd"))
    return out


def _byte_ranges(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """[(start, end)] sorted and merged where they touch."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(pieces):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif b > a:
            out.append((a, b))
    return out


def refuse_unsafe_map(resolved: "ResolvedVdi", images, force: bool,
                      warn: Callable[[str], None] | None = None) -> list:
    """Export through a map: raise UnsafeError (exit 3) naming what would be lost when the map
    leaves any of `images` (the VDI and, for a flattened export, its parents) short, unless
    `force` (then each problem is a warning). Returns the findings."""
    vols = [resolved.volume] + resolved.siblings
    found = []
    for img in images:
        vol = next((v for v in vols if v._image is img
                    or (getattr(v, "_shared", None) is not None and v._shared._image is img)),
                   None)
        if vol is not None:
            found.extend(map_coverage_findings(vol, img))
    errors = [f for f in found if f.severity == "error"]
    if errors and not force:
        raise UnsafeError("; ".join(f.message for f in errors)[:2000]
                          + " (export anyway with --force: unplaced bytes would read as zeros)")
    for f in found:
        msg = f.message + (" (exported anyway: --force)" if f.severity == "error" else "")
        resolved.warnings.append(msg)
        if warn is not None:
            warn(msg)
    return found
