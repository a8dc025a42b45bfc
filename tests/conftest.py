"""Shared pytest configuration: where the shared fixtures are, and a tmp image helper."""

from __future__ import annotations

import gzip
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# ../shared/fixtures beside the project (read only; never copied into the project)
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture
def shared_fixtures() -> pathlib.Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


def fixture_bytes(relative: str) -> bytes:
    """Bytes of a shared fixture, gunzipped when it ends in .gz; skips when absent."""
    path = SHARED_FIXTURES / relative
    if not path.exists():
        pytest.skip(f"shared fixture {relative} not found")
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.fixture
def fixture_file(tmp_path):
    """fixture_file("vhd/dfvfs/ext2.vhd.gz") -> path of an (unzipped) copy in tmp_path."""

    def make(relative: str) -> pathlib.Path:
        data = fixture_bytes(relative)
        name = os.path.basename(relative)
        if name.endswith(".gz"):
            name = name[:-3]
        out = tmp_path / name
        out.write_bytes(data)
        return out

    return make


@pytest.fixture(autouse=True)
def _evidence_index_dir(tmp_path_factory, monkeypatch):
    """Evidence indexes (issue 14) made by the commands under test go to the session's temporary
    directory, never beside the shared fixtures (tests of the default place unset this)."""
    monkeypatch.setenv("SRSALVAGE_INDEX_DIR", str(tmp_path_factory.getbasetemp() / "evidence-index"))


# -- disk: a whole run builds many SR images (real lvm2 SRs, guests, E01s, 8 GiB sparse files
# made dense by tools): a passed test's own temporary directory is removed when it ends, so the
# run's peak disk use is what a few tests hold at once, not the sum of all (a failed test keeps
# its directory to look at)
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item._srsalvage_failed = True


@pytest.fixture(autouse=True)
def _free_passed_tmp_path(request):
    # asked for at setup, so it is torn down after this fixture
    path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if path is not None and not getattr(request.node, "_srsalvage_failed", False):
        import shutil
        shutil.rmtree(path, ignore_errors=True)
