"""Export one resolved VDI: the strategy (VHD file / flattened virtual disk / LV bytes) decided once.

`export_vdi(resolved, fmt, out, ...)` is what both `srsalvage export` and the workstation's
export call, on a `core.vdi.ResolvedVdi` (from `resolve_vdi` for the command line, from
`resolve_in_generation` for the workstation's possibly edited maps):

* the extents a newer LV took are assessed first (`ResolvedVdi.guard`, core.provenance): an
  overwritten extent is never read;
* `--format vhd`: the VHD as it was in the LV (core.vhd.export.export_vhd), refused (exit 3)
  when a map leaves part of it unplaced unless forced (core.vdi_coverage.refuse_unsafe_map);
* `--format raw` of a volume holding a VHD: the virtual disk flattened through the parents the
  same SR holds (core.vhd.chain), with the same refusal over every image of the chain;
* `--format raw` of a volume without a VHD that is not a VHD LV (a raw VDI `LV-<uuid>`, MGT):
  the LV's own bytes, through the guard;
* anything else (a VHD LV whose VHD cannot be opened, `--format vhd` of a raw LV) is a one-line
  SrsalvageError.

The result is `core.vhd.export.ExportResult` with its per-range provenance filled
(core.provenance.describe_export); `unreadable_virtual(resolved)` names the ranges of what was
exported that come from unreadable evidence.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from core.errors import SrsalvageError
from core.evidence.layers import unreadable_in
from core.progress import ProgressFn
from core.provenance import describe_export, guarded_space, untrusted_lines
from core.spaces import ByteSpace
from core.vdi import ResolvedVdi
from core.vdi_coverage import refuse_unsafe_map
from core.vhd.export import ExportResult, export_raw, export_vhd

FORMATS = ("vhd", "raw")


def export_vdi(resolved: ResolvedVdi, fmt: str, out: str, evidence_paths: Iterable[str] = (),
               overwrite: bool = False, force: bool = False,
               warn: Callable[[str], None] | None = None,
               cancel: threading.Event | None = None,
               progress: ProgressFn | None = None) -> ExportResult:
    """Write the VDI of `resolved` to `out` (`*.part`, renamed when complete)."""
    if fmt not in FORMATS:
        raise SrsalvageError(f"export format {fmt!r}: not one of {', '.join(FORMATS)}")
    evidence = list(evidence_paths)
    vol = resolved.volume
    guard = resolved.guard()   # taken extents: overwritten ones are never read
    img = vol.image()
    if img is None:
        if fmt == "raw" and vol.kind != "vhd":
            result = export_raw(guarded_space(vol.space, guard), out, evidence, overwrite,
                                cancel, progress)
        else:
            raise SrsalvageError(f"{vol.key}: no VHD in this volume ({vol.image_error})")
    elif fmt == "vhd":
        refuse_unsafe_map(resolved, [img], force, warn)
        result = export_vhd(img, out, evidence, overwrite, cancel, progress)
    else:
        known = len(resolved.warnings)
        chain = resolved.chain()
        refuse_unsafe_map(resolved, chain.images, force, warn)
        if warn is not None:
            for w in resolved.warnings[known:]:
                warn(w)
            for f in chain.findings:
                warn(f.message)
        result = export_raw(chain, out, evidence, overwrite, cancel, progress)
    describe_export(result, img, vol.space, guard)
    result.unreadable_virtual = unreadable_virtual(resolved) or []
    result.notes = export_notes(result)
    return result


def export_notes(result: ExportResult) -> list[str]:
    """What an export repaired, could not repair or trust, and held as zeros, in lines."""
    notes = [f"repaired: {r}" for r in result.repairs]
    notes += [f"not repaired: {r}" for r in result.unrepaired]
    notes += [f"untrusted: {line}" for line in untrusted_lines(result.ranges)]
    missing = result.unreadable_virtual
    if missing:
        notes.append("unreadable evidence, held as zeros at virtual bytes: "
                     + ", ".join(f"{a}-{b}" for a, b in missing[:8])
                     + (" ..." if len(missing) > 8 else ""))
    return notes


def exported_space(resolved: ResolvedVdi) -> ByteSpace | None:
    """The byte space an export of `resolved` writes: the flattened virtual disk of its VHD, the
    LV itself for a volume without a VHD that is not a VHD LV; None when it cannot be read."""
    vol = resolved.volume
    known = len(resolved.warnings)   # an export already said what the chain found
    try:
        img = vol.image()
        if img is None:
            return vol.space if vol.kind != "vhd" else None
        return resolved.chain().virtual_space()
    except SrsalvageError:
        return None
    finally:
        del resolved.warnings[known:]


def unreadable_virtual(resolved: ResolvedVdi) -> list[tuple[int, int]] | None:
    """The exported space's ranges that come from unreadable evidence (None: not readable)."""
    space = exported_space(resolved)
    return None if space is None else unreadable_in(space)
