"""Records inside one SQL Server page, read where carving needs them (split out of
core/carve/mssql.py): the slot array (the one reader of it; core.mssql.records uses it too), the
boot page's database name and versions, the file header's size, the pages a PFS page marks
allocated and the pages an IAM page maps. Every offset is bounded by the page.
Layout: OrcaMDF (structures declared in core.structs.mssql), formats.md 5.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from core.structs.mssql import (
    BOOT_RECORD_SIZE, FILE_HEADER_SIZE_COLUMN, GAM_INTERVAL, IAM_BITMAP_BYTES,
    IAM_START_PAGE_OFFSET, PAGE_HEADER_SIZE, PAGE_SIZE, PFS_ALLOCATED, boot_record,
    decode_dbname, iam_header,
)


# -- reading records inside a page ------------------------------------------------------------
def slot_offsets(page: bytes, slot_count: int) -> list[int | None]:
    """Record offset of each slot (None for an empty slot, offset 0, or one outside the body)."""
    out: list[int | None] = []
    n = max(0, min(slot_count, (PAGE_SIZE - PAGE_HEADER_SIZE) // 2))
    if len(page) < PAGE_SIZE or n == 0:
        return out
    for off in struct.unpack_from("<%dH" % n, page, PAGE_SIZE - 2 * n)[::-1]:
        out.append(off if PAGE_HEADER_SIZE <= off < PAGE_SIZE else None)
    return out


def slot_offset(page: bytes, slot: int) -> int | None:
    """Offset of record `slot` from the slot array at the page end, or None if implausible."""
    offs = slot_offsets(page, slot + 1) if slot >= 0 else []
    return offs[slot] if 0 <= slot < len(offs) else None


def read_boot_page(page: bytes) -> dict[str, Any] | None:
    """Database name and versions from the boot page record (slot 0)."""
    off = slot_offset(page, 0)
    if off is None or off + BOOT_RECORD_SIZE > PAGE_SIZE:
        return None
    rec = boot_record.parse(page[off: off + BOOT_RECORD_SIZE])
    return {"database": decode_dbname(rec.dbi_dbname), "dbi_version": rec.dbi_version,
            "dbi_createVersion": rec.dbi_createVersion, "dbi_dbid": rec.dbi_dbid}


def file_header_size_pages(page: bytes) -> int | None:
    """File size in pages from the file header record (variable column 4; formats.md 5.2 note),
    None when the record does not parse. Every offset is bounded by the page."""
    rec = slot_offset(page, 0)
    if rec is None or rec + 4 > PAGE_SIZE:
        return None
    fixed_end = struct.unpack_from("<H", page, rec + 2)[0]
    pos = rec + fixed_end
    if fixed_end < 4 or pos + 2 > PAGE_SIZE:
        return None
    ncols = struct.unpack_from("<H", page, pos)[0]
    pos += 2 + (ncols + 7) // 8
    if pos + 2 > PAGE_SIZE:
        return None
    nvar = struct.unpack_from("<H", page, pos)[0]
    col = FILE_HEADER_SIZE_COLUMN
    if nvar <= col or pos + 2 + 2 * nvar > PAGE_SIZE:
        return None
    ends = struct.unpack_from("<%dH" % nvar, page, pos + 2)
    begin = pos + 2 + 2 * nvar - rec if col == 0 else ends[col - 1] & 0x7FFF
    stop = ends[col] & 0x7FFF
    if stop - begin != 4 or rec + stop > PAGE_SIZE:
        return None
    return struct.unpack_from("<I", page, rec + begin)[0]


def pfs_allocated(page: bytes, first_page: int, count: int) -> list[int] | None:
    """Pages the PFS page marks allocated, for the `count` pages from `first_page`."""
    off = slot_offset(page, 0)
    if off is None:
        return None
    body = page[off + 4: off + 4 + count]
    return [first_page + i for i, b in enumerate(body) if b & PFS_ALLOCATED]


def iam_pages(page: bytes, file_id: int, limit: int) -> set[int]:
    """Pages of file `file_id` (below `limit`) an IAM page maps: its single-page slots and every
    page of the extents set in its bitmap."""
    head = iam_header.parse(page[IAM_START_PAGE_OFFSET: IAM_START_PAGE_OFFSET + iam_header.sizeof()])
    out = {p.m_pageId for p in head.single_pages if p.m_fileId == file_id and 0 < p.m_pageId < limit}
    bitmap_record = slot_offset(page, 1)
    if head.start_pg.m_fileId != file_id or bitmap_record is None:
        return out
    # the extent bitmap is record (slot) 1 after its 4-byte record header: at 194 in the
    # InternalsViewer layout, at 196 in some pages of the shared fixtures - follow the slot
    start = bitmap_record + 4
    bitmap = np.frombuffer(page[start: min(PAGE_SIZE, start + IAM_BITMAP_BYTES)], np.uint8)
    bits = np.flatnonzero(np.unpackbits(bitmap, bitorder="little"))
    first_extent = head.start_pg.m_pageId // 8
    for extent in bits[: GAM_INTERVAL // 8]:
        base = (first_extent + int(extent)) * 8
        if base >= limit:
            break
        out.update(range(base, min(limit, base + 8)))
    return out
