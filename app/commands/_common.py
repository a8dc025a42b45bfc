"""Helpers shared by the command modules: JSON output, the stderr progress bar, output paths."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

from core.escape import terminal_line, terminal_text
from core.progress import ProgressUpdate


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else there. Indented for a terminal; for a pipe
    or a file, one line per top-level key and per item of a top-level list, each written by
    json's C encoder (indenting goes through its pure-Python encoder: 0.2 s for a
    reconstruction of ten VDIs, a fifth of the command's run on a warm index)."""
    if sys.stdout.isatty():
        json.dump(document, sys.stdout, indent=1)
    else:
        sys.stdout.writelines(json_chunks(document))
    sys.stdout.write("\n")
    sys.stdout.flush()


def json_lines(document: Any) -> str:
    """`document` as JSON, its top-level keys (and the items of a top-level list value) one to
    a line."""
    return "".join(json_chunks(document))


def json_chunks(document: Any) -> Iterator[str]:
    """json_lines in pieces, a line at a time (a scan's findings list is never held twice)."""
    dumps = json.dumps
    if not isinstance(document, dict) or not document:
        yield dumps(document)
        return
    yield "{"
    for n, (key, value) in enumerate(document.items()):
        yield ("\n" if n == 0 else ",\n") + f" {dumps(str(key))}: "
        if isinstance(value, list) and value:
            for k, item in enumerate(value):
                yield ("[\n  " if k == 0 else ",\n  ") + dumps(item)
            yield "\n ]"
        else:
            yield dumps(value)
    yield "\n}"


def warn(message: str) -> None:
    print(f"srsalvage: warning: {terminal_line(message)}", file=sys.stderr)


def info(message: str) -> None:
    print(f"srsalvage: {terminal_line(message)}", file=sys.stderr)


def print_text(text: str) -> None:
    """A text report on stdout: our own line breaks kept, every control character that came
    from the evidence (a label, a name, a description) shown as an escape, never sent to the
    terminal (issue 11 item 4)."""
    print(terminal_text(text))


class StderrProgress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._shown = False

    def __call__(self, update: ProgressUpdate) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(update.fraction * width)
        eta = "" if update.eta is None else f" eta {update.eta:5.0f}s"
        rate = update.rate / (1 << 20)
        sys.stderr.write(f"\r{update.label[:24]:<24} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{update.fraction * 100:5.1f}% {rate:8.1f} MiB/s{eta}")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False


def add_vdi_selection(p: argparse.ArgumentParser) -> None:
    """The options that say which VDI and which extent map (`export`, `check`)."""
    p.add_argument("--vdi", required=True, metavar="KEY",
                   help="LV name, VDI uuid, VHD footer unique id, or a key from --map")
    p.add_argument("--generation", type=int, metavar="SEQNO",
                   help="use this LVM metadata generation instead of the newest holding KEY")
    p.add_argument("--map", metavar="MAP.json", help="extent map from `srsalvage reconstruct -o`")
    p.add_argument("--backup", action="append", default=[], metavar="FILE.vg",
                   help="LVM metadata backup file(s) to consider")
    add_pv_offset(p)


# -- several images of one SR, and where the PVs are (issue 12) ------------------------------------
def add_more_images(p: argparse.ArgumentParser) -> None:
    """`IMAGE [IMAGE ...]`: the other disks of an SR over several PVs (after the first)."""
    p.add_argument("more_images", nargs="*", metavar="IMAGE",
                   help="further images of the same SR (a VG over several disks), read together")


def add_pv_offset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pv-offset", action="append", default=[], metavar="[PV=]BYTES",
                   help="where a PV starts on the image when no label says so (PV: pv0, its "
                        "uuid or VG/pv0; BYTES: 1048576, 1MiB, 2048s); repeatable")


def image_paths(args: argparse.Namespace) -> list[str]:
    return [args.image] + list(getattr(args, "more_images", None) or [])


def open_images(args: argparse.Namespace):
    """The evidence: one image, or every image of the SR as one read-only space."""
    from core.evidence_set import open_images as _open
    return _open(image_paths(args), getattr(args, "mapfile", None))


# -- the evidence index (issue 14): one read of the evidence for every command -------------------
def add_index_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-index", action="store_true",
                   help="read the evidence afresh: neither use nor make the evidence index "
                        "(IMAGE.srsalvage-index.npz beside the case)")


def evidence_index(args: argparse.Namespace, ev, image: str, progress=None,
                   build: bool = True):
    """The evidence index for this command (core.evidence_index), or None: `--no-index`,
    several images, or (build False) none kept that fits this evidence. Kept beside the case
    (`--case CASE`); with `--no-case` one is used when it fits but a new one is not kept."""
    if getattr(args, "no_index", False):
        return None
    from core.evidence_index import EvidenceIndex, index_path, indexable
    if not indexable(ev):
        return None
    path = index_path(image, getattr(args, "case", None))
    tell = info if sys.stderr.isatty() else None
    if not build:
        idx, how, _ = EvidenceIndex.find(ev, path)
        if idx is not None and tell:
            tell(how)
        return idx
    idx, how = EvidenceIndex.load_or_build(ev, path, progress=progress,
                                           save=not getattr(args, "no_case", False), say=tell)
    if progress is not None and hasattr(progress, "close"):
        progress.close()
    if tell:
        tell(how)
    return idx


def indexed_lvm_report(args: argparse.Namespace, ev, image: str, progress=None):
    """core.sr.analyse_sr of `ev` from the evidence index's disk hits (the index made
    by this command's one pass when none fits), for `resolve_vdi(report=...)`; None with
    `--no-index`, a map file or several images (resolve_vdi then analyses as before)."""
    if getattr(args, "map", None):
        return None
    idx = evidence_index(args, ev, image, progress)
    if idx is None:
        return None
    from core.sr import analyse_sr
    return analyse_sr(ev, backups=list(getattr(args, "backup", None) or ()),
                      pv_offsets=getattr(args, "pv_offset", None) or (),
                      hits=idx.disk_hits(text=True))
