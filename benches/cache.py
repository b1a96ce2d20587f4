#!/usr/bin/env python3
"""The query cache on the fast path: sysbench oltp_point_select (text, or with --prepared
sysbench's prepared statements: executes are cached by statement, parameter types and
values) directly on the node, through HAProxy (TCP), through Sluice without a cache rule,
and through a second Sluice whose one rule caches every point select, in the same interleaved
rounds. The cached Sluice is warmed first (every row read once), so its hit rate is ~100 %;
the run reports it from the proxy's own counters.

Results go to stdout and to the "Query cache" (or "Query cache, prepared") section of
benches/RESULTS.md.

usage: benches/cache.py [--time 10] [--rounds 3] [--threads 1,16,64] [--prepared]
"""
import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, sysbench, parsing)

ROOT = load.ROOT
PLAIN_PORT, CACHED_PORT, METRICS_PORT = 16043, 16044, 16045
TEXT = ("--db-ps-mode=disable",)
PREPARED = ("--db-ps-mode=auto",)
RULE = """
[[query_rules]]
rule_id = 1
match_digest = "^SELECT c FROM sbtest[0-9]+ WHERE id = \\\\?$"
cache_ttl = 3600000
"""


def lookups():
    """(hits, misses) from the cached Sluice's /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
    value = lambda result: float(re.search(
        rf'^sluice_query_cache_lookups_total{{result="{result}"}} (\S+)$', body, re.M).group(1))
    return value("hit"), value("miss")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,16,64")
    ap.add_argument("--prepared", action="store_true",
                    help="sysbench's prepared statements (the binary protocol) instead of text")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    threads = [int(t) for t in opts.threads.split(",")]
    mode = PREPARED if opts.prepared else TEXT

    load.bring_up()
    work = Path(tempfile.mkdtemp(prefix="sluice-cache-"))
    procs = {}
    targets = {"direct": load.NODE_PORT, "haproxy": load.HAPROXY_PORT, "sluice": PLAIN_PORT,
               "sluice_cached": CACHED_PORT}
    rows, failures = [], []
    try:
        procs["haproxy"] = load.start_haproxy(work)
        procs["sluice"] = load.start_sluice(work, PLAIN_PORT)
        procs["sluice_cached"] = load.start_sluice(
            work, CACHED_PORT, sections=f'[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\n' + RULE)
        load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
        load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
        # warm-up: every row read once through the cached proxy
        warm = ["sysbench", "oltp_point_select", "--mysql-host=127.0.0.1", f"--mysql-port={CACHED_PORT}",
                "--mysql-user=app", "--mysql-password=app", "--mysql-db=sbtest",
                f"--tables={load.TABLES}", f"--table-size={load.TABLE_SIZE}", "--threads=4",
                "--time=0", f"--events={load.TABLES * load.TABLE_SIZE * 20}", "--rand-type=uniform", *mode, "run"]
        load.run(warm, capture_output=True)
        warm_hits, warm_misses = lookups()
        for n in threads:
            samples = {t: [] for t in targets}
            for _ in range(opts.rounds):
                for target, port in targets.items():
                    proc = procs.get(target)
                    before = load.cpu_seconds(proc.pid) if proc else None
                    report = load.measured("oltp_point_select", port, n, opts.time,
                                           f"{n} threads {target}", failures, extra=mode)
                    result = load.parse(report)
                    if proc:
                        result["cpu_per_1k"] = (load.cpu_seconds(proc.pid) - before) / result["queries"] * 1000
                    samples[target].append(result)
            med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in samples.items()}
            ratios = [c["qps"] / d["qps"] for c, d in zip(samples["sluice_cached"], samples["direct"])]
            rows.append((n, med, ratios))
            d, s, c = med["direct"], med["sluice"], med["sluice_cached"]
            print(f"{n} threads: direct {d['qps']:.0f} qps, haproxy {med['haproxy']['qps']:.0f}, sluice {s['qps']:.0f}, cached {c['qps']:.0f} | "
                  f"cached/direct {c['qps'] / d['qps']:.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}), "
                  f"cached/sluice {c['qps'] / s['qps']:.2f} | p50 ms {d['p50']:.3f} / {s['p50']:.3f} / "
                  f"{c['p50']:.3f}", flush=True)
        hits, misses = lookups()
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    measured_hits, measured_misses = hits - warm_hits, misses - warm_misses
    hit_rate = measured_hits / max(1, measured_hits + measured_misses)
    print(f"hit rate during the measured runs: {hit_rate:.4f} ({measured_hits:.0f} hits, {measured_misses:.0f} misses)")
    if failures:
        print("runs that failed and were repeated:\n  " + "\n  ".join(failures))
    if not opts.no_results_file:
        write_results(rows, opts, hit_rate, measured_misses)


def write_results(rows, opts, hit_rate, misses):
    heading = "# Query cache, prepared" if opts.prepared else "# Query cache"
    flags = " --prepared" if opts.prepared else ""
    ps_mode = "auto" if opts.prepared else "disable"
    section = [
        heading, "",
        f"`benches/cache.py --time {opts.time} --rounds {opts.rounds}{flags}` on {load.machine()}, "
        f"{time.strftime('%Y-%m-%d')}: sysbench `oltp_point_select --db-ps-mode={ps_mode}` "
        f"({load.TABLES} tables of {load.TABLE_SIZE:,} rows) directly on the node, through HAProxy "
        "(TCP), through Sluice without a cache rule, and through Sluice with one rule caching every point select "
        "(`match_digest`, `cache_ttl` of an hour), warmed first; medians of the interleaved rounds. "
        f"Hit rate of the cached Sluice during the measured runs: {hit_rate:.2%} ({misses:.0f} misses).",
        "",
        "| threads | direct qps | HAProxy qps | Sluice qps | Sluice cached qps | cached / direct (rounds) | cached / Sluice | p50 ms direct | Sluice | cached | CPU s / 1k queries: HAProxy | Sluice | cached |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, med, ratios in rows:
        d, h, s, c = med["direct"], med["haproxy"], med["sluice"], med["sluice_cached"]
        section.append(
            f"| {n} | {d['qps']:.0f} | {h['qps']:.0f} | {s['qps']:.0f} | {c['qps']:.0f} | {c['qps'] / d['qps']:.2f} "
            f"({', '.join(f'{r:.2f}' for r in ratios)}) | {c['qps'] / s['qps']:.2f} | {d['p50']:.3f} | "
            f"{s['p50']:.3f} | {c['p50']:.3f} | {h['cpu_per_1k']:.4f} | {s['cpu_per_1k']:.4f} | "
            f"{c['cpu_per_1k']:.4f} |")
    section += ["", "A hit is answered from the proxy's memory without a backend connection: the "
                "node, the proxy and sysbench share the machine's 2 cores, so what the node no "
                "longer spends on point selects goes to the proxy and the client."]
    load.replace_section(heading, section)


if __name__ == "__main__":
    main()
