"""Shared helpers of the bench scripts: best-of-N timing, side-by-side runs against reference
tools in one process, page-cache warming, and a fast realistic filler for test images.

Benchmarks print ratios (ours / reference) measured on the same machine in the same process,
never absolute timings as pass/fail criteria.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _cpu_now() -> float:
    """CPU seconds of this process plus its waited-for children (user + system)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call; CPU time includes child processes, so a
    reference tool run with subprocess is measured the same way as in-process work."""
    c0, t0 = _cpu_now(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu_now() - c0


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Smallest wall-clock time of `repeat` calls (the least disturbed run on a shared box)."""
    return min(measure(fn)[0] for _ in range(max(1, repeat)))


def run_quiet(cmd: Sequence[str], to_pipe: bool = False) -> None:
    """Run a reference command with its output discarded: `cmd > /dev/null`, or through a pipe
    when the tool would take /dev/null as a hint to stop early (GNU grep quits at the first
    match when its output is /dev/null)."""
    if to_pipe:
        subprocess.run(list(cmd), stdin=subprocess.DEVNULL, capture_output=True, check=False)
    else:
        subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


def command(cmd: Sequence[str], to_pipe: bool = False) -> Callable[[], None]:
    return lambda: run_quiet(cmd, to_pipe)


def warm_page_cache(path: str, chunk: int = 8 << 20) -> None:
    """Read a file through once so the timed runs compare CPU work, not the disk."""
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(chunk)
        while f.readinto(buf):
            pass


@dataclass
class Comparison:
    label: str
    ours: float                 # best wall seconds
    reference: float
    reference_label: str
    ours_cpu: float = 0.0       # best CPU seconds (robust when other jobs share the cores)
    reference_cpu: float = 0.0

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference > 0 else float("inf")

    @property
    def cpu_ratio(self) -> float:
        return self.ours_cpu / self.reference_cpu if self.reference_cpu > 0 else float("inf")

    def line(self) -> str:
        return (f"{self.label}: {self.ours:.3f} s (cpu {self.ours_cpu:.3f})  vs  "
                f"{self.reference_label}: {self.reference:.3f} s (cpu {self.reference_cpu:.3f})"
                f"  ->  ratio {self.ratio:.2f}x wall, {self.cpu_ratio:.2f}x cpu")


def side_by_side(label: str, ours: Callable[[], object], reference_label: str,
                 reference: Callable[[], object], repeat: int = 3) -> Comparison:
    """Time ours and the reference alternately (best of `repeat` each, wall and CPU time
    separately), so a load spike on the shared machine hits both."""
    ow = oc = rw = rc = float("inf")
    for _ in range(max(1, repeat)):
        w, c = measure(reference)
        rw, rc = min(rw, w), min(rc, c)
        w, c = measure(ours)
        ow, oc = min(ow, w), min(oc, c)
    return Comparison(label, ow, rw, reference_label, oc, rc)


_WORDS = (b"kernel: ", b"systemd[1]: ", b"Started ", b"session ", b"tapdisk ", b"vhd ",
          b"error ", b"INFO ", b"GET /index.html ", b"200 ", b"user=root ", b"sr=", b"\n")


def realistic_chunk(rng: np.random.Generator, size: int, text_fraction: float = 0.25) -> bytes:
    """`size` bytes (a 4 KiB multiple) of non-zero content: mostly random 4 KiB blocks
    (compressed / encrypted data) with a share of log-like ASCII text blocks."""
    blocks = size // 4096
    data = rng.integers(0, 256, size, dtype=np.uint8)
    text_blocks = np.flatnonzero(rng.random(blocks) < text_fraction)
    if text_blocks.size:
        pool = b"".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), 4000))
        pool_arr = np.frombuffer((pool * (8192 // len(pool) + 2))[:8192], dtype=np.uint8)
        bank = np.stack([pool_arr[s:s + 4096] for s in rng.integers(0, 4096, 64).tolist()])
        data.reshape(blocks, 4096)[text_blocks] = bank[rng.integers(0, 64, text_blocks.size)]
    return data.tobytes()


def fill_realistic(path: str, size: int, seed: int = 0, chunk: int = 64 << 20) -> None:
    """Write a `size`-byte realistic filler file (size rounded down to 4 KiB)."""
    rng = np.random.default_rng(seed)
    size -= size % 4096
    with open(path, "wb") as f:
        done = 0
        while done < size:
            n = min(chunk, size - done)
            f.write(realistic_chunk(rng, n))
            done += n


def parse_size(text: str) -> int:
    """'4G', '512M', '4GiB', '1048576', '0x100000' -> bytes."""
    t = text.strip().lower()
    for tail in ("ib", "b"):
        if t.endswith(tail) and len(t) > len(tail) and not t[-len(tail) - 1].isdigit():
            t = t[: -len(tail)]
            break
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t, 0)


@contextlib.contextmanager
def bench_image(image: str | None, size: str, prefix: str, sprinkle: Callable[[str], None],
                keep: bool = False) -> Iterator[str]:
    """The image to measure: `image` as given, or a realistic one of `size` built in a temp
    dir (then `sprinkle(path)` adds the structures to find), removed afterwards unless `keep`.
    Its pages are in the page cache before the caller times anything."""
    tmpdir = None
    if image:
        path = image
    else:
        tmpdir = tempfile.mkdtemp(prefix=prefix)
        path = os.path.join(tmpdir, "bench.img")
        nbytes = parse_size(size)
        print(f"building {nbytes / (1 << 30):.2f} GiB realistic image at {path} ...", flush=True)
        fill_realistic(path, nbytes)
        sprinkle(path)
    try:
        warm_page_cache(path)
        yield path
    finally:
        if tmpdir and not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)


# -- one child process measured: bytes it read, peak RSS, wall time (issue 14) -------------------
@dataclass
class ChildRun:
    argv: list
    returncode: int
    wall: float                 # seconds
    rchar: int                  # /proc/PID/io rchar: bytes the process read by read(2)-like calls
    max_rss: int                # bytes, ru_maxrss of the child
    cpu: float                  # user + system seconds of the child
    stderr: str = ""


# The measured process is started by a small launcher (a fresh interpreter running
# _LAUNCHER): ru_maxrss is a high-water mark kept across exec, and a child forked straight from
# a large process (a builder holding buffers, pytest) starts with its parent's RSS as its peak.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
wall = time.perf_counter() - t0
rchar = -1
try:
    with open(f"/proc/{p.pid}/io") as f:
        rchar = int(next(l for l in f if l.startswith("rchar:")).split()[1])
except (OSError, StopIteration):
    pass
_, status, ru = os.wait4(p.pid, 0)
p.returncode = os.waitstatus_to_exitcode(status)
print(json.dumps({"rc": p.returncode, "wall": wall, "rchar": rchar,
                  "rss": ru.ru_maxrss * 1024, "cpu": ru.ru_utime + ru.ru_stime}))
"""


def run_child(argv: Sequence[str], env: dict | None = None, cwd: str | None = None,
              timeout: float | None = None) -> ChildRun:
    """Run argv as a fresh process (its stdout discarded) and measure it: wall time, the bytes
    it read (/proc/PID/io `rchar`, read while it is a zombie: waitid WNOWAIT, so the counters
    are final and the pid not reused), its peak RSS and CPU time (wait4)."""
    import json

    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *argv],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                              env=env, cwd=cwd, timeout=timeout, check=False)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    try:
        m = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ChildRun(list(argv), proc.returncode or -1, 0.0, -1, 0, 0.0, text)
    return ChildRun(list(argv), m["rc"], m["wall"], m["rchar"], m["rss"], m["cpu"], text)


def srsalvage_argv(*args: str) -> list[str]:
    """The command line of `srsalvage ARGS` with this interpreter (the venv's)."""
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())",
            *args]
