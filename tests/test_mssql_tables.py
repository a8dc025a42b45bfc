"""Tables out of SQL Server data files (core.mssql, `srsalvage mdf-tables`): the catalog of the
two shared real data files, their rows as CSV, pages lost to carving or bad checksums counted
per table, torn pages, files grouped by database, and the value decoders against values
hand-built from the documented on-disk formats."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import struct
import uuid
from contextlib import redirect_stdout

import pytest

from conftest import fixture_bytes
from core.mssql.database import group_files, mdf_tables
from core.mssql.pages import open_data_file
from core.structs.mssql import PAGE_SIZE, page_checksum

IT = "mdf/ITHelpdesk/Database.mdf.gz"
DNN = "mdf/dotnetnuke/Database.mdf.gz"

# The ITHelpdesk application (JoeBurnside/ITHelpdesk @ 6edfd26, VB.NET over stored procedures)
# names its tables' columns through the parameters it passes (AddParameter("@staffid"), "@forename",
# "@surname", "@phoneno", "@email", "@password", "@equipmentid", "@location", "@make", "@model",
# "@description", "@requestid", "@status", "@datemade", "@technicianid", "@role", "@action",
# "@datecompleted") and reads them back by position: AddEditStaff.aspx.vb
# (DispStaff.QueryResults.Rows(0)(1..5) = Forename, Surname, PhoneNo, Email, Password),
# AddEditTechs.aspx.vb (Rows(0)(1..5) = Forename, Surname, Role(ddlPosition), Email, Password),
# AddEditEquipment.aspx.vb (Rows(0)(1..4) = Location, Make, Model, Description); its pages are
# named after the tables (Staff.aspx, Equipment.aspx, ManageJobs.aspx, ManageTechnicians.aspx,
# ViewRequests.aspx; "the jobs table", "the request table" in DeleteJob.aspx.vb). History is
# not used by the application's code; sysdiagrams is SQL Server's diagram table (in dbo).
IT_TABLES = {
    "Equipment": (["EquipmentID", "Location", "Make", "Model", "Description"], 4),
    "History": (["HistoryID", "EquipmentID", "Action", "DateCompleted"], 0),
    "Jobs": (["JobID", "TechnicianID", "RequestID", "Action", "DateCompleted"], 3),
    "Request": (["RequestID", "EquipmentID", "StaffID", "Description", "DateMade", "Status"], 4),
    "Staff": (["StaffID", "Forename", "Surname", "PhoneNo", "Email", "Password"], 3),
    "Technicians": (["TechnicianID", "Forename", "Surname", "Role", "Email", "Password"], 4),
    "sysdiagrams": (["name", "principal_id", "diagram_id", "version", "definition"], 0),
}


def _write(tmp_path, relative, data=None, name=None):
    data = fixture_bytes(relative) if data is None else data
    path = tmp_path / (name or (relative.split("/")[1] + ".mdf"))
    path.write_bytes(data)
    return str(path)


def _run(argv):
    from app.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _reseal(page: bytearray) -> bytes:
    struct.pack_into("<I", page, 60, page_checksum(bytes(page)))
    return bytes(page)


# -- the shared real data files --------------------------------------------------------------
def test_ithelpdesk_tables_columns_rows_and_csv(tmp_path):
    path = _write(tmp_path, IT)
    out = tmp_path / "csv"
    rc, text = _run(["mdf-tables", path, "--json", "--csv", str(out)])
    assert rc == 0
    doc = json.loads(text)
    tables = {t["name"]: t for t in doc["tables"]}
    assert set(tables) == set(IT_TABLES)
    for name, (columns, rows) in IT_TABLES.items():
        t = tables[name]
        assert t["schema"] == "dbo"
        assert [c["name"] for c in t["columns"]] == columns
        assert t["rows"] == rows == t["rows_expected"]      # pages walked = sysrowsets count
        assert t["rows_lost_pages"] == 0 and t["undecoded"] == 0
        with open(out / f"{name}.csv", newline="", encoding="utf-8") as f:
            parsed = list(csv.reader(f))
        assert parsed[0] == columns
        assert len(parsed) == rows + 1
        assert all(len(r) == len(columns) for r in parsed)
    types = {c["name"]: c["type"] for c in tables["Request"]["columns"]}
    assert types == {"RequestID": "int", "EquipmentID": "int", "StaffID": "int",
                     "Description": "nvarchar(50)", "DateMade": "date", "Status": "nvarchar(50)"}
    assert [c["nullable"] for c in tables["Jobs"]["columns"]] == [False, False, False, True, True]
    assert tables["History"]["columns"][3]["type"] == "datetime"
    # values: the Request statuses the application sets (sp_ChangeStatus; "Active", "Pending",
    # "Complete" in its ddl lists) and dates as SQL Server shows a date
    with open(out / "Request.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["Status"] for r in rows} <= {"Active", "Pending", "Complete"}
    assert all(dt.date.fromisoformat(r["DateMade"]) for r in rows)
    db = doc["databases"][0]
    assert db["sql_server_version"] == 706
    v = db["files"][0]["verification"]
    assert v["checksum"] == {"pages": 285, "failed": 0} and v["bad_checksum_pages"] == []


@pytest.mark.parametrize("relative", [IT, DNN])
def test_declared_base_table_layouts_match_the_catalogs_own_description(tmp_path, relative):
    """The catalog describes its own base tables (syscolpars names, sysrscols places): in both
    real files (SQL Server 2008 R2 and 2012) every declared layout matches it; a description
    that moves a field is detected and followed."""
    import dataclasses
    from core.mssql.catalog import BASE_TABLES, declared_layout, described_layout, read_catalog
    from core.mssql.pages import Database
    db = Database([open_data_file(_write(tmp_path, relative))])
    try:
        cat = read_catalog(db)
    finally:
        db.close()
    assert len(cat.layouts_verified) == len(BASE_TABLES) == 6
    name, layout, var = BASE_TABLES[41]                   # syscolpars
    declared = declared_layout(layout, var)
    rs = next(r for r in cat.rowsets if r.idmajor == 41 and r.idminor == 1)
    colid = {c.name: c.colid for c in cat.colpars if c.id == 41}
    moved = [dataclasses.replace(rc, offset=60) if rc.rsid == rs.rowsetid
             and rc.rscolid == colid["status"] else rc for rc in cat.rscols]
    other = described_layout(dataclasses.replace(cat, rscols=moved), 41, declared)
    assert dict((n, o) for n, o, _ in other.fields)["status"] == 60
    assert described_layout(cat, 41, declared).fields[9][:2] == ("status", 27)


def test_a_base_table_laid_out_otherwise_is_read_as_the_catalog_says(tmp_path, monkeypatch):
    """As if a newer SQL Server had moved syscolpars' `status` before `collationid`: the
    declared layout reads them swapped, the catalog's own description (sysrscols) says where
    they are, the table is read again that way and the user tables come out right."""
    from construct import Int32sl, Int32ul, Struct
    from core.mssql import catalog
    from core.structs import mssql as S
    fields = list(S.syscolpars_fixed.subcons)
    names = [f.name for f in fields]
    i, j = names.index("collationid"), names.index("status")
    fields[i], fields[j] = "status" / Int32sl, "collationid" / Int32ul
    monkeypatch.setitem(catalog.BASE_TABLES, S.SYSCOLPARS,
                        ("syscolpars", Struct(*fields), ("name", "idtval")))
    doc = mdf_tables([_write(tmp_path, IT)]).to_json()
    kinds = [f["kind"] for f in doc["databases"][0]["findings"]]
    assert kinds == ["mdf-catalog-layout"]
    tables = {t["name"]: t for t in doc["tables"]}
    assert [c["nullable"] for c in tables["Jobs"]["columns"]] == [False, False, False, True, True]
    assert tables["Staff"]["rows"] == 3 and tables["Staff"]["undecoded"] == 0


def test_dotnetnuke_blank_install_database_has_no_user_tables(tmp_path):
    """AndrewReeve/dotnetnuke ships DNN's blank App_Data/Database.mdf (its web.config points
    SiteSqlServer at another server; DNN creates its tables with the SqlDataProvider scripts at
    install time): the catalog is read (SQL Server 2008 R2 system objects, schemas) and lists no
    user table."""
    path = _write(tmp_path, DNN)
    rc, text = _run(["mdf-tables", path, "--json", "--csv", str(tmp_path / "csv")])
    assert rc == 0
    doc = json.loads(text)
    assert doc["tables"] == []
    db = doc["databases"][0]
    assert db["sql_server_version"] == 661 and db["findings"] == []
    assert db["files"][0]["verification"]["checksum"] == {"pages": 164, "failed": 0}
    result = mdf_tables([path])
    cat = result.databases[0].catalog
    assert {"dbo", "sys", "INFORMATION_SCHEMA"} <= set(cat.schemas.values())
    assert {o.type for o in cat.objects} == {"S", "IT", "SQ"}
    assert {"sysrowsets", "sysschobjs", "syscolpars"} <= {o.name for o in cat.objects}
    assert os.listdir(tmp_path / "csv") == []


# -- damage: carved with pages missing, bad checksums, torn pages ---------------------------
def test_carved_with_a_missing_page_counts_the_lost_rows(tmp_path):
    from test_mssql_carve import scatter
    data = fixture_bytes(IT)
    staff_page = 300                                # pgfirst of dbo.Staff (sysallocunits)
    image, _ = scatter(data, seed=3, drop={staff_page}, stale=2, bad=2)
    img = tmp_path / "disk.img"
    img.write_bytes(image)
    rc, text = _run(["carve-mdf", str(img), "-o", str(tmp_path / "carved"), "--json"])
    assert rc == 0
    (f,) = json.loads(text)["files"]
    tables = {t["name"]: t for t in f["tables"]}        # carve-mdf gives the table summary
    assert tables["Staff"]["rows"] == 0 and tables["Staff"]["rows_lost_pages"] == 3
    assert tables["Staff"]["missing_pages"] == ["1:300"]
    assert tables["Equipment"]["rows"] == 4 and tables["Equipment"]["rows_lost_pages"] == 0
    rc, text = _run(["mdf-tables", f["path"], "--json", "--csv", str(tmp_path / "csv")])
    doc = json.loads(text)
    assert {t["name"]: t["rows"] for t in doc["tables"]}["Technicians"] == 4
    with open(tmp_path / "csv" / "Staff.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [IT_TABLES["Staff"][0]]


def test_bad_checksum_page_is_reported_and_its_rows_counted_lost(tmp_path):
    data = bytearray(fixture_bytes(IT))
    equipment = 302
    data[equipment * PAGE_SIZE + 3000] ^= 0x55      # rot inside the page, checksum kept
    path = _write(tmp_path, IT, bytes(data))
    doc = mdf_tables([path]).to_json()
    t = {t["name"]: t for t in doc["tables"]}["Equipment"]
    assert t["rows"] == 0 and t["rows_lost_pages"] == 4 and t["bad_pages"] == ["1:302"]
    assert doc["databases"][0]["files"][0]["verification"]["bad_checksum_pages"] == [302]


def _torn_protect(page: bytes, pattern: int = 1) -> bytearray:
    """The page as torn-page protection writes it: flag 0x100, the original low 2 bits of the
    last byte of each sector kept in m_tornBits at bit 2*sector, the pattern in their place."""
    buf = bytearray(page)
    struct.pack_into("<H", buf, 4, (struct.unpack_from("<H", buf, 4)[0] & ~0x0300) | 0x0100)
    torn = 0
    for s in range(16):
        pos = s * 512 + 511
        torn |= (buf[pos] & 3) << (2 * s)
        buf[pos] = (buf[pos] & 0xFC) | pattern
    struct.pack_into("<I", buf, 60, torn)
    return buf


def test_torn_page_protection_restored_and_torn_pages_reported(tmp_path):
    data = bytearray(fixture_bytes(IT))
    staff, tech = 300, 286
    data[staff * PAGE_SIZE:(staff + 1) * PAGE_SIZE] = _torn_protect(
        data[staff * PAGE_SIZE:(staff + 1) * PAGE_SIZE])
    torn = _torn_protect(data[tech * PAGE_SIZE:(tech + 1) * PAGE_SIZE])
    torn[7 * 512 + 511] ^= 3                        # sector 7 from another write
    data[tech * PAGE_SIZE:(tech + 1) * PAGE_SIZE] = torn
    clean = _write(tmp_path, IT, name="clean.mdf")
    path = _write(tmp_path, IT, bytes(data), name="torn.mdf")
    mdf_tables([clean], str(tmp_path / "a"))
    doc = mdf_tables([path], str(tmp_path / "b")).to_json()
    v = doc["databases"][0]["files"][0]["verification"]
    assert v["torn"] == {"pages": 2, "failed": 1} and v["torn_pages"] == [tech]
    t = {t["name"]: t for t in doc["tables"]}
    assert t["Technicians"]["rows_lost_pages"] == 4 and t["Technicians"]["bad_pages"] == ["1:286"]
    # the intact torn-protected page reads exactly as the checksummed original
    assert (tmp_path / "a" / "Staff.csv").read_bytes() == (tmp_path / "b" / "Staff.csv").read_bytes()


def test_files_grouped_by_database_never_mixed(tmp_path):
    it = _write(tmp_path, IT)
    dnn = _write(tmp_path, DNN)
    # a second file (file id 3) of the ITHelpdesk database: same file header BindingId
    data = bytearray(fixture_bytes(IT))
    for p in range(len(data) // PAGE_SIZE):
        page = data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]
        if page.count(0) != PAGE_SIZE:
            struct.pack_into("<H", page, 36, 3)
            data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = _reseal(page)
    ndf = _write(tmp_path, IT, bytes(data), name="second.ndf")
    result = mdf_tables([dnn, ndf, it], str(tmp_path / "csv"))
    assert len(result.databases) == 2
    by_name = {d.catalog.database: d for d in result.databases}
    it_db = next(d for d in result.databases if d.tables)
    assert sorted(f.file_id for f in it_db.files) == [1, 3]
    assert {f.path for f in it_db.files} == {it, ndf}
    assert len(by_name) == 2 and all(len(d.files) == 1 for d in result.databases
                                     if d is not it_db)
    assert os.path.exists(os.path.join(it_db.csv_dir, "Staff.csv"))
    assert it_db.csv_dir != str(tmp_path / "csv")       # one directory per database
    # the same file twice is not one database of two files
    files = [open_data_file(it), open_data_file(it)]
    try:
        groups = group_files(files)
        assert len(groups) == 2
        assert any(g[1] and g[1][0]["kind"] == "mdf-duplicate-file-id" for g in groups)
    finally:
        for f in files:
            f.space.close()


def test_csv_never_overwritten(tmp_path):
    path = _write(tmp_path, IT)
    out = tmp_path / "csv"
    assert _run(["mdf-tables", path, "--csv", str(out)])[0] == 0
    assert _run(["mdf-tables", path, "--csv", str(out)])[0] == 3
    assert _run(["mdf-tables", path, "--csv", path])[0] == 3
    # one CSV already there: refused before anything is written
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "Staff.csv").write_text("keep me")
    assert _run(["mdf-tables", path, "--csv", str(fresh)])[0] == 3
    assert sorted(os.listdir(fresh)) == ["Staff.csv"]
    assert (fresh / "Staff.csv").read_text() == "keep me"


def test_demo_data_file_has_no_catalog(tmp_path):
    """The demo's synthetic "webshop" file (core.demo_payloads) has data pages and allocation
    pages but no system base tables (its boot record's dbi_firstSysIndexes is 0): mdf-tables
    says so instead of inventing tables."""
    from core.demo_payloads import build_data_file
    path = tmp_path / "webshop.mdf"
    path.write_bytes(build_data_file(0).data)
    doc = mdf_tables([str(path)]).to_json()
    assert doc["tables"] == []
    assert "mdf-no-catalog" in {f["kind"] for f in doc["databases"][0]["findings"]}


# -- garbage never raises ---------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CACHE: dict[str, bytes] = {}
# catalog and data pages of the ITHelpdesk file: boot, sysallocunits, sysrowsets, sysschobjs,
# syscolpars, sysrscols pages and the user tables' data and IAM pages
_HOT_PAGES = [9, 16, 17, 20, 24, 32, 40, 48, 56, 90, 112, 130, 286, 287, 300, 301, 302, 304, 306]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(_HOT_PAGES), st.integers(0, PAGE_SIZE - 1),
                          st.integers(0, 255)), min_size=1, max_size=40),
       st.booleans())
def test_hypothesis_garbage_pages_give_findings_never_tracebacks(tmp_path, mutations, reseal):
    """Catalog and data pages with bytes changed - with their checksums recomputed, so the
    garbage is read as if SQL Server had written it, or left failing: tables, counts and
    findings come back, never an exception."""
    data = bytearray(_CACHE.setdefault("it", fixture_bytes(IT)))
    touched = set()
    for page, off, val in mutations:
        data[page * PAGE_SIZE + off] = val
        touched.add(page)
    if reseal:
        for page in touched:
            data[page * PAGE_SIZE:(page + 1) * PAGE_SIZE] = _reseal(
                data[page * PAGE_SIZE:(page + 1) * PAGE_SIZE])
    path = tmp_path / f"g{random_name()}.mdf"
    path.write_bytes(bytes(data))
    out = tmp_path / f"csv{random_name()}"
    doc = mdf_tables([str(path)], str(out)).to_json()
    json.dumps(doc)
    for t in doc["tables"]:
        assert t["rows"] >= 0 and t["rows_lost_pages"] >= 0
        if t["csv"]:
            with open(t["csv"], newline="", encoding="utf-8") as f:
                assert all(len(r) == len(t["columns"]) for r in csv.reader(f))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=3 * PAGE_SIZE + 100), st.booleans())
def test_hypothesis_garbage_files(tmp_path, blob, as_pages):
    """Random bytes, or random bytes behind plausible page headers naming themselves."""
    data = bytearray(blob)
    if as_pages:
        for p in range(len(data) // PAGE_SIZE):
            data[p * PAGE_SIZE] = 1
            struct.pack_into("<IH", data, p * PAGE_SIZE + 32, p, 1)
            data[p * PAGE_SIZE + 1] = (1, 13, 10, 11, 15)[p % 5]
            data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = _reseal(data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE])
    path = tmp_path / f"r{random_name()}.mdf"
    path.write_bytes(bytes(data))
    rc, text = _run(["mdf-tables", str(path), "--json"])
    assert rc == 0
    json.loads(text)


def random_name() -> str:
    return uuid.uuid4().hex[:12]


def test_lost_catalog_pages_are_worked_around_or_counted(tmp_path):
    """Without the boot page, the first sysallocunits page or the IAM pages the tables are still
    found (page headers naming their units); without the sysallocunits page that maps the user
    tables' units their rows are counted lost from sysrowsets, not reported as empty tables."""
    data = fixture_bytes(IT)

    def run(zeroed, name):
        buf = bytearray(data)
        for p in zeroed:
            buf[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] = bytes(PAGE_SIZE)
        return mdf_tables([_write(tmp_path, IT, bytes(buf), name=name)]).to_json()

    full = {n: rows for n, (_, rows) in IT_TABLES.items()}
    for zeroed in ([9], [16], [287, 301, 303, 305, 307]):
        doc = run(zeroed, f"z{zeroed[0]}.mdf")
        assert {t["name"]: t["rows"] for t in doc["tables"]} == full
    doc = run([287, 301], "iam.mdf")
    staff = {t["name"]: t for t in doc["tables"]}["Staff"]
    assert staff["missing_pages"] == ["1:301"] and staff["rows_lost_pages"] == 0
    doc = run([130], "au.mdf")
    tables = {t["name"]: t for t in doc["tables"]}
    assert {n: (t["rows"], t["rows_lost_pages"]) for n, t in tables.items()} == {
        n: (0, rows) for n, rows in full.items()}
    findings = {f["kind"]: f for f in doc["databases"][0]["findings"]}
    assert "mdf-catalog-pages-lost" in findings
    # their pages are still there, under units the catalog no longer names: said, not read
    # (the five user tables with rows and sys.trace_xe_action_map / trace_xe_event_map)
    orphans = findings["mdf-orphan-pages"]["units"]
    assert sum(u["data_pages"] for u in orphans) == 7 and all(u["m_indexId"] == 256
                                                              for u in orphans)
