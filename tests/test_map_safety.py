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
    # errors found: check exits 1 (the findings are printed all the same)
    assert main(["check", str(path), "--vdi", _key(a.unique_id), "--map", str(m), "--json"]) == 1
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
                 "--json"]) == 1      # errors found: exit 1
    found = json.loads(capsys.readouterr().out)["findings"]
    assert any(f["kind"] == "map-size-mismatch" and f["severity"] == "error" for f in found)
    full = _write(tmp_path, _map_doc([(new, pes)]), "full.json")
    assert main(["export", str(path), "--vdi", _key(new.unique_id), "--map", str(full),
                 "--format", "raw", "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == 60 * MiB


# -- issue 11: sizes from the evidence bounded by its real size ----------------------------------
@pytest.mark.parametrize("pe_start", [(1 << 63) + 4096, (1 << 64) - 512, 1 << 40])
def test_issue11_huge_pe_start_is_no_crash(tmp_path, capsys, pe_start):
    """A PV label whose pe_start lies past the image (or past int64): no OverflowError, no
    allocation from it; the label is not taken for the grid and the command says so."""
    from core.lvm.label import build_label_sector
    from core.match.restore import lvm_id

    p = tmp_path / "x.img"
    with open(p, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(512)
        f.write(build_label_sector(lvm_id(), 64 * MiB, pe_start, [(4096, MiB)]))
    assert main(["reconstruct", str(p), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["vdis"] == [] and any(f["kind"] == "no-extent-grid" for f in doc["findings"])


def test_issue11_huge_pe_start_features_bounded():
    """compute_pe_features itself: an offset past the evidence gives no PEs (nothing
    allocated from the asked count)."""
    from core.match.features import SectorReader, compute_pe_features
    from core.spaces import BytesSpace

    reader = SectorReader(BytesSpace(bytes(8 * MiB)))
    f = compute_pe_features(reader, (1 << 63) + 4096, E, 1 << 40)
    assert f.pe_count == 0 and len(f.has_data) == 0
    f = compute_pe_features(reader, MiB, E, 1 << 40)       # count bounded by the evidence
    assert len(f.has_data) == 1


# -- reconstruct --fix: that VDI only, one line exit 2 for what cannot apply -----------------------
def test_fix_changes_one_vdi_only_and_bad_fixes_are_one_line_errors(sr, tmp_path, capsys):
    path, a, b = sr
    ka, kb = _key(a.unique_id), _key(b.unique_id)
    assert main(["reconstruct", str(path), "--json"]) == 0
    base = {v["key"]: v for v in json.loads(capsys.readouterr().out)["vdis"]}
    assert base[ka]["map"] == [[0, 0, 3], [3, 8, 3]]
    # a's LE 4 moved by hand onto a free PE: a changes there, b's map does not
    assert main(["reconstruct", str(path), "--json", "--fix", f"{ka}:4=20"]) == 0
    got = {v["key"]: v for v in json.loads(capsys.readouterr().out)["vdis"]}
    ext = {e["le"]: e for e in got[ka]["extents"]}
    assert ext[4]["pe"] == 20 and ext[4]["source"] == "manual"
    assert got[kb]["map"] == base[kb]["map"]
    pes = [e["pe"] for v in got.values() for e in v["extents"]]
    assert len(pes) == len(set(pes)), "one PE placed twice"
    for bad, why in ((f"vhd:00000000-0000-4000-8000-000000000000:1=2", "no VDI"),
                     (f"{ka}:100000=20", "out of range"),
                     (f"{ka}:4=100000", "no such PE"),
                     (f"{ka}:4=11", "belongs to"),         # b's LE 3
                     (f"{ka}:4=3", "belongs to")):          # b's head
        assert main(["reconstruct", str(path), "--fix", bad]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and why in err[0], (bad, err)
    # one PE fixed for two LEs
    assert main(["reconstruct", str(path), "--fix", f"{ka}:4=20", "--fix", f"{ka}:5=20"]) == 2
    assert "already fixed" in capsys.readouterr().err


def test_map_file_placing_one_pe_twice_is_refused(sr, tmp_path, capsys):
    path, a, b = sr
    m = _write(tmp_path, _map_doc([(a, [0, 1, 2, 8, 9, 10]), (b, [3, 4, 5, 11, 12, 10])]))
    rc = main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
               "--format", "raw", "-o", str(tmp_path / "a.raw")])
    assert rc != 0 and "PE 10" in capsys.readouterr().err
    assert not (tmp_path / "a.raw").exists()


def test_case_edits_never_place_one_pe_twice(tmp_path):
    from core.case import Case, CaseError, Extent

    case = Case(None, str(tmp_path / "e.img"))
    case.reset_map("A", [Extent(1, 1.0, "metadata"), Extent(2, 1.0, "metadata")], "engine")
    case.reset_map("B", [Extent(5, 1.0, "metadata"), Extent(None, 0.0, "gap")], "engine")
    with pytest.raises(CaseError):
        case.accept("A", [None, Extent(1, 0.9, "vhd-match")], le=1)   # A's own LE 0
    # accepting every suggestion skips one whose PE is placed elsewhere
    case.accept("B", [None, Extent(2, 0.9, "vhd-match")])
    assert case.map_of("B").extents[1].pe is None
    case.accept("B", [None, Extent(7, 0.9, "vhd-match")])
    assert case.map_of("B").extents[1].pe == 7


def test_export_through_guessed_placements_is_refused_and_unsure_ones_are_named(
        sr, tmp_path, capsys):
    """Issue 10: a placement LVM's allocation order alone made (confidence < 0.75) is not
    exported without --force; one whose content fits but nothing ties it to this VDI (< 0.9)
    is exported with its virtual ranges named on stderr. Never another disk's bytes in
    silence."""
    path, a, b = sr
    doc = _map_doc([(a, [0, 1, 2, 8, 9, 10]), (b, [3, 4, 5, 11, 12, 13])])
    vdi = doc["vdis"][0]
    vdi["extents"] = [{"le": le, "pe": p, "confidence": 1.0, "source": "vhd-match"}
                      for le, p in enumerate([0, 1, 2, 8, 9, 10])]
    vdi["extents"][2]["confidence"] = 0.6                 # walked: allocation order alone
    m = _write(tmp_path, doc)
    out = tmp_path / "a.raw"
    assert main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
                 "--format", "raw", "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert "LE(s) 2" in err and "virtual bytes" in err and not out.exists()
    assert main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
                 "--format", "raw", "-o", str(out), "--force"]) == 0
    capsys.readouterr()
    out.unlink()
    vdi["extents"][2]["confidence"] = 0.8                 # content fits, nothing ties it
    m = _write(tmp_path, doc, "map2.json")
    assert main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(m),
                 "--format", "raw", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "LE(s) 2" in err and "confidence below 0.9" in err
