"""The case's tie to its evidence and its tamper-evident audit log (split out of core/case.py).

`evidence_identity` samples the evidence (size and a sha256 over sampled sectors) so a case is
bound to its evidence by identity, not by path. Each audit entry carries `hash`, the sha256 of
the previous entry's hash and this entry's canonical JSON (`chain_hash`); `verify_chain` finds
the first entry that does not fit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

IDENTITY_SAMPLES = 32          # sampled 4 KiB windows (plus the first 64 KiB and the last 4 KiB)
GENESIS = "0" * 64             # the `prev` of the first audit entry


def evidence_identity(space, size: int | None = None) -> dict[str, Any]:
    """Size and a sha256 over sampled sectors of the evidence: the first 64 KiB, 32 windows of
    4 KiB spread evenly, the last 4 KiB (about 200 KiB read, whatever the size)."""
    size = int(space.size if size is None else size)
    h = hashlib.sha256()
    offsets = [0] + [((size * i) // (IDENTITY_SAMPLES + 1)) & ~4095
                     for i in range(1, IDENTITY_SAMPLES + 1)] + [max(0, size - 4096)]
    for i, off in enumerate(offsets):
        n = 65536 if i == 0 else 4096
        data = space.read(off, min(n, max(0, size - off)))
        h.update(off.to_bytes(8, "big"))
        h.update(data)
    return {"bytes": size, "sample_sha256": h.hexdigest(), "scheme": "v1-64k-32x4k-last4k"}


def canonical(entry: dict[str, Any]) -> bytes:
    """An audit entry without its own `hash`, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str).encode()


def chain_hash(prev: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + canonical(entry)).hexdigest()


def verify_chain(audit: Sequence[dict[str, Any]]) -> tuple[bool, int | None, str]:
    """(ok, index of the first entry that breaks the chain, reason). Entries written before the
    chain existed (no `hash`, at the start of the log) are reported, not trusted."""
    prev = GENESIS
    for i, entry in enumerate(audit):
        if not isinstance(entry, dict) or "hash" not in entry:
            return False, i, f"entry {i} has no hash (written before the chain, or removed)"
        if entry.get("prev") != prev:
            return False, i, f"entry {i} does not follow entry {i - 1} (an entry removed or inserted)"
        if chain_hash(prev, entry) != entry["hash"]:
            return False, i, f"entry {i} was altered (its hash does not match its content)"
        prev = entry["hash"]
    return True, None, f"{len(audit)} entries, chain intact"

