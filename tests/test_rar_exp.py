"""Reading rarfile's `.exp` listings (the output of its dumprar tool, shipped with each test
archive in markokr/rarfile test/files) and merging a walked volume set the way rarfile lists it.

.exp format: "Archive: <path>", optional "  comment=..." lines, then one block per entry that
starts with "FILE:" (RAR 3/4) or "R5_FILE:" (RAR 5); inside a block "name=<name>" (directories
end in "/"), "dec=<unpacked size>" on the os= line, and "crc=0x<8 hex> (<decimal>)" when the
entry has a CRC-32 (not for BLAKE2 archives or RAR 5 directories). A middle volume's .exp holds
only a "--- ... is middle part of multi-vol archive ...---" line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpEntry:
    name: str
    size: int
    crc32: str | None


@dataclass
class ExpListing:
    archive: str
    entries: list[ExpEntry]
    middle_volume: bool


def parse_exp(text: str) -> ExpListing:
    archive = ""
    entries: list[ExpEntry] = []
    middle = False
    cur: dict | None = None

    def flush() -> None:
        if cur is not None:
            if "name" not in cur or "size" not in cur:
                raise ValueError(f"incomplete .exp entry: {cur}")
            entries.append(ExpEntry(cur["name"], cur["size"], cur.get("crc")))

    for line in text.splitlines():
        if line.startswith("Archive: "):
            archive = line[len("Archive: "):]
        elif "is middle part of multi-vol archive" in line:
            middle = True
        elif re.match(r"^(FILE|R5_FILE):", line):
            flush()
            cur = {}
        elif cur is not None:
            body = line.strip()
            if body.startswith("name="):
                cur["name"] = body[len("name="):].rstrip("/")
            m = re.search(r"\bdec=(\d+)", body)
            if m and body.startswith("os="):
                cur["size"] = int(m.group(1))
            m = re.match(r"crc=0x([0-9a-f]{8}) \(\d+\)", body)
            if m:
                cur["crc"] = m.group(1)
    flush()
    return ExpListing(archive, entries, middle)


def rarfile_listing(volumes: list[dict]) -> list[ExpEntry]:
    """The listing rarfile gives for a volume set walked by carve-rar (JSON archives in volume
    order): old versions skipped, a file continued from the previous volume merged into its
    first part, its CRC taken from the last part (rarfile format.py process_entry)."""
    out: list[list] = []
    for arc in volumes:
        for f in arc["files"]:
            if f["old_version"]:
                continue
            if not f["split_before"]:
                out.append([f["name"], f["size"], f["crc32"]])
            elif out:
                out[-1][2] = f["crc32"]
    return [ExpEntry(n, s, c) for n, s, c in out]


def test_parse_exp_reads_rarfile_listings():
    import pathlib
    import pytest
    base = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / \
        "rar" / "rarfile" / "expected"
    if not base.is_dir():
        pytest.skip("shared RAR fixtures not found")
    uni = parse_exp((base / "unicode.rar.exp").read_text("utf-8"))
    assert uni.archive == "test/files/unicode.rar" and not uni.middle_volume
    assert uni.entries == [ExpEntry("уииоотивл.txt", 2, "6751fc53"),
                           ExpEntry("𝐀𝐁𝐁𝐂.txt", 2, "6751fc53")]
    blake = parse_exp((base / "rar5-blake.rar.exp").read_text("utf-8"))
    assert [e.crc32 for e in blake.entries] == [None, None]      # BLAKE2 archives: no CRC
    sub = parse_exp((base / "rar3-subdirs.rar.exp").read_text("utf-8"))
    assert len(sub.entries) == 10 and sub.entries[4] == ExpEntry("sub/dir2", 0, "00000000")
    assert parse_exp((base / "rar3-vols.part2.rar.exp").read_text("utf-8")).middle_volume
