"""RAR volume sets (split out of core/carve/rar_extract.py): carved archives grouped into
the volumes of one set, in order, and joined into one walk where a member split across
volumes becomes one member (the first piece's name and size, the last piece's checksums).
"""

from __future__ import annotations

from dataclasses import replace

from core.carve.rar import RarArchive, RarFileEntry


# -- volume sets ---------------------------------------------------------------------------------
def _continues(prev: RarArchive, nxt: RarArchive) -> bool:
    """`nxt` can be the volume after `prev`: same format, numbered one more when both say
    their number, and a member split at the end of `prev` begins `nxt` with the same name,
    unpacked size, modification time and attributes."""
    if not (nxt.volume and nxt.version == prev.version and nxt.path and nxt.end_known):
        return False
    if nxt.first_volume:
        return False
    number = 0 if prev.first_volume else prev.volume_number     # RAR 5's first has none
    if number is not None and nxt.volume_number is not None and \
            nxt.volume_number != number + 1:
        return False
    tail = prev.files[-1] if prev.files else None
    head = nxt.files[0] if nxt.files else None
    if tail is not None and tail.split_after:
        # every piece's header repeats the file's name, size, time and attributes
        return head is not None and head.split_before and \
            (head.name, head.size, head.mtime, head.attributes) == \
            (tail.name, tail.size, tail.mtime, tail.attributes)
    return head is None or not head.split_before


def volume_sets(archives: list[RarArchive]) -> list[list[RarArchive]]:
    """The carved archives grouped into volume sets, in volume order; every other archive (and
    a volume whose neighbours were not found) alone. Sets start at first volumes, then at the
    lowest-numbered volumes left (a set whose first volume is lost); the next volume is looked
    for after the current one on the disk first, so stale copies of a volume stand alone."""
    by_offset = sorted(range(len(archives)), key=lambda i: archives[i].offset)
    starts = sorted(by_offset, key=lambda i: (not archives[i].first_volume,
                                              archives[i].volume_number or 0))
    used: set[int] = set()
    sets: list[list[RarArchive]] = []
    for i in starts:
        if i in used:
            continue
        used.add(i)
        chain = [i]
        while archives[chain[-1]].volume and archives[chain[-1]].more_volumes:
            pos = by_offset.index(chain[-1])
            after = by_offset[pos + 1:] + by_offset[:pos]
            j = next((k for k in after if k not in used and
                      _continues(archives[chain[-1]], archives[k])), None)
            if j is None:
                break
            used.add(j)
            chain.append(j)
        sets.append([archives[k] for k in chain])
    sets.sort(key=lambda vols: vols[0].offset)
    return sets


# a piece of a split member: (volume number from 1, carved file, data offset, packed bytes,
# CRC-32 of the packed piece - None for the last piece, whose CRC is the whole file's)
Piece = tuple[int | None, str, int, int, int | None]


def _join(vols: list[RarArchive]) -> tuple[RarArchive, dict[int, list[Piece]]]:
    files: list[RarFileEntry] = []
    pieces: dict[int, list[Piece]] = {}
    first_number = 0 if vols[0].first_volume else vols[0].volume_number
    for k, v in enumerate(vols):
        number = None if first_number is None else first_number + k + 1
        for f in v.files:
            prev = files[-1] if files else None
            if f.split_before and prev is not None and prev.split_after and prev.name == f.name:
                files[-1] = replace(prev, crc32=f.crc32, blake2sp=f.blake2sp,
                                    split_after=f.split_after, packed=prev.packed + f.packed)
            else:
                files.append(replace(f))
            if f.split_before or f.split_after:
                pieces.setdefault(len(files) - 1, []).append(
                    (number, v.path or "", f.data_offset, f.packed,
                     f.crc32 if f.split_after else None))
    first, last = vols[0], vols[-1]
    joined = replace(first, files=files, more_volumes=last.more_volumes,
                     first_bad_header=next((v.first_bad_header for v in vols
                                            if v.first_bad_header), None))
    return joined, pieces


def join_volumes(vols: list[RarArchive]) -> RarArchive:
    """One walk for a volume set: a member split across volumes becomes one member with the
    first piece's name and unpacked size and the last piece's checksums (RAR 4 and 5 store the
    whole file's CRC-32 / BLAKE2sp in its last piece; earlier pieces carry the CRC-32 of their
    packed part)."""
    return _join(vols)[0]
