"""The MGT volume (sm srmetadata.py layout) and the SR model."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.lvm.model import Generation, LogicalVolume, Segment, VGMetadata, VolumeGroup
from core.xen import build_mgt, parse_mgt, sr_model

SR = "6b1e2c86-1a3d-4b6e-9f00-0a1b2c3d4e5f"
A = "aaaaaaaa-1111-4222-8333-444455556666"
B = "bbbbbbbb-1111-4222-8333-444455556666"


def sample() -> bytes:
    return build_mgt(SR, "Local <SR>", "desc", [
        {"uuid": A, "name_label": "db & logs", "name_description": "x", "deleted": 1},
        {"uuid": B, "name_label": "web01", "vdi_type": "aio", "read_only": 1}], size=4 << 20)


def test_build_matches_sm_layout():
    data = sample()
    # header: "XSSM:<length left-justified in 10>:1:2" padded with spaces (srmetadata.buildHeader)
    assert data[:512] == b"XSSM:4096      :1:2".ljust(512, b" ")
    assert data[512:512 + 22] == b'<?xml version="1.0" ?>'
    assert data[512:1024].rstrip(b" ").endswith(b"<allocation>thick</allocation>")
    assert data[1024:1536].rstrip(b" ") == b"<name_label>Local &lt;SR&gt;</name_label>"
    slot = data[2048:3072]
    assert slot[:512].rstrip(b" ") == (b"<vdi><name_label>db &amp; logs</name_label>"
                                       b"<name_description>x</name_description>")
    assert slot[512:].rstrip(b" ").endswith(b"<deleted>1</deleted></vdi>")
    assert data[4096:4100] == b"\0\0\0\0"


def test_parse_round_trip():
    m = parse_mgt(sample())
    assert m.header_ok and m.length == 4096 and m.version == (1, 2)
    assert (m.sr_uuid, m.allocation, m.sr_name_label) == (SR, "thick", "Local <SR>")
    assert [(v.uuid, v.name_label, v.deleted) for v in m.vdis] == \
        [(A, "db & logs", True), (B, "web01", False)]
    assert m.vdis[1].fields["vdi_type"] == "aio" and m.vdis[1].fields["read_only"] == "1"
    assert m.by_uuid()[A].name_label == "db & logs"
    assert m.findings == []


def test_truncated_and_damaged_mgt():
    data = bytearray(sample())
    data[0:512] = bytes(512)                       # header gone: slots still read
    m = parse_mgt(bytes(data))
    assert not m.header_ok and [v.uuid for v in m.vdis] == [A, B]
    assert m.findings[0].kind == "mgt-header"
    m = parse_mgt(sample()[:2048 + 700])           # cut inside slot 0's second sector
    assert [v.name_label for v in m.vdis] == ["db & logs"]
    assert not m.vdis[0].complete and m.vdis[0].uuid == A   # uuid comes first in sector B
    assert "deleted" not in m.vdis[0].fields                 # ... the deleted flag was cut off
    assert any(f.kind == "mgt-slot-damaged" for f in m.findings)


def test_name_label_truncated_like_sm():
    data = build_mgt(SR, "", "", [{"uuid": A, "name_label": "n" * 600, "name_description": "d" * 600}])
    m = parse_mgt(data)
    assert len(m.vdis[0].name_label) + len(m.vdis[0].name_description) <= 445


@given(st.binary(max_size=6000))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_mgt_survives_garbage(data):
    parse_mgt(data)
    parse_mgt(b"XSSM:99999999999:1:2" + data)
    parse_mgt(sample()[:2048] + data)


def test_sr_model_from_generations():
    def lvv(name):
        return LogicalVolume(name, segments=[Segment(0, 1, stripes=[("pv0", 0)])])
    g2 = Generation(2, b"", VGMetadata(f"VG_XenStorage-{SR}", "id", 2,
                                       lvs={"MGT": lvv("MGT"), f"LV-{B}": lvv(f"LV-{B}")}))
    g1 = Generation(1, b"", VGMetadata(f"VG_XenStorage-{SR}", "id", 1,
                                       lvs={f"VHD-{A}": lvv(f"VHD-{A}")}))
    g1.lvs[f"VHD-{A}"].status = "deleted"
    vg = VolumeGroup(f"VG_XenStorage-{SR}", "id", generations=[g2, g1], current=g2)
    sr = sr_model(vg, parse_mgt(sample()))
    assert sr.uuid == SR
    got = {v.lv_name: (v.kind, v.label, v.mgt_deleted, v.lv_status, v.seqnos) for v in sr.vdis}
    assert got == {f"LV-{B}": ("raw", "web01", False, "live", [2]),
                   f"VHD-{A}": ("vhd", "db & logs", True, "deleted", [1])}


def test_device_mapper_names_are_undoubled():
    from core.xen import dm_name_parts

    sr, vdi = "6f1e0a1b-2c3d-4e5f-8a9b-0c1d2e3f4a5b", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    name = f"VG_XenStorage--{sr.replace('-', '--')}-VHD--{vdi.replace('-', '--')}"
    assert dm_name_parts("/dev/mapper/" + name) == [f"VG_XenStorage-{sr}", f"VHD-{vdi}"]
    assert dm_name_parts(".\\" + name) == [f"VG_XenStorage-{sr}", f"VHD-{vdi}"]
    assert dm_name_parts("plain") == ["plain"]
