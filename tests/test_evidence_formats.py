"""Evidence as technicians bring it: E01 from real ewfacquire, split raw, ddrescue image + mapfile.

The SR images come from real lvm2 (tests/test_reconstruct_lvm.py's builder, root and loop
devices); the E01 segment sets from real `ewfacquire`, the rescued images and mapfiles from a
real `ddrescue` run over a FUSE file that fails with EIO on chosen ranges
(tests/fuse_badblocks.py, mfusepy over libfuse 3). Each test skips with the reason when a tool
is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

import realtools as rt
from app.cli import main

MiB = 1 << 20
E = 4 << 20
HERE = os.path.dirname(os.path.abspath(__file__))


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys, argv, rc_ok=(0,)):
    rc, out, err = _run(capsys, argv)
    assert rc in rc_ok, err
    return json.loads(out), err


def _sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lvm_doc(capsys, image, *extra):
    doc, _ = _json(capsys, ["lvm", image, "--json", *extra])
    doc["image"].pop("path")
    return doc


def _rec_doc(capsys, image, *extra):
    doc, _ = _json(capsys, ["reconstruct", image, "--json", *extra])
    doc["image"].pop("path")
    return doc


@pytest.fixture(scope="module")
def real_sr(tmp_path_factory):
    """A real-lvm2 SR image with its metadata intact (lvm, reconstruct and export all work)."""
    from test_reconstruct_lvm import build_sr
    tmp = tmp_path_factory.mktemp("evidence-sr")
    img, truth = build_sr(tmp, wipe=False)
    return img, truth


def _ewfacquire(raw, target, segment_bytes: int, compression: str = "none") -> list[str]:
    if not rt.have("ewfacquire"):
        pytest.skip("ewfacquire not installed (apt-get install ewf-tools)")
    rt.run("ewfacquire", "-u", "-q", "-t", str(target), "-f", "encase6", "-S", str(segment_bytes),
           "-c", compression, "-d", "sha1", "-C", "case-16", "-e", "srsalvage tests", str(raw))
    d = os.path.dirname(str(target))
    base = os.path.basename(str(target))
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith(base + ".E"))


@pytest.mark.slow
@pytest.mark.realtools
def test_e01_from_real_ewfacquire_gives_what_the_raw_image_gives(real_sr, tmp_path, capsys):
    """lvm, reconstruct, export (raw and vhd) and verify on a 3-segment E01 made by ewfacquire
    from a real-lvm2 SR image answer exactly what they answer on the raw image."""
    img, truth = real_sr
    segments = _ewfacquire(img, tmp_path / "sr", 80 * MiB)
    assert [os.path.splitext(s)[1] for s in segments] == [".E01", ".E02", ".E03"]
    e01 = segments[0]
    assert _lvm_doc(capsys, e01) == _lvm_doc(capsys, img)
    assert _rec_doc(capsys, e01) == _rec_doc(capsys, img)
    names = truth["_names"]
    for key in ("A", "B", "C", "Q"):
        for fmt in ("raw", "vhd"):
            docs = []
            for source in (img, e01):
                out = tmp_path / f"{key}-{fmt}-{os.path.basename(str(source))}"
                doc, _ = _json(capsys, ["export", source, "--vdi", names[key], "--format", fmt,
                                        "-o", out, "--json"])
                assert doc["sha256"] == _sha(out) and doc["unreadable_virtual"] == []
                docs.append((doc["bytes"], doc["sha256"]))
            assert docs[0] == docs[1], (key, fmt)
    # verify: the MD5 and SHA1 ewfacquire stored match the raw image's
    doc, _ = _json(capsys, ["verify", e01, "--json"])
    md5, sha1 = hashlib.md5(), hashlib.sha1()
    with open(img, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            md5.update(block)
            sha1.update(block)
    assert doc["stored"] == {"MD5": md5.hexdigest(), "SHA1": sha1.hexdigest()}
    assert doc["computed"] == doc["stored"] and doc["ok"] and doc["format"] == "ewf"
    assert doc["header"]["case_number"] == "case-16"
    # as labs keep them: deflate-compressed chunks, in more segments
    packed = _ewfacquire(img, tmp_path / "packed", 2 * MiB, "deflate:fast")
    assert len(packed) > 3
    assert _lvm_doc(capsys, packed[0]) == _lvm_doc(capsys, img)
    doc, _ = _json(capsys, ["export", packed[0], "--vdi", names["Q"], "--format", "raw",
                            "-o", tmp_path / "q-packed.raw", "--json"])
    assert doc["sha256"] == hashlib.sha256(truth[names["Q"]]["raw"]).hexdigest()  # qemu's disk
    doc, _ = _json(capsys, ["verify", packed[0], "--json"])
    assert doc["ok"] and doc["computed"]["MD5"] == md5.hexdigest()


@pytest.mark.slow
@pytest.mark.realtools
def test_e01_corrupted_chunk_is_unreadable_and_fails_verify(tmp_path, capsys):
    """A chunk whose bytes were changed in segment 2 fails libewf's checksum: verify exits 1
    naming the MD5/SHA1 mismatch and exactly that chunk as unreadable; lvm lists it too."""
    import random
    rng = random.Random(16)
    raw = tmp_path / "disk.raw"
    data = bytearray(6 * MiB)
    for at in range(0, len(data), 64 << 10):
        data[at: at + 4096] = rng.randbytes(4096)
    raw.write_bytes(bytes(data))
    segments = _ewfacquire(raw, tmp_path / "disk", 1 * MiB)
    assert len(segments) >= 3
    ok, _ = _json(capsys, ["verify", segments[0], "--json"])
    assert ok["ok"] and ok["unreadable"] == []
    # flip bytes of a chunk stored (uncompressed) in the second segment
    seg2 = bytearray(open(segments[1], "rb").read())
    probe_at = None
    for at in range(0, len(data), 64 << 10):
        i = seg2.find(bytes(data[at: at + 4096]))
        if i >= 0:
            probe_at, seg_off = at, i
            break
    assert probe_at is not None
    seg2[seg_off + 100: seg_off + 116] = b"\xff" * 16
    with open(segments[1], "wb") as f:
        f.write(seg2)
    chunk = probe_at // 32768 * 32768
    rc, out, err = _run(capsys, ["verify", segments[0], "--json"])
    doc = json.loads(out)
    assert rc == 1 and "MD5" in err
    assert doc["mismatched"] == ["MD5", "SHA1"] and not doc["ok"]
    assert doc["unreadable"] == [[chunk, chunk + 32768]]
    lvm, _ = _json(capsys, ["lvm", segments[0], "--json"])
    assert lvm["unreadable"] == [[chunk, chunk + 32768]]


def test_ewf_garbage_is_a_one_line_error_or_a_readable_image(tmp_path):
    """Garbage after an EWF signature (and a real segment cut short or overwritten) never
    crashes: libewf refuses it (SourceError, one line) or it opens and reads within its size."""
    from hypothesis import HealthCheck, given, settings, strategies as st
    from core.errors import SourceError
    from core.evidence import open_image

    real = None
    if rt.have("ewfacquire"):
        raw = tmp_path / "small.raw"
        raw.write_bytes(os.urandom(256 << 10))
        real = open(_ewfacquire(raw, tmp_path / "small", 1 * MiB)[0], "rb").read()

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=4096), st.integers(0, 1 << 20), st.booleans())
    def check(garbage, cut, from_real):
        path = tmp_path / "g.E01"
        if from_real and real is not None:
            body = bytearray(real[: max(13, cut % len(real))])
            at = 13 + cut % max(1, len(body) - 13)
            body[at: at + len(garbage)] = garbage
            body = bytes(body)
        else:
            body = b"EVF\x09\x0d\x0a\xff\x00" + garbage
        path.write_bytes(body)
        try:
            ev = open_image(str(path))
        except SourceError as exc:
            assert "\n" not in str(exc)
            return
        try:
            ev.read(0, 4096)
            ev.read(max(0, ev.size - 100), 200)
        finally:
            ev.close()

    check()


def test_not_an_ewf_and_missing_segment_are_one_line_errors(tmp_path, capsys):
    fake = tmp_path / "x.E01"
    fake.write_bytes(b"EVF\x09\x0d\x0a\xff\x00" + bytes(600))
    rc, out, err = _run(capsys, ["lvm", fake])
    assert rc == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err


# -- ddrescue over a failing (FUSE) disk --------------------------------------------------------
def _need_fuse() -> None:
    if not rt.have("ddrescue"):
        pytest.skip("ddrescue not installed (apt-get install gddrescue)")
    if not rt.is_root() or not os.path.exists("/dev/fuse") or not rt.have("fusermount3"):
        pytest.skip("a FUSE mount needs root, /dev/fuse and fusermount3 (apt-get install fuse3)")
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"mfusepy/libfuse3 not usable: {exc}")


def _ddrescue_through_bad_disk(source, bad, out_img, mapfile) -> None:
    """Serve `source` through FUSE with EIO on `bad`, rescue it with real ddrescue."""
    mnt = os.path.join(os.path.dirname(str(out_img)), "failing-disk")
    os.makedirs(mnt, exist_ok=True)
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fuse_badblocks.py"), str(source),
                             mnt] + [f"{a}:{b}" for a, b in bad],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(mnt, "disk")):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "FUSE mount did not come up"
            time.sleep(0.05)
        r = subprocess.run(["ddrescue", "-q", os.path.join(mnt, "disk"), str(out_img),
                            str(mapfile)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _vhd_block_data(vhd: bytes, block: int) -> tuple[int, int, bytes]:
    """(LV offset of the block's data, block size, bitmap) read straight from the VHD bytes
    (header at 512: table_offset u64 at +16, block_size u32 at +32; BAT entries u32 sectors)."""
    table = struct.unpack_from(">Q", vhd, 512 + 16)[0]
    block_size = struct.unpack_from(">I", vhd, 512 + 32)[0]
    sector = struct.unpack_from(">I", vhd, table + 4 * block)[0]
    bitmap_bytes = -(-(block_size // 512) // 8 // 512) * 512
    return sector * 512 + bitmap_bytes, block_size, vhd[sector * 512: sector * 512 + bitmap_bytes]


@pytest.fixture(scope="module")
def rescued(real_sr, tmp_path_factory):
    """The real SR read by ddrescue through a disk that fails on two ranges: one inside VDI A's
    block 3 data, one in a free extent. Returns (image, mapfile, truth, expectations)."""
    _need_fuse()
    img, truth = real_sr
    tmp = tmp_path_factory.mktemp("ddrescue")
    names, D = truth["_names"], truth["_pe_start"]
    a = truth[names["A"]]
    data_off, block_size, bitmap = _vhd_block_data(a["vhd"], 3)
    lv0 = data_off + 64 * 1024
    lv1 = lv0 + 8192
    assert lv0 // E == (lv1 - 1) // E
    # the block's bitmap says those sectors are written: they are the virtual disk's bytes
    s0 = (lv0 - data_off) // 512
    bits = [(bitmap[i // 8] >> (7 - i % 8)) & 1 for i in range(s0, s0 + 16)]
    assert all(bits)
    pe = a["pes"][lv0 // E]
    d0 = D + pe * E + lv0 % E
    free0 = D + 41 * E + 12345 * 512
    bad = [(d0, d0 + 8192), (free0, free0 + 4096)]
    out = tmp / "rescued.img"
    maps = tmp / "maps"
    maps.mkdir()
    mapfile = maps / "run1.mapfile"
    _ddrescue_through_bad_disk(img, bad, out, mapfile)
    v0 = 3 * block_size + (lv0 - data_off)
    return out, mapfile, truth, {"disk": [list(r) for r in sorted(bad)], "lv": [[lv0, lv1]],
                                 "virtual": [[v0, v0 + 8192]], "A": names["A"], "B": names["B"],
                                 "source": img}


@pytest.mark.slow
@pytest.mark.realtools
def test_ddrescue_mapfile_ranges_at_disk_lv_and_virtual_offsets(rescued, tmp_path, capsys):
    out, mapfile, truth, want = rescued
    from core.evidence.ddrescue_map import read_mapfile
    doc = read_mapfile(str(mapfile))
    assert [list(r) for r in doc.unreadable(os.path.getsize(out))] == want["disk"]
    lvm, _ = _json(capsys, ["lvm", out, "--json", "--mapfile", mapfile])
    assert lvm["unreadable"] == want["disk"]
    assert [(r["lv"], r["ranges"]) for r in lvm["unreadable_lv"]] == [(want["A"], want["lv"])]
    scan, _ = _json(capsys, ["scan", out, "--json", "--mapfile", mapfile])
    assert scan["unreadable"] == want["disk"]
    # an export through the unread range names exactly its virtual bytes, and holds zeros there
    exp = tmp_path / "a.raw"
    doc, err = _json(capsys, ["export", out, "--vdi", want["A"], "--format", "raw", "-o", exp,
                              "--json", "--mapfile", mapfile])
    assert doc["unreadable_virtual"] == want["virtual"] and doc["unreadable_lv"] == want["lv"]
    assert "unreadable" in err
    v0, v1 = want["virtual"][0]
    got = open(exp, "rb").read()
    assert got[v0:v1] == bytes(v1 - v0)
    ref = tmp_path / "a-ref.raw"
    _json(capsys, ["export", want["source"], "--vdi", want["A"], "--format", "raw",
                   "-o", ref, "--json"])
    orig = open(ref, "rb").read()
    assert orig[v0:v1] != bytes(v1 - v0)                  # real data was lost there
    assert got[:v0] == orig[:v0] and got[v1:] == orig[v1:]  # and only there
    # the VHD export covers the same virtual ranges; an untouched VDI lists none
    doc, _ = _json(capsys, ["export", out, "--vdi", want["A"], "--format", "vhd",
                            "-o", tmp_path / "a.vhd", "--json", "--mapfile", mapfile])
    assert doc["unreadable_virtual"] == want["virtual"]
    doc, _ = _json(capsys, ["export", out, "--vdi", want["B"], "--format", "raw",
                            "-o", tmp_path / "b.raw", "--json", "--mapfile", mapfile])
    assert doc["unreadable_virtual"] == [] and doc["unreadable"] == want["disk"]
    # reconstruction names the LE that sits on unreadable evidence
    rec, err = _json(capsys, ["reconstruct", out, "--json", "--mapfile", mapfile])
    assert rec["unreadable"] == want["disk"]
    a = next(v for v in rec["vdis"] if v["lv"] == want["A"])
    assert a["unreadable_les"] == [want["lv"][0][0] // E]
    guard = [f for f in rec["findings"] if f["kind"] == "evidence-unreadable"]
    assert len(guard) == 1 and guard[0]["details"]["ranges"] == want["disk"]
    # check exits 1 when it finds errors (unreadable VHD sectors are one)
    chk, _ = _json(capsys, ["check", out, "--vdi", want["A"], "--json", "--mapfile", mapfile],
                   rc_ok=(0, 1))
    bad = [f for f in chk["findings"] if f["kind"] == "lv-unreadable"]
    assert len(bad) == 1 and bad[0]["details"]["ranges"] == want["lv"]
    rc, out_v, _ = _run(capsys, ["verify", out, "--json", "--mapfile", mapfile])
    assert rc == 1 and json.loads(out_v)["unreadable"] == want["disk"]


@pytest.mark.slow
@pytest.mark.realtools
def test_without_its_mapfile_a_rescued_image_hides_the_damage(rescued, tmp_path, capsys):
    """The same image without the mapfile reports nothing: ddrescue's zeros look like data.
    Beside the image as IMAGE.map (or .mapfile/.log) the mapfile is found by itself."""
    out, mapfile, truth, want = rescued
    lvm, _ = _json(capsys, ["lvm", out, "--json"])
    assert lvm["unreadable"] == [] and lvm["unreadable_lv"] == []
    doc, _ = _json(capsys, ["export", out, "--vdi", want["A"], "--format", "raw",
                            "-o", tmp_path / "a.raw", "--json"])
    assert doc["unreadable_virtual"] == []
    for suffix in (".map", ".log"):
        beside = f"{out}{suffix}"
        shutil.copy(mapfile, beside)
        try:
            lvm, _ = _json(capsys, ["lvm", out, "--json"])
            assert lvm["unreadable"] == want["disk"], suffix
        finally:
            os.unlink(beside)



# -- split raw ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realtools
@pytest.mark.parametrize("scheme", ["numeric", "alpha"])
def test_split_raw_joined_read_only(real_sr, tmp_path, capsys, scheme):
    """`split -b` pieces (disk.001 ... or disk.aa ...) read as the one disk they were cut from."""
    if not rt.have("split"):
        pytest.skip("coreutils split not installed")
    img, truth = real_sr
    args = ["split", "-b", str(37 * MiB + 512)]
    if scheme == "numeric":
        args += ["-d", "-a", "3", "--numeric-suffixes=1"]
    rt.run(*args, str(img), str(tmp_path / "disk."))
    parts = sorted(os.listdir(tmp_path))
    first = tmp_path / parts[0]
    assert parts[0] == ("disk.001" if scheme == "numeric" else "disk.aa") and len(parts) == 6
    before = {p: os.stat(tmp_path / p).st_mtime_ns for p in parts}
    assert _lvm_doc(capsys, first) == _lvm_doc(capsys, img)
    # any segment names the set
    assert _lvm_doc(capsys, tmp_path / parts[2]) == _lvm_doc(capsys, img)
    key = truth["_names"]["A"]
    digests = []
    for source in (img, first):
        doc, _ = _json(capsys, ["export", source, "--vdi", key, "--format", "raw",
                                "-o", tmp_path.parent / f"{scheme}-{os.path.basename(str(source))}.raw",
                                "--json"])
        digests.append(doc["sha256"])
    assert digests[0] == digests[1]
    doc, _ = _json(capsys, ["verify", first, "--json"])
    assert doc["format"] == "split" and doc["computed"]["SHA1"] == hashlib.sha1(
        open(img, "rb").read()).hexdigest()
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in parts} == before


def test_split_reads_across_segment_boundaries(tmp_path):
    from core.evidence import open_image
    data = os.urandom(10000)
    for i, at in enumerate(range(0, len(data), 3000)):
        (tmp_path / f"d.{i:03d}").write_bytes(data[at: at + 3000])
    ev = open_image(str(tmp_path / "d.000"))
    assert ev.format == "split" and ev.size == len(data) and len(ev.segments) == 4
    for off, n in [(0, 10000), (2990, 20), (5999, 3002), (9999, 5), (10000, 1)]:
        assert ev.read(off, n) == data[off: off + n]
    assert b"".join(bytes(v) for _, v in ev.windows(window=4096, skip_holes=False))[:len(data)] \
        == data
    ev.close()
    # a lone .001 is an ordinary raw image
    (tmp_path / "solo.001").write_bytes(b"x" * 600)
    ev = open_image(str(tmp_path / "solo.001"))
    assert ev.format == "raw" and ev.size == 600
    ev.close()


# -- mapfile parsing ----------------------------------------------------------------------------
MAPFILE = """# Mapfile. Created by GNU ddrescue version 1.27
# current_pos  current_status  current_pass
0x00300000     -               3
#      pos        size  status
0x00000000  0x00100000  +
0x00100000  0x00000200  -
0x00100200  0x001FFE00  +
0x00300000  0x00010000  /
0x00310000  0x00010000  *
0x00320000  0x000E0000  +
0x00400000  0x00100000  ?
"""


def test_mapfile_everything_not_finished_is_unreadable(tmp_path):
    from core.evidence.ddrescue_map import parse_mapfile
    doc = parse_mapfile(MAPFILE)
    assert doc.current_status == "-" and doc.end == 0x500000
    assert doc.unreadable(0x500000) == [(0x100000, 0x100200), (0x300000, 0x320000),
                                        (0x400000, 0x500000)]
    # an image larger than the mapfile's domain: the rest was never read either
    assert doc.unreadable(0x600000)[-1] == (0x400000, 0x600000)
    # decimal and octal positions as ddrescue accepts them
    doc = parse_mapfile("0 +\n0 512 +\n512 01000 -\n")
    assert doc.unreadable(1024) == [(512, 1024)]


def test_mapfile_applied_to_a_short_image_and_found_beside_it(tmp_path, capsys):
    from core.evidence import open_image
    img = tmp_path / "disk.img"
    img.write_bytes(b"\x11" * 0x100000)  # ddrescue did not write the unread tail
    (tmp_path / "disk.map").write_text(MAPFILE)
    ev = open_image(str(img))
    assert ev.mapfile == str(tmp_path / "disk.map") and ev.size == 0x500000
    # the map's unfinished areas, and everything past the file's end (a truncated copy)
    assert ev.unreadable == [(0x100000, 0x500000)]
    calls = []
    pread = ev._pread_raw
    ev._pread_raw = lambda off, n: calls.append(n) or pread(off, n)
    assert ev.read(0xffff0, 0x400000) == b"\x11" * 16 + bytes(0x400000 - 16)
    assert calls == [0x400000]  # the missing tail in one read, not sector by sector
    assert ev.unreadable == [(0x100000, 0x500000)]
    ev.close()
    (tmp_path / "disk.log").write_text("not a mapfile at all\n")
    (tmp_path / "disk.map").unlink()
    ev = open_image(str(img))  # an unrelated .log beside the image is not taken for one
    assert ev.mapfile is None and ev.unreadable == []
    ev.close()
    rc, out, err = _run(capsys, ["lvm", img, "--mapfile", tmp_path / "disk.log"])
    assert rc == 1 and err.count("\n") == 1 and "not a ddrescue status line" in err
    rc, out, err = _run(capsys, ["lvm", img, "--mapfile", tmp_path / "nope.map"])
    assert rc == 1 and "no such mapfile" in err


def test_mapfile_parser_garbage_is_a_one_line_error():
    from hypothesis import given, settings, strategies as st
    from core.evidence.ddrescue_map import MapfileError, parse_mapfile

    line = st.one_of(
        st.text(max_size=60),
        st.builds(lambda a, b, c: f"{a} {b} {c}", st.integers(-5, 1 << 70).map(hex),
                  st.integers(-5, 1 << 40), st.sampled_from(list("?*/-+FGx "))),
    )

    @settings(max_examples=300, deadline=None)
    @given(st.lists(line, max_size=12))
    def check(lines):
        text = "\n".join(lines)
        try:
            doc = parse_mapfile(text)
        except MapfileError as exc:
            assert "\n" not in str(exc)
            return
        ranges = doc.unreadable(doc.end + 10)
        assert all(a < b for a, b in ranges)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:]))

    check()


@pytest.mark.slow
@pytest.mark.realtools
async def test_workstation_shows_unread_ranges_on_the_map_and_in_the_hex_view(rescued, tmp_path):
    """The disk map marks the grain holding the unread range `!`; the hex view shows its bytes
    as `??` on the disk and at the VDI's virtual offsets, never as zeros."""
    from app.workstation import WorkstationApp, open_session
    from core.vdi import resolve_vdi

    out, mapfile, truth, want = rescued
    session = open_session(str(out), mapfile=str(mapfile))
    app = WorkstationApp(session=session)
    async with app.run_test(size=(140, 44)) as pilot:
        for _ in range(300):
            await pilot.pause(0.05)
            if app.main.analysed:
                break
        await pilot.pause(0.2)
        dmap = app.main.map
        model = dmap.model
        g = model.grain_of(want["disk"][0][0])
        assert model.unreadable is not None and model.unreadable[g]
        assert int(model.unreadable.sum()) == 2  # two grains, nothing else
        rows = "".join(dmap.render_line(y).text for y in range(dmap.size.height))
        assert "!" in rows
        header = str(app.main.query_one("#header").render())
        assert "2 unreadable ranges" in header
        hexv = app.main.hex
        d0 = want["disk"][0][0]
        hexv.set_space(session.ev, title="disk")
        hexv.goto(d0 + 16)
        await pilot.pause()
        row = (d0 + 16) // 16 - int(hexv.scroll_y)
        assert "??" in hexv.render_line(row).text and "?" * 16 in hexv.render_line(row).text
        vd = resolve_vdi(session.ev, want["A"]).chain().virtual_space()
        hexv.set_space(vd, title="virtual")
        assert hexv.unreadable == [tuple(r) for r in want["virtual"]]
        v0 = want["virtual"][0][0]
        hexv.goto(v0 + 32)
        await pilot.pause()
        line = hexv.render_line((v0 + 32) // 16 - int(hexv.scroll_y)).text
        assert "??" in line
        line = hexv.render_line((v0 - 16) // 16 - int(hexv.scroll_y)).text
        assert "??" not in line
        # an export from the workstation names the same virtual ranges in its notes and the log
        vg = session.sel.vg
        lv = session.sel.gen.lvs[want["A"]]
        result = session.export(vg, lv, str(tmp_path / "a.raw"), "raw")
        assert any("unreadable evidence" in n and f"{v0}-{v0 + 8192}" in n for n in result.notes)
        entry = session.case.audit[-1]
        assert entry["action"] == "export" and entry["unreadable_virtual"] == want["virtual"]
        await pilot.press("q")


async def test_workstation_header_names_the_e01_and_its_stored_hash(tmp_path):
    from app.workstation import WorkstationApp, open_session

    raw = tmp_path / "small.raw"
    raw.write_bytes(os.urandom(3 * MiB))
    segments = _ewfacquire(raw, tmp_path / "small", 1 * MiB)
    md5 = hashlib.md5(raw.read_bytes()).hexdigest()
    session = open_session(segments[0])
    app = WorkstationApp(session=session)
    async with app.run_test(size=(160, 40)) as pilot:
        for _ in range(200):
            await pilot.pause(0.05)
            if app.main.analysed or app.session.analysis_error:
                break
        app.main._update_header()
        await pilot.pause()
        header = str(app.main.query_one("#header").render())
        assert f"EWF x{len(segments)}" in header and f"MD5 {md5[:8]}" in header
        assert "READ-ONLY" in header
        await pilot.press("q")
