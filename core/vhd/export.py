"""Export a VDI: the VHD file as XenServer held it (compact), or the flat virtual disk (raw).

`export_vhd` writes footer copy, header, BAT, batmap, locators and blocks as they are in the LV
(`[0, end of last block)`), then the primary footer right after the last block — the layout of
a VHD *file* (blktap rewrites the footer after the last block of a file; qemu does too), so a
qemu-layout VHD that was copied into an LV comes out byte-identical. Repairs (repair.py) are
patched into the stream, never into the evidence.

`export_raw` writes `virtual_size` bytes, flattened through the chain, sparse: absent and
all-zero blocks are skipped with a seek (the file is truncated to its size at the end). Both go
through core.output.AtomicOutput (`OUT.part`, renamed when complete) and return size + sha256.
"""

from __future__ import annotations

import copy
import hashlib
import os
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from core.errors import SrsalvageError
from core.output import AtomicOutput
from core.progress import ProgressFn, Ticker
from core.spaces import ByteSpace
from core.structs import vhd as S
from core.vhd.chain import Chain
from core.vhd.reader import VhdImage
from core.vhd.repair import plan_repair

COPY_CHUNK = 8 << 20
MAX_RAW_EXPORT = 2 << 40
WINDOWS_PAD_MAX = 64 << 10  # keep a producer's padding before its footer up to this much


class _BackgroundHash:
    """sha256 fed from a bounded queue by a second thread: hashlib releases the GIL on large
    buffers, so hashing overlaps the reads and writes (memory: at most `depth` chunks)."""

    def __init__(self, depth: int = 8) -> None:
        self._h = hashlib.sha256()
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._t = threading.Thread(target=self._run, name="export-sha256", daemon=True)
        self._t.start()
        self._done = False

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            self._h.update(item)

    def update(self, data: bytes) -> None:
        self._q.put(data)

    def hexdigest(self) -> str:
        if not self._done:
            self._q.put(None)
            self._t.join()
            self._done = True
        return self._h.hexdigest()

    def __enter__(self) -> "_BackgroundHash":
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self._q.put(None)
            self._t.join()
            self._done = True


class _NoHash:
    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return ""

    def __enter__(self) -> "_NoHash":
        return self

    def __exit__(self, *exc) -> None:
        pass


@dataclass
class ExportResult:
    path: str
    format: str
    bytes: int
    sha256: str
    repairs: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)
    ranges: list[dict] = field(default_factory=list)     # core.provenance.export_provenance
    taken: list[dict] = field(default_factory=list)      # extents a newer LV took
    # filled by core.vdi_export.export_vdi (not part of the `export --json` document, which
    # names the unreadable ranges itself): the exported virtual-disk ranges read from
    # unreadable evidence, and the whole result in lines for a person
    unreadable_virtual: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def untrusted(self) -> list[dict]:
        return untrusted(self.ranges)

    def to_json(self) -> dict:
        return {"path": self.path, "format": self.format, "bytes": self.bytes,
                "sha256": self.sha256, "repairs": self.repairs, "unrepaired": self.unrepaired,
                "untrusted": self.untrusted, "taken_extents": self.taken,
                "ranges": self.ranges}


def _patch(chunk: bytearray, chunk_off: int, patches: list[tuple[int, bytes]]) -> None:
    end = chunk_off + len(chunk)
    for off, data in patches:
        if off < end and off + len(data) > chunk_off:
            a = max(off, chunk_off)
            b = min(off + len(data), end)
            chunk[a - chunk_off: b - chunk_off] = data[a - off: b - off]


def export_vhd(img: VhdImage, out_path: str, evidence_paths=(), overwrite: bool = False,
               cancel: threading.Event | None = None, progress: ProgressFn | None = None
               ) -> ExportResult:
    """The VHD file: repaired where needed, compact (footer right after the last block)."""
    plan = plan_repair(img)
    if img.disk_type == S.HD_TYPE_FIXED:
        body_end = img.virtual_size
        patches: list[tuple[int, bytes]] = []
    else:
        if img.header is None:
            from core.vhd.reader import VhdError
            raise VhdError(f"{img.name or 'VHD'}: no usable dynamic header; cannot write a VHD "
                           f"(try --format raw only after repairing the header by hand)")
        if not img.usable:
            from core.vhd.reader import VhdError
            raise VhdError(f"{img.name or 'VHD'}: VHD structures too damaged to write a VHD "
                           f"({', '.join(f.kind for f in img.findings if f.severity == 'error')})"
                           f"; see `srsalvage check`")
        body_end = plan.data_end
        if body_end > img.space.size:
            from core.vhd.reader import VhdError
            raise VhdError(f"{img.name or 'VHD'}: the dynamic header places metadata or blocks up "
                           f"to byte {body_end}, past the end of the {img.space.size}-byte volume "
                           f"(damaged header; see `srsalvage check`); not writing a VHD")
        gap = (img.footer_offset or 0) - body_end
        if img.footer.crtr_app != S.CREATOR_TAP and img.footer_source != "copy" \
                and 0 < gap <= WINDOWS_PAD_MAX and gap % 512 == 0:
            body_end = img.footer_offset  # the producer's own padding (Windows: 4 KiB multiple)
        patches = [(0, plan.footer_copy), (img.header_offset, plan.header)]
        if plan.bat_changed:
            patches.append((int(img.header.table_offset), S.build_bat(plan.bat)[: 4 * len(plan.bat)]))
        elif img.bat_replaced:
            # the BAT came from core.provenance (entries in an overwritten extent cleared): write
            # every declared entry, never the zeros of the overwritten extent under it
            full = np.full(max(len(plan.bat), min(img.bat_entries_declared, 1 << 20)), S.DD_BLK_UNUSED,
                           dtype=np.uint32)
            full[: len(plan.bat)] = plan.bat
            patches.append((int(img.header.table_offset), S.build_bat(full)[: 4 * len(full)]))
    unrepaired = list(plan.unrepaired)
    if img.header is not None:
        _unmapped_note(img, unrepaired)
    ticker = Ticker(body_end + 512, "export vhd", progress, cancel)
    with AtomicOutput(out_path, evidence_paths, overwrite) as out:
        pos = 0
        while pos < body_end:
            n = min(COPY_CHUNK, body_end - pos)
            chunk = bytearray(img.space.read(pos, n).ljust(n, b"\0"))
            _patch(chunk, pos, patches)
            out.write(bytes(chunk))
            pos += n
            ticker.tick(pos)
        out.write(plan.footer)
        ticker.done()
        digest = out.sha256.hexdigest()
        size = out.bytes_written
    return ExportResult(out_path, "vhd", size, digest, plan.repairs, unrepaired)


def export_raw(source: VhdImage | Chain | ByteSpace, out_path: str, evidence_paths=(),
               overwrite: bool = False, cancel: threading.Event | None = None,
               progress: ProgressFn | None = None, chunk: int | None = None,
               digest: bool = True) -> ExportResult:
    """The flat virtual disk, sparse, flattened through `source`'s chain.

    `digest=False` skips the sha256 (result.sha256 is then ""): only for measuring the copy
    itself in bench/export.py; the command line always reports the digest."""
    repairs: list[str] = []
    unrepaired: list[str] = []
    if isinstance(source, Chain):
        repaired = [_repaired(img, repairs, unrepaired) for img in source.images]
        space = Chain(repaired, source.findings, source.raw_parent).virtual_space()
        leaf = repaired[0]
        unrepaired += [f.message for f in source.findings]
    elif isinstance(source, VhdImage):
        leaf = _repaired(source, repairs, unrepaired)
        space = leaf.virtual_space()
        if source.disk_type == S.HD_TYPE_DIFF:
            unrepaired.append("differencing disk exported without its parent: parent sectors "
                              "read as zeros")
    else:
        space, leaf = source, None
    if chunk is None:
        chunk = leaf.block_size if leaf is not None and leaf.block_size else 2 << 20
        chunk = max(chunk, 1 << 20)
    size = space.size
    if size > MAX_RAW_EXPORT:
        raise SrsalvageError(f"virtual size {size} is beyond the VHD maximum (2 TiB); the "
                             f"footer's size field is damaged — check the VDI first")
    read_opt = getattr(space, "read_opt", None)
    zeros = bytes(chunk)
    h = _BackgroundHash() if digest else _NoHash()
    ticker = Ticker(size, "export raw", progress, cancel)
    with h, AtomicOutput(out_path, evidence_paths, overwrite) as out:
        fd = out.file.fileno()
        pos = 0
        while pos < size:
            n = min(chunk, size - pos)
            data = read_opt(pos, n) if read_opt is not None else space.read(pos, n)
            if data is None:
                h.update(zeros[:n] if n == chunk else bytes(n))
            else:
                if len(data) < n:
                    data = data + bytes(n - len(data))
                _write_nonzero_pages(fd, data, pos)
                h.update(data)
            pos += n
            ticker.tick(pos)
        os.ftruncate(fd, size)
        ticker.done()
    return ExportResult(out_path, "raw", size, h.hexdigest(), repairs, unrepaired)


def _unmapped_note(img: VhdImage, unrepaired: list[str]) -> None:
    from core.vhd.checks import unmapped_blocks
    bad = unmapped_blocks(img)
    if len(bad):
        shown = ", ".join(str(int(b)) for b in bad[:8]) + (" ..." if len(bad) > 8 else "")
        unrepaired.append(f"{img.name or 'VHD'}: {len(bad)} block(s) lie in extents no map "
                          f"places and read as zeros (blocks {shown})")


def _repaired(img: VhdImage, repairs: list[str], unrepaired: list[str]) -> VhdImage:
    """`img` with its BAT repaired (a shallow copy; the image itself is left alone)."""
    if img.header is None:
        return img
    need = -(-img.virtual_size // img.block_size) if img.block_size else 0
    if len(img.bat) < need:
        unrepaired.append(f"{img.name or 'VHD'}: only {len(img.bat)} of the {need} BAT entries "
                          f"the disk size needs could be read (table at "
                          f"{int(img.header.table_offset)}); blocks {len(img.bat)} to {need - 1} "
                          f"read as absent")
    _unmapped_note(img, unrepaired)
    plan = plan_repair(img)
    if not plan.bat_changed:
        return img
    fixed = copy.copy(img)
    fixed.bat = plan.bat
    repairs.extend(r for r in plan.repairs if r.startswith("BAT"))
    unrepaired.extend(plan.unrepaired)
    return fixed


SPARSE_PAGE = 4096  # like qemu-img convert's default -S 4k: all-zero pages become holes


def _write_nonzero_pages(fd: int, data: bytes, pos: int) -> None:
    """pwrite the runs of `data` that are not all-zero 4 KiB pages (numpy over the chunk)."""
    n = len(data)
    pages = n // SPARSE_PAGE
    if pages == 0 or n % 8:
        if any(data):
            os.pwrite(fd, data, pos)
        return
    words = np.frombuffer(data, dtype=np.uint64, count=pages * SPARSE_PAGE // 8)
    nz = words.reshape(pages, SPARSE_PAGE // 8).any(axis=1)
    tail = n - pages * SPARSE_PAGE
    if nz.all():
        os.pwrite(fd, data, pos)
        return
    if tail:
        nz = np.append(nz, any(data[pages * SPARSE_PAGE:]))
    if not nz.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate(([0], nz.view(np.int8), [0]))))
    view = memoryview(data)
    for a, b in zip(edges[::2], edges[1::2]):
        start, stop = int(a) * SPARSE_PAGE, min(n, int(b) * SPARSE_PAGE)
        os.pwrite(fd, view[start:stop], pos + start)


def untrusted(ranges) -> list[dict]:
    """The ranges of an export's provenance (core.provenance) it could not vouch for:
    overwritten, lost or unproven."""
    return [r for r in ranges if r["trust"] in ("overwritten", "lost", "unproven")]
