"""sm's LVHD VDI operations, step by step, over real lvm2 and the libvhd/tapdisk model.

Each method follows xapi-project/sm (libs/sm/drivers/LVHDSR.py, libs/sm/lvhdutil.py,
libs/sm/vhdutil.py, libs/sm/cleanup.py, libs/sm/srmetadata.py) in the order sm does things;
the comments name the function. LVM changes go through real lvm2 (lvmsr.LvmSr), VHD changes
through the model (libvhd), so every byte lands where XenServer would put it and everything
else keeps what the extent held before.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from dataclasses import dataclass, field

from core.xen import build_mgt

from . import libvhd as L
from .guest import GuestDisk
from .lvmsr import EXTENT, LvmSr

MiB = 1 << 20


def roundup(unit: int, value: int) -> int:
    return -(-value // unit) * unit


def calc_overhead_empty(virtual_size: int) -> int:
    """sm vhdutil.calcOverheadEmpty."""
    size_mb = virtual_size // MiB
    overhead = 3 * 1024 + (size_mb // 2) * 4
    overhead = roundup(512, overhead)
    overhead += (size_mb // 2) // 8
    return roundup(4096, overhead)


def calc_overhead_bitmap(virtual_size: int) -> int:
    """sm vhdutil.calcOverheadBitmap."""
    return -(-virtual_size // L.BLOCK) * 4096


def calc_size_lv(size: int) -> int:
    """sm lvhdutil.calcSizeLV."""
    return roundup(EXTENT, size)


def calc_size_vhd_lv(virtual_size: int) -> int:
    """sm lvhdutil.calcSizeVHDLV: metadata for MSIZE (fast resize) + bitmaps + data."""
    return calc_size_lv(virtual_size + calc_overhead_empty(L.MSIZE)
                        + calc_overhead_bitmap(virtual_size))


THIN_LV = roundup(EXTENT, calc_overhead_empty(L.MSIZE))   # LVHDVDI.create, provision thin


@dataclass
class Vdi:
    uuid: str
    label: str
    vhd: L.Vhd
    guest: GuestDisk | None = None
    is_snapshot: bool = False
    snapshot_of: str = ""
    read_only: bool = False
    managed: bool = True
    parent: "Vdi | None" = None
    children: list["Vdi"] = field(default_factory=list)
    expected: tuple[str, str] | None = None    # (raw path, sha256) of the guest disk it holds
    deleted: bool = False
    snapshot_time: int | None = None           # VHD clock (seconds since 2000) of a snapshot

    @property
    def lv_name(self) -> str:
        return f"VHD-{self.uuid}"


class XsSr:
    """An LVHD SR as sm runs it (one host, the pool master)."""

    def __init__(self, lvm: LvmSr, provision: str, rng: random.Random):
        self.lvm = lvm
        self.provision = provision           # "thick" | "thin" (sm-config allocation)
        self.rng = rng
        self.vdis: dict[str, Vdi] = {}
        self.slots: list[dict] = []          # MGT VDI slots, in slot order
        self.removed: list[dict] = []        # LVs lvremove'd, with their maps at removal
        self.clock = 0x2F000000
        self.events: list[str] = []

    # -- helpers -----------------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuidlib.UUID(bytes=self.rng.randbytes(16), version=4))

    def _tick(self) -> int:
        self.clock += self.rng.randint(600, 86400)
        return self.clock

    def lv(self, vdi: Vdi) -> L.Lv:
        return L.Lv(self.lvm, vdi.lv_name)

    def write_mgt(self) -> None:
        """The MGT volume as srmetadata.LVMMetadataHandler leaves it (slots in place, deleted
        ones marked `<deleted>1</deleted>`, the first deleted slot reused by addVdiInternal)."""
        data = build_mgt(self.lvm.sr_uuid, "Local storage", "",
                         vdis=[dict(s) for s in self.slots],
                         allocation=self.provision)
        L.Lv(self.lvm, "MGT").write(0, data)

    def _mgt_add(self, vdi: Vdi) -> None:
        rec = {"uuid": vdi.uuid, "name_label": vdi.label, "name_description": "",
               "is_a_snapshot": int(vdi.is_snapshot), "snapshot_of": vdi.snapshot_of,
               # xapi sets a snapshot's snapshot_time and calls vdi_update, which LVHDVDI.update
               # writes to the MGT (sm drivers/LVHDSR.py; xapi's "YYYYMMDDTHH:MM:SSZ")
               "snapshot_time": _xapi_time(vdi.snapshot_time), "type": "user", "vdi_type": "vhd",
               "read_only": int(vdi.read_only), "managed": int(vdi.managed),
               "metadata_of_pool": "", "deleted": 0}
        for i, s in enumerate(self.slots):           # srmetadata addVdiInternal: firstDeleted
            if s["deleted"]:
                self.slots[i] = rec
                break
        else:
            self.slots.append(rec)
        self.write_mgt()

    def _mgt_delete(self, vdi: Vdi) -> None:
        """srmetadata deleteVdi: the slot's `deleted` set to 1."""
        for s in self.slots:
            if s["uuid"] == vdi.uuid and not s["deleted"]:
                s["deleted"] = 1
        self.write_mgt()

    # -- SR ----------------------------------------------------------------------------------
    def create_sr(self) -> None:
        """LVHDSR.create: lvutil.createVG, then _introduceMetaDataVolume (MGT, 4 MiB)."""
        self.lvm.create()

    def introduce_mgt(self) -> None:
        self.lvm.lv_create("MGT", 4 * MiB)
        self.write_mgt()

    # -- VDI create / delete -------------------------------------------------------------------
    def create_vdi(self, size: int, label: str, guest: GuestDisk | None) -> Vdi:
        """LVHDVDI.create: validate_and_round_vhd_size (2 MiB), LV of calcSizeVHDLV (thick) or
        of the empty overhead (thin), `vhd-util create -S MSIZE_MB`, MGT record."""
        size = roundup(L.BLOCK, size)
        u = self._uuid()
        lv_size = calc_size_vhd_lv(size) if self.provision == "thick" else THIN_LV
        self.lvm.lv_create(f"VHD-{u}", lv_size)
        vhd = L.vhd_create(L.Lv(self.lvm, f"VHD-{u}"), size, _unique_id(self.rng), self._tick())
        vdi = Vdi(u, label, vhd, guest)
        self.vdis[u] = vdi
        self._mgt_add(vdi)
        self.events.append(f"create {label} {size // MiB} MiB {self.provision}")
        return vdi

    def delete_vdi(self, vdi: Vdi) -> None:
        """LVHDVDI.delete: deleteVdiFromMetadata, lvremove, _kickGC."""
        self._mgt_delete(vdi)
        self._remove_lv(vdi)
        if vdi.parent is not None:
            vdi.parent.children.remove(vdi)
        self.events.append(f"delete {vdi.label}")
        self.gc()

    def _remove_lv(self, vdi: Vdi) -> None:
        self.removed.append({"lv": vdi.lv_name, "uuid": vdi.uuid, "uid": vdi.vhd.uid.hex(),
                             "pes": list(self.lvm.maps[vdi.lv_name])})
        self.lvm.lv_remove(vdi.lv_name)
        vdi.deleted = True
        self.vdis.pop(vdi.uuid, None)

    # -- inflate / deflate (lvhdutil) ----------------------------------------------------------
    def inflate(self, vdi: Vdi, size: int) -> None:
        """lvhdutil.inflate: lvresize up, zero the new last sector, `vhd-util modify -s`."""
        new = calc_size_lv(size)
        if new <= self.lvm.lv_size(vdi.lv_name):
            return
        self.lvm.lv_resize(vdi.lv_name, new)
        lv = self.lv(vdi)
        lv.write(new - L.SECTOR, bytes(L.SECTOR))                 # util.zeroOut
        L.vhd_set_phys_size(lv, vdi.vhd, new)                     # vhdutil.setSizePhys

    def deflate(self, vdi: Vdi, size: int) -> None:
        """lvhdutil.deflate: `vhd-util modify -s` to the new size, then lvresize down."""
        new = calc_size_lv(size)
        if new >= self.lvm.lv_size(vdi.lv_name):
            return
        L.vhd_set_phys_size(self.lv(vdi), vdi.vhd, new)
        self.lvm.lv_resize(vdi.lv_name, new)

    # -- attach / guest I/O / detach -------------------------------------------------------------
    def attach(self, vdi: Vdi) -> L.TapdiskSession:
        """LVHDVDI.attach: thin VDIs inflated to calcSizeVHDLV (lvhdutil.attachThin); tapdisk
        opens the VHD on the LV (block-vhd.c _vhd_open: LVM, no pre-allocation)."""
        full = calc_size_vhd_lv(vdi.vhd.curr_size)
        if self.lvm.lv_size(vdi.lv_name) < full:
            self.inflate(vdi, full)
        return L.TapdiskSession(self.lv(vdi), vdi.vhd)

    def detach(self, vdi: Vdi, tap: L.TapdiskSession) -> None:
        """tapdisk close, then LVHDVDI.detach: deflate (lvhdutil.detachThin: calcSizeLV of
        `vhd-util query -s`) on thin SRs, and for snapshots on thick SRs too."""
        tap.close()
        full = calc_size_vhd_lv(vdi.vhd.curr_size)
        if self.lvm.lv_size(vdi.lv_name) < full:
            return                                                # already deflated
        if self.provision == "thin" or vdi.is_snapshot:
            self.deflate(vdi, calc_size_lv(vdi.vhd.phys_size()))

    def guest_io(self, vdi: Vdi, bursts: list[list[tuple[int, bytes]]]) -> None:
        """One attach of the VDI to a VM: the bursts' write requests, then detach."""
        tap = self.attach(vdi)
        for burst in bursts:
            for sector, data in burst:
                tap.write(sector, data)
        self.detach(vdi, tap)
        self.events.append(f"io {vdi.label} {sum(len(b) for b in bursts)} requests")

    # -- resize (LVHDVDI.resize) ---------------------------------------------------------------
    def resize(self, vdi: Vdi, size: int) -> None:
        """Thick: inflate to calcSizeVHDLV(new size) (the old footer stays where the LV used to
        end), then `vhd-util resize -f`; thin: the LV stays deflated, only the footer changes."""
        size = roundup(L.BLOCK, size)
        if self.provision == "thick":
            self.inflate(vdi, calc_size_vhd_lv(size))
        L.vhd_set_virt_size_fast(self.lv(vdi), vdi.vhd, size)
        self.events.append(f"resize {vdi.label} {size // MiB} MiB")

    # -- snapshot (LVHDVDI._snapshot, SNAPSHOT_DOUBLE, VDI not attached) ---------------------------
    def snapshot(self, vdi: Vdi, label: str) -> Vdi:
        if not vdi.vhd.allocated() and vdi.parent is not None:
            raise ValueError("empty leaf: vhd-util snapshot would link past it")
        fullpr = calc_size_vhd_lv(vdi.vhd.curr_size)
        lv_orig = lv_clon = THIN_LV
        if self.provision == "thick":
            if not vdi.is_snapshot:
                lv_orig = fullpr
            # vdi_snapshot: the clone stays thin-provisioned
        base_uuid = self._uuid()
        orig_uuid = vdi.uuid
        # self becomes the base copy: rename, deflate to the physical size
        base = Vdi(base_uuid, "base copy", vdi.vhd, None, read_only=True, managed=False,
                   parent=vdi.parent)
        self.lvm.lv_rename(vdi.lv_name, base.lv_name)
        if vdi.parent is not None:
            vdi.parent.children.remove(vdi)
            vdi.parent.children.append(base)
        self.deflate(base, calc_size_lv(base.vhd.phys_size()))
        # _createSnap(origUuid) and _createSnap(clonUuid): lvcreate + vhd-util snapshot
        self.lvm.lv_create(f"VHD-{orig_uuid}", lv_orig)
        leaf_vhd = L.vhd_snapshot(L.Lv(self.lvm, f"VHD-{orig_uuid}"), base.vhd, self.lvm.vg,
                                  base.lv_name, _unique_id(self.rng), self._tick(), self.clock)
        clon_uuid = self._uuid()
        self.lvm.lv_create(f"VHD-{clon_uuid}", lv_clon)
        clon_vhd = L.vhd_snapshot(L.Lv(self.lvm, f"VHD-{clon_uuid}"), base.vhd, self.lvm.vg,
                                  base.lv_name, _unique_id(self.rng), self._tick(), self.clock)
        # mark the parent hidden only after the children exist (sm then sets the base LV
        # read-only, `lvchange -p r`: LVM metadata only, which the damage step wipes; skipped)
        L.vhd_set_hidden(self.lv(base), base.vhd)
        vdi.vhd = leaf_vhd
        vdi.parent = base
        snap = Vdi(clon_uuid, label, clon_vhd, None, is_snapshot=True, snapshot_of=orig_uuid,
                   parent=base, expected=vdi.expected, snapshot_time=self.clock)
        base.children = [vdi, snap]
        base.expected = vdi.expected             # until a coalesce changes what it holds
        self.vdis[base_uuid] = base
        self.vdis[clon_uuid] = snap
        # _finishSnapshot: the clone's record, then the base copy's
        self._mgt_add(snap)
        self._mgt_add(base)
        self.events.append(f"snapshot {vdi.label} -> {label}")
        return snap

    # -- GC (cleanup.py) ------------------------------------------------------------------------
    def gc(self) -> None:
        """cleanup.py: hidden VDIs without children are garbage (deleted); a hidden VDI with
        children whose parent has no other child is coalesced into it (non-leaf coalesce)."""
        changed = True
        while changed:
            changed = False
            for v in list(self.vdis.values()):
                if not v.vhd.hidden:
                    continue
                if not v.children:
                    self._mgt_delete(v)
                    self._remove_lv(v)
                    if v.parent is not None:
                        v.parent.children.remove(v)
                    self.events.append("gc: garbage base copy removed")
                    changed = True
                    break
                # cleanup.py VDI.isCoalesceable: hidden, not a leaf, and no siblings (its
                # parent has no other child, whose view the coalesce would change)
                if v.parent is not None and len(v.parent.children) == 1:
                    self.coalesce(v)
                    changed = True
                    break
            for v in list(self.vdis.values()):
                # cleanup.py VDI.isLeafCoalesceable + canLiveCoalesce (allocated size below
                # LIVE_LEAF_COALESCE_MAX_SIZE, 20 MiB)
                if (not v.vhd.hidden and not v.children and not v.is_snapshot
                        and v.parent is not None and len(v.parent.children) == 1
                        and len(v.vhd.allocated()) * (L.BLOCK + 4096) < LEAF_COALESCE_MAX):
                    self.coalesce_leaf(v)
                    changed = True
                    break

    def coalesce(self, vdi: Vdi) -> None:
        """cleanup.py SR._coalesce -> LVHDVDI._doCoalesce: parent writable and inflated
        (inflateParentForCoalesce: calcSizeVHDLV of the combined blocks), `vhd-util coalesce`
        (libvhd vhd_io_write, zero-filling), parent deflated; then _relinkSkip (`vhd-util
        modify -p` on the children), deleteVDI (lvremove)."""
        parent = vdi.parent
        combined = len(set(vdi.vhd.allocated()) | set(parent.vhd.allocated()))
        inc = calc_size_vhd_lv(combined * L.BLOCK) - self.lvm.lv_size(parent.lv_name)
        if inc > 0:
            self.inflate(parent, self.lvm.lv_size(parent.lv_name) + inc)
        if vdi.vhd.curr_size > parent.vhd.curr_size:      # VDI._increaseSizeVirt
            L.vhd_set_virt_size_fast(self.lv(parent), parent.vhd, vdi.vhd.curr_size)
        L.coalesce_onto(self.lv(vdi), vdi.vhd, self.lv(parent), parent.vhd)
        self.deflate(parent, calc_size_lv(parent.vhd.phys_size()))
        for child in list(vdi.children):
            L.vhd_change_parent(self.lv(child), child.vhd, parent.vhd, self.lvm.vg,
                                parent.lv_name, self.clock)
            child.parent = parent
            parent.children.append(child)
        parent.children.remove(vdi)
        parent.expected = vdi.expected           # the parent now reads as the child did
        vdi.children = []
        self._mgt_delete(vdi)
        self._remove_lv(vdi)
        self.events.append(f"gc: coalesced {vdi.uuid[:8]} into {parent.uuid[:8]}")

    def coalesce_leaf(self, leaf: Vdi) -> None:
        """cleanup.py SR._doCoalesceLeaf with LVHDSR's steps: _prepareCoalesceLeaf (leaf
        deflated, parent writable and inflated for the coalesce), parent unhidden (`vhd-util
        set hidden 0`), `vhd-util coalesce` of the leaf into it, the leaf's LV renamed to
        VHD-OLD_<uuid> and the parent's LV to VHD-<leaf uuid> (the leaf's VDI now lives in the
        parent's VHD, whose unique id is the parent's), the old leaf hidden, the parent's MGT
        record forgotten, _finishCoalesceLeaf (inflateFully: not a snapshot), and the old leaf
        removed as garbage."""
        parent = leaf.parent
        self.deflate(leaf, calc_size_lv(leaf.vhd.phys_size()))
        combined = len(set(leaf.vhd.allocated()) | set(parent.vhd.allocated()))
        inc = calc_size_vhd_lv(combined * L.BLOCK) - self.lvm.lv_size(parent.lv_name)
        if inc > 0:
            self.inflate(parent, self.lvm.lv_size(parent.lv_name) + inc)
        L.vhd_set_hidden(self.lv(parent), parent.vhd, 0)
        if leaf.vhd.curr_size > parent.vhd.curr_size:
            L.vhd_set_virt_size_fast(self.lv(parent), parent.vhd, leaf.vhd.curr_size)
        L.coalesce_onto(self.lv(leaf), leaf.vhd, self.lv(parent), parent.vhd)
        leaf_uuid, base_uuid = leaf.uuid, parent.uuid
        old_name = f"VHD-{TMP_RENAME_PREFIX}{leaf_uuid}"
        self.lvm.lv_rename(leaf.lv_name, old_name)
        self.lvm.lv_rename(parent.lv_name, f"VHD-{leaf_uuid}")
        # the leaf VDI (same uuid, label, guest) now owns the parent's VHD
        old = Vdi(TMP_RENAME_PREFIX + leaf_uuid, "old leaf", leaf.vhd)
        L.vhd_set_hidden(L.Lv(self.lvm, old_name), old.vhd)
        self.vdis.pop(base_uuid, None)
        self._mgt_delete(parent)
        leaf.vhd = parent.vhd
        leaf.parent = parent.parent
        if parent.parent is not None:
            parent.parent.children.remove(parent)
            parent.parent.children.append(leaf)
        # _finishCoalesceLeaf: inflateFully (the VDI is not a snapshot)
        self.inflate(leaf, calc_size_vhd_lv(leaf.vhd.curr_size))
        if self.provision == "thin":          # and LVHDVDI.detach deflates it on a thin SR
            self.deflate(leaf, calc_size_lv(leaf.vhd.phys_size()))
        # the old leaf: hidden, no children -> garbage, removed
        self.removed.append({"lv": old_name, "uuid": old.uuid, "uid": old.vhd.uid.hex(),
                             "pes": list(self.lvm.maps[old_name])})
        self.lvm.lv_remove(old_name)
        self.events.append(f"gc: leaf-coalesced {leaf.label} into {base_uuid[:8]}")


LEAF_COALESCE_MAX = 20 * MiB        # cleanup.py VDI.LIVE_LEAF_COALESCE_MAX_SIZE
TMP_RENAME_PREFIX = "OLD_"          # cleanup.py SR.TMP_RENAME_PREFIX


def _xapi_time(vhd_seconds: int | None) -> str:
    """A VHD clock value (seconds since 2000-01-01 UTC) as xapi prints a datetime."""
    if vhd_seconds is None:
        return ""
    import datetime
    t = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc) \
        + datetime.timedelta(seconds=vhd_seconds)
    return t.strftime("%Y%m%dT%H:%M:%SZ")


def _unique_id(rng: random.Random) -> bytes:
    """libvhd vhd_initialize_footer: uuid_generate (RFC 4122 version 4)."""
    raw = bytearray(rng.randbytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)
