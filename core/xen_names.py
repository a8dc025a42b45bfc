"""XenServer's names for LVM objects: what a VG or LV name means to an LVM SR (formats.md 3.1).

sm names every object it makes (xapi-project/sm libs/sm/lvhdutil.py): the VG of an SR is
`VG_XenStorage-<sr uuid>` (VG_PREFIX), a VDI's LV `VHD-<vdi uuid>` when a VHD lies inside
(LV_PREFIX[vhdutil.VDI_TYPE_VHD]) or `LV-<vdi uuid>` when it is raw
(LV_PREFIX[vhdutil.VDI_TYPE_RAW]), and the SR's own metadata volume `MGT` (lvutil.py
MDVOLUME_NAME).

The LVM model (core.lvm) knows none of this; these functions apply the meaning on top, from the
name alone, for every layer that needs it (the XenServer SR view in core.xen and core.sr, the
content checks that anchor a VG by the VHD footers and MGT headers its LVs start with, the
reconstruction, the workstation).
"""

from __future__ import annotations

import re

VG_PREFIX = "VG_XenStorage-"       # lvhdutil.py VG_PREFIX
VHD_LV_PREFIX = "VHD-"             # lvhdutil.py LV_PREFIX[VDI_TYPE_VHD]
RAW_LV_PREFIX = "LV-"              # lvhdutil.py LV_PREFIX[VDI_TYPE_RAW]
MGT_LV_NAME = "MGT"                # lvutil.py MDVOLUME_NAME
# the name of a VDI the reconstruction found by its VHD footer's unique id alone (no LV name
# survived): `vhd:<unique id>` (cli-contract.md `reconstruct --json` key)
REBUILT_VHD_PREFIX = "vhd:"
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def lv_kind(name: str) -> str:
    """What an LV is to XenServer, by its name: vhd, raw, mgt or other."""
    if name.startswith((VHD_LV_PREFIX, REBUILT_VHD_PREFIX)):
        return "vhd"
    if name.startswith(RAW_LV_PREFIX):
        return "raw"
    if name == MGT_LV_NAME:
        return "mgt"
    return "other"


def lv_vdi_uuid(name: str) -> str | None:
    """The VDI uuid in a `VHD-<uuid>` / `LV-<uuid>` name (None for MGT, journals, ...)."""
    for prefix in (VHD_LV_PREFIX, RAW_LV_PREFIX):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if UUID_RE.fullmatch(rest):
                return rest.lower()
    return None


def vg_sr_uuid(name: str) -> str | None:
    """The SR uuid in a `VG_XenStorage-<uuid>` VG name (None for any other VG)."""
    if name.startswith(VG_PREFIX):
        rest = name[len(VG_PREFIX):]
        if UUID_RE.fullmatch(rest):
            return rest.lower()
    return None
