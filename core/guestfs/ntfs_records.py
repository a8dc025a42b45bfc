"""NTFS records parsed from bytes (core.guestfs.ntfs reads the volume through them): the
update sequence fixup of MFT records and INDX blocks, runlists (mapping pairs), the attributes
of an MFT record, $FILE_NAME values and the entries of an index node. Each takes bytes and gives
None or fewer items on garbage, never an exception.

Rules from ntfs-3g (libntfs-3g mst.c ntfs_mst_post_read_fixup; runlist.c
ntfs_mapping_pairs_decompress; attrib.c and index.c for the attribute and index entry walks).
"""

from __future__ import annotations

import bisect
import struct as pystruct
from dataclasses import dataclass, field

from core.structs import ntfs as N
from core.structs.layout import offsets

MAX_RUNS = 1 << 16              # runs decoded from one mapping pairs array
MAX_ATTRS = 256                 # attributes looked at in one record

_REC = offsets(N.MFT_RECORD)
_NR = offsets(N.ATTR_RECORD_NON_RESIDENT)
_RES = offsets(N.ATTR_RECORD_RESIDENT)
_FN = offsets(N.FILE_NAME_ATTR)
_IE = offsets(N.INDEX_ENTRY)
_IH = offsets(N.INDEX_HEADER)


def _u16(b: bytes, o: int) -> int:
    return b[o] | (b[o + 1] << 8)


def _u32(b: bytes, o: int) -> int:
    return pystruct.unpack_from("<I", b, o)[0]


def _u64(b: bytes, o: int) -> int:
    return pystruct.unpack_from("<Q", b, o)[0]


def fixup(buf: bytes, size: int, magic: bytes) -> bytes | None:
    """A multi-sector record (FILE, INDX) with its update sequence array applied, or None when
    the magic is wrong or a stride's last two bytes do not carry the sequence number (a torn
    or foreign record): ntfs_mst_post_read_fixup."""
    if len(buf) < size or buf[:4] != magic or size % N.NTFS_BLOCK_SIZE:
        return None
    usa_ofs, usa_count = _u16(buf, 4), _u16(buf, 6)
    strides = size // N.NTFS_BLOCK_SIZE
    if usa_count != strides + 1 or usa_ofs & 1 or usa_ofs + 2 * usa_count > size or usa_ofs < 8:
        return None
    out = bytearray(buf[:size])
    usn = out[usa_ofs:usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * N.NTFS_BLOCK_SIZE
        if out[end - 2:end] != usn:
            return None
        out[end - 2:end] = out[usa_ofs + 2 * i:usa_ofs + 2 * i + 2]
    return bytes(out)


def decode_runs(buf: bytes, pos: int, end: int, vcn: int = 0) -> list[tuple[int, int | None, int]]:
    """Mapping pairs -> [(vcn, lcn or None for sparse, length)] (ntfs_mapping_pairs_decompress);
    stops at the terminator, the end of the attribute, or anything impossible."""
    runs: list[tuple[int, int | None, int]] = []
    lcn = 0
    end = min(end, len(buf))
    while pos < end and buf[pos] and len(runs) < MAX_RUNS:
        hdr = buf[pos]
        nlen, noff = hdr & 0xF, hdr >> 4
        if nlen == 0 or nlen > 8 or noff > 8 or pos + 1 + nlen + noff > end:
            break
        length = int.from_bytes(buf[pos + 1:pos + 1 + nlen], "little", signed=True)
        if length <= 0:
            break
        if noff:
            lcn += int.from_bytes(buf[pos + 1 + nlen:pos + 1 + nlen + noff], "little",
                                  signed=True)
            if lcn < 0:
                break
            runs.append((vcn, lcn, length))
        else:
            runs.append((vcn, None, length))
        vcn += length
        pos += 1 + nlen + noff
    return runs


@dataclass
class Attr:
    type: int
    name: str
    resident: bool
    value: bytes = b""                                  # resident value
    runs: list = field(default_factory=list)            # non-resident runlist
    data_size: int = 0
    initialized_size: int = 0
    lowest_vcn: int = 0


def attributes(rec: bytes) -> list[Attr]:
    """The attributes of a fixed-up MFT record (bounded; stops at anything malformed)."""
    out: list[Attr] = []
    pos = _u16(rec, _REC["attrs_offset"])
    used = min(_u32(rec, _REC["bytes_in_use"]), len(rec))
    while pos + N.ATTR_HEADER_SIZE <= used and len(out) < MAX_ATTRS:
        atype, alen = _u32(rec, pos), _u32(rec, pos + 4)
        if atype == N.AT_END or alen < N.ATTR_HEADER_SIZE or alen % 8 or pos + alen > used:
            break
        nonres, nlen, noff = rec[pos + 8], rec[pos + 9], _u16(rec, pos + 10)
        name = rec[pos + noff:pos + noff + 2 * nlen].decode("utf-16-le", "replace") if nlen \
            else ""
        if not nonres:
            voff = _u16(rec, pos + N.ATTR_HEADER_SIZE + _RES["value_offset"])
            vlen = _u32(rec, pos + N.ATTR_HEADER_SIZE + _RES["value_length"])
            if voff + vlen <= alen:
                out.append(Attr(atype, name, True, rec[pos + voff:pos + voff + vlen]))
        elif alen >= 0x40:
            h = pos + N.ATTR_HEADER_SIZE
            low = pystruct.unpack_from("<q", rec, h + _NR["lowest_vcn"])[0]
            mp = _u16(rec, h + _NR["mapping_pairs_offset"])
            if 0 <= low and mp < alen:
                out.append(Attr(atype, name, False,
                                runs=decode_runs(rec, pos + mp, pos + alen, low),
                                data_size=pystruct.unpack_from("<q", rec, h + _NR["data_size"])[0],
                                initialized_size=pystruct.unpack_from(
                                    "<q", rec, h + _NR["initialized_size"])[0],
                                lowest_vcn=low))
        pos += alen
    return out


def _find(attrs: list[Attr], atype: int, name: str = "") -> Attr | None:
    for a in attrs:
        if a.type == atype and a.name == name and (a.resident or a.lowest_vcn == 0):
            return a
    return None


@dataclass(frozen=True)
class FileName:
    """What identifies a name of a file: parent reference (with sequence), name, creation."""
    parent: int
    name: str
    created: int


def file_name(value: bytes) -> FileName | None:
    if len(value) < N.FILE_NAME_HEADER_SIZE:
        return None
    n = value[_FN["file_name_length"]]
    raw = value[N.FILE_NAME_HEADER_SIZE:N.FILE_NAME_HEADER_SIZE + 2 * n]
    if len(raw) < 2 * n:
        return None
    return FileName(_u64(value, _FN["parent_directory"]), raw.decode("utf-16-le", "replace"),
                    pystruct.unpack_from("<q", value, _FN["creation_time"])[0])


def index_entries(buf: bytes, header: int) -> list[tuple[int, FileName]] | None:
    """(MFT reference, FileName) of the file name entries of the INDEX_HEADER at `header`;
    None when the header or an entry is malformed."""
    if header + 16 > len(buf):
        return None
    start = header + _u32(buf, header + _IH["entries_offset"])
    end = min(len(buf), header + _u32(buf, header + _IH["index_length"]))
    out = []
    pos = start
    while pos + N.INDEX_ENTRY_HEADER_SIZE <= end and len(out) < 4096:
        ref, length = _u64(buf, pos), _u16(buf, pos + _IE["length"])
        klen, flags = _u16(buf, pos + _IE["key_length"]), _u16(buf, pos + _IE["ie_flags"])
        if length < N.INDEX_ENTRY_HEADER_SIZE or length % 8 or pos + length > end:
            return None
        if flags & N.INDEX_ENTRY_END:
            return out
        fn = file_name(buf[pos + N.INDEX_ENTRY_HEADER_SIZE:pos + N.INDEX_ENTRY_HEADER_SIZE +
                           klen])
        if fn is None:
            return None
        out.append((ref, fn))
        pos += length
    return None


class _Runs:
    """A runlist with lookups: vcn -> lcn."""

    def __init__(self, runs: list[tuple[int, int | None, int]]) -> None:
        self.runs = runs
        self.starts = [r[0] for r in runs]

    def pieces(self, off: int, length: int, cs: int):
        """(disk offset or None, length) pieces of bytes [off, off+length) of the attribute."""
        while length > 0:
            vcn = off // cs
            i = bisect.bisect_right(self.starts, vcn) - 1
            if i < 0 or vcn >= self.runs[i][0] + self.runs[i][2]:
                yield None, length
                return
            v0, lcn, n = self.runs[i]
            take = min(length, (v0 + n) * cs - off)
            yield (None if lcn is None else (lcn + vcn - v0) * cs + off % cs), take
            off += take
            length -= take
