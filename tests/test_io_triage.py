"""Issue 14: what opening the workstation reads, and memory whatever the image size.

* The workstation's triage (opening it until the analysis, the VHD chains and, with the
  metadata gone, the reconstruction are done) on a NON-sparse real-lvm2 SR image: every byte
  read from the image file is counted at the system-call wrappers (`os.pread`, `os.preadv`,
  which core.source's Evidence reads with) for that file only, in Textual's Pilot. Bytes, not
  time: a count the page cache cannot change.
* `srsalvage open --headless` prints the same triage's findings and its pass estimate.
* Peak RSS (ru_maxrss of a fresh process) of `scan` and `reconstruct` on a 2 TiB sparse SR
  stays under 300 MiB: a memory bound, so it is asserted.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

import realtools as rt
from bench._common import ROOT, run_child, srsalvage_argv

MiB = 1 << 20


class ImageReadCounter:
    """Counts the bytes read from one file through os.pread / os.preadv (every thread)."""

    def __init__(self, path: str) -> None:
        st = os.stat(path)
        self.ident = (st.st_dev, st.st_ino)
        self.bytes = 0
        self._lock = threading.Lock()

    def _ours(self, fd: int) -> bool:
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.ident

    def install(self, monkeypatch) -> None:
        real_pread, real_preadv = os.pread, os.preadv

        def pread(fd, n, offset):
            data = real_pread(fd, n, offset)
            if self._ours(fd):
                with self._lock:
                    self.bytes += len(data)
            return data

        def preadv(fd, buffers, offset, *flags):
            got = real_preadv(fd, buffers, offset, *flags)
            if got > 0 and self._ours(fd):
                with self._lock:
                    self.bytes += got
            return got

        monkeypatch.setattr(os, "pread", pread)
        monkeypatch.setattr(os, "preadv", preadv)


@pytest.fixture(scope="module")
def nonsparse_sr_image(tmp_path_factory):
    """A 512 MiB non-sparse SR image made with real lvm2, metadata area wiped: its VDIs hold
    enough extents that the matcher's own reads (continuity checks across extent boundaries,
    walks) are seen next to the fixed ones (the 10 MiB metadata area, the MGT volume)."""
    rt.need_lvm()
    import nonsparse_sr
    path = str(tmp_path_factory.mktemp("nonsparse") / "sr.img")
    built = nonsparse_sr.build(path, 512 * MiB, seed=4, n_vdis=8, damage="metadata",
                               use_lvm2=True)
    assert built.allocated_bytes >= built.size * 0.999     # no holes: every byte is read
    yield built
    os.unlink(path)


def _have_index() -> bool:
    try:
        import core.evidence_index  # noqa: F401
    except ImportError:
        return False
    return True


async def _triage(path: str, monkeypatch, no_index: bool = False):
    """Open the workstation on `path` (no case), wait for its triage; (summary, the rebuilt
    maps, bytes read from the image file)."""
    from app.workstation import WorkstationApp, open_session

    counter = ImageReadCounter(path)
    with monkeypatch.context() as m:
        counter.install(m)
        session = open_session(path, case_mode="none", no_index=no_index)
        app = WorkstationApp(session=session)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(1200):                   # bounded wait: at most ~2 minutes
                if app.main.triage_done:
                    break
                await pilot.pause(0.1)
            assert app.main.triage_done, "the triage did not end"
            summary = app.main.triage_summary()
            maps = {k: [(e.pe, round(e.confidence, 6)) if e else None for e in v]
                    for k, v in session.suggestions.items()}
    return summary, maps, counter.bytes


@pytest.mark.xfail(not _have_index(), strict=True,
                   reason="without the evidence index the analysis and the reconstruction each "
                          "read the image (2.67x measured on a 256 MiB image)")
async def test_workstation_triage_reads_the_image_at_most_1_1_times(nonsparse_sr_image,
                                                                    monkeypatch):
    built = nonsparse_sr_image
    summary, maps, nbytes = await _triage(built.path, monkeypatch)
    # the triage did its work: the analysis ran and, with the metadata gone, the maps were
    # rebuilt from VHD structure; the pass's cost was estimated before it started
    assert summary["analysed"] and summary["vdis_rebuilt"] >= 1, summary
    assert summary["estimate"]["bytes_to_read"] == built.size
    ratio = nbytes / built.size
    print(f"the workstation's triage read the image {ratio:.3f} times")
    assert ratio <= 1.1, f"the triage read the image {ratio:.2f} times"
    # the same triage reading for each step (--no-index) reads more and finds the same
    plain, plain_maps, plain_bytes = await _triage(built.path, monkeypatch, no_index=True)
    assert plain_bytes > 1.5 * built.size         # the analysis, then the reconstruction
    assert plain_maps == maps
    for key in ("volume_groups", "vdis_rebuilt", "analysed"):
        assert plain[key] == summary[key], key


@pytest.mark.xfail(not _have_index(), strict=True, reason="no evidence index in this build")
def test_reconstruct_reads_a_nonsparse_image_at_most_1_1_times(nonsparse_sr_image, monkeypatch):
    """`reconstruct` as the first command (the pass, then the matcher) reads a non-sparse SR
    image at most 1.1 times (issue 14's bound), and with a warm index at most 0.06 times (the
    metadata area and the MGT volume, 0.03x here, and the few bitmaps the matcher reads): the
    continuity checks' sampled sectors are answered by the pass's runs of nonzero sectors
    (before, on this image: 1.11x cold, 0.11x warm; on the 8 GiB bench image 1.17x). Bytes counted at the system calls, not time; the
    maps are the same as without the index."""
    from core.evidence import open_image
    from core.evidence_index import EvidenceIndex
    from core.match.reconstruct import reconstruct

    built = nonsparse_sr_image
    keep = str(built.path) + ".test-index.npz"

    def run(index: str | None):
        counter = ImageReadCounter(built.path)
        with monkeypatch.context() as m:
            counter.install(m)
            with open_image(built.path) as ev:
                idx = None
                if index is not None:
                    idx, _how = EvidenceIndex.load_or_build(ev, index)
                pass_bytes = counter.bytes
                doc = reconstruct(ev, index=idx).to_json()
        doc.pop("stats", None)
        return doc, pass_bytes, counter.bytes

    try:
        cold, pass_bytes, cold_bytes = run(keep)
        warm, _, warm_bytes = run(keep)
    finally:
        if os.path.exists(keep):
            os.unlink(keep)
    plain, _, plain_bytes = run(None)
    assert cold["vdis"] and len(cold["vdis"]) >= 4
    assert json.dumps(cold, sort_keys=True) == json.dumps(plain, sort_keys=True) == \
        json.dumps(warm, sort_keys=True)
    size = built.size
    print(f"reconstruct read {cold_bytes / size:.3f}x cold (the pass {pass_bytes / size:.3f}x),"
          f" {warm_bytes / size:.3f}x warm, {plain_bytes / size:.3f}x without the index")
    assert pass_bytes <= 1.001 * size
    assert cold_bytes <= 1.1 * size, f"cold: {cold_bytes / size:.3f}x"
    assert warm_bytes <= 0.06 * size, f"warm: {warm_bytes / size:.3f}x"
    assert plain_bytes > 1.5 * size       # without the index: the analysis, then the matcher


def test_open_headless_prints_the_triage(nonsparse_sr_image):
    import subprocess

    built = nonsparse_sr_image
    out = subprocess.run(srsalvage_argv("open", built.path, "--headless", "--no-case"),
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["analysed"] is True and doc["vdis_rebuilt"] >= 1
    assert doc["volume_groups"] and doc["estimate"]["rate"] > 0
    assert doc["estimate"]["bytes_to_read"] == built.size
    assert not os.path.exists(built.path + ".srsalvage-case.json")     # --no-case


@pytest.mark.slow
@pytest.mark.parametrize("command", ["scan", "reconstruct"])
def test_peak_rss_on_a_2tib_sparse_sr_stays_under_300_mib(tmp_path, command):
    """A 2 TiB sparse image with a small SR at its start (the label kept, the metadata area
    empty; VHDs with stale bytes under clear bitmap bits): the command's peak RSS, measured as
    ru_maxrss of a fresh process, stays under 300 MiB."""
    from core.match.synth import sparse_sr

    path = str(tmp_path / "sr2t.img")
    truth = sparse_sr(path, 2 << 40, 6, seed=5, fill=0.0004, stale_blocks=True)
    assert truth["vdis"]
    r = run_child(srsalvage_argv(command, path, "--json", *(["--no-case"] if command ==
                                                             "reconstruct" else [])),
                  cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.max_rss < 300 * MiB, f"{command}: peak RSS {r.max_rss / MiB:.0f} MiB"


def test_pass_estimate_reads_a_little_and_counts_only_data(tmp_path):
    """The estimate before a pass: a probe of at most 1/256 of the data (1 MiB at least),
    scaled to the bytes the pass reads (the holes of a sparse image are not read)."""
    from core.source import Evidence
    from core.throughput import estimate_pass

    path = tmp_path / "sparse.img"
    with open(path, "wb") as f:
        f.truncate(1 << 40)
        f.seek(1 << 30)
        f.write(os.urandom(512 * MiB // 64))       # 8 MiB of data in a 1 TiB file
    with Evidence(str(path)) as ev:
        counter = ImageReadCounter(str(path))
        mp = pytest.MonkeyPatch()
        try:
            counter.install(mp)
            est = estimate_pass(ev)
        finally:
            mp.undo()
    assert est.bytes_to_read == 8 * MiB
    assert est.probed == 1 * MiB == counter.bytes
    assert est.rate > 0 and est.seconds is not None and est.seconds < 3600


async def test_carving_screen_takes_pages_and_archives_from_the_index(tmp_path, monkeypatch):
    """The carving screen of a session with the evidence index lists the same page copies and
    RAR archives as a scan of its own, without searching the disk again."""
    from types import SimpleNamespace

    from textual.widgets import DataTable

    import core.carve.mssql as mssql
    import core.carve.rar as rar
    from app.screens.carving import CarvingScreen
    from core.evidence import open_image
    from test_ui_carving import Host, _image, _wait_idle

    try:
        from core.evidence_index import EvidenceIndex
    except ImportError:
        pytest.skip("this build has no evidence index")
    path, _ = _image(tmp_path)

    async def rows(screen) -> list:
        async with Host(screen).run_test(size=(120, 40)) as pilot:
            await pilot.pause()                     # the screen is pushed on the host's mount
            for key in ("m", "r"):
                await pilot.press(key)
                await _wait_idle(pilot, screen)
            table = screen.query_one(DataTable)
            return [tuple(map(str, table.get_row_at(i))) for i in range(table.row_count)]

    plain = await rows(CarvingScreen(path))
    with open_image(path) as ev:
        session = SimpleNamespace(ev=ev, case=None, index=EvidenceIndex.build(ev))

        def no_search(*a, **kw):
            raise AssertionError("searched the disk although the index holds the answer")

        monkeypatch.setattr(mssql, "find_page_records", no_search)
        monkeypatch.setattr(rar, "find_signatures", no_search)
        indexed = await rows(CarvingScreen(session))
    assert indexed == plain and any(r[0] == "rar5" for r in plain)
