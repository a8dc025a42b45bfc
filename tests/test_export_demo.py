"""End to end on the demo SR (engineer scan's core.demo, engineer lvm's analysis): every VDI's
raw export has the sha256 the demo builder recorded for its virtual disk — blktap LVHDs with
stale sectors under clear bitmap bits, a qemu VHD dd'ed into an LV, a raw LV, a snapshot chain,
a deleted VDI — and the deleted VDI whose extents were reused is refused."""

from __future__ import annotations

import pytest

from core.errors import UnsafeError
from core.source import Evidence
from core.vdi import resolve_vdi
from core.vhd.export import export_raw, export_vhd
from core.vhd.reader import VhdImage, format_uuid

pytestmark = pytest.mark.slow


def test_every_demo_vdi_exports_to_its_recorded_sha256(tmp_path):
    demo = pytest.importorskip("core.demo")
    analyse = pytest.importorskip("core.lvm.analyse")
    path = str(tmp_path / "demo.img")
    manifest = demo.build_demo(path, damage="partition-table")
    with Evidence(path) as ev:
        report = analyse.analyse_disk(ev)
        checked = stale_checked = 0
        for vdi in manifest.vdis:
            vdi = vdi if isinstance(vdi, dict) else vdi.__dict__
            out = str(tmp_path / f"{vdi['key']}.raw")
            if vdi["claimed_by"]:
                with pytest.raises(UnsafeError) as exc:
                    resolve_vdi(ev, vdi["lv_name"], report=report)
                assert str(sorted(vdi["claimed_by"])[0]) in str(exc.value)
                continue
            res = resolve_vdi(ev, vdi["lv_name"], report=report)
            if vdi["status"] == "deleted":
                assert res.warnings and res.generation < res.newest_generation
            vol = res.volume
            img = vol.image()
            if vdi["layout"] == "raw":
                assert img is None
                r = export_raw(vol.space, out, [path])
            else:
                assert format_uuid(img.unique_id) == vdi["vhd_unique_id"]
                if vdi["layout"] == "blktap":
                    # XenServer's layout: the primary footer in the LV's last 512 bytes
                    assert img.footer_offset == vdi["lv_bytes"] - 512 and img.footer_source == "end"
                    stale_checked += bool(vdi["stale_sectors"])
                chain = res.chain()
                assert chain.complete
                assert len(chain.images) == (2 if vdi["parent_key"] else 1)
                r = export_raw(chain, out, [path])
                rv = export_vhd(img, out + ".vhd", [path])
                again = VhdImage.open(Evidence(out + ".vhd"))
                assert again.unique_id == img.unique_id and rv.unrepaired == []
            assert r.sha256 == vdi["sha256"], vdi["key"]
            checked += 1
    assert checked >= 6
    # the bitmaps were really exercised: blktap VDIs whose clear bits lie over stale bytes
    assert stale_checked >= 1
