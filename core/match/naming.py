"""The MGT volume found by its header when no metadata maps it: the SR's live VDI uuids and
what sm records of each (core.match.names turns them into LV names).
Split out of core/match/reconstruct.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.findings import Finding
from core.xen_names import UUID_RE


def _find_mgt(ev, feats, D: int, E: int, findings: list[Finding]) -> dict[str, Any] | None:
    """The first PE that starts with sm's `XSSM:` header: the MGT volume (4 MiB, one extent of
    4 MiB), parsed for the SR uuid and its VDI slots."""
    from core.xen import MGT_BYTES, parse_mgt
    cand = np.nonzero(feats.head_xssm)[0] if feats.head_xssm is not None else []
    if not len(cand) or E < MGT_BYTES:
        return None
    pe = int(cand[0])
    content = parse_mgt(ev.read(D + pe * E, MGT_BYTES), D + pe * E)
    findings.extend(content.findings)
    if not content.header_ok:
        return None
    if len(cand) > 1:
        findings.append(Finding("mgt-several", D + int(cand[1]) * E, "warning",
                                f"{len(cand)} PEs start with an MGT header; PE {pe} taken, the "
                                f"others are stale copies", {"pes": [int(c) for c in cand[:16]]}))
    live = [v for v in content.vdis if not v.deleted]
    return {"pe": pe, "sr_uuid": content.sr_uuid, "sr_name_label": content.sr_name_label,
            "allocation": content.allocation, "vdi_slots": len(content.vdis),
            "live_vdis": len(live),
            "vdi_uuids": [v.uuid.lower() for v in live if v.uuid and UUID_RE.fullmatch(v.uuid)],
            # what sm records of each (srmetadata.py): names the VHDs (core.match.names)
            "vdi_records": [{**v.fields, "uuid": v.uuid.lower(), "name_label": v.name_label}
                            for v in live if v.uuid and UUID_RE.fullmatch(v.uuid)]}
