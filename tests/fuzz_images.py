"""Whole-image fuzzing (issue 11): hypothesis strategies that mutate a demo SR image where its
structures are, fix the checksums that would otherwise reject the mutation at the first
check, and run every command on the result in a forked child with memory and time limits.

Used by tests/test_fuzz_campaign.py (a bounded budget in `make test`) and bench/fuzz.py (the
long run). A *finding* is a run that printed a traceback or "internal error", ended on a signal,
exceeded the time limit, or grew past the RSS limit; the evidence must also be unchanged after
every run.

Targets come from a scan of the base image (GPT/MBR, LVM label, mda header, metadata text, VHD
footer/header/batmap, MGT, SQL Server pages, RAR headers) plus what the VHD headers point to
(BAT, first bitmaps, parent locators). Mutations: byte flips, boundary integers written over
fields, zeroed or filled structures, truncation; metadata text edits (huge extent counts and
starts, control characters and newlines in names, removed braces) written back with the raw_locn
size and checksum and the mda header checksum fixed; the same text edits on a `.vg` backup file;
edits of the map file `reconstruct -o` wrote (read back by `export --map`).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from dataclasses import dataclass, field

from hypothesis import strategies as st

MIB = 1 << 20
E = 4 * MIB
BOUNDARY_INTS = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x1FF, 0x200, 0xFFFF, 0x10000, 0x7FFFFFFF,
                 0x80000000, 0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF]
TEXT_KEYS = ["extent_count", "start_extent", "pe_start", "pe_count"] * 3 + [  # the ones sizes hang on
             "extent_size", "seqno",
             "dev_size", "stripe_count", "stripe_size", "max_lv", "max_pv", "creation_time",
             "segment_count", "metadata_copies"]
TEXT_NUMBERS = ["0", "1", "-1", "16777215", "4294967295", "18446744073709551615",
                "99999999999999999999999999", "1e400", "7", "2147483647"]
EVIL_STRINGS = ["x\ny", "\x1b]0;pwned\x07", "\x1b[2J\x1b[31m", "a\"b\\c", "\u202eevil",
                "$(touch /tmp/PWNED)", "`id`", "'; rm -rf / #", "\x00", "{", "}", "#", "[", "]"]


@dataclass
class Target:
    kind: str
    start: int
    length: int


@dataclass
class Base:
    path: str
    size: int
    targets: list[Target]
    mda_abs: int | None          # absolute offset of the mda (its header), for text fixes
    keys: list[str]              # VDI keys for check/export
    backup_text: bytes           # current metadata as a `.vg` backup file
    map_doc: dict | None         # reconstruct -o document
    gpt: bool


@dataclass
class Case:
    patches: list[tuple[int, bytes]] = field(default_factory=list)
    truncate: int | None = None
    commands: set[int] | None = None    # indexes into commands(); None: every command
    backup_text: bytes | None = None
    map_doc: dict | None = None
    label: list[str] = field(default_factory=list)


# -- building the bases ------------------------------------------------------------------------
def build_bases(directory: str) -> list[Base]:
    """Two small demo SRs (256 MiB sparse, 64 KiB metadata area): metadata intact, and metadata
    wiped (the reconstruction-from-VHD path)."""
    from core.demo import build_demo
    bases = []
    for damage in ("none", "metadata"):
        path = os.path.join(directory, f"base-{damage}.img")
        build_demo(path, damage=damage, mda_size=64 * 1024, attach_cycles=1, overwrite=True,
                   disk_bytes=256 * MIB)
        bases.append(describe_base(path, directory))
    return bases


def describe_base(path: str, directory: str) -> Base:
    from core.lvm.model import VGMetadata
    from core.lvm.writer import format_vg_metadata
    from core.scan import available_kinds, scan
    from core.source import Evidence

    targets: list[Target] = []
    with Evidence(path) as ev:
        res = scan(ev, kinds=list(available_kinds()))
        pages = 0
        for f in res.findings:
            if f.kind == "mssql-page":
                pages += 1
                if pages % 7:             # a sample of the pages is enough
                    continue
            targets.append(Target(f.kind, f.offset, max(1, min(f.bytes, 64 * 1024))))
            if f.kind == "vhd-header":
                targets.extend(_vhd_pointed(ev, f.offset))
        gpt = any(t.kind == "gpt-header" for t in targets)
        labels = [t for t in targets if t.kind == "lvm-label"]
        mda_abs = None
        backup = b""
        if labels:
            pv = labels[0].start - 512
            mda_abs = pv + 4096
            hdr = ev.read(mda_abs, 512)
            off, size = struct.unpack_from("<QQ", hdr, 40)
            if hdr[4:20] == b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e" \
                    and 0 < size < 1 << 20:
                text = ev.read(mda_abs + off, size)
                targets.append(Target("metadata-text", mda_abs + off, size))
                try:
                    meta = VGMetadata.from_text(text.rstrip(b"\0"))
                    backup = format_vg_metadata(meta, "backup").encode()
                except Exception:       # noqa: BLE001 - a base without parsable text: no backup
                    backup = b""
        size = ev.size
    from app.cli import main
    map_path = os.path.join(directory, os.path.basename(path) + ".map.json")
    keys: list[str] = []
    map_doc = None
    with open(os.devnull, "w") as null:
        saved = sys.stdout
        sys.stdout = null
        try:
            if os.path.exists(map_path):
                os.unlink(map_path)
            main(["reconstruct", path, "-o", map_path])
        finally:
            sys.stdout = saved
    if os.path.exists(map_path):
        with open(map_path) as f:
            map_doc = json.load(f)
        keys = [v["key"] for v in map_doc.get("vdis", [])][:3]
    return Base(path, size, targets, mda_abs, keys, backup, map_doc, gpt)


def _vhd_pointed(ev, header_off: int) -> list[Target]:
    """BAT, the first bitmaps and the parent locators of the VHD whose header is at
    `header_off`, where they lie in the same 4 MiB extent as the VHD's start (its LV may be
    scattered over the disk; what lies in other extents is reached through scan targets)."""
    out = []
    start = header_off - 512
    hdr = ev.read(header_off, 1024)
    if len(hdr) < 1024:
        return out
    table, = struct.unpack_from(">Q", hdr, 16)
    entries, = struct.unpack_from(">I", hdr, 28)

    def same_extent(pos: int) -> bool:
        return 0 <= pos - start < E - (start % E) if start % E else 0 <= pos - start < E

    if same_extent(start + table):
        out.append(Target("vhd-bat", start + table, min(entries * 4, 64 * 1024) or 4))
        bat = ev.read(start + table, min(entries, 64) * 4)
        for (sector,) in list(struct.iter_unpack(">I", bat[: len(bat) // 4 * 4]))[:8]:
            if sector != 0xFFFFFFFF and same_extent(start + sector * 512):
                out.append(Target("vhd-bitmap", start + sector * 512, 512))
    for i in range(8):
        code, space, length, _, data_off = struct.unpack_from(">IIIIQ", hdr, 576 + 24 * i)
        if code:
            out.append(Target("vhd-locator-entry", header_off + 576 + 24 * i, 24))
            if same_extent(start + data_off):
                out.append(Target("vhd-locator", start + data_off, max(1, min(length, 4096))))
    return out


# -- checksums fixed after a mutation ----------------------------------------------------------
def _fix(kind: str, buf: bytearray, start: int) -> None:
    """Recompute the checksum of the structure at `start` in `buf` (the bytes around it)."""
    from core.lvm.crc import lvm_crc
    if kind == "lvm-label" and len(buf) >= 512:
        buf[16:20] = lvm_crc(bytes(buf[20:512])).to_bytes(4, "little")
    elif kind == "lvm-mda-header" and len(buf) >= 512:
        buf[0:4] = lvm_crc(bytes(buf[4:512])).to_bytes(4, "little")
    elif kind == "vhd-footer" and len(buf) >= 512:
        from core.structs.vhd import footer_checksum
        buf[64:68] = footer_checksum(bytes(buf[:512])).to_bytes(4, "big")
    elif kind == "vhd-header" and len(buf) >= 1024:
        from core.structs.vhd import header_checksum
        buf[36:40] = header_checksum(bytes(buf[:1024])).to_bytes(4, "big")
    elif kind == "mssql-page" and len(buf) >= 8192:
        from core.structs.mssql import page_checksum
        buf[60:64] = page_checksum(bytes(buf[:8192])).to_bytes(4, "little")
    elif kind == "gpt-header" and len(buf) >= 92:
        size = int.from_bytes(buf[12:16], "little")
        if 92 <= size <= len(buf):
            buf[16:20] = b"\0\0\0\0"
            buf[16:20] = zlib.crc32(bytes(buf[:size])).to_bytes(4, "little")


def _read(path: str, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


# -- strategies --------------------------------------------------------------------------------
@st.composite
def byte_mutation(draw, base: Base) -> tuple[list[tuple[int, bytes]], str]:
    t = draw(st.sampled_from(base.targets))
    # the whole structure we fix checksums over (a page, a footer, a header sector)
    span = {"mssql-page": 8192, "vhd-header": 1024, "vhd-footer": 512, "lvm-label": 512,
            "lvm-mda-header": 512, "gpt-header": 512}.get(t.kind, t.length)
    buf = bytearray(_read(base.path, t.start, span))
    if not buf:
        return [], t.kind
    how = draw(st.sampled_from(["flip", "int", "int", "zero", "fill", "garbage"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= draw(st.integers(1, 255))
    elif how == "int":
        for _ in range(draw(st.integers(1, 3))):
            width = draw(st.sampled_from([1, 2, 4, 8]))
            if len(buf) < width:
                continue
            i = draw(st.integers(0, (len(buf) - width) // width)) * width
            value = draw(st.sampled_from(BOUNDARY_INTS)) % (1 << (8 * width))
            order = draw(st.sampled_from(["little", "big"]))
            buf[i:i + width] = value.to_bytes(width, order)
    elif how == "zero":
        buf[:] = bytes(len(buf))
    elif how == "fill":
        i = draw(st.integers(0, len(buf) - 1))
        n = draw(st.integers(1, len(buf) - i))
        buf[i:i + n] = bytes([draw(st.integers(0, 255))]) * n
    else:
        i = draw(st.integers(0, len(buf) - 1))
        junk = draw(st.binary(min_size=1, max_size=64))
        buf[i:i + len(junk)] = junk
        del buf[span:]
    if how != "zero" and draw(st.booleans()):
        _fix(t.kind, buf, t.start)     # most mutations pass the checksum
    return [(t.start, bytes(buf))], f"{t.kind}:{how}"


@st.composite
def text_edit(draw, text: str) -> tuple[str, str]:
    how = draw(st.sampled_from(["number", "number", "string", "delete", "dup"]))
    if how == "number":
        key = draw(st.sampled_from(TEXT_KEYS))
        val = draw(st.sampled_from(TEXT_NUMBERS))
        spots = [m for m in re.finditer(rf"\b{key} = (-?[0-9]+)", text)]
        if spots:
            m = spots[draw(st.integers(0, len(spots) - 1))]
            text = text[:m.start(1)] + val + text[m.end(1):]
        return text, f"text:{key}={val}"
    if how == "string":
        evil = draw(st.sampled_from(EVIL_STRINGS))
        spots = [m for m in re.finditer(r'"([^"\n]*)"', text)]
        names = [m for m in re.finditer(r"^\s*([A-Za-z0-9_+.-]+) \{", text, re.M)]
        pick = draw(st.sampled_from(["value", "name"]))
        if pick == "name" and names:
            m = names[draw(st.integers(0, len(names) - 1))]
            return text[:m.start(1)] + m.group(1) + evil + text[m.end(1):], "text:name-evil"
        if spots:
            m = spots[draw(st.integers(0, len(spots) - 1))]
            esc = evil.replace("\\", "\\\\").replace('"', '\\"')
            return text[:m.start(1)] + esc + text[m.end(1):], "text:string-evil"
        return text, "text:none"
    if how == "delete":
        if not text:
            return text, "text:none"
        i = draw(st.integers(0, len(text) - 1))
        n = draw(st.integers(1, 40))
        return text[:i] + text[i + n:], "text:delete"
    seg = [m for m in re.finditer(r"segment[0-9]+ \{[^{}]*\}", text)]
    if seg:
        m = seg[draw(st.integers(0, len(seg) - 1))]
        return text[:m.end()] + "\n" + m.group(0) + text[m.end():], "text:dup-segment"
    return text, "text:none"


@st.composite
def metadata_mutation(draw, base: Base) -> tuple[list[tuple[int, bytes]], str]:
    """A metadata text edit written back with raw_locn size and checksum fixed."""
    from core.lvm.crc import lvm_crc
    t = next((t for t in base.targets if t.kind == "metadata-text"), None)
    if t is None or base.mda_abs is None:
        return [], "text:none"
    text = _read(base.path, t.start, t.length).rstrip(b"\0").decode("utf-8", "replace")
    new, label = draw(text_edit(text))
    raw = new.encode("utf-8", "surrogateescape") + b"\0"
    hdr = bytearray(_read(base.path, base.mda_abs, 512))
    off, _size = struct.unpack_from("<QQ", hdr, 40)
    area, = struct.unpack_from("<Q", hdr, 32)
    if off + len(raw) > area:
        return [], "text:too-long"
    struct.pack_into("<QQI", hdr, 40, off, len(raw), lvm_crc(raw))
    hdr[0:4] = lvm_crc(bytes(hdr[4:512])).to_bytes(4, "little")
    return [(t.start, raw), (base.mda_abs, bytes(hdr))], label


@st.composite
def map_mutation(draw, doc: dict) -> tuple[dict, str]:
    doc = json.loads(json.dumps(doc))
    vdis = doc.get("vdis") or []
    if not vdis:
        return doc, "map:none"
    v = vdis[draw(st.integers(0, len(vdis) - 1))]
    how = draw(st.sampled_from(["map-huge", "map-negative", "extents", "vg", "type"]))
    val = draw(st.sampled_from([-1, 0, 2 ** 31, 2 ** 63, 10 ** 30, 16777215]))
    if how == "map-huge" and v.get("map"):
        v["map"][0][draw(st.integers(0, 2))] = val
    elif how == "map-negative" and v.get("map"):
        v["map"].append([val, val, val])
    elif how == "extents":
        v["extents_needed"] = val
        v["virtual_bytes"] = val
    elif how == "vg" and doc.get("volume_groups"):
        doc["volume_groups"][0][draw(st.sampled_from(["extent_bytes", "data_offset"]))] = val
    else:
        v["map"] = draw(st.sampled_from([None, "x", {}, [["a"]], [[1, 2]]]))
    return doc, f"map:{how}"


@st.composite
def cases(draw, base: Base) -> Case:
    case = Case()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["bytes", "bytes", "bytes", "text", "text"]))
        patches, label = draw(metadata_mutation(base) if kind == "text" else byte_mutation(base))
        case.patches += patches
        case.label.append(label)
    if draw(st.integers(0, 9)) == 0:
        case.truncate = draw(st.sampled_from([0, 511, 4096, base.size // 3, base.size - 1]))
        case.label.append(f"truncate:{case.truncate}")
    if base.backup_text and draw(st.booleans()):
        text, label = draw(text_edit(base.backup_text.decode()))
        case.backup_text = text.encode("utf-8", "surrogateescape")
        case.label.append("vg-" + label)
    if base.map_doc and draw(st.booleans()):
        case.map_doc, label = draw(map_mutation(base.map_doc))
        case.label.append(label)
    return case


# -- applying a case and running every command -------------------------------------------------
class Workspace:
    """A copy of a base image that cases are patched into and restored from (sparse copy once;
    each case rewrites only the bytes it changed)."""

    def __init__(self, base: Base, directory: str) -> None:
        self.base = base
        self.dir = directory
        self.path = os.path.join(directory, "evidence.img")
        _sparse_copy(base.path, self.path)

    def apply(self, case: Case) -> list[tuple[int, bytes]]:
        undo = []
        with open(self.path, "r+b") as f:
            for off, data in case.patches:
                f.seek(off)
                undo.append((off, f.read(len(data))))
                f.seek(off)
                f.write(data)
            if case.truncate is not None:
                f.truncate(case.truncate)
        return undo

    def restore(self, undo: list[tuple[int, bytes]], case: Case) -> None:
        if case.truncate is not None:
            _sparse_copy(self.base.path, self.path)
            return
        with open(self.path, "r+b") as f:
            for off, data in reversed(undo):
                f.seek(off)
                f.write(data)


def _sparse_copy(src: str, dst: str) -> None:
    with open(src, "rb") as s, open(dst, "wb") as d:
        size = os.fstat(s.fileno()).st_size
        d.truncate(size)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(s.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(s.fileno(), data, os.SEEK_HOLE)
            s.seek(data)
            d.seek(data)
            left = hole - data
            while left:
                chunk = s.read(min(left, 8 * MIB))
                d.write(chunk)
                left -= len(chunk)
            pos = hole


def commands(ws: Workspace, case: Case, out: str) -> list[list[str]]:
    img = ws.path
    backup = []
    if case.backup_text is not None:
        p = os.path.join(out, "backup.vg")
        with open(p, "wb") as f:
            f.write(case.backup_text)
        backup = ["--backup", p]
    mp = None
    if case.map_doc is not None:
        mp = os.path.join(out, "map-in.json")
        with open(mp, "w") as f:
            json.dump(case.map_doc, f)
    cmds = [["scan", img], ["scan", img, "--json", "--kinds", "mssql-page,rar4,rar5,xen-mgt"],
            ["lvm", img] + backup, ["lvm", img, "--json"] + backup,
            ["reconstruct", img, "-o", os.path.join(out, "map.json"),
             "--xe", os.path.join(out, "x.sh"), "--vgcfg", os.path.join(out, "r.vg")] + backup,
            ["carve-mdf", img, "-o", os.path.join(out, "mdf")],
            ["carve-rar", img, "-o", os.path.join(out, "rar"), "--json"]]
    for i, key in enumerate(ws.base.keys[:2]):
        cmds.append(["check", img, "--vdi", key] + backup)
        cmds.append(["export", img, "--vdi", key, "--format", "raw" if i else "vhd",
                     "-o", os.path.join(out, f"e{i}")] + backup)
        if mp:
            cmds.append(["export", img, "--vdi", key, "--map", mp, "--format", "raw",
                         "-o", os.path.join(out, f"m{i}")])
    if case.commands is not None:
        cmds = [c for i, c in enumerate(cmds) if i in case.commands]
    return cmds


@dataclass
class RunResult:
    command: list[str]
    status: str            # ok | traceback | internal-error | signal | timeout | rss | exit
    seconds: float
    max_rss: int
    detail: str = ""


def run_limited(argv: list[str], timeout: float, rss_limit: int) -> RunResult:
    """One command in a forked child: its own output discarded, address space capped (a
    MemoryError is a finding), killed after `timeout`; the child's peak RSS from wait4."""
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:               # child
        status = 0
        try:
            os.close(r)
            vm = _vm_size()
            resource.setrlimit(resource.RLIMIT_AS, (vm + rss_limit, vm + rss_limit))
            null = os.open(os.devnull, os.O_WRONLY)
            err_r, err_w = os.pipe()
            os.dup2(null, 1)
            os.environ["SRSALVAGE_DEBUG"] = "1"
            from app.cli import main
            try:
                import io
                buf = io.StringIO()
                sys.stdout = open(os.devnull, "w")
                sys.stderr = buf
                code = main(argv)
                err = buf.getvalue()
                msg = f"exit {code}\n{err[-2000:]}"
                if "internal error" in err or "Traceback" in err:
                    msg = "internal-error\n" + err[-4000:]
                elif code not in (0, 1, 2, 3):
                    msg = f"exit-bad {code}\n" + err[-2000:]
            except SystemExit as exc:
                msg = f"exit {exc.code}"
            except BaseException:      # noqa: BLE001 - what we are looking for
                msg = "traceback\n" + traceback.format_exc()[-6000:]
            os.write(w, msg.encode("utf-8", "replace")[:65536])
        except BaseException:          # noqa: BLE001
            status = 70
        finally:
            os._exit(status)
    os.close(w)
    deadline = t0 + timeout
    chunks = []
    import select
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([r], [], [], min(left, 1.0))
        if ready:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    secs = time.monotonic() - t0
    rss = usage.ru_maxrss * 1024
    text = b"".join(chunks).decode("utf-8", "replace")
    if timed_out:
        return RunResult(argv, "timeout", secs, rss, text)
    if os.WIFSIGNALED(status):
        return RunResult(argv, "signal", secs, rss, f"signal {os.WTERMSIG(status)}")
    head = text.split("\n", 1)[0]
    if head.startswith("traceback") or head.startswith("internal-error"):
        return RunResult(argv, "traceback", secs, rss, text)
    if "MemoryError" in text:
        return RunResult(argv, "rss", secs, rss, text)
    if head.startswith("exit-bad") or not head.startswith("exit"):
        return RunResult(argv, "exit", secs, rss, text)
    if rss > rss_limit:
        return RunResult(argv, "rss", secs, rss, text)
    return RunResult(argv, "ok", secs, rss, text)


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_case(ws: Workspace, case: Case, timeout: float = 60.0,
             rss_limit: int = 1 << 30, stats: dict | None = None) -> list[RunResult]:
    """Apply `case`, run every command, restore the image; returns the runs that are findings
    (also when the evidence changed)."""
    import hashlib
    undo = ws.apply(case)
    findings = []
    try:
        with open(ws.path, "rb") as f:
            before = hashlib.sha256(f.read(8 * MIB)).hexdigest()
        mtime = os.stat(ws.path).st_mtime_ns
        with tempfile.TemporaryDirectory(dir=ws.dir) as out:
            for argv in commands(ws, case, out):
                res = run_limited(argv, timeout, rss_limit)
                if stats is not None:
                    stats["runs"] = stats.get("runs", 0) + 1
                    stats["max_rss"] = max(stats.get("max_rss", 0), res.max_rss)
                    stats["slowest"] = max(stats.get("slowest", 0.0), res.seconds)
                if res.status != "ok":
                    res.detail = f"case {case.label}\n{res.detail}"
                    findings.append(res)
        with open(ws.path, "rb") as f:
            after = hashlib.sha256(f.read(8 * MIB)).hexdigest()
        if before != after or mtime != os.stat(ws.path).st_mtime_ns:
            findings.append(RunResult(["(all)"], "evidence-changed", 0, 0, str(case.label)))
    finally:
        ws.restore(undo, case)
    return findings
