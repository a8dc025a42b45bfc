"""Where an analysed disk's LVM structures lie: label sectors, PV headers, metadata-area headers,
and every on-disk copy of every metadata generation.

`lvm_places(report)` lists them once (absolute offsets, the construct that describes each, the
bytes it occupies), for the workstation's structure overlay and for any listing that wants
them. The label sector is where the analysis found it (lvm2 accepts sectors 0..3, lib/label/
label.c _find_lvm_header), else lvm2's default sector 1; the pv_header follows the
label_header inside that sector (lib/format_text/layout.h `struct label_header`, `struct
pv_header`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from construct import Construct

from core.structs import lvm as S

if TYPE_CHECKING:
    from core.lvm.analyse import DiskReport


@dataclass(frozen=True)
class Place:
    """One structure on the disk: `struct` describes it (None: a metadata text)."""

    offset: int
    title: str
    length: int
    struct: Construct | None = None


def lvm_places(report: "DiskReport") -> list[Place]:
    """Every LVM structure of the report's VGs that lies on the image (backup files excluded)."""
    label_at = {pv.pv_start: pv.label.offset for pv in report.pvs if pv.label is not None}
    head = S.label_header.sizeof()
    out: list[Place] = []
    for vg in report.volume_groups:
        for pv in vg.pvs:
            if pv.offset is None:     # known from a metadata text only: not on this image
                continue
            if pv.label_found:
                sector = label_at.get(pv.offset, pv.offset + S.DEFAULT_LABELSECTOR * S.SECTOR_SIZE)
                out.append(Place(sector, "LVM label_header", head, S.label_header))
                out.append(Place(sector + head, "LVM pv_header", S.LABEL_SIZE - head, S.pv_header))
            for mda in pv.mda_offsets or [pv.offset + S.DEFAULT_MDA_OFFSET]:
                out.append(Place(mda, "LVM mda_header", S.MDA_HEADER_SIZE, S.mda_header))
        for gen in vg.generations:
            for copy in gen.copies:
                if copy.source == "backup" or copy.offset is None:
                    continue
                out.append(Place(copy.offset, f"LVM metadata seqno {gen.seqno}",
                                 int(copy.length or len(gen.text))))
    return out
