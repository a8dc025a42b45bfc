"""Findings: named, located observations about damage or oddities, returned instead of raised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Finding:
    """One named check result.

    kind      short stable name, e.g. "vhd-footer-checksum" (scripts match on it)
    offset    byte offset the finding is about, in the space named by `space` (None: no place)
    severity  "info" | "warning" | "error"
    message   one line for the technician
    details   kind-specific identifying values (JSON-serialisable)
    space     which address space `offset` is in: "disk", "lv", "vhd", "virtual" ...
    """

    kind: str
    offset: int | None
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    space: str = "disk"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"bad severity {self.severity!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "offset": self.offset,
            "space": self.space,
            "severity": self.severity,
            "message": self.message,
            "details": self.details,
        }
