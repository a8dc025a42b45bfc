"""VHD validation: the catalogue of `vhd-util check`, as findings that never stop each other.

Source of the rules: `xapi-project/blktap: vhd/lib/vhd-util-check.c` (vhd_util_check_footer,
_header, _bat, _batmap, _parent) and formats.md 4.3. Each check returns named findings with the
offset (in the VHD/LV space) they are about; the open itself already reported footer/header
cookies and checksums, truncation and unusable sizes (`VhdImage.findings`).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from core.findings import Finding
from core.spaces import ByteSpace
from core.structs import vhd as S
from core.vhd.reader import VhdError, VhdImage, format_uuid

MAX_LISTED = 8            # individual findings per kind before a summary finding
MAX_BITMAP_READS = 65536
TIMESTAMP_MAX_SLACK = 1800  # vhd-util-check.c: creation times this far ahead are tolerated
MAX_VIRTUAL_SIZE = 2 << 40  # VHD format limit (spec: 2040 GiB; sm: MAX_VHD_SIZE)  # batmap-vs-bitmap checks read at most this many bitmaps


def _f(kind: str, offset: int | None, severity: str, message: str, **details) -> Finding:
    return Finding(kind, offset, severity, message, details, space="vhd")


def check_vhd(target: VhdImage | ByteSpace,
              find_parent: Callable[[bytes], VhdImage | None] | None = None) -> list[Finding]:
    """Every finding about one VHD (and its parent linkage when `find_parent` is given:
    unique id -> the parent's VhdImage or None)."""
    if isinstance(target, VhdImage):
        img = target
    else:
        try:
            img = VhdImage.open(target)
        except VhdError as exc:
            return [_f("vhd-unreadable", None, "error", str(exc))]
    out = list(img.findings)
    for check in (check_footer, check_header, check_bat, check_batmap, check_bitmaps,
                  check_mapping):
        out.extend(check(img))
    if find_parent is not None:
        out.extend(check_parent_chain(img, find_parent))
    out.extend(check_unreadable(img))
    return out


def _bottom(space) -> object:
    """The evidence under a stack of spaces (VHD -> LV run list -> image)."""
    seen = 0
    while hasattr(space, "base") and seen < 16:
        space = space.base
        seen += 1
    return space


def unreadable_pieces(space, disk_ranges) -> list[tuple[int, int, int, int]]:
    """(space start, space end, disk start, disk end) for every piece of `space` (a RunList over
    the evidence, or the evidence itself) that lies in one of the unreadable `disk_ranges`."""
    ranges = sorted((int(a), int(b)) for a, b in disk_ranges)
    if not ranges:
        return []
    runs = getattr(space, "runs", None)
    if runs is None:        # the evidence itself
        return [(a, b, a, b) for a, b in ranges]
    out = []
    for run in runs:
        if run.target is None:
            continue
        lo, hi = run.target, run.target + run.length
        for a, b in ranges:
            if b <= lo or a >= hi:
                continue
            da, db = max(a, lo), min(b, hi)
            out.append((run.start + da - lo, run.start + db - lo, da, db))
    return out


def check_unreadable(img: VhdImage) -> list[Finding]:
    """Sectors under this VHD that could not be read (issue 11 item 6): they read as zeros, so
    any finding about what lies there may be an I/O error and not damage; never silent."""
    ev = _bottom(img.space)
    bad = getattr(ev, "unreadable", None) or []
    if not bad:
        return []
    places = []
    if img.footer is not None:
        places.append(("footer", img.footer_offset, 512))
    if img.header is not None:
        places.append(("header", img.header_offset, 1024))
        places.append(("BAT", int(img.header.table_offset), 4 * max(1, len(img.bat))))
    out = []
    for a, b, da, db in unreadable_pieces(img.space, bad)[:64]:
        what = [name for name, off, n in places if off < b and a < off + n] or ["data or bitmaps"]
        out.append(_f("vhd-unreadable-sectors", a, "error",
                      f"bytes {a}-{b - 1} of the VHD ({', '.join(what)}; disk {da}-{db - 1}) "
                      f"could not be read and read as zeros: findings about them may be I/O "
                      f"errors, not damage", disk=[da, db], structures=what))
    return out


def check_footer(img: VhdImage) -> list[Finding]:
    f, off = img.footer, img.footer_offset
    out = []
    if f.ff_version != S.HD_FF_VERSION:
        out.append(_f("vhd-footer-version", off + 12, "warning",
                      f"footer format version 0x{f.ff_version:08x}, expected 0x00010000",
                      version=int(f.ff_version)))
    if not f.features & S.HD_RESERVED:
        out.append(_f("vhd-footer-features", off + 8, "warning",
                      f"features 0x{f.features:08x} lack the reserved bit 0x2"))
    if img.current_size > MAX_VIRTUAL_SIZE:
        out.append(_f("vhd-size-implausible", off + 48, "error",
                      f"current size {img.current_size} exceeds the VHD maximum of 2 TiB",
                      current_size=img.current_size))
    if img.current_size % 512:
        out.append(_f("vhd-size-unaligned", off + 48, "error",
                      f"current size {img.current_size} is not a multiple of 512"))
    if img.disk_type == S.HD_TYPE_FIXED:
        if f.data_offset != S.FIXED_DATA_OFFSET:
            out.append(_f("vhd-footer-data-offset", off + 16, "warning",
                          f"fixed disk data offset {f.data_offset:#x}, expected all ones"))
    elif img.disk_type in (S.HD_TYPE_DYNAMIC, S.HD_TYPE_DIFF):
        if f.data_offset != 512:
            out.append(_f("vhd-footer-data-offset", off + 16, "warning",
                          f"dynamic header offset {f.data_offset}, producers always write 512"))
    if f.features & ~(S.HD_TEMPORARY | S.HD_RESERVED):
        out.append(_f("vhd-footer-features", off + 8, "warning",
                      f"features 0x{f.features:08x} has bits besides temporary/reserved"))
    now = int(time.time()) - S.VHD_EPOCH_OFFSET
    if f.timestamp > now + TIMESTAMP_MAX_SLACK:
        out.append(_f("vhd-footer-timestamp-future", off + 24, "info",
                      f"creation time {f.timestamp + S.VHD_EPOCH_OFFSET} (Unix) lies in the future"))
    if f.crtr_app == S.CREATOR_TAP and f.crtr_ver > S.TAP_VERSION_1_3:
        out.append(_f("vhd-creator-version", off + 32, "warning",
                      f"tap creator version 0x{f.crtr_ver:08x} is newer than blktap's 1.3"))
    if S.geometry_word(*S.chs_for_size(img.current_size)) < f.geometry:
        out.append(_f("vhd-geometry", off + 56, "warning",
                      f"CHS geometry {img.geometry} is larger than current_size allows"))
    if f.saved not in (0, 1) or f.hidden not in (0, 1):
        out.append(_f("vhd-footer-flags", off + 84, "warning",
                      f"saved/hidden bytes are {f.saved}/{f.hidden}, not 0 or 1"))
    if any(f.reserved):
        out.append(_f("vhd-footer-reserved", off + 86, "warning",
                      "footer reserved bytes are not zero"))
    if not any(f.uuid):
        out.append(_f("vhd-footer-null-uuid", off + 68, "warning",
                      "unique id is all zeros (children cannot name this disk as parent)"))
    if f.saved:
        out.append(_f("vhd-saved-state", off + 84, "info", "saved-state flag is set"))
    if f.hidden:
        out.append(_f("vhd-hidden", off + 85, "info",
                      "hidden flag set (a blktap snapshot parent, not attached to a VM)"))
    if img.virtual_size != img.current_size:
        out.append(_f("vhd-size-chs", off + 56, "info",
                      f"{img.creator.strip()!r} image: disk size is the CHS product "
                      f"{img.virtual_size}, current_size says {img.current_size}"))
    return out


def check_header(img: VhdImage) -> list[Finding]:
    h = img.header
    if h is None:
        return []
    off = img.header_offset
    out = []
    if h.data_offset != S.DD_NEXT_OFFSET:
        out.append(_f("vhd-header-next-offset", off + 8, "info",
                      f"header next offset {h.data_offset:#x}, expected all ones"))
    if h.hdr_ver != S.DD_VERSION:
        out.append(_f("vhd-header-version", off + 24, "warning",
                      f"header version 0x{h.hdr_ver:08x}, expected 0x00010000"))
    bs = int(h.block_size)
    if bs == 0 or bs & (bs - 1):
        out.append(_f("vhd-block-size-not-power-of-two", off + 32, "error",
                      f"block size {bs} is not a power of two", block_size=bs))
    elif bs > S.VHD_BLOCK_BYTES and img.footer.crtr_app == S.CREATOR_TAP:
        out.append(_f("vhd-block-size", off + 32, "warning",
                      f"block size {bs} is larger than blktap accepts (2 MiB)"))
    if bs and int(h.max_bat_size) * bs < img.current_size:
        out.append(_f("vhd-size-exceeds-bat", off + 28, "error",
                      f"current size {img.current_size} needs more than max_table_entries "
                      f"{h.max_bat_size} x block size {bs}",
                      max_table_entries=int(h.max_bat_size)))
    if h.res1 or any(h.res2):
        out.append(_f("vhd-header-reserved", off + 60, "warning",
                      "dynamic header reserved fields are not zero"))
    if img.disk_type != S.HD_TYPE_DIFF:
        if any(h.prt_uuid) or any(h.prt_name) or h.prt_ts \
                or any(int(l.code) for l in h.loc):
            out.append(_f("vhd-header-parent-fields", off + 40, "warning",
                          "a disk without parent has parent id/name/timestamp/locators set"))
    else:
        out.extend(_check_locators(img))
    table = int(h.table_offset)
    if table + 4 * int(h.max_bat_size) > img.space.size - 512:
        out.append(_f("vhd-bat-beyond-end", off + 16, "error",
                      f"BAT at {table} of {h.max_bat_size} entries runs past the end of the volume"))
    if table < off + S.HEADER_SIZE and table + 4 * int(h.max_bat_size) > off:
        out.append(_f("vhd-bat-overlaps-header", off + 16, "error",
                      f"BAT at {table} overlaps the dynamic header at {off}"))
    if img.disk_type == S.HD_TYPE_DIFF and not any(h.prt_uuid):
        out.append(_f("vhd-parent-raw", off + 40, "info",
                      "differencing disk with a zero parent id: the parent is a raw volume"))
    return out


KNOWN_PLATFORMS = {S.PLAT_CODE_NONE, S.PLAT_CODE_WI2R, S.PLAT_CODE_WI2K, S.PLAT_CODE_W2RU,
                   S.PLAT_CODE_W2KU, S.PLAT_CODE_MAC, S.PLAT_CODE_MACX}


def _check_locators(img: VhdImage) -> list[Finding]:
    """vhd-util-check.c vhd_util_check_validate_parent_locator."""
    out = []
    base = img.header_offset + 576
    for i, loc in enumerate(img.header.loc):
        code = int(loc.code)
        where = base + 24 * i
        if code not in KNOWN_PLATFORMS:
            out.append(_f("vhd-locator-invalid", where, "warning",
                          f"parent locator {i}: unknown platform code 0x{code:08x}", index=i))
            continue
        if code == S.PLAT_CODE_NONE:
            if loc.data_space or loc.data_len or loc.data_offset or loc.res:
                out.append(_f("vhd-locator-invalid", where, "warning",
                              f"parent locator {i}: empty entry with non-zero fields", index=i))
            continue
        problems = [name for name, bad in (("data offset", not loc.data_offset),
                                           ("data space", not loc.data_space),
                                           ("data length", not loc.data_len),
                                           ("reserved", bool(loc.res))) if bad]
        if problems:
            out.append(_f("vhd-locator-invalid", where, "warning",
                          f"parent locator {i}: invalid {', '.join(problems)}", index=i))
    return out


def check_bat(img: VhdImage) -> list[Finding]:
    """Every used entry lies in the data area, inside the space, before the primary footer,
    and no two blocks overlap (vhd-util-check.c vhd_util_check_bat)."""
    if img.header is None or not len(img.bat):
        return []
    out = []
    bat = img.bat
    table = int(img.header.table_offset)
    used_idx = np.nonzero(bat != S.DD_BLK_UNUSED)[0]
    if not len(used_idx):
        return out
    sectors = bat[used_idx].astype(np.int64)
    span = (img.bitmap_bytes + img.block_size) // 512
    meta_end_sector = -(-img.metadata_end // 512)
    limit = img.footer_offset if img.footer_source in ("end", "end-511", "after-data", "scan") \
        else img.space.size
    limit_sector = limit // 512

    def report(kind: str, mask: np.ndarray, severity: str, what: str) -> None:
        bad = used_idx[mask]
        for b in bad[:MAX_LISTED]:
            e = int(bat[b])
            out.append(_f(kind, table + 4 * int(b), severity,
                          f"BAT entry {int(b)} = sector {e} {what}", block=int(b), sector=e))
        if len(bad) > MAX_LISTED:
            out.append(_f(kind, table, severity,
                          f"{len(bad)} BAT entries {what} ({len(bad) - MAX_LISTED} more not listed)",
                          count=int(len(bad))))

    in_meta = sectors < meta_end_sector
    report("vhd-bat-entry-in-metadata", in_meta, "error",
           f"points into the metadata (which ends at {img.metadata_end})")
    past = (sectors + span > limit_sector) & ~in_meta
    report("vhd-bat-entry-past-end", past, "error",
           f"ends past the {'primary footer' if limit != img.space.size else 'end'} at {limit}")
    order = np.argsort(sectors, kind="stable")
    srt = sectors[order]
    overlap = np.zeros(len(srt), dtype=bool)
    overlap[1:] = srt[1:] < srt[:-1] + span
    mask = np.zeros(len(sectors), dtype=bool)
    mask[order[overlap]] = True
    report("vhd-bat-overlap", mask, "error", "overlaps the previous block")
    if img.footer.crtr_app == S.CREATOR_TAP and img.bitmap_bytes == 512:
        misaligned = (sectors + 1) % 8 != 0
        if misaligned.any():
            out.append(_f("vhd-bat-unaligned", table, "info",
                          f"{int(misaligned.sum())} blocks of a blktap VHD do not start their data "
                          f"on a 4 KiB boundary", count=int(misaligned.sum())))
    if img.virtual_size > len(bat) * img.block_size and len(bat) < img.bat_entries_declared:
        pass  # truncated/capped BAT already reported by the reader
    return out


def unmapped_blocks(img: VhdImage) -> np.ndarray:
    """Allocated blocks (indices) that lie, wholly or partly, in extents of the volume that no
    map places (a run list with holes: a reconstruction that missed some LEs). They read as
    zeros there, which is not what the VDI held."""
    runs = getattr(img.space, "runs", None)
    if runs is None or img.header is None or not len(img.bat):
        return np.zeros(0, dtype=np.int64)
    mapped: list[list[int]] = []
    for r in runs:
        if r.target is None:
            continue
        if mapped and mapped[-1][1] == r.start:
            mapped[-1][1] = r.start + r.length
        else:
            mapped.append([r.start, r.start + r.length])
    idx = np.nonzero(img.bat != S.DD_BLK_UNUSED)[0]
    if not len(idx):
        return idx
    starts = img.bat[idx].astype(np.int64) * 512
    ends = starts + img.bitmap_bytes + img.block_size
    if not mapped:
        return idx
    m = np.asarray(mapped, dtype=np.int64)
    k = np.searchsorted(m[:, 0], starts, side="right") - 1
    inside = (k >= 0) & (starts < m[np.maximum(k, 0), 1]) & (ends <= m[np.maximum(k, 0), 1])
    # blocks running past the end of the space are the BAT checks' business
    return idx[~inside & (ends <= img.space.size)]


def check_mapping(img: VhdImage) -> list[Finding]:
    bad = unmapped_blocks(img)
    out = []
    for b in bad[:MAX_LISTED]:
        off = int(img.bat[b]) * 512
        out.append(_f("vhd-block-unmapped", off, "error",
                      f"block {int(b)} (at {off} in the volume) lies in extents no map places; "
                      f"it reads as zeros", block=int(b)))
    if len(bad) > MAX_LISTED:
        out.append(_f("vhd-block-unmapped", None, "error",
                      f"{len(bad)} blocks lie in unmapped extents ({len(bad) - MAX_LISTED} more "
                      f"not listed)", count=int(len(bad))))
    return out


def check_batmap(img: VhdImage) -> list[Finding]:
    """A batmap 'full' bit only for allocated blocks whose bitmap is all ones; the header's
    version, size and offset sane (vhd-util-check.c vhd_util_check_validate_batmap)."""
    out = []
    bh = img.batmap_header
    if bh is not None:
        where = img.batmap_header_offset
        if bh.batmap_version > S.BATMAP_VERSION_1_2:
            out.append(_f("vhd-batmap-version", where + 20, "warning",
                          f"batmap version 0x{bh.batmap_version:08x} is newer than 1.2"))
        if bh.batmap_size == 0 or (int(bh.batmap_size) << 12) < img.bat_entries_declared:
            out.append(_f("vhd-batmap-size", where + 16, "error",
                          f"batmap of {bh.batmap_size} sectors cannot cover "
                          f"{img.bat_entries_declared} BAT entries"))
        if bh.batmap_offset == 0 or bh.batmap_offset % 512:
            out.append(_f("vhd-batmap-offset", where + 8, "error",
                          f"batmap offset {bh.batmap_offset} is zero or unaligned"))
    if img.batmap is None or not img.batmap_valid:
        return out
    bits = img.batmap[: len(img.bat)]
    unalloc = bits & (img.bat[: len(bits)] == S.DD_BLK_UNUSED)
    for b in np.nonzero(unalloc)[0][:MAX_LISTED]:
        out.append(_f("vhd-batmap-unallocated", img.batmap_header_offset, "error",
                      f"batmap marks block {int(b)} full but the BAT has it unallocated",
                      block=int(b)))
    full = np.nonzero(bits & ~unalloc)[0][:MAX_BITMAP_READS]
    spb = img.block_size // 512
    not_full = []
    for b in full:
        raw = img.space.read(int(img.bat[b]) * 512, -(-spb // 8))
        if raw.count(0xFF) != len(raw) or len(raw) < -(-spb // 8):
            not_full.append(int(b))
    for b in not_full[:MAX_LISTED]:
        out.append(_f("vhd-batmap-bitmap-mismatch", int(img.bat[b]) * 512, "warning",
                      f"batmap marks block {b} full but its sector bitmap is not all ones",
                      block=b))
    return out


def check_bitmaps(img: VhdImage) -> list[Finding]:
    """Sector bitmaps of allocated blocks: padding bits past the block's sectors must be clear;
    an all-clear bitmap means an allocated block nothing was written to (a crash between
    allocation and write); qemu sets every bit, so a partial bitmap there is unusual."""
    if img.header is None or not img.bitmap_bytes:
        return []
    spb = img.block_size // 512
    # only entries the BAT checks accept: damaged ones are reported there, not read here
    sectors = img.bat.astype(np.int64)
    span = img.bitmap_bytes + img.block_size
    sane = (img.bat != S.DD_BLK_UNUSED) & (sectors * 512 >= img.metadata_end) \
        & (sectors * 512 + span <= img.space.size)
    used = np.nonzero(sane)[0][:MAX_BITMAP_READS]
    empty, padded, partial_qemu = [], [], []
    qemu = img.footer.crtr_app in (S.CREATOR_QEMU, S.CREATOR_QEM2)
    for b in used:
        off = int(img.bat[b]) * 512
        if off + img.bitmap_bytes > img.space.size:
            continue
        raw = np.frombuffer(img.space.read(off, img.bitmap_bytes), dtype=np.uint8)
        bits = np.unpackbits(raw)
        if bits[spb:].any():
            padded.append(int(b))
        n = int(bits[:spb].sum())
        if n == 0:
            empty.append(int(b))
        elif qemu and n != spb:
            partial_qemu.append(int(b))
    out = []
    for kind, blocks, sev, what in (
            ("vhd-bitmap-padding", padded, "warning", "has bits set past its last sector"),
            ("vhd-bitmap-empty", empty, "info", "is allocated but its bitmap marks no sector"),
            ("vhd-bitmap-partial", partial_qemu, "info",
             "has a partial bitmap although qemu sets every bit")):
        if blocks:
            shown = ", ".join(map(str, blocks[:MAX_LISTED]))
            out.append(_f(kind, int(img.bat[blocks[0]]) * 512, sev,
                          f"{len(blocks)} block(s) {what} (blocks {shown}"
                          f"{' ...' if len(blocks) > MAX_LISTED else ''})",
                          blocks=blocks[:MAX_LISTED], count=len(blocks)))
    return out


def check_parent_chain(img: VhdImage, find_parent: Callable[[bytes], VhdImage | None],
                       max_depth: int = 64) -> list[Finding]:
    """Walk child -> parent by header parent id == parent footer unique id: missing parents,
    loops, size mismatches."""
    out = []
    seen = {img.unique_id}
    cur = img
    depth = 0
    while cur.disk_type == S.HD_TYPE_DIFF and cur.header is not None:
        pid = cur.parent_unique_id
        if not any(pid):
            break  # raw parent (blktap `snapshot -m`), nothing to link by id
        parent = find_parent(pid)
        if parent is None:
            out.append(_f("vhd-parent-missing", cur.header_offset + 40, "error",
                          f"parent {format_uuid(pid)} ({cur.parent_name or 'no name'}) of "
                          f"{format_uuid(cur.unique_id)} not found", parent_unique_id=format_uuid(pid),
                          parent_name=cur.parent_name,
                          locators=[l.text for l in cur.locators if l.text]))
            break
        if parent.unique_id in seen:
            out.append(_f("vhd-parent-loop", cur.header_offset + 40, "error",
                          f"parent chain loops back to {format_uuid(parent.unique_id)}",
                          parent_unique_id=format_uuid(parent.unique_id)))
            break
        if parent.virtual_size < cur.virtual_size and parent.disk_type != S.HD_TYPE_DIFF:
            out.append(_f("vhd-parent-size", cur.header_offset + 40, "info",
                          f"parent {format_uuid(pid)} is smaller ({parent.virtual_size}) than its "
                          f"child ({cur.virtual_size}); the rest reads as zeros"))
        seen.add(parent.unique_id)
        depth += 1
        if depth > max_depth:
            out.append(_f("vhd-parent-depth", None, "error",
                          f"parent chain deeper than {max_depth}"))
            break
        cur = parent
    return out
