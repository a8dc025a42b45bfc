"""The disk's previous life: what the extents held before this SR used them.

Disks that become SRs are rarely new: a reinstalled host, an SR recreated on the same LUN, a
disk that carried files. So before the SR's first VDI, every extent gets one of: random bytes
(encrypted or compressed data), text (logs, documents), zeros, or the remnants of VHDs of an
older SR made by the same sm (same pe_start, same 4 MiB grid): heads with a footer copy,
header, BAT pages with real entries and a batmap; block bitmaps on the LVHD lattice; guest data;
old footers of other unique ids at old LV ends. The old VHDs are written with the same libvhd /
tapdisk model (an older SR's LVs over random runs of PEs); then random and text spans are laid
over parts of them, as later use would.
"""

from __future__ import annotations

import random

from .guest import text_blob
from .libvhd import Lv, TapdiskSession, vhd_create, vhd_set_phys_size
from .lvmsr import EXTENT

MiB = 1 << 20


class OldSr:
    """Just enough of an SR for the libvhd model: PE maps over the same grid."""

    def __init__(self, sr):
        self.image = sr.image
        self.extent = sr.extent
        self.pe_offset = sr.pe_offset
        self.maps: dict[str, list[int]] = {}


def old_uid(rng: random.Random) -> bytes:
    raw = bytearray(rng.randbytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def write_previous_life(sr, pe_count: int, rng: random.Random) -> dict:
    """Fill PEs 0..pe_count-1; returns what was put where (for the truth file)."""
    f = sr.image
    kinds: dict[int, str] = {}
    for pe in range(pe_count):
        r = rng.random()
        f.seek(sr.pe_offset(pe))
        if r < 0.45:
            f.write(rng.randbytes(EXTENT))
            kinds[pe] = "random"
        elif r < 0.75:
            f.write(text_blob(rng, EXTENT))
            kinds[pe] = "text"
        else:
            kinds[pe] = "zeros"           # never written (a sparse image reads zeros)
    # older VHDs over runs of PEs
    old = OldSr(sr)
    remnants = []
    free = list(range(pe_count))
    for i in range(rng.randint(2, 5)):
        n = rng.randint(3, 12)
        start = rng.randrange(0, max(1, pe_count - n))
        pes = list(range(start, min(pe_count, start + n)))
        if rng.random() < 0.4 and len(pes) > 3:          # grown in two turns: a jump
            cut = rng.randint(1, len(pes) - 2)
            other = rng.randrange(0, max(1, pe_count - (len(pes) - cut)))
            pes = pes[:cut] + [p for p in range(other, other + len(pes) - cut)
                               if p < pe_count and p not in pes[:cut]]
        name = f"old{i}"
        old.maps[name] = pes
        lv = Lv(old, name)
        uid = old_uid(rng)
        virt = rng.choice((20, 40, 64, 100, 200)) * MiB
        v = vhd_create(lv, virt, uid, rng.randrange(0x20000000, 0x2E000000))
        tap = TapdiskSession(lv, v)
        for _ in range(rng.randint(1, 3 * len(pes))):
            sec = rng.randrange(0, virt // 512 - 256) // 8 * 8
            try:                              # until the old LV is full
                tap.write(sec, rng.randbytes(rng.choice((8, 64, 256)) * 512))
            except ValueError:
                break
        tap.close()
        if rng.random() < 0.5:            # deflated once: an old footer inside the old LV
            vhd_set_phys_size(lv, v, -(-v.phys_size() // EXTENT) * EXTENT)
        remnants.append({"uid": uid.hex(), "pes": pes})
        for p in pes:
            kinds[p] = "old-vhd"
    # later use laid random and text spans over parts of the old VHDs
    for _ in range(rng.randint(1, 4)):
        pe = rng.randrange(pe_count)
        at = sr.pe_offset(pe) + rng.randrange(0, EXTENT, 4096)
        n = rng.randint(1, 64) * 4096
        f.seek(at)
        f.write(rng.randbytes(n) if rng.random() < 0.5 else text_blob(rng, n))
    return {"extents": kinds, "old_vhds": remnants}
