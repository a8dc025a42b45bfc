"""Unpacking carved RAR archives: every member whose data decompresses and whose own checksum
verifies is written under its name; nothing else is.

Decompression is libarchive's (through `libarchive-c`), never ours. What libarchive returns is
not trusted: each member's bytes are checked here against the member's header as our walk read
it (core.carve.rar: CRC-32 for RAR 4 and RAR 5, BLAKE2sp for RAR 5 when the header carries one,
and the unpacked size), and the output is bounded by that size, so a damaged or hostile archive
cannot make the decompressor fill the disk.

Member names are hostile input. They are cut into components; `..`, NUL and names that end up
empty are refused, a leading `/` or drive letter is dropped (as bsdtar and unrar do); every
directory on the way is opened relative to the previous one with O_NOFOLLOW, so nothing is ever
written through a symbolic link, and links or device files from the archive are never created
(a RAR 5 hard link or file copy is written as a copy of its verified target). Data goes to
`NAME.part` and is renamed to NAME only when verified; with `keep_broken` (unrar's -kb) what was
decompressed of a failed member is kept as `NAME.broken`. An existing file is never
overwritten: a second member of one name is written as `NAME~2`.

Solid archives decompress as one stream: when a member breaks, the later members that depend on
it are said to be lost because of it. A member split across volumes says which part is missing.

Beside this module: core/carve/rar_names.py (hostile names, writing without following links),
core/carve/rar_volumes.py (volume sets), core/carve/rar_outcomes.py (member statuses, the
checks against the header, the result records); their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import zlib
from typing import Iterable

from core.carve.rar import RarArchive, RarFileEntry, walk_archive
from core.carve.rar_names import (_NOFOLLOW, _DIRFLAGS, UnsafeName, _free_bytes,  # noqa: F401
                                  _MemberOutput, _open_dir, _ZeroPadded, printable,
                                  safe_components)
from core.carve.rar_outcomes import (  # noqa: F401 (the statuses stay importable from here)
    BAD_CHECKSUM, DECOMPRESSION_ERROR, DIRECTORY, ENCRYPTED, LINK, LOST_SOLID, MISSING_VOLUME,
    NOT_CREATED, NOT_REACHED, OK, TRUNCATED, UNSAFE_NAME, UNSUPPORTED, UNVERIFIABLE, WRITE_ERROR,
    ArchiveExtraction, MemberResult, _Checks, _classify)
from core.carve.rar_volumes import Piece, _join, join_volumes, volume_sets  # noqa: F401
from core.errors import SrsalvageError
from core.progress import ProgressFn, Ticker
from core.structs.rar import RAR5_XREDIR_FILE_COPY, RAR5_XREDIR_HARD_LINK

CHUNK = 1 << 20                 # bytes asked of the decompressor per call
MAX_REOPENS = 10_000            # bounds the reopen-and-skip passes over one archive
READ_AHEAD_PADDING = 4096       # zeros after an archive that ends early (see _reader)


# -- libarchive ----------------------------------------------------------------------------------
def require_libarchive():
    try:
        import libarchive
        from libarchive import ffi
        from libarchive.exception import ArchiveError
    except (ImportError, OSError, AttributeError) as exc:
        raise SrsalvageError(f"extraction needs libarchive (pip libarchive-c, Debian "
                             f"libarchive13): {exc}") from None
    # its warnings go through `logging` (to stderr without a handler): ours say them instead
    log = logging.getLogger("libarchive")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return libarchive, ffi, ArchiveError


def _error_text(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return " ".join(str(msg).split())


def _matches(entry: RarFileEntry, libname: str | None) -> bool:
    if libname is None:
        return False
    libname = libname.replace("\\", "/").rstrip("/") if "\\" not in entry.name else libname
    if libname == entry.name:
        return True
    # libarchive names older versions `name;N` (RAR 4 stores that name, RAR 5 a VERSION record)
    return entry.old_version and libname.startswith(entry.name + ";")


class _Extractor:
    def __init__(self, paths: list[str], arc: RarArchive, out_dir: str, keep_broken: bool,
                 cancel: threading.Event | None, progress: ProgressFn | None,
                 max_member_bytes: int | None) -> None:
        self.paths, self.arc, self.keep_broken = paths, arc, keep_broken
        path = paths[0]
        self.max_member_bytes = max_member_bytes
        self.libarchive, self.ffi, self.ArchiveError = require_libarchive()
        self.result = ArchiveExtraction(path, out_dir,
                                        [MemberResult(f.name, f.size) for f in arc.files])
        # verified members by name: (directories, leaf written), for hard links and copies
        self.written: dict[str, tuple[list[str], str]] = {}
        self.first_broken: str | None = None
        total = sum(f.size for f in arc.files if not f.is_dir)
        self.ticker = Ticker(total, "extracting", progress, cancel)
        self.done_bytes = 0
        self.buf = ctypes.create_string_buffer(CHUNK)
        try:
            os.makedirs(out_dir, exist_ok=True)
            self.root_fd = os.open(out_dir, _DIRFLAGS)     # not through a link either
        except OSError as exc:
            raise SrsalvageError(f"cannot unpack into {out_dir}: {exc.strerror}") from None

    # which members libarchive is never asked for
    def _classify_upfront(self, i: int) -> bool:
        e, m = self.arc.files[i], self.result.members[i]
        if e.encrypted:
            m.status, m.reason = ENCRYPTED, "data encrypted (no password is tried)"
        elif e.split_before or e.split_after:
            where = []
            first = 0 if self.arc.first_volume else self.arc.volume_number
            last = None if first is None else first + len(self.paths) - 1
            if e.split_before:
                where.append("its beginning is in the volume before" +
                             ("" if first is None else f" volume {first + 1}"))
            if e.split_after:
                where.append("its rest is in the volume after" +
                             ("" if last is None else f" volume {last + 1}"))
            m.status = MISSING_VOLUME
            m.reason = f"split across volumes: {' and '.join(where)}, not found"
        elif e.redirect is not None and e.redirect[0] not in (RAR5_XREDIR_HARD_LINK,
                                                               RAR5_XREDIR_FILE_COPY):
            m.status = LINK
            m.reason = f"link to {printable(e.redirect[1])!r}: links are not created"
        else:
            return False
        return True

    def run(self) -> ArchiveExtraction:
        try:
            pending = [i for i in range(len(self.arc.files)) if not self._classify_upfront(i)]
            stop: str | None = None
            # a fatal libarchive error ends a pass; the next pass reopens the archive and
            # skips what is done, so one broken member does not take the rest of a non-solid
            # archive with it. Every pass that goes on settles at least one member.
            for _ in range(MAX_REOPENS):
                before = len(pending)
                stop = self._pass(pending)
                pending = [i for i in pending if not self.result.members[i].status]
                if stop is None or not pending or len(pending) == before:
                    break
            self._unreached(pending, stop)
            self.ticker.done()
        finally:
            os.close(self.root_fd)
        return self.result

    def _unreached(self, pending: list[int], why: str | None) -> None:
        for i in pending:
            m = self.result.members[i]
            if self.first_broken is not None and self.arc.files[i].solid:
                m.status = LOST_SOLID
                m.reason = (f"solid archive: decompression cannot pass the broken member "
                            f"{printable(self.first_broken)!r}")
            elif why is None:
                m.status, m.reason = NOT_REACHED, "the decompressor did not return this member"
            else:
                kind = _classify(why)
                m.status = kind if kind in (UNSUPPORTED, ENCRYPTED) else NOT_REACHED
                m.reason = f"the decompressor stopped before it: {why}"

    def _pass(self, pending: list[int]) -> str | None:
        """One libarchive pass over the archive; members already done are skipped (libarchive
        skips their data without decompressing it, except in solid archives). Returns why the
        pass stopped early (a fatal libarchive error), None at the archive's end."""
        fmt = "rar5" if self.arc.version == 5 else "rar"
        todo = set(pending)
        cursor = 0                          # next member index libarchive's entries pair with
        files = self.arc.files
        try:
            with self._reader(fmt) as reader:
                archive_p = reader._pointer
                for entry in reader:
                    self.ticker.check()
                    name = entry.pathname
                    j = next((k for k in range(cursor, len(files))
                              if _matches(files[k], name)), None)
                    if j is None:
                        if cursor >= len(files):
                            break
                        j = cursor          # a name we decode differently: by position
                    cursor = j + 1
                    if j not in todo:
                        continue
                    fatal = self._member(j, entry, archive_p)
                    if fatal is not None:
                        return fatal
        except self.ArchiveError as exc:
            return f"libarchive: {_error_text(exc)}"
        return None

    @contextlib.contextmanager
    def _reader(self, fmt: str):
        """libarchive over the archive file, or over a volume set's files in order
        (archive_read_open_filenames, which libarchive-c does not wrap: called through its
        ctypes handle, as libarchive's own bsdtar -x of several volumes would)."""
        if len(self.paths) == 1 and self.arc.complete:
            with self.libarchive.file_reader(self.paths[0], format_name=fmt) as reader:
                yield reader
            return
        if len(self.paths) == 1:
            # an archive that ends early (at a bad header, or where the source ends) is read
            # with zeros after it: libarchive's RAR 5 reader reads ahead past a member's data
            # and gives nothing for a member whose data ends exactly at the end of the file.
            # The zeros are never taken for data unnoticed: every member is checked here.
            with open(self.paths[0], "rb") as f, \
                    self.libarchive.stream_reader(_ZeroPadded(f, READ_AHEAD_PADDING),
                                                  format_name=fmt) as reader:
                yield reader
            return
        from libarchive.read import ArchiveRead, new_archive_read
        open_filenames = self.ffi.libarchive.archive_read_open_filenames
        open_filenames.argtypes = [self.ffi.c_archive_p, ctypes.POINTER(ctypes.c_char_p),
                                   ctypes.c_size_t]
        open_filenames.restype = ctypes.c_int
        names = (ctypes.c_char_p * (len(self.paths) + 1))(
            *[os.fsencode(p) for p in self.paths], None)
        with new_archive_read(fmt) as archive_p:
            if open_filenames(archive_p, names, 1 << 16) != 0:
                raise self.ArchiveError(self.ffi.error_string(archive_p) or "cannot open")
            yield ArchiveRead(archive_p)

    # -- one member --------------------------------------------------------------------------
    def _member(self, i: int, entry, archive_p) -> str | None:
        e, m = self.arc.files[i], self.result.members[i]
        try:
            parts, note = safe_components(e.name)
        except UnsafeName as exc:
            m.status, m.reason = UNSAFE_NAME, str(exc)
            return None
        try:
            if e.is_dir or entry.isdir:
                fd = _open_dir(self.root_fd, parts)
                os.close(fd)
                m.status, m.reason = DIRECTORY, note
                return None
            if entry.issym:
                m.status = LINK
                m.reason = f"symbolic link to {printable(entry.linkpath or '')!r}: not created"
                return None
            if entry.isblk or entry.ischr or entry.isfifo or entry.issock:
                m.status, m.reason = NOT_CREATED, "device, fifo or socket: not created"
                return None
            dir_fd = _open_dir(self.root_fd, parts[:-1])
        except OSError as exc:
            m.status, m.reason = UNSAFE_NAME, f"cannot be placed: {exc.strerror}"
            return None
        try:
            leaf = self._versioned_leaf(e, entry, parts[-1])
            if e.redirect is not None:
                self._copy(i, dir_fd, leaf)
                return None
            return self._data(i, archive_p, dir_fd, leaf, note)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _versioned_leaf(e: RarFileEntry, entry, leaf: str) -> str:
        name = entry.pathname or ""
        if e.old_version and name.startswith(e.name + ";"):
            return leaf + name[len(e.name):]            # bsdtar's `name;N`
        return leaf

    def _copy(self, i: int, dir_fd: int, leaf: str) -> None:
        """RAR 5 hard link / file copy: the verified bytes of its target, written again."""
        e, m = self.arc.files[i], self.result.members[i]
        target = e.redirect[1]
        src = self.written.get(target)
        if src is None:
            m.status = DECOMPRESSION_ERROR
            m.reason = f"copy of {printable(target)!r}, which was not extracted"
            return
        out = None
        try:
            out = _MemberOutput(dir_fd, leaf)
            src_dir = _open_dir(self.root_fd, src[0])
            try:
                fd = os.open(src[1], os.O_RDONLY | _NOFOLLOW, dir_fd=src_dir)
            finally:
                os.close(src_dir)
            with open(fd, "rb") as f:
                while block := f.read(CHUNK):
                    out.write(block)
            if out.written != e.size:
                out.discard()
                m.status = BAD_CHECKSUM
                m.reason = (f"copy of {printable(target)!r}: {out.written} bytes, the header "
                            f"says {e.size}")
                return
            final = out.finish(leaf)
        except OSError as exc:
            if out is not None:
                out.discard()
            m.status, m.reason = WRITE_ERROR, exc.strerror
            return
        self.written[e.name] = (safe_components(e.name)[0][:-1], final)
        m.path = self._final_path(i, final)
        m.status, m.check = OK, "copy"
        m.reason = f"copy of {printable(target)!r} (verified)"
        m.bytes_written, m.sha256 = out.written, out.sha256.hexdigest()

    def _final_path(self, i: int, leaf: str) -> str:
        parts = safe_components(self.arc.files[i].name)[0]
        return os.path.join(self.result.directory, *parts[:-1], leaf)

    def _data(self, i: int, archive_p, dir_fd: int, leaf: str, note: str | None) -> str | None:
        e, m = self.arc.files[i], self.result.members[i]
        limit = e.size if self.max_member_bytes is None else min(e.size, self.max_member_bytes)
        free = _free_bytes(dir_fd)
        if free is not None and limit > free:
            # a header (damaged or hostile) asking for more than the disk holds: not started
            m.status = WRITE_ERROR
            m.reason = f"needs {limit:,} bytes, {free:,} free in the output directory"
            return None
        checks = _Checks(e)
        try:
            out = _MemberOutput(dir_fd, leaf)
        except OSError as exc:
            m.status, m.reason = WRITE_ERROR, f"{leaf}.part: {exc.strerror}"
            return None
        error: str | None = None
        fatal = False
        try:
            n = 0
            while True:
                self.ticker.tick(self.done_bytes + n)
                try:
                    r = self.ffi.read_data(archive_p, self.buf, CHUNK)
                except self.ArchiveError as exc:
                    error = _error_text(exc)
                    fatal = getattr(exc, "retcode", None) == self.ffi.ARCHIVE_FATAL
                    break
                if r < 0:                       # ARCHIVE_WARN: data not to be trusted
                    error = "decompressor warning"
                    break
                if r == 0:
                    break
                data = ctypes.string_at(self.buf, r)
                if n + r > limit:
                    data = data[: limit - n]
                    error = (f"decompresses to more than the {limit} bytes "
                             f"{'the header declares' if limit == e.size else 'allowed'}")
                    checks.update(data)
                    out.write(data)
                    n = limit
                    break
                checks.update(data)
                out.write(data)
                n += r
            self.done_bytes += n
            mismatch = checks.mismatch() if n == e.size else None
            if error is None and n < e.size:
                status, reason = TRUNCATED, f"decompressed {n} of {e.size} bytes"
            elif error is not None and n == e.size and mismatch is None and \
                    _classify(error) == BAD_CHECKSUM:
                # libarchive's own check failed but ours (the header's) agrees with the data
                status, reason = BAD_CHECKSUM, f"libarchive: {error}"
            elif error is not None:
                status, reason = _classify(error), (f"libarchive: {error}"
                                                    f" (after {n} of {e.size} bytes)")
            elif mismatch is not None:
                status, reason = BAD_CHECKSUM, mismatch
            elif checks.names() is None:
                status, reason = UNVERIFIABLE, "the header stores no checksum"
            else:
                status, reason = OK, note
            if status == OK:
                final = out.finish(leaf)
                self.written[e.name] = (safe_components(e.name)[0][:-1], final)
                m.path = self._final_path(i, final)
                m.check = checks.names()
            else:
                self._broken(i, out, leaf)
                if self.first_broken is None:
                    self.first_broken = e.name
                if e.solid and self.first_broken != e.name:
                    reason = (f"solid archive, after the broken member "
                              f"{printable(self.first_broken)!r}: {reason}")
                    status = LOST_SOLID
            m.status, m.reason = status, reason
            m.bytes_written = out.written if m.path else 0
            m.sha256 = out.sha256.hexdigest() if m.path else None
        except OSError as exc:
            out.discard()
            m.status, m.reason = WRITE_ERROR, exc.strerror
        except BaseException:       # cancelled: no .part left behind
            out.discard()
            raise
        return f"libarchive: {error}" if fatal else None

    def _broken(self, i: int, out: _MemberOutput, leaf: str) -> None:
        if self.keep_broken:
            self.result.members[i].path = self._final_path(i, out.finish(leaf + ".broken"))
        else:
            out.discard()


def extract_archive(path: str | list[str], out_dir: str, arc: RarArchive | None = None,
                    keep_broken: bool = False, cancel: threading.Event | None = None,
                    progress: ProgressFn | None = None,
                    max_member_bytes: int | None = None) -> ArchiveExtraction:
    """Unpack the carved archive file `path` (or a volume set: the list of its files in
    order, with `arc` from join_volumes) into `out_dir` (see the module docstring).

    `arc`: its walk (core.carve.rar.walk_archive of the same bytes, offset 0), walked here when
    not given. `max_member_bytes` caps every member below its header's size (tests, triage)."""
    paths = [path] if isinstance(path, str) else list(path)
    if arc is None:
        if len(paths) > 1:
            raise ValueError("a volume set needs its joined walk (join_volumes)")
        arc = _walk_file(paths[0])
    ex = _Extractor(paths, arc, out_dir, keep_broken, cancel, progress, max_member_bytes)
    result = ex.run()
    result.volumes = paths if len(paths) > 1 else []
    cut = arc.truncated_file
    if cut is not None:
        # listed by its header, its data cut off by the end of what was carved
        why = (arc.first_bad_header or {}).get("reason", "")
        result.members.append(MemberResult(
            cut.name, cut.size, TRUNCATED, f"the source ends inside its data: {why}"))
    if arc.encrypted_headers:
        result.note = "headers are encrypted (no password is tried): its members are unknown"
    elif arc.first_bad_header:
        bad = arc.first_bad_header
        result.note = (f"headers unreadable from archive offset {bad['archive_offset']} "
                       f"({bad['reason']}): members after it are unknown")
    elif arc.more_volumes:
        result.note = ("the last volume found says more volumes follow; they were not found"
                       if len(paths) > 1 else
                       "this volume says more volumes follow; none was found after it")
    return result


def _walk_file(path: str) -> RarArchive:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size

        def read(off: int, n: int) -> bytes:
            f.seek(off)
            return f.read(n)

        arc = walk_archive(read, 0, size)
    if arc is None:
        raise SrsalvageError(f"{path}: no RAR signature at its start")
    return arc


def _crc_of_range(path: str, offset: int, length: int) -> int | None:
    crc, done = 0, 0
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while done < length:
                block = f.read(min(CHUNK, length - done))
                if not block:
                    return None
                crc = zlib.crc32(block, crc)
                done += len(block)
    except OSError:
        return None
    return crc


def _say_pieces(result: ArchiveExtraction, pieces: dict[int, list[Piece]]) -> None:
    """For a split member that did not come out whole: which of its pieces are intact (the
    packed CRC-32 each non-last piece carries), so the damaged or missing volume is named."""
    for i, plist in pieces.items():
        m = result.members[i] if i < len(result.members) else None
        checkable = [p for p in plist if p[4] is not None]
        if m is None or m.status == OK or not checkable:
            continue
        said = []
        for number, path, offset, packed, crc in checkable:
            where = f"volume {number}" if number is not None else os.path.basename(path)
            got = _crc_of_range(path, offset, packed)
            said.append(f"{where} {'intact' if got == crc else 'DAMAGED'}")
        m.reason = f"{m.reason}; its pieces: {', '.join(said)}"


def extract_archives(archives: Iterable[RarArchive], out_dir: str, keep_broken: bool = False,
                     cancel: threading.Event | None = None, progress: ProgressFn | None = None
                     ) -> list[ArchiveExtraction]:
    """Each carved archive (its `path` set by write_archives) into OUT_DIR/<its file stem>/,
    one result per archive with a path, in their order. Volumes of one set are unpacked
    together into the first volume's directory; the later volumes' results say so. The walk
    already done by the carve is reused (it is relative to the archive's start)."""
    carved = [a for a in archives if a.path is not None]
    by_id: dict[int, ArchiveExtraction] = {}
    for vols in volume_sets(carved):
        stem = os.path.splitext(os.path.basename(vols[0].path))[0]
        target = os.path.join(out_dir, stem)
        arc, pieces = _join(vols)
        if len(vols) == 1:
            by_id[id(vols[0])] = extract_archive(vols[0].path, target, vols[0], keep_broken,
                                                 cancel, progress)
            _say_pieces(by_id[id(vols[0])], pieces)
            continue
        joined = extract_archive([v.path for v in vols], target, arc, keep_broken, cancel,
                                 progress)
        _say_pieces(joined, pieces)
        by_id[id(vols[0])] = joined
        for k, v in enumerate(vols[1:], start=2):
            by_id[id(v)] = ArchiveExtraction(
                v.path, target, note=f"volume {k} of the set beginning at offset "
                                     f"{vols[0].offset}: unpacked with it into {target}")
    return [by_id[id(a)] for a in carved]
