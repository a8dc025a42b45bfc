"""Unit tests for the solver parts added for issue 10's stale disks: the guest's evidence
(core.match.guest), zero fill never trusted once stale bytes were seen (core.match.zerofill).
End to end they run in tests/test_reconstruct_xs.py."""

from __future__ import annotations

import numpy as np

from core.match import guest as G
from core.match import zerofill


def _runs(n: int, *spans: tuple[int, int]) -> np.ndarray:
    out = np.zeros(n, bool)
    for a, b in spans:
        out[a:b] = True
    return out


# -- written sectors against the guest's allocation -----------------------------------------------
def test_written_into_free_space_is_another_disks_bitmap():
    allocated = _runs(4096, (0, 1024))
    stranger = _runs(4096, (2000, 2600))          # written where the file system says free
    assert G._allocation_llr(stranger, allocated) == G.GUEST_CONFLICT


def test_zeros_written_into_free_space_say_nothing():
    # a guest wiping free space writes zeros there: only written sectors holding data count
    allocated = _runs(4096, (0, 1024))
    wiped = _runs(4096, (0, 1024), (2000, 2600))
    assert G._allocation_llr(wiped, allocated, data_share=0.0) != G.GUEST_CONFLICT
    assert G._allocation_llr(wiped, allocated, data_share=1.0) == G.GUEST_CONFLICT


def test_written_only_where_allocated_ties_when_a_stranger_would_have_missed():
    allocated = _runs(4096, (0, 1024))
    own = _runs(4096, (0, 800))
    assert G._allocation_llr(own, allocated) == G.GUEST_AGREE
    # a block the file system fills entirely: any bitmap agrees, so agreeing says nothing
    assert G._allocation_llr(own, np.ones(4096, bool)) == 0.0
    assert G._allocation_llr(np.zeros(4096, bool), allocated) == 0.0


def test_content_left_unwritten_in_a_parentless_vhd_is_another_disks():
    content = np.where(_runs(4096, (0, 2048)), 1, 0).astype(np.int8)
    assert G._content_llr(_runs(4096, (0, 300)), content) == G.GUEST_CONFLICT
    # a file's all-zero pages are never written: some content left unwritten is expected
    assert G._content_llr(_runs(4096, (0, 1800)), content) == 0.0
    unknown = np.full(4096, -1, np.int8)
    assert G._content_llr(np.zeros(4096, bool), unknown) == 0.0


# -- zero fill ------------------------------------------------------------------------------------
def test_clean_blocks_are_not_trusted_once_stale_bytes_were_seen_anywhere():
    clean = zerofill.ZeroFill(blocks=5, stale=0)
    stale = zerofill.ZeroFill(blocks=3, stale=2)
    zerofill.pool({0: clean, 1: stale})
    # the clean VDI may only have sat on extents that held zeros before
    assert clean.weight == 0.0 and stale.weight == 0.0
    alone = zerofill.ZeroFill(blocks=5, stale=0)
    zerofill.pool({0: alone})
    assert alone.weight == 1.0
