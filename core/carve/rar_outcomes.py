"""What unpacking a carved RAR archive says of each member (core.carve.rar_extract): the
member statuses (JSON `status`), the checks of a member's bytes against what its header stores
(CRC-32, BLAKE2sp), libarchive's error messages sorted into statuses, and the result records
(`MemberResult` per member, `ArchiveExtraction` per archive or volume set).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from core.blake2sp import Blake2sp
from core.carve.rar_walk import RarFileEntry

# member statuses (JSON `status`); `reason` says the detail
OK = "ok"                       # verified and written under its name
DIRECTORY = "directory"         # directory created
BAD_CHECKSUM = "bad-checksum"   # decompressed to its full size, checksum differs
DECOMPRESSION_ERROR = "decompression-error"
TRUNCATED = "truncated"         # the packed data or the decompressed stream ends early
ENCRYPTED = "encrypted"
UNSUPPORTED = "unsupported"     # a method or feature the decompressor does not have
LOST_SOLID = "lost-solid"       # a solid member after a broken one
MISSING_VOLUME = "missing-volume"
LINK = "link"                   # symbolic link / junction: not created
NOT_CREATED = "not-created"     # device, fifo, socket
UNSAFE_NAME = "unsafe-name"
UNVERIFIABLE = "unverifiable"   # no checksum in the header to verify against
WRITE_ERROR = "write-error"
NOT_REACHED = "not-reached"     # the decompressor stopped (or skipped it) before this member


@dataclass
class MemberResult:
    name: str                       # as the archive names it
    size: int                       # unpacked size from the header
    status: str = ""
    reason: str | None = None
    path: str | None = None         # what was written (NAME, NAME~N or NAME.broken)
    bytes_written: int = 0
    sha256: str | None = None       # of what was written
    check: str | None = None        # "crc32", "blake2sp", "crc32+blake2sp", "copy"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "status": self.status,
                "reason": self.reason, "path": self.path, "bytes_written": self.bytes_written,
                "sha256": self.sha256, "check": self.check}


@dataclass
class ArchiveExtraction:
    archive: str                    # the carved archive file
    directory: str                  # where its members went
    members: list[MemberResult] = field(default_factory=list)
    note: str | None = None         # archive-level: why some members could not be reached
    volumes: list[str] = field(default_factory=list)   # a volume set: every volume, in order

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.members:
            out[m.status] = out.get(m.status, 0) + 1
        return out


# -- checks from the header ------------------------------------------------------------------
class _Checks:
    """CRC-32 and BLAKE2sp of the stream, compared with what the member's header stores."""

    def __init__(self, entry: RarFileEntry) -> None:
        self.entry = entry
        self.crc = 0
        self.blake = Blake2sp() if entry.blake2sp else None

    def update(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        if self.blake is not None:
            self.blake.update(data)

    def names(self) -> str | None:
        kinds = (["crc32"] if self.entry.crc32 is not None else []) + \
            (["blake2sp"] if self.entry.blake2sp else [])
        return "+".join(kinds) or None

    def mismatch(self) -> str | None:
        """None when every stored check matches; else what differs."""
        e = self.entry
        if e.crc32 is not None and self.crc != e.crc32:
            return f"CRC-32 {self.crc:08x}, header says {e.crc32:08x}"
        if self.blake is not None and self.blake.hexdigest() != e.blake2sp:
            return f"BLAKE2sp {self.blake.hexdigest()[:16]}..., header says {e.blake2sp[:16]}..."
        return None


def _classify(message: str) -> str:
    low = message.lower()
    if "crc" in low or "checksum" in low:
        return BAD_CHECKSUM
    if "truncat" in low or "premature" in low or "unexpected end" in low:
        return TRUNCATED
    if "encrypt" in low or "password" in low or "passphrase" in low:
        return ENCRYPTED
    if "unsupported block" in low:      # a block header the stream cannot have: damage
        return DECOMPRESSION_ERROR
    if "unsupported" in low or "unavailable" in low or "no support" in low or \
            "not supported" in low:
        return UNSUPPORTED
    return DECOMPRESSION_ERROR
