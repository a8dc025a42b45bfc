"""A data file with its catalog and known seed rows (tests/mssql_builder.py), scattered over an
image among junk, stale and bad copies, carved with `carve-mdf`, then read with `mdf-tables
FILE --json --csv DIR`: row counts and every CSV value equal the seed, each value's expected
text derived here from the seed value by the documented text forms (README "mdf-tables")."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from contextlib import redirect_stdout
from decimal import Decimal
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssql_builder import build_seed_database
from core.mssql import types as T


def _sql_text(col, v) -> str:
    """What SQL Server shows for seed value `v` of column `col` (independent of core.mssql)."""
    if v is None:
        return ""
    x = col.xtype
    if x == T.BIT:
        return "1" if v else "0"
    if x in (T.MONEY, T.SMALLMONEY):
        return str(Decimal(v).quantize(Decimal("0.0001")))
    if x == T.DECIMAL:
        return str(Decimal(v).quantize(Decimal(1).scaleb(-col.scale)))
    if x == T.DATE:
        return v.isoformat()
    if x == T.DATETIME:
        # stored in 1/300 s ticks (rounded), shown in ms rounded: .000 .003 .007
        since = v - dt.datetime.combine(v.date(), dt.time())
        ticks = round(since / dt.timedelta(seconds=1) * 300)
        ms = round(ticks * 10 / 3)
        return f"{v:%Y-%m-%d} {ms // 3600000:02d}:{ms // 60000 % 60:02d}:" \
               f"{ms // 1000 % 60:02d}.{ms % 1000:03d}"
    if x == T.DATETIME2:
        return f"{v:%Y-%m-%d %H:%M:%S}." + f"{v.microsecond:06d}"[:col.scale]
    if x == T.TIME:
        return f"{v:%H:%M:%S}." + f"{v.microsecond:06d}0"[:col.scale]
    if x == T.DATETIMEOFFSET:
        off = v.utcoffset() // dt.timedelta(minutes=1)
        return (f"{v:%Y-%m-%d %H:%M:%S}." + f"{v.microsecond:06d}"[:col.scale]
                + f" {'-' if off < 0 else '+'}{abs(off) // 60:02d}:{abs(off) % 60:02d}")
    if x == T.UNIQUEIDENTIFIER:
        return str(v).upper()
    if x in (T.FLOAT, T.REAL):
        text = repr(float(v))
        return text[:-2] if text.endswith(".0") else text
    if x in (T.VARBINARY, T.BINARY):
        return "0x" + v.hex().upper()
    return str(v)


def _run(argv):
    from app.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _carve(tmp_path, drop=frozenset()):
    from test_mssql_carve import scatter
    data, truth = build_seed_database()
    image, _ = scatter(data, seed=11, drop=set(drop), stale=4, bad=4)
    img = tmp_path / "disk.img"
    img.write_bytes(image)
    rc, text = _run(["carve-mdf", str(img), "-o", str(tmp_path / "carved"), "--json"])
    assert rc == 0
    (f,) = json.loads(text)["files"]
    return f, truth


def test_seed_database_carved_then_read_equals_the_seed(tmp_path):
    f, truth = _carve(tmp_path)
    assert f["database"] == "seedshop"
    assert {t["name"]: t["rows"] for t in f["tables"]} == {"Customers": 60, "Events": 4}
    out = tmp_path / "csv"
    rc, text = _run(["mdf-tables", f["path"], "--json", "--csv", str(out)])
    assert rc == 0
    doc = json.loads(text)
    tables = {t["name"]: t for t in doc["tables"]}
    assert set(tables) == set(truth)
    for name, (schema, columns, rows) in truth.items():
        t = tables[name]
        assert t["schema"] == schema
        assert [c["name"] for c in t["columns"]] == [c.name for c in columns]  # dropped: gone
        assert t["rows"] == t["rows_expected"] == len(rows)
        assert t["rows_lost_pages"] == 0 and t["undecoded"] == 0
        with open(out / f"{name}.csv", newline="", encoding="utf-8") as fh:
            got = list(csv.reader(fh))
        assert got[0] == [c.name for c in columns]
        want = [[_sql_text(c, r[c.name]) for c in columns] for r in rows]
        assert sorted(got[1:], key=lambda r: int(r[0])) == want
    ev = tables["Events"]
    assert ev["forwarded_rows"] == 1 and ev["ghost_records"] == 1
    assert ev["lob_pointers_unfollowed"] == 0
    assert [c["type"] for c in tables["Customers"]["columns"]][:6] == [
        "int", "nvarchar(50)", "varchar(100)", "money", "decimal(12,4)", "bit"]


def test_seed_database_with_a_page_lost(tmp_path):
    """Leaf page 25 of dbo.Customers (rows 21-40) is not on the image: the other pages are
    still found (page headers, PFS), the 20 rows are counted lost, the page named."""
    f, truth = _carve(tmp_path, drop={25})
    t = {t["name"]: t for t in f["tables"]}["Customers"]
    assert t["rows"] == 40 and t["rows_lost_pages"] == 20 and t["missing_pages"] == ["1:25"]
    out = tmp_path / "csv"
    _run(["mdf-tables", f["path"], "--csv", str(out)])
    with open(out / "Customers.csv", newline="", encoding="utf-8") as fh:
        ids = [int(r[0]) for r in list(csv.reader(fh))[1:]]
    assert ids == list(range(1, 21)) + list(range(41, 61))


def test_database_of_two_files_carved_and_read_together(tmp_path):
    """dbo.Customers' last leaf page is in file 3 (an .ndf): both files' pages scattered on one
    image come back as two files of one database, carve-mdf gives each the database's tables,
    and mdf-tables over both reads all 60 rows; over the .mdf alone the page in file 3 is
    named missing and its 20 rows counted lost."""
    from test_mssql_carve import scatter
    mdf, truth, ndf = build_seed_database(split=True)
    image_a, _ = scatter(mdf, seed=21, stale=2, bad=2)
    image_b, _ = scatter(ndf, seed=22, stale=0, bad=0)
    img = tmp_path / "disk.img"
    img.write_bytes(image_a + bytes(-len(image_a) % 512) + image_b)    # sector-aligned
    rc, text = _run(["carve-mdf", str(img), "-o", str(tmp_path / "carved"), "--json"])
    files = {f["file_id"]: f for f in json.loads(text)["files"]}
    assert set(files) == {1, 3} and files[3]["path"].endswith(".ndf")
    for f in files.values():
        assert {t["name"]: t["rows"] for t in f["tables"]} == {"Customers": 60, "Events": 4}
    rc, text = _run(["mdf-tables", files[3]["path"], files[1]["path"], "--json",
                     "--csv", str(tmp_path / "csv")])
    doc = json.loads(text)
    (db,) = doc["databases"]
    assert sorted(f["file_id"] for f in db["files"]) == [1, 3]
    cust = {t["name"]: t for t in doc["tables"]}["Customers"]
    assert cust["rows"] == 60 and cust["rows_lost_pages"] == 0
    with open(tmp_path / "csv" / "Customers.csv", newline="", encoding="utf-8") as fh:
        assert [int(r[0]) for r in list(csv.reader(fh))[1:]] == list(range(1, 61))
    rc, text = _run(["mdf-tables", files[1]["path"], "--json"])
    cust = {t["name"]: t for t in json.loads(text)["tables"]}["Customers"]
    assert cust["rows"] == 40 and cust["rows_lost_pages"] == 20
    assert cust["missing_pages"] == ["3:5"]


def test_compressed_table_counted_not_decoded(tmp_path):
    """A ROW compressed table: its rows counted from the CD record headers (ghost and forwarded
    records left out), every one of them undecoded, no value guessed into the CSV."""
    data, _ = build_seed_database(compressed=True)
    path = tmp_path / "c.mdf"
    path.write_bytes(data)
    rc, text = _run(["mdf-tables", str(path), "--json", "--csv", str(tmp_path / "csv")])
    ev = {t["name"]: t for t in json.loads(text)["tables"]}["Events"]
    assert ev["compression"] == "row"
    assert ev["rows"] == ev["undecoded"] == ev["rows_expected"] == 3
    with open(tmp_path / "csv" / "Events.csv", newline="", encoding="utf-8") as fh:
        assert len(list(csv.reader(fh))) == 1                 # the header only


_SEED: dict = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([9, 16, 17, 18, 19, 20, 21, 24, 25, 27, 28, 29, 30,
                                           32]),
                          st.one_of(st.integers(96, 400), st.integers(7900, 8191),
                                    st.integers(0, 8191)),
                          st.integers(0, 255)), min_size=1, max_size=25))
def test_hypothesis_garbage_in_the_seed_database(tmp_path, mutations):
    """Bytes changed in the seed file's catalog, data, IAM and LOB pages, checksums recomputed
    (read as if SQL Server wrote them): findings and counts, never an exception."""
    import struct as _struct
    from core.mssql.database import mdf_tables
    from core.structs.mssql import PAGE_SIZE, page_checksum
    data = bytearray(_SEED.setdefault("d", build_seed_database()[0]))
    for page, off, val in mutations:
        data[page * PAGE_SIZE + off] = val
    for page in {m[0] for m in mutations}:
        chunk = data[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        _struct.pack_into("<I", chunk, 60, page_checksum(bytes(chunk)))
        data[page * PAGE_SIZE:(page + 1) * PAGE_SIZE] = chunk
    path = tmp_path / f"{uuid4().hex}.mdf"
    path.write_bytes(bytes(data))
    doc = mdf_tables([str(path)], str(tmp_path / uuid4().hex)).to_json()
    json.dumps(doc)
    for t in doc["tables"]:
        if t["csv"]:
            with open(t["csv"], newline="", encoding="utf-8") as fh:
                assert all(len(r) == len(t["columns"]) for r in csv.reader(fh))
