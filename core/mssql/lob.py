"""Values kept outside their row: row-overflow pointers and BLOB inline roots (complex columns
of varchar / nvarchar / varbinary, (max) included) and text pointers (text, ntext, image),
followed through the LOB structures on text pages - SMALL_ROOT, LARGE_ROOT_YUKON, INTERNAL,
DATA (OrcaMDF `src/OrcaMDF.Core/Engine/Records/LobStructures/*.cs`,
`VariableLengthDataProxies/*.cs`; structures in core.structs.mssql).

Only present pages are read (core.mssql.pages: checksum / torn bits hold). A structure that is
missing, damaged, of an unknown type, deeper than MAX_DEPTH or larger than MAX_LOB_BYTES makes
the value `Undecodable`: it is left empty, never cut short.
"""

from __future__ import annotations

from typing import Any

from core.mssql.records import record_at
from core.mssql.types import Undecodable
from core.structs.mssql import (
    COMPLEX_BLOB_INLINE_ROOT, COMPLEX_ROW_OVERFLOW, LOB_DATA, LOB_INTERNAL,
    LOB_LARGE_ROOT_YUKON, LOB_LARGE_ROOT_LINKS, LOB_SMALL_ROOT, RECORD_BLOB_FRAGMENT,
    RECORD_HEADER_SIZE, blob_inline_entry, blob_inline_root, lob_data_head, lob_internal_link,
    lob_links_head, lob_small_root, text_pointer,
)

MAX_DEPTH = 16
MAX_LOB_BYTES = 64 << 20          # one value held in memory at most (bounded memory)
TEXT_POINTER_SIZE = 16


class LobReader:
    """Follows LOB pointers over a core.mssql.pages.Database (anything with .page())."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def complex_value(self, pointer: bytes) -> bytes:
        """The bytes a complex column stands for: a 16-byte text pointer, or a row-overflow
        pointer / BLOB inline root (12-byte head and 12-byte entries, each ending at a running
        byte count)."""
        if len(pointer) == TEXT_POINTER_SIZE:
            tp = text_pointer.parse(pointer)
            return self.structure(tp.file, tp.page, tp.slot, 0)
        head, entry = blob_inline_root.sizeof(), blob_inline_entry.sizeof()
        if len(pointer) < head + entry or (len(pointer) - head) % entry \
                or pointer[0] not in (COMPLEX_ROW_OVERFLOW, COMPLEX_BLOB_INLINE_ROOT):
            raise Undecodable(f"complex column of type {pointer[:2].hex()} not followed")
        out = bytearray()
        last = 0
        for i in range(head, len(pointer), entry):
            e = blob_inline_entry.parse(pointer[i: i + entry])
            out += self.structure(e.file, e.page, e.slot, 1)
            last = e.length
            self._check(len(out))
        if last != len(out):
            raise Undecodable(f"LOB fragments hold {len(out)} bytes, the pointer says {last}")
        return bytes(out)

    def structure(self, file_id: int, page_id: int, slot: int, depth: int) -> bytes:
        """The bytes of the LOB structure in (file, page, slot)."""
        if depth > MAX_DEPTH:
            raise Undecodable("LOB tree deeper than any SQL Server writes")
        page = self.db.page(file_id, page_id)
        rec = record_at(page, slot) if page is not None else None
        if rec is None or rec.kind != RECORD_BLOB_FRAGMENT:
            raise Undecodable(f"LOB page {file_id}:{page_id} slot {slot} missing, failing its "
                              f"checksum, or holding no LOB structure")
        body = rec.raw[RECORD_HEADER_SIZE:]
        if len(body) < lob_data_head.sizeof():
            raise Undecodable("LOB structure too short")
        kind = lob_data_head.parse(body).type
        if kind == LOB_DATA:
            return body[lob_data_head.sizeof():]
        if kind == LOB_SMALL_ROOT:
            head = lob_small_root.sizeof()
            if len(body) < head:
                raise Undecodable("SMALL_ROOT too short")
            n = lob_small_root.parse(body).length
            if head + n > len(body):
                raise Undecodable("SMALL_ROOT length past its record")
            return body[head: head + n]
        if kind in (LOB_LARGE_ROOT_YUKON, LOB_INTERNAL):
            if len(body) < lob_links_head.sizeof():
                raise Undecodable("LOB link structure too short")
            links = lob_links_head.parse(body).curlinks
            if kind == LOB_LARGE_ROOT_YUKON:
                start, link = LOB_LARGE_ROOT_LINKS, blob_inline_entry
            else:
                start, link = lob_links_head.sizeof(), lob_internal_link
            size = link.sizeof()
            if start + links * size > len(body):
                raise Undecodable("LOB links past their record")
            out = bytearray()
            for i in range(links):
                e = link.parse(body[start + i * size: start + (i + 1) * size])
                out += self.structure(e.file, e.page, e.slot, depth + 1)
                self._check(len(out))
            return bytes(out)
        raise Undecodable(f"LOB structure of type {kind} not known")

    @staticmethod
    def _check(size: int) -> None:
        if size > MAX_LOB_BYTES:
            raise Undecodable(f"LOB value over {MAX_LOB_BYTES >> 20} MiB not held in memory")
