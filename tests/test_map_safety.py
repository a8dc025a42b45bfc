"""Nothing lost in silence through a map (issue 10): `export --map` refuses (exit 3, naming the
virtual byte ranges) when the BAT points into an extent the map does not place or past the
mapped LV, or when the footer at the mapped LV's end disagrees with the copy at offset 0 on the
size (a resized VDI would come back truncated at its old size), unless --force; `check` reports
it as an error; `reconstruct --fix` changes one VDI's placement only, and nothing places one PE
twice."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from core.match.synth import lvhd_vdi, place_extents
from core.structs import vhd as S
from core.vhd.build import build_vhd

E = 4 << 20
MiB = 1 << 20
D = 11 << 20


def _key(uid: bytes) -> str:
    h = uid.hex()
    return f"vhd:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _map_doc(entries: list[tuple[object, list[int | None]]]) -> dict:
    vdis = []
    for built, pes in entries:
        runs = [[le, p, 1] for le, p in enumerate(pes) if p is not None]
        vdis.append({"key": _key(built.unique_id), "lv": None,
                     "vhd_uuid": _key(built.unique_id)[4:], "map": runs,
                     "extents_needed": len(pes),
                     "missing_les": [le for le, p in enumerate(pes) if p is None],
                     "complete": all(p is not None for p in pes)})
    return {"image": {"path": "x", "bytes": 0},
            "volume_groups": [{"name": None, "extent_bytes": E, "data_offset": D,
                               "pe_count": 24}], "vdis": vdis}


@pytest.fixture(scope="module")
def sr(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mapsafety")
    a = lvhd_vdi(40 * MiB, list(range(9)), seed=41)
    b = lvhd_vdi(40 * MiB, list(range(8)), seed=42)
    path = tmp / "sr.img"
    with open(path, "wb") as f:
        f.truncate(D + 24 * E)
        place_extents(f, a.data, [0, 1, 2, 8, 9, 10], D)
        place_extents(f, b.data, [3, 4, 5, 11, 12, 13], D)
    return path, a, b


def _write(tmp_path, doc, name="map.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def test_export_refuses_when_the_bat_points_into_an_unplaced_extent(sr, tmp_path, capsys):
    path, a, b = sr
    doc = _map_doc([(a, [0, 1, 2, None, 9, 10]), (b, [3, 4, 5, 11, 12, 13])])
    m = _write(tmp_path, doc)
    out = tmp_path / "a.raw"
    rc = main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
               "--format", "raw", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and not out.exists() and not (tmp_path / "a.raw.part").exists()
    # LE 3 holds the end of one block and the start of another: their virtual ranges named
    bs = 2 * MiB
    blocks = sorted(b_ for b_, off in a.block_offsets.items()
                    if off // E <= 3 <= (off + 512 + bs - 1) // E)
    assert blocks and "LE(s) 3" in err
    merged: list[list[int]] = []
    for blk in blocks:
        if merged and merged[-1][1] == blk * bs:
            merged[-1][1] = (blk + 1) * bs
        else:
            merged.append([blk * bs, (blk + 1) * bs])
    for lo, hi in merged:
        assert f"virtual bytes" in err and f"{lo}-{hi - 1}" in err, err
    for fmt in ("vhd", "raw"):
        rc = main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
                   "--format", fmt, "-o", str(tmp_path / f"x.{fmt}")])
        assert rc == 3
    capsys.readouterr()
    # with --force: exported, and said so
    rc = main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
               "--format", "raw", "-o", str(out), "--force"])
    assert rc == 0 and out.exists()
    assert "exported anyway" in capsys.readouterr().err
    # check reports it as an error
    assert main(["check", str(path), "--vdi", _key(a.unique_id), "--map", str(m), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["findings"]
    assert any(f["kind"] == "map-bat-unplaced" and f["severity"] == "error" for f in found)


def test_export_refuses_a_bat_past_the_mapped_lv(sr, tmp_path, capsys):
    path, a, b = sr
    m = _write(tmp_path, _map_doc([(a, [0, 1, 2, 8])]))
    rc = main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
               "--format", "raw", "-o", str(tmp_path / "a.raw")])
    assert rc == 3 and "past the mapped LV" in capsys.readouterr().err


def test_complete_map_exports_without_complaint(sr, tmp_path, capsys):
    path, a, b = sr
    m = _write(tmp_path, _map_doc([(a, [0, 1, 2, 8, 9, 10]), (b, [3, 4, 5, 11, 12, 13])]))
    assert main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
                 "--format", "raw", "-o", str(tmp_path / "a.raw")]) == 0
    capsys.readouterr()
    assert main(["check", str(path), "--vdi", _key(a.unique_id), "--map", str(m), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["findings"]
    assert not [f for f in found if f["kind"].startswith("map-")]


def test_resized_vdi_never_comes_back_truncated_at_its_old_size(tmp_path, capsys):
    """A thick VDI resized from 40 to 60 MiB: `vhd-util resize` rewrote the footer copy at 0
    and the footer at the new LV end, the old footer (40 MiB) stays where the LV used to end.
    A map that ends the LV there refuses; the right map exports the 60 MiB disk."""
    new = lvhd_vdi(60 * MiB, list(range(6)), seed=43, lv_size=8 * E)
    old_footer = bytearray(new.footer)
    old_footer[48:56] = (40 * MiB).to_bytes(8, "big")         # orig_size
    old_footer[56:64] = (40 * MiB).to_bytes(8, "big")         # curr_size
    old_footer[64:68] = bytes(4)
    old_footer[64:68] = S.footer_checksum(bytes(old_footer)).to_bytes(4, "big")
    assert S.parse_footer(bytes(old_footer)).curr_size == 40 * MiB
    data = bytearray(new.data)
    end_old = 5 * E
    assert end_old - 512 >= new.data_end
    data[end_old - 512:end_old] = old_footer
    path = tmp_path / "sr.img"
    pes = [2, 3, 4, 5, 9, 10, 11, 12]
    with open(path, "wb") as f:
        f.truncate(D + 24 * E)
        place_extents(f, bytes(data), pes, D)
    short = _write(tmp_path, _map_doc([(new, pes[:5])]), "short.json")
    out = tmp_path / "r.raw"
    rc = main(["export", str(path), "--vdi", _key(new.unique_id), "--map", str(short),
               "--format", "raw", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 3 and not out.exists()
    assert str(40 * MiB) in err and str(60 * MiB) in err
    assert main(["check", str(path), "--vdi", _key(new.unique_id), "--map", str(short),
                 "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["findings"]
    assert any(f["kind"] == "map-size-mismatch" and f["severity"] == "error" for f in found)
    full = _write(tmp_path, _map_doc([(new, pes)]), "full.json")
    assert main(["export", str(path), "--vdi", _key(new.unique_id), "--map", str(full),
                 "--format", "raw", "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == 60 * MiB
