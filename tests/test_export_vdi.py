"""`--vdi KEY` resolution: LV name, VDI uuid, footer unique id, map keys; deleted VDIs from the
newest older generation holding them; refusal (exit 3) when a newer LV took their extents."""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace

import numpy as np
import pytest

from core.errors import SrsalvageError, UnsafeError
from core.spaces import BytesSpace
from core.vdi import resolve_vdi
from core.vhd.build import blktap_parent, build_vhd
from core.vhd.export import export_raw
from test_vhd_support import EXTENT, cli, lvm_sr

MIB = 1 << 20
SR = "6c0ffee0-1111-4222-8333-944445555666"
A = "VHD-aaaaaaaa-0000-4000-8000-000000000001"
B = "VHD-bbbbbbbb-0000-4000-8000-000000000002"
C = "VHD-cccccccc-0000-4000-8000-000000000003"


def _lv(name, pes, claimed=None, status="live"):
    kind = "vhd" if name.startswith("VHD-") else "raw"
    runs = []
    for le, pe in enumerate(pes):
        if runs and runs[-1][1] + runs[-1][2] == pe:
            runs[-1][2] += 1
        else:
            runs.append([le, pe, 1])
    return SimpleNamespace(name=name, kind=kind, pes=lambda: list(pes), map_runs=runs,
                           claimed_by=claimed or {}, status=status)


def _report(gens, data_offset=0):
    g = [SimpleNamespace(seqno=s, lvs=lvs, extent_bytes=EXTENT) for s, lvs in gens]
    vg = SimpleNamespace(name=f"VG_XenStorage-{SR}", extent_bytes=EXTENT, data_offset=data_offset,
                         generations=g, reference=g[0])
    return SimpleNamespace(volume_groups=[vg])


@pytest.fixture
def disk():
    """A parent and a child VHD (blktap chain) in LVs A (PE 0-2) and B (PE 3-5)."""
    rng = np.random.default_rng(3)
    pblocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (0, 1)}
    parent = build_vhd(4 * MIB, pblocks, layout="qemu", seed=1)
    written = np.zeros(4096, dtype=bool)
    written[:12] = True                                   # 12 sectors written by the child
    child = build_vhd(4 * MIB, {1: (b"child!" * 1024, written)}, layout="qemu", seed=2,
                      parent=blktap_parent(SR, A, parent.unique_id))
    buf = bytearray(6 * EXTENT)
    buf[0:len(parent.data)] = parent.data
    buf[3 * EXTENT:3 * EXTENT + len(child.data)] = child.data
    flat = bytearray(pblocks[0] + pblocks[1])
    flat[2 * MIB:2 * MIB + 6144] = (b"child!" * 1024)[:6144]
    return BytesSpace(bytes(buf)), parent, child, bytes(flat)


def test_keys_and_parent_lookup(disk, tmp_path):
    space, parent, child, flat = disk
    rep = _report([(10, {A: _lv(A, [0, 1, 2]), B: _lv(B, [3, 4, 5])})])
    from core.vhd.reader import format_uuid
    for key in (B, B[4:], format_uuid(child.unique_id), "vhd:" + format_uuid(child.unique_id)):
        res = resolve_vdi(space, key, report=rep)
        assert res.volume.lv_name == B and res.warnings == []
    chain = resolve_vdi(space, B, report=rep).chain()
    assert chain.complete and len(chain.images) == 2
    r = export_raw(chain, str(tmp_path / "flat.raw"))
    assert (tmp_path / "flat.raw").read_bytes() == flat
    assert r.sha256 == hashlib.sha256(flat).hexdigest()
    with pytest.raises(SrsalvageError, match="no LV"):
        resolve_vdi(space, "VHD-nope", report=rep)


def test_deleted_vdi_uses_older_generation_and_refuses_reused_extents(disk):
    space, parent, child, flat = disk
    warnings = []
    # seqno 12: B deleted, nobody took its extents; seqno 11 still has it
    rep = _report([(12, {A: _lv(A, [0, 1, 2])}),
                   (11, {A: _lv(A, [0, 1, 2]), B: _lv(B, [3, 4, 5], status="deleted")})])
    res = resolve_vdi(space, B, report=rep, warn=warnings.append)
    assert res.generation == 11 and res.newest_generation == 12
    assert warnings and "seqno 11" in warnings[0] and "seqno 12" in warnings[0]
    # seqno 13 gave PEs 3-4 to C
    rep = _report([(13, {A: _lv(A, [0, 1, 2]), C: _lv(C, [3, 4])}),
                   (11, {A: _lv(A, [0, 1, 2]),
                         B: _lv(B, [3, 4, 5], claimed={3: C, 4: C}, status="deleted")})])
    with pytest.raises(UnsafeError) as exc:
        resolve_vdi(space, B, report=rep)
    assert "3-4" in str(exc.value) and C in str(exc.value)
    res = resolve_vdi(space, B, report=rep, force=True)
    assert res.generation == 11 and any("--force" in w for w in res.warnings)
    # an explicit generation
    res = resolve_vdi(space, A, report=rep, generation=11)
    assert res.generation == 11
    with pytest.raises(SrsalvageError):
        resolve_vdi(space, A, report=rep, generation=99)


def test_deleted_vdi_uses_the_newest_of_several_older_generations(disk, tmp_path):
    """B is in seqno 12 (PEs 3-5, where its VHD is) and, differently mapped, in seqno 11:
    the newest generation holding it (12) is the one used, and its data comes out."""
    space, parent, child, flat = disk
    rep = _report([(13, {A: _lv(A, [0, 1, 2])}),
                   (12, {A: _lv(A, [0, 1, 2]), B: _lv(B, [3, 4, 5], status="deleted")}),
                   (11, {A: _lv(A, [0, 1, 2]), B: _lv(B, [2, 1, 0], status="deleted")})])
    warnings = []
    res = resolve_vdi(space, B, report=rep, warn=warnings.append)
    assert (res.generation, res.newest_generation) == (12, 13)
    assert len(warnings) == 1 and "seqno 12" in warnings[0] and "seqno 13" in warnings[0]
    assert res.volume.image() is not None
    export_raw(res.chain(), str(tmp_path / "b.raw"))
    assert (tmp_path / "b.raw").read_bytes() == flat


def test_parent_only_in_an_older_generation_is_found(disk, tmp_path):
    space, parent, child, flat = disk
    a_lv = _lv(A, [0, 1, 2])
    rep = _report([(12, {B: _lv(B, [3, 4, 5])}), (11, {A: a_lv, B: _lv(B, [3, 4, 5])})])
    for g in rep.volume_groups[0].generations:
        for lv in g.lvs.values():
            lv.status = "live"
    res = resolve_vdi(space, B, report=rep)
    assert res.generation == 12
    chain = res.chain()
    assert chain.complete and len(chain.images) == 2
    assert any("seqno 11" in w for w in res.warnings)
    export_raw(chain, str(tmp_path / "f.raw"))
    assert (tmp_path / "f.raw").read_bytes() == flat


# -- with real lvm2 and engineer lvm's analysis -------------------------------------------------
@pytest.mark.realtools
@pytest.mark.slow
def test_deleted_vdi_with_real_lvm2(tmp_path):
    pytest.importorskip("core.lvm.analyse", reason="core.lvm.analyse (engineer lvm) not written yet")
    rng = np.random.default_rng(8)
    blocks = {b: rng.integers(1, 256, 2 * MIB, dtype=np.uint8).tobytes() for b in (0, 2)}
    vsize = 3 * 2 * MIB
    expect = blocks[0] + bytes(2 * MIB) + blocks[2]
    with lvm_sr(tmp_path) as sr:
        sr.lvcreate("MGT", 1)
        sr.lvcreate(A, 3)
        sr.lvcreate(B, 1)
        buf = io.BytesIO()
        built = build_vhd(vsize, blocks, layout="blktap", out=buf, lv_size=3 * EXTENT)
        sr.write_lv(A, buf.getvalue())
        a_pes = sr.pes(A)
        sr.lvremove(A)
        out = tmp_path / "a.raw"
        p = cli("export", sr.path, "--vdi", A, "--format", "raw", "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert "generation" in p.stderr and "warning" in p.stderr
        assert out.read_bytes() == expect
        # a newer LV takes the freed extents
        sr.lvcreate(C, 2)
        assert set(sr.pes(C)) & set(a_pes)
        out2 = tmp_path / "a2.raw"
        p = cli("export", sr.path, "--vdi", A, "--format", "raw", "-o", str(out2))
        assert p.returncode == 3, p.stderr
        assert C in p.stderr and not out2.exists()
        taken = sorted(set(sr.pes(C)) & set(a_pes))
        assert str(taken[0]) in p.stderr
        p = cli("export", sr.path, "--vdi", A, "--format", "vhd", "-o", str(out2), "--force")
        assert p.returncode == 0, p.stderr
        assert out2.read_bytes() == buf.getvalue()[:built.data_end] + built.footer
