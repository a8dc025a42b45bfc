"""Benchmark: the SQL Server page scan (and the RAR signature scan) against
`cat IMAGE > /dev/null` on the same cached file (target: page scan <= 3x cat).

Builds (or takes with --image) an image of realistic non-zero content (bench._common filler)
with real SQL Server pages (from the shared ITHelpdesk fixture, when present; synthetic pages
with valid checksums otherwise) and RAR archives sprinkled at 512-aligned places, warms the page
cache, then times `cat` and each scan side by side in this process (best of N) and prints the
ratios. Default size 4 GiB (--size to shrink); the built image is deleted unless --keep.

    .venv/bin/python bench/carve.py [--size 4G] [--image IMG] [--repeat 3]
    .venv/bin/python bench/carve.py --extract-only     # only the extraction comparison

Then `carve-rar --extract` against `bsdtar -x` on the same carved archives (extract_bench):
every shared RAR fixture bsdtar extracts without error, carved out of one image, unpacked by us
(libarchive, our own checks, .part + fsync + rename per member) and by one `bsdtar -x` per
archive; and one large member (the libarchive 4-volume PPMd set, 241 MB decompressed) unpacked
from its carved volumes by us and by `cat VOLUMES | bsdtar -x -f -`.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import bench_image, command, side_by_side  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                        "shared", "fixtures")


def _sample_pages() -> list[bytes]:
    path = os.path.join(FIXTURES, "mdf", "ITHelpdesk", "Database.mdf.gz")
    if os.path.exists(path):
        data = gzip.decompress(open(path, "rb").read())
        return [data[i: i + 8192] for i in range(0, len(data), 8192)
                if data[i: i + 8192].count(0) != 8192]
    from core.structs.mssql import page_checksum
    pages = []
    for pid in range(64):
        buf = bytearray(np.random.default_rng(pid).integers(0, 256, 8192, dtype=np.uint8))
        buf[:96] = bytes(96)
        buf[0], buf[1] = 1, 1
        struct.pack_into("<HH", buf, 4, 0x200, 0)
        struct.pack_into("<H", buf, 22, 1)
        struct.pack_into("<H", buf, 30, 200)
        struct.pack_into("<IH", buf, 32, pid, 1)
        struct.pack_into("<I", buf, 60, page_checksum(bytes(buf)))
        pages.append(bytes(buf))
    return pages


def sprinkle(path: str, pages: int, archives: int, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    size = os.path.getsize(path)
    samples = _sample_pages()
    rar = os.path.join(FIXTURES, "rar", "rarfile", "rar5-crc.rar")
    rar_bytes = open(rar, "rb").read() if os.path.exists(rar) else None
    with open(path, "r+b") as f:
        for i, sector in enumerate(rng.integers(0, (size - 8192) // 512, pages).tolist()):
            f.seek(sector * 512)
            f.write(samples[i % len(samples)])
        if rar_bytes:
            for off in rng.integers(0, size - len(rar_bytes), archives).tolist():
                f.seek(off)
                f.write(rar_bytes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="4G", help="image size to build (default 4G)")
    ap.add_argument("--image", help="use this image instead of building one")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    ap.add_argument("--pages", type=int, default=5000, help="pages to sprinkle (default 5000)")
    ap.add_argument("--keep", action="store_true", help="keep the built image")
    ap.add_argument("--extract-only", action="store_true",
                    help="only the extraction comparison against bsdtar")
    args = ap.parse_args(argv)
    if args.extract_only:
        return extract_bench(args.repeat)

    from core.carve.mssql import collect_records, find_page_records
    from core.carve.rar import find_signatures
    from core.source import Evidence

    with bench_image(args.image, args.size, "srsalvage-bench-carve-", lambda p: sprinkle(p, args.pages, 50),
                     keep=args.keep) as path:
        ev = Evidence(path)
        found: dict[str, int] = {}

        def page_scan() -> None:
            found["pages"] = len(collect_records(find_page_records(ev)))

        def rar_scan() -> None:
            found["rar"] = sum(1 for _ in find_signatures(ev))

        cat = command(["cat", path])
        pages = side_by_side("mssql page scan", page_scan, "cat IMAGE >/dev/null", cat,
                             repeat=args.repeat)
        rars = side_by_side("rar signature scan", rar_scan, "cat IMAGE >/dev/null", cat,
                            repeat=args.repeat)
        print(f"image {ev.size} bytes: {found['pages']} page copies, "
              f"{found['rar']} RAR signatures")
        print(pages.line())
        print(rars.line())
        print(f"RATIO page-scan/cat = {pages.ratio:.2f}x (target <= 3x); "
              f"rar-scan/cat = {rars.ratio:.2f}x")
        ev.close()
    return extract_bench(args.repeat)


def extract_bench(repeat: int) -> int:
    """carve-rar --extract vs bsdtar -x on the same carved archives (ratios, not asserted)."""
    import glob
    import shutil
    import subprocess
    import tempfile

    from bench._common import side_by_side
    from core.carve.rar import carve_rar
    from core.carve.rar_extract import extract_archive, extract_archives, join_volumes
    from core.source import Evidence

    bsdtar = shutil.which("bsdtar")
    rar_dir = os.path.join(FIXTURES, "rar")
    if bsdtar is None or not os.path.isdir(rar_dir):
        print("extraction bench skipped: needs bsdtar and the shared RAR fixtures")
        return 0
    tmp = tempfile.mkdtemp(prefix="srsalvage-bench-extract-")
    try:
        # the fixtures bsdtar extracts cleanly, each once, carved out of one image
        clean = []
        for path in sorted(glob.glob(os.path.join(rar_dir, "*", "*"))):
            if "multivolume" in path or not os.path.isfile(path) or \
                    not open(path, "rb").read().startswith(b"Rar!"):
                continue
            probe = os.path.join(tmp, "probe")
            os.makedirs(probe)
            try:        # bsdtar 3.6.2 loops forever on test_read_format_rar5_dirdata.rar
                rc = subprocess.run([bsdtar, "-x", "-f", path], cwd=probe, capture_output=True,
                                    timeout=20).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            shutil.rmtree(probe)
            if rc == 0:
                clean.append(path)
        img = os.path.join(tmp, "archives.img")
        with open(img, "wb") as f:
            for path in clean:
                f.write(open(path, "rb").read() + bytes(4096))
        with Evidence(img) as ev:
            archives = carve_rar(ev, os.path.join(tmp, "carved"), [img]).archives
        runs = iter(range(1 << 30))

        def ours() -> None:
            out = os.path.join(tmp, f"ours-{next(runs)}")
            extract_archives(archives, out)
            shutil.rmtree(out)

        def theirs() -> None:
            out = os.path.join(tmp, f"bsdtar-{next(runs)}")
            for a in archives:
                d = os.path.join(out, f"at-{a.offset}")
                os.makedirs(d)
                subprocess.run([bsdtar, "-x", "-f", a.path], cwd=d, capture_output=True)
            shutil.rmtree(out)

        many = side_by_side(f"extract {len(archives)} carved archives", ours,
                            "bsdtar -x each", theirs, repeat=repeat)
        print(many.line())

        # one large member: the PPMd volume set (it ends in a CRC error in both)
        vols = sorted(glob.glob(os.path.join(rar_dir, "libarchive",
                                             "test_read_format_rar_multivolume.part*.rar")))
        big = None
        if len(vols) == 4:
            img2 = os.path.join(tmp, "vols.img")
            with open(img2, "wb") as f:
                for path in vols:
                    f.write(open(path, "rb").read())
            with Evidence(img2) as ev:
                vol_arcs = carve_rar(ev, os.path.join(tmp, "carved-vols"), [img2]).archives
            joined = join_volumes(vol_arcs)

            def ours_big() -> None:
                out = os.path.join(tmp, f"ours-{next(runs)}")
                extract_archive([a.path for a in vol_arcs], out, joined)
                shutil.rmtree(out)

            def theirs_big() -> None:
                out = os.path.join(tmp, f"bsdtar-{next(runs)}")
                os.makedirs(out)
                cat = subprocess.Popen(["cat"] + [a.path for a in vol_arcs],
                                       stdout=subprocess.PIPE)
                subprocess.run([bsdtar, "-x", "-f", "-"], stdin=cat.stdout, cwd=out,
                               capture_output=True)
                cat.wait()
                shutil.rmtree(out)

            big = side_by_side("extract the 241 MB PPMd member (4 volumes)", ours_big,
                               "cat VOLUMES | bsdtar -x -f -", theirs_big, repeat=repeat)
            print(big.line())
        print(f"RATIO extract/bsdtar = {many.ratio:.2f}x on {len(archives)} small archives"
              + (f"; {big.ratio:.2f}x on one 241 MB member" if big else ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
