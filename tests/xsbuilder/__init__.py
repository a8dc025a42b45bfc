"""A test SR builder that behaves like XenServer (xapi-project/sm + blktap), for reconstruction.

`build(kind, seed, workdir) -> (image path, truth)`; kinds in `KINDS`. Modules:
lvmsr (real lvm2 on a loop device, as sm's lvutil), libvhd (blktap's libvhd/tapdisk writes,
modelled from the source), smops (sm's VDI operations and GC), guest (guest disks made by
mkfs/sfdisk/debugfs/ntfscp), pastlife (what the disk held before), truth (ground truth and
scoring), scenarios (life cycles per kind). Needs root, lvm2 and the guest tools.
"""

from .scenarios import KINDS, build  # noqa: F401
