"""The demo's RAR 5 archive (core.demo_payloads places it): the web server's backup, a few
small text files (`backup_members`, seeded and deterministic), packed by `build_rar_archive`
as a RAR 5 archive of stored (method 0) files: signature, MAIN, one FILE header per file (data
CRC-32, Unix mtime) followed by its bytes, end of archive; every header CRC-32 computed over the
built header with the construct structures of `core.structs.rar` (formats.md 6.2).
`access_log` is the plain web-log text the demo also writes over SQL Server pages.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass
from typing import Sequence

from core.structs.rar import (
    RAR5_BLOCK_ENDARC, RAR5_BLOCK_FILE, RAR5_BLOCK_FLAG_DATA_AREA, RAR5_BLOCK_FLAG_EXTRA_DATA,
    RAR5_BLOCK_FLAG_SKIP_IF_UNKNOWN, RAR5_BLOCK_MAIN, RAR5_FILE_FLAG_HAS_CRC32,
    RAR5_FILE_FLAG_HAS_MTIME, RAR5_ID, RAR5_OS_UNIX, rar5_block_header, rar5_endarc_fields,
    rar5_file_fields, rar5_main_fields,
)

@dataclass(frozen=True)
class ArchiveMember:
    name: str
    data: bytes
    mtime: int                    # Unix time

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.data)


def rar5_header(block_type: int, fields: bytes, block_flags: int = 0, extra: bytes = b"",
                data_size: int | None = None) -> bytes:
    """One RAR 5 header: CRC-32, size, type, flags (+ extra / data sizes) built with
    `rar5_block_header`, then the type-specific `fields` and the `extra` area; the CRC covers
    everything after itself (formats.md 6.2)."""
    flags = block_flags | (RAR5_BLOCK_FLAG_EXTRA_DATA if extra else 0) \
        | (RAR5_BLOCK_FLAG_DATA_AREA if data_size is not None else 0)
    common = dict(header_crc=0, header_size=0, block_type=block_type, block_flags=flags,
                  block_extra_size=len(extra) if extra else None, add_size=data_size)
    # header_size counts the bytes after its own vint: the common fields (past CRC and a
    # 1-byte size 0) plus the rest
    after_size = len(rar5_block_header.build(common)) - 5
    common["header_size"] = after_size + len(fields) + len(extra)
    unsigned = rar5_block_header.build(common) + fields + extra
    common["header_crc"] = zlib.crc32(unsigned[4:])
    return rar5_block_header.build(common) + fields + extra


def build_rar_archive(members: Sequence[ArchiveMember]) -> tuple[bytes, list[int]]:
    """A RAR 5 archive of stored files; returns (bytes, offset of each member's FILE header)."""
    out = bytearray(RAR5_ID)
    out += rar5_header(RAR5_BLOCK_MAIN, rar5_main_fields.build(dict(main_flags=0,
                                                                     main_volume_number=None)))
    header_offsets = []
    for m in members:
        name = m.name.encode("utf-8")
        fields = rar5_file_fields.build(dict(
            file_flags=RAR5_FILE_FLAG_HAS_MTIME | RAR5_FILE_FLAG_HAS_CRC32, file_size=len(m.data),
            mode=0o100644, mtime=m.mtime, CRC=m.crc32,
            compress_info=0,                 # method 0 (stored) in bits 7-9, not solid
            host_os=RAR5_OS_UNIX, name_size=len(name), filename=name))
        header_offsets.append(len(out))
        out += rar5_header(RAR5_BLOCK_FILE, fields, data_size=len(m.data))
        out += m.data
    out += rar5_header(RAR5_BLOCK_ENDARC, rar5_endarc_fields.build(dict(endarc_flags=0)),
                       block_flags=RAR5_BLOCK_FLAG_SKIP_IF_UNKNOWN)
    return bytes(out), header_offsets


def access_log(rng: random.Random, nbytes: int) -> bytes:
    """Web server access-log lines (documentation IP ranges), exactly `nbytes` long: plain text,
    so nothing in it looks like a page header or an archive signature."""
    paths = ["/", "/shop/", "/shop/product.php?id=%d", "/shop/cart.php", "/shop/checkout.php",
             "/img/p%d.jpg", "/api/stock?sku=%d", "/login.php", "/static/app.js"]
    agents = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (X11; Linux x86_64)",
              "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X)", "curl/7.88.1"]
    when = dt.datetime(2023, 11, 20, 6, 0, 0)
    out = bytearray()
    while len(out) < nbytes:
        when += dt.timedelta(seconds=rng.randrange(1, 40))
        path = rng.choice(paths)
        if "%d" in path:
            path = path % rng.randrange(1, 5000)
        ip = f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randrange(1, 255)}"
        out += (f'{ip} - - [{when:%d/%b/%Y:%H:%M:%S} +0000] "GET {path} HTTP/1.1" '
                f'{rng.choice([200, 200, 200, 304, 404])} {rng.randrange(200, 90000)} "-" '
                f'"{rng.choice(agents)}"\n').encode()
    return bytes(out[:nbytes])


def backup_members(seed: int = 0) -> list[ArchiveMember]:
    """The web server's backup: a few small text files (deterministic for a seed)."""
    rng = random.Random(f"srsalvage-demo-rar-{seed}")
    base = 1_700_400_000 + rng.randrange(86400)
    index = ("<?php\n// webshop front page\nrequire __DIR__ . '/config.php';\n"
             "$db = new PDO($dsn, $user, $password);\n"
             "$rows = $db->query('SELECT TOP 12 * FROM Orders ORDER BY Placed DESC');\n"
             "foreach ($rows as $row) {\n    echo render_order($row);\n}\n")
    config = ("<?php\n$dsn = 'sqlsrv:Server=sql01;Database=webshop';\n$user = 'webshop_app';\n"
              f"$password = '{rng.randbytes(9).hex()}';\n$cache_dir = '/var/cache/webshop';\n")
    schema = ("CREATE TABLE Customers (CustomerID int PRIMARY KEY, Created datetime, "
              "IsActive bit,\n  Name nvarchar(100), Email nvarchar(200), City nvarchar(60));\n"
              "CREATE TABLE Orders (OrderID int PRIMARY KEY, CustomerID int, Total money, "
              "Placed datetime,\n  Status tinyint, ShippingAddress nvarchar(200), "
              "Notes nvarchar(200));\n")
    return [ArchiveMember("webshop/htdocs/index.php", index.encode(), base),
            ArchiveMember("webshop/htdocs/config.php", config.encode(), base + 3600),
            ArchiveMember("webshop/db/schema.sql", schema.encode(), base - 86400 * 30),
            ArchiveMember("webshop/logs/access.log", access_log(rng, 6000 + rng.randrange(3000)),
                          base + 7200)]
