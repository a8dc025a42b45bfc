"""The rows of an allocation unit as SQL Server's scan returns them: each present leaf data
page in order, each slot's record; ghost records skipped; a forwarding stub followed to its
forwarded record exactly once, and forwarded records met directly skipped (they are reached
through their stubs - SQL Server 2008 Internals ch. 5, "forwarded records"; OrcaMDF
`Engine/DataScanner.cs`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator

from core.errors import Cancelled
from core.mssql.pages import Database, UnitPages, unit_pages
from core.mssql.records import (
    Record, RecordError, forwarding_target, parse_record, record_at, slot_offsets,
)
from core.structs.mssql import (
    RECORD_BLOB_FRAGMENT, RECORD_FORWARDED, RECORD_FORWARDING_STUB, RECORD_GHOST_DATA,
    RECORD_GHOST_INDEX, RECORD_GHOST_VERSION, RECORD_INDEX,
)

SKIPPED_KINDS = {RECORD_GHOST_DATA, RECORD_GHOST_INDEX, RECORD_GHOST_VERSION, RECORD_INDEX,
                 RECORD_BLOB_FRAGMENT}


@dataclass
class ScanStats:
    """What a scan met besides rows."""

    ghosts: int = 0
    damaged_records: int = 0                # records whose offsets do not fit their page
    forwarded_followed: int = 0
    forwarding_lost: int = 0                # stubs pointing at a missing / bad page or slot
    orphan_forwarded: int = 0               # forwarded records no stub led to
    damaged_examples: list[str] = field(default_factory=list)


def unit_rows(db: Database, unit: UnitPages, stats: ScanStats,
              cancel: threading.Event | None = None
              ) -> Iterator[tuple[Record, tuple[int, int, int]]]:
    """(record, (file, page, slot)) of every live row of the unit's pages."""
    reached: set[tuple[int, int, int]] = set()
    forwarded_seen: set[tuple[int, int, int]] = set()
    for file_id, page_id in unit.pages:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        page = db.page(file_id, page_id)
        if page is None:
            continue
        slots = int.from_bytes(page[22:24], "little")
        for slot, off in enumerate(slot_offsets(page, slots)):
            if off is None:
                continue
            where = (file_id, page_id, slot)
            try:
                rec = parse_record(page, off)
            except RecordError as exc:
                stats.damaged_records += 1
                if len(stats.damaged_examples) < 20:
                    stats.damaged_examples.append(f"{file_id}:{page_id}:{slot}: {exc}")
                continue
            kind = rec.kind
            if kind in SKIPPED_KINDS:
                if kind in (RECORD_GHOST_DATA, RECORD_GHOST_VERSION):
                    stats.ghosts += 1
                continue
            if kind == RECORD_FORWARDED:
                forwarded_seen.add(where)
                continue
            if kind == RECORD_FORWARDING_STUB:
                target = forwarding_target(rec)
                fwd = _forwarded(db, target)
                if fwd is None or target in reached:
                    stats.forwarding_lost += 1
                    continue
                reached.add(target)
                stats.forwarded_followed += 1
                yield fwd, target
                continue
            yield rec, where
    stats.orphan_forwarded += len(forwarded_seen - reached)


def _forwarded(db: Database, target: tuple[int, int, int]) -> Record | None:
    file_id, page_id, slot = target
    page = db.page(file_id, page_id)
    if page is None:
        return None
    rec = record_at(page, slot)
    return rec if rec is not None and rec.kind == RECORD_FORWARDED else None


def read_unit(db: Database, au: int, first: tuple[int, int], first_iam: tuple[int, int],
              stats: ScanStats, cancel: threading.Event | None = None
              ) -> tuple[UnitPages, Iterator[tuple[Record, tuple[int, int, int]]]]:
    """The unit's pages and an iterator over its rows."""
    unit = unit_pages(db, au, first, first_iam)
    return unit, unit_rows(db, unit, stats, cancel)
