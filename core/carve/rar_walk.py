"""Walking one RAR archive's headers (core.carve.rar carves with it): RAR 1.5-4.x and RAR 5.

From the signature at `offset`, the block headers are walked with their CRCs checked (RAR 4:
16-bit header CRC over the part rarfile says it covers; RAR 5: CRC-32 of the whole header) up
to the end-of-archive block. Every size read from disk is checked against what remains of the
space before it moves the walk, each step moves forward by at least 7 bytes and the number of
blocks is capped (MAX_BLOCKS), so a fuzzed archive cannot hang the walk. The result is a
`RarArchive` listing its `RarFileEntry`s; a damaged archive keeps everything before its first
bad header and names that header.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from construct import ConstructError

from core.structs.rar import (
    RAR3_FILE_HEADER_SIZE, RAR5_BLOCK_ENCRYPTION, RAR5_BLOCK_ENDARC, RAR5_BLOCK_FILE,
    RAR5_BLOCK_FLAG_SPLIT_AFTER, RAR5_BLOCK_FLAG_SPLIT_BEFORE, RAR5_BLOCK_MAIN, RAR5_BLOCK_SERVICE,
    RAR5_COMPR_SOLID, RAR5_ENDARC_FLAG_NEXT_VOL, RAR5_FILE_FLAG_ISDIR, RAR5_ID,
    RAR5_MAIN_FLAG_HAS_VOLNR, RAR5_MAIN_FLAG_ISVOL, RAR5_MAIN_FLAG_SOLID, RAR5_MAX_HEADER,
    RAR5_XFILE_ENCRYPTION, RAR5_XFILE_HASH, RAR5_XFILE_REDIR, RAR5_XFILE_VERSION,
    RAR5_XHASH_BLAKE2SP, RAR_BLOCK_ENDARC, RAR_BLOCK_FILE, RAR_BLOCK_MAIN, RAR_BLOCK_OLD_AUTH,
    RAR_BLOCK_OLD_EXTRA, RAR_BLOCK_OLD_SUB, RAR_BLOCK_SUB, RAR_ENDARC_NEXT_VOLUME,
    RAR_FILE_DIRECTORY, RAR_FILE_EXTTIME, RAR_FILE_LARGE, RAR_FILE_PASSWORD, RAR_FILE_SALT,
    RAR_FILE_SOLID, RAR_FILE_SPLIT_AFTER, RAR_FILE_SPLIT_BEFORE, RAR_FILE_UNICODE,
    RAR_FILE_VERSION, RAR_ID, RAR_LONG_BLOCK, RAR_MAIN_ENCRYPTVER, RAR_MAIN_FIRSTVOLUME,
    RAR_MAIN_PASSWORD, RAR_MAIN_SOLID, RAR_MAIN_VOLUME, RAR_OLD_SUB_MAC, RAR_OLD_SUB_UNIX,
    decode_rar3_unicode, load_vint, rar3_block_header, rar3_endarc, rar3_file_header,
    rar5_block_header, rar5_encryption_fields, rar5_file_fields, rar5_file_redir,
)

MAX_BLOCKS = 1_000_000             # far more headers than any real archive; bounds the walk
RAR5_VOLUME_PADDING = 32           # zero bytes taken after a continuing RAR 5 volume's end block

ReadFn = Callable[[int, int], bytes]


@dataclass
class RarFileEntry:
    name: str
    size: int                       # unpacked
    crc32: int | None
    packed: int
    is_dir: bool = False
    split_before: bool = False
    split_after: bool = False
    encrypted: bool = False
    solid: bool = False
    old_version: bool = False       # RAR 4 FILE_VERSION / RAR 5 version record: a kept old copy
    blake2sp: str | None = None
    header_offset: int = 0          # relative to the archive start
    redirect: tuple[int, str] | None = None     # RAR 5 REDIR record: (type, target name)
    data_offset: int = 0            # of its packed data, relative to the archive start
    mtime: int | None = None        # as stored: RAR 4 DOS date-time, RAR 5 Unix time
    attributes: int = 0             # as stored (host-OS dependent)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size,
                "crc32": None if self.crc32 is None else "%08x" % self.crc32,
                "packed": self.packed, "dir": self.is_dir, "split_before": self.split_before,
                "split_after": self.split_after, "encrypted": self.encrypted,
                "solid": self.solid, "old_version": self.old_version,
                "blake2sp": self.blake2sp}


@dataclass
class RarArchive:
    offset: int                     # of the signature, in the walked space
    version: int                    # 4 (RAR 1.5 - 4.x block format) or 5
    bytes: int                      # carved length
    complete: bool                  # end-of-archive block reached with every header valid
    end_known: bool                 # False: encrypted headers hide where the archive ends
    first_bad_header: dict[str, Any] | None
    encrypted_headers: bool
    files: list[RarFileEntry] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    volume: bool = False
    first_volume: bool | None = None
    volume_number: int | None = None
    more_volumes: bool = False
    solid: bool = False
    extract_versions: list[int] = field(default_factory=list)
    end_reason: str = ""
    path: str | None = None
    cursor: int = 0                 # where the walk is: the header a _Stop is about
    inside: int | None = None       # offset of the archive whose data holds this one
    encryption: dict[str, Any] | None = None   # RAR 5 archive-encryption parameters
    truncated_file: RarFileEntry | None = None  # a file whose data the space cuts off
    write_error: str | None = None  # the archive could not be written (output full, ...)

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "bytes": self.bytes, "version": self.version,
                "path": self.path, "complete": self.complete,
                "first_bad_header": self.first_bad_header,
                "encrypted_headers": self.encrypted_headers,
                "files": [f.to_json() for f in self.files],
                "end_known": self.end_known, "end_reason": self.end_reason,
                "volume": self.volume, "first_volume": self.first_volume,
                "volume_number": self.volume_number, "more_volumes": self.more_volumes,
                "solid": self.solid, "services": self.services,
                "extract_versions": self.extract_versions, "inside": self.inside,
                "encryption": self.encryption,
                **({"write_error": self.write_error} if self.write_error else {})}


class _Stop(Exception):
    """A header that cannot be accepted: the walk ends before it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _crc16(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFF


def _decode_oem(raw: bytes) -> str:
    # rarfile tries UTF-8 first, then the configured charset (config.TRY_ENCODINGS)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437", "replace")


def _rar3_name(raw: bytes, flags: int) -> str:
    if flags & RAR_FILE_UNICODE and b"\0" in raw:
        nul = raw.index(b"\0")
        name, failed = decode_rar3_unicode(raw[:nul], raw[nul + 1:])
        if failed:
            name = _decode_oem(raw[:nul])
    elif flags & RAR_FILE_UNICODE:
        name = raw.decode("utf-8", "replace")
    else:
        nul = raw.find(b"\0")
        name = _decode_oem(raw[:nul] if nul >= 0 else raw)
    return name.replace("\\", "/").rstrip("/")


def _ext_time_end(hdata: bytes, pos: int) -> int:
    """End of the RAR 4 extended-time field (rarfile _parse_ext_time / _parse_xtime)."""
    if pos + 2 > len(hdata):
        return pos
    flags = struct.unpack_from("<H", hdata, pos)[0]
    pos += 2
    for i in range(4):                          # mtime, ctime, atime, arctime
        rmode = flags >> ((3 - i) * 4)
        if not rmode & 8:
            continue
        if i != 0:
            pos += 4                            # DOS time (mtime reuses the header's)
        pos += rmode & 3
    return pos


# -- RAR 1.5 - 4.x ------------------------------------------------------------------------------
def _walk_rar3(read: ReadFn, start: int, limit: int | None, arc: RarArchive) -> int:
    """Walk RAR 4 blocks after the 7-byte MARK; returns the end of the last good block."""
    pos = start + len(RAR_ID)
    good_end = pos
    for _ in range(MAX_BLOCKS):
        arc.cursor = pos
        head = read(pos, 11)
        if len(head) == 0:
            arc.end_reason = "end of space before an end-of-archive block"
            return good_end
        if len(head) < 7:
            raise _Stop(f"header cut off by the end of the space ({len(head)} of 7 bytes)")
        common = rar3_block_header.parse(head[:7] + b"\0" * 4)    # add_size read below
        header_crc, btype, flags, header_size = (common.header_crc, common.type, common.flags,
                                                 common.header_size)
        if header_size < 7:
            raise _Stop(f"header size {header_size} < 7")
        hdata = read(pos, header_size)
        if len(hdata) < header_size:
            raise _Stop(f"header of {header_size} bytes cut off by the end of the space")
        add_size = 0
        p = 7
        if flags & RAR_LONG_BLOCK:
            if header_size < 11:
                raise _Stop("LONG_BLOCK header shorter than 11 bytes")
            add_size = struct.unpack_from("<I", hdata, 7)[0]
            p = 11
        entry = None
        crc_ends: list[int] = [header_size]
        if btype == RAR_BLOCK_MAIN:
            end = 7 + 6 + (1 if flags & RAR_MAIN_ENCRYPTVER else 0)
            if end > header_size:
                raise _Stop("MAIN header too short")
            crc_ends = [end]
            arc.volume = bool(flags & RAR_MAIN_VOLUME)
            arc.first_volume = bool(flags & RAR_MAIN_FIRSTVOLUME) if arc.volume else None
            arc.solid = bool(flags & RAR_MAIN_SOLID)
            arc.encrypted_headers = bool(flags & RAR_MAIN_PASSWORD)
        elif btype in (RAR_BLOCK_FILE, RAR_BLOCK_SUB):
            if 7 + RAR3_FILE_HEADER_SIZE > header_size:
                raise _Stop(f"file header of {header_size} bytes too short")
            fh = rar3_file_header.parse(hdata[7: 7 + RAR3_FILE_HEADER_SIZE])
            q = 7 + RAR3_FILE_HEADER_SIZE
            compress_size, file_size = fh.compress_size, fh.file_size
            if flags & RAR_FILE_LARGE:
                if q + 8 > header_size:
                    raise _Stop("LARGE file header too short")
                hi_pack, hi_unp = struct.unpack_from("<II", hdata, q)
                q += 8
                compress_size |= hi_pack << 32
                file_size |= hi_unp << 32
                add_size = compress_size
            if q + fh.name_size > header_size:
                raise _Stop(f"name of {fh.name_size} bytes runs past the header")
            raw_name = hdata[q: q + fh.name_size]
            q += fh.name_size
            if flags & RAR_FILE_SALT:
                q += 8
            if flags & RAR_FILE_EXTTIME:
                q = _ext_time_end(hdata, q)
            # rarfile: FILE CRC covers up to the end of these fields (file comments follow);
            # SUB covers the whole header. Both accepted for FILE (old writers differ).
            crc_ends = [min(q, header_size), header_size] if btype == RAR_BLOCK_FILE \
                else [header_size]
            name = _rar3_name(raw_name, flags)
            if btype == RAR_BLOCK_FILE:
                entry = RarFileEntry(
                    name=name, size=file_size, crc32=fh.CRC, packed=compress_size,
                    is_dir=(flags & RAR_FILE_DIRECTORY) == RAR_FILE_DIRECTORY,
                    split_before=bool(flags & RAR_FILE_SPLIT_BEFORE),
                    split_after=bool(flags & RAR_FILE_SPLIT_AFTER),
                    encrypted=bool(flags & RAR_FILE_PASSWORD),
                    solid=bool(flags & RAR_FILE_SOLID),
                    old_version=bool(flags & RAR_FILE_VERSION),
                    header_offset=pos - start, data_offset=pos + header_size - start,
                    mtime=fh.date_time, attributes=fh.mode)
                if fh.extract_version not in arc.extract_versions:
                    arc.extract_versions.append(fh.extract_version)
            else:
                arc.services.append(name)
        elif btype == RAR_BLOCK_OLD_AUTH:
            crc_ends = [min(header_size, p + 8)]
        elif btype == RAR_BLOCK_OLD_EXTRA:
            crc_ends = [min(header_size, p + 7)]
        elif btype == RAR_BLOCK_OLD_SUB:
            if header_size >= p + 2 and struct.unpack_from("<H", hdata, p)[0] in (
                    RAR_OLD_SUB_UNIX, RAR_OLD_SUB_MAC):
                crc_ends = []       # rarfile: these include their data in the CRC; not checked
        elif btype == RAR_BLOCK_ENDARC:
            if flags & RAR_ENDARC_NEXT_VOLUME:
                arc.more_volumes = True
            try:
                arc.volume_number = rar3_endarc.parse(hdata[7:], flags=flags).endarc_volnr
            except ConstructError:
                pass                # fields cut short: the CRC check below decides
        if crc_ends and not any(_crc16(hdata[2:e]) == header_crc for e in crc_ends):
            raise _Stop(f"header CRC mismatch (type 0x{btype:02x}, stored 0x{header_crc:04x})")
        nxt = pos + header_size + add_size
        if limit is not None and nxt > limit:
            arc.truncated_file = entry
            raise _Stop(f"block data of {add_size} bytes runs past the end of the space "
                        f"({limit - pos - header_size} bytes remain)")
        if entry is not None:
            arc.files.append(entry)
        if btype == RAR_BLOCK_MAIN and arc.encrypted_headers:
            arc.end_known = False
            arc.end_reason = "headers after MAIN are encrypted (MAIN flag 0x80)"
            return nxt
        good_end = pos = nxt
        if btype == RAR_BLOCK_ENDARC:
            arc.complete = True
            arc.end_reason = "end-of-archive block"
            return good_end
    raise _Stop(f"more than {MAX_BLOCKS} blocks")


# -- RAR 5 --------------------------------------------------------------------------------------
def _rar5_extras(extra: bytes, entry: RarFileEntry) -> None:
    pos = 0
    while pos < len(extra):
        size, p = load_vint(extra, pos)
        end = p + size
        if size == 0 or end > len(extra):
            raise ValueError("extra record runs past the header")
        rtype, q = load_vint(extra, p)
        if rtype == RAR5_XFILE_ENCRYPTION:
            entry.encrypted = True
        elif rtype == RAR5_XFILE_HASH:
            htype, q = load_vint(extra, q)
            if htype == RAR5_XHASH_BLAKE2SP and q + 32 <= end:
                entry.blake2sp = extra[q: q + 32].hex()
        elif rtype == RAR5_XFILE_VERSION:
            entry.old_version = True
        elif rtype == RAR5_XFILE_REDIR:
            try:
                redir = rar5_file_redir.parse(extra[q:end])
            except ConstructError:
                raise ValueError("redirect record runs past its end") from None
            entry.redirect = (redir.redir_type, redir.redir_name.decode("utf-8", "replace"))
        pos = end


def _walk_rar5(read: ReadFn, start: int, limit: int | None, arc: RarArchive) -> int:
    pos = start + len(RAR5_ID)
    good_end = pos
    for _ in range(MAX_BLOCKS):
        arc.cursor = pos
        head = read(pos, 4 + 10)
        if len(head) == 0:
            arc.end_reason = "end of space before an end-of-archive block"
            return good_end
        if len(head) < 5:
            raise _Stop("header cut off by the end of the space")
        try:
            header_crc = struct.unpack_from("<I", head)[0]
            hdrlen, p = load_vint(head, 4)
        except ValueError as exc:
            raise _Stop(f"bad header size: {exc}") from None
        if hdrlen == 0 or hdrlen > RAR5_MAX_HEADER:
            raise _Stop(f"header size {hdrlen} out of range")
        total = p + hdrlen
        hdata = read(pos, total)
        if len(hdata) < total:
            raise _Stop(f"header of {total} bytes cut off by the end of the space")
        if zlib.crc32(hdata[4:]) != header_crc:
            raise _Stop(f"header CRC-32 mismatch (stored {header_crc:08x})")
        entry = None
        try:
            stream = io.BytesIO(hdata)
            try:
                common = rar5_block_header.parse_stream(stream)
            except ConstructError as exc:
                raise ValueError(str(exc).splitlines()[0]) from None
            btype, bflags = common.block_type, common.block_flags
            extra_size, data_size = common.block_extra_size or 0, common.add_size or 0
            p = stream.tell()           # vints may be written longer than needed
            if extra_size > total - p:
                raise ValueError(f"extra area of {extra_size} bytes larger than the header")
            extra = hdata[total - extra_size: total]
            if btype == RAR5_BLOCK_MAIN:
                mflags, p = load_vint(hdata, p)
                arc.volume = bool(mflags & RAR5_MAIN_FLAG_ISVOL)
                arc.solid = bool(mflags & RAR5_MAIN_FLAG_SOLID)
                if mflags & RAR5_MAIN_FLAG_HAS_VOLNR:
                    arc.volume_number, p = load_vint(hdata, p)
                if arc.volume:
                    arc.first_volume = not arc.volume_number
            elif btype in (RAR5_BLOCK_FILE, RAR5_BLOCK_SERVICE):
                stream.seek(p)
                try:
                    fields = rar5_file_fields.parse_stream(stream)
                except ConstructError as exc:
                    raise ValueError(f"file fields: {str(exc).splitlines()[0]}") from None
                if stream.tell() > total - extra_size:
                    raise ValueError(f"name of {fields.name_size} bytes runs into the extra area")
                fflags, file_size, crc = fields.file_flags, fields.file_size, fields.CRC
                cinfo = fields.compress_info
                name = fields.filename.decode("utf-8", "replace")
                if btype == RAR5_BLOCK_FILE:
                    entry = RarFileEntry(
                        name=name.rstrip("/"), size=file_size, crc32=crc, packed=data_size,
                        is_dir=bool(fflags & RAR5_FILE_FLAG_ISDIR),
                        split_before=bool(bflags & RAR5_BLOCK_FLAG_SPLIT_BEFORE),
                        split_after=bool(bflags & RAR5_BLOCK_FLAG_SPLIT_AFTER),
                        solid=bool(cinfo & RAR5_COMPR_SOLID), header_offset=pos - start,
                        data_offset=pos + total - start, mtime=fields.mtime,
                        attributes=fields.mode)
                    _rar5_extras(extra, entry)
                else:
                    arc.services.append(name)
            elif btype == RAR5_BLOCK_ENDARC:
                # some writers (libarchive's hand-made test archives) end the header before the
                # end-of-archive flags; libarchive and unrar accept that as flags 0
                eflags, p = load_vint(hdata, p) if p < total - extra_size else (0, p)
                arc.more_volumes = bool(eflags & RAR5_ENDARC_FLAG_NEXT_VOL)
        except ValueError as exc:
            raise _Stop(f"malformed header (type {locals().get('btype', '?')}): {exc}") from None
        nxt = pos + total + data_size
        if limit is not None and nxt > limit:
            arc.truncated_file = entry
            raise _Stop(f"block data of {data_size} bytes runs past the end of the space "
                        f"({limit - pos - total} bytes remain)")
        if entry is not None:
            arc.files.append(entry)
        if btype == RAR5_BLOCK_ENCRYPTION:
            arc.encrypted_headers = True
            try:
                enc = rar5_encryption_fields.parse(hdata[p:])
                arc.encryption = {"algorithm": enc.encryption_algo,     # 0 = AES-256
                                  "kdf_log2_count": enc.encryption_kdf_count,
                                  "salt": enc.encryption_salt.hex()}
            except ConstructError:
                pass
            arc.end_known = False
            arc.end_reason = "headers after the archive-encryption block are encrypted"
            return nxt
        good_end = pos = nxt
        if btype == RAR5_BLOCK_ENDARC:
            arc.complete = True
            arc.end_reason = "end-of-archive block"
            if arc.more_volumes:
                # RAR 5 volumes that continue are zero-padded after the end block (9 and 15
                # bytes in the shared rarfile/libarchive volume sets) [V on those fixtures;
                # the writer's reason is unknown]: take up to RAR5_VOLUME_PADDING zero bytes
                tail = read(pos, RAR5_VOLUME_PADDING)
                pad = len(tail) - len(tail.lstrip(b"\0"))
                if pad:
                    good_end += pad
                    arc.end_reason += f" + {pad} zero padding bytes"
            return good_end
    raise _Stop(f"more than {MAX_BLOCKS} blocks")


def walk_archive(read: ReadFn, offset: int, limit: int | None = None) -> RarArchive | None:
    """Walk the archive whose signature is at `offset`; None when there is no RAR signature.

    `read(off, n)` reads the space (short at its end); `limit` is the space size when known.
    """
    sig = read(offset, 8)
    if sig[:7] == RAR_ID:
        version, walker = 4, _walk_rar3
    elif sig == RAR5_ID:
        version, walker = 5, _walk_rar5
    else:
        return None
    arc = RarArchive(offset=offset, version=version, bytes=0, complete=False, end_known=True,
                     first_bad_header=None, encrypted_headers=False, cursor=offset)
    try:
        end = walker(read, offset, limit, arc)
    except _Stop as stop:
        bad_at = arc.cursor
        arc.first_bad_header = {"offset": bad_at, "archive_offset": bad_at - offset,
                                "reason": stop.reason}
        arc.end_reason = "stopped at a bad header"
        end = bad_at
    arc.bytes = end - offset
    return arc
