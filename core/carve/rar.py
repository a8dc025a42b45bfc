"""RAR archive carving: RAR 1.5-4.x and RAR 5, also inside self-extracting executables.

Signatures are found with numpy over windows of any ByteSpace; from each, the block headers are
walked with their CRCs checked (RAR 4: 16-bit header CRC over the part rarfile says it covers;
RAR 5: CRC-32 of the whole header) up to the end-of-archive block. Every size read from disk is
checked against what remains of the space before it moves the walk, each step moves forward by
at least 7 bytes and the number of blocks is capped, so a fuzzed archive cannot hang the walk.

The listing gives each file's name (RAR 4 names decoded from OEM, UTF-8 or the compressed
Unicode encoding), unpacked size and CRC-32. A damaged archive keeps everything before its
first bad header and names that header; an archive with encrypted headers (RAR 4 MAIN flag
0x80, RAR 5 archive-encryption block) is reported as such - its end cannot be found without
the password, so its carved range runs to the next archive signature or the end of the data,
and says so.

The walk of one archive's headers is core.carve.rar_walk (its names stay importable from here);
this module finds the signatures, verifies them as scan kinds and writes the carved archives.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from core.bytesearch import find_all
from core.carve.rar_walk import (  # noqa: F401 (importable from here, as before)
    MAX_BLOCKS, RAR5_VOLUME_PADDING, RarArchive, RarFileEntry, ReadFn, walk_archive)
from core.carve.windows import DEFAULT_WINDOW, space_windows
from core.kinds import Kind, Verdict
from core.errors import Cancelled, SrsalvageError, UnsafeError
from core.output import AtomicOutput
from core.progress import ProgressFn, Ticker
from core.spaces import ByteSpace
from core.structs.rar import RAR5_ID, RAR_ID, RAR_SIG_PREFIX

ENCRYPTED_CARVE_LIMIT = 256 << 20  # how far an archive with encrypted headers is carved at most
MAX_ARCHIVES = 100_000             # archives kept in one carve result


# -- scan kinds ---------------------------------------------------------------------------------
def _verify(data: bytes, offset: int, read: ReadFn) -> Verdict | None:
    arc = walk_archive(read, offset)
    if arc is None:
        return None
    return Verdict(arc.complete or (arc.encrypted_headers and arc.first_bad_header is None),
                   max(arc.bytes, 8), {
                       "version": arc.version, "complete": arc.complete,
                       "files": len(arc.files), "encrypted_headers": arc.encrypted_headers,
                       "volume": arc.volume, "first_bad_header": arc.first_bad_header})


RAR4_KIND = Kind(
    name="rar4", description="RAR 1.5-4.x archive (headers walked, CRCs checked)",
    verify=_verify, magic=RAR_ID, align=1, length=64, default=False, group="carve")
RAR5_KIND = Kind(
    name="rar5", description="RAR 5 archive (headers walked, CRCs checked)",
    verify=_verify, magic=RAR5_ID, align=1, length=64, default=False, group="carve")


# -- carving ------------------------------------------------------------------------------------
SIG_OVERLAP = 8        # a window runs this far past its own part (the longest signature)


def signatures_in_window(base: int, view: np.ndarray, own: int) -> Iterator[tuple[int, int]]:
    """(offset, version) of the RAR signatures starting in view[:own] (the view at absolute
    `base`). One window of find_signatures, also fed by the evidence index's one pass."""
    # libc memmem over the window's own memory (core.bytesearch: ~6 GB/s, twice `re`);
    # the shared prefix once, the version byte(s) after it on the rare hits. Only starts
    # below `own` belong to this window: the search stops short of the overlap.
    view = view[: own + SIG_OVERLAP]
    prefix_end = min(len(view), own + len(RAR_SIG_PREFIX) - 1)
    for rel in find_all(view[:prefix_end], RAR_SIG_PREFIX).tolist():
        tail = bytes(view[rel + 6: rel + 8])
        if tail[:1] == b"\x00":
            yield base + rel, 4
        elif tail == b"\x01\x00" or tail == b"\x01":
            yield base + rel, 5


def find_signatures(space: ByteSpace, start: int = 0, end: int | None = None,
                    cancel: threading.Event | None = None, progress: ProgressFn | None = None,
                    window: int = DEFAULT_WINDOW) -> Iterator[tuple[int, int]]:
    """(offset, version) of every RAR 4 / RAR 5 signature in [start, end), in order."""
    end = space.size if end is None else min(end, space.size)
    ticker = Ticker(max(0, end - start), "rar signatures", progress, cancel)
    for base, view, own in space_windows(space, start, end, window=window, overlap=SIG_OVERLAP,
                                           align=512):
        ticker.tick(max(0, base - start))
        yield from signatures_in_window(base, view, own)
    ticker.done()


@dataclass
class RarCarveResult:
    archives: list[RarArchive]
    scanned: int
    archives_not_kept: int = 0      # beyond MAX_ARCHIVES (a pathological source)

    def to_json(self) -> dict[str, Any]:
        return {"archives": [a.to_json() for a in self.archives], "scanned": self.scanned,
                "archives_not_kept": self.archives_not_kept}


def carve_rar(space: ByteSpace, out_dir: str | None, evidence_paths: Iterable[str] = (),
              cancel: threading.Event | None = None, progress: ProgressFn | None = None,
              start: int = 0, end: int | None = None,
              window: int = DEFAULT_WINDOW,
              signatures: Iterable[tuple[int, int]] | None = None) -> RarCarveResult:
    """Find, walk and (when out_dir is given) write out every RAR archive in the space.
    `signatures`: (offset, version) in offset order from an earlier pass over the same space
    (the evidence index) instead of a search."""
    end = space.size if end is None else min(end, space.size)
    evidence_paths = list(evidence_paths)
    archives: list[RarArchive] = []
    dropped = 0
    # signatures are walked as the scan yields them (one look-ahead: an archive with encrypted
    # headers is carved up to the next signature), so memory does not grow with their number
    sigs = iter(signatures) if signatures is not None else \
        find_signatures(space, start, end, cancel, progress, window)
    current = next(sigs, None)
    container: tuple[int, int] | None = None    # (offset, end) of the last walked archive
    while current is not None:
        following = next(sigs, None)
        offset = current[0]
        arc = walk_archive(space.read, offset, end)
        if arc is not None:
            if not arc.end_known:
                nxt = following[0] if following is not None else end
                arc.bytes = max(arc.bytes,
                                min(nxt, end, offset + ENCRYPTED_CARVE_LIMIT) - offset)
            # a signature inside a walked archive's data (a stored archive, a RAR 2 recovery
            # record's copy of the headers) is carved too, and said to be nested
            if container is not None and offset < container[1] and arc.end_known:
                arc.inside = container[0]
            elif arc.end_known and arc.bytes > len(RAR_ID):
                container = (offset, offset + arc.bytes)
            if len(archives) < MAX_ARCHIVES:
                archives.append(arc)
            else:
                dropped += 1
        current = following
    if out_dir is not None:
        write_archives(space, archives, out_dir, evidence_paths, cancel)
    return RarCarveResult(archives, end - start, dropped)


def write_archives(space: ByteSpace, archives: list[RarArchive], out_dir: str,
                   evidence_paths: Iterable[str] = (),
                   cancel: threading.Event | None = None) -> None:
    """Write each archive's byte range to OUT_DIR/at-<offset>.rar (sets `path`)."""
    if not archives:
        return
    os.makedirs(out_dir, exist_ok=True)
    for arc in archives:
        arc.path = os.path.join(out_dir, f"at-{arc.offset}.rar")
        try:
            _write_range(space, arc.offset, arc.bytes, arc.path, list(evidence_paths), cancel)
        except (Cancelled, UnsafeError):
            raise
        except SrsalvageError as exc:      # one archive that cannot be written stops no other
            arc.write_error, arc.path = str(exc), None


def _write_range(space: ByteSpace, offset: int, length: int, path: str,
                 evidence_paths: list[str], cancel: threading.Event | None) -> None:
    chunk = 4 << 20
    ticker = Ticker(length, "writing archive", None, cancel)
    with AtomicOutput(path, evidence_paths) as out:
        pos = 0
        while pos < length:
            ticker.tick(pos)
            data = space.read(offset + pos, min(chunk, length - pos))
            if not data:
                break
            out.write(data)
            pos += len(data)
