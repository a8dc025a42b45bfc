"""Resolve `--vdi KEY` into the LV byte space that holds the VDI, and find its parents.

KEY is an LV name (`VHD-<uuid>`), a VDI uuid, a VHD footer unique id, or a `key` of a map file
(`reconstruct -o MAP.json`, cli-contract.md). Without a map the LVM analysis (engineer "lvm",
`core.lvm.analyse.analyse_disk`) is asked, newest generation first: the first generation that
holds KEY is used. When that is not the newest generation (a deleted VDI) the caller is warned,
and if a newer generation gave any of its extents to another LV the export is refused
(UnsafeError, exit 3) unless forced — those extents may hold someone else's data now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from core.errors import SrsalvageError, UnsafeError
from core.lvm.space import (lv_locations, lv_space, pe_disk_offset, pes_space,  # noqa: F401
                            pv_data_offsets, space_of_locations, vg_pe_location, vg_pes)
from core.spaces import ByteSpace, RunList, compact_ranges, extent_space, map_runs_to_pes
from core.vhd.chain import Chain, resolve_chain
from core.vhd.reader import VhdError, VhdImage, format_uuid
from core.sr import SrReport, analyse_sr
from core.xen import StorageRepository
from core.xen_names import UUID_RE, lv_kind
MAX_MAP_BYTES = 64 << 20
MAX_LES = 1 << 20  # 4 TiB of 4 MiB extents (a VHD is at most 2 TiB)


@dataclass
class VdiVolume:
    """One LV (or map entry) that may hold a VDI."""

    key: str
    lv_name: str | None
    space: RunList
    generation: int | None = None
    kind: str = "vhd"
    map_runs: list = field(default_factory=list)
    claimed_by: dict = field(default_factory=dict)
    status: str = "live"
    vhd_uuid: str | None = None      # footer unique id if known without opening
    missing_les: list = field(default_factory=list)  # a map's LEs it could not place
    label: str = ""                  # the VDI's name label (MGT), when known
    past_disk: list = field(default_factory=list)    # LE ranges the metadata maps past the disk
    map_pes: list | None = None      # from a map file: PE of every LE (None: not placed)
    # from a map file: (LE, confidence) of placements below EXPORT_TIED: nothing ties them to
    # this VDI rather than another (below EXPORT_SURE an export through them is refused)
    map_unsure: list = field(default_factory=list)
    extent_bytes: int | None = None  # from a map file: the extent size
    _image: Any = None
    _image_error: str | None = None

    @property
    def vdi_uuid(self) -> str | None:
        m = UUID_RE.search(self.lv_name or "")
        return m.group(0).lower() if m else None

    def image(self) -> VhdImage | None:
        """The VHD in this volume (None: raw LV or no VHD found)."""
        shared = getattr(self, "_shared", None)
        if shared is not None:
            self._image, self._image_error = shared.image(), shared._image_error
            return self._image
        if self._image is None and self._image_error is None:
            if self.kind not in ("vhd", "other", "unknown"):
                self._image_error = f"{self.kind} volume"
            else:
                try:
                    self._image = VhdImage.open(self.space, name=self.key)
                except VhdError as exc:
                    self._image_error = str(exc)
        return self._image

    @property
    def image_error(self) -> str | None:
        self.image()
        return self._image_error


@dataclass
class ResolvedVdi:
    volume: VdiVolume
    siblings: list[VdiVolume]           # the other volumes of the same SR (parents live here)
    warnings: list[str] = field(default_factory=list)
    generation: int | None = None
    newest_generation: int | None = None
    source: str = "metadata"            # metadata | map

    older: list[VdiVolume] = field(default_factory=list)  # other generations' volumes
    # LV byte ranges whose extents another LV owns now (exported only with force)
    overwritten: list[dict] = field(default_factory=list)
    # this generation's LVs that the newest generation removed or maps otherwise (a base copy
    # coalesced into or deflated since): LV name -> what happened
    changed_since: dict[str, str] = field(default_factory=dict)
    owners: dict = field(default_factory=dict)   # LVs of the newest generation that took extents

    def guard(self):
        """Which of this VDI's extents a newer LV took, and which of those were overwritten
        (core.provenance); an empty guard when none were taken."""
        from core.provenance import Guard, assess
        vol = self.volume
        if getattr(self, "_guard", None) is not None:
            return self._guard
        pes = map_runs_to_pes(vol.map_runs) if vol.map_runs else []
        # the map's own extent size when known (trailing unplaced LEs are not in map_runs)
        extent = vol.extent_bytes or (vol.space.size // len(pes) if pes else 0)
        if not vol.claimed_by or not extent:
            self._guard = Guard(extent)
            return self._guard
        owners = {}
        for name, ovol in self.owners.items():
            opes = map_runs_to_pes(ovol.map_runs) if ovol.map_runs else []
            owners[name] = (ovol.space, opes)
        self._guard = assess(vol.space, pes, vol.claimed_by, extent, owners)
        if self._guard.overwritten and vol.kind in ("vhd", "other", "unknown"):
            from core.provenance import open_guarded_image
            img = open_guarded_image(vol.space, self._guard, name=vol.key)
            vol._shared = None
            vol._image, vol._image_error = img, (None if img is not None else
                                                 "no VHD outside the overwritten extents")
        return self._guard

    def find_parent(self, unique_id: bytes) -> VhdImage | None:
        """The VHD whose footer unique id is `unique_id`: among the same SR's volumes of this
        generation, else (a parent deleted since) of the other generations, newest first."""
        for n, vol in enumerate([self.volume] + self.siblings + self.older):
            if vol.vhd_uuid is not None and vol.vhd_uuid != format_uuid(unique_id):
                continue
            img = vol.image()
            if img is not None and img.unique_id == unique_id:
                if n > len(self.siblings):
                    self.warnings.append(f"parent {format_uuid(unique_id)} found as {vol.key} in "
                                         f"metadata generation seqno {vol.generation} only")
                elif vol.lv_name in self.changed_since:
                    self.warnings.append(
                        f"parent {vol.key} (the base copy) {self.changed_since[vol.lv_name]} "
                        f"since generation seqno {self.generation}: the chain is flattened "
                        f"through its bytes as they read now at that generation's extents")
                return img
        return None

    def find_raw_parent(self, child: VhdImage) -> ByteSpace | None:
        hint = child.parent_lv_hint
        if not hint:
            return None
        for vol in self.siblings:
            if vol.lv_name == hint:
                return vol.space
        return None

    def chain(self) -> Chain:
        img = self.volume.image()
        if img is None:
            raise VhdError(f"{self.volume.key}: {self.volume.image_error}")
        return resolve_chain(img, self.find_parent, self.find_raw_parent)


def _key_matches(vol: VdiVolume, key: str) -> bool:
    k = key.strip()
    if vol.key == k or (vol.lv_name is not None and vol.lv_name == k):
        return True
    low = k.lower()
    if low.startswith("vhd:"):
        low = low[4:]
    if vol.vdi_uuid is not None and vol.vdi_uuid == low:
        return True
    return vol.vhd_uuid is not None and vol.vhd_uuid.lower() == low


def _key_matches_footer(vol: VdiVolume, key: str) -> bool:
    low = key.strip().lower()
    if low.startswith("vhd:"):
        low = low[4:]
    if not UUID_RE.fullmatch(low):
        return False
    img = vol.image()
    return img is not None and format_uuid(img.unique_id) == low


def _find(volumes: list[VdiVolume], key: str) -> VdiVolume | None:
    for vol in volumes:
        if _key_matches(vol, key):
            return vol
    # a name label ("web01 system disk"), as XenCenter shows it: only when exactly one VDI has it
    labelled = [v for v in volumes if v.label and v.label.strip().lower() == key.strip().lower()]
    if len(labelled) == 1:
        return labelled[0]
    if len(labelled) > 1:
        raise SrsalvageError(f"{len(labelled)} VDIs are labelled {key!r} "
                             f"({', '.join(v.key for v in labelled[:6])}): give the LV name or uuid")
    for vol in volumes:
        if _key_matches_footer(vol, key):
            return vol
    return None


# -- from a map file -----------------------------------------------------------------------------
def volumes_from_map(base: ByteSpace, doc: dict) -> list[VdiVolume]:
    """The VDIs of a `reconstruct --json` document as spaces over `base`; anything malformed is
    a one-line SrsalvageError."""
    if not isinstance(doc, dict) or not isinstance(doc.get("vdis"), list):
        raise SrsalvageError("map file: not a `reconstruct --json` document (no `vdis` list)")
    vgs = doc.get("volume_groups")
    if not isinstance(vgs, list) or not vgs or not all(isinstance(v, dict) for v in vgs):
        raise SrsalvageError("map file: no volume_groups entry (extent size / data offset)")
    by_name = {vg.get("name"): vg for vg in vgs if isinstance(vg.get("name"), str)}
    volumes = []
    offsets: list[int] = []
    for i, vdi in enumerate(doc["vdis"]):
        if not isinstance(vdi, dict):
            raise SrsalvageError(f"map file: vdis[{i}] is not an object")
        vg_name = vdi.get("vg")
        vg = by_name.get(vg_name, vgs[0]) if isinstance(vg_name, str) else vgs[0]
        extent = _map_int(vg.get("extent_bytes"), f"volume group extent_bytes")
        data_offset = _map_int(vg.get("data_offset"), f"volume group data_offset")
        if extent <= 0 or extent % 512 or data_offset < 0:
            raise SrsalvageError(f"map file: bad extent size {extent} or data offset {data_offset}")
        raw_map = vdi.get("map", [])
        if not isinstance(raw_map, list):
            raise SrsalvageError(f"map file: vdis[{i}].map is not a list")
        runs = []
        for r in raw_map:
            if not isinstance(r, list) or len(r) < 3:
                raise SrsalvageError(f"map file: vdis[{i}].map entry {r!r:.40} is not "
                                     f"[le, pe, count]")
            runs.append([_map_int(x, f"vdis[{i}].map") for x in r[:3]])
        needed = vdi.get("extents_needed") or 0
        needed = _map_int(needed, f"vdis[{i}].extents_needed")
        les = max([r[0] + r[2] for r in runs] + [needed])
        if les > MAX_LES or needed < 0 or any(x < 0 for r in runs for x in r):
            raise SrsalvageError(f"map file: vdis[{i}] map out of range")
        covered = sorted((r[0], r[0] + r[2]) for r in runs if r[2])
        for (a0, a1), (b0, b1) in zip(covered, covered[1:]):
            if b0 < a1:   # two PEs for one LE: which one holds the data is not ours to guess
                raise SrsalvageError(f"map file: vdis[{i}] map places LE {b0} twice "
                                     f"(runs over LEs {a0}-{a1 - 1} and {b0}-{b1 - 1})")
        pes = map_runs_to_pes(runs, les)
        lv = vdi.get("lv") if isinstance(vdi.get("lv"), str) else None
        uid = vdi.get("vhd_uuid") if isinstance(vdi.get("vhd_uuid"), str) else None
        key = vdi.get("key") if isinstance(vdi.get("key"), str) else None
        key = key or lv or (f"vhd:{uid}" if uid else f"vdis[{i}]")
        kind = "raw" if (lv or "").startswith("LV-") else "vhd"
        vol = VdiVolume(key, lv, extent_space(base, data_offset, extent, pes, name=key),
                        kind=kind, map_runs=runs, vhd_uuid=uid, map_pes=list(pes),
                        extent_bytes=extent)
        offsets.append(data_offset)
        vol.map_unsure = _unsure_les(vdi.get("extents"))
        missing = vdi.get("missing_les")
        if isinstance(missing, list):
            vol.missing_les = [m for m in missing if isinstance(m, int) and not isinstance(m, bool)]
        if vdi.get("complete") is False and not vol.missing_les:
            vol.missing_les = [le for le, pe in enumerate(pes) if pe is None]
        volumes.append(vol)
    # no map may place one PE twice (issue 10): which of the two holds the data is not ours
    # to guess
    holder: dict[int, tuple[str, int]] = {}
    for vol, base_off in zip(volumes, offsets):
        for le, pe in enumerate(vol.map_pes or []):
            if pe is None:
                continue
            at = base_off + pe * (vol.extent_bytes or 0)     # PE numbers are per VG
            if at in holder:
                k, ole = holder[at]
                raise SrsalvageError(f"map file: PE {pe} is placed twice ({k} LE {ole} and "
                                     f"{vol.key} LE {le})")
            holder[at] = (vol.key, le)
    return volumes


def _map_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SrsalvageError(f"map file: {what} is not an integer ({value!r:.40})")
    if abs(value) > 1 << 62:
        raise SrsalvageError(f"map file: {what} out of range")
    return value


def load_map(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MAP_BYTES + 1)
    except OSError as exc:
        raise SrsalvageError(f"map file {path}: {exc.strerror}") from None
    if len(raw) > MAX_MAP_BYTES:
        raise SrsalvageError(f"map file {path}: larger than {MAX_MAP_BYTES} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SrsalvageError(f"map file {path}: not JSON ({exc})") from None


# -- what a map leaves out (its findings and the export's refusal: core.vdi_coverage) ------------
EXPORT_SURE = 0.75    # below: placed by a prior (LVM's allocation order): not exported
EXPORT_TIED = 0.9     # below: content fits, nothing ties it to this VDI: exported, named


def _unsure_les(extents) -> list[tuple[int, float]]:
    """(LE, confidence) of a map file's `extents` whose confidence is below EXPORT_TIED."""
    out = []
    for e in extents if isinstance(extents, list) else []:
        if not isinstance(e, dict):
            continue
        le, conf = e.get("le"), e.get("confidence", 1.0)
        if isinstance(le, int) and not isinstance(le, bool) and isinstance(conf, (int, float)) \
                and conf < EXPORT_TIED and 0 <= le < MAX_LES:
            out.append((le, float(conf)))
    return sorted(set(out))


# -- from the LVM analysis -----------------------------------------------------------------------
def overwritten_ranges(vol: VdiVolume, extent: int) -> list[dict]:
    """The claimed extents of `vol` as LV byte ranges: [{le, pe, count, lv_offset, bytes,
    claimed_by}], one per run of consecutive LEs with the same new owner."""
    out: list[dict] = []
    for le0, pe0, count in vol.map_runs:
        for i in range(count):
            owner = vol.claimed_by.get(pe0 + i)
            if owner is None:
                continue
            last = out[-1] if out else None
            if last is not None and last["claimed_by"] == owner \
                    and last["le"] + last["count"] == le0 + i and last["pe"] + last["count"] == pe0 + i:
                last["count"] += 1
                last["bytes"] += extent
            else:
                out.append({"le": le0 + i, "pe": pe0 + i, "count": 1,
                            "lv_offset": (le0 + i) * extent, "bytes": extent,
                            "claimed_by": owner})
    return out


def _volumes_of_generation(ev: ByteSpace, vg, gen, cache: dict | None = None,
                           sr: StorageRepository | None = None) -> list[VdiVolume]:
    """The LVs of one generation as volumes; `cache` shares opened VHDs between generations
    that map an LV identically (most LVs are the same in consecutive generations); `sr` (the
    VG's XenServer meaning) gives their name labels."""
    out = []
    for name, lv in gen.lvs.items():
        runs = lv.map_runs_pv() if hasattr(lv, "map_runs_pv") else lv.map_runs
        key = (name, tuple(tuple(r) for r in runs), gen.extent_bytes)
        shared = cache.get(key) if cache is not None else None
        space = shared.space if shared is not None else lv_space(ev, vg, gen, lv)
        vol = VdiVolume(name, name, space, generation=gen.seqno, kind=lv_kind(name),
                        map_runs=lv.map_runs, claimed_by=dict(lv.claimed_by or {}),
                        status=lv.status, label=(sr.label(name) if sr else None) or "",
                        past_disk=list(getattr(lv, "past_disk", [])))
        if shared is not None:
            vol._image, vol._image_error = shared._image, shared._image_error
            vol._shared = shared
        elif cache is not None:
            cache[key] = vol
        out.append(vol)
    return out


def _changed_since(gen, ref) -> dict[str, str]:
    """LVs of `gen` that the reference generation removed, or holds with another size or map
    (sm deflates a base copy after a snapshot, and coalesce removes or shrinks it)."""
    def runs(lv) -> list:
        return [list(r) for r in (lv.map_runs_pv() if hasattr(lv, "map_runs_pv")
                                  else lv.map_runs)]

    def les(lv) -> int:
        return max((r[0] + r[2] for r in runs(lv)), default=0)

    out: dict[str, str] = {}
    for name, lv in gen.lvs.items():
        now = ref.lvs.get(name)
        if now is None:
            out[name] = "was removed (coalesced or deleted)"
        elif les(now) != les(lv):
            out[name] = (f"was {'deflated' if les(now) < les(lv) else 'inflated'} "
                         f"from {les(lv)} to {les(now)} extents")
        elif runs(now) != runs(lv):
            out[name] = "was moved to other extents"
    return out


def _other_generation_volumes(ev: ByteSpace, vg, used_gen, volumes: list[VdiVolume]
                              ) -> list[VdiVolume]:
    """VHD volumes of the VG's other generations that differ (name or extents) from `volumes`."""
    seen = {(v.lv_name, tuple(map(tuple, v.map_runs))) for v in volumes}
    out = []
    for gen in vg.generations:
        if gen is used_gen or not gen.lvs:
            continue
        for name, lv in gen.lvs.items():
            if lv_kind(name) != "vhd":
                continue
            key = (name, tuple(map(tuple, lv.map_runs)))
            if key in seen:
                continue
            seen.add(key)
            try:
                space = lv_space(ev, vg, gen, lv)
            except SrsalvageError:
                continue
            out.append(VdiVolume(name, name, space, generation=gen.seqno, kind=lv_kind(name),
                                 map_runs=lv.map_runs, status=lv.status))
    return out


def resolve_vdi(ev: ByteSpace, key: str, map_path: str | None = None,
                generation: int | None = None, force: bool = False, report=None,
                backups: Iterable[str] = (), warn: Callable[[str], None] | None = None,
                pv_offsets: Iterable[str] = ()) -> ResolvedVdi:
    """Find KEY; raise SrsalvageError when absent, UnsafeError when its extents were reused."""
    if map_path is not None:
        volumes = volumes_from_map(ev, load_map(map_path))
        vol = _find(volumes, key)
        if vol is None:
            raise SrsalvageError(f"{key}: not in map file {map_path} "
                                 f"(keys: {', '.join(v.key for v in volumes[:8])})")
        res = ResolvedVdi(vol, [v for v in volumes if v is not vol], source="map")
        if vol.missing_les:
            msg = (f"{vol.key}: the map places no extent for LE(s) {compact_ranges(sorted(vol.missing_les))}"
                   f"; what lies there reads as zeros")
            res.warnings.append(msg)
            if warn is not None:
                warn(msg)
        return res
    if report is None:
        report = analyse_sr(ev, backups=list(backups), pv_offsets=pv_offsets)
    tried = []
    for vg in report.volume_groups:
        gens = [g for g in vg.generations if g.lvs]
        if not gens:
            continue
        sr = report.sr(vg) if isinstance(report, SrReport) else None
        ref = getattr(vg, "reference", None) or gens[0]
        newest = ref.seqno
        if generation is not None:
            gens = [g for g in gens if g.seqno == generation]
        cache: dict = {}
        for gen in gens:
            volumes = _volumes_of_generation(ev, vg, gen, cache, sr)
            tried.append(gen.seqno)
            vol = _find(volumes, key)
            if vol is None:
                continue
            res = ResolvedVdi(vol, [v for v in volumes if v is not vol], generation=gen.seqno,
                              newest_generation=newest)
            res.older = _other_generation_volumes(ev, vg, gen, volumes)
            if gen.seqno != newest:
                res.changed_since = _changed_since(gen, ref)
            unplaced = getattr(vol.space, "unplaced_les", [])
            if unplaced:
                msg = (f"{vol.key}: LE(s) {compact_ranges(unplaced)} lie on a PV that is on none "
                       f"of the images given (give every image of the SR, or --pv-offset); "
                       f"they read as zeros")
                res.warnings.append(msg)
                if warn is not None:
                    warn(msg)
            if vol.past_disk:
                # issue 11 item 5: never a terabyte of zeros without a word
                les = ", ".join(f"{a}-{b - 1}" for a, b in vol.past_disk[:4])
                text = (f"{vol.key}: generation {gen.seqno} maps LE(s) {les} past the end of "
                        f"the disk or its PV ({sum(b - a for a, b in vol.past_disk)} extents "
                        f"that nothing on this image holds)")
                if not force:
                    raise UnsafeError(text + " (use --force to go on without them)")
                res.warnings.append(text + "; left out (--force)")
                if warn is not None:
                    warn(res.warnings[-1])
            # newer generations' volumes help find parents that were renamed since
            if gen.seqno != newest:
                msg = (f"{vol.key} is not in the current metadata generation (seqno {newest}); "
                       f"using generation seqno {gen.seqno}")
                res.warnings.append(msg)
                if warn is not None:
                    warn(msg)
            if vol.claimed_by:
                # a newer generation of this VG, or a newer VG on the same disk (an SR
                # initialised again: `VG/LV`), gave these extents to another LV
                res.overwritten = overwritten_ranges(vol, gen.extent_bytes or vg.extent_bytes or 0)
                pes = sorted(int(p) for p in vol.claimed_by)
                owners = sorted(set(vol.claimed_by.values()))
                where = "in a newer generation" if all("/" not in o for o in owners) \
                    else "on this disk now"
                text = (f"{vol.key}: extents (PE) {compact_ranges(pes)} of generation {gen.seqno} "
                        f"now belong to {', '.join(owners)} {where}")
                if not force:
                    raise UnsafeError(text + "; their content may have been overwritten "
                                             "(export anyway with --force)")
                res.warnings.append(text + " (exported anyway: --force); overwritten LV bytes: "
                                    + ", ".join(f"{r['lv_offset']}-{r['lv_offset'] + r['bytes']}"
                                                for r in res.overwritten))
                if warn is not None:
                    warn(res.warnings[-1])
                owner_names = set(owners)
                res.owners = {v.lv_name: v for v in _volumes_of_generation(ev, vg, ref, sr=sr)
                              if v.lv_name in owner_names}
            return res
    if generation is not None and not tried:
        raise SrsalvageError(f"no metadata generation with seqno {generation}")
    raise SrsalvageError(f"{key}: no LV, VDI uuid or VHD unique id matches in "
                         f"{len(tried)} metadata generation(s); try a map from `reconstruct`")
