#!/usr/bin/env python3
"""Thread per core against tokio's work-stealing runtime: does giving each core its own
proxy — its own reactor, sessions and backend pools, no task ever moving between threads —
cost less CPU per statement than one process whose two workers share everything?

The comparison is made with processes, which is what a thread-per-core design amounts to
on this machine: one Sluice with the default runtime (a worker per core), one Sluice with
a single worker (`proxy.worker_threads = 1`), and two single-worker Sluices on their own
ports (sysbench spreads its connections over both, as SO_REUSEPORT listeners would), each
with its own pools. HAProxy in TCP mode in the same rounds, for reference. sysbench's
point select in the split-reads setup of benches/split.py (both replicas read), on plain
and TLS client links; medians of interleaved rounds, qps and the proxies' CPU per query
(both processes' CPU for the pair).

It prints and writes to the "Thread per core" section of benches/RESULTS.md.

usage: benches/cores.py [--time 8] [--rounds 3] [--threads 16,64] [--modes prepared,text]
                        [--links plain,tls] [--no-results-file]
"""
import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, sysbench, parsing)
import split  # noqa: E402  (the split-reads setup: HAProxy over the replicas, Sluice's demo)
import tls  # noqa: E402  (sysbench's TLS client files, point selects with or without TLS)

# client, admin and metrics ports of each Sluice
SHARED = (16073, 16074, 16075)
ONE_WORKER = (16076, 16077, 16078)
PER_CORE = ((16079, 16080, 16081), (16082, 16083, 16084))


def threads_of(proc):
    return len(os.listdir(f"/proc/{proc.pid}/task"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="16,64")
    ap.add_argument("--modes", default="prepared,text")
    ap.add_argument("--links", default="plain,tls")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    threads = [int(t) for t in opts.threads.split(",")]
    modes = opts.modes.split(",")
    links = opts.links.split(",")

    load.bring_up("--bin", "sluice")
    load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
    load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
    time.sleep(2)  # the replicas apply the tables
    work = Path(tempfile.mkdtemp(prefix="sluice-cores-"))
    cwd = tls.client_dir()
    procs = {}
    try:
        procs["haproxy"] = [split.start_haproxy(work)]
        procs["shared"] = [split.start_sluice(work, SHARED)]
        procs["one_worker"] = [split.start_sluice(work, ONE_WORKER, workers=1)]
        procs["per_core"] = [split.start_sluice(work, ports, workers=1) for ports in PER_CORE]
        targets = {
            "haproxy": split.HAPROXY_PORT,
            "shared": SHARED[0],
            "one_worker": ONE_WORKER[0],
            "per_core": ",".join(str(ports[0]) for ports in PER_CORE),
        }
        print("threads per process: " + ", ".join(
            f"{name} {'+'.join(str(threads_of(p)) for p in ps)}" for name, ps in procs.items()), flush=True)
        rows = []
        for link in links:
            if link == "tls":
                del targets["haproxy"]  # it passes TLS through: the replicas' CPU, not its own
            for mode in modes:
                for n in threads:
                    samples = {t: [] for t in targets}
                    for _ in range(opts.rounds):
                        for name, port in targets.items():
                            before = sum(load.cpu_seconds(p.pid) for p in procs[name])
                            result = tls.point_selects(port, n, opts.time, mode, link == "tls", cwd)
                            spent = sum(load.cpu_seconds(p.pid) for p in procs[name]) - before
                            result["cpu_us"] = spent / result["queries"] * 1e6
                            samples[name].append(result)
                    med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                           for t, rs in samples.items()}
                    rows.append((link, mode, n, med))
                    print(f"{link} {mode} {n} threads: " + ", ".join(
                        f"{t} {m['qps']:.0f} qps {m['cpu_us']:.1f} µs/q" for t, m in med.items()), flush=True)
    finally:
        for ps in procs.values():
            for p in ps:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
    if not opts.no_results_file:
        write_results(rows, opts)


def write_results(rows, opts):
    section = [
        "# Thread per core", "",
        f"`benches/cores.py --time {opts.time} --rounds {opts.rounds} --threads {opts.threads}` "
        f"on {load.machine()}, {time.strftime('%Y-%m-%d')}: sysbench `oltp_point_select`, reads "
        "split over both replicas (Sluice's demo configuration, HAProxy round robin); medians of "
        "interleaved rounds. *shared*: one Sluice, tokio's work-stealing runtime with a worker "
        "per core; *one worker*: one Sluice on a single worker thread; *per core*: two "
        "single-worker Sluices, each with its own pools, sysbench's connections spread over both "
        "(what SO_REUSEPORT listeners and per-thread pools would do). CPU is the proxy's per "
        "query, both processes' for the pair. On TLS links HAProxy only passes TLS through, so it "
        "has no row there.", "",
        "| link | mode | threads | HAProxy qps | shared qps | one worker qps | per core qps "
        "| CPU µs/query HAProxy / shared / one worker / per core | p99 ms shared / per core |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for link, mode, n, med in rows:
        h = med.get("haproxy")
        sluices = [med["shared"], med["one_worker"], med["per_core"]]
        cpu = " / ".join([f"{h['cpu_us']:.1f}" if h else "–"] + [f"{m['cpu_us']:.1f}" for m in sluices])
        cells = [link, mode, n, f"{h['qps']:.0f}" if h else "–", *(f"{m['qps']:.0f}" for m in sluices),
                 cpu, f"{sluices[0]['p99']:.2f} / {sluices[2]['p99']:.2f}"]
        section.append("| " + " | ".join(str(c) for c in cells) + " |")
    load.replace_section("# Thread per core", section)


if __name__ == "__main__":
    main()
