"""The case's edit model (split out of core/case.py): one VDI's hand-edited extent map
(`EditedMap` of `Extent`s, LE = index) and the `Patch` each edit turns into (the slice of the map
it replaced, before and after), so undo and redo are exact and the history stays small.
Malformed JSON raises `CaseError` (one line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import SrsalvageError


class CaseError(SrsalvageError):
    """A case file cannot be used (the message is one line)."""


@dataclass(frozen=True)
class Extent:
    """One logical extent of a VDI: which PE holds it, how sure we are and why."""

    pe: int | None
    confidence: float = 1.0
    source: str = "metadata"

    def to_json(self) -> list[Any]:
        return [self.pe, round(float(self.confidence), 4), self.source]

    @classmethod
    def from_json(cls, item: Any) -> "Extent":
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise CaseError(f"bad extent entry {item!r}")
        pe, conf, source = item
        if pe is not None and (not isinstance(pe, int) or isinstance(pe, bool) or pe < 0):
            raise CaseError(f"bad PE {pe!r}")
        if not isinstance(conf, (int, float)) or not 0.0 <= float(conf) <= 1.0:
            raise CaseError(f"bad confidence {conf!r}")
        if not isinstance(source, str) or len(source) > 32:
            raise CaseError(f"bad extent source {source!r}")
        return cls(pe, float(conf), source)


@dataclass
class Patch:
    """Extents [start, start+len(before)) of VDI `vdi` were replaced by `after`."""

    vdi: str
    start: int
    before: list[Extent]
    after: list[Extent]
    action: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"vdi": self.vdi, "start": self.start, "action": self.action, "detail": self.detail,
                "before": [e.to_json() for e in self.before],
                "after": [e.to_json() for e in self.after]}

    @classmethod
    def from_json(cls, doc: Any) -> "Patch":
        if not isinstance(doc, dict):
            raise CaseError("bad history entry")
        try:
            start = doc["start"]
            if not isinstance(start, int) or start < 0:
                raise CaseError("bad history start")
            return cls(str(doc["vdi"]), start, [Extent.from_json(e) for e in doc["before"]],
                       [Extent.from_json(e) for e in doc["after"]], str(doc["action"]),
                       str(doc.get("detail", "")))
        except (KeyError, TypeError) as exc:
            raise CaseError(f"bad history entry: {exc}") from None


@dataclass
class EditedMap:
    """The edited extent map of one VDI (LE = index): the technician's map, kept in the case
    (not core.match.result.VdiMap, the map a reconstruction rebuilt)."""

    key: str
    extents: list[Extent]
    origin: str = ""          # where the map started from, e.g. "generation 12" or "reconstruct"

    @property
    def pes(self) -> list[int | None]:
        return [e.pe for e in self.extents]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "origin": self.origin,
                "extents": [e.to_json() for e in self.extents]}

    @classmethod
    def from_json(cls, doc: Any) -> "EditedMap":
        if not isinstance(doc, dict) or not isinstance(doc.get("extents"), list):
            raise CaseError("bad VDI map")
        return cls(str(doc.get("key", "")), [Extent.from_json(e) for e in doc["extents"]],
                   str(doc.get("origin", "")))


def _manual(e: Extent) -> Extent:
    """An extent the technician placed by hand."""
    return Extent(e.pe, 1.0, "manual") if e.pe is not None else e
