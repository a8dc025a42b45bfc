"""LVM2's CRC-32 variant (formats.md 2.2, pitfall 1).

lvm2 `lib/misc/crc.c` (calc_crc) is the reflected CRC-32 with polynomial 0xEDB88320, started
at INITIAL_CRC = 0xF597A6CF (`lib/misc/crc.h`) and returned **without** the final XOR.  zlib's
crc32 inverts its argument on entry and its result on exit, so pre- and post-inverting gives
LVM's register value at C speed.  Used for the label sector (bytes 20..511), the mda header
(bytes 4..511) and every metadata text copy.
"""

from __future__ import annotations

import zlib

INITIAL_CRC = 0xF597A6CF  # lvm2 lib/misc/crc.h INITIAL_CRC


def lvm_crc(data: bytes | bytearray | memoryview, init: int = INITIAL_CRC) -> int:
    """LVM's checksum of `data`; `init` chains a previous result (wrapped copies, two parts)."""
    return zlib.crc32(data, init ^ 0xFFFFFFFF) ^ 0xFFFFFFFF
