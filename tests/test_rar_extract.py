"""`carve-rar --extract`: members unpacked by libarchive and verified against their own headers.

Checked against bsdtar (libarchive-tools) on the shared rarfile / libarchive archives carved out
of an image; a real archive with one member's packed data damaged (solid and not); hostile
member names in archives built here; BLAKE2sp against the fixtures' stored hashes; and garbage
archives thrown at the extractor with hypothesis.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import struct
import subprocess
import tempfile
import zlib
from contextlib import redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_FIXTURES, fixture_bytes
from core.blake2sp import Blake2sp, blake2sp
from core.carve.rar import carve_rar, walk_archive
from core.carve.rar_extract import (
    BAD_CHECKSUM, DECOMPRESSION_ERROR, DIRECTORY, LINK, LOST_SOLID, NOT_REACHED, OK, TRUNCATED,
    UNSAFE_NAME, extract_archive, extract_archives, printable, safe_components,
)
from core.source import Evidence
from core.structs.rar import RAR5_ID, vint

libarchive = pytest.importorskip("libarchive", reason="libarchive-c / libarchive13 not installed")

RAR_DIR = SHARED_FIXTURES / "rar"
BSDTAR = shutil.which("bsdtar")
FAILED = {BAD_CHECKSUM, DECOMPRESSION_ERROR, TRUNCATED, NOT_REACHED, "unsupported"}

# Fixtures bsdtar (libarchive 3.6.2) cannot extract at all, and why: the comparison has nothing
# to compare for them. test_bsdtar_cannot_extract_these keeps this list honest.
BSDTAR_CANNOT = {
    "rar15-comment-lock.rar": "RAR 1.5 header CRC coverage: 'Header CRC error'",
    "rar15-comment.rar": "RAR 1.5 header CRC coverage: 'Header CRC error'",
    "rar202-comment-nopsw.rar": "RAR 2.02 header CRC coverage: 'Header CRC error'",
    "rar3-comment-hpsw.rar": "encrypted headers",
    "rar5-hpsw.rar": "encrypted headers",
    "test_read_format_rar_encryption_header.rar": "encrypted headers",
    "test_read_format_rar5_encrypted_filenames.rar": "encrypted headers",
    "test_read_format_rar5_main_block_extra_bytes.rar": "'Too small block encountered'",
    "test_read_format_rar5_skip_block_extra_bytes.rar": "'Too small block encountered'",
}


def _fixture_files() -> list[pathlib.Path]:
    if not RAR_DIR.is_dir():
        pytest.skip("shared RAR fixtures not found")
    return sorted(p for p in RAR_DIR.glob("*/*") if p.is_file()
                  and b"Rar!\x1a\x07" in p.read_bytes())


def _bsdtar(archive: str, into: pathlib.Path) -> int:
    into.mkdir(parents=True, exist_ok=True)
    return subprocess.run([BSDTAR, "-x", "-f", os.path.abspath(archive)], cwd=into,
                          capture_output=True, timeout=60).returncode


def _tree(root: pathlib.Path) -> dict[str, tuple[str, bytes | str | None]]:
    """{relative path: (kind, bytes / link target / None)} of everything under root."""
    out: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = pathlib.Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Every fixture carved out of one image, extracted by us and by bsdtar."""
    if BSDTAR is None:
        pytest.skip("bsdtar (libarchive-tools) not installed")
    files = _fixture_files()
    tmp = tmp_path_factory.mktemp("rarx")
    image = bytearray(b"\x5a" * 1000)
    where = {}
    for f in files:
        data = f.read_bytes()
        where[len(image) + data.find(b"Rar!\x1a\x07")] = f.name
        image += data + b"\x5a" * 777
    img = tmp / "disk.img"
    img.write_bytes(bytes(image))
    with Evidence(str(img)) as ev:
        result = carve_rar(ev, str(tmp / "carved"), evidence_paths=[str(img)])
    kept = [a for a in result.archives if a.offset in where]
    ours = extract_archives(kept, str(tmp / "ours"))
    out = {}
    for arc, x in zip(kept, ours):
        theirs = tmp / "bsdtar" / f"at-{arc.offset}"
        rc = _bsdtar(arc.path, theirs)
        out[where[arc.offset]] = (arc, x, rc, theirs)
    return out


def _verifies(entry, data: bytes, tree) -> bool:
    """`data` is what the member's header says (size, CRC-32 / BLAKE2sp), checked here apart
    from the extractor; a RAR 5 copy / hard link equals its target's bytes."""
    if entry is None or entry.encrypted or len(data) != entry.size:
        return False
    if entry.redirect is not None and entry.redirect[0] in (4, 5):
        return tree.get(entry.redirect[1]) == ("file", data)
    if entry.crc32 is not None and zlib.crc32(data) != entry.crc32:
        return False
    if entry.blake2sp and blake2sp(data).hex() != entry.blake2sp:
        return False
    return entry.crc32 is not None or bool(entry.blake2sp)


def _entry(arc, rel):
    return next((f for f in arc.files if f.name == rel or
                 (f.old_version and rel.startswith(f.name + ";"))), None)


# bsdtar reads this RAR as the ZIP stored inside it (its format detection), so its members are
# not comparable; ours are checked against their headers like every other
BSDTAR_READS_OTHERWISE = {"test_read_format_rar5_zip_in_rar.rar"}


def test_extraction_equals_bsdtar(extracted):
    """Same members and bytes as bsdtar -x of the same carved archive:
    - every member we write is byte-identical to bsdtar's file of that name, when bsdtar
      wrote it; when it did not (bsdtar stops at the first failing member and exits 1), the
      member verifies against its own header here, independently of the extractor;
    - every file bsdtar writes that verifies against its header, we write identically
      (what bsdtar writes that does not verify - RAR 5 encrypted data decoded as if plain,
      RAR 5 file copies written empty by libarchive 3.6, zero-filled truncated members - we
      do not write);
    - the same member directories; bsdtar's symlinks are reported by us (never created)."""
    compared = only_ours = 0
    problems = []
    for name, (arc, x, rc, theirs) in sorted(extracted.items()):
        if name in BSDTAR_CANNOT or x.volumes or _later_volume(x):
            continue                # volume sets: test_volume_sets_joined_like_bsdtar_...
        ours_tree = _tree(pathlib.Path(x.directory))
        their_tree = _tree(theirs)
        by_name = {m.name: m for m in x.members}
        dirs = {f.name for f in arc.files if f.is_dir and f.redirect is None}
        for rel, (kind, data) in ours_tree.items():
            if kind == "dir":
                continue
            theirs_kind, theirs_data = their_tree.get(rel, (None, None))
            if theirs_kind == "file" and theirs_data == data:
                compared += 1
            elif _verifies(_entry(arc, rel), data, ours_tree) and \
                    (rc != 0 or name in BSDTAR_READS_OTHERWISE or theirs_data == b""):
                only_ours += 1
            else:
                problems.append((name, rel, "ours differs from bsdtar's"))
        if name in BSDTAR_READS_OTHERWISE:
            continue
        for rel, (kind, data) in their_tree.items():
            if kind == "file":
                # (when bsdtar failed, a file it left may be its zero-filled placeholder
                # that verifies by chance: then ours must at least say why it has none)
                mine = by_name.get(rel)
                if _verifies(_entry(arc, rel), data, their_tree) and \
                        ours_tree.get(rel) != ("file", data) and \
                        (rc == 0 or mine is None or not mine.reason):
                    problems.append((name, rel, "bsdtar's verifies, ours missing"))
            elif kind == "dir":
                if rel in dirs and ours_tree.get(rel) != ("dir", None):
                    problems.append((name, rel, "directory missing"))
            elif by_name.get(rel) is None or by_name[rel].status != LINK or \
                    repr(printable(data)) not in by_name[rel].reason:
                problems.append((name, rel, "link not reported"))
        for m in x.members:
            if m.status == OK and m.sha256 != hashlib.sha256(
                    pathlib.Path(m.path).read_bytes()).hexdigest():
                problems.append((name, m.name, "sha256 in the report differs"))
    assert problems == []
    print("compared", compared, "only ours", only_ours)
    assert compared >= 120 and only_ours >= 10


def test_bsdtar_cannot_extract_these(extracted):
    for name, why in BSDTAR_CANNOT.items():
        if name not in extracted:
            continue
        arc, x, rc, theirs = extracted[name]
        assert rc != 0 and not any(k == "file" for k, _ in _tree(theirs).values()), (name, why)
        assert not any(m.status == OK for m in x.members), name
        assert all(m.reason for m in x.members), name
        if "encrypted headers" in why:
            assert x.members == [] and "encrypted" in x.note, name


def _later_volume(x) -> bool:
    """A volume after the first of a joined set: its members are in the set's result."""
    return not x.members and bool(x.note) and "unpacked with it" in x.note


def test_nothing_unverified_under_a_real_name(extracted):
    for name, (arc, x, rc, theirs) in extracted.items():
        if _later_volume(x):
            continue
        written = {str(p) for p in pathlib.Path(x.directory).rglob("*") if p.is_file()}
        assert not any(p.endswith(".part") or p.endswith(".broken") for p in written), name
        ok_paths = {m.path for m in x.members if m.status == OK}
        assert written == ok_paths, name
        for m in x.members:
            if m.status not in (OK, DIRECTORY):
                assert m.path is None and m.reason, (name, m)


def test_blake2sp_matches_the_hashes_rar5_stores():
    seen = 0
    for rel in ("rarfile/rar5-blake.rar", "libarchive/test_read_format_rar5_blake2.rar"):
        data = fixture_bytes(f"rar/{rel}")
        arc = walk_archive(lambda o, n: data[o:o + n], 0, len(data))
        with libarchive.memory_reader(data, format_name="rar5") as reader:
            for entry, f in zip(reader, arc.files):
                body = b"".join(entry.get_blocks())
                assert f.blake2sp and blake2sp(body).hex() == f.blake2sp
                assert blake2sp(body + b"x").hex() != f.blake2sp
                seen += 1
    assert seen == 3


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), max_size=12))
def test_blake2sp_streaming_equals_one_shot(data, cuts):
    h, pos = Blake2sp(), 0
    for c in cuts:
        h.update(data[pos:pos + c])
        pos += c
    h.update(data[pos:])
    assert h.digest() == blake2sp(data) and len(h.digest()) == 32


# -- a damaged member in a real archive ----------------------------------------------------
DAMAGE_CASES = [
    # (fixture, index of the damaged member, solid)
    ("libarchive/test_read_format_rar5_multiple_files.rar", 1, False),
    ("libarchive/test_read_format_rar_compress_normal.rar", 3, False),
    ("libarchive/test_read_format_rar5_solid.rar", 3, True),
    ("libarchive/test_read_format_rar5_multiple_files_solid.rar", 1, True),
]


@pytest.mark.parametrize("rel,k,solid", DAMAGE_CASES)
@pytest.mark.parametrize("keep_broken", [False, True])
def test_damaged_member(tmp_path, rel, k, solid, keep_broken):
    data = bytearray(fixture_bytes(f"rar/{rel}"))
    good = tmp_path / "good.rar"
    good.write_bytes(data)
    clean = extract_archive(str(good), str(tmp_path / "clean"))
    arc = walk_archive(lambda o, n: bytes(data[o:o + n]), 0, len(data))
    assert arc.solid == solid
    target = arc.files[k]
    mid = target.data_offset + target.packed // 2
    for i in range(mid, min(mid + 8, target.data_offset + target.packed)):
        data[i] ^= 0xA5
    bad = tmp_path / "bad.rar"
    bad.write_bytes(data)
    x = extract_archive(str(bad), str(tmp_path / "out"), keep_broken=keep_broken)
    for before, ref in zip(x.members[:k], clean.members[:k]):
        assert before.status == ref.status
        if ref.status == OK:
            assert before.sha256 == ref.sha256
            assert pathlib.Path(before.path).read_bytes() == pathlib.Path(ref.path).read_bytes()
    broken = x.members[k]
    assert broken.status in FAILED and broken.reason
    real = pathlib.Path(x.directory, target.name)
    assert not real.exists()
    assert pathlib.Path(f"{real}.broken").exists() == keep_broken
    if keep_broken:
        assert broken.path == f"{real}.broken"
        assert broken.sha256 == hashlib.sha256(pathlib.Path(broken.path).read_bytes()).hexdigest()
    for after, ref in zip(x.members[k + 1:], clean.members[k + 1:]):
        if solid:
            # a later solid member either verifies (then it is right) or says what it lost
            assert after.status in (OK, LOST_SOLID), after
            if after.status == LOST_SOLID:
                assert repr(target.name) in after.reason and after.path is None
                assert not pathlib.Path(x.directory, after.name).exists()
        else:
            assert after.status == ref.status and after.sha256 == ref.sha256
    if solid:
        assert any(m.status == LOST_SOLID for m in x.members[k + 1:])


def test_cli_extract_json_and_text(tmp_path):
    from app.cli import main
    data = bytearray(fixture_bytes("rar/libarchive/test_read_format_rar5_multiple_files.rar"))
    arc = walk_archive(lambda o, n: bytes(data[o:o + n]), 0, len(data))
    f = arc.files[2]
    data[f.data_offset + 5] ^= 0xFF
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(4096) + bytes(data) + bytes(1000))
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["carve-rar", str(img), "-o", str(tmp_path / "o"), "--extract",
                     str(tmp_path / "x"), "--keep-broken", "--json"]) == 0
    doc = json.loads(buf.getvalue())
    (a,) = doc["archives"]
    assert a["extracted_to"] == str(tmp_path / "x" / "at-4096")
    rows = {m["name"]: m for m in a["members"]}
    assert [m["name"] for m in a["members"]] == ["test1.bin", "test2.bin", "test3.bin",
                                                 "test4.bin"]
    assert rows["test3.bin"]["status"] in FAILED and rows["test3.bin"]["reason"]
    assert rows["test3.bin"]["path"].endswith("test3.bin.broken")
    for n in ("test1.bin", "test2.bin", "test4.bin"):
        m = rows[n]
        assert m["status"] == OK and m["size"] == 4096
        assert hashlib.sha256(open(m["path"], "rb").read()).hexdigest() == m["sha256"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["carve-rar", str(img), "-o", str(tmp_path / "o2"), "--extract",
                     str(tmp_path / "x2")]) == 0
    text = buf.getvalue()
    assert "test3.bin" in text and "3 ok" in text
    assert not (tmp_path / "x2" / "at-4096" / "test3.bin.broken").exists()
    with redirect_stdout(io.StringIO()):
        assert main(["carve-rar", str(img), "-o", str(tmp_path / "o3"), "--keep-broken"]) == 2
        assert main(["carve-rar", str(img), "-o", str(tmp_path / "o4"),
                     "--extract", str(img)]) == 3


# -- hostile names, in archives built here ------------------------------------------------------
def _block(btype: int, body: bytes, flags: int = 0, data: bytes = b"") -> bytes:
    fields = vint.build(btype) + vint.build(flags | (0x02 if data else 0))
    if data:
        fields += vint.build(len(data))
    fields += body
    head = vint.build(len(fields)) + fields
    return struct.pack("<I", zlib.crc32(head)) + head + data


def build_rar5_stored(members: list[tuple[str, bytes]]) -> bytes:
    """A RAR 5 archive of stored (method 0) files with CRC-32s, as rarfile format.py reads
    them: main block, one file block per member, end block."""
    out = RAR5_ID + _block(1, vint.build(0))
    for name, payload in members:
        raw = name.encode("utf-8", "surrogatepass")
        body = (vint.build(0x04) + vint.build(len(payload)) + vint.build(0o644)
                + struct.pack("<I", zlib.crc32(payload)) + vint.build(0) + vint.build(1)
                + vint.build(len(raw)) + raw)
        out += _block(2, body, data=payload)
    return out + _block(5, vint.build(0))


def test_builder_is_read_by_bsdtar(tmp_path):
    if BSDTAR is None:
        pytest.skip("bsdtar not installed")
    path = tmp_path / "b.rar"
    path.write_bytes(build_rar5_stored([("a/b.txt", b"hello"), ("c.txt", b"x" * 1000)]))
    assert _bsdtar(str(path), tmp_path / "t") == 0
    assert (tmp_path / "t" / "a" / "b.txt").read_bytes() == b"hello"


def test_hostile_names_stay_inside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [("../escape.txt", b"1"), ("a/../../escape2.txt", b"2"), ("/etc/abs.txt", b"3"),
               ("C:/win.txt", b"4"), ("esc\x1b[31mred\u202e.txt", b"5"),
               ("planted/x.txt", b"6"), ("nul\0name", b"7"), ("./ok.txt", b"8")]
    path = tmp_path / "h.rar"
    path.write_bytes(build_rar5_stored(members))
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "planted")      # a link already there is never followed
    x = extract_archive(str(path), str(out))
    st_ = {m.name: m for m in x.members}
    assert st_["../escape.txt"].status == UNSAFE_NAME
    assert st_["a/../../escape2.txt"].status == UNSAFE_NAME
    assert st_["planted/x.txt"].status == UNSAFE_NAME
    assert st_["nul\0name"].status == UNSAFE_NAME
    assert st_["/etc/abs.txt"].status == OK and (out / "etc" / "abs.txt").read_bytes() == b"3"
    assert "leading /" in st_["/etc/abs.txt"].reason
    assert st_["C:/win.txt"].status == OK and (out / "win.txt").read_bytes() == b"4"
    assert st_["./ok.txt"].status == OK and (out / "ok.txt").read_bytes() == b"8"
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()
    shown = printable("esc\x1b[31mred\u202e.txt")
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b" in shown
    # the CLI prints names escaped
    from app.commands.carve import _print_members
    buf = io.StringIO()
    with redirect_stdout(buf):
        _print_members(x)
    assert "\x1b" not in buf.getvalue() and "\\x1b[31mred\\u202e.txt" in buf.getvalue()


def test_an_output_directory_that_is_a_link_is_refused(tmp_path):
    from core.errors import SrsalvageError
    path = tmp_path / "a.rar"
    path.write_bytes(build_rar5_stored([("a.txt", b"x")]))
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out")
    with pytest.raises(SrsalvageError, match="cannot unpack into"):
        extract_archive(str(path), str(tmp_path / "out"))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_safe_components():
    assert safe_components("a/./b//c") == (["a", "b", "c"], None)
    assert safe_components("//server/share/x")[0] == ["server", "share", "x"]
    for bad in ("..", "a/..", "", "/", "x\0y"):
        with pytest.raises(ValueError):
            safe_components(bad)


def test_duplicate_names_are_not_overwritten(tmp_path):
    path = tmp_path / "d.rar"
    path.write_bytes(build_rar5_stored([("same.txt", b"first"), ("same.txt", b"second")]))
    x = extract_archive(str(path), str(tmp_path / "out"))
    assert [m.status for m in x.members] == [OK, OK]
    assert (tmp_path / "out" / "same.txt").read_bytes() == b"first"
    assert (tmp_path / "out" / "same.txt~2").read_bytes() == b"second"


def test_bad_crc_in_a_stored_member_is_not_written(tmp_path):
    data = bytearray(build_rar5_stored([("a.txt", b"good data"), ("b.txt", b"other data")]))
    data[data.index(b"good data")] ^= 1
    path = tmp_path / "c.rar"
    path.write_bytes(bytes(data))
    x = extract_archive(str(path), str(tmp_path / "out"))
    assert x.members[0].status in FAILED and not (tmp_path / "out" / "a.txt").exists()
    assert x.members[1].status == OK


def test_output_is_bounded_by_the_header_size(tmp_path):
    """A header that says fewer bytes than the data holds: never more than it says written."""
    data = bytearray(build_rar5_stored([("big.bin", b"A" * 100000)]))
    arc = walk_archive(lambda o, n: bytes(data[o:o + n]), 0, len(data))
    path = tmp_path / "z.rar"
    path.write_bytes(bytes(data))
    arc.files[0].size = 1000
    x = extract_archive(str(path), str(tmp_path / "out"), arc=arc, keep_broken=True)
    m = x.members[0]
    assert m.status != OK and m.bytes_written <= 1000 and "more than" in m.reason


# -- garbage -----------------------------------------------------------------------------------
def _samples() -> list[bytes]:
    names = ["libarchive/test_read_format_rar5_multiple_files.rar",
             "libarchive/test_read_format_rar5_solid.rar", "rarfile/rar3-subdirs.rar",
             "libarchive/test_read_format_rar_compress_normal.rar", "rarfile/rar5-blake.rar",
             "rarfile/seektest.rar"]
    return [(RAR_DIR / n).read_bytes() for n in names if (RAR_DIR / n).exists()]


_SAMPLES: list[bytes] = []


def _check_garbage(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.rar")
        with open(path, "wb") as f:
            f.write(data)
        arc = walk_archive(lambda o, n: data[o:o + n], 0, len(data))
        if arc is None:
            return
        out = os.path.join(tmp, "out")
        x = extract_archive(path, out, arc=arc, keep_broken=True, max_member_bytes=1 << 20)
        json.dumps([m.to_json() for m in x.members])
        assert len(x.members) == len(arc.files) + (arc.truncated_file is not None)
        for m in x.members:
            assert m.status
            if m.status == OK:
                assert os.path.realpath(m.path).startswith(os.path.realpath(out) + os.sep)
        for dirpath, _, filenames in os.walk(out):
            for name in filenames:
                p = os.path.join(dirpath, name)
                assert not name.endswith(".part")
                assert os.path.getsize(p) <= 1 << 20


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5), st.lists(st.tuples(st.integers(8, 3000), st.integers(0, 255)),
                                   min_size=1, max_size=16), st.integers(0, 300))
def test_hypothesis_mutated_archives_give_findings(which, mutations, cut):
    if not _SAMPLES:
        _SAMPLES.extend(_samples())
    if not _SAMPLES:
        pytest.skip("shared RAR fixtures not found")
    buf = bytearray(_SAMPLES[which % len(_SAMPLES)])
    for off, val in mutations:
        if off < len(buf):
            buf[off] = val
    _check_garbage(bytes(buf[: max(8, len(buf) - cut)]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=200)), max_size=4),
       st.lists(st.tuples(st.integers(8, 400), st.integers(0, 255)), max_size=6))
def test_hypothesis_random_headers_give_findings(members, mutations):
    buf = bytearray(build_rar5_stored(members))
    for off, val in mutations:
        if off < len(buf):
            buf[off] = val
    _check_garbage(bytes(buf))


# -- volume sets ---------------------------------------------------------------------------------
VOLUME_SETS = ["rarfile/rar3-vols.part", "rarfile/rar5-vols.part",
               "libarchive/test_rar_multivolume_multiple_files.part",
               "libarchive/test_read_format_rar5_multiarchive.part"]


def test_volume_sets_joined_like_bsdtar_of_the_concatenated_volumes(tmp_path):
    """Volumes carved from an image in scrambled order (with a stale copy of one volume, and
    one set missing its middle volume) are joined back: the members equal what bsdtar
    extracts from the original volumes concatenated; the incomplete set says what is missing."""
    if BSDTAR is None:
        pytest.skip("bsdtar not installed")
    sets = {}
    for prefix in VOLUME_SETS:
        paths = sorted(RAR_DIR.glob(prefix.split("/")[0] + "/" + prefix.split("/")[1] + "*.rar"))
        if not paths:
            pytest.skip("shared RAR fixtures not found")
        sets[prefix] = paths
    pieces = [p for paths in sets.values() for p in paths]
    pieces = pieces[::-1] + [sets[VOLUME_SETS[0]][1]]          # reversed, one stale copy
    broken_set = list(RAR_DIR.glob("libarchive/test_read_format_rar_multivolume.part000[124].rar"))
    image = bytearray(b"\x11" * 3000)
    for p in pieces + sorted(broken_set):
        image += p.read_bytes() + b"\x22" * 999
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(image))
    with Evidence(str(img)) as ev:
        result = carve_rar(ev, str(tmp_path / "carved"), evidence_paths=[str(img)])
    xs = extract_archives(result.archives, str(tmp_path / "ours"))
    joined = [x for x in xs if len(x.volumes) > 1]
    # the four sets, and the set missing its third volume joined up to it
    assert len(joined) == 5, [[os.path.basename(v) for v in x.volumes] for x in joined]
    for prefix, paths in sets.items():
        theirs = tmp_path / "bsdtar" / prefix.replace("/", "_")
        theirs.mkdir(parents=True)
        cat = b"".join(p.read_bytes() for p in paths)
        subprocess.run([BSDTAR, "-x", "-f", "-"], input=cat, cwd=theirs, check=True,
                       capture_output=True, timeout=120)
        their_tree = {k: v for k, v in _tree(theirs).items() if v[0] == "file"}
        x = next(x for x in joined if pathlib.Path(x.volumes[0]).read_bytes()
                 == paths[0].read_bytes())
        assert [pathlib.Path(v).read_bytes() for v in x.volumes] == \
            [p.read_bytes() for p in paths]
        ours_tree = {k: v for k, v in _tree(pathlib.Path(x.directory)).items()
                     if v[0] == "file"}
        assert ours_tree == their_tree and len(ours_tree) == 2
        assert all(m.status == OK for m in x.members)
    # the stale copy of a volume stands alone and says what it lacks
    alone = [x for x, a in zip(xs, result.archives) if not x.volumes and x.members]
    assert any(m.status == "missing-volume" for x in alone for m in x.members)
    # a set without its third volume: the member split over it is said missing, with where
    rest = [x for x in xs if any("volume after volume 2" in (m.reason or "")
                                 for m in x.members)]
    assert rest, [m.reason for x in xs for m in x.members]
    # the later volumes of a joined set point at the set's directory
    later = [x for x in xs if not x.members and x.note and "unpacked with it" in x.note]
    assert len(later) == sum(len(p) - 1 for p in sets.values()) + 1    # + the incomplete set's


def test_a_member_larger_than_the_free_space_is_not_started(tmp_path):
    data = build_rar5_stored([("a.txt", b"abc"), ("b.txt", b"def")])
    arc = walk_archive(lambda o, n: data[o:o + n], 0, len(data))
    path = tmp_path / "s.rar"
    path.write_bytes(data)
    arc.files[0].size = 1 << 62            # a header asking for more than any disk holds
    x = extract_archive(str(path), str(tmp_path / "out"), arc=arc)
    assert x.members[0].status == "write-error" and "free" in x.members[0].reason
    assert x.members[1].status == OK
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.txt"]


def test_cancel_leaves_no_part_file(tmp_path):
    import threading
    from core.errors import Cancelled
    data = build_rar5_stored([("big.bin", bytes(3 << 20))])
    path = tmp_path / "c.rar"
    path.write_bytes(data)
    cancel = threading.Event()
    calls = []

    def progress(update):
        calls.append(update)
        cancel.set()

    from core.carve import rar_extract
    old = rar_extract.CHUNK
    rar_extract.CHUNK = 1 << 16
    try:
        with pytest.raises(Cancelled):
            extract_archive(str(path), str(tmp_path / "out"), cancel=cancel, progress=progress)
    finally:
        rar_extract.CHUNK = old
    assert list((tmp_path / "out").iterdir()) == []


def test_the_archive_that_hangs_bsdtar_is_answered(tmp_path):
    """bsdtar 3.6.2 loops forever on libarchive's own dirdata fuzz case; carved and unpacked
    here it ends at once with the bad header named (our walk refuses the header before
    libarchive ever sees it)."""
    import threading
    data = fixture_bytes("rar/libarchive/test_read_format_rar5_dirdata.rar")
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(512) + data + bytes(512))
    box = {}

    def work():
        with Evidence(str(img)) as ev:
            result = carve_rar(ev, str(tmp_path / "c"), evidence_paths=[str(img)])
        box["x"] = extract_archives(result.archives, str(tmp_path / "x"))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "extraction hung"
    (x,) = box["x"]
    assert x.members == [] and "headers unreadable" in x.note


def test_a_member_cut_off_by_the_end_of_the_source_is_named(tmp_path):
    """An archive at the very end of an image, cut inside its third member's data: the two
    before it verify, the third is reported truncated by its name."""
    from app.cli import main
    data = fixture_bytes("rar/libarchive/test_read_format_rar5_multiple_files.rar")
    arc = walk_archive(lambda o, n: data[o:o + n], 0, len(data))
    cut = arc.files[2].data_offset + 100
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1024) + data[:cut])
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["carve-rar", str(img), "-o", str(tmp_path / "o"), "--extract",
                     str(tmp_path / "x"), "--json"]) == 0
    (a,) = json.loads(buf.getvalue())["archives"]
    assert [(m["name"], m["status"]) for m in a["members"]] == [
        ("test1.bin", OK), ("test2.bin", OK), ("test3.bin", TRUNCATED)]
    assert "100 bytes remain" in a["members"][2]["reason"] and a["members"][2]["path"] is None


def test_a_damaged_volume_is_named(tmp_path):
    """A volume set with one byte wrong in the second volume's piece of the split member: the
    member is reported and the reason names volume 2 as the damaged one, volume 1 intact; a
    lone volume says whether the piece it holds is intact."""
    paths = sorted(RAR_DIR.glob("rarfile/rar5-vols.part*.rar"))
    if len(paths) != 3:
        pytest.skip("shared RAR fixtures not found")
    vols = [bytearray(p.read_bytes()) for p in paths]
    arc2 = walk_archive(lambda o, n: bytes(vols[1][o:o + n]), 0, len(vols[1]))
    piece = arc2.files[0]
    vols[1][piece.data_offset + piece.packed // 2] ^= 0x01
    img = tmp_path / "disk.img"
    img.write_bytes(b"".join(bytes(v) + bytes(1000) for v in vols)
                    + bytes(paths[0].read_bytes()))             # a second, lone copy of vol 1
    with Evidence(str(img)) as ev:
        result = carve_rar(ev, str(tmp_path / "c"), evidence_paths=[str(img)])
    xs = extract_archives(result.archives, str(tmp_path / "x"))
    (joined,) = [x for x in xs if x.volumes]
    big, small = joined.members
    assert big.status in FAILED and big.path is None
    assert "its pieces: volume 1 intact, volume 2 DAMAGED" in big.reason
    assert small.status == OK
    lone = xs[-1]
    assert lone.members[0].status == "missing-volume"
    assert lone.members[0].reason.endswith("its pieces: volume 1 intact")
