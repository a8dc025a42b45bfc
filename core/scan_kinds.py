"""The structure kinds of the signature scan: partition tables, LVM, VHD, XenServer MGT.

Every structure is parsed by its owner, and a kind here only turns the owner's answer into a
Verdict (valid when checksums and sanity rules hold; `details` carry the fields that identify
the structure: VHD unique id, creator, disk type and size; VG name and seqno; PV uuid; GPT disk
guid ...): the LVM label by core.lvm.label, the mda header by core.lvm.mda, the metadata text by
core.lvm.textformat, the VHD footer, header and head (with blktap's hidden-flag retry) by
core.vhd.head, the MBR and the GPT header with both CRCs by core.partitions, the MGT header by
core.xen. `STRUCTURE_KINDS` lists them and `POST_SCAN_HOOKS` the cross-checks run after the
pass; core.scan puts both in its table.

Kinds and their anchors:
  mbr             55 AA at 510 of a sector (not a filesystem boot sector)
  gpt-header      "EFI PART" at 0 of a sector (header CRC, entry-array CRC)
  lvm-label       "LABELONE" at 0 of a sector, "LVM2 001" at 24 (label CRC)
  lvm-mda-header  FMTT_MAGIC at 4 of a sector (header CRC)
  lvm-metadata    a sector that begins `<vgname> {\\nid = "` (metadata text copy)
  vhd-footer      "conectix" at 0 of a sector (footer checksum)
  vhd-header      "cxsparse" at 0 of a sector (header checksum)
  vhd-batmap      "tdbatmap" at 0 of a sector (blktap batmap header)
  xen-mgt         "XSSM:" at 0 of a sector (SR metadata volume header)
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from core import xen as SX
from core.kinds import Kind, ScanFinding, Verdict
from core.lvm import crc as CRC
from core.lvm import textformat as TEXT
from core.lvm.label import parse_label_sector
from core.lvm.mda import parse_mda_header
from core.partitions import parse_gpt_header, parse_mbr_sector
from core.structs import gpt as SG
from core.structs import lvm as SL
from core.structs import mbr as SM
from core.structs import vhd as SV
from core.structs.vhd import format_uuid
from core.vhd.head import (HEAD_BYTES, CheckedFooter, batmap_checksum_for, parse_head,
                           read_footer, read_header)

Read = Callable[[int, int], bytes]
SECTOR = 512


def _ascii(raw: bytes) -> str:
    return bytes(raw).rstrip(b"\0 ").decode("ascii", errors="replace")


# =========================================================================================
# VHD (core.vhd.head)
# =========================================================================================

MAX_BATMAP_SECTORS = 1 << 16     # 2 TiB of 2 MiB blocks needs 256; generous bound


def _footer_fields(footer: CheckedFooter) -> tuple[bool, dict[str, Any]]:
    f, ok = footer.parsed, footer.checksum_ok   # blktap's hidden-flag retry (formats.md 4.1)
    ver = f.crtr_ver
    details = {
        "unique_id": format_uuid(f.uuid),
        "creator": _ascii(f.crtr_app),
        "creator_version": f"{ver >> 16}.{ver & 0xFFFF}",
        "disk_type": SV.DISK_TYPE_NAMES.get(f.type, f"unknown-{f.type}"),
        "current_size": int(f.curr_size),
        "original_size": int(f.orig_size),
        "data_offset": int(f.data_offset) if f.data_offset != SV.FIXED_DATA_OFFSET else None,
        "hidden": bool(f.hidden),
        "timestamp": int(f.timestamp) + SV.VHD_EPOCH_OFFSET,
        "checksum_ok": ok,
    }
    return ok, details


def verify_vhd_footer(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SV.FOOTER_SIZE or data[:8] != SV.HD_COOKIE:
        return None
    footer = read_footer(data)                 # core.vhd.head parses and checks it
    f = footer.parsed
    ok, details = _footer_fields(footer)
    # the copy at offset 0 of a dynamic VHD is followed by its dynamic header
    details["header_follows"] = read(offset + SECTOR, 8) == SV.DD_COOKIE
    valid = (ok and f.ff_version == SV.HD_FF_VERSION and f.type in (2, 3, 4)
             and (f.type == 2 or f.data_offset != SV.FIXED_DATA_OFFSET))
    return Verdict(valid, SV.FOOTER_SIZE, details)


def verify_vhd_header(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SV.HEADER_SIZE or data[:8] != SV.DD_COOKIE:
        return None
    header = read_header(data)                 # core.vhd.head parses and checks it
    h, ok = header.parsed, header.checksum_ok
    bs = int(h.block_size)
    parent = bytes(h.prt_uuid)
    details: dict[str, Any] = {
        "table_offset": int(h.table_offset),
        "max_table_entries": int(h.max_bat_size),
        "block_size": bs,
        "parent_unique_id": format_uuid(parent) if any(parent) else None,
        "parent_name": SV.decode_utf16be_name(bytes(h.prt_name)) or None,
        "checksum_ok": ok,
    }
    # the footer copy that precedes a dynamic header names the VHD
    if offset >= SECTOR:
        before = read(offset - SECTOR, SECTOR)
        if before[:8] == SV.HD_COOKIE:
            f = read_footer(before).parsed
            details["unique_id"] = format_uuid(f.uuid)
            details["creator"] = _ascii(f.crtr_app)
            details["disk_type"] = SV.DISK_TYPE_NAMES.get(f.type, f"unknown-{f.type}")
            details["current_size"] = int(f.curr_size)
            details["vhd_start"] = offset - SECTOR
    valid = (ok and h.hdr_ver == SV.DD_VERSION and bs >= SECTOR and bs & (bs - 1) == 0
             and h.data_offset == SV.DD_NEXT_OFFSET and h.table_offset >= SECTOR)
    return Verdict(valid, SV.HEADER_SIZE, details)


def verify_vhd_batmap(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SV.BATMAP_HEADER_SIZE or data[:8] != SV.BATMAP_COOKIE:
        return None
    b = SV.parse_batmap_header(data)
    boff, bsize, ver = int(b.batmap_offset), int(b.batmap_size), int(b.batmap_version)
    details: dict[str, Any] = {"batmap_offset": boff, "batmap_sectors": bsize,
                               "version": f"{ver >> 16}.{ver & 0xFFFF}", "checksum_ok": None}
    sane = (ver in (SV.BATMAP_VERSION_1_1, SV.BATMAP_VERSION_1_2) and 0 < bsize <= MAX_BATMAP_SECTORS
            and SECTOR <= boff and boff - SECTOR <= offset)
    if sane:
        # the map follows its header; the VHD starts batmap_offset - 512 before the header
        vhd_start = offset + SECTOR - boff
        details["vhd_start"] = vhd_start
        head = parse_head(read(vhd_start, HEAD_BYTES))   # footer copy + dynamic header
        if head is not None:
            f, h = head.footer.parsed, head.header.parsed
            details["unique_id"] = format_uuid(f.uuid)
            n = SV.batmap_checksum_length(int(f.curr_size), int(h.block_size) or 1)
            if 0 < n <= bsize * SECTOR:
                m = read(offset + SECTOR, n)
                details["checksum_ok"] = batmap_checksum_for(b, m) == b.checksum
    valid = sane and details["checksum_ok"] is not False
    return Verdict(valid, SV.BATMAP_HEADER_SIZE, details)


VHD_FOOTER = Kind("vhd-footer", "VHD footer (conectix): primary at the end or copy at offset 0",
                  verify_vhd_footer, magic=SV.HD_COOKIE, length=SV.FOOTER_SIZE)
VHD_HEADER = Kind("vhd-header", "VHD dynamic-disk header (cxsparse)",
                  verify_vhd_header, magic=SV.DD_COOKIE, length=SV.HEADER_SIZE)
VHD_BATMAP = Kind("vhd-batmap", "blktap batmap header (tdbatmap)",
                  verify_vhd_batmap, magic=SV.BATMAP_COOKIE, length=SV.BATMAP_HEADER_SIZE)


# =========================================================================================
# LVM (core.lvm.label, core.lvm.mda, core.lvm.crc, core.lvm.textformat)
# =========================================================================================

MAX_METADATA_TEXT = 16 << 20     # a copy is at most (mda size - 512)/2 - 512; bound the read
TEXT_READ_STEP = 64 << 10
_NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-"
_IS_NAME = np.zeros(256, dtype=bool)
_IS_NAME[np.frombuffer(_NAME_CHARS, dtype=np.uint8)] = True
_TEXT_START = re.compile(rb'([A-Za-z0-9._+-]{1,128}) \{\nid = "([A-Za-z0-9-]{32,38})"\nseqno = (\d{1,20})\n')
_HEAD_MARK = np.frombuffer(b' {\nid = "', dtype=np.uint8)
_HEAD_COLS = 24                  # three uint64 words
_BRACES = np.uint64(0x7B7B7B7B7B7B7B7B)   # "{" in every byte
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)


def verify_lvm_label(data: bytes, offset: int, read: Read) -> Verdict | None:
    label = parse_label_sector(data[:SECTOR], offset)      # core.lvm.label owns the parse
    if label is None or not label.type_ok:
        return None
    details: dict[str, Any] = {"sector": label.sector, "crc_ok": label.crc_ok,
                               "pv_start": label.pv_start}
    valid = (label.crc_ok and label.sector < SL.LABEL_SCAN_SECTORS and label.pv_start >= 0
             and label.pv_header_ok)
    if label.pv_header_ok:
        details["pv_uuid"] = label.pv_uuid
        details["device_size"] = int(label.device_size)
        details["pe_start"] = label.pe_start
        details["data_areas"] = [[int(o), int(s)] for o, s in label.data_areas]
        details["metadata_areas"] = [[int(o), int(s)] for o, s in label.metadata_areas]
    return Verdict(valid, SECTOR, details)


def verify_mda_header(data: bytes, offset: int, read: Read) -> Verdict | None:
    mda = parse_mda_header(data[:SECTOR], offset)          # core.lvm.mda owns the parse
    if mda is None:
        return None
    # a raw_locn list without its terminator inside the sector lists nothing
    locns = [{"offset": int(r.offset), "size": int(r.size), "checksum": int(r.checksum),
              "flags": int(r.flags)} for r in mda.raw_locns] if mda.terminated else None
    start, size = int(mda.start), int(mda.size)
    details = {"crc_ok": mda.crc_ok, "version": int(mda.version), "start": start, "size": size,
               "pv_start": offset - start if start <= offset else None, "raw_locns": locns}
    valid = (mda.crc_ok and mda.version == SL.FMTT_VERSION and locns is not None
             and start <= offset and size > SECTOR)
    return Verdict(valid, SECTOR, details)


def metadata_prefilter(window: np.ndarray, base: int = 0) -> np.ndarray:
    """512-aligned sectors that begin `<name> {\nid = "` (pvck's rule, formats.md 2.5).

    Column by column over the surviving sectors only: first byte a name char, then at the first
    non-name byte the " {\nid = \"" mark must follow. Random data and text die within a few
    columns, so this costs a few small gathers per window.
    """
    n = len(window) // SECTOR
    if n == 0:
        return np.empty(0, dtype=np.int64)
    rows = window[: n * SECTOR].reshape(n, SECTOR)
    alive = np.flatnonzero(np.take(_IS_NAME, rows[:, 0]))
    found: list[np.ndarray] = []
    mark = _HEAD_MARK.tolist()

    def mark_follows(cand: np.ndarray, col: np.ndarray | int) -> np.ndarray:
        for t, ch in enumerate(mark):
            if cand.size == 0:
                break
            keep = rows[cand, col + t] == ch
            cand = cand[keep]
            if not isinstance(col, int):
                col = col[keep]
        return cand

    # The first 24 bytes of each surviving sector as three uint64 words: most names (and all
    # random or text sectors) end there, and a name that ends there is followed by " {".
    # "Is there a { byte" is answered for all rows at once with the has-zero-byte bit trick.
    if alive.size:
        head64 = window[: n * SECTOR].view("<u8").reshape(n, SECTOR // 8)[alive, :_HEAD_COLS // 8]
        x = head64 ^ _BRACES
        z = (x - _ONES) & ~x & _HIGHS
        has = (z[:, 0] | z[:, 1] | z[:, 2]) != 0
        if has.any():
            sub = head64[has].view(np.uint8).reshape(-1, _HEAD_COLS)
            name_len = np.argmax(~_IS_NAME[sub], axis=1)     # first non-name column
            cand = alive[has]
            ok = (name_len >= 1) & (sub[np.arange(len(sub)), np.minimum(name_len + 1,
                                                                        _HEAD_COLS - 1)] == 0x7B)
            found.append(mark_follows(cand[ok], name_len[ok]))
        # names of 24+ characters (XenServer's are 50): every head byte a name char
        second = ((head64[:, 0] >> np.uint64(8)) & np.uint64(0xFF)).astype(np.uint8)
        last = (head64[:, 2] >> np.uint64(56)).astype(np.uint8)
        long_rows = np.flatnonzero(np.take(_IS_NAME, second) & np.take(_IS_NAME, last))
        if long_rows.size:
            heads = head64[long_rows].view(np.uint8).reshape(-1, _HEAD_COLS)
            long_rows = long_rows[_IS_NAME[heads].all(axis=1)]
        alive = alive[long_rows]
    for col in range(_HEAD_COLS, 129):                       # long names, column by column
        if alive.size == 0:
            break
        is_name = _IS_NAME[rows[alive, col]]
        found.append(mark_follows(alive[~is_name], col))
        alive = alive[is_name]
    found = [f for f in found if f.size]
    if not found:
        return np.empty(0, dtype=np.int64)
    return (np.sort(np.concatenate(found)) * SECTOR).astype(np.int64)


def _read_text(data: bytes, offset: int, read: Read) -> tuple[bytes, bool]:
    """Text of a copy up to its NUL (bounded); (text, nul_found)."""
    buf = bytearray(data)
    while True:
        nul = buf.find(b"\0")
        if nul >= 0:
            return bytes(buf[:nul]), True
        if len(buf) >= MAX_METADATA_TEXT:
            return bytes(buf[:MAX_METADATA_TEXT]), False
        more = read(offset + len(buf), TEXT_READ_STEP)
        if not more:
            return bytes(buf), False
        buf += more


def verify_metadata(data: bytes, offset: int, read: Read) -> Verdict | None:
    m = _TEXT_START.match(data)
    if m is None:
        return None
    text, nul = _read_text(data, offset, read)
    vg = m.group(1).decode("ascii")
    details: dict[str, Any] = {"vg": vg, "vg_id": m.group(2).decode("ascii"),
                               "seqno": int(m.group(3)), "text_bytes": len(text) + (1 if nul else 0),
                               "nul_terminated": nul, "crc": None, "crc_ok": None}
    if nul:
        details["crc"] = "%08x" % CRC.lvm_crc(text + bytes(1))
    parsed_ok = False
    try:
        tree = TEXT.parse_config(text.decode("utf-8", errors="strict"))
        body = tree.get(vg) if hasattr(tree, "get") else None
        parsed_ok = isinstance(body, dict) and "seqno" in body
        if parsed_ok:
            lvs = body.get("logical_volumes") or {}
            details["lv_count"] = len(lvs) if isinstance(lvs, dict) else None
        desc = tree.get("description") if hasattr(tree, "get") else None
        if isinstance(desc, str):
            details["description"] = desc[:200]
        ctime = tree.get("creation_time") if hasattr(tree, "get") else None
        if isinstance(ctime, int):
            details["creation_time"] = ctime
    except Exception as exc:  # truncated or overwritten copy: a named, invalid finding
        details["parse_error"] = f"{type(exc).__name__}: {exc}"[:160]
    details["parsed"] = parsed_ok
    return Verdict(parsed_ok and nul, len(text) + (1 if nul else 0), details)


def link_metadata_to_mda(findings: list, read: Read) -> list:
    """Check the CRC of text copies an mda header points at (raw_locn: offset relative to the
    mda, size including the NUL, wrapping to mda+512 past the end; formats.md 2.3-2.4)."""
    by_offset = {f.offset: i for i, f in enumerate(findings) if f.kind == "lvm-metadata"}
    if not by_offset:
        return findings
    out = list(findings)
    for f in findings:
        if f.kind != "lvm-mda-header" or not f.details.get("crc_ok"):
            continue
        mda_size = int(f.details.get("size") or 0)
        for slot, rl in enumerate(f.details.get("raw_locns") or []):
            off, size = int(rl["offset"]), int(rl["size"])
            if not (SECTOR <= off < mda_size) or not (0 < size <= MAX_METADATA_TEXT):
                continue
            i = by_offset.get(f.offset + off)
            if i is None:
                continue
            first = min(size, mda_size - off)
            crc = CRC.lvm_crc(read(f.offset + off, first))
            if first < size:  # wrapped copy: the rest continues at mda + 512
                crc = CRC.lvm_crc(read(f.offset + SECTOR, size - first), crc)
            ok = crc == int(rl["checksum"])
            old = out[i]
            details = dict(old.details, crc_ok=ok, crc=f"{crc:08x}", mda_offset=f.offset,
                           slot="committed" if slot == 0 else "precommitted",
                           wrapped=first < size)
            out[i] = ScanFinding(old.kind, old.offset, size, ok and old.details.get("parsed", False),
                                 details)
    return out


LVM_LABEL = Kind("lvm-label", "LVM2 PV label (LABELONE + pv_header)", verify_lvm_label,
                 magic=SL.LABEL_ID, length=SECTOR)
LVM_MDA_HEADER = Kind("lvm-mda-header", "LVM2 metadata-area header (FMTT_MAGIC)",
                      verify_mda_header, magic=SL.FMTT_MAGIC, magic_offset=4, length=SECTOR)
LVM_METADATA = Kind("lvm-metadata", "LVM2 metadata text copy (`<vg> {` at a sector start)",
                    verify_metadata, prefilter=metadata_prefilter, length=4096)


# =========================================================================================
# MBR and GPT (core.partitions)
# =========================================================================================
MAX_LISTED_PARTITIONS = 16


def verify_mbr(data: bytes, offset: int, read: Read) -> Verdict | None:
    m = parse_mbr_sector(data[:SECTOR])     # core.partitions: 55 AA, not a file system's VBR
    if m is None:
        return None
    if any(p.boot_ind not in (0, 0x80) for p in m.partitions):
        return None   # status bytes other than 0x00/0x80: not a partition table at all
    parts = []
    sane = True
    for i, p in enumerate(m.partitions, start=1):
        if p.sys_ind == SM.TYPE_EMPTY:
            continue
        if p.nr_sects == 0:
            sane = False
        parts.append({"index": i, "type": f"0x{p.sys_ind:02x}", "start_lba": int(p.start_sect),
                      "sectors": int(p.nr_sects), "bootable": p.boot_ind == 0x80,
                      "start": offset + int(p.start_sect) * SECTOR})
    types = {p["type"] for p in parts}
    details = {"disk_signature": f"{m.disk_signature:08x}", "partitions": parts,
               "protective": f"0x{SM.TYPE_GPT_PROTECTIVE:02x}" in types,
               "lvm": f"0x{SM.TYPE_LINUX_LVM:02x}" in types,
               "extended": bool(types & {f"0x{t:02x}" for t in SM.EXTENDED_TYPES})}
    return Verdict(sane and bool(parts), SECTOR, details)


def verify_gpt_header(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SECTOR:
        return None
    # core.partitions parses it, both CRCs included, placing the disk by the header's my_lba
    info = parse_gpt_header(data[:SECTOR], offset, None, read, None)
    if info is None:
        return None
    sector_size, disk_start = info.sector_size, info.disk_start
    h = info.header
    details: dict[str, Any] = {
        "disk_guid": str(SG.guid_from_disk(h.disk_guid)),
        "my_lba": int(h.my_lba), "alternate_lba": int(h.alternative_lba),
        "first_usable_lba": int(h.first_usable_lba), "last_usable_lba": int(h.last_usable_lba),
        "entries_lba": int(h.partition_entry_lba), "entries": int(h.npartition_entries),
        "entry_size": int(h.sizeof_partition_entry), "header_crc_ok": info.header_crc_ok,
        "sector_size": sector_size, "disk_start": disk_start,
        "backup": h.my_lba > h.alternative_lba,
        "entries_crc_ok": info.array_crc_ok if info.array_read else None,
    }
    if info.array_read:
        parts = []
        for i, e in enumerate(info.entries):
            if not any(e.type):
                continue
            if len(parts) < MAX_LISTED_PARTITIONS:
                t = SG.guid_from_disk(e.type)
                parts.append({"index": i + 1, "type": "lvm" if t == SG.LINUX_LVM_GUID else str(t),
                              "first_lba": int(e.lba_start), "last_lba": int(e.lba_end),
                              "start": disk_start + int(e.lba_start) * sector_size,
                              "name": bytes(e.name).decode("utf-16-le", "replace").split("\0")[0]})
        details["partitions"] = parts
    valid = info.header_crc_ok and details["entries_crc_ok"] is True and h.revision >> 16 == 1
    return Verdict(valid, SECTOR, details)


MBR = Kind("mbr", "DOS partition table (55 AA at 510, not a boot sector of a file system)",
           verify_mbr, magic=b"\x55\xaa", magic_offset=510, length=SECTOR)
GPT_HEADER = Kind("gpt-header", "GPT header (EFI PART), primary or backup",
                  verify_gpt_header, magic=SG.GPT_HEADER_SIGNATURE, length=SECTOR)


# =========================================================================================
# XenServer MGT volume (core.xen, the SR metadata parser)
# =========================================================================================

def verify_xen_mgt(data: bytes, offset: int, read: Read) -> Verdict | None:
    if not data.startswith(b"XSSM:"):
        return None
    first = SX.parse_mgt(data[:SECTOR], offset)      # the header sector alone: its length
    if not first.header_ok:
        return None
    length = first.length or 0
    # read what the header says is in use (bounded by the MGT size), parse with core.xen
    n = length if SX.SR_INFO_SIZE_IN_SECTORS * SECTOR <= length <= SX.MGT_BYTES else \
        SX.SR_INFO_SIZE_IN_SECTORS * SECTOR
    mgt = SX.parse_mgt(read(offset, n), offset)
    details = {"sr_uuid": mgt.sr_uuid, "sr_name_label": mgt.sr_name_label,
               "length": mgt.length, "version": list(mgt.version) if mgt.version else None,
               "vdis": len(mgt.vdis), "deleted_vdis": sum(1 for v in mgt.vdis if v.deleted),
               "problems": len(mgt.findings)}
    valid = mgt.header_ok and mgt.sr_uuid is not None and not mgt.findings
    return Verdict(valid, n, details)


XEN_MGT = Kind("xen-mgt", "XenServer SR metadata volume (MGT) header (XSSM:)",
               verify_xen_mgt, magic=b"XSSM:", length=SECTOR)


# The structure kinds in the order the scan lists them, and the cross-checks run after the pass.
STRUCTURE_KINDS: tuple[Kind, ...] = (VHD_FOOTER, VHD_HEADER, VHD_BATMAP, LVM_LABEL, LVM_MDA_HEADER,
                                     LVM_METADATA, MBR, GPT_HEADER, XEN_MGT)
POST_SCAN_HOOKS = (link_metadata_to_mda,)
