"""Ground truth of a built SR, and scoring a reconstruction against it.

Truth (JSON-able) per live LV: VDI uuid, VHD unique id, parent unique id and LV, hidden,
snapshot flags, the PE of every LE (`lvs --segments`), the LEs that hold VHD bytes that are not
zero (`data_les`: the footer copies, header, BAT, batmap, locators, each allocated block's
bitmap sector and the data sectors its bitmap marks; a stale byte in a clear-bitmap sector
is NOT VHD data), and the virtual disk it must export to (the guest's own raw file for leaves
and snapshots; the model's read of the chain for base copies). Also every LV removed during
the SR's life (its map at removal) and the previous life's old VHDs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from . import libvhd as L


def fmt_uid(uid: bytes) -> str:
    h = uid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def vhd_ranges(v: L.Vhd, lv_size: int):
    """(offset, length) of the VHD's own structures inside the LV."""
    yield 0, L.SECTOR
    yield L.SECTOR, 1024
    yield L.TABLE_OFFSET, L.BAT_BYTES
    yield L.BATMAP_HDR_OFF, L.SECTOR
    yield L.BATMAP_OFF, L.BATMAP_SECS * L.SECTOR
    for loc in v.locators:
        yield loc["data_offset"], loc["data_len"]
    yield lv_size - L.SECTOR, L.SECTOR


def data_les(lv: L.Lv, v: L.Vhd) -> list[int]:
    E = lv.sr.extent
    n = len(lv.sr.maps[lv.name])
    hit = np.zeros(n, dtype=bool)
    for off, length in vhd_ranges(v, lv.size):
        pos = off
        while pos < off + length:
            le = pos // E
            take = min(off + length, (le + 1) * E) - pos
            if not hit[le] and any(lv.read(pos, take)):
                hit[le] = True
            pos += take
    for blk in v.allocated():
        base = int(v.bat[blk])
        bm = np.ones(L.SPB, bool) if v.batmap[blk] else v.bitmaps.get(blk, np.zeros(L.SPB, bool))
        if any(lv.read(base * L.SECTOR, L.SECTOR)):
            hit[base * L.SECTOR // E] = True
        raw = np.frombuffer(lv.read((base + 1) * L.SECTOR, L.BLOCK), np.uint8)
        nz = raw.reshape(L.SPB, L.SECTOR).any(axis=1) & bm
        secs = np.flatnonzero(nz)
        if secs.size:
            hit[np.unique((base + 1 + secs) * L.SECTOR // E)] = True
    return [int(i) for i in np.flatnonzero(hit)]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chain_of(vdi):
    out = []
    while vdi is not None:
        out.append(vdi)
        vdi = vdi.parent
    return out


def collect(xs, meta: dict, pastlife: dict, workdir: str) -> dict:
    """The truth of SR `xs` (smops.XsSr) as it stands now."""
    lvm = xs.lvm
    lvm.refresh()
    lvs = {}
    for name, pes in lvm.maps.items():
        entry: dict = {"pes": pes}
        if name == "MGT":
            entry["kind"] = "mgt"
            lvs[name] = entry
            continue
        vdi = next(v for v in xs.vdis.values() if v.lv_name == name)
        lv = L.Lv(lvm, name)
        v = vdi.vhd
        entry.update({
            "kind": "vhd", "vdi_uuid": vdi.uuid, "label": vdi.label,
            "vhd_uid": fmt_uid(v.uid), "parent_uid": fmt_uid(v.parent_uid)
            if vdi.parent else None, "parent_lv": vdi.parent.lv_name if vdi.parent else None,
            "hidden": bool(v.hidden), "is_snapshot": vdi.is_snapshot,
            "snapshot_of": vdi.snapshot_of, "virtual_bytes": v.curr_size,
            "data_les": data_les(lv, v), "blocks": len(v.allocated()),
        })
        if vdi.expected is not None and not v.hidden:
            entry["expected_raw"], entry["expected_sha256"] = vdi.expected
            # the builder checks itself: the chain as the model reads it (bitmaps, parents)
            # must give exactly the guest's own disk
            data = L.virtual_read([(L.Lv(lvm, c.lv_name), c.vhd) for c in chain_of(vdi)],
                                  v.curr_size)
            if sha256_bytes(data) != entry["expected_sha256"]:
                raise AssertionError(f"builder: {name} does not read back as its guest disk")
        else:      # base copies: what the model reads through the chain
            data = L.virtual_read([(L.Lv(lvm, c.lv_name), c.vhd) for c in chain_of(vdi)],
                                  v.curr_size)
            entry["expected_raw"] = None
            entry["expected_sha256"] = sha256_bytes(data)
        lvs[name] = entry
    return {"meta": meta, "lvs": lvs, "removed": list(xs.removed),
            "previous_life": {"old_vhds": pastlife["old_vhds"]}, "events": list(xs.events),
            "mgt_slots": [dict(s) for s in xs.slots]}


# -- scoring ---------------------------------------------------------------------------------

def _index(truth: dict) -> dict[str, dict]:
    """vhd uid -> {"pes": [...] (None where unknown), "live": bool, "data_les": [...]}"""
    out: dict[str, dict] = {}
    for old in truth["previous_life"]["old_vhds"]:
        u = bytes.fromhex(old["uid"])
        out[fmt_uid(u)] = {"pes": old["pes"], "live": False, "data_les": []}
    for r in truth["removed"]:
        out[fmt_uid(bytes.fromhex(r["uid"]))] = {"pes": r["pes"], "live": False, "data_les": []}
    for name, t in truth["lvs"].items():
        if t["kind"] == "vhd":
            out[t["vhd_uid"]] = {"pes": t["pes"], "live": True, "data_les": t["data_les"],
                                 "name": name}
    return out


def score(rec, truth: dict, min_conf: float = 0.5) -> dict:
    """Score a Reconstruction or a map document (see score_placements)."""
    got = placements(rec) if isinstance(rec, dict) else placements_of(rec)
    return score_placements(got, truth, min_conf)


def score_placements(got, truth: dict, min_conf: float = 0.5) -> dict:
    """precision = placements on the right PE / placements (a removed or older VHD's placement
    is right on the PE it had); recall = live VHD-data LEs placed right / all of them; wrong
    placements with confidence >= min_conf listed."""
    idx = _index(truth)
    placed = right = 0
    wrong_conf: list[tuple] = []
    found: dict[str, set] = {}
    for key, vhd_uuid, extents in got:
        t = idx.get(vhd_uuid or "")
        for le, pe, conf, source in extents:
            placed += 1
            ok = t is not None and le < len(t["pes"]) and t["pes"][le] == pe
            if ok:
                right += 1
                if t["live"]:
                    found.setdefault(vhd_uuid, set()).add(le)
            elif conf >= min_conf:
                wrong_conf.append((key, le, pe, round(conf, 3), source,
                                   None if t is None or le >= len(t["pes"]) else t["pes"][le]))
    needed = hit = 0
    missed = {}
    for u, t in idx.items():
        if not t["live"]:
            continue
        need = set(t["data_les"])
        got = found.get(u, set()) & need
        needed += len(need)
        hit += len(got)
        if need - got:
            missed[t["name"]] = sorted(need - got)
    return {"placed": placed, "right": right, "needed": needed, "found": hit,
            "precision": right / placed if placed else 1.0,
            "recall": hit / needed if needed else 1.0,
            "wrong_confident": wrong_conf, "missed": missed}


def run_cli(*argv: str) -> tuple[int, str]:
    """`srsalvage ARGS` (app.cli.main, the command line a technician types), in process:
    (exit code, stderr)."""
    import contextlib
    import io

    from app.cli import main
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(list(argv))
        except SystemExit as exc:            # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return int(code or 0), err.getvalue().strip()


def placements(doc: dict) -> list[tuple[str, str | None, list[tuple[int, int, float, str]]]]:
    """(key, vhd uuid, [(le, pe, confidence, source)]) of every VDI in a map file
    (`reconstruct -o MAP.json`)."""
    return [(v["key"], v.get("vhd_uuid"),
             [(e["le"], e["pe"], e.get("confidence", 1.0), e.get("source", ""))
              for e in v.get("extents", [])]) for v in doc.get("vdis", [])]


def placements_of(rec) -> list[tuple[str, str | None, list[tuple[int, int, float, str]]]]:
    """The same from a core.match Reconstruction."""
    return [(v.key, v.vhd_uuid, [(le, p.pe, p.confidence, p.source) for le, p in v.extents])
            for v in rec.vdis]


def check_exports(image: str, truth: dict, map_path: str, rec_json: dict) -> list[dict]:
    """Export every VDI with a known virtual disk through the rebuilt map (`srsalvage export
    --map --format raw`) and compare: equal | refused (exit 3, ranges named) | WRONG (exit 0,
    different bytes) | failed (other exit) | absent (not in the map)."""
    by_uid = {v.get("vhd_uuid"): v for v in rec_json.get("vdis", [])}
    out = []
    for name, t in truth["lvs"].items():
        if t["kind"] != "vhd":
            continue
        entry = {"lv": name, "hidden": t["hidden"], "snapshot": t["is_snapshot"]}
        v = by_uid.get(t["vhd_uid"])
        if v is None:
            entry["outcome"] = "absent"
            out.append(entry)
            continue
        with tempfile.TemporaryDirectory(prefix="xsexport-") as d:
            dst = os.path.join(d, "out.raw")
            code, err = run_cli("export", image, "--map", map_path, "--vdi", v["key"],
                                "--format", "raw", "-o", dst)
            entry["exit"] = code
            entry["stderr"] = err[-400:]
            if code == 0:
                h = hashlib.sha256()
                with open(dst, "rb") as f:
                    while chunk := f.read(4 << 20):
                        h.update(chunk)
                entry["outcome"] = "equal" if h.hexdigest() == t["expected_sha256"] else "WRONG"
            elif code == 3:
                entry["outcome"] = "refused"
            else:
                entry["outcome"] = "failed"
        out.append(entry)
    return out


def save(truth: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(truth, f, indent=1)
