"""`verify`: read the whole evidence once, hash it, compare with the hashes stored with it.

EWF images carry the MD5 (and SHA1/SHA256 where the acquiring tool added them) of the media
they hold; ewfacquire computes them while acquiring. A chunk failing its checksum comes back as
zeros and is reported unreadable (core.evidence.ewf), so a corrupted chunk shows both as a
hash mismatch and as the exact range that cannot be trusted. Raw images have no stored hash:
the computed ones are printed for the technician's notes.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from core.progress import ProgressFn, Ticker

WINDOW = 4 << 20


@dataclass
class VerifyResult:
    path: str
    format: str
    size: int
    stored: dict[str, str]
    computed: dict[str, str]
    unreadable: list[tuple[int, int]]
    mapfile: str | None = None
    header: dict[str, str] = field(default_factory=dict)

    @property
    def mismatched(self) -> list[str]:
        return [k for k, v in self.stored.items() if k in self.computed and self.computed[k] != v]

    @property
    def ok(self) -> bool:
        """Every stored hash matched and nothing was unreadable."""
        return not self.mismatched and not self.unreadable

    def to_json(self) -> dict:
        return {"path": self.path, "format": self.format, "bytes": self.size,
                "stored": self.stored, "computed": self.computed,
                "matched": sorted(k for k in self.stored if self.computed.get(k) == self.stored[k]),
                "mismatched": self.mismatched, "ok": self.ok,
                "unreadable": [list(r) for r in self.unreadable], "mapfile": self.mapfile,
                "header": self.header}


def verify_evidence(ev, cancel: threading.Event | None = None,
                    progress: ProgressFn | None = None) -> VerifyResult:
    """Hash every byte of `ev` (MD5, SHA1 and any other algorithm stored with it)."""
    stored = dict(getattr(ev, "stored_hashes", {}) or {})
    names = ["MD5", "SHA1"] + [k for k in stored if k not in ("MD5", "SHA1")]
    hashers = {}
    for name in names:
        try:
            hashers[name] = hashlib.new(name.lower().replace("-", ""))
        except ValueError:
            continue  # a hash this Python cannot compute: shown as stored, not checked
    ticker = Ticker(ev.size, "verify", progress, cancel)
    for pos, view in ev.windows(0, ev.size, window=WINDOW, skip_holes=False):
        data = view[: min(WINDOW, ev.size - pos)]
        for h in hashers.values():
            h.update(data)
        ticker.tick(pos + len(data))
    ticker.tick(ev.size, force=True)
    return VerifyResult(ev.path, getattr(ev, "format", "raw"), ev.size, stored,
                        {k: h.hexdigest() for k, h in hashers.items()}, list(ev.unreadable),
                        getattr(ev, "mapfile", None),
                        {k: str(v) for k, v in (getattr(ev, "header", {}) or {}).items()})
