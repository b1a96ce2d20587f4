#!/usr/bin/env python3
"""Two builds of Sluice that differ in their allocator, side by side in interleaved rounds:
the release build (jemalloc, the global allocator) and `--baseline BINARY` (the same code
built with the system's malloc: comment out `#[global_allocator]` in src/main.rs and
build). What a proxy asks of its allocator, each measured per build:

The release build turns jemalloc's background threads on at start; `--jemalloc-conf`
runs it a third time with another jemalloc configuration.

1. Throughput with many threads: point selects (text protocol, multiplexed) from 64 and
   from 2,000 clients (`examples/pointload.rs`) onto a writer capped at 64 backend
   connections; qps and the proxy's CPU per query.
2. Memory held by idle sessions: 10,000 logged-in plain connections; resident memory per
   connection.
3. Fragmentation after churn: the same 10,000 connections closed, then 2,000 clients
   running big reads (1,000-row ranges) for the run's time and gone; the resident memory
   left, against the resident memory before anything connected.

Prints a table and writes the "Allocator" section of benches/RESULTS.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402
import scale  # noqa: E402

ROOT = load.ROOT


def start(work, binary, port, admin_port):
    """A Sluice of `binary` on `port`, configured as the connection-scale runs are."""
    return load.start_sluice(work, port, scale.CAP, proxy_extra="idle_timeout_ms = 3600000",
                             binary=binary, sections=f"""
[pool]
wait_timeout_ms = 10000

[admin]
listen = "127.0.0.1:{admin_port}"
users = [{{ name = "admin", password = "*4ACFE3202A5FF5CF467898FC58AAB1D615029441" }}]
""")


def pointload(port, clients, seconds, range_rows=0):
    """qps of `clients` point selects (or `range_rows`-row range reads) through `port`."""
    args = [str(ROOT / "target/release/examples/pointload"), "--port", str(port),
            "--clients", str(clients), "--time", str(seconds),
            "--tables", str(load.TABLES), "--table-size", str(load.TABLE_SIZE)]
    if range_rows:
        args += ["--range", str(range_rows)]
    done = subprocess.run(args, capture_output=True, text=True)
    fields = dict(kv.split("=", 1) for kv in done.stdout.split())
    return float(fields.get("qps", 0.0))


def held_idle(port, count):
    held = [scale.login(port) for _ in range(count)]
    time.sleep(1)
    return held


def one_round(binary, label, opts, work, port, admin_port, conf=None):
    if conf:
        os.environ["_RJEM_MALLOC_CONF"] = conf
    try:
        proc = start(work, binary, port, admin_port)
    finally:
        os.environ.pop("_RJEM_MALLOC_CONF", None)
    try:
        scale.login(port).close()
        time.sleep(1)
        fresh = scale.rss_kib(proc.pid)
        cpu0 = load.cpu_seconds(proc.pid)
        few = pointload(port, scale.CAP, opts.time)
        cpu1 = load.cpu_seconds(proc.pid)
        many = pointload(port, opts.clients, opts.time)
        cpu2 = load.cpu_seconds(proc.pid)
        before_idle = scale.rss_kib(proc.pid)
        held = held_idle(port, opts.idle)
        idle_kib = (scale.rss_kib(proc.pid) - before_idle) / opts.idle
        for s in held:
            s.close()
        pointload(port, opts.clients, opts.time, range_rows=1000)
        time.sleep(2)
        left = scale.rss_kib(proc.pid)
        time.sleep(opts.settle)
        settled = scale.rss_kib(proc.pid)
        return {
            "few": few, "many": many,
            "cpu_few_us": (cpu1 - cpu0) / (few * opts.time) * 1e6 if few else float("nan"),
            "cpu_many_us": (cpu2 - cpu1) / (many * opts.time) * 1e6 if many else float("nan"),
            "idle_kib": idle_kib, "fresh_kib": fresh, "left_kib": left, "settled_kib": settled,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        print(f"{label} done", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="BINARY", required=True,
                    help="the same code built with the system allocator")
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=int, default=15,
                    help="seconds after the churn before the resident memory is read again")
    ap.add_argument("--jemalloc-conf", metavar="CONF",
                    help="also run the release build with this jemalloc configuration "
                         "(_RJEM_MALLOC_CONF), e.g. background_thread:true")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()

    load.bring_up("--bin", "sluice", "--example", "pointload")
    load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
    load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
    work = Path(tempfile.mkdtemp(prefix="sluice-allocator-"))
    release = str(ROOT / "target/release/sluice")
    builds = {"release (jemalloc)": (release, None), "system malloc": (opts.baseline, None)}
    if opts.jemalloc_conf:
        builds[f"jemalloc {opts.jemalloc_conf}"] = (release, opts.jemalloc_conf)
    runs = {name: [] for name in builds}
    for r in range(opts.rounds):
        for name, (binary, conf) in builds.items():
            runs[name].append(one_round(binary, f"round {r + 1} {name}", opts, work,
                                        scale.SLUICE_PORT, scale.ADMIN_PORT, conf))
            print(runs[name][-1], flush=True)
    med = {name: {k: statistics.median(run[k] for run in rs) for k in rs[0]}
           for name, rs in runs.items()}
    rows = []
    for name, m in med.items():
        rows.append(f"| {name} | {m['few']:.0f} | {m['cpu_few_us']:.1f} | {m['many']:.0f} | "
                    f"{m['cpu_many_us']:.1f} | {m['idle_kib']:.1f} | {m['fresh_kib']:,.0f} → "
                    f"{m['left_kib']:,.0f} → {m['settled_kib']:,.0f} |")
    je, sy = med["release (jemalloc)"], med["system malloc"]
    ratios = (f"jemalloc / system malloc: qps {je['few'] / sy['few']:.2f} ({scale.CAP} clients), "
              f"{je['many'] / sy['many']:.2f} ({opts.clients}); CPU per query "
              f"{je['cpu_few_us'] / sy['cpu_few_us']:.2f}, {je['cpu_many_us'] / sy['cpu_many_us']:.2f}; "
              f"idle KiB per connection {je['idle_kib'] / sy['idle_kib']:.2f}; "
              f"resident after churn {je['left_kib'] / sy['left_kib']:.2f}, "
              f"{opts.settle} s later {je['settled_kib'] / sy['settled_kib']:.2f}")
    header = ["| allocator | qps, 64 clients | proxy CPU µs/query | qps, "
              f"{opts.clients} clients | proxy CPU µs/query | idle KiB/connection | "
              "RSS KiB fresh → after churn → settled |", "|---|---|---|---|---|---|---|"]
    print("\n".join(header + rows))
    print(ratios)
    if opts.no_results_file:
        return
    load.replace_section("# Allocator", [
        "# Allocator",
        "",
        f"`benches/allocator.py --baseline <system-malloc build> --time {opts.time} --rounds "
        f"{opts.rounds}` on the same machine, {time.strftime('%Y-%m-%d')}: the release build "
        "(jemalloc as the global allocator) against the same code built with the system's "
        "malloc, in interleaved rounds, medians. Point selects over the text protocol from "
        f"`examples/pointload.rs`, the writer capped at {scale.CAP} backend connections; "
        f"{opts.idle:,} idle plain sessions; churn: those sessions closed, then "
        f"{opts.clients} clients reading 1,000-row ranges for {opts.time} s.",
        "",
        *header,
        *rows,
        "",
        ratios + ".",
    ])


if __name__ == "__main__":
    main()
