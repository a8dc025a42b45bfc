"""The VG metadata writer: a `VGMetadata` back out as lvm2 text (formats.md 2.6, 2.7).

`format_vg_metadata(meta, form="raw"|"backup")` writes a `core.lvm.model.VGMetadata` as lvm2's
`lib/format_text/export.c` does (`_print_vg`, `_print_pvs`, `_print_lvs`, `_print_header`):
"raw" is what lvm2 puts into the metadata area (no indentation, trailer after the VG block, NUL
not included), "backup" is what `vgcfgbackup` writes and `vgcfgrestore -f` reads (header first,
tab-indented).  The syntax itself (quoting, values, sections) is `core.lvm.textformat`'s.
"""

from __future__ import annotations

import time

from core.lvm.model import VGMetadata
from core.lvm.textformat import ConfigWriter, quote
from core.escape import terminal_line

LVM_VERSION = "2.03.16(2) (2022-05-18)"   # what our written trailers claim to be from


def _size_comment(sectors: int) -> str:
    size = sectors * 512.0
    for unit in ("Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Petabytes"):
        if size < 1024 or unit == "Petabytes":
            text = f"{size:.0f}" if size == int(size) else f"{size:.2f}"
            return f"{text} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def _vg_block(w: ConfigWriter, meta: VGMetadata) -> None:
    backup = w.indent
    w.open(meta.name)
    w.kv("id", meta.id)
    w.kv("seqno", meta.seqno)
    w.kv("format", meta.format, "informational" if backup else None)
    w.kv("status", meta.lvm_status)
    w.kv("flags", meta.flags)
    if meta.tags:
        w.kv("tags", meta.tags)
    w.kv("extent_size", meta.extent_size, _size_comment(meta.extent_size) if backup else None)
    w.kv("max_lv", meta.max_lv)
    w.kv("max_pv", meta.max_pv)
    w.kv("metadata_copies", meta.metadata_copies)
    w.extra({k: v for k, v in meta.extra.items() if not isinstance(v, dict)})
    w.line()
    w.open("physical_volumes")
    for pv in meta.pvs:
        w.line()
        w.open(pv.name)
        w.kv("id", pv.id)
        if pv.device is not None:
            w.kv("device", pv.device, "Hint only" if backup else None)
        w.line()
        w.kv("status", pv.lvm_status)
        w.kv("flags", pv.flags)
        if pv.tags:
            w.kv("tags", pv.tags)
        w.kv("dev_size", pv.dev_size, _size_comment(pv.dev_size) if backup else None)
        w.kv("pe_start", pv.pe_start)
        w.kv("pe_count", pv.pe_count,
             _size_comment(pv.pe_count * meta.extent_size) if backup else None)
        w.extra(pv.extra)
        w.close()
    w.close()
    if meta.lvs:
        w.line()
        w.open("logical_volumes")
        # lvm2 writes visible LVs first, then invisible ones (export.c _print_lvs)
        ordered = sorted(meta.lvs.values(), key=lambda lv: 0 if "VISIBLE" in lv.lvm_status else 1)
        for lv in ordered:
            w.line()
            w.open(lv.name)
            w.kv("id", lv.id)
            w.kv("status", lv.lvm_status)
            w.kv("flags", lv.flags)
            if lv.tags:
                w.kv("tags", lv.tags)
            if lv.creation_time is not None:
                w.kv("creation_time", lv.creation_time,
                     time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(lv.creation_time))
                     if backup else None)
            if lv.creation_host is not None:
                w.kv("creation_host", lv.creation_host)
            w.extra({k: v for k, v in lv.extra.items() if not isinstance(v, dict)})
            w.kv("segment_count", len(lv.segments))
            for i, seg in enumerate(lv.segments, 1):
                w.line()
                w.open(f"segment{i}")
                w.kv("start_extent", seg.start_extent)
                w.kv("extent_count", seg.extent_count,
                     _size_comment(seg.extent_count * meta.extent_size) if backup else None)
                w.line()
                w.kv("type", seg.type)
                if seg.type == "striped":
                    w.kv("stripe_count", seg.stripe_count,
                         "linear" if backup and seg.stripe_count == 1 else None)
                    if seg.stripe_count > 1 and seg.stripe_size:
                        w.kv("stripe_size", seg.stripe_size,
                             _size_comment(seg.stripe_size) if backup else None)
                    w.line()
                    w.line("stripes = [")
                    w.depth += 1
                    for j, (pv_name, pe) in enumerate(seg.stripes):
                        sep = "," if j < len(seg.stripes) - 1 else ""
                        w.line(f"{quote(pv_name)}, {pe}{sep}")
                    w.depth -= 1
                    w.line("]")
                w.extra(seg.extra)
                w.close()
            w.extra({k: v for k, v in lv.extra.items() if isinstance(v, dict)})
            w.close()
        w.close()
    w.extra({k: v for k, v in meta.extra.items() if isinstance(v, dict)})
    w.line()
    w.close()


def _header(w: ConfigWriter, description: str, creation_host: str, creation_time: int,
            version: str) -> None:
    ctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(creation_time))
    w.lines.append(f"# Generated by LVM2 version {version}: {ctime}")
    w.lines.append("")
    w.lines.append('contents = "Text Format Volume Group"')
    w.lines.append("version = 1")
    w.lines.append("")
    w.lines.append(f"description = {quote(description)}")
    w.lines.append("")
    w.lines.append(f"creation_host = {quote(creation_host)}\t# {terminal_line(creation_host)}")
    w.lines.append(f"creation_time = {creation_time}\t# {ctime}")


def format_vg_metadata(meta: VGMetadata, form: str = "raw", description: str | None = None,
                       creation_host: str | None = None, creation_time: int | None = None,
                       version: str = LVM_VERSION) -> str:
    """The metadata text of `meta` in lvm2's raw on-disk form or backup-file form.

    The raw form ends in "\\n\\n"; the on-disk copy is this text encoded plus one NUL.
    description/creation_* default to the values parsed with `meta` (its `header`), else to
    "Written by srsalvage" / "srsalvage" / now.
    """
    if form not in ("raw", "backup"):
        raise ValueError("form must be 'raw' or 'backup'")
    hdr = meta.header or {}
    description = description if description is not None else str(
        hdr.get("description", "Written by srsalvage"))
    creation_host = creation_host if creation_host is not None else str(
        hdr.get("creation_host", "srsalvage"))
    ctime = creation_time if creation_time is not None else hdr.get("creation_time")
    if not isinstance(ctime, int):
        ctime = int(time.time())
    if form == "raw":
        w = ConfigWriter(indent=False)
        _vg_block(w, meta)
        _header(w, description, creation_host, ctime, version)
        return "\n".join(w.lines) + "\n\n"
    w = ConfigWriter(indent=True)
    _header(w, description, creation_host, ctime, version)
    w.lines.append("")
    _vg_block(w, meta)
    return "\n".join(w.lines) + "\n"
