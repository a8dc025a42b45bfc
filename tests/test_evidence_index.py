"""The evidence index (issue 14): one read of the evidence serves lvm, scan, reconstruct and the
carvers; it is bound to its evidence and never used for other bytes.

What the identity sees (core.evidence_index.identity): size, device, inode, real path and mtime
of the file, and a sha256 over sampled sectors (the first 64 KiB, 32 windows of 4 KiB spread over
the image, the last 4 KiB). A change inside a sample is seen even when the writer restores the
mtime; a change outside the samples is seen by the mtime; a change outside the samples whose
writer restores the mtime is NOT seen (test_identity_cannot_see_*: the documented limit;
`--no-index` reads afresh).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from core.case import IDENTITY_SAMPLES
from core.demo import build_demo
from core.evidence import open_image
from core.evidence_index import EvidenceIndex, IndexUnusable, index_path
from core.match.features import SectorReader, compute_pe_features

MiB = 1 << 20
E = 4 * MiB
DEMO_BYTES = 768 * MiB      # the demo SR at half its size: same structures, faster tests


@pytest.fixture(autouse=True)
def _index_beside_image(monkeypatch, _evidence_index_dir):
    """These tests look at the default place (conftest may relocate indexes for the others)."""
    monkeypatch.delenv("SRSALVAGE_INDEX_DIR", raising=False)


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    """Two demo SRs of the same size with other bytes (seeds), metadata wiped on one."""
    d = tmp_path_factory.mktemp("demo")
    a, b = d / "a.img", d / "b.img"
    build_demo(str(a), damage="metadata", seed=1, disk_bytes=DEMO_BYTES)
    build_demo(str(b), damage="partition-table", seed=2, disk_bytes=DEMO_BYTES)
    assert a.stat().st_size == b.stat().st_size
    return a, b


def copy(src, dst) -> None:
    """A copy that keeps the holes (the demo images are sparse)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


def cli(*argv: str) -> tuple[int, str, str]:
    """srsalvage in this process (so /proc/self/io counts its reads)."""
    from app.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError("no rchar")


def json_docs(img, outdir, *extra: str) -> dict[str, str]:
    """The JSON of every triage command (timings and output dirs normalised)."""
    docs = {}
    for name, argv in (("lvm", ["lvm", str(img), "--json"]),
                       ("scan", ["scan", str(img), "--json"]),
                       ("reconstruct", ["reconstruct", str(img), "--json", "--no-case"]),
                       ("carve-mdf", ["carve-mdf", str(img), "-o", str(outdir / "mdf"),
                                      "--json", "--no-case"]),
                       ("carve-rar", ["carve-rar", str(img), "-o", str(outdir / "rar"),
                                      "--json", "--no-case"])):
        rc, out, err = cli(*argv, *extra)
        assert rc == 0, (name, err)
        doc = json.loads(out)
        doc.pop("seconds", None)
        docs[name] = json.dumps(doc, sort_keys=True).replace(str(outdir), "OUT")
    return docs


def same_with_and_without_index(img, tmp_path) -> dict[str, str]:
    with_index = json_docs(img, tmp_path / "a")
    assert os.path.exists(index_path(str(img)))
    without = json_docs(img, tmp_path / "b", "--no-index")
    for name in with_index:
        assert with_index[name] == without[name], name
    return with_index


# -- results are the same ----------------------------------------------------------------------
def test_demo_results_identical_with_and_without_index(tmp_path, demo_images):
    a, _ = demo_images
    img = tmp_path / "sr.img"
    copy(a, img)
    docs = same_with_and_without_index(img, tmp_path)
    rec = json.loads(docs["reconstruct"])
    assert rec["vdis"] and json.loads(docs["carve-mdf"])["files"]
    assert json.loads(docs["carve-rar"])["archives"]


def test_check_and_export_take_the_lvm_analysis_from_the_index(tmp_path, demo_images):
    # the commands that find one VDI first (check, export, carve --vdi) take the LVM analysis
    # from the index: the same answers, and after the triage only the VDI is read
    img = tmp_path / "sr.img"
    copy(demo_images[1], img)
    rc, out, _ = cli("reconstruct", str(img), "--json")           # makes the index
    key = next(v["lv"] for v in json.loads(out)["vdis"]
               if v["lv"] and v["kind"] == "vhd" and v["status"] == "live")
    size = img.stat().st_size
    outs = {}
    for extra in ([], ["--no-index"]):
        tag = "b" if extra else "a"
        before = rchar()
        rc, chk, err = cli("check", str(img), "--vdi", key, "--json", *extra)
        rc2, exp, err2 = cli("export", str(img), "--vdi", key, "--format", "raw", "-o",
                             str(tmp_path / f"{tag}.raw"), "--json", "--no-case", *extra)
        read = rchar() - before
        assert rc in (0, 1) and rc2 == 0, err + err2
        doc = json.loads(exp)
        assert doc.pop("path").endswith(f"{tag}.raw") and doc["sha256"]
        outs[tag] = (chk, doc, read)
    assert outs["a"][:2] == outs["b"][:2]
    assert outs["a"][2] < outs["b"][2] - 0.3 * size


def test_real_lvm2_results_identical_with_and_without_index(tmp_path):
    from test_reconstruct_lvm import build_sr
    for wipe in (False, True):
        work = tmp_path / f"wipe-{wipe}"
        work.mkdir()
        img, _truth = build_sr(work, wipe=wipe)
        docs = same_with_and_without_index(img, work)
        lvm = json.loads(docs["lvm"])
        assert bool(lvm["volume_groups"]) != wipe
        assert len(json.loads(docs["reconstruct"])["vdis"]) >= 4


def test_features_and_signatures_from_the_pass_equal_what_the_matcher_reads(demo_images):
    from core.match.assign import Solver
    a, _ = demo_images
    with open_image(str(a)) as ev:
        idx = EvidenceIndex.build(ev)
        reader = SectorReader(ev)
        for D in (12 * MiB, 13 * MiB + 4096, 0):      # the demo's grid and two others
            N = (ev.size - D) // E
            want = compute_pe_features(reader, D, E, N)
            got = idx.sectors.pe_features(D, E, N, reader.has_data(
                D + np.arange(N, dtype=np.int64) * E, E))
            for name in ("has_data", "head_anchor", "head_batmap", "head_ff", "tail_footer",
                         "tail_uid", "any_footer", "head_xssm"):
                assert np.array_equal(getattr(want, name), getattr(got, name)), (D, name)
            fl = want.any_footer
            assert np.array_equal(want.head_uid[fl], got.head_uid[fl])
            solver = Solver(reader, D, E, N, want, [], np.full(N, -1, np.int32))
            solver.ensure_sigs(np.arange(N))
            good, ones = idx.sectors.lattice_signatures(D, E, N)
            assert np.array_equal(solver.sig_good, good) and np.array_equal(solver.sig_ones, ones)
            assert good.any()
        # a grid off the 4 KiB lattice: the matcher reads for itself
        assert idx.sectors.pe_features(D + 512, E, 10, np.ones(10, bool)) is None


def _zero_patchwork(path, size: int, seed: int) -> None:
    """An image of `size` bytes (not a sector multiple) with holes, runs of zero sectors,
    lone nonzero bytes at the end of otherwise zero sectors and data up to its last byte."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for start in range(0, size, 3 * MiB):             # data, then a hole, in turns
            n = min(size - start, MiB + int(rng.integers(0, 64)) * 4096)
            data = rng.integers(0, 256, n, dtype=np.uint8)
            data[: n - n % 512].reshape(-1, 512)[rng.random(n // 512) < 0.3] = 0
            lone = rng.integers(0, n // 512, 64) * 512 + 511      # the last byte of a sector
            data[lone[lone < n]] = 1
            f.seek(start)
            f.write(data.tobytes())
        f.seek(size - 300)                                 # the partial last sector: data
        f.write(b"\x07" * 300)


@pytest.mark.parametrize("max_runs", [None, 1000])
def test_nonzero_sectors_from_the_pass_equal_what_the_matcher_reads(tmp_path, monkeypatch,
                                                                    max_runs):
    """SectorReader.nonzero served by the index's runs of nonzero sectors answers exactly what
    reading them answers (holes, zero sectors, a byte at a sector's end, the partial last
    sector, offsets off the grid, before the image or past it), kept and loaded again; with
    more runs than the cap, the sectors past the cut are read (and still agree)."""
    import core.evidence_index.sectors as sectors
    if max_runs is not None:
        monkeypatch.setattr(sectors, "MAX_RUNS", max_runs)
    path = tmp_path / "patch.img"
    size = 11 * MiB + 4096 * 3 + 300
    _zero_patchwork(path, size, 7)
    rng = np.random.default_rng(1)
    offs = np.r_[rng.integers(0, size // 512 + 2, 20000) * 512,       # on the grid
                 rng.integers(-2048, size + 2048, 500),                 # anywhere
                 [-512, 0, size - size % 512, size - size % 512 - 512, size]].astype(np.int64)
    with open_image(str(path)) as ev:
        reader = SectorReader(ev)
        want = reader.gather(offs, 512).any(axis=1)
        assert want.any() and not want.all()
        built = EvidenceIndex.build(ev, window=1 * MiB)      # runs across window edges
        built.save(str(tmp_path / "patch.npz"), [str(path)])
        assert (built.sectors.nz_until < size // 512) == (max_runs is not None)
        for idx in (built, EvidenceIndex.load(str(tmp_path / "patch.npz"))):
            served = SectorReader(ev)
            served.nonzero_facts = lambda o, idx=idx: idx.sectors.sectors_nonzero(o, ev.size)
            assert np.array_equal(served.nonzero(offs), want)
            assert served.reads > 0                     # the pieces off the grid were read
            grid = offs % 512 == 0
            served.reads = 0
            assert np.array_equal(served.nonzero(offs[grid]), want[grid])
            known, _ = idx.sectors.sectors_nonzero(offs[grid], ev.size)
            if max_runs is None:               # everything on the grid known: nothing read
                assert known.all() and served.reads == 0
            else:                              # past the cut: read
                assert known.any() and not known.all()
                assert 0 < served.reads <= np.count_nonzero(~known)
        assert np.array_equal(SectorReader(ev).nonzero(offs), want)   # no index: read


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 40 * 1024), st.integers(0, 255)), max_size=12),
       st.integers(0, 40 * 1024), st.sampled_from([512, 4096, 64 << 10]))
def test_nonzero_runs_are_the_blocks_holding_a_nonzero_byte(pokes, length, block):
    """nonzero_runs (numpy, no loop per block) against the plain definition, any length."""
    from core.evidence_index import nonzero_runs
    buf = np.zeros(40 * 1024 + 64, np.uint8)
    for at, value in pokes:
        buf[at] = value
    want: list[tuple[int, int]] = []
    for a in range(0, length, block):
        b = min(length, a + block)
        if buf[a:b].any():
            if want and want[-1][1] == a:
                want[-1] = (want[-1][0], b)
            else:
                want.append((a, b))
    assert nonzero_runs(buf, length, block) == want
    # with the sectors' first words (the pass has them): only blocks whose first words are
    # all zero are looked at whole; the same runs
    from core.evidence_index.sectors import first_words
    assert nonzero_runs(buf, length, block, words=first_words(buf)) == want


def _index_doc(idx) -> tuple[str, dict]:
    meta = idx._meta()
    for key in ("created", "seconds", "identity"):
        meta.pop(key)
    return json.dumps(meta, sort_keys=True), {k: v.tobytes() for k, v in
                                              idx.sectors.arrays().items()}


def test_guarded_evidence_read_ahead_gives_the_same_index(tmp_path, monkeypatch):
    """Evidence read through ev.read (a block device's guarded reads; here forced on an image
    file) has its next window read by a helper thread while the pass works: the same index as
    the plain path, every byte read once."""
    path = tmp_path / "patch.img"
    _zero_patchwork(path, 9 * MiB + 4096 + 300, 11)
    with open_image(str(path)) as ev:
        first = EvidenceIndex.build(ev, window=1 * MiB)
    monkeypatch.setenv("SRSALVAGE_GUARD_READS", "1")
    with open_image(str(path)) as ev:
        assert ev.guarded
        idx = EvidenceIndex.build(ev, window=1 * MiB)
    assert _index_doc(idx) == _index_doc(first)
    assert idx.data_bytes == first.data_bytes > 0
    assert len(idx.sectors.nz_start) > 100 and idx.sectors.nz_until > 0


def _direct_io_here(folder) -> bool:
    probe = os.path.join(folder, "direct-probe")
    with open(probe, "wb") as f:
        f.write(b"\0" * 8192)
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        return True
    except (OSError, AttributeError):
        return False


@pytest.mark.parametrize("how", ["direct", "page cache", "direct refused mid-pass"])
def test_the_pass_s_windows_hold_the_evidence_s_bytes_however_read(tmp_path, monkeypatch,
                                                                  how):
    """pass_windows reads a plain image file with O_DIRECT (aligned 4 KiB blocks around each
    window, which starts on the 512 grid only), through the page cache where O_DIRECT is not
    had, and from the page cache on after a direct read is refused: every window holds the
    file's own bytes at its place, up to the image's odd end, and the index is the same."""
    from core.evidence_index import windows

    if how != "page cache" and not _direct_io_here(str(tmp_path)):
        pytest.skip("no O_DIRECT on this file system")
    path = tmp_path / "patch.img"
    size = 9 * MiB + 4096 + 300
    _zero_patchwork(path, size, 5)
    data = path.read_bytes()
    opened = []
    real_open = windows._open_direct

    def open_direct(ev):
        fd = real_open(ev)
        if how == "direct refused mid-pass" and fd >= 0:
            os.close(fd)
            fd = os.open(str(tmp_path), os.O_RDONLY)     # reads fail: EISDIR
        opened.append(fd)
        return fd

    monkeypatch.setattr(windows, "_open_direct", open_direct)
    if how == "page cache":
        monkeypatch.setenv("SRSALVAGE_NO_DIRECT", "1")
    ranges = [(1536, 3 * MiB + 100), (5 * MiB + 512 * 7, size)]
    with open_image(str(path)) as ev:
        seen = 0
        for pos, view, lo, own_end in windows.pass_windows(ev, ranges, MiB, 8192):
            assert pos % 512 == 0 and len(view) > 0
            assert view.tobytes() == data[pos:pos + len(view)], (how, pos)
            seen += own_end - lo
        idx = EvidenceIndex.build(ev, window=MiB)
    assert seen == sum(b - a for a, b in ranges)
    assert (opened[0] >= 0) == (how != "page cache")
    monkeypatch.setenv("SRSALVAGE_NO_DIRECT", "1")
    with open_image(str(path)) as ev:
        assert _index_doc(EvidenceIndex.build(ev, window=MiB)) == _index_doc(idx)


def test_a_hanging_read_ahead_gives_up_when_the_pass_stops(tmp_path, monkeypatch):
    """A read that hangs in the pass's helper thread (a dying disk, read timeout 10 min): a
    cancel stops the pass at once; so does a failure of the pass while the helper hangs (a
    consumer's error, SIGTERM: no cancel is set then); no helper thread is left behind and
    the evidence's cancel point is put back."""
    import threading
    import time

    import core.evidence_index.sectors as sectors
    from core.errors import Cancelled
    from core.source import Evidence

    path = tmp_path / "ev.img"
    path.write_bytes(np.random.default_rng(2).integers(0, 256, 8 * MiB, np.uint8).tobytes())
    release = threading.Event()

    class Hanging(Evidence):     # the pass's reads past 5 MiB hang (its identity's small
        def _pread_raw(self, offset, length):     # samples do not) until released
            if offset + length > 5 * MiB and length >= 64 << 10:
                release.wait(600)
            return super()._pread_raw(offset, length)

    def run_pass(cancel_after: float | None) -> BaseException | None:
        ev = Hanging(str(path))
        ev.guarded, ev.read_timeout = True, 600.0
        cancel = threading.Event()
        box: dict = {}

        def run():
            try:
                EvidenceIndex.build(ev, cancel, window=1 * MiB)
            except BaseException as exc:          # noqa: BLE001 (the test looks at it)
                box["exc"] = exc

        t = threading.Thread(target=run, daemon=True)
        t.start()
        if cancel_after is not None:
            time.sleep(cancel_after)
            assert t.is_alive(), "the pass ended although its reads hang"
            cancel.set()
        t.join(20)
        assert not t.is_alive(), "the pass did not stop"
        time.sleep(0.5)
        left = [th.name for th in threading.enumerate()
                if th.name.startswith(("index-reader", "index-search"))]
        assert not left, left
        assert ev.cancel is None
        ev.close()
        return box.get("exc")

    try:
        assert isinstance(run_pass(1.0), Cancelled)
        feed = sectors.SectorFacts.feed

        def failing_feed(self, pos, *a, **k):   # fails on the window before the hanging one,
            if pos >= 3 * MiB:                   # while the helper reads that one
                raise RuntimeError("a consumer failed")
            return feed(self, pos, *a, **k)

        monkeypatch.setattr(sectors.SectorFacts, "feed", failing_feed)
        assert isinstance(run_pass(None), RuntimeError)
    finally:
        release.set()


# -- the index is bound to its evidence -------------------------------------------------------
def test_index_of_one_image_never_used_for_another_at_the_same_path(tmp_path, demo_images):
    a, b = demo_images
    img = tmp_path / "sr.img"
    copy(a, img)
    rc, lvm_a, _ = cli("lvm", str(img), "--json")
    assert rc == 0 and os.path.exists(index_path(str(img)))
    # other bytes at the same path, same size, same mtime: only the samples tell
    st = img.stat()
    with open(img, "r+b") as dst, open(b, "rb") as src:
        shutil.copyfileobj(src, dst)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open_image(str(img)) as ev:
        found, why, _ = EvidenceIndex.find(ev, index_path(str(img)))
        assert found is None and "sampled sectors differ" in why
    rc, lvm_b, _ = cli("lvm", str(img), "--json")
    rc2, fresh_b, _ = cli("lvm", str(img), "--json", "--no-index")
    assert lvm_b == fresh_b != lvm_a
    # and the rebuilt index is the new image's
    with open_image(str(img)) as ev:
        assert EvidenceIndex.find(ev, index_path(str(img)))[0] is not None


def _sample_offsets(size: int) -> list[int]:
    return [((size * i) // (IDENTITY_SAMPLES + 1)) & ~4095 for i in range(1, IDENTITY_SAMPLES + 1)]


def _unsampled(size: int) -> int:
    """A sector no sample covers (between the first two spread samples)."""
    s = _sample_offsets(size)
    off = (s[0] + s[1]) // 2 & ~511
    assert s[0] + 4096 <= off < s[1]
    return off


def _poke(img, off: int, keep_mtime: bool) -> None:
    st = img.stat()
    with open(img, "r+b") as f:
        f.seek(off)
        old = f.read(512)
        f.seek(off)
        f.write(bytes(b ^ 0x5A for b in old))
    if keep_mtime:
        os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def indexed(tmp_path, demo_images):
    img = tmp_path / "sr.img"
    copy(demo_images[0], img)
    with open_image(str(img)) as ev:
        EvidenceIndex.load_or_build(ev, index_path(str(img)))
    return img


def _used(img) -> tuple[bool, str]:
    with open_image(str(img)) as ev:
        found, why, _ = EvidenceIndex.find(ev, index_path(str(img)))
    return found is not None, why


def test_changed_sector_in_a_sample_is_seen_even_with_the_mtime_restored(indexed):
    assert _used(indexed)[0]
    _poke(indexed, _sample_offsets(indexed.stat().st_size)[5] + 1024, keep_mtime=True)
    used, why = _used(indexed)
    assert not used and "sampled sectors differ" in why


def test_changed_sector_outside_the_samples_is_seen_by_the_mtime(indexed):
    _poke(indexed, _unsampled(indexed.stat().st_size), keep_mtime=False)
    used, why = _used(indexed)
    assert not used and "modification time" in why


def test_replaced_file_is_seen_by_its_inode(indexed):
    st = indexed.stat()
    other = indexed.with_name("copy.img")
    copy(indexed, other)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, indexed)
    used, why = _used(indexed)
    assert not used and "inode" in why


def test_identity_cannot_see_a_change_outside_the_samples_with_the_mtime_restored(indexed):
    """The documented limit: the index is then trusted; --no-index reads afresh."""
    _poke(indexed, _unsampled(indexed.stat().st_size), keep_mtime=True)
    assert _used(indexed)[0]


def test_stale_index_is_rebuilt_and_replaced(indexed, demo_images):
    path = index_path(str(indexed))
    before = os.stat(path).st_mtime_ns
    _poke(indexed, 0, keep_mtime=True)            # the first 64 KiB are always sampled
    with open_image(str(indexed)) as ev:
        idx, how = EvidenceIndex.load_or_build(ev, path)
        assert "other evidence or stale" in how and "kept at" in how
    assert os.stat(path).st_mtime_ns != before and not os.path.exists(path + ".part")
    assert _used(indexed)[0]


def test_a_file_that_is_not_an_index_is_never_replaced(tmp_path, demo_images):
    img = tmp_path / "sr.img"
    copy(demo_images[0], img)
    path = index_path(str(img))
    with open(path, "wb") as f:
        f.write(b"technician's notes, not an index")
    rc, out, err = cli("lvm", str(img), "--json")
    assert rc == 0 and json.loads(out)["image"]
    assert open(path, "rb").read() == b"technician's notes, not an index"


def test_index_lives_beside_the_case_never_in_the_evidence(tmp_path, demo_images):
    img = tmp_path / "sr.img"
    copy(demo_images[0], img)
    before = img.stat().st_mtime_ns
    case = tmp_path / "cases" / "job.json"
    case.parent.mkdir()
    rc, _, err = cli("reconstruct", str(img), "--json", "--case", str(case))
    assert rc == 0, err
    assert os.path.exists(tmp_path / "cases" / "job.index.npz")
    assert not os.path.exists(index_path(str(img)))
    assert img.stat().st_mtime_ns == before
    # --no-case keeps nothing beside the evidence
    rc, _, _ = cli("reconstruct", str(img), "--json", "--no-case")
    assert rc == 0 and not os.path.exists(index_path(str(img)))
    # --no-index makes none
    rc, _, _ = cli("lvm", str(img), "--json", "--no-index")
    assert rc == 0 and not os.path.exists(index_path(str(img)))


# -- bytes read (rchar: a count of bytes, not a timing) ----------------------------------------
@pytest.fixture(scope="module")
def dense_image(tmp_path_factory, demo_images):
    """The metadata-wiped demo SR written with real bytes (no holes)."""
    d = tmp_path_factory.mktemp("dense")
    img = d / "dense.img"
    subprocess.run(["cp", "--sparse=never", str(demo_images[0]), str(img)], check=True)
    assert os.stat(img).st_blocks * 512 >= os.stat(img).st_size
    return img


def _read_by(*argv: str) -> int:
    before = rchar()
    rc, _, err = cli(*argv)
    assert rc == 0, err
    return rchar() - before


def test_cold_reconstruct_reads_the_image_at_most_1_1_times(tmp_path, dense_image):
    size = dense_image.stat().st_size
    cold = _read_by("reconstruct", str(dense_image), "--json", "--no-case")
    afresh = _read_by("reconstruct", str(dense_image), "--json", "--no-case", "--no-index")
    assert cold <= 1.1 * size, cold / size
    assert afresh > 1.5 * size           # what it was: the measurement sees re-reads


def test_warm_triage_reads_the_image_at_most_1_1_times_in_total(tmp_path, dense_image):
    img = tmp_path / "img"
    img.mkdir()
    link = img / "dense.img"
    os.link(dense_image, link)            # its own index (beside this name)
    size = link.stat().st_size
    total = 0
    for argv in (["lvm", str(link), "--json"],
                 ["reconstruct", str(link), "--json", "--no-case"],
                 ["scan", str(link), "--json"],
                 ["carve-mdf", str(link), "-o", str(tmp_path / "mdf"), "--json", "--no-case"],
                 ["carve-rar", str(link), "-o", str(tmp_path / "rar"), "--json", "--no-case"]):
        n = _read_by(*argv)
        assert n <= 1.1 * size, (argv[0], n / size)
        total += n
    assert total <= 1.1 * size, total / size


# -- bad index files ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_garbage_index_files_are_refused_in_one_line(tmp_path, data):
    path = tmp_path / "x.npz"
    path.write_bytes(data)
    with pytest.raises(IndexUnusable) as exc:
        EvidenceIndex.load(str(path))
    assert "\n" not in str(exc.value)


@pytest.fixture(scope="module")
def small_meta(demo_images):
    """The meta document of a real index (labels, metadata text, VHD footers, pages)."""
    with open_image(str(demo_images[1])) as ev:
        return EvidenceIndex.build(ev)._meta()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                            lambda c: st.lists(c, max_size=4)
                            | st.dictionaries(st.text(max_size=6), c, max_size=4),
                            max_leaves=20),
       field=st.sampled_from(["hits", "text_hits", "scan", "identity", "rar", "unreadable",
                              "timed_out", "size", "data_bytes", "created"]))
def test_damaged_index_fields_are_refused_or_harmless(tmp_path, small_meta, garbage, field):
    """A file that says it is our index but holds garbage in one field: IndexUnusable, or (a
    garbage identity) an index that no evidence matches -- never a traceback."""
    meta = dict(small_meta, **{field: garbage})
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    path = tmp_path / "y.npz"
    path.write_bytes(buf.getvalue())
    try:
        EvidenceIndex.load(str(path))
    except IndexUnusable as exc:
        assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def small_index_file(tmp_path_factory):
    """A real index file (of a small image with zero and nonzero sectors) and its image."""
    d = tmp_path_factory.mktemp("small-index")
    img = d / "patch.img"
    _zero_patchwork(img, 4 * MiB + 300, 3)
    with open_image(str(img)) as ev:
        idx = EvidenceIndex.build(ev)
        idx.save(str(d / "i.npz"), [str(img)])
    return d / "i.npz", img


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(st.integers(-(1 << 62), 1 << 62), max_size=9),
       until=st.integers(-(1 << 62), 1 << 62),
       dtype=st.sampled_from(["<i8", "<u4", "<f8", "|u1"]))
def test_damaged_nonzero_runs_are_refused_or_harmless(tmp_path, small_index_file, runs, until,
                                                      dtype):
    """Garbage in the runs of nonzero sectors (any length, order, sign, dtype): IndexUnusable
    in one line, or an index whose answers are only ever asked within the image, never a
    traceback."""
    src, img = small_index_file
    with np.load(str(src), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["nonzero_runs"] = np.array(runs).astype(dtype)
    arrays["nonzero_until"] = np.array([until]).astype(dtype) if until % 3 else np.zeros(0)
    path = tmp_path / "z.npz"
    np.savez(str(path), **arrays)
    try:
        idx = EvidenceIndex.load(str(path))
    except IndexUnusable as exc:
        assert "\n" not in str(exc)
        return
    with open_image(str(img)) as ev:
        reader = SectorReader(ev)
        reader.nonzero_facts = lambda o: idx.sectors.sectors_nonzero(o, ev.size)
        offs = np.arange(-4, ev.size // 512 + 4, dtype=np.int64) * 512
        got = reader.nonzero(offs)
        assert got.dtype == bool and len(got) == len(offs)
        assert not got[offs < 0].any() and not got[offs + 512 > ev.size].any()


def test_scan_range_and_kinds_answered_by_the_index_as_by_a_fresh_scan(tmp_path, demo_images):
    img = tmp_path / "sr.img"
    copy(demo_images[1], img)
    rc, _, _ = cli("scan", str(img), "--range", "0:64M", "--json")
    assert rc == 0 and not os.path.exists(index_path(str(img)))    # a range makes none
    rc, _, _ = cli("lvm", str(img), "--json")
    assert os.path.exists(index_path(str(img)))
    for extra in (["--range", "1M:300M"], ["--kinds", "vhd-footer,lvm-label"],
                  ["--kinds", "lvm-metadata", "--range", "0:40M"], ["--kinds", "rar4"]):
        rc, a, _ = cli("scan", str(img), "--json", *extra)
        rc2, b, _ = cli("scan", str(img), "--json", "--no-index", *extra)
        da, db = json.loads(a), json.loads(b)
        da.pop("seconds"), db.pop("seconds")
        assert rc == rc2 == 0 and da == db, extra
    rc, _, err = cli("scan", str(img), "--json", "--kinds", "no-such-kind")
    assert rc == 2 and "no-such-kind" in err


def test_the_pass_reports_bytes_and_time_left_and_stops_on_cancel(tmp_path, demo_images):
    import threading
    from core.errors import Cancelled
    updates = []
    with open_image(str(demo_images[0])) as ev:
        EvidenceIndex.build(ev, progress=updates.append, window=1 * MiB)
        total = sum(b - a for a, b in ev.data_ranges(0, ev.size))
    assert updates[-1].done == updates[-1].total == total
    assert any(u.eta is not None for u in updates)
    path = tmp_path / "i.npz"

    class CancelAfterWindows(threading.Event):
        """Set once the pass has asked twice: mid-pass whatever the machine's speed (the
        progress callback is throttled by time, so a fast pass may report nothing between
        its first and last update)."""
        asked = 0

        def is_set(self):
            self.asked += 1
            return self.asked > 2 or super().is_set()
    cancel = CancelAfterWindows()
    seen = []
    with open_image(str(demo_images[0])) as ev, pytest.raises(Cancelled):
        EvidenceIndex.load_or_build(ev, str(path), cancel, seen.append)
    assert seen and seen[-1].done < total
    assert not os.path.exists(path) and not os.path.exists(str(path) + ".part")


_MEASURED = """
import sys
from app.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    # VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's)
    with open("/proc/self/status") as f:
        sys.stderr.write("".join(x for x in f if x.startswith("VmHWM")))
sys.exit(rc)
"""


def _peak_rss_mib(*argv: str) -> float:
    """Run srsalvage in a child process; its peak RSS (MiB)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _MEASURED, *argv], cwd=root,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("VmHWM")][-1]
    return int(line.split()[1]) / 1024


def test_peak_memory_of_a_2_tib_image_stays_bounded(tmp_path, demo_images):
    """A 2 TiB sparse image (the demo SR at its start): making the index (lvm) and rebuilding
    the maps over its 524k extents stay under 300 MiB (the window, capped findings, per-PE
    arrays)."""
    big = tmp_path / "big.img"
    copy(demo_images[0], big)
    os.truncate(big, 2 << 40)
    for argv in (["lvm", str(big), "--json"], ["reconstruct", str(big), "--json", "--no-case"]):
        peak = _peak_rss_mib(*argv)
        assert peak < 300, (argv[0], peak)


def test_an_index_made_by_other_code_is_rebuilt(tmp_path, demo_images, monkeypatch):
    import core.evidence_index as ei
    img = tmp_path / "sr.img"
    copy(demo_images[1], img)
    with open_image(str(img)) as ev:
        EvidenceIndex.load_or_build(ev, index_path(str(img)))
        assert EvidenceIndex.find(ev, index_path(str(img)))[0] is not None
        monkeypatch.setattr(ei, "code_key", lambda: "0" * 64)     # a scan kind changed
        found, why, replaceable = EvidenceIndex.find(ev, index_path(str(img)))
        assert found is None and "another version" in why and replaceable


def test_a_window_full_of_candidates_stops_on_cancel(tmp_path, monkeypatch):
    """The pass's signature scan runs in a helper thread; a window holding 131072 VHD-footer
    look-alikes keeps it verifying for seconds. Cancel (quitting the workstation) must stop that
    verification too, not wait for the window: the workstation once hung 20 s on quit under
    load after the scan moved into its thread without the job's cancel."""
    import threading
    import core.scan as scan_mod
    from core.errors import Cancelled
    from test_ui_support import footer_flood_image

    image = footer_flood_image(tmp_path / "flood.img")
    passes = []
    real_init = scan_mod.ScanPass.__init__

    def keep(self, *a, **k):
        real_init(self, *a, **k)
        passes.append(self)
    monkeypatch.setattr(scan_mod.ScanPass, "__init__", keep)

    class CancelOnceScanning(threading.Event):
        """Set as soon as the scan's own thread asks (it is verifying a window's candidates)."""

        def is_set(self):
            if threading.current_thread().name.startswith("index-search") and passes \
                    and passes[0].verifies:
                self.set()
            return super().is_set()
    with open_image(image) as ev, pytest.raises(Cancelled):
        EvidenceIndex.build(ev, CancelOnceScanning())
    # it stopped within the first batch of verifications, far from the 131072 candidates
    assert 0 < passes[0].verifies < 4096, passes[0].verifies
