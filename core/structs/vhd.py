"""VHD on-disk structures (Microsoft Virtual Hard Disk, as written by blktap, qemu, Windows, VirtualBox).

Declared once here with `construct`; they parse and build. Field names are blktap's
(`xapi-project/blktap: include/vhd.h`, structs `hd_ftr`, `dd_hdr`, `prt_loc`, `dd_batmap_hdr`),
which follow the Microsoft VHD specification; libyal/libvhdi's "Virtual Hard Disk (VHD) image
format" and qemu `block/vpc.c` (VHDFooter / VHDDynDiskHeader) describe the same layout.
All integers are big-endian.
"""

from __future__ import annotations

import uuid

import numpy as np
from construct import Array, Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

SECTOR = 512

# -- magic numbers ---------------------------------------------------------------------------
# blktap include/vhd.h HD_COOKIE / DD_COOKIE; VHD spec "Hard Disk Footer Format"
HD_COOKIE = b"conectix"
DD_COOKIE = b"cxsparse"
# blktap include/vhd.h VHD_POISON_COOKIE: a footer deliberately disabled by vhd-util
POISON_COOKIE = b"v_poison"
# blktap include/vhd.h VHD_BATMAP_COOKIE
BATMAP_COOKIE = b"tdbatmap"

HD_FF_VERSION = 0x00010000      # vhd.h HD_FF_VERSION (footer format version 1.0)
DD_VERSION = 0x00010000         # vhd.h DD_VERSION (dynamic header version 1.0)
HD_RESERVED = 0x00000002        # vhd.h HD_RESERVED: features bit that must always be set
HD_TEMPORARY = 0x00000001       # vhd.h HD_TEMPORARY
DD_BLK_UNUSED = 0xFFFFFFFF      # vhd.h DD_BLK_UNUSED: BAT entry of an unallocated block
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF  # spec: fixed disks have data_offset all ones
DD_NEXT_OFFSET = 0xFFFFFFFFFFFFFFFF     # dd_hdr.data_offset: "next" structure, unused
VHD_BLOCK_BYTES = 0x00200000    # vhd.h VHD_BLOCK_SIZE (2 MiB default)
BATMAP_VERSION_1_2 = 0x00010002  # libvhd.c VHD_BATMAP_CURRENT_VERSION
BATMAP_VERSION_1_1 = 0x00010001  # libvhd.c: version 1.1 summed signed chars

# disk types (vhd.h HD_TYPE_*)
HD_TYPE_NONE, HD_TYPE_FIXED, HD_TYPE_DYNAMIC, HD_TYPE_DIFF = 0, 2, 3, 4
DISK_TYPE_NAMES = {0: "none", 1: "deprecated-1", 2: "fixed", 3: "dynamic", 4: "differencing",
                   5: "deprecated-5", 6: "deprecated-6"}

# parent locator platform codes (vhd.h PLAT_CODE_*)
PLAT_CODE_NONE = 0
PLAT_CODE_WI2R = 0x57693272  # "Wi2r" deprecated
PLAT_CODE_WI2K = 0x5769326B  # "Wi2k" deprecated
PLAT_CODE_W2RU = 0x57327275  # "W2ru" relative Windows path, UTF-16 LE
PLAT_CODE_W2KU = 0x57326B75  # "W2ku" absolute Windows path, UTF-16 LE
PLAT_CODE_MAC = 0x4D616320   # "Mac " alias blob
PLAT_CODE_MACX = 0x4D616358  # "MacX" file:// URL, UTF-8

# creator applications seen in the field (formats.md 4.4)
CREATOR_TAP = b"tap\0"
CREATOR_QEMU = b"qemu"
CREATOR_QEM2 = b"qem2"
CREATOR_WIN = b"win "
CREATOR_VPC = b"vpc "
CREATOR_VBOX = b"vbox"
TAP_VERSION_1_3 = 0x00010003     # blktap libvhd.c VHD_CURRENT_VERSION
QEMU_VERSION_5_3 = 0x00050003    # qemu block/vpc.c creator_ver

# VHD timestamps count seconds from 2000-01-01 00:00:00 UTC (spec; blktap vhd_time)
VHD_EPOCH_OFFSET = 946684800

# -- structures ------------------------------------------------------------------------------
# struct hd_ftr (blktap vhd.h), 512 bytes
hd_ftr = Struct(
    "cookie" / Bytes(8),
    "features" / Int32ub,
    "ff_version" / Int32ub,
    "data_offset" / Int64ub,
    "timestamp" / Int32ub,
    "crtr_app" / Bytes(4),
    "crtr_ver" / Int32ub,
    "crtr_os" / Int32ub,
    "orig_size" / Int64ub,
    "curr_size" / Int64ub,
    "geometry" / Int32ub,      # cylinders u16 << 16 | heads u8 << 8 | sectors-per-track u8
    "type" / Int32ub,
    "checksum" / Int32ub,
    "uuid" / Bytes(16),
    "saved" / Int8ub,
    "hidden" / Int8ub,         # blktap: VM-invisible parent flag (spec: reserved)
    "reserved" / Bytes(426),
)
FOOTER_SIZE = 512
FOOTER_CHECKSUM_OFFSET = 64
FOOTER_HIDDEN_OFFSET = 85

# struct prt_loc (blktap vhd.h), 24 bytes
prt_loc = Struct(
    "code" / Int32ub,
    "data_space" / Int32ub,    # sectors per spec; bytes in practice (formats.md 4.2)
    "data_len" / Int32ub,
    "res" / Int32ub,
    "data_offset" / Int64ub,
)

# struct dd_hdr (blktap vhd.h), 1024 bytes
dd_hdr = Struct(
    "cookie" / Bytes(8),
    "data_offset" / Int64ub,   # "next offset", all ones
    "table_offset" / Int64ub,
    "hdr_ver" / Int32ub,
    "max_bat_size" / Int32ub,  # spec: Max Table Entries
    "block_size" / Int32ub,
    "checksum" / Int32ub,
    "prt_uuid" / Bytes(16),
    "prt_ts" / Int32ub,
    "res1" / Int32ub,
    "prt_name" / Bytes(512),   # UTF-16 big-endian
    "loc" / Array(8, prt_loc),
    "res2" / Bytes(256),
)
HEADER_SIZE = 1024
HEADER_CHECKSUM_OFFSET = 36

# struct dd_batmap_hdr (blktap vhd.h), padded to one sector
dd_batmap_hdr = Struct(
    "cookie" / Bytes(8),
    "batmap_offset" / Int64ub,
    "batmap_size" / Int32ub,   # sectors
    "batmap_version" / Int32ub,
    "checksum" / Int32ub,
    "marker" / Int8ub,
    "keyhash" / Bytes(65),     # cookie + nonce + hash (blktap struct vhd_keyhash)
    "reserved" / Bytes(418),
)
BATMAP_HEADER_SIZE = 512

# The BAT: max_bat_size big-endian u32 sector numbers (spec "Block Allocation Table"). Declared
# here for building and checking; hot paths read it with numpy (parse_bat) in windows.
def bat_table(count: int):
    return Array(count, Int32ub)


# CHS geometry word: kept as one u32 in hd_ftr; this view splits it (spec "Disk Geometry")
chs_geometry = Struct("cylinders" / Int16ub, "heads" / Int8ub, "sectors" / Int8ub)


# -- helpers ---------------------------------------------------------------------------------
def ones_complement_sum(data: bytes, checksum_offset: int | None) -> int:
    """One's complement of the byte sum with the 4-byte checksum field counted as zero
    (VHD spec "Checksum"; blktap vhd_checksum_footer / vhd_checksum_header)."""
    # the builtin sum, not numpy: as fast on 512/1024 bytes, and it keeps the GIL (numpy drops
    # it for arrays over 500 items, and a scan thread that drops and retakes the GIL for every
    # candidate footer starves the workstation's UI thread of it)
    total = sum(data)
    if checksum_offset is not None:
        total -= sum(data[checksum_offset:checksum_offset + 4])
    return (~total) & 0xFFFFFFFF


def footer_checksum(raw: bytes) -> int:
    return ones_complement_sum(raw[:FOOTER_SIZE], FOOTER_CHECKSUM_OFFSET)


def header_checksum(raw: bytes) -> int:
    return ones_complement_sum(raw[:HEADER_SIZE], HEADER_CHECKSUM_OFFSET)


def batmap_checksum(map_bytes: bytes, signed: bool = False) -> int:
    """blktap vhd_checksum_batmap: one's complement of the sum of the map bytes (version 1.1
    summed signed chars)."""
    arr = np.frombuffer(map_bytes, dtype=np.int8 if signed else np.uint8)
    return (~int(arr.sum(dtype=np.int64))) & 0xFFFFFFFF


def batmap_checksum_length(curr_size: int, block_size: int = VHD_BLOCK_BYTES) -> int:
    """Bytes of the batmap the checksum covers: `curr_size >> (VHD_BLOCK_SHIFT + 3)` rounded
    up to whole sectors, at least one (blktap libvhd.c vhd_checksum_batmap: the shift is the
    fixed 2 MiB VHD_BLOCK_SHIFT = 21 and rounds *down* before the sector round-up).
    `block_size` is accepted for symmetry and ignored, as blktap ignores it."""
    return max(1, -(-(curr_size >> 24) // SECTOR)) * SECTOR


def format_uuid(raw: bytes) -> str:
    """A VHD unique id (16 bytes, big-endian as stored) as vhd-util prints it: 8-4-4-4-12 hex."""
    return str(uuid.UUID(bytes=bytes(raw)))


def roundup(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def bitmap_bytes(block_size: int) -> int:
    """Size of a block's sector bitmap: one bit per sector, padded to a sector (spec)."""
    return roundup(-(-block_size // SECTOR // 8), SECTOR)


def parse_footer(raw: bytes):
    return hd_ftr.parse(raw[:FOOTER_SIZE].ljust(FOOTER_SIZE, b"\0"))


def build_footer(**fields) -> bytes:
    """Footer bytes with the checksum computed (fields as in hd_ftr; checksum ignored)."""
    fields = dict(fields)
    fields.setdefault("reserved", bytes(426))
    fields["checksum"] = 0
    raw = bytearray(hd_ftr.build(fields))
    raw[FOOTER_CHECKSUM_OFFSET:FOOTER_CHECKSUM_OFFSET + 4] = \
        footer_checksum(bytes(raw)).to_bytes(4, "big")
    return bytes(raw)


def parse_header(raw: bytes):
    return dd_hdr.parse(raw[:HEADER_SIZE].ljust(HEADER_SIZE, b"\0"))


def build_header(**fields) -> bytes:
    fields = dict(fields)
    fields.setdefault("res2", bytes(256))
    fields.setdefault("res1", 0)
    locs = list(fields.get("loc", []))
    while len(locs) < 8:
        locs.append(dict(code=0, data_space=0, data_len=0, res=0, data_offset=0))
    fields["loc"] = locs
    fields["checksum"] = 0
    raw = bytearray(dd_hdr.build(fields))
    raw[HEADER_CHECKSUM_OFFSET:HEADER_CHECKSUM_OFFSET + 4] = \
        header_checksum(bytes(raw)).to_bytes(4, "big")
    return bytes(raw)


def parse_batmap_header(raw: bytes):
    return dd_batmap_hdr.parse(raw[:BATMAP_HEADER_SIZE].ljust(BATMAP_HEADER_SIZE, b"\0"))


def build_batmap_header(batmap_offset: int, batmap_size: int, checksum: int,
                        version: int = BATMAP_VERSION_1_2) -> bytes:
    return dd_batmap_hdr.build(dict(cookie=BATMAP_COOKIE, batmap_offset=batmap_offset,
                                    batmap_size=batmap_size, batmap_version=version,
                                    checksum=checksum, marker=0, keyhash=bytes(65),
                                    reserved=bytes(418)))


def parse_bat(raw: bytes) -> np.ndarray:
    """BAT bytes -> native uint32 array (entries are big-endian sector numbers)."""
    n = len(raw) // 4
    return np.frombuffer(raw[: n * 4], dtype=">u4").astype(np.uint32)


def build_bat(entries: np.ndarray) -> bytes:
    """uint32 entries -> big-endian bytes padded to a sector."""
    raw = np.asarray(entries, dtype=np.uint32).astype(">u4").tobytes()
    return raw + bytes(roundup(len(raw), SECTOR) - len(raw))


def chs_for_size(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors/track) by the VHD specification's algorithm (appendix
    "CHS Calculation"; blktap libvhd.c vhd_chs, qemu vpc.c calculate_geometry)."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def geometry_word(c: int, h: int, s: int) -> int:
    return (c << 16) | (h << 8) | s


def split_geometry(word: int) -> tuple[int, int, int]:
    return word >> 16, (word >> 8) & 0xFF, word & 0xFF


def decode_utf16be_name(raw: bytes) -> str:
    """The header's parent name: UTF-16 BE, NUL-terminated/padded."""
    n = len(raw) - len(raw) % 2
    text = raw[:n].decode("utf-16-be", errors="replace")
    return text.split("\0", 1)[0]


def encode_utf16be_name(name: str) -> bytes:
    raw = name.encode("utf-16-be")[:512]
    return raw + bytes(512 - len(raw))
