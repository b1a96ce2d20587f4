"""Checks run through Sluice with MySQL Connector/Python (pure-Python protocol).

usage: connector.py PORT CHECK
Each check raises (exit status 1, traceback on stderr) when the proxy got something wrong,
and prints one line of facts on success.
"""
import hashlib
import os
import sys
import tempfile

import mysql.connector

PORT = int(sys.argv[1])
CHECK = sys.argv[2]


def connect(**extra):
    args = dict(host="127.0.0.1", port=PORT, user="app", password="app",
                database="sbtest", use_pure=True, ssl_disabled=True)
    args.update(extra)
    return mysql.connector.connect(**args)


def status(conn, name):
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE %s", (name,))
    value = int(cur.fetchone()[1])
    cur.close()
    return value


def check_prepared():
    conn = connect()
    plain = conn.cursor()
    plain.execute("DROP TABLE IF EXISTS driver_ps")
    plain.execute("CREATE TABLE driver_ps (id INT PRIMARY KEY, name VARCHAR(40),"
                  " score DOUBLE, note TEXT NULL)")
    before = status(conn, "Com_stmt_prepare")
    ps = conn.cursor(prepared=True)
    rows = [(i, f"name-{i}", i * 1.5, None if i % 2 else f"note {i}") for i in range(1, 51)]
    ps.executemany("INSERT INTO driver_ps VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    ps.execute("SELECT id, name, score, note FROM driver_ps WHERE id BETWEEN ? AND ? ORDER BY id",
               (10, 19))
    got = [(r[0], r[1], r[2], r[3]) for r in ps.fetchall()]
    assert got == rows[9:19], got
    ps.execute("SELECT COUNT(*) FROM driver_ps WHERE name LIKE ?", ("name-%",))
    assert ps.fetchone()[0] == 50
    prepared = status(conn, "Com_stmt_prepare") - before
    assert prepared >= 2, f"the server saw {prepared} COM_STMT_PREPARE"
    ps.close()
    plain.execute("DROP TABLE driver_ps")
    conn.close()
    print(f"prepared statements ok: {prepared} server-side prepares")


def check_prepared_types():
    """50 threads, each its own connection, insert and read back every kind of value
    through prepared cursors (binary protocol, server-side statements)."""
    import datetime
    import decimal
    import threading
    setup = connect()
    cur = setup.cursor()
    cur.execute("CREATE OR REPLACE TABLE driver_ps_types (id INT PRIMARY KEY,"
                " d DECIMAL(30,10) NULL, t DATETIME(6) NULL, u BIGINT UNSIGNED NULL,"
                " b BLOB NULL, s VARCHAR(40) NULL)")
    setup.close()
    failures = []

    def row(i, n):
        if (i + n) % 7 == 0:
            return (i * 100 + n, None, None, None, None, None)
        return (i * 100 + n,
                decimal.Decimal(f"{i}{n}.0123456789"),
                datetime.datetime(2026, 1 + n % 12, 1 + i % 28, 13, 14, 15, 123456 + i),
                18446744073709551615 - i * 1000 - n,
                bytes((i + n + k) % 256 for k in range(1000 + i)),
                f"row {i}/{n}")

    def worker(i):
        try:
            # autocommit, as most web applications run: with it off, every session
            # would hold a transaction open, and with it its connection
            conn = connect(autocommit=True)
            ps = conn.cursor(prepared=True)
            for n in range(10):
                ps.execute("INSERT INTO driver_ps_types VALUES (?, ?, ?, ?, ?, ?)", row(i, n))
                ps.execute("SELECT id, d, t, u, b, s FROM driver_ps_types WHERE id = ?",
                           (i * 100 + n,))
                got = tuple(ps.fetchone())
                want = row(i, n)
                if got != want:
                    failures.append((i, n, got, want))
            conn.close()
        except Exception as e:  # the assertion below reports it
            failures.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    check = connect()
    cur = check.cursor()
    cur.execute("SELECT COUNT(*) FROM driver_ps_types")
    count = cur.fetchone()[0]
    cur.execute("DROP TABLE driver_ps_types")
    check.close()
    assert count == 500, count
    print(f"prepared types ok: {count} rows")


def check_multi_statement():
    conn = connect(client_flags=[mysql.connector.constants.ClientFlag.MULTI_STATEMENTS])
    cur = conn.cursor()
    cur.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c; DO 0; SELECT 'x' UNION SELECT 'y'",
                map_results=True)
    sets = [rows for _, rows in cur.fetchsets()]
    assert sets == [[(1,)], [(2, 3)], [], [("x",), ("y",)]], sets
    # the connection is usable afterwards: every result was consumed
    cur.execute("SELECT 42")
    assert cur.fetchall() == [(42,)]
    conn.close()
    print(f"multi-statement ok: {len(sets)} result sets")


def check_blob():
    conn = connect()
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS driver_blob")
    cur.execute("CREATE TABLE driver_blob (id INT PRIMARY KEY, data LONGBLOB)")
    data = os.urandom(20 * 1024 * 1024)
    ps = conn.cursor(prepared=True)
    ps.execute("INSERT INTO driver_blob VALUES (?, ?)", (1, data))
    conn.commit()
    cur.execute("SELECT data, LENGTH(data), SHA2(data, 256) FROM driver_blob WHERE id = 1")
    back, length, digest = cur.fetchone()
    assert length == len(data), length
    assert digest == hashlib.sha256(data).hexdigest(), "server stored different bytes"
    assert bytes(back) == data, "client got different bytes back"
    cur.execute("DROP TABLE driver_blob")
    conn.close()
    print(f"blob ok: {len(data)} bytes round-trip")


def check_compressed():
    """A compressed session (zlib): a 10,000-row result equal to an uncompressed one's,
    a 20 MiB blob each way byte for byte, the link's Compression status."""
    plain, packed = connect(), connect(compress=True)
    sql = "SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 200) FROM seq_1_to_10000"
    results = []
    for conn in (plain, packed):
        cur = conn.cursor()
        cur.execute(sql)
        results.append(cur.fetchall())
    assert len(results[1]) == 10000 and results[0] == results[1], "rows differ"
    assert [r[1] for r in (status_text(plain, "Compression"), status_text(packed, "Compression"))] \
        == ["OFF", "ON"]
    cur = packed.cursor()
    cur.execute("DROP TABLE IF EXISTS driver_zblob")
    cur.execute("CREATE TABLE driver_zblob (id INT PRIMARY KEY, data LONGBLOB)")
    # half random (incompressible), half text (compressible)
    data = os.urandom(10 * 1024 * 1024) + b"sluice " * (10 * 1024 * 1024 // 7)
    cur.execute("INSERT INTO driver_zblob VALUES (1, %s)", (data,))
    packed.commit()
    cur.execute("SELECT data, SHA2(data, 256) FROM driver_zblob WHERE id = 1")
    back, digest = cur.fetchone()
    assert digest == hashlib.sha256(data).hexdigest(), "server stored different bytes"
    assert bytes(back) == data, "client got different bytes back"
    cur.execute("DROP TABLE driver_zblob")
    plain.close()
    packed.close()
    print(f"compressed ok: 10000 rows, {len(data)} bytes each way")


def status_text(conn, name):
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE %s", (name,))
    row = cur.fetchone()
    cur.close()
    return row


def check_load_data_local():
    conn = connect(allow_local_infile=True)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS driver_load")
    cur.execute("CREATE TABLE driver_load (id INT PRIMARY KEY, word VARCHAR(20))")
    count = 20000
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        for i in range(count):
            f.write(f"{i},word{i}\n")
        path = f.name
    try:
        cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE driver_load"
                    " FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'")
        conn.commit()
    finally:
        os.unlink(path)
    cur.execute("SELECT COUNT(*), SUM(id), MAX(word) FROM driver_load")
    rows, total, top = cur.fetchone()
    assert rows == count and total == count * (count - 1) // 2, (rows, total)
    assert top == "word9999", top
    cur.execute("DROP TABLE driver_load")
    conn.close()
    print(f"load data local ok: {rows} rows")


def check_change_user():
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER()")
    assert cur.fetchone()[0] == "app@127.0.0.1"
    cur.close()
    conn.cmd_change_user(username="app_local", password="app_local", database="mysql")
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER(), DATABASE()")
    assert cur.fetchone() == ("app_local@127.0.0.1", "mysql")
    cur.close()
    try:
        conn.cmd_change_user(username="app", password="wrong", database="sbtest")
    except mysql.connector.Error as e:
        assert e.errno == 1045, e
    else:
        raise AssertionError("change_user with a wrong password succeeded")
    conn.close()
    print("change user ok")


def check_caching_sha2():
    # A MySQL 8 client starts with caching_sha2_password; the proxy must switch it.
    conn = connect(auth_plugin="caching_sha2_password")
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER()")
    assert cur.fetchone()[0] == "app@127.0.0.1"
    conn.close()
    print("caching_sha2_password client ok")


def check_tls():
    conn = connect(user="app_tls", password="app_tls", ssl_disabled=False,
                   ssl_ca=os.environ["SLUICE_TEST_CA"], ssl_verify_cert=True)
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER()")
    assert cur.fetchone()[0] == "app_tls@127.0.0.1"
    conn.close()
    print("tls ok")


def check_prepared_reads():
    # Prepared writes then prepared reads of them, autocommit: each read sees its write
    # (read-your-writes) and the reads are served by the replicas.
    conn = connect(autocommit=True)
    plain = conn.cursor()
    plain.execute("CREATE TABLE IF NOT EXISTS driver_ps_reads (id INT PRIMARY KEY, v INT)")
    plain.execute("REPLACE INTO driver_ps_reads VALUES (1, 0)")
    ps = conn.cursor(prepared=True)
    ports = {}
    for i in range(1, 101):
        ps.execute("UPDATE driver_ps_reads SET v = ? WHERE id = ?", (i, 1))
        ps.execute("SELECT v, @@port FROM driver_ps_reads WHERE id = ?", (1,))
        v, port = ps.fetchone()
        assert v == i, (v, i, port)
        ports[str(port)] = ports.get(str(port), 0) + 1
    on_replicas = ports.get("13309", 0) + ports.get("13310", 0)
    assert on_replicas >= 95, ports
    print(f"prepared reads ok: {on_replicas} of 100 on the replicas {sorted(ports.items())}")


def check_lost_backend():
    # A session bound by a user variable loses its backend connection (KILLed on the
    # writer): the driver gets the proxy's ERR as a server error it understands, then
    # finds the connection gone, as from the server itself — never a fresh connection
    # where @keep would be NULL.
    conn = connect(autocommit=True)
    cur = conn.cursor()
    cur.execute("SET @keep = 42")
    cur.execute("SELECT CONNECTION_ID()")
    (backend_id,) = cur.fetchone()
    killer = mysql.connector.connect(host="127.0.0.1", port=13306, user="app",
                                     password="app", use_pure=True, ssl_disabled=True)
    killer.cursor().execute(f"KILL {backend_id}")
    killer.close()
    try:
        cur.execute("SELECT @keep")
        raise AssertionError(f"SELECT @keep answered {cur.fetchall()} after the kill")
    except mysql.connector.errors.Error as err:
        assert err.errno == 1152 and err.sqlstate == "08S01", (err.errno, err.sqlstate, str(err))
        assert "Lost connection to backend" in err.msg, err.msg
        first = f"{err.errno} ({err.sqlstate}) {type(err).__name__}"
    try:
        conn.cursor().execute("SELECT @keep")
        raise AssertionError("the connection still answered after its state was lost")
    except mysql.connector.errors.Error as err:
        second = f"{err.errno} {type(err).__name__}"
    assert not conn.is_connected()
    print(f"lost backend ok: {first}, then {second}")


globals()[f"check_{CHECK}"]()
