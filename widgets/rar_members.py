"""RarMembers: the members of one carved RAR archive with their status, under the carving
screen's hits.

Before the archive is unpacked, the list is its header walk (name, size, what the header says:
directory, encrypted, solid, split); once the carving screen's export has unpacked it
(core.carve.rar_extract), each member shows its status (`ok`, `bad-checksum`, `lost-solid`...)
and the reason; a volume set's members are listed at its first volume. Names are shown with
control characters escaped: they come from the evidence.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from core.carve.rar_extract import printable


def header_state(f: Any) -> str:
    """What the header alone says of a member (before any decompression)."""
    flags = [w for w, on in (("directory", f.is_dir), ("encrypted", f.encrypted),
                             ("solid", f.solid),
                             ("split", f.split_before or f.split_after)) if on]
    return ", ".join(flags) or "not unpacked yet"


class RarMembers(DataTable):
    """One row per member of the archive given to `show`."""

    DEFAULT_CSS = """
    RarMembers { height: 10; border-top: solid $accent; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.archive_offset: int | None = None

    def on_mount(self) -> None:
        self.add_columns("member", "bytes", "status", "reason")

    def show(self, archive: Any | None, extraction: Any | None = None) -> None:
        """List `archive`'s members (a core.carve.rar.RarArchive), with the statuses of its
        `extraction` (an ArchiveExtraction) when it has been unpacked; None empties the list."""
        self.clear()
        self.archive_offset = None if archive is None else archive.offset
        if archive is None:
            return
        if extraction is not None and extraction.members:
            # unpacked: its members (a volume set's, joined across volumes) with their status
            for m in extraction.members:
                self.add_row(printable(m.name), f"{m.size:,}", m.status, m.reason or "")
            return
        for f in archive.files:
            if extraction is not None:          # a later volume of a set: unpacked with it
                self.add_row(printable(f.name), f"{f.size:,}", "volume set", extraction.note or "")
            else:
                self.add_row(printable(f.name), f"{f.size:,}", header_state(f), "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()        # Enter here is not "show the hit in hex" of the screen's list
