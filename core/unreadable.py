"""Unreadable sectors carried into the results that depend on them (issue 11 item 6).

`core.source.Evidence` reads an unreadable sector as zeros and records its range. Zeros are a
lie a parser cannot see: a BAT sector that failed reads as an implausible BAT, a bitmap that
failed as "nothing written". Whatever was concluded from those bytes must say so. This module
attaches the recorded ranges to a finished reconstruction (core.match.reconstruct): a finding
per VDI whose extents hold unreadable sectors (those placements' confidence capped, their
notes naming the I/O error), and one for unreadable sectors in extents no VDI was given (a VDI
whose head or BAT lay there may be missing or placed on other evidence). The VHD checks do the
same for one VDI (core.vhd.checks.check_unreadable).
"""

from __future__ import annotations

from typing import Any, Iterable

from core.findings import Finding

SUSPECT_CONFIDENCE = 0.5     # a placement over an unreadable sector is never "certain"


def ranges_text(ranges: Iterable[Iterable[int]], limit: int = 8) -> str:
    ranges = [tuple(r) for r in ranges]
    shown = ", ".join(f"{a}-{b - 1}" for a, b in ranges[:limit])
    return shown + (f" (+{len(ranges) - limit} more)" if len(ranges) > limit else "")


def unreadable_pes(ranges: Iterable[Iterable[int]], data_offset: int, extent_bytes: int,
                   pe_count: int) -> dict[int, list[tuple[int, int]]]:
    """{PE: [unreadable disk ranges inside it]} for the extent grid."""
    out: dict[int, list[tuple[int, int]]] = {}
    for a, b in ranges:
        first = max(0, (a - data_offset) // extent_bytes)
        last = min(pe_count - 1, (b - 1 - data_offset) // extent_bytes)
        for pe in range(int(first), int(last) + 1):
            lo = data_offset + pe * extent_bytes
            out.setdefault(pe, []).append((max(a, lo), min(b, lo + extent_bytes)))
    return out


def annotate_reconstruction(rec: Any, ranges: Iterable[Iterable[int]]) -> list[Finding]:
    """Add findings (and capped confidences) to `rec` for the unreadable `ranges`, and to each
    VDI the LEs that lie on them (`VdiMap.unreadable_les`); returns the findings added. The
    command line and the workstation both call this one."""
    ranges = sorted((int(a), int(b)) for a, b in ranges)
    if not ranges:
        return []
    added: list[Finding] = [Finding(
        "unreadable-sectors", ranges[0][0], "error",
        f"{len(ranges)} unreadable range(s) read as zeros: {ranges_text(ranges)}; VHD "
        f"structures there could not be read, so a VDI may be missing or placed wrongly",
        {"ranges": [list(r) for r in ranges[:256]]})]
    g = rec.grid
    if g is not None and g.extent_bytes:
        bad = unreadable_pes(ranges, g.data_offset, g.extent_bytes, max(1, g.pe_count))
        owned: set[int] = set()
        for v in rec.vdis:
            hit = []
            for i, (le, p) in enumerate(v.extents):
                if p.pe in bad:
                    owned.add(p.pe)
                    hit.append(le)
                    p.confidence = min(p.confidence, SUSPECT_CONFIDENCE)
                    p.note = ((p.note + "; ") if p.note else "") + \
                        f"unreadable sectors in PE {p.pe}: {ranges_text(bad[p.pe], 3)}"
            # every VDI says which of its LEs read zeros for errors (`unreadable_les` in the
            # map document, [] for none): zeros there are no evidence of a clear bitmap or of
            # a free extent
            v.unreadable_les = sorted(hit)
            if hit:
                added.append(Finding(
                    "vdi-unreadable-extents", None, "error",
                    f"{v.key}: LE(s) {', '.join(map(str, hit[:16]))} lie on extents with "
                    f"unreadable sectors (read as zeros); their placement and content are "
                    f"not certain", {"key": v.key, "les": hit[:256]}))
        loose = sorted(set(bad) - owned)
        if loose:
            added.append(Finding(
                "unreadable-unplaced-extents", g.data_offset + loose[0] * g.extent_bytes,
                "warning",
                f"PE(s) {', '.join(map(str, loose[:16]))} hold unreadable sectors and were "
                f"given to no VDI: a VDI whose header, BAT or footer lay there may be missing",
                {"pes": loose[:256]}))
    rec.findings.extend(added)
    return added
