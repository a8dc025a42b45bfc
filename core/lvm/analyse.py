"""Whole-disk LVM analysis: partitions, PVs, metadata areas, every generation, stray copies.

`analyse_disk(ev)` is the LVM view that `srsalvage lvm` (through core.sr), reconstruction and
the workstation start from.  Steps:
  1. the partition table (core.partitions);
  2. one pass over the disk in windows: LVM labels and mda headers at every sector (numpy over
     the window's sectors) and, with `search_stray`, metadata text markers (bytes.find);
  3. each PV found by its label (sectors 0..3 of it; the label's `sector` field gives the PV
     start), its mda headers and every copy in their rings (core.lvm.mda.scan_ring); without a
     usable mda header the ring is read at the place and size the label states;
  4. mda headers without a label: their `start` field gives the PV start;
  5. metadata text outside every known area: when it belongs to a VG whose PV was not found, the
     PV start is inferred from where the copies lie (formats.md pitfall 16) and checked against
     pe_start, the partition grid and the LVs' contents, then that ring is scanned; what is left
     is reported as `scan` copies;
  6. backup files; then copies -> generations -> volume groups (core.lvm.generations).
XenServer's meaning (SR uuid, VDI kinds, the MGT volume's name labels, sm's journals) is applied
on top by core.sr.analyse_sr, which is what `srsalvage lvm` prints.
Beside this module: core/lvm/found.py (hits, areas, PVs found), core/lvm/stray.py (step 5).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from core.bytesearch import find_all
from core.errors import SrsalvageError
from core.findings import Finding
from core.lvm import mda as MDA
from core.lvm.crc import lvm_crc
from core.lvm.generations import FoundText, build_volume_groups
from core.lvm.found import Area, DiskHits, FoundPV  # noqa: F401 (importable here)
from core.lvm.label import find_label, parse_label_sector
from core.lvm.model import Copy, PhysicalVolume, VolumeGroup, try_parse
from core.lvm.stray import _infer_pvs, _stray_texts
from core.partitions import Partition, PartitionTable, read_partition_table
from core.progress import ProgressFn, Ticker
from core.structs import lvm as S

WINDOW = 64 << 20
OVERLAP = 4096
MAX_HITS = 200_000           # text markers per disk; more is a disk full of LVM text: say so
MAX_BACKUP_FILE = 64 << 20
MAX_LABELS = 4096
MIB = 1 << 20
LABEL_U64 = int.from_bytes(S.LABEL_ID, "little")
XSSM_U64 = int.from_bytes(b"XSSM:", "little")   # the MGT volume's header (core.xen HDR_STRING)
XSSM_MASK = (1 << 40) - 1
MAGIC_U64 = int.from_bytes(S.FMTT_MAGIC[:8], "little")
_SEQNO_MARK = b"seqno = "
_CONTENTS_MARK = b'contents = "Text Format Volume Group"'


@dataclass
class DiskReport:
    image_bytes: int
    table: PartitionTable
    partitions: list[Partition]
    volume_groups: list[VolumeGroup]
    findings: list[Finding]
    pvs: list[FoundPV]
    unreadable: list[tuple[int, int]] = field(default_factory=list)


# -- step 2: the disk pass -----------------------------------------------------------------------
def _sector_hits(view: np.ndarray, base: int, limit: int
                 ) -> tuple[list[int], list[int], list[int]]:
    n = min(len(view), limit) // 512
    if n == 0:
        return [], [], []
    rows = view[: n * 512].reshape(n, 512)
    first = np.ascontiguousarray(rows[:, :8]).view("<u8").ravel()
    magic = np.ascontiguousarray(rows[:, 4:12]).view("<u8").ravel()
    labels = (np.flatnonzero(first == LABEL_U64) * 512 + base).tolist()
    mdas = (np.flatnonzero(magic == MAGIC_U64) * 512 + base).tolist()
    mgts = (np.flatnonzero((first & XSSM_MASK) == XSSM_U64) * 512 + base).tolist()
    return labels, mdas, mgts


def window_hits(hits: DiskHits, view: np.ndarray, off: int, nominal: int,
                text: bool = True, sectors: bool = True) -> None:
    """Add the labels, mda headers, MGT headers and (text=True) metadata text markers that
    start in [off, off + nominal) of one window to `hits` (the view may run further: a marker
    straddling the window's end is read whole). Used by disk_pass and by the evidence index's
    one pass (core.evidence_index); sectors=False: the text markers only."""
    labels, mdas, mgts = _sector_hits(view, off, nominal) if sectors else ([], [], [])
    for out, new in ((hits.labels, labels), (hits.mda_headers, mdas),
                     (hits.mgt_headers, mgts)):
        room = MAX_LABELS - len(out)
        if len(new) > room:
            hits.truncated = True
        out += new[: max(0, room)]
    if text:
        for name, needle, out in (("seqno", _SEQNO_MARK, hits.seqno_marks),
                                  ("contents", _CONTENTS_MARK, hits.contents_marks)):
            # starts below `nominal` (later ones are the next window's), at most one past
            # the room left, which says the cap was reached; no copy of the window
            room = MAX_HITS - len(out)
            found = find_all(view[: nominal + len(needle) - 1], needle, limit=room + 1)
            if len(found) > room:
                hits.truncated = True
            if len(found):
                out += (found[:room] + off).tolist()


def disk_pass(ev, ticker: Ticker, text: bool = True, start: int = 0,
              end: int | None = None) -> DiskHits:
    """Labels, mda headers and (text=True) metadata text markers over [start, end)."""
    hits = DiskHits()
    end = ev.size if end is None else end
    for off, view in ev.windows(start, end, window=WINDOW, overlap=OVERLAP):
        nominal = min(WINDOW, end - off)
        window_hits(hits, view, off, nominal, text)
        ticker.tick(off + nominal - start)
    return hits


# -- step 3/4: PVs and their rings ---------------------------------------------------------------
def _scan_area(ev, area: Area, found: list[FoundText], findings: list[Finding],
               ticker: Ticker) -> None:
    data = MDA.read_area(ev, area.mda_abs, area.size)
    if not data:
        return
    area_abs = area.mda_abs + S.MDA_HEADER_SIZE
    slots: dict[int, tuple[str, MDA.RawLocn, bool]] = {}
    hdr = area.header
    if hdr is not None and hdr.crc_ok:
        for index, name in ((0, "committed"), (1, "precommitted")):
            rl = hdr.slot(index)
            if rl is None:
                continue
            res = MDA.read_slot_text(data, rl)
            ok = bool(res and res[1])
            slots[area.mda_abs + rl.offset] = (name, rl, ok)
            if name == "precommitted":
                findings.append(Finding("lvm-precommitted", area.mda_abs + rl.offset, "warning",
                                        f"mda at {area.mda_abs}: precommitted metadata slot is set "
                                        f"(a write was interrupted before its commit)"))
            if not ok:
                findings.append(Finding("lvm-slot-crc", area.mda_abs + rl.offset, "warning",
                                        f"mda at {area.mda_abs}: {name} copy at "
                                        f"{area.mda_abs + rl.offset} fails its checksum"))
    ticker.check()
    seen: set[int] = set()
    for rc in MDA.scan_ring(data, area_abs):
        seen.add(rc.offset)
        slot = slots.get(rc.offset)
        crc_ok = None
        name = None
        if slot is not None:
            name, rl, _ = slot
            crc_ok = (not rc.partial) and rc.length == rl.size and rc.checksum == rl.checksum
        copy = Copy("mda", rc.offset, rc.length, rc.checksum, crc_ok, rc.wrapped, rc.partial,
                    name, pv_offset=area.pv_start)
        found.append(FoundText(rc.text, copy, rc.vg_name, rc.vg_id, rc.seqno))
    # a slot whose copy the line rule did not find (odd VG name, unaligned offset): take it as
    # the raw_locn says, when its checksum holds
    for where, (name, rl, ok) in slots.items():
        if where in seen or not ok:
            continue
        res = MDA.read_slot_text(data, rl)
        if res is None:
            continue
        text = res[0].split(b"\0", 1)[0]
        m = MDA._VG_START.match(text)
        copy = Copy("mda", where, rl.size, rl.checksum, True,
                    rl.offset + rl.size > area.size, False, name, pv_offset=area.pv_start)
        found.append(FoundText(text, copy, m.group(1).decode() if m else None,
                               m.group(2).decode("ascii", "replace") if m else None,
                               int(m.group(3)) if m else None))


def _areas_from_label(ev, pv: FoundPV, findings: list[Finding]) -> None:
    label = pv.label
    assert label is not None
    for off, size in label.metadata_areas:
        mda_abs = pv.pv_start + off
        if mda_abs >= ev.size:
            findings.append(Finding("lvm-mda-beyond-end", mda_abs, "warning",
                                    f"PV at {pv.pv_start}: metadata area at {mda_abs} lies beyond "
                                    f"the image end"))
            continue
        hdr = MDA.parse_mda_header(ev.read(mda_abs, 512), mda_abs)
        if hdr is not None:
            findings.extend(hdr.findings)
            if hdr.start != off:
                findings.append(Finding("lvm-mda-start", mda_abs, "warning",
                                        f"mda header at {mda_abs} says start {hdr.start}, the label "
                                        f"says {off}"))
        if hdr is not None and hdr.usable:
            area_size = hdr.size
        else:
            if hdr is None:
                findings.append(Finding("lvm-mda-header-missing", mda_abs, "warning",
                                        f"no mda header at {mda_abs}; reading the ring at the "
                                        f"place and size the PV label states"))
            area_size = size if 1024 <= size <= MDA.MAX_MDA_BYTES else \
                ((label.pe_start or 0) - off if (label.pe_start or 0) > off + 1024 else 1 * MIB - off)
        pv.areas.append(Area(pv.pv_start, mda_abs, area_size, hdr if hdr and hdr.usable else None))


# -- backups -------------------------------------------------------------------------------------
def read_backup_files(paths: Iterable[str], findings: list[Finding]) -> list[FoundText]:
    out = []
    for path in paths:
        try:
            size = os.path.getsize(path)
            if os.path.isdir(path):
                raise SrsalvageError(f"{path}: is a directory, not an LVM backup file")
            if size > MAX_BACKUP_FILE:
                raise SrsalvageError(f"{path}: {size} bytes is too large for an LVM backup file")
            with open(path, "rb") as fh:
                data = fh.read(MAX_BACKUP_FILE)
        except FileNotFoundError:
            raise SrsalvageError(f"{path}: no such backup file") from None
        except OSError as exc:
            raise SrsalvageError(f"{path}: cannot read: {exc.strerror}") from None
        m = MDA._VG_START.search(data[:1 << 20])
        meta, err = try_parse(data)
        if meta is None:
            findings.append(Finding("lvm-backup-unparsable", None, "error",
                                    f"{path}: not usable LVM metadata: {err}", {"path": path}))
        copy = Copy("backup", 0, len(data), lvm_crc(data), None, partial=meta is None, path=path)
        out.append(FoundText(data.split(b"\0", 1)[0], copy,
                             meta.name if meta else (m.group(1).decode() if m else None),
                             meta.id if meta else (m.group(2).decode("ascii", "replace") if m else None),
                             meta.seqno if meta else (int(m.group(3)) if m else None)))
    return out


# -- the whole analysis --------------------------------------------------------------------------
def analyse_disk(ev, backups: Iterable[str] = (), cancel: threading.Event | None = None,
                 progress: ProgressFn | None = None, search_stray: bool = True,
                 pv_offsets: Iterable[Any] = (), hits: DiskHits | None = None) -> DiskReport:
    """Partitions, PVs, VGs and every metadata generation on `ev` (a core.source.Evidence).
    `pv_offsets`: the technician's `--pv-offset` values (strings or core.lvm.anchor.PvOffset).
    `hits`: the disk pass's result when it was already made (the evidence index's one pass,
    core.evidence_index), made with text markers when search_stray: the whole-disk read is
    then skipped."""
    from core.lvm.anchor import PvOffset, anchor_volume_groups, claims_across_vgs
    overrides = [o if isinstance(o, PvOffset) else PvOffset.parse(str(o)) for o in pv_offsets]
    findings: list[Finding] = []
    ticker = Ticker(max(1, ev.size), "lvm: scanning", progress, cancel)
    table = read_partition_table(ev)
    findings += table.findings
    backup_texts = read_backup_files(list(backups), findings)
    if hits is None:
        hits = disk_pass(ev, ticker, text=search_stray)
    if hits.truncated:
        findings.append(Finding("lvm-too-many-hits", None, "warning",
                                f"more than {MAX_HITS} metadata text markers or {MAX_LABELS} "
                                f"label/mda-header sectors; the rest were not examined"))
    # labelled PVs
    pvs: dict[int, FoundPV] = {}
    candidate_starts = [0] + [p.offset for p in table.partitions]
    for off in hits.labels:
        label = parse_label_sector(ev.read(off, 512), off)
        if label is None or not 0 <= label.sector < S.LABEL_SCAN_SECTORS or label.pv_start < 0:
            continue
        candidate_starts.append(label.pv_start)
    for start in sorted(set(candidate_starts)):
        if start in pvs or start >= ev.size:
            continue
        label = find_label(ev, start)
        if label is None:
            continue
        findings += label.findings
        pvs[start] = FoundPV(start, label, pv_id=label.pv_uuid, pe_start=label.pe_start,
                             device_size=label.device_size,
                             inferred_by=[f"LVM label in sector {label.sector} at {label.offset}"])
        _areas_from_label(ev, pvs[start], findings)
    # mda headers without a label
    known_mdas = {a.mda_abs for p in pvs.values() for a in p.areas}
    for off in hits.mda_headers:
        if off in known_mdas:
            continue
        hdr = MDA.parse_mda_header(ev.read(off, 512), off)
        if hdr is None or not hdr.usable or hdr.start > off:
            continue
        start = off - hdr.start
        pv = pvs.get(start)
        if pv is None:
            pv = pvs[start] = FoundPV(start, None, inferred_by=[
                f"mda header at {off} whose start field ({hdr.start}) puts the PV at {start}; "
                f"no LVM label"])
            findings.append(Finding("lvm-label-missing", start, "warning",
                                    f"no LVM label for the PV at {start}, found by its mda header "
                                    f"at {off}"))
        pv.areas.append(Area(start, off, hdr.size, hdr))
        findings += hdr.findings
        known_mdas.add(off)
    found: list[FoundText] = []
    for pv in pvs.values():
        for area in pv.areas:
            _scan_area(ev, area, found, findings, ticker)
    # stray text, inferred PVs
    if search_stray:
        known = [a for p in pvs.values() for a in p.areas]
        stray = _stray_texts(ev, hits, known, findings)
        inferred = _infer_pvs(ev, stray, table, list(pvs.values()), findings)
        for pv in inferred:
            if pv.pv_start in pvs:
                continue
            pvs[pv.pv_start] = pv
            for area in pv.areas:
                _scan_area(ev, area, found, findings, ticker)
            known += pv.areas
        for f in stray:
            if not any(a.holds(f.copy.offset) for a in known):
                found.append(f)
    found += backup_texts
    vgs = build_volume_groups(found)
    _mark_nested(list(pvs.values()), findings)
    _attach_pvs(vgs, list(pvs.values()), findings)
    starts = [0] + [p.offset for p in table.partitions] + list(pvs) + \
        [s for s, _ in getattr(ev, "members", [])]
    anchor_volume_groups(ev, vgs, starts, hits.mgt_headers, overrides, findings)
    claims_across_vgs(vgs, findings)
    _bound_by_disk(ev.size, vgs, findings)
    partitions = _partitions(table, list(pvs.values()), vgs)
    ticker.done()
    return DiskReport(ev.size, table, partitions, vgs, findings, sorted(pvs.values(),
                      key=lambda p: p.pv_start), list(getattr(ev, "unreadable", [])))


MAX_LES_PER_LV = 1 << 20   # 4 TiB of 4 MiB extents: twice XenServer's largest VDI


def _bound_by_disk(disk_bytes: int, vgs: list[VolumeGroup], findings: list[Finding]) -> None:
    """Check every LV segment against its PV and the evidence, before anything builds per-LE
    lists (issue 11 items 5 and 8).

    A segment whose PEs go past its PV's own pe_count (or, for a PV whose size is unknown, an
    LV past MAX_LES_PER_LV) contradicts the metadata itself: one number (extent_count =
    16777215, a backup's 1 TiB LV on a 1.5 GiB disk) must not drive memory and time, so the
    segment is cut there ("lv-segment-past-pv", error). A segment within its PV but past the
    end of this image (a truncated image, or a PV whose end is missing) is kept as it is and
    flagged ("lv-segment-past-disk", warning). Either way the LE ranges nothing on the image
    holds are kept on the LV (`past_disk`) so an export refuses or names them."""
    for vg in vgs:
        for gen in vg.generations:
            E = gen.extent_bytes or vg.extent_bytes
            if not E or gen.metadata is None:
                continue
            for lv in gen.lvs.values():
                cut: list[tuple[int, int]] = []
                beyond: list[tuple[int, int]] = []
                kept = []
                for seg in lv.segments:
                    pv = vg.pv_by_name(seg.stripes[0][0]) if seg.linear else None
                    pe0 = seg.stripes[0][1] if seg.linear else 0
                    room = max(0, MAX_LES_PER_LV - seg.start_extent)
                    if pv is not None and pv.pe_count:
                        room = min(room, max(0, pv.pe_count - pe0))
                    if seg.extent_count > room:
                        cut.append((seg.start_extent + room, seg.start_extent + seg.extent_count))
                        seg.extent_count = room
                    if pv is not None and pv.data_offset is not None:
                        on_disk = max(0, (disk_bytes - pv.data_offset) // E - pe0)
                        if seg.extent_count > on_disk:
                            beyond.append((seg.start_extent + on_disk,
                                           seg.start_extent + seg.extent_count))
                    if seg.extent_count > 0:
                        kept.append(seg)
                lv.segments = kept
                lv.past_disk = sorted(cut + beyond)
                for kind, severity, ranges, what in (
                        ("lv-segment-past-pv", "error", cut,
                         "past the end of its PV (pe_count); cut off there"),
                        ("lv-segment-past-disk", "warning", beyond,
                         "past the end of this image; they read as nothing")):
                    if not ranges:
                        continue
                    shown = ", ".join(f"{a}-{b - 1}" for a, b in ranges[:4])
                    findings.append(Finding(
                        kind, None, severity,
                        f"{lv.name} in generation {gen.seqno} ({gen.source}) maps LE(s) "
                        f"{shown} {what}",
                        {"vg": vg.name, "lv": lv.name, "seqno": gen.seqno,
                         "les": [list(c) for c in ranges[:64]]}))


def _attach_pvs(vgs: list[VolumeGroup], found: list[FoundPV], findings: list[Finding]) -> None:
    by_id = {p.pv_id: p for p in found if p.pv_id}
    by_copy_place: dict[int, FoundPV] = {p.pv_start: p for p in found}
    for vg in vgs:
        ref = vg.reference
        if ref is None or ref.metadata is None:
            continue
        for pvm in ref.metadata.pvs:
            fp = by_id.get(pvm.id)
            if fp is None:
                # a PV found by its mda header only (no label, so no id): the one whose rings hold
                # this VG's copies
                places = {c.pv_offset for g in vg.generations for c in g.copies
                          if c.source == "mda" and c.pv_offset is not None}
                cands = [by_copy_place[s] for s in places if s in by_copy_place
                         and by_copy_place[s].pv_id is None]
                if len(ref.metadata.pvs) == 1 and len(cands) == 1:
                    fp = cands[0]
                    fp.pv_id = pvm.id
            if fp is None:
                # no label, no mda header: core.lvm.anchor places it from other evidence
                vg.pvs.append(PhysicalVolume(pvm.name, pvm.id, None, False,
                                             pvm.pe_start * 512, pvm.pe_count,
                                             pvm.dev_size * 512, []))
                findings.append(Finding("lvm-pv-missing", None, "info",
                                        f"VG {vg.name}: no label or mda header of PV {pvm.name} "
                                        f"({pvm.id}) on the image", {"vg": vg.name, "pv": pvm.name}))
                continue
            pe_start = pvm.pe_start * 512
            if fp.label is not None and fp.label.pe_start not in (None, pe_start):
                findings.append(Finding("lvm-pe-start-mismatch", fp.pv_start, "warning",
                                        f"PV {pvm.name}: label pe_start {fp.label.pe_start} != "
                                        f"metadata pe_start {pe_start}; using the metadata's"))
            anchor = "label" if fp.label is not None else (
                "mda-header" if any(a.header is not None for a in fp.areas) else "metadata-area")
            vg.pvs.append(PhysicalVolume(pvm.name, pvm.id, fp.pv_start, fp.label is not None,
                                         pe_start, pvm.pe_count,
                                         fp.device_size or pvm.dev_size * 512,
                                         [a.mda_abs for a in fp.areas], list(fp.inferred_by),
                                         anchor))


def _partitions(table: PartitionTable, pvs: list[FoundPV], vgs: list[VolumeGroup]) -> list[Partition]:
    parts = list(table.partitions)
    index = max((p.index for p in parts), default=0)
    for pv in sorted(pvs, key=lambda p: p.pv_start):
        if pv.pv_start == 0 or any(p.offset == pv.pv_start for p in parts):
            continue
        if _enclosing_pv(pv, pvs) is not None:
            continue        # a guest's own PV inside an LV: not a partition of this disk
        size = pv.device_size or 0
        if not size:
            for vg in vgs:
                for p in vg.pvs:
                    if p.offset == pv.pv_start and p.device_size:
                        size = p.device_size
        index += 1
        parts.append(Partition(index, "found-by-scan", pv.pv_start, size, "lvm",
                               details={"how": list(pv.inferred_by)}))
    return parts


def _enclosing_pv(pv: FoundPV, pvs: list[FoundPV]) -> FoundPV | None:
    """The PV whose data area holds `pv` (a VM that uses LVM inside its virtual disk)."""
    for other in pvs:
        if other is pv or not other.pe_start or not other.device_size:
            continue
        if other.pv_start + other.pe_start <= pv.pv_start < other.pv_start + other.device_size:
            return other
    return None


def _mark_nested(pvs: list[FoundPV], findings: list[Finding]) -> None:
    for pv in pvs:
        outer = _enclosing_pv(pv, pvs)
        if outer is not None:
            note = (f"inside the data area of the PV at {outer.pv_start}: LV content (a guest "
                    f"that uses LVM inside its virtual disk?), not a PV of this disk")
            pv.inferred_by.append(note)
            findings.append(Finding("lvm-nested-pv", pv.pv_start, "info", f"PV at {pv.pv_start} "
                                    + note, {"outer_pv": outer.pv_start}))
