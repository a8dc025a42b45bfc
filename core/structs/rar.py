"""RAR 1.5-4.x ("RAR3" in rarfile) and RAR 5 block headers.

Names follow rarfile (`markokr/rarfile: src/rarfile/format.py` S_BLK_HDR / S_FILE_HDR unpacking
and the Rar3Info / Rar5FileInfo fields; constants from `src/rarfile/bits.py`). Facts and
pitfalls: shared/docs/formats.md section 6. All integers little-endian.

Declared once with construct (parse and build). RAR 5 sizes are vints (7 bits per byte, high
bit = more follow, at most 10 bytes): `VInt` below both parses and builds them.
"""

from __future__ import annotations

from construct import (
    Bytes, Construct, ConstructError, If, Int8ul, Int16ul, Int32ul, Struct, this,
)
from construct.core import stream_read, stream_write

# Signatures (rarfile bits.py RAR_ID / RAR5_ID; formats.md 6)
RAR_ID = b"Rar!\x1a\x07\x00"
RAR5_ID = b"Rar!\x1a\x07\x01\x00"
RAR_SIG_PREFIX = b"Rar!\x1a\x07"

# RAR 3/4 block types (bits.py RAR_BLOCK_*)
RAR_BLOCK_MARK = 0x72
RAR_BLOCK_MAIN = 0x73
RAR_BLOCK_FILE = 0x74
RAR_BLOCK_OLD_COMMENT = 0x75
RAR_BLOCK_OLD_EXTRA = 0x76
RAR_BLOCK_OLD_SUB = 0x77
RAR_BLOCK_OLD_RECOVERY = 0x78
RAR_BLOCK_OLD_AUTH = 0x79
RAR_BLOCK_SUB = 0x7A
RAR_BLOCK_ENDARC = 0x7B

# common block flags
RAR_LONG_BLOCK = 0x8000          # a u32 add_size follows the 7 common bytes
RAR_SKIP_IF_UNKNOWN = 0x4000

# MAIN flags
RAR_MAIN_VOLUME = 0x0001
RAR_MAIN_COMMENT = 0x0002
RAR_MAIN_LOCK = 0x0004
RAR_MAIN_SOLID = 0x0008
RAR_MAIN_NEWNUMBERING = 0x0010
RAR_MAIN_AUTH = 0x0020
RAR_MAIN_RECOVERY = 0x0040
RAR_MAIN_PASSWORD = 0x0080       # headers encrypted
RAR_MAIN_FIRSTVOLUME = 0x0100
RAR_MAIN_ENCRYPTVER = 0x0200     # one more byte in MAIN, covered by its CRC

# FILE flags
RAR_FILE_SPLIT_BEFORE = 0x0001
RAR_FILE_SPLIT_AFTER = 0x0002
RAR_FILE_PASSWORD = 0x0004
RAR_FILE_COMMENT = 0x0008
RAR_FILE_SOLID = 0x0010
RAR_FILE_DICTMASK = 0x00E0
RAR_FILE_DIRECTORY = 0x00E0
RAR_FILE_LARGE = 0x0100
RAR_FILE_UNICODE = 0x0200
RAR_FILE_SALT = 0x0400
RAR_FILE_VERSION = 0x0800
RAR_FILE_EXTTIME = 0x1000

# ENDARC flags
RAR_ENDARC_NEXT_VOLUME = 0x0001
RAR_ENDARC_DATACRC = 0x0002
RAR_ENDARC_REVSPACE = 0x0004
RAR_ENDARC_VOLNR = 0x0008

# old-style (RAR 2.x) sub-block types whose data is covered by the header CRC (bits.py)
RAR_OLD_SUB_UNIX = 0x0101
RAR_OLD_SUB_MAC = 0x0102

# RAR 5 (bits.py RAR5_*)
RAR5_BLOCK_MAIN = 1
RAR5_BLOCK_FILE = 2
RAR5_BLOCK_SERVICE = 3
RAR5_BLOCK_ENCRYPTION = 4
RAR5_BLOCK_ENDARC = 5

RAR5_BLOCK_FLAG_EXTRA_DATA = 0x01
RAR5_BLOCK_FLAG_DATA_AREA = 0x02
RAR5_BLOCK_FLAG_SKIP_IF_UNKNOWN = 0x04
RAR5_BLOCK_FLAG_SPLIT_BEFORE = 0x08
RAR5_BLOCK_FLAG_SPLIT_AFTER = 0x10

RAR5_MAIN_FLAG_ISVOL = 0x01
RAR5_MAIN_FLAG_HAS_VOLNR = 0x02
RAR5_MAIN_FLAG_SOLID = 0x04
RAR5_MAIN_FLAG_RECOVERY = 0x08
RAR5_MAIN_FLAG_LOCKED = 0x10

RAR5_FILE_FLAG_ISDIR = 0x01
RAR5_FILE_FLAG_HAS_MTIME = 0x02
RAR5_FILE_FLAG_HAS_CRC32 = 0x04
RAR5_FILE_FLAG_UNKNOWN_SIZE = 0x08

RAR5_COMPR_SOLID = 0x40
RAR5_ENDARC_FLAG_NEXT_VOL = 0x01

RAR5_XFILE_ENCRYPTION = 1
RAR5_XFILE_HASH = 2
RAR5_XFILE_TIME = 3
RAR5_XFILE_VERSION = 4
RAR5_XFILE_REDIR = 5
RAR5_XFILE_OWNER = 6
RAR5_XFILE_SERVICE = 7
RAR5_XHASH_BLAKE2SP = 0

# redirect record types (bits.py RAR5_XREDIR_*): what a FILE entry with a REDIR extra record is
RAR5_XREDIR_UNIX_SYMLINK = 1
RAR5_XREDIR_WINDOWS_SYMLINK = 2
RAR5_XREDIR_WINDOWS_JUNCTION = 3
RAR5_XREDIR_HARD_LINK = 4
RAR5_XREDIR_FILE_COPY = 5

RAR5_OS_WINDOWS = 0              # host OS of RAR 5 file headers (bits.py)
RAR5_OS_UNIX = 1
RAR5_COMPR_METHOD_SHIFT = 7      # compression info bits 7-9: method, 0 = stored (rarfile:
RAR5_COMPR_METHOD_MASK = 7       # compress_type = RAR_M0 + ((file_compress_flags >> 7) & 7))

RAR5_MAX_HEADER = 2 * 1024 * 1024    # rarfile refuses larger RAR 5 headers (format.py)
VINT_MAX_BYTES = 10


class VIntError(ConstructError):
    pass


class VInt(Construct):
    r"""RAR 5 variable-length integer.

        byte:  1xxxxxxx 1xxxxxxx ... 0xxxxxxx     (low 7 bits first, at most 10 bytes)
    """

    def _parse(self, stream, context, path):
        value = shift = 0
        for _ in range(VINT_MAX_BYTES):
            b = stream_read(stream, 1, path)[0]
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value
        raise VIntError("vint longer than 10 bytes", path=path)

    def _build(self, obj, stream, context, path):
        if obj < 0:
            raise VIntError("negative vint", path=path)
        out = bytearray()
        value = obj
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
        stream_write(stream, bytes(out), len(out), path)
        return obj

    def _sizeof(self, context, path):
        raise VIntError("vint has no fixed size", path=path)


vint = VInt()


def load_vint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next pos) of the vint at buf[pos]; ValueError when cut off or too long."""
    value = shift = 0
    for i in range(VINT_MAX_BYTES):
        if pos + i >= len(buf):
            raise ValueError("vint runs past the end of the header")
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos + i + 1
    raise ValueError("vint longer than 10 bytes")


# -- RAR 1.5 - 4.x ------------------------------------------------------------------------------
# S_BLK_HDR "<HBHH": every block starts with these 7 bytes
rar3_block_header = Struct(
    "header_crc" / Int16ul,        # low 16 bits of CRC-32 over bytes 2..crc end
    "type" / Int8ul,
    "flags" / Int16ul,
    "header_size" / Int16ul,       # whole header incl. these 7 bytes
    "add_size" / If(this.flags & RAR_LONG_BLOCK, Int32ul),
)

# S_FILE_HDR "<LLBLLBBHL": the fixed part of FILE / SUB headers after the 7 common bytes
rar3_file_header = Struct(
    "compress_size" / Int32ul,     # PACK_SIZE (also the block's add_size)
    "file_size" / Int32ul,         # UNP_SIZE
    "host_os" / Int8ul,
    "CRC" / Int32ul,               # CRC-32 of the unpacked file
    "date_time" / Int32ul,         # DOS date/time
    "extract_version" / Int8ul,
    "compress_type" / Int8ul,      # 0x30 store .. 0x35 best
    "name_size" / Int16ul,
    "mode" / Int32ul,              # attributes
)
RAR3_FILE_HEADER_SIZE = rar3_file_header.sizeof()   # 25

# ENDARC fields after the 7 common bytes; parse with the block's flags (construct puts parse
# keywords in the enclosing context, hence `this._`): rar3_endarc.parse(data, flags=flags)
rar3_endarc = Struct(
    "endarc_datacrc" / If(this._.flags & RAR_ENDARC_DATACRC, Int32ul),
    "endarc_volnr" / If(this._.flags & RAR_ENDARC_VOLNR, Int16ul),
)

# -- RAR 5 -------------------------------------------------------------------------------------
rar5_block_header = Struct(
    "header_crc" / Int32ul,        # CRC-32 of everything after this field to the header end
    "header_size" / vint,          # bytes after the size field
    "block_type" / vint,
    "block_flags" / vint,
    "block_extra_size" / If(this.block_flags & RAR5_BLOCK_FLAG_EXTRA_DATA, vint),
    "add_size" / If(this.block_flags & RAR5_BLOCK_FLAG_DATA_AREA, vint),
)

rar5_file_fields = Struct(
    "file_flags" / vint,
    "file_size" / vint,            # unpacked size
    "mode" / vint,                 # attributes
    "mtime" / If(this.file_flags & RAR5_FILE_FLAG_HAS_MTIME, Int32ul),
    "CRC" / If(this.file_flags & RAR5_FILE_FLAG_HAS_CRC32, Int32ul),
    "compress_info" / vint,        # bits 7-9 method, 0x40 solid
    "host_os" / vint,
    "name_size" / vint,
    "filename" / Bytes(this.name_size),   # UTF-8, '/' separated
)

# REDIR extra record after its type (rarfile format.py _parse_file_redir)
rar5_file_redir = Struct(
    "redir_type" / vint,           # RAR5_XREDIR_*
    "redir_flags" / vint,          # 1 = the target is a directory
    "redir_name_len" / vint,
    "redir_name" / Bytes(this.redir_name_len),     # UTF-8, '/' separated
)

rar5_encryption_fields = Struct(
    "encryption_algo" / vint,
    "encryption_flags" / vint,
    "encryption_kdf_count" / Int8ul,
    "encryption_salt" / Bytes(16),
)

# MAIN and end-of-archive fields after the common header (rarfile format.py _parse_main_block,
# _parse_endarc_block). An end block without the volume flag is `1D 77 56 51 03 05 04 00`
# (formats.md 6.2 [V]).
rar5_main_fields = Struct(
    "main_flags" / vint,
    "main_volume_number" / If(this.main_flags & RAR5_MAIN_FLAG_HAS_VOLNR, vint),
)

rar5_endarc_fields = Struct(
    "endarc_flags" / vint,
)

def decode_rar3_unicode(std_name: bytes, encdata: bytes) -> tuple[str, bool]:
    """RAR 3 compressed Unicode file names (FILE flag 0x200 with a NUL inside the name field).

    The bytes after the NUL encode UTF-16 code units relative to the 8-bit name before it: the
    first byte is a "high byte"; then groups of 2-bit opcodes (a flags byte gives four) say for
    each unit: 0 = next byte with high 0, 1 = next byte with the high byte, 2 = next two bytes
    (low, high), 3 = a run: n (< 0x80) copies n + 2 bytes of the 8-bit name with high 0, or
    n (>= 0x80) takes a correction byte c and copies (n & 0x7F) + 2 bytes of the 8-bit name
    plus c with the high byte. Same algorithm as rarfile's UnicodeFilename and unrar's
    DecodeFileName. Returns (name, failed): failed when the data ran out early.
    """
    out = bytearray()
    pos = enc = 0
    failed = False

    def enc_byte() -> int:
        nonlocal enc, failed
        if enc < len(encdata):
            enc += 1
            return encdata[enc - 1]
        failed = True
        return 0

    def std_byte() -> int:
        nonlocal failed
        if pos < len(std_name):
            return std_name[pos]
        failed = True
        return ord("?")

    def put(lo: int, hi: int) -> None:
        nonlocal pos
        out.append(lo)
        out.append(hi)
        pos += 1

    hi = enc_byte()
    flags = flagbits = 0
    # every opcode consumes at least one byte, so this ends within len(encdata) rounds; a run
    # emits at most 129 units: the output is bounded by 129 * len(encdata)
    while enc < len(encdata):
        if flagbits == 0:
            flags = enc_byte()
            flagbits = 8
        flagbits -= 2
        op = (flags >> flagbits) & 3
        if op == 0:
            put(enc_byte(), 0)
        elif op == 1:
            put(enc_byte(), hi)
        elif op == 2:
            lo = enc_byte()
            put(lo, enc_byte())
        else:
            n = enc_byte()
            if n & 0x80:
                c = enc_byte()
                for _ in range((n & 0x7F) + 2):
                    put((std_byte() + c) & 0xFF, hi)
            else:
                for _ in range(n + 2):
                    put(std_byte(), 0)
    return out.decode("utf-16-le", "replace"), failed
