"""`srsalvage reconstruct` on a synthetic SR: the contract's JSON, the map file, safe outputs."""

from __future__ import annotations

import json
import os

import pytest

from app.cli import main
from core.match.synth import lvhd_vdi, place_extents

E = 4 << 20
MiB = 1 << 20
D = 11 << 20


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from core.lvm.label import build_label_sector
    from core.match.restore import lvm_id

    tmp = tmp_path_factory.mktemp("cli")
    a = lvhd_vdi(40 * MiB, list(range(9)), seed=31)
    b = lvhd_vdi(40 * MiB, list(range(8)), seed=32)
    path = tmp / "sr.img"
    with open(path, "wb") as f:
        f.truncate(D + 20 * E)
        f.seek(512)   # the PV label survives, the metadata area is empty
        f.write(build_label_sector(lvm_id(), D + 20 * E, D, [(4096, D - 4096)]))
        place_extents(f, a.data, [0, 1, 2, 8, 9, 10], D)
        place_extents(f, b.data, [3, 4, 5, 11, 12, 13], D)
    return path, a, b


def _key(uid: bytes) -> str:
    h = uid.hex()
    return f"vhd:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def test_json_document_and_map_file(image, tmp_path, capsys):
    path, a, b = image
    out = tmp_path / "map.json"
    assert main(["reconstruct", str(path), "--json", "-o", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text())["vdis"] == doc["vdis"]
    vg = doc["volume_groups"][0]
    assert vg["extent_bytes"] == E and vg["data_offset"] == D
    by_key = {v["key"]: v for v in doc["vdis"]}
    va = by_key[_key(a.unique_id)]
    for field in ("key", "lv", "vhd_uuid", "virtual_bytes", "vhd_bytes", "extents_needed", "map",
                  "extents", "missing_les", "complete"):
        assert field in va
    assert va["map"] == [[0, 0, 3], [3, 8, 3]]
    assert va["complete"] and va["missing_les"] == [] and va["lv"] is None
    assert va["vhd_bytes"] == 6 * E and va["virtual_bytes"] == 40 * MiB
    assert by_key[_key(b.unique_id)]["map"] == [[0, 3, 3], [3, 11, 3]]
    # export --map reads it back (engineer "vhd"'s export)
    raw = tmp_path / "a.raw"
    assert main(["export", str(path), "--vdi", _key(a.unique_id), "--map", str(out),
                 "--format", "raw", "-o", str(raw)]) == 0
    assert os.path.getsize(raw) == 40 * MiB


def test_outputs_are_safe(image, tmp_path, capsys):
    path, a, b = image
    out = tmp_path / "map.json"
    out.write_text("{}")
    assert main(["reconstruct", str(path), "-o", str(out)]) == 3          # exists
    assert out.read_text() == "{}"
    assert main(["reconstruct", str(path), "-o", str(path)]) == 3         # the evidence
    assert main(["reconstruct", str(path), "--fix", "garbage"]) == 1
    assert "KEY:LE=PE" in capsys.readouterr().err


def test_restore_file_and_xe_script(image, tmp_path, capsys):
    path, a, b = image
    vg = "VG_XenStorage-0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    vgf, sh = tmp_path / "r.vg", tmp_path / "r.sh"
    assert main(["reconstruct", str(path), "--vgcfg", str(vgf), "--xe", str(sh),
                 "--vg-name", vg, "--device", "/dev/sdb3"]) == 0
    text = vgf.read_text()
    assert 'contents = "Text Format Volume Group"' in text and vg + " {" in text
    from core.lvm.model import VGMetadata
    meta = VGMetadata.from_text(text)
    lvs = {name: lv.pes() for name, lv in meta.lvs.items()}
    assert lvs[f"VHD-{_key(a.unique_id)[4:]}"] == [0, 1, 2, 8, 9, 10]
    assert meta.pvs[0].pe_start * 512 == D
    script = sh.read_text()
    assert "xe sr-introduce uuid=0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9" in script
    assert "pbd-create" in script and "pbd-plug" in script and "vgcfgrestore" in script


def test_text_output(image, capsys):
    path, a, b = image
    assert main(["reconstruct", str(path)]) == 0
    text = capsys.readouterr().out
    assert _key(a.unique_id) in text and "LE 0-2 -> PE 0-2" in text
