"""The technician's fixed LE -> PE pairs (`reconstruct --fix`), pinned as hard constraints
before the solver runs. Split out of core/match/reconstruct.py unchanged.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from core.errors import SrsalvageError
from core.escape import terminal_line
from core.match.assign import FREE, RESERVED, Placement, VdiState
from core.match.features import SECTOR
from core.match.result import _state_key


class FixError(SrsalvageError):
    """A `--fix KEY:LE=PE` that cannot apply: unknown VDI, LE or PE out of range, or a PE that
    another VDI (or another LE) holds. The command line prints it as one line, exit 2."""


def _le_limit(v: VdiState, E: int) -> int:
    """How many LEs VDI v's LV can have: its metadata's count, else the largest LV sm gives a
    VHD of its virtual size (or the VHD's own length, whichever is larger)."""
    if v.metadata_map and v.le_count is not None:
        return v.le_count
    a = v.anchor
    if a is None:
        return max([v.le_count or 0] + [le + 1 for le in v.placed])
    from core.match.predict import sm_inflated_bytes
    longest = max(sm_inflated_bytes(a, E) or 0, a.data_end + SECTOR,
                  a.meta_end + a.current_size + a.entries_needed * SECTOR + SECTOR)
    return max(-(-longest // E), v.le_count or 0)


def _apply_fixes(fixed: Mapping[str, Mapping[int, int]], states: list[VdiState],
                 owner: np.ndarray, N: int, E: int,
                 taken: Mapping[int, tuple[str, int]] | None = None) -> None:
    """Pin the technician's LE -> PE pairs as hard constraints. One VDI's fix changes that VDI
    only (its own placement of that PE at another LE is dropped; the solver then decides what
    depends on it); a PE another VDI holds, or one fixed twice, is an error - never two
    placements of one PE."""
    seen: dict[int, tuple[str, int]] = {}
    for key, pairs in fixed.items():
        v = next((s for s in states if _state_key(s) == key or s.lv_name == key
                  or (s.anchor is not None and key.lower() == f"vhd:{s.anchor.uid_str}")), None)
        if v is None:
            keys = ", ".join(_state_key(s) for s in states[:6])
            raise FixError(f"--fix {terminal_line(key)}: no VDI with that key"
                           + (f" (keys: {keys}{', ...' if len(states) > 6 else ''})"
                              if states else ""))
        limit = _le_limit(v, E)
        for le, pe in pairs.items():
            le, pe = int(le), int(pe)
            if not 0 <= pe < N:
                raise FixError(f"--fix {key}:{le}={pe}: no such PE (the grid has {N})")
            if not 0 <= le < limit:
                raise FixError(f"--fix {key}:{le}={pe}: LE {le} is out of range "
                               f"(its LV has at most {limit} extents)")
            if pe in seen and seen[pe] != (key, le):
                raise FixError(f"--fix {key}:{le}={pe}: PE {pe} is already fixed as "
                               f"{seen[pe][0]} LE {seen[pe][1]}")
            seen[pe] = (key, le)
            holder = int(owner[pe])
            if holder == RESERVED or (holder >= 0 and holder != v.index):
                what = "a volume that is not a VDI (MGT or a raw LV)" if holder == RESERVED \
                    else _state_key(states[holder])
                raise FixError(f"--fix {key}:{le}={pe}: PE {pe} belongs to {what}; fix that "
                               f"VDI's placement first")
            other = (taken or {}).get(pe)
            if other is not None and other[0] != _state_key(v):
                raise FixError(f"--fix {key}:{le}={pe}: PE {pe} belongs to {other[0]} (its LE "
                               f"{other[1]}); fix that VDI's placement first")
            for ole, pl in list(v.placed.items()):
                if pl.pe == pe and ole != le:
                    del v.placed[ole]
            old = v.placed.get(le)
            if old is not None and owner[old.pe] == v.index and old.pe != pe:
                owner[old.pe] = FREE
            owner[pe] = v.index
            v.placed[le] = Placement(pe, 1.0, "manual", None)
