"""The whole-image fuzz campaign's CI budget (issue 11): hypothesis mutates the demo SR images
where their structures are (GPT/MBR, LVM label, mda header, metadata text with its checksums
fixed, VHD footer/header/BAT/bitmaps/batmap/locators, MGT, SQL Server pages, RAR headers, the
`.vg` backup file and the map file) and every command runs on each case in a forked child
(address space capped at 1 GiB over its start, 60 s each). Zero tracebacks, zero hangs, zero
runs over 1 GiB RSS, the evidence unchanged. The long run is bench/fuzz.py; its findings
become tests in tests/test_issue11.py.

Each CI case runs 3-4 of the commands (drawn; all of them over the run); bench/fuzz.py runs all
of them on every case. SRSALVAGE_FUZZ_EXAMPLES sets the number of cases (default 30, about two
minutes here).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fuzz_images as fz

EXAMPLES = int(os.environ.get("SRSALVAGE_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    bases = fz.build_bases(str(root))
    out = []
    for i, b in enumerate(bases):
        d = root / f"ws{i}"
        d.mkdir()
        out.append(fz.Workspace(b, str(d)))
    return out


def test_fuzz_bases_cover_every_structure(workspaces):
    """The strategies have something to mutate of every kind the issue names."""
    kinds = {t.kind for ws in workspaces for t in ws.base.targets}
    for kind in ("gpt-header", "mbr", "lvm-label", "lvm-mda-header", "metadata-text",
                 "vhd-footer", "vhd-header", "vhd-bat", "vhd-bitmap", "vhd-batmap",
                 "xen-mgt", "mssql-page", "rar5"):
        assert kind in kinds, kind
    assert any(ws.base.backup_text for ws in workspaces)
    assert any(ws.base.map_doc for ws in workspaces)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_every_command_on_mutated_images(workspaces, data):
    ws = workspaces[data.draw(st.integers(0, len(workspaces) - 1), label="base")]
    case = data.draw(fz.cases(ws.base), label="case")
    # a few of the commands per case (every one over the run): the budget buys more cases
    case.commands = data.draw(st.sets(st.integers(0, 12), min_size=3, max_size=4),
                              label="commands")
    findings = fz.run_case(ws, case, timeout=60.0, rss_limit=1 << 30)
    assert not findings, "\n\n".join(f"{r.status} {' '.join(r.command)}\n{r.detail[-3000:]}"
                                     for r in findings)
