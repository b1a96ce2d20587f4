#!/usr/bin/env python3
"""Reads split over the two replicas: sysbench oltp_point_select, prepared (sysbench's
default, the binary protocol) and in text, directly on the two replicas (sysbench spreads
its connections over both), through HAProxy in TCP mode balancing over the same two, and
through Sluice in its demo configuration (Galera writer, both replicas as readers; every
autocommit read goes to a replica), in interleaved rounds of one run.

It prints and writes to the "Reads split over the replicas" section of benches/RESULTS.md
the median qps, p50/p99 latency, the ratios Sluice/HAProxy and Sluice/direct, each proxy's
CPU seconds per 1,000 queries, and the share of Sluice's statements each replica executed
(from the servers' own Com_stmt_execute, or Com_select for text).

usage: benches/split.py [--time 10] [--rounds 3] [--threads 16,64] [--modes prepared,text]
                        [--baseline /path/to/other/sluice --no-results-file]
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
import load  # noqa: E402  (the load harness: cluster, sysbench, parsing)

REPLICAS = (13309, 13310)
SLUICE_PORT, ADMIN_PORT, METRICS_PORT, HAPROXY_PORT = 16053, 16054, 16055, 16056
BASELINE_PORT, BASELINE_ADMIN, BASELINE_METRICS = 16057, 16058, 16059
MODES = {"prepared": ("--db-ps-mode=auto",), "text": ("--db-ps-mode=disable",)}


def start_haproxy(work):
    config = work / "haproxy-split.cfg"
    servers = "\n".join(f"  server replica{i} 127.0.0.1:{p}" for i, p in enumerate(REPLICAS, 1))
    config.write_text(f"""
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:{HAPROXY_PORT}
  balance roundrobin
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "haproxy-split.log", "w"))
    load.wait_port(HAPROXY_PORT)
    return proc


def start_sluice(work, ports=(SLUICE_PORT, ADMIN_PORT, METRICS_PORT), binary=None, workers=None):
    """Sluice in its demo configuration on `ports` (client, admin, metrics); `binary`:
    another build; `workers`: its runtime's worker threads (default one per core)."""
    config = work / f"sluice-split-{ports[0]}.toml"
    text = load.demo_config(*ports)
    if workers:
        text = text.replace("[proxy]\n", f"[proxy]\nworker_threads = {workers}\n", 1)
    config.write_text(text)
    binary = binary or str(load.ROOT / "target/release/sluice")
    proc = subprocess.Popen([binary, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(work / f"sluice-split-{ports[0]}.log", "w"))
    load.wait_port(ports[0])
    time.sleep(2)  # the monitor's first checks place the writer and the readers
    return proc


def executed(port, mode):
    """The point selects a server ran, read directly: its Com_stmt_execute for prepared
    statements, its Com_select for text (an execute of a SELECT counts in both)."""
    name = "Com_stmt_execute" if mode == "prepared" else "Com_select"
    out = load.run(["mariadb", "-h127.0.0.1", f"-P{port}", "-uapp", "-papp", "-N", "-e",
                    f"SHOW GLOBAL STATUS LIKE '{name}'"], capture_output=True).stdout
    return int(out.split()[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="16,64")
    ap.add_argument("--modes", default="prepared,text")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another build of sluice, measured beside this one in the same rounds")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    threads = [int(t) for t in opts.threads.split(",")]
    modes = opts.modes.split(",")

    load.bring_up()
    work = Path(tempfile.mkdtemp(prefix="sluice-split-"))
    both = ",".join(str(p) for p in REPLICAS)
    targets = {"direct": both, "haproxy": HAPROXY_PORT, "sluice": SLUICE_PORT}
    procs, rows, failures = {}, [], []
    try:
        procs["haproxy"] = start_haproxy(work)
        procs["sluice"] = start_sluice(work)
        if opts.baseline:
            ports = (BASELINE_PORT, BASELINE_ADMIN, BASELINE_METRICS)
            procs["baseline"] = start_sluice(work, ports, opts.baseline)
            targets["baseline"] = BASELINE_PORT
        load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
        load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
        time.sleep(2)  # the replicas apply the tables
        for mode in modes:
            for n in threads:
                samples = {t: [] for t in targets}
                shares = []
                for _ in range(opts.rounds):
                    for target, port in targets.items():
                        proc = procs.get(target)
                        before = load.cpu_seconds(proc.pid) if proc else None
                        on_replicas = sum(executed(p, mode) for p in REPLICAS)
                        report = load.measured("oltp_point_select", port, n, opts.time,
                                               f"{mode} {n} threads {target}", failures, extra=MODES[mode])
                        result = load.parse(report)
                        if proc:
                            result["cpu_per_1k"] = (load.cpu_seconds(proc.pid) - before) / result["queries"] * 1000
                        if target == "sluice":
                            # the counters include sysbench's and the monitor's few other statements
                            shares.append((sum(executed(p, mode) for p in REPLICAS) - on_replicas) / result["queries"])
                        samples[target].append(result)
                med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in samples.items()}
                share = statistics.median(shares)
                rows.append((mode, n, med, share))
                d, h, s = med["direct"], med["haproxy"], med["sluice"]
                print(f"{mode} {n} threads: direct {d['qps']:.0f} qps, haproxy {h['qps']:.0f}, sluice {s['qps']:.0f}"
                      f" | sluice/haproxy {s['qps'] / h['qps']:.2f}, sluice/direct {s['qps'] / d['qps']:.2f}"
                      f" | CPU s/1k haproxy {h['cpu_per_1k']:.4f} sluice {s['cpu_per_1k']:.4f}"
                      f" | on the replicas {share:.1%}", flush=True)
                if "baseline" in med:
                    b = med["baseline"]
                    print(f"  baseline {b['qps']:.0f} qps, baseline/haproxy {b['qps'] / h['qps']:.2f}, "
                          f"sluice/baseline {s['qps'] / b['qps']:.2f}, CPU s/1k baseline {b['cpu_per_1k']:.4f}",
                          flush=True)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    if failures:
        print("runs that failed and were repeated:\n  " + "\n  ".join(failures))
    if not opts.no_results_file:
        write_results(rows, opts, failures)


def write_results(rows, opts, failures):
    heading = "# Reads split over the replicas"
    section = [
        heading, "",
        f"`benches/split.py --time {opts.time} --rounds {opts.rounds}` on {load.machine()}, "
        f"{time.strftime('%Y-%m-%d')}: sysbench `oltp_point_select` ({load.TABLES} tables of "
        f"{load.TABLE_SIZE:,} rows), prepared (`--db-ps-mode=auto`, sysbench's default) and in text, "
        "directly on the two replicas (sysbench's connections spread over both), through HAProxy "
        "(TCP, round robin over the same two) and through Sluice (demo configuration: reads split "
        "over both replicas); medians of the interleaved rounds. \"On the replicas\": the "
        "replicas' own `Com_stmt_execute` (text: `Com_select`) during Sluice's runs, over the "
        "statements sysbench ran (the monitor's few checks included).",
        "",
        "| mode | threads | direct qps | HAProxy qps | Sluice qps | Sluice / HAProxy | Sluice / direct | p50 ms direct | HAProxy | Sluice | p99 ms HAProxy | Sluice | CPU s / 1k queries: HAProxy | Sluice | on the replicas |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, n, med, share in rows:
        d, h, s = med["direct"], med["haproxy"], med["sluice"]
        section.append(
            f"| {mode} | {n} | {d['qps']:.0f} | {h['qps']:.0f} | {s['qps']:.0f} | {s['qps'] / h['qps']:.2f} | "
            f"{s['qps'] / d['qps']:.2f} | {d['p50']:.3f} | {h['p50']:.3f} | {s['p50']:.3f} | "
            f"{h['p99']:.3f} | {s['p99']:.3f} | {h['cpu_per_1k']:.4f} | {s['cpu_per_1k']:.4f} | {share:.1%} |")
    section += ["", "HAProxy passes bytes and keeps one server connection per client; Sluice "
                "parses, routes and counts every statement and prepares each statement once per "
                "pooled replica connection. The replicas, the proxies and sysbench share the "
                "machine's 2 cores."]
    if failures:
        section += ["", "Runs that failed and were repeated: " + "; ".join(f"`{f}`" for f in failures) + "."]
    load.replace_section(heading, section)


if __name__ == "__main__":
    main()
