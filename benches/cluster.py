#!/usr/bin/env python3
"""Two proxies, one configuration: how long a change made on proxy A's admin port takes to
be in force on proxy B (both `[cluster] sync = true`, one name, the default 1 s interval),
and what the sync costs per statement (sysbench oltp_point_select through a proxy with the
sync on and through one with it off, rounds interleaved, same run).

Each change: `UPDATE mysql_query_rules SET comment = …; LOAD MYSQL QUERY RULES TO RUNTIME`
on A (the time of that LOAD is reported too), then B's runtime_mysql_query_rules is read
every 2 ms on one admin connection until it shows the new comment. Changes start at a
random point of B's interval (a random pause of 0–1 s before each).

Results go to stdout and to the "Two proxies" section of benches/RESULTS.md.

usage: benches/cluster.py [--changes 20] [--rounds 3] [--time 10] [--threads 8]
"""
import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import consistency  # noqa: E402  (a text-protocol query helper)
import load  # noqa: E402  (the load harness: cluster, sysbench, machine facts)
import scale  # noqa: E402  (a minimal protocol client)

ROOT = load.ROOT
# client, admin, metrics ports of proxies A and B (sync on) and C (sync off)
PORTS = {"A": (16093, 16094, 16095), "B": (16103, 16104, 16105), "C": (16113, 16114, 16115)}


def start(work, name, cluster):
    port, admin, metrics = PORTS[name]
    config = load.demo_config(port, admin, metrics)
    sync = "true" if name != "C" else "false"
    config += (f'\n[cluster]\nname = "{cluster}"\nsync = {sync}\nuser = "sluice_cluster"\n'
               f'password_file = "{ROOT}/config/cluster.secret"\n')
    folder = work / name
    folder.mkdir()
    path = folder / "sluice.toml"
    path.write_text(config)
    proc = subprocess.Popen([str(ROOT / "target/release/sluice"), "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "sluice.log", "w"),
                            env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"})
    load.wait_port(port)
    load.wait_port(admin)
    return proc


def admin(name):
    return scale.login(PORTS[name][1], user="admin", password="admin", database="main")


def comment_on(sock):
    row = consistency.query(sock, "SELECT comment FROM runtime_mysql_query_rules WHERE rule_id = 900")
    return row[0] if row else None


def sync_latencies(changes):
    a, b = admin("A"), admin("B")
    consistency.query(a, "DELETE FROM mysql_query_rules WHERE rule_id = 900")
    consistency.query(a, "INSERT INTO mysql_query_rules (rule_id, active, match_digest, comment, apply) "
                         "VALUES (900, 1, '^SELECT 900900', 'c0', 0)")
    consistency.query(a, "LOAD MYSQL QUERY RULES TO RUNTIME")
    deadline = time.time() + 10
    while comment_on(b) != "c0":
        if time.time() > deadline:
            sys.exit("B never took the first change")
        time.sleep(0.01)
    loads, applied = [], []
    for i in range(1, changes + 1):
        time.sleep(random.random())
        consistency.query(a, f"UPDATE mysql_query_rules SET comment = 'c{i}' WHERE rule_id = 900")
        t = time.perf_counter()
        consistency.query(a, "LOAD MYSQL QUERY RULES TO RUNTIME")
        loads.append(time.perf_counter() - t)
        deadline = time.time() + 10
        while comment_on(b) != f"c{i}":
            if time.time() > deadline:
                sys.exit(f"B never took change {i}")
            time.sleep(0.002)
        applied.append(time.perf_counter() - t)
    a.close()
    b.close()
    return loads, applied


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    load.bring_up()
    work = Path(tempfile.mkdtemp(prefix="sluice-cluster-"))
    cluster = f"bench_{os.getpid()}"
    procs = {}
    failures = []
    qps = {"A": [], "C": []}
    try:
        load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
        load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
        for name in PORTS:
            procs[name] = start(work, name, cluster)
        time.sleep(3)  # the monitor's first checks, and B taking A's first version
        loads, applied = sync_latencies(opts.changes)
        for r in range(opts.rounds):
            for name in ("A", "C") if r % 2 == 0 else ("C", "A"):
                report = load.measured("oltp_point_select", PORTS[name][0], opts.threads, opts.time,
                                       f"point_select via {name}", failures)
                qps[name].append(load.parse(report)["qps"])
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    ms = [x * 1000 for x in applied]
    load_ms = [x * 1000 for x in loads]
    on, off = statistics.median(qps["A"]), statistics.median(qps["C"])
    print(f"LOAD on A until in force on B: median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms, "
          f"min {min(ms):.0f} ms ({len(ms)} changes); the LOAD itself median {statistics.median(load_ms):.1f} ms")
    print(f"point_select qps, {opts.threads} threads: sync on {on:.0f} (rounds {[round(q) for q in qps['A']]}), "
          f"off {off:.0f} (rounds {[round(q) for q in qps['C']]}): on/off {on / off:.3f}")
    if not opts.no_results_file:
        write_results(opts, ms, load_ms, qps, failures)


def write_results(opts, ms, load_ms, qps, failures):
    heading = "# Two proxies"
    on, off = statistics.median(qps["A"]), statistics.median(qps["C"])
    section = [
        heading, "",
        f"`benches/cluster.py --changes {opts.changes} --rounds {opts.rounds} --time {opts.time} "
        f"--threads {opts.threads}` on {load.machine()}, {time.strftime('%Y-%m-%d')}: three release "
        "proxies of the demo configuration, A and B with `[cluster] sync = true` under one name "
        "(interval 1 s, the default), C with the sync off.", "",
        "| | median | min | max |",
        "|---|---|---|---|",
        f"| `LOAD MYSQL QUERY RULES TO RUNTIME` on A until in force on B ({len(ms)} changes) | "
        f"{statistics.median(ms):.0f} ms | {min(ms):.0f} ms | {max(ms):.0f} ms |",
        f"| the LOAD on A itself (validate, write the version to the cluster, swap) | "
        f"{statistics.median(load_ms):.1f} ms | {min(load_ms):.1f} ms | {max(load_ms):.1f} ms |",
        "",
        f"A peer polls every interval, so a change reaches it after half an interval on average and "
        f"one interval at most, plus its round (fetch, validate, swap).", "",
        f"sysbench oltp_point_select, {opts.threads} threads, {opts.time} s per round, rounds "
        f"interleaved: sync on {on:.0f} qps (rounds {', '.join(f'{q:.0f}' for q in qps['A'])}), "
        f"sync off {off:.0f} qps (rounds {', '.join(f'{q:.0f}' for q in qps['C'])}): on/off "
        f"**{on / off:.3f}**. The sync never touches a statement's path: it is one task per proxy "
        "with its own connection to the cluster (about five small statements per interval).",
    ]
    if failures:
        section += ["", "Runs repeated after a failure: " + "; ".join(failures)]
    load.replace_section(heading, section)


if __name__ == "__main__":
    main()
