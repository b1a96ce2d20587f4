#!/usr/bin/env python3
"""What the compressed protocol costs and saves: a 10,000-row result read through Sluice
uncompressed and compressed (zlib levels 1, 3 and 6; zstd levels 1 and 3), interleaved
rounds in one run. zlib is read by Connector/Python (pure), zstd by libmysqlclient (the
C library Connector/Python's extension bundles; tests/driver/libmysqlclient.py), whose
import runs this script again with the library's OpenSSL on LD_LIBRARY_PATH.

Per mode: bytes on the client link per query (the proxy's own count of what it wrote to
clients), proxy CPU per query (its utime + stime over the queries), and the client's wall
time per query (a pure-Python client: mostly its own decoding). Two result shapes: rows of
sysbench's kind (random digits and dashes, the `c` and `pad` columns) and rows of text
that repeats (`REPEAT(CHAR(…))`). Writes the "Compression" section of benches/RESULTS.md.

usage: .venv/bin/python benches/compression.py [--queries 20] [--rounds 3] [--no-results-file]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mysql.connector

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests/driver"))
import load  # noqa: E402
import libmysqlclient  # noqa: E402

ROOT = load.ROOT
PORTS = {"plain": 16091, "zlib 1": 16092, "zlib 3": 16093, "zlib 6": 16094, "zstd 1": 16095,
         "zstd 3": 16096}
SHAPES = {
    "sysbench-like rows": "SELECT seq, CONCAT_WS('-', FLOOR(RAND(seq) * 1e11), FLOOR(RAND(seq + 1) * 1e11), "
                          "FLOOR(RAND(seq + 2) * 1e11), FLOOR(RAND(seq + 3) * 1e11)), "
                          "CONCAT_WS('-', FLOOR(RAND(seq + 4) * 1e11), FLOOR(RAND(seq + 5) * 1e11)) "
                          "FROM seq_1_to_10000",
    "repetitive text rows": "SELECT seq, REPEAT(CHAR(65 + seq % 26), 100 + seq % 100) FROM seq_1_to_10000",
}


def bytes_sent(port):
    conn = mysql.connector.connect(host="127.0.0.1", port=port + 100, user="admin",
                                   password="admin", use_pure=True, ssl_disabled=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT Variable_Value FROM stats_mysql_global "
                    "WHERE Variable_Name = 'Queries_frontends_bytes_sent'")
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def measure_zstd(mode, proc, sql, queries):
    """As `measure`, with libmysqlclient asking for zstd at the mode's level."""
    port = PORTS[mode]
    mysql = libmysqlclient.connect(port, "zstd", int(mode.split()[1]))
    libmysqlclient.digest(mysql, sql)  # warm: the pool, the replica's cache
    sent, cpu, start = bytes_sent(port), load.cpu_seconds(proc.pid), time.perf_counter()
    rows = sum(libmysqlclient.digest(mysql, sql)[0] for _ in range(queries))
    wall = time.perf_counter() - start
    cpu = load.cpu_seconds(proc.pid) - cpu
    libmysqlclient.lib.mysql_close(mysql)
    assert rows == 10_000 * queries, rows
    link = bytes_sent(port) - sent
    return link / queries, cpu / queries, wall / queries


def measure(mode, proc, sql, queries):
    if mode.startswith("zstd"):
        return measure_zstd(mode, proc, sql, queries)
    port = PORTS[mode]
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password="app",
                                   database="sbtest", use_pure=True, ssl_disabled=True,
                                   compress=(mode != "plain"))
    cur = conn.cursor()
    cur.execute(sql)
    cur.fetchall()  # warm: the pool, the replica's cache
    sent, cpu, start = bytes_sent(port), load.cpu_seconds(proc.pid), time.perf_counter()
    rows = 0
    for _ in range(queries):
        cur.execute(sql)
        rows += len(cur.fetchall())
    wall = time.perf_counter() - start
    cpu = load.cpu_seconds(proc.pid) - cpu
    conn.close()
    assert rows == 10_000 * queries, rows
    link = bytes_sent(port) - sent
    return link / queries, cpu / queries, wall / queries


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    load.bring_up("--bin", "sluice")
    work = Path(tempfile.mkdtemp(prefix="sluice-compression-"))
    procs = {}
    for mode, port in PORTS.items():
        level = int(mode.split()[1]) if mode.startswith("zlib") else 3
        config = work / f"sluice-{port}.toml"
        config.write_text(load.demo_config(port, port + 100, port + 200).replace(
            "[proxy]\n", f"[proxy]\ncompression_level = {level}\n", 1))
        procs[mode] = load.subprocess.Popen(
            [str(ROOT / "target/release/sluice"), "run", "--config", str(config)],
            stdout=load.subprocess.DEVNULL, stderr=open(work / f"{port}.log", "w"),
            env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"})
        load.wait_port(port)
    time.sleep(2)
    results = {}
    try:
        for _ in range(opts.rounds):
            for shape, sql in SHAPES.items():
                for mode, proc in procs.items():
                    results.setdefault((shape, mode), []).append(measure(mode, proc, sql, opts.queries))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait()
    lines = []
    for shape in SHAPES:
        plain = [statistics.median(m[i] for m in results[(shape, "plain")]) for i in range(3)]
        for mode in PORTS:
            link, cpu, wall = (statistics.median(m[i] for m in results[(shape, mode)]) for i in range(3))
            lines.append(f"| {shape} | {mode} | {link / 1024:,.0f} KiB ({link / plain[0]:.2f}×) "
                         f"| {cpu * 1e3:.2f} ms ({cpu / plain[1]:.2f}×) | {wall * 1e3:.0f} ms |")
    print("\n".join(lines))
    if not opts.no_results_file:
        load.replace_section("# Compression", [
            "# Compression",
            "",
            f"`.venv/bin/python benches/compression.py --queries {opts.queries} --rounds {opts.rounds}`"
            f" on the same machine, {time.strftime('%Y-%m-%d')}: a 10,000-row result read by "
            "Connector/Python (pure; zstd: libmysqlclient, which asks for the level) through "
            "Sluice, reads split to the replicas, one proxy per "
            f"mode, modes interleaved; medians of {opts.rounds} rounds of {opts.queries} queries. "
            "Bytes on the client link are the proxy's count of what it wrote to the client; CPU "
            "is the proxy process's user + system time per query; wall time is the client's "
            "(mostly its own row decoding: Python for plain and zlib, C for zstd). CPU is read in 10 ms ticks over a round's queries "
            "(±0.3 ms per query at 30 queries).",
            "",
            "| rows | client link | bytes per query | proxy CPU per query | client wall per query |",
            "|---|---|---|---|---|",
            *lines,
        ])


if __name__ == "__main__":
    main()
