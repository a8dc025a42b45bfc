"""Where a case file lives (split out of core/case.py): beside the image by default, never
the evidence itself, and a file named by `--case` is touched only if it says it is a case.
"""

from __future__ import annotations

import os
import stat

from core.errors import UnsafeError

CASE_FORMAT = "srsalvage-case"
CASE_SUFFIX = ".srsalvage-case.json"


def default_case_path(image_path: str) -> str:
    """IMAGE.srsalvage-case.json beside a regular image; for a block device, in the current
    directory (never under /dev)."""
    try:
        st = os.stat(image_path)
        is_dev = stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)
    except OSError:
        is_dev = False
    if is_dev:
        return os.path.abspath(os.path.basename(image_path) + CASE_SUFFIX)
    return os.path.abspath(image_path) + CASE_SUFFIX


def _writable_dir(path: str) -> bool:
    return os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK)


def check_case_path(case_path: str, image_path: str) -> None:
    """The case must never be the evidence itself."""
    if os.path.realpath(case_path) == os.path.realpath(image_path):
        raise UnsafeError(f"case file {case_path} is the evidence {image_path}")
    try:
        if os.path.exists(case_path) and os.path.samefile(case_path, image_path):
            raise UnsafeError(f"case file {case_path} is the evidence {image_path}")
    except OSError:
        pass


def _refuse_foreign(path: str) -> None:
    """A file named by --case is moved aside (when damaged) only if it says it is ours."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeError(f"case file {path} is not a regular file; not touching it")
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise UnsafeError(f"case file {path}: cannot read ({exc.strerror}); not touching it") from None
    if b'"format"' in head and CASE_FORMAT.encode() in head:
        return
    if st.st_size == 0:
        raise UnsafeError(f"{path} is an empty file, not a srsalvage case; not touching it "
                          f"(remove it or name another --case)")
    raise UnsafeError(f"{path} exists and is not a srsalvage case file; not touching it "
                      f"(name another --case)")
