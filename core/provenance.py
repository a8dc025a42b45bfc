"""What an export of a VDI can trust, range by range, when a newer LV took some of its extents.

A deleted VDI is exported from an older metadata generation; a newer generation may have given
some of its extents (PEs) to another LV. Such an extent is *taken*. What it holds now is decided
by an identity check, never assumed:

* **overwritten** — the extent holds another VHD's structures: a VHD footer with another unique
  id at the extent's first sector (a newer VHD's footer copy), or the newer owner's own VHD
  places its footer, header, BAT, batmap or a block there. Nothing in it is read: it is a hole
  (zeros) in the guarded LV space, so a foreign header, footer or BAT is never taken for the
  VDI's. Where the VDI's own dynamic header or BAT lay in such an extent, the header is rebuilt
  from the trusted footer (producer layout: BAT at 1536, 2 MiB blocks) and the lost BAT entries
  are left unallocated — the blocks they placed cannot be put back at a virtual offset.
* **unproven** — taken, but no sign that the owner wrote there: read as it is, and listed.

`export_provenance` then says, per virtual range of the export, where it came from (evidence
offset) and what could not be trusted. VHD and raw exports are made from the same guarded image,
so they describe the same disk. No UI imports here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from core.spaces import ByteSpace, Run, RunList, compact_ranges
from core.structs import vhd as S

MAX_RANGES = 65536   # per-range provenance entries kept in a result (a 128 GiB VDI in 2 MiB blocks)


@dataclass(frozen=True)
class TakenExtent:
    """One LE of the exported VDI whose PE a newer generation gave to `owner`."""

    le: int
    pe: int
    owner: str
    overwritten: bool
    why: str

    def to_json(self) -> dict:
        return {"le": self.le, "pe": self.pe, "owner": self.owner,
                "overwritten": self.overwritten, "why": self.why}


@dataclass
class Guard:
    """The taken extents of one VDI's LV and the LV's extent size."""

    extent_bytes: int
    taken: list[TakenExtent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.taken)

    def _ranges(self, overwritten: bool) -> list[tuple[int, int, TakenExtent]]:
        e = self.extent_bytes
        return [(t.le * e, (t.le + 1) * e, t) for t in self.taken if t.overwritten == overwritten]

    @property
    def overwritten(self) -> list[tuple[int, int, TakenExtent]]:
        return self._ranges(True)

    @property
    def unproven(self) -> list[tuple[int, int, TakenExtent]]:
        return self._ranges(False)

    def hit(self, start: int, end: int, overwritten: bool) -> TakenExtent | None:
        """The first taken extent of that kind overlapping LV bytes [start, end)."""
        for a, b, t in self._ranges(overwritten):
            if a < end and start < b:
                return t
        return None

    def summary(self) -> str:
        parts = []
        for flag, word in ((True, "overwritten (not read)"), (False, "taken, no sign of "
                                                                     "overwriting (read, unproven)")):
            sel = [t for t in self.taken if t.overwritten == flag]
            if sel:
                owners = ", ".join(sorted({t.owner for t in sel}))
                parts.append(f"PE {compact_ranges(t.pe for t in sel)} {word}: now {owners}")
        return "; ".join(parts)


def _owner_used_pes(owner_space: ByteSpace, owner_pes: Sequence[int | None], extent: int,
                    name: str, own_id: bytes | None) -> set[int]:
    """PEs where the owner's own VHD keeps its footer, metadata or a block (empty: no VHD, or
    the VHD seen through the owner's LV is the exported VDI's own: the owner never wrote)."""
    from core.vhd.reader import VhdError, VhdImage

    try:
        img = VhdImage.open(owner_space, name=name)
    except VhdError:
        return set()
    if own_id is not None and img.footer is not None and img.unique_id == own_id:
        return set()
    spans = [(img.footer_offset or 0, (img.footer_offset or 0) + 512)]
    if img.usable and img.header is not None:
        spans.append((0, img.metadata_end))
        used = img.bat[img.bat != S.DD_BLK_UNUSED].astype(np.int64) * 512
        span = img.bitmap_bytes + img.block_size
        # whole-extent granularity: which LEs do the blocks touch
        les: set[int] = set()
        for a, b in spans:
            les.update(range(a // extent, (max(a, b - 1)) // extent + 1))
        if len(used):
            first = used // extent
            last = (used + span - 1) // extent
            for le in np.unique(np.concatenate([first, last])):
                les.add(int(le))
            # a block spanning more than two extents (block size > extent) is rare; cover it
            for a, b in zip(first[last - first > 1], last[last - first > 1]):
                les.update(range(int(a), int(b) + 1))
    else:
        les = {a // extent for a, _ in spans}
    return {owner_pes[le] for le in les if 0 <= le < len(owner_pes) and owner_pes[le] is not None}


def assess(space: RunList, pes: Sequence[int | None], claimed: dict, extent_bytes: int,
           owners: dict[str, tuple[ByteSpace, Sequence[int | None]]] | None = None) -> Guard:
    """Decide for each taken LE of `space` (the VDI's LV) whether it was overwritten.

    `claimed` maps PE -> owner LV name (core.lvm.generations); `owners` maps an owner's name to
    its LV space and per-LE PEs in the generation that took the extent."""
    guard = Guard(extent_bytes)
    if not claimed:
        return guard
    claimed = {int(k): str(v) for k, v in claimed.items()}
    own_id = _own_unique_id(space)
    owner_used: dict[str, set[int]] = {}
    for name, (ospace, opes) in (owners or {}).items():
        if name in claimed.values():
            owner_used[name] = _owner_used_pes(ospace, opes, extent_bytes, name, own_id)
    for le, pe in enumerate(pes):
        if pe is None or pe not in claimed:
            continue
        owner = claimed[pe]
        why = ""
        if pe in owner_used.get(owner, ()):
            why = f"{owner}'s VHD keeps its structures or data in PE {pe}"
        else:
            head = _foreign_footer(space, le * extent_bytes, own_id)
            if head is not None:
                why = f"a VHD footer of another disk ({head}) at the start of PE {pe}"
        guard.taken.append(TakenExtent(le, pe, owner, bool(why),
                                       why or f"PE {pe} belongs to {owner} now; no sign it was written"))
    return guard


def _own_unique_id(space: ByteSpace) -> bytes | None:
    """The unique id of the footer in the last sector of the LV (blktap keeps it there)."""
    if space.size < 512:
        return None
    raw = space.read(space.size - 512, 512)
    if raw[:8] != S.HD_COOKIE:
        return None
    return bytes(S.parse_footer(raw).uuid)


def _foreign_footer(space: ByteSpace, offset: int, own_id: bytes | None) -> str | None:
    from core.vhd.reader import format_uuid, read_footer_at

    cand = read_footer_at(space, offset, "probe")
    if cand is None or not cand.good:
        return None
    uid = bytes(cand.parsed.uuid)
    if own_id is not None and uid == own_id:
        return None
    return f"unique id {format_uuid(uid)}"


def guarded_space(space: RunList, guard: Guard) -> RunList:
    """`space` with every overwritten extent turned into a hole (reads as zeros)."""
    holes = sorted((a, b) for a, b, _ in guard.overwritten)
    if not holes:
        return space
    runs: list[Run] = []
    for run in space.runs:
        pieces = [(run.start, run.end)]
        for a, b in holes:
            nxt = []
            for s, e in pieces:
                if b <= s or e <= a:
                    nxt.append((s, e))
                    continue
                if s < a:
                    nxt.append((s, a))
                if b < e:
                    nxt.append((b, e))
            pieces = nxt
        for s, e in pieces:
            tgt = None if run.target is None else run.target + (s - run.start)
            runs.append(Run(s, e - s, tgt))
    return RunList(space.base, runs, size=space.size, name=space.name)


def open_guarded_image(space: RunList, guard: Guard, name: str = ""):
    """The VDI's VHD read through the guarded space (None when there is no VHD to read).

    Where the dynamic header or BAT lay in an overwritten extent and the primary footer did not,
    the header is rebuilt from the footer and the lost BAT entries are left unallocated
    (`img.bat_replaced`, so an export writes that BAT and not the zeros under it)."""
    from core.findings import Finding
    from core.vhd.reader import VhdError, VhdImage

    gspace = guarded_space(space, guard)
    try:
        img = VhdImage.open(gspace, name=name)
    except VhdError:
        return None
    if not guard.overwritten or img.disk_type not in (S.HD_TYPE_DYNAMIC, S.HD_TYPE_DIFF):
        return img
    lost_entries: list[int] = []
    if img.header is None or not img.usable:
        hoff = int(img.footer.data_offset) if img.footer is not None else 512
        if guard.hit(hoff, hoff + S.HEADER_SIZE, True) is None \
                or guard.hit(img.footer_offset or 0, (img.footer_offset or 0) + 512, True) \
                or img.disk_type != S.HD_TYPE_DYNAMIC:
            return img
        need = -(-img.virtual_size // S.VHD_BLOCK_BYTES)
        raw = S.build_header(cookie=S.DD_COOKIE, data_offset=S.DD_NEXT_OFFSET, table_offset=1536,
                             hdr_ver=S.DD_VERSION, max_bat_size=need, block_size=S.VHD_BLOCK_BYTES,
                             prt_uuid=bytes(16), prt_ts=0, prt_name=bytes(512), loc=[])
        img.header, img.header_raw, img.header_offset = S.parse_header(raw), raw, 512
        img.header_checksum_ok = True
        img.header_rebuilt = True
        img.bat_entries_declared = need
        img.bat = np.full(need, S.DD_BLK_UNUSED, dtype=np.uint32)
        img.batmap = None
        img.batmap_header = None
        img.locators = []
        img.usable = True
        img.findings = [f for f in img.findings if not f.kind.startswith("vhd-header")]
        lost_entries = list(range(need))
        t = guard.hit(512, 512 + S.HEADER_SIZE, True)
        img.findings.append(Finding(
            "vhd-header-overwritten", 512, "error",
            f"the dynamic header and BAT lay in PE {t.pe}, now {t.owner}'s ({t.why}): header "
            f"rebuilt from the footer, all {need} BAT entries lost", {}, space="vhd"))
    else:
        table = int(img.header.table_offset)
        idx = np.arange(len(img.bat), dtype=np.int64)
        pos = table + 4 * idx
        for a, b, _ in guard.overwritten:
            lost_entries.extend(int(i) for i in idx[(pos >= a) & (pos < b)])
        if img.batmap_header_offset is not None and \
                guard.hit(img.batmap_header_offset, img.batmap_header_offset + 512, True):
            img.batmap = None
        if lost_entries:
            img.bat = img.bat.copy()
            img.bat[lost_entries] = S.DD_BLK_UNUSED
    img.bat_replaced = True
    img.lost_bat_entries = sorted(set(lost_entries))
    return img


def _range(vstart: int, vend: int, lv_off: int | None, space: RunList | None, trust: str,
           note: str = "") -> dict:
    ev = space.locate(lv_off) if (space is not None and lv_off is not None) else None
    d: dict[str, Any] = {"virtual_start": vstart, "virtual_end": vend, "lv_offset": lv_off,
                         "evidence_offset": ev, "trust": trust}
    if note:
        d["note"] = note
    return d


def export_provenance(img, lv_space: RunList, guard: Guard) -> list[dict]:
    """Per virtual range: where it came from and whether it can be trusted.

    `trust` is "ok" (read from the VDI's own extents), "unproven" (read from a taken extent with
    no sign of overwriting), "overwritten" (not read: zeros), "lost" (its BAT entry was
    overwritten: zeros) or "absent" (unallocated: zeros or the parent)."""
    if img is None:   # a raw LV: the virtual disk is the LV
        return _raw_provenance(lv_space, guard)
    if img.disk_type == S.HD_TYPE_FIXED or img.header is None:
        return _raw_provenance(lv_space, guard, size=img.virtual_size)
    out: list[dict] = []
    bs = img.block_size
    bmp = img.bitmap_bytes
    lost = set(getattr(img, "lost_bat_entries", ()) or ())
    size = img.virtual_size
    nblocks = -(-size // bs)
    for b in range(nblocks):
        vstart, vend = b * bs, min(size, (b + 1) * bs)
        if b in lost:
            t = guard.hit(int(img.header.table_offset) + 4 * b,
                          int(img.header.table_offset) + 4 * b + 4, True) or \
                next((t for _, _, t in guard.overwritten), None)
            _append(out, _range(vstart, vend, None, None, "lost",
                                f"BAT entry in PE {t.pe if t else '?'}, now "
                                f"{t.owner if t else 'another LV'}'s"))
            continue
        entry = int(img.bat[b]) if b < len(img.bat) else S.DD_BLK_UNUSED
        if entry == S.DD_BLK_UNUSED:
            _append(out, _range(vstart, vend, None, None, "absent"))
            continue
        bitmap_off = entry * 512
        data_off = bitmap_off + bmp
        t = guard.hit(bitmap_off, data_off, True)
        full = bool(img.batmap_valid and img.batmap is not None and b < len(img.batmap)
                    and img.batmap[b])   # the reader then needs no bitmap (VirtualDisk)
        if t is not None and not full:
            _append(out, _range(vstart, vend, data_off, lv_space, "overwritten",
                                f"sector bitmap in PE {t.pe}, now {t.owner}'s: not read"))
            continue
        # split the block's data at extent edges that are overwritten / unproven
        cuts = {data_off, data_off + (vend - vstart)}
        for a, b2, _ in guard.overwritten + guard.unproven:
            for c in (a, b2):
                if data_off < c < data_off + (vend - vstart):
                    cuts.add(c)
        cuts_l = sorted(cuts)
        for s, e in zip(cuts_l, cuts_l[1:]):
            vs = vstart + (s - data_off)
            ve = vstart + (e - data_off)
            ow = guard.hit(s, e, True)
            un = guard.hit(s, e, False) or (None if full else guard.hit(bitmap_off, data_off, False))
            if ow is not None:
                _append(out, _range(vs, ve, s, lv_space, "overwritten",
                                    f"PE {ow.pe}, now {ow.owner}'s: not read"))
            elif un is not None:
                _append(out, _range(vs, ve, s, lv_space, "unproven",
                                    f"PE {un.pe} now belongs to {un.owner}: read as found"))
            else:
                _append(out, _range(vs, ve, s, lv_space, "ok"))
        if len(out) > MAX_RANGES:
            break
    return out


def _raw_provenance(lv_space: RunList, guard: Guard, size: int | None = None) -> list[dict]:
    size = lv_space.size if size is None else min(size, lv_space.size)
    e = guard.extent_bytes or max(1, size)
    out: list[dict] = []
    by_le = {t.le: t for t in guard.taken}
    for le in range(-(-size // e)):
        vs, ve = le * e, min(size, (le + 1) * e)
        t = by_le.get(le)
        if t is None:
            _append(out, _range(vs, ve, vs, lv_space, "ok"))
        elif t.overwritten:
            _append(out, _range(vs, ve, vs, lv_space, "overwritten",
                                f"PE {t.pe}, now {t.owner}'s: not read"))
        else:
            _append(out, _range(vs, ve, vs, lv_space, "unproven",
                                f"PE {t.pe} now belongs to {t.owner}: read as found"))
        if len(out) > MAX_RANGES:
            break
    return out


def _append(out: list[dict], r: dict) -> None:
    """Merge with the previous range when both continue each other (same trust and note, and
    the evidence continues too)."""
    if out:
        p = out[-1]
        if p["trust"] == r["trust"] and p.get("note") == r.get("note") \
                and p["virtual_end"] == r["virtual_start"]:
            if p["lv_offset"] is None and r["lv_offset"] is None:
                p["virtual_end"] = r["virtual_end"]
                return
            if p["lv_offset"] is not None and r["lv_offset"] is not None \
                    and p["evidence_offset"] is not None and r["evidence_offset"] is not None \
                    and r["lv_offset"] - p["lv_offset"] == r["virtual_start"] - p["virtual_start"] \
                    and r["evidence_offset"] - p["evidence_offset"] == r["virtual_start"] - p["virtual_start"]:
                p["virtual_end"] = r["virtual_end"]
                return
    out.append(r)


def untrusted_lines(ranges: Iterable[dict], limit: int = 12) -> list[str]:
    """One line per untrusted virtual range, for a dialog, stderr or the audit log."""
    from core.vhd.export import untrusted
    bad = untrusted(ranges)
    lines = []
    for r in bad[:limit]:
        ev = r["evidence_offset"]
        lines.append(f"virtual {r['virtual_start']:#x}-{r['virtual_end']:#x} {r['trust']}"
                     + (f" (evidence {ev:#x})" if ev is not None else "")
                     + (f": {r['note']}" if r.get("note") else ""))
    if len(bad) > limit:
        lines.append(f"... {len(bad) - limit} more untrusted range(s) (see --json)")
    return lines


def describe_export(result, img, lv_space: RunList, guard: Guard) -> None:
    """Fill an export result's per-range provenance and say in `unrepaired` what it lacks."""
    result.ranges = export_provenance(img, lv_space, guard)
    result.taken = [t.to_json() for t in guard.taken]
    if guard:
        result.unrepaired.append(guard.summary())
    if img is not None:
        for f in img.findings:
            if f.kind == "vhd-header-overwritten":
                result.unrepaired.append(f.message)
    bad = result.untrusted
    if bad:
        n = sum(r["virtual_end"] - r["virtual_start"] for r in bad)
        result.unrepaired.append(f"{len(bad)} virtual range(s), {n} bytes, could not be trusted "
                                 f"(listed per range)")
