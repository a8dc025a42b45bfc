"""Partition tables: MBR (with the EBR chain) and GPT (both headers, CRCs checked), 512- and
4096-byte sectors (formats.md 1).

`read_partition_table(ev)` returns what the table says plus findings about its damage; it never
raises on garbage.  PVs found by label scanning where no table names them are added by
`core.lvm.analyse` as `found-by-scan` partitions (`Partition.scheme`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from construct import ConstructError

from core.findings import Finding
from core.spaces import ByteSpace
from core.structs import gpt as G
from core.structs import mbr as M

MAX_LOGICAL = 128            # EBR chain bound (a real chain has a few; loops are common garbage)
MAX_GPT_ARRAY = 1 << 20      # bytes of GPT entry array we accept (128 x 128 = 16 KiB normally)


@dataclass
class Partition:
    """One partition.  offset/bytes in bytes; type 'lvm' for Linux LVM, else the raw type
    ('0x83' for MBR, the type GUID for GPT)."""

    index: int
    scheme: str                 # 'gpt' | 'mbr' | 'found-by-scan'
    offset: int
    bytes: int
    type: str
    name: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.offset + self.bytes

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "scheme": self.scheme, "offset": self.offset,
                "bytes": self.bytes, "type": self.type}


@dataclass
class PartitionTable:
    scheme: str | None                      # 'gpt', 'mbr' or None (no table)
    partitions: list[Partition] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    sector_size: int = 512
    details: dict[str, Any] = field(default_factory=dict)


def _is_vbr(sector: bytes) -> bool:
    """A 55AA sector that is a file system boot sector (dissect mbr.py's rule)."""
    oem = sector[3:11]
    return any(marker in oem for marker in M.VBR_MARKERS)


def parse_mbr_sector(sector: bytes):
    """The parsed MBR or None (no 55AA, short, or a VBR)."""
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa" or _is_vbr(sector):
        return None
    try:
        return M.mbr.parse(sector[:512])
    except ConstructError:
        return None


def _mbr_partitions(ev: ByteSpace, mbr, findings: list[Finding]) -> list[Partition]:
    parts: list[Partition] = []
    size = ev.size
    extended_base = None
    for i, entry in enumerate(mbr.partitions, 1):
        if entry.sys_ind == M.TYPE_EMPTY or entry.nr_sects == 0:
            continue
        off, length = entry.start_sect * 512, entry.nr_sects * 512
        if entry.sys_ind in M.EXTENDED_TYPES:
            if extended_base is None:
                extended_base = entry.start_sect
            continue
        ptype = "lvm" if entry.sys_ind == M.TYPE_LINUX_LVM else f"0x{entry.sys_ind:02x}"
        parts.append(Partition(i, "mbr", off, length, ptype,
                               details={"active": entry.boot_ind == 0x80}))
    if extended_base is not None:
        parts += _ebr_chain(ev, extended_base, findings)
    for p in parts:
        if p.end > size:
            findings.append(Finding("partition-beyond-end", p.offset, "warning",
                                    f"partition {p.index} ends at {p.end}, beyond the image end "
                                    f"{size}", {"index": p.index}))
    return parts


def _ebr_chain(ev: ByteSpace, extended_base: int, findings: list[Finding]) -> list[Partition]:
    """Logical partitions: EBR data entries are relative to their EBR, the next-EBR entry to
    the first extended partition (dissect mbr.py)."""
    parts: list[Partition] = []
    seen: set[int] = set()
    ebr_lba = extended_base
    index = 5
    while len(parts) < MAX_LOGICAL:
        if ebr_lba in seen or ebr_lba * 512 >= ev.size:
            if ebr_lba in seen:
                findings.append(Finding("mbr-ebr-loop", ebr_lba * 512, "warning",
                                        f"EBR chain loops back to sector {ebr_lba}"))
            break
        seen.add(ebr_lba)
        sector = ev.read(ebr_lba * 512, 512)
        if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
            findings.append(Finding("mbr-ebr-missing", ebr_lba * 512, "warning",
                                    f"no EBR signature at sector {ebr_lba}"))
            break
        ebr = M.mbr.parse(sector)
        data, nxt = ebr.partitions[0], ebr.partitions[1]
        if data.sys_ind != M.TYPE_EMPTY and data.nr_sects:
            ptype = "lvm" if data.sys_ind == M.TYPE_LINUX_LVM else f"0x{data.sys_ind:02x}"
            parts.append(Partition(index, "mbr", (ebr_lba + data.start_sect) * 512,
                                   data.nr_sects * 512, ptype, details={"ebr": ebr_lba * 512}))
            index += 1
        if nxt.sys_ind not in M.EXTENDED_TYPES:
            break
        ebr_lba = extended_base + nxt.start_sect
    return parts


@dataclass
class GptHeaderInfo:
    offset: int
    header: Any
    header_crc_ok: bool
    array_crc_ok: bool
    entries: list[Any]
    array_read: bool = False     # the entry array was of a sane size and read whole
    sector_size: int = 512
    disk_start: int = 0          # absolute offset of the disk's LBA 0


def gpt_sector_size(my_lba: int, offset: int) -> int:
    """The sector size (512 or 4096) that puts a GPT header found at `offset` of a disk at its
    own `my_lba`; 512 when neither does."""
    sector_size = next((ss for ss in (512, 4096) if my_lba * ss == offset), None)
    if sector_size is None:
        sector_size = 4096 if offset % 4096 == 0 and my_lba and offset // my_lba == 4096 else 512
    return sector_size


def parse_gpt_header(raw: bytes, offset: int, sector_size: int | None,
                     read: Callable[[int, int], bytes], disk_start: int | None = 0,
                     disk_size: int | None = None) -> GptHeaderInfo | None:
    """The GPT header in `raw` (its sector, read at absolute `offset`; None without the
    signature), its CRC checked over `size` bytes with the CRC field zeroed, and its entry array
    read through `read(offset, n)` at `disk_start + partition_entry_lba * sector_size` and
    CRC-checked (UEFI spec 5.3.2). A header found loose (the scan) gives `sector_size=None` and
    `disk_start=None`: the sector size is the one that puts it at its own my_lba and the disk
    starts my_lba sectors before it. The one GPT header parser: the partition table reader and
    the scan's gpt-header kind both use it."""
    if len(raw) < G.GPT_HEADER_MINSIZE or raw[:8] != G.GPT_HEADER_SIGNATURE:
        return None
    hdr = G.gpt_header.parse(raw)
    if sector_size is None:
        sector_size = gpt_sector_size(int(hdr.my_lba), offset)
    if disk_start is None:
        disk_start = offset - int(hdr.my_lba) * sector_size
    hsize = hdr.size
    header_crc_ok = False
    if G.GPT_HEADER_MINSIZE <= hsize <= min(len(raw), sector_size):
        check = bytearray(raw[:hsize])
        check[16:20] = b"\0\0\0\0"
        header_crc_ok = G.gpt_crc32(bytes(check)) == hdr.crc32
    esize, count = hdr.sizeof_partition_entry, hdr.npartition_entries
    entries: list[Any] = []
    array_crc_ok = array_read = False
    if esize >= G.GPT_ENTRY_SIZE and esize % 8 == 0 and 0 < count and esize * count <= MAX_GPT_ARRAY:
        at = disk_start + hdr.partition_entry_lba * sector_size
        array = read(at, esize * count) \
            if at >= 0 and (disk_size is None or at < disk_size) else b""
        if len(array) == esize * count:
            array_read = True
            array_crc_ok = G.gpt_crc32(array) == hdr.partition_entry_array_crc32
            for i in range(count):
                entries.append(G.gpt_entry.parse(array[i * esize: i * esize + G.GPT_ENTRY_SIZE]))
    return GptHeaderInfo(offset, hdr, header_crc_ok, array_crc_ok, entries, array_read,
                         sector_size, disk_start)


def _read_gpt_header(ev: ByteSpace, lba: int, sector_size: int) -> GptHeaderInfo | None:
    off = lba * sector_size
    return parse_gpt_header(ev.read(off, sector_size), off, sector_size, ev.read,
                            disk_size=ev.size)


def _gpt_partitions(info: GptHeaderInfo, sector_size: int) -> list[Partition]:
    parts = []
    for i, e in enumerate(info.entries, 1):
        if e.type == bytes(16):
            continue
        type_guid = G.guid_from_disk(e.type)
        ptype = "lvm" if type_guid == G.LINUX_LVM_GUID else str(type_guid)
        first, last = e.lba_start, e.lba_end
        if last < first:
            continue
        name = e.name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(Partition(i, "gpt", first * sector_size, (last - first + 1) * sector_size,
                               ptype, name, {"guid": str(G.guid_from_disk(e.partition_guid)),
                                             "type_guid": str(type_guid)}))
    return parts


def read_gpt(ev: ByteSpace, findings: list[Finding]) -> PartitionTable | None:
    """The GPT, from the primary header if intact, else from the backup at the last LBA."""
    for sector_size in (512, 4096):
        primary = _read_gpt_header(ev, 1, sector_size)
        last_lba = ev.size // sector_size - 1
        backup = None
        if primary is None or not (primary.header_crc_ok and primary.array_crc_ok):
            alt = primary.header.alternative_lba if primary is not None else last_lba
            for lba in dict.fromkeys((alt, last_lba)):
                if 1 < lba <= last_lba:
                    backup = _read_gpt_header(ev, lba, sector_size)
                    if backup is not None:
                        break
        if primary is None and backup is None:
            continue
        details: dict[str, Any] = {"sector_size": sector_size}
        if primary is not None:
            details.update(primary_header_crc_ok=primary.header_crc_ok,
                           primary_array_crc_ok=primary.array_crc_ok)
            if not primary.header_crc_ok:
                findings.append(Finding("gpt-header-crc", primary.offset, "warning",
                                        f"primary GPT header at {primary.offset}: CRC mismatch"))
            if not primary.array_crc_ok:
                findings.append(Finding("gpt-array-crc", primary.offset, "warning",
                                        f"primary GPT entry array: CRC mismatch"))
        if backup is not None:
            details.update(backup_offset=backup.offset, backup_header_crc_ok=backup.header_crc_ok,
                           backup_array_crc_ok=backup.array_crc_ok)
        use = primary
        if primary is None or not (primary.header_crc_ok and primary.array_crc_ok):
            if backup is not None and backup.header_crc_ok and backup.array_crc_ok:
                use = backup
                findings.append(Finding("gpt-backup-used", backup.offset, "warning",
                                        f"primary GPT damaged or missing; using the backup header "
                                        f"at {backup.offset}"))
            elif primary is None:
                use = backup
        assert use is not None
        details["used"] = "primary" if use is primary else "backup"
        return PartitionTable("gpt", _gpt_partitions(use, sector_size), findings, sector_size,
                              details)
    return None


def read_partition_table(ev: ByteSpace) -> PartitionTable:
    """MBR or GPT partitions of `ev` (an empty table when there is none)."""
    findings: list[Finding] = []
    sector0 = ev.read(0, 512)
    mbr = parse_mbr_sector(sector0)
    protective = mbr is not None and any(p.sys_ind == M.TYPE_GPT_PROTECTIVE for p in mbr.partitions)
    if mbr is None and len(sector0) == 512 and sector0[510:512] == b"\x55\xaa" and _is_vbr(sector0):
        findings.append(Finding("vbr-not-mbr", 0, "info",
                                "sector 0 is a file-system boot sector, not a partition table"))
    gpt = read_gpt(ev, findings) if (protective or mbr is None) else None
    if gpt is not None:
        if mbr is None:
            findings.append(Finding("gpt-no-protective-mbr", 0, "info",
                                    "GPT found without a protective MBR"))
        return gpt
    if protective:
        findings.append(Finding("gpt-missing", 512, "warning",
                                "protective MBR but no readable GPT header"))
        return PartitionTable(None, [], findings)
    if mbr is not None:
        parts = _mbr_partitions(ev, mbr, findings)
        if parts:
            return PartitionTable("mbr", parts, findings, 512,
                                  {"disk_signature": mbr.disk_signature})
    return PartitionTable(None, [], findings)
