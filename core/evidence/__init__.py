"""Evidence as technicians bring it, behind the one read-only Evidence interface (core.source).

`open_image(path, mapfile=None)` is the single way in: it recognises an EWF segment set
(`disk.E01`, by its signature), a split raw image (`disk.001`, `disk.aa`, by the sibling
segments), or else a plain image file or block device; then applies a GNU ddrescue mapfile,
given or found beside the image, whose unfinished areas become unreadable ranges.

Every kind answers the same: `size`, `read()` / `windows()` (pread-style, clipped, unreadable
bytes read as zeros) and `unreadable` (sorted, merged [start, end) disk byte ranges that must
not be trusted: bad sectors met while reading, EWF chunks failing their checksum, areas a
ddrescue mapfile does not mark finished). `format` names the kind; `mapfile` the mapfile used.
"""

from __future__ import annotations

import os

from core.evidence.ddrescue_map import find_mapfile, read_mapfile
from core.evidence.ewf import EwfEvidence, is_ewf
from core.evidence.layers import merge
from core.evidence.split import SplitEvidence, split_segments
from core.source import Evidence

FORMATS = ("raw", "device", "split", "ewf")


def open_image(path: str, mapfile: str | None = None, find_map: bool = True) -> Evidence:
    """Open `path` read-only as whatever it is; SourceError with a one-line reason otherwise.

    mapfile: a ddrescue mapfile to apply; without it one lying beside the image
    (`IMAGE.map`, `IMAGE.mapfile`, `IMAGE.log`) is used unless find_map is False.
    """
    path = os.fspath(path)
    ev: Evidence
    if os.path.isfile(path) and is_ewf(path):
        ev = EwfEvidence(path)
        ev.format = "ewf"
    else:
        segments = split_segments(path) if os.path.isfile(path) else None
        if segments:
            ev = SplitEvidence(segments)
            ev.format = "split"
        else:
            ev = Evidence(path)
            ev.format = "device" if ev.is_block_device else "raw"
    ev.mapfile = None
    try:
        if mapfile is None and find_map:
            mapfile = find_mapfile(path)
        if mapfile is not None:
            apply_mapfile(ev, mapfile)
    except Exception:
        ev.close()
        raise
    return ev


def apply_mapfile(ev: Evidence, mapfile: str) -> None:
    """Mark every area of `ev` that the ddrescue mapfile does not call finished as unreadable.

    An image shorter than the mapfile's domain (ddrescue did not write its unread tail) is read
    to the domain's end: the missing tail reads as zeros and is unreadable (even where the
    mapfile says finished: a truncated copy).
    """
    doc = read_mapfile(mapfile)
    if doc.end > ev.size and not ev.is_block_device:
        # the tail past the file's end reads as zeros in one go (never re-read sector by sector:
        # an aborted rescue of a large disk leaves terabytes unwritten)
        ev._pread_raw = _zeros_past(ev._pread_raw, ev.size)
        tail = [(ev.size, doc.end)]  # whatever the mapfile says: no bytes there
    else:
        tail = []
    ev.size = max(ev.size, doc.end)
    ev.mapfile_unreadable = doc.unreadable(ev.size)
    # merged once: a mapfile of a badly damaged disk lists 100k+ areas
    ev.unreadable = merge(list(ev.unreadable) + ev.mapfile_unreadable + tail)
    ev.mapfile = os.fspath(mapfile)


def _zeros_past(pread, file_size: int):
    """A pread that reads [0, file_size) from the file and zeros after it."""
    def padded(offset: int, length: int) -> bytes:
        if offset >= file_size:
            return bytes(length)
        data = pread(offset, min(length, file_size - offset))
        if len(data) < min(length, file_size - offset):
            return data  # a real short read inside the file: the caller salvages it
        return data + bytes(length - len(data))
    return padded


def open_evidence(path: str, mapfile: str | None = None) -> Evidence:
    """Open `path` read-only; SourceError with a one-line reason when that is impossible.
    Raw images and devices, split raw, EWF (E01) and a ddrescue mapfile (given, or found beside
    the image) are told apart by open_image."""
    return open_image(path, mapfile)
