"""The structure kinds of the signature scan: partition tables, LVM, VHD, XenServer MGT.

Each kind's `verify` parses the candidate with the construct structures declared once by their
owners (core.structs.mbr / gpt / lvm / vhd, the LVM CRC core.lvm.crc, the metadata text parser
core.lvm.textformat, the MGT parser core.xen) and says whether checksums and sanity rules hold;
`details` carry the fields that identify the structure (VHD unique id, creator, disk type and
size; VG name and seqno; PV uuid; GPT disk guid ...).

A group whose owner module does not exist yet is not registered (its name is listed in
`MISSING_MODULES`); nothing is re-declared here.

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

import importlib
import re
import uuid
from typing import Any, Callable

import numpy as np

from core.kinds import Kind, Verdict, register

Read = Callable[[int, int], bytes]
SECTOR = 512
MISSING_MODULES: list[str] = []


def _optional(name: str):
    """Import an owner's module; None (and noted) while it is not written yet."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            MISSING_MODULES.append(name)
            return None
        raise


def _hex_uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(raw)))


def _ascii(raw: bytes) -> str:
    return bytes(raw).rstrip(b"\0 ").decode("ascii", errors="replace")


# =========================================================================================
# VHD (core.structs.vhd, engineer "vhd")
# =========================================================================================
SV = _optional("core.structs.vhd")

MAX_BATMAP_SECTORS = 1 << 16     # 2 TiB of 2 MiB blocks needs 256; generous bound


def _footer_fields(f, raw: bytes) -> tuple[bool, dict[str, Any]]:
    ok = SV.footer_checksum(raw) == f.checksum
    if not ok and raw[SV.FOOTER_HIDDEN_OFFSET]:
        # early blktap set `hidden` without updating the checksum (formats.md 4.1)
        patched = bytearray(raw[:SV.FOOTER_SIZE])
        patched[SV.FOOTER_HIDDEN_OFFSET] = 0
        ok = SV.footer_checksum(bytes(patched)) == f.checksum
    ver = f.crtr_ver
    details = {
        "unique_id": _hex_uuid(f.uuid),
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
    f = SV.parse_footer(data)
    ok, details = _footer_fields(f, data)
    # the copy at offset 0 of a dynamic VHD is followed by its dynamic header
    details["header_follows"] = read(offset + SECTOR, 8) == SV.DD_COOKIE
    valid = (ok and f.ff_version == SV.HD_FF_VERSION and f.type in (2, 3, 4)
             and (f.type == 2 or f.data_offset != SV.FIXED_DATA_OFFSET))
    return Verdict(valid, SV.FOOTER_SIZE, details)


def verify_vhd_header(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SV.HEADER_SIZE or data[:8] != SV.DD_COOKIE:
        return None
    h = SV.parse_header(data)
    ok = SV.header_checksum(data) == h.checksum
    bs = int(h.block_size)
    parent = bytes(h.prt_uuid)
    details: dict[str, Any] = {
        "table_offset": int(h.table_offset),
        "max_table_entries": int(h.max_bat_size),
        "block_size": bs,
        "parent_unique_id": _hex_uuid(parent) if any(parent) else None,
        "parent_name": SV.decode_utf16be_name(bytes(h.prt_name)) or None,
        "checksum_ok": ok,
    }
    # the footer copy that precedes a dynamic header names the VHD
    if offset >= SECTOR:
        before = read(offset - SECTOR, SECTOR)
        if before[:8] == SV.HD_COOKIE:
            f = SV.parse_footer(before)
            details["unique_id"] = _hex_uuid(f.uuid)
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
    sane = (ver in (0x00010001, SV.BATMAP_VERSION_1_2) and 0 < bsize <= MAX_BATMAP_SECTORS
            and SECTOR <= boff and boff - SECTOR <= offset)
    if sane:
        # the map follows its header; the VHD starts batmap_offset - 512 before the header
        vhd_start = offset + SECTOR - boff
        details["vhd_start"] = vhd_start
        foot = read(vhd_start, SECTOR)
        head = read(vhd_start + SECTOR, SV.HEADER_SIZE)
        if foot[:8] == SV.HD_COOKIE and head[:8] == SV.DD_COOKIE:
            f, h = SV.parse_footer(foot), SV.parse_header(head)
            details["unique_id"] = _hex_uuid(f.uuid)
            n = SV.batmap_checksum_length(int(f.curr_size), int(h.block_size) or 1)
            if 0 < n <= bsize * SECTOR:
                m = read(offset + SECTOR, n)
                details["checksum_ok"] = SV.batmap_checksum(
                    m, signed=ver == 0x00010001) == b.checksum
    valid = sane and details["checksum_ok"] is not False
    return Verdict(valid, SV.BATMAP_HEADER_SIZE, details)


if SV is not None:
    register(Kind("vhd-footer", "VHD footer (conectix): primary at the end or copy at offset 0",
                  verify_vhd_footer, magic=SV.HD_COOKIE, length=SV.FOOTER_SIZE))
    register(Kind("vhd-header", "VHD dynamic-disk header (cxsparse)",
                  verify_vhd_header, magic=SV.DD_COOKIE, length=SV.HEADER_SIZE))
    register(Kind("vhd-batmap", "blktap batmap header (tdbatmap)",
                  verify_vhd_batmap, magic=SV.BATMAP_COOKIE, length=SV.BATMAP_HEADER_SIZE))


# =========================================================================================
# LVM (core.structs.lvm, core.lvm.crc, core.lvm.textformat; engineer "lvm")
# =========================================================================================
SL = _optional("core.structs.lvm")
CRC = _optional("core.lvm.crc")
TEXT = _optional("core.lvm.textformat")

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


def _pv_uuid(raw: bytes) -> str:
    """32 chars as lvm prints them, 6-4-4-4-4-4-6 (lib/id/id.c)."""
    s = bytes(raw).decode("ascii", errors="replace")
    if len(s) != 32:
        return s
    parts, pos = [], 0
    for n in (6, 4, 4, 4, 4, 4, 6):
        parts.append(s[pos:pos + n])
        pos += n
    return "-".join(parts)


def verify_lvm_label(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SECTOR or data[:8] != SL.LABEL_ID:
        return None
    lh = SL.label_header.parse(data)
    if lh.type != SL.LVM2_LABEL:
        return None
    crc_ok = CRC.lvm_crc(data[20:SECTOR]) == lh.crc_xl
    sector = int(lh.sector_xl)
    details: dict[str, Any] = {"sector": sector, "crc_ok": crc_ok,
                               "pv_start": offset - sector * SECTOR}
    valid = crc_ok and sector < SL.LABEL_SCAN_SECTORS and offset >= sector * SECTOR
    if 32 <= lh.offset_xl <= SECTOR - 40:
        try:
            pvh = SL.pv_header.parse(data[lh.offset_xl:SECTOR])
        except Exception:
            valid = False
        else:
            details["pv_uuid"] = _pv_uuid(pvh.pv_uuid)
            details["device_size"] = int(pvh.device_size_xl)
            das = [(int(d.offset), int(d.size)) for d in pvh.data_areas[:-1]]
            mdas = [(int(m.offset), int(m.size)) for m in pvh.metadata_areas[:-1]]
            details["pe_start"] = das[0][0] if das else None
            details["data_areas"] = [list(x) for x in das]
            details["metadata_areas"] = [list(x) for x in mdas]
    else:
        valid = False
    return Verdict(valid, SECTOR, details)


def verify_mda_header(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SECTOR or data[4:20] != SL.FMTT_MAGIC:
        return None
    crc_ok = CRC.lvm_crc(data[4:SECTOR]) == int.from_bytes(data[0:4], "little")
    try:
        m = SL.mda_header.parse(data[:SECTOR])
        locns = [{"offset": int(r.offset), "size": int(r.size), "checksum": int(r.checksum),
                  "flags": int(r.flags)} for r in m.raw_locns[:-1]]
        start, size, version = int(m.start), int(m.size), int(m.version)
    except Exception:  # raw_locn list without terminator inside the sector
        start = int.from_bytes(data[24:32], "little")
        size = int.from_bytes(data[32:40], "little")
        version = int.from_bytes(data[20:24], "little")
        locns = None
    details = {"crc_ok": crc_ok, "version": version, "start": start, "size": size,
               "pv_start": offset - start if start <= offset else None, "raw_locns": locns}
    valid = (crc_ok and version == SL.FMTT_VERSION and locns is not None and start <= offset
             and size > SECTOR)
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
    from core.scan import ScanFinding  # local: core.scan imports this module's registry

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


if SL is not None and CRC is not None:
    register(Kind("lvm-label", "LVM2 PV label (LABELONE + pv_header)", verify_lvm_label,
                  magic=SL.LABEL_ID, length=SECTOR))
    register(Kind("lvm-mda-header", "LVM2 metadata-area header (FMTT_MAGIC)", verify_mda_header,
                  magic=SL.FMTT_MAGIC, magic_offset=4, length=SECTOR))
if CRC is not None and TEXT is not None:
    register(Kind("lvm-metadata", "LVM2 metadata text copy (`<vg> {` at a sector start)",
                  verify_metadata, prefilter=metadata_prefilter, length=4096))
    from core.scan import post_scan_hook  # noqa: E402  (after the registry entries)

    post_scan_hook(link_metadata_to_mda)


# =========================================================================================
# MBR and GPT (core.structs.mbr / gpt, engineer "lvm")
# =========================================================================================
SM = _optional("core.structs.mbr")
SG = _optional("core.structs.gpt")

MAX_GPT_ARRAY_BYTES = 1 << 20    # 128 x 128 B = 16 KiB normally
MAX_LISTED_PARTITIONS = 16


def verify_mbr(data: bytes, offset: int, read: Read) -> Verdict | None:
    if len(data) < SECTOR or data[510:512] != b"\x55\xaa":
        return None
    if any(marker in data[3:11] for marker in SM.VBR_MARKERS):
        return None   # a file system's boot sector (VBR), not a partition table
    m = SM.mbr.parse(data[:SECTOR])
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
    if len(data) < SECTOR or data[:8] != SG.GPT_HEADER_SIGNATURE:
        return None
    h = SG.gpt_header.parse(data)
    hsize = int(h.size)
    crc_ok = False
    if SG.GPT_HEADER_MINSIZE <= hsize <= SECTOR:
        raw = bytearray(data[:hsize])
        raw[16:20] = b"\0\0\0\0"
        crc_ok = SG.gpt_crc32(bytes(raw)) == h.crc32
    # the sector size is the one that puts this header at its own my_lba
    sector_size = next((ss for ss in (512, 4096) if h.my_lba * ss == offset), None)
    if sector_size is None:
        sector_size = 4096 if offset % 4096 == 0 and h.my_lba and offset // h.my_lba == 4096 else 512
    disk_start = offset - int(h.my_lba) * sector_size
    details: dict[str, Any] = {
        "disk_guid": str(SG.guid_from_disk(h.disk_guid)),
        "my_lba": int(h.my_lba), "alternate_lba": int(h.alternative_lba),
        "first_usable_lba": int(h.first_usable_lba), "last_usable_lba": int(h.last_usable_lba),
        "entries_lba": int(h.partition_entry_lba), "entries": int(h.npartition_entries),
        "entry_size": int(h.sizeof_partition_entry), "header_crc_ok": crc_ok,
        "sector_size": sector_size, "disk_start": disk_start,
        "backup": h.my_lba > h.alternative_lba, "entries_crc_ok": None,
    }
    n, esize = int(h.npartition_entries), int(h.sizeof_partition_entry)
    if 128 <= esize <= 4096 and 0 < n * esize <= MAX_GPT_ARRAY_BYTES and disk_start >= 0:
        arr = read(disk_start + int(h.partition_entry_lba) * sector_size, n * esize)
        if len(arr) == n * esize:
            details["entries_crc_ok"] = SG.gpt_crc32(arr) == h.partition_entry_array_crc32
            parts = []
            for i in range(n):
                e = SG.gpt_entry.parse(arr[i * esize:i * esize + 128])
                if not any(e.type):
                    continue
                if len(parts) < MAX_LISTED_PARTITIONS:
                    t = SG.guid_from_disk(e.type)
                    parts.append({"index": i + 1, "type": "lvm" if t == SG.LINUX_LVM_GUID else str(t),
                                  "first_lba": int(e.lba_start), "last_lba": int(e.lba_end),
                                  "start": disk_start + int(e.lba_start) * sector_size,
                                  "name": bytes(e.name).decode("utf-16-le", "replace").split("\0")[0]})
            details["partitions"] = parts
    valid = crc_ok and details["entries_crc_ok"] is True and h.revision >> 16 == 1
    return Verdict(valid, SECTOR, details)


if SM is not None:
    register(Kind("mbr", "DOS partition table (55 AA at 510, not a boot sector of a file system)",
                  verify_mbr, magic=b"\x55\xaa", magic_offset=510, length=SECTOR))
if SG is not None:
    register(Kind("gpt-header", "GPT header (EFI PART), primary or backup",
                  verify_gpt_header, magic=SG.GPT_HEADER_SIGNATURE, length=SECTOR))


# =========================================================================================
# XenServer MGT volume (core.xen, the SR metadata parser)
# =========================================================================================
SX = _optional("core.xen")

MAX_MGT_READ = 4 << 20           # the MGT LV is 4 MiB (sm drivers/LVHDSR.py)


def verify_xen_mgt(data: bytes, offset: int, read: Read) -> Verdict | None:
    if not data.startswith(b"XSSM:"):
        return None
    first = SX.parse_mgt(data[:SECTOR], offset)      # the header sector alone: its length
    if not first.header_ok:
        return None
    length = first.length or 0
    # read what the header says is in use (bounded by the MGT size), parse with core.xen
    n = length if SX.SR_INFO_SIZE_IN_SECTORS * SECTOR <= length <= MAX_MGT_READ else \
        SX.SR_INFO_SIZE_IN_SECTORS * SECTOR
    mgt = SX.parse_mgt(read(offset, n), offset)
    details = {"sr_uuid": mgt.sr_uuid, "sr_name_label": mgt.sr_name_label,
               "length": mgt.length, "version": list(mgt.version) if mgt.version else None,
               "vdis": len(mgt.vdis), "deleted_vdis": sum(1 for v in mgt.vdis if v.deleted),
               "problems": len(mgt.findings)}
    valid = mgt.header_ok and mgt.sr_uuid is not None and not mgt.findings
    return Verdict(valid, n, details)


if SX is not None:
    register(Kind("xen-mgt", "XenServer SR metadata volume (MGT) header (XSSM:)",
                  verify_xen_mgt, magic=b"XSSM:", length=SECTOR))
