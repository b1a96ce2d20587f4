"""MySQL's own client library, libmysqlclient (the one bundled in Connector/Python's C
extension, which speaks zstd compression), driven through its C API with ctypes. The
script runs itself again with LD_LIBRARY_PATH at the extension's vendor/ directory, whose
OpenSSL the library needs.

usage: libmysqlclient.py PORT ALGORITHM [LEVEL]
  ALGORITHM: zstd, zlib or uncompressed (MYSQL_OPT_COMPRESSION_ALGORITHMS)

Reads a 10,000-row result and a 20 MiB value and prints, for each, the number of rows and
a SHA-256 of every value with its length, so that two runs compare byte for byte.
"""
import ctypes
import hashlib
import os
import sys
from pathlib import Path

import mysql.connector

VENDOR = Path(mysql.connector.__file__).parent.parent / "vendor"
if os.environ.get("LD_LIBRARY_PATH") != str(VENDOR):
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {**os.environ, "LD_LIBRARY_PATH": str(VENDOR)})

import _mysql_connector  # noqa: E402  (loadable only with the vendor OpenSSL)

# enum mysql_option (mysql.h)
MYSQL_PLUGIN_DIR = 16
MYSQL_OPT_MAX_ALLOWED_PACKET = 32
MYSQL_OPT_SSL_MODE = 35
MYSQL_OPT_COMPRESSION_ALGORITHMS = 41
MYSQL_OPT_ZSTD_COMPRESSION_LEVEL = 42
SSL_MODE_DISABLED = 1

lib = ctypes.CDLL(_mysql_connector.__file__)
lib.mysql_init.restype = ctypes.c_void_p
lib.mysql_init.argtypes = [ctypes.c_void_p]
lib.mysql_options.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
lib.mysql_real_connect.restype = ctypes.c_void_p
lib.mysql_real_connect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                   ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint,
                                   ctypes.c_char_p, ctypes.c_ulong]
lib.mysql_error.restype = ctypes.c_char_p
lib.mysql_error.argtypes = [ctypes.c_void_p]
lib.mysql_query.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.mysql_store_result.restype = ctypes.c_void_p
lib.mysql_store_result.argtypes = [ctypes.c_void_p]
lib.mysql_num_fields.restype = ctypes.c_uint
lib.mysql_num_fields.argtypes = [ctypes.c_void_p]
lib.mysql_fetch_row.restype = ctypes.POINTER(ctypes.c_void_p)
lib.mysql_fetch_row.argtypes = [ctypes.c_void_p]
lib.mysql_fetch_lengths.restype = ctypes.POINTER(ctypes.c_ulong)
lib.mysql_fetch_lengths.argtypes = [ctypes.c_void_p]
lib.mysql_free_result.argtypes = [ctypes.c_void_p]
lib.mysql_close.argtypes = [ctypes.c_void_p]


def option(mysql, which, value):
    if lib.mysql_options(mysql, which, value) != 0:
        raise SystemExit(f"mysql_options({which}) refused")


# the library loads mysql_native_password from here (it is no longer built in)
PLUGINS = VENDOR / "plugin"


def connect(port, algorithm, level):
    mysql = lib.mysql_init(None)
    option(mysql, MYSQL_PLUGIN_DIR, str(PLUGINS).encode())
    option(mysql, MYSQL_OPT_COMPRESSION_ALGORITHMS, algorithm.encode())
    option(mysql, MYSQL_OPT_ZSTD_COMPRESSION_LEVEL, ctypes.byref(ctypes.c_uint(level)))
    option(mysql, MYSQL_OPT_SSL_MODE, ctypes.byref(ctypes.c_uint(SSL_MODE_DISABLED)))
    option(mysql, MYSQL_OPT_MAX_ALLOWED_PACKET, ctypes.byref(ctypes.c_ulong(64 << 20)))
    if not lib.mysql_real_connect(mysql, b"127.0.0.1", b"app", b"app", b"sbtest", port, None, 0):
        raise SystemExit(f"connect: {lib.mysql_error(mysql).decode()}")
    return mysql


def digest(mysql, sql):
    """Rows and a SHA-256 of every value (with its length) of `sql`'s result."""
    if lib.mysql_query(mysql, sql.encode()) != 0:
        raise SystemExit(f"{sql}: {lib.mysql_error(mysql).decode()}")
    result = lib.mysql_store_result(mysql)
    if not result:
        raise SystemExit(f"{sql}: {lib.mysql_error(mysql).decode()}")
    fields = lib.mysql_num_fields(result)
    h = hashlib.sha256()
    rows = 0
    while True:
        row = lib.mysql_fetch_row(result)
        if not row:
            break
        lengths = lib.mysql_fetch_lengths(result)
        for i in range(fields):
            if row[i] is None:
                h.update(b"NULL;")
            else:
                h.update(f"{lengths[i]}:".encode())
                h.update(ctypes.string_at(row[i], lengths[i]))
        rows += 1
    lib.mysql_free_result(result)
    return rows, h.hexdigest()


def main():
    port, algorithm = int(sys.argv[1]), sys.argv[2]
    level = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    mysql = connect(port, algorithm, level)
    for sql in [
        "SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM seq_1_to_10000",
        "SELECT SHA2(x, 256), LENGTH(x), x FROM (SELECT REPEAT(MD5(seq), 700000) x FROM seq_1_to_1) t",
    ]:
        rows, sha = digest(mysql, sql)
        print(rows, sha)
    lib.mysql_close(mysql)


if __name__ == "__main__":
    main()
