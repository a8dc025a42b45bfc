"""A guest's virtual disk made by real tools, turned into the write requests a VM would issue.

The virtual disk is a raw file: an MBR from `sfdisk` with one partition at 1 MiB (or no
partition table: the file system on the whole disk), formatted with `mkfs.ext4` or `mkntfs`,
then files copied in with `debugfs -w write` (ext4) or `ntfscp` (NTFS) in bursts. After each
step the changed 4 KiB pages of the raw disk are the guest's writes for that burst: split into
requests of 4-256 KiB and shuffled (a VM's I/O reaches tapdisk in no tidy order, and tapdisk
allocates blocks in the order writes arrive). The raw file after a burst is exactly what the
VDI must read back; `state()` saves it for the ground truth.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import uuid as uuidlib
from pathlib import Path

import numpy as np

MiB = 1 << 20
PAGE = 4096
PART_START = MiB

WORDS = ("invoice ledger backup customer account server volume report quarterly payroll "
         "archive database index journal transaction balance storage snapshot export record "
         "ticket contract supplier warehouse shipment order").split()


def _corpus(rng: random.Random, n: int = 256 << 10) -> bytes:
    lines, size, i = [], 0, 0
    while size < n:
        line = f"{i:06d} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        lines.append(line + "\n")
        size += len(line) + 1
        i += 1
    return "".join(lines).encode()


_CORPORA: dict[int, bytes] = {}


def text_blob(rng: random.Random, n: int) -> bytes:
    """Text (logs, documents): line-aligned pieces of a per-seed corpus, in random order."""
    key = 0
    if key not in _CORPORA:
        _CORPORA[key] = _corpus(random.Random(key))
    corpus = _CORPORA[key]
    out = bytearray()
    while len(out) < n:
        a = corpus.find(b"\n", rng.randrange(len(corpus) - 4096)) + 1
        b = corpus.find(b"\n", a + rng.randint(1024, 64 << 10))
        out += corpus[a:b + 1 if b > 0 else len(corpus)]
    return bytes(out[:n])


def file_blob(rng: random.Random, n: int) -> bytes:
    """File content: random (compressed media), text, or mixed with zero runs."""
    kind = rng.random()
    if kind < 0.4:
        return rng.randbytes(n)
    if kind < 0.7:
        return text_blob(rng, n)
    out = bytearray(rng.randbytes(n))
    for _ in range(rng.randint(1, 6)):
        a = rng.randrange(n)
        out[a:a + rng.randint(512, 64 << 10)] = bytes(min(n - a, 64 << 10))
    return bytes(out[:n])


class GuestDisk:
    def __init__(self, workdir: Path, name: str, size: int, fs: str, partitioned: bool,
                 rng: random.Random):
        self.dir = workdir / f"guest-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.fs = fs
        self.partitioned = partitioned
        self.rng = rng
        self.raw = self.dir / "disk.raw"
        with open(self.raw, "wb") as f:
            f.truncate(size)
        self.part = self.dir / "part.img"
        self.part_off = PART_START if partitioned else 0
        self.prev = np.zeros(size, dtype=np.uint8)
        self.nfiles = 0
        self.fake_time = 1_700_000_000 + rng.randrange(10_000_000)
        self.fs_uuid = str(uuidlib.UUID(bytes=rng.randbytes(16), version=4))

    def _run(self, *cmd: str, stdin: str | None = None) -> str:
        # the same seed gives the same ext4 guest bytes: mke2fs/debugfs take their clock from
        # E2FSPROGS_FAKE_TIME, ids come from the seed's generator (ntfscp stamps real times)
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(self.fake_time))
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[:300]}")
        return proc.stdout

    def _splice(self) -> None:
        """The partition image into the raw disk at its offset."""
        with open(self.part, "rb") as src, open(self.raw, "r+b") as dst:
            dst.seek(self.part_off)
            shutil.copyfileobj(src, dst, 4 * MiB)

    def burst(self) -> list[tuple[int, bytes]]:
        """The write requests that turn the previous state into the current raw file."""
        cur = np.fromfile(self.raw, dtype=np.uint8, count=self.size)
        changed = (cur.reshape(-1, PAGE) != self.prev.reshape(-1, PAGE)).any(axis=1)
        pages = np.flatnonzero(changed)
        writes = []
        if pages.size:
            breaks = np.flatnonzero(np.diff(pages) != 1)
            starts = np.concatenate(([pages[0]], pages[breaks + 1]))
            ends = np.concatenate((pages[breaks], [pages[-1]])) + 1
            for a, b in zip(starts.tolist(), ends.tolist()):
                while a < b:
                    n = min(b - a, self.rng.choice((1, 2, 4, 8, 16, 32, 64)))
                    writes.append((a * PAGE // 512, cur[a * PAGE:(a + n) * PAGE].tobytes()))
                    a += n
        self.rng.shuffle(writes)
        self.prev = cur
        return writes

    def format(self) -> list[tuple[int, bytes]]:
        part_bytes = self.size - self.part_off
        if self.partitioned:
            ptype = "7" if self.fs == "ntfs" else "83"
            self._run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(self.raw),
                      stdin=f"label: dos\nlabel-id: 0x{self.rng.getrandbits(32):08x}\n"
                            f"start=2048, type={ptype}\n")
            part_bytes = self.size - self.part_off
        with open(self.part, "wb") as f:
            f.truncate(part_bytes)
        if self.fs == "ntfs":
            self._run("mkntfs", "-F", "-Q", "-q", "-T", "-p", str(self.part_off // 512),
                      "-L", "guest", str(self.part))
            # -T (the same bytes for the same seed) also fixes the volume serial: mkntfs seeds
            # it from the time (ntfsprogs mkntfs.c generate_serial_number), so every guest
            # would share one, which no two real volumes do. ntfslabel sets the seed's own
            # (from the uuid drawn for every guest: the generator's stream is unchanged)
            self._run("ntfslabel", f"--new-serial={uuidlib.UUID(self.fs_uuid).hex[:16]}",
                      str(self.part))
        else:
            self._run("mkfs.ext4", "-F", "-q", "-b", "4096", "-L", "guest", "-U", self.fs_uuid,
                      "-E", f"hash_seed={self.fs_uuid}", str(self.part))
        self._splice()
        return self.burst()

    def write_files(self, count: int, total: int) -> list[tuple[int, bytes]]:
        """Copy `count` new files of about `total` bytes together into the file system."""
        srcs = []
        for _ in range(count):
            n = max(512, int(total / count * self.rng.uniform(0.3, 1.7)))
            p = self.dir / f"src{self.nfiles}.bin"
            p.write_bytes(file_blob(self.rng, n))
            srcs.append((p, f"file{self.nfiles:04d}.dat"))
            self.nfiles += 1
        if self.fs == "ntfs":
            for p, dst in srcs:
                self._run("ntfscp", "-f", "-q", str(self.part), str(p), "/" + dst)
        else:
            cmds = "".join(f"write {p} {dst}\n" for p, dst in srcs)
            cmdfile = self.dir / "cmds"
            cmdfile.write_text(cmds)
            self._run("debugfs", "-w", "-f", str(cmdfile), str(self.part))
        for p, _ in srcs:
            p.unlink()
        self._splice()
        return self.burst()

    def state(self, label: str) -> tuple[str, str]:
        """Save the current virtual disk (what the VDI must read back): (path, sha256)."""
        out = self.dir / f"{label}.raw"
        subprocess.run(["cp", "--sparse=always", str(self.raw), str(out)], check=True)
        h = hashlib.sha256()
        with open(out, "rb") as f:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        return str(out), h.hexdigest()

    def grow(self, new_size: int) -> list[tuple[int, bytes]]:
        """The VDI was resized: the disk is longer; the guest puts a second partition in the
        new space (`sfdisk --append`) and writes raw data into it (a database volume)."""
        old = self.size
        with open(self.raw, "r+b") as f:
            f.truncate(new_size)
        self.size = new_size
        self.prev = np.concatenate((self.prev, np.zeros(new_size - old, np.uint8)))
        if self.partitioned:
            self._run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", "--append",
                      str(self.raw), stdin=f"start={old // 512}, type=83\n")
        with open(self.raw, "r+b") as f:
            for _ in range(self.rng.randint(2, 6)):
                at = self.rng.randrange(old, new_size - 256 * 1024) // PAGE * PAGE
                f.seek(at)
                f.write(file_blob(self.rng, self.rng.randint(1, 64) * PAGE))
        return self.burst()
