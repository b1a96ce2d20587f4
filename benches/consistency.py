#!/usr/bin/env python3
"""What read-your-writes costs: a client updates one row and reads it back at once, in
autocommit, through Sluice with `consistency = "session"`, `"global"` and `"none"` (three
proxies of one release build of the demo configuration, Galera writer and
two replicas, in the same interleaved rounds), with a client that negotiates session
tracking (the write's GTID comes in its OK packet) and one that does not (the proxy reads
`@@last_gtid` after the write). It reports the latency of the write, of the read right
after it (median, p99), of the read alone for comparison, the share of those reads the
replicas served, and how many missed the write.

Results go to stdout and to the "Read-your-writes" section of benches/RESULTS.md.

With `--baseline BINARY`, a fourth proxy from another build (session consistency) runs
the same rounds with both kinds of client: the same workload against that build.

usage: benches/consistency.py [--writes 2000] [--rounds 3] [--baseline BINARY]
"""
import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, machine facts)
import scale  # noqa: E402  (a minimal protocol client)

ROOT = load.ROOT
PORTS = {"session": (16053, 16054, 16055), "global": (16083, 16084, 16085),
         "none": (16063, 16064, 16065)}
BASELINE_PORTS = (16093, 16094, 16095)


def start(work, consistency, binary=None, name=None):
    name = name or consistency
    port, admin, metrics = BASELINE_PORTS if binary else PORTS[consistency]
    config = (load.demo_config(port, admin, metrics)
              .replace('name = "app"\n', f'name = "app"\nconsistency = "{consistency}"\n', 1))
    path = work / f"sluice-{name}.toml"
    path.write_text(config)
    binary = binary or str(ROOT / "target/release/sluice")
    proc = subprocess.Popen([binary, "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"),
                            env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"})
    load.wait_port(port)
    time.sleep(2)  # the monitor's first checks place the writer and the replicas
    return proc


def query(sock, sql):
    """The first row of a result as text values, or None for an OK."""
    scale.write_packet(sock, 0, b"\x03" + sql.encode())
    _, first = scale.read_packet(sock)
    if first[0] == 0xFF:
        raise RuntimeError(first[9:].decode(errors="replace"))
    if first[0] == 0x00:
        return None
    columns = first[0]
    for _ in range(columns + 1):
        scale.read_packet(sock)
    row = None
    while True:
        _, p = scale.read_packet(sock)
        if p[0] == 0xFE and len(p) < 9:
            return row
        if row is None:
            row, at = [], 0
            while at < len(p):
                n = p[at]
                row.append(p[at + 1:at + 1 + n].decode())
                at += 1 + n


SESSION_TRACK = 1 << 23
# (label, consistency, client capabilities beyond the basic ones, row)
RUNS = [("session, tracking client", "session", SESSION_TRACK, 1),
        ("session, plain client", "session", 0, 4),
        ("global, tracking client", "global", SESSION_TRACK, 3),
        ("global, plain client", "global", 0, 5),
        ("none", "none", 0, 2)]


def measure(port, writes, row_id, extra_caps):
    sock = scale.login(port, extra_caps=extra_caps)
    write, after_write, alone, replicas, stale = [], [], [], 0, 0
    for i in range(1, writes + 1):
        t = time.perf_counter()
        query(sock, f"UPDATE sbtest.rw_bench SET v = {i} WHERE id = {row_id}")
        write.append(time.perf_counter() - t)
        t = time.perf_counter()
        v, served_by = query(sock, f"SELECT v, @@port FROM sbtest.rw_bench WHERE id = {row_id}")
        after_write.append(time.perf_counter() - t)
        replicas += served_by in ("13309", "13310")
        stale += v != str(i)
        t = time.perf_counter()
        query(sock, f"SELECT v, @@port FROM sbtest.rw_bench WHERE id = {row_id}")
        alone.append(time.perf_counter() - t)
    sock.close()
    return {"write": write, "after_write": after_write, "alone": alone, "replicas": replicas,
            "stale": stale}


def p99(values):
    return sorted(values)[int(len(values) * 0.99) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", metavar="BINARY", help="another build of sluice to compare")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    load.bring_up()
    load.run(["mariadb", "--no-defaults", "-h127.0.0.1", "-P13306", "-uapp", "-papp", "-e",
              "CREATE TABLE IF NOT EXISTS sbtest.rw_bench (id INT PRIMARY KEY, v INT); "
              "REPLACE INTO sbtest.rw_bench VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0)"])
    work = Path(tempfile.mkdtemp(prefix="sluice-rw-"))
    procs = {}
    plan = [(label, PORTS[consistency][0], caps, row_id) for label, consistency, caps, row_id in RUNS]
    if opts.baseline:
        plan += [("baseline build, session, tracking client", BASELINE_PORTS[0], SESSION_TRACK, 6),
                 ("baseline build, session, plain client", BASELINE_PORTS[0], 0, 7)]
    runs = {label: [] for label, *_ in plan}
    try:
        for consistency in PORTS:
            procs[consistency] = start(work, consistency)
        if opts.baseline:
            procs["baseline"] = start(work, "session", opts.baseline, "baseline")
        for _ in range(opts.rounds):
            for label, port, caps, row_id in plan:
                runs[label].append(measure(port, opts.writes, row_id, caps))
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    summary = {}
    for consistency, rounds in runs.items():
        after = [x for r in rounds for x in r["after_write"]]
        alone = [x for r in rounds for x in r["alone"]]
        write = [x for r in rounds for x in r["write"]]
        n = len(after)
        summary[consistency] = {
            "write_p50": statistics.median(write) * 1e6, "write_p99": p99(write) * 1e6,
            "p50": statistics.median(after) * 1e6, "p99": p99(after) * 1e6,
            "alone_p50": statistics.median(alone) * 1e6, "alone_p99": p99(alone) * 1e6,
            "replicas": sum(r["replicas"] for r in rounds) / n, "stale": sum(r["stale"] for r in rounds),
            "n": n,
        }
        s = summary[consistency]
        print(f"{consistency}: write p50 {s['write_p50']:.0f} µs p99 {s['write_p99']:.0f} µs | read after write p50 {s['p50']:.0f} µs p99 {s['p99']:.0f} µs | next read "
              f"p50 {s['alone_p50']:.0f} µs p99 {s['alone_p99']:.0f} µs | on replicas {s['replicas']:.1%} | "
              f"missed the write {s['stale']} of {n}")
    n0 = summary["none"]
    for label in ("session, tracking client", "session, plain client"):
        s = summary[label]
        print(f"added by read-your-writes ({label}) to the read after a write: p50 {s['p50'] - n0['p50']:.0f} µs, "
              f"p99 {s['p99'] - n0['p99']:.0f} µs")
    if not opts.no_results_file:
        write_results(summary, opts)


def write_results(summary, opts):
    heading = "# Read-your-writes"
    t, p, n = summary["session, tracking client"], summary["session, plain client"], summary["none"]
    gt, gp = summary["global, tracking client"], summary["global, plain client"]
    baseline = f" --baseline {opts.baseline}" if opts.baseline else ""
    section = [
        heading, "",
        f"`benches/consistency.py --writes {opts.writes} --rounds {opts.rounds}{baseline}` on {load.machine()}, "
        f"{time.strftime('%Y-%m-%d')}: one client updates a row and reads it back at once (autocommit, "
        "text protocol, a raw-protocol client in Python) through the demo configuration (Galera writer, "
        "two replicas), through Sluice with `consistency = \"session\"`, `\"global\"` and `\"none\"`, "
        "rounds interleaved; then the same read once more (the next read after the write). A tracking "
        "client negotiates session tracking, a plain one does not; either way the write's GTID comes in "
        "its OK packet (the proxy negotiates tracking with the writer).",
        "",
        "| run | the write p50 µs | p99 µs | read after the write p50 µs | p99 µs | the next read p50 µs | p99 µs | reads after a write served by replicas | missed the write |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary.items():
        section.append(f"| {name} | {m['write_p50']:.0f} | {m['write_p99']:.0f} | {m['p50']:.0f} | {m['p99']:.0f} | {m['alone_p50']:.0f} | "
                       f"{m['alone_p99']:.0f} | {m['replicas']:.1%} | {m['stale']} of {m['n']} |")
    section += ["", f"Read-your-writes adds {t['p50'] - n['p50']:.0f} µs at the median and "
                f"{t['p99'] - n['p99']:.0f} µs at p99 to the read right after a write (tracking client; "
                f"{p['p50'] - n['p50']:.0f} and {p['p99'] - n['p99']:.0f} µs for a plain one): the read waits "
                "for `MASTER_GTID_WAIT` on the replica (and, when the replica is behind, for it to apply "
                f"the write). The write itself: {t['write_p50'] - n['write_p50']:+.0f} µs at the median "
                f"(tracking), {p['write_p50'] - n['write_p50']:+.0f} µs (plain). The next read on the same "
                f"replica asks nothing ({t['alone_p50'] - n['alone_p50']:+.0f} µs at the median); a session "
                "that has not written pays nothing.", "",
                "With `global` (some user reads every acknowledged write) a write's answer waits for its "
                f"GTID, which is in its OK: {gt['write_p50'] - n['write_p50']:+.0f} µs (tracking) and "
                f"{gp['write_p50'] - n['write_p50']:+.0f} µs (plain) at the median on the write; a read "
                "waits on its replica only after some session wrote something that replica was not yet "
                "seen to have."]
    bt = summary.get("baseline build, session, tracking client")
    bp = summary.get("baseline build, session, plain client")
    if bt and bp:
        section += ["", "The baseline build (session consistency) read each write's GTID with `SELECT "
                    "@@last_gtid` on the writer once the client had the write's answer. Against it, in the "
                    f"same rounds, the read after a write: {t['p50']:.0f} against {bt['p50']:.0f} µs at the "
                    f"median, {t['p99']:.0f} against {bt['p99']:.0f} µs at p99 (tracking client); "
                    f"{p['p50']:.0f} against {bp['p50']:.0f} µs and {p['p99']:.0f} against {bp['p99']:.0f} µs "
                    f"(plain); the write: {t['write_p50']:.0f} against {bt['write_p50']:.0f} µs (tracking), "
                    f"{p['write_p50']:.0f} against {bp['write_p50']:.0f} µs (plain)."]
    load.replace_section(heading, section)


if __name__ == "__main__":
    main()
