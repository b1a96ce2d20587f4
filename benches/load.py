#!/usr/bin/env python3
"""The load harness: sysbench against the same MariaDB node directly, through HAProxy in
TCP mode (a plain L4 proxy) and through Sluice, in one run, so that the ratios compare
like with like on a noisy machine.

For each workload and thread count it runs the three targets one after the other, several
rounds, and reports the median qps and latency percentiles of the rounds, the ratios
Sluice/HAProxy and Sluice/direct, and each proxy's CPU seconds per 1,000 queries (from
/proc/PID/stat). Results go to stdout and to benches/RESULTS.md.

usage: benches/load.py [--time 10] [--rounds 3] [--threads 1,16,64]
                       [--workloads oltp_point_select,oltp_read_only]
"""
import argparse
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_PORT = 13306
SLUICE_PORT = 16033
HAPROXY_PORT = 16034
BASELINE_PORT = 16035
TABLES, TABLE_SIZE = 4, 10000


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def wait_port(port, limit=15.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def sysbench(workload, port, threads, seconds, command="run", extra=()):
    """`port` may be a list, "13309,13310": sysbench spreads its connections over them."""
    hosts = ",".join("127.0.0.1" for _ in str(port).split(","))
    args = [
        "sysbench", workload,
        f"--mysql-host={hosts}", f"--mysql-port={port}",
        "--mysql-user=app", "--mysql-password=app", "--mysql-db=sbtest",
        f"--tables={TABLES}", f"--table-size={TABLE_SIZE}",
        f"--threads={threads}", f"--time={seconds}",
        "--histogram=on", "--mysql-ignore-errors=none",
        *extra, command,
    ]
    return run(args, capture_output=True).stdout


def measured(workload, port, threads, seconds, label, failures, extra=()):
    """A sysbench run's report; a run that fails (the machine or the cluster hiccuped) is
    noted in `failures` and repeated once, a second failure ends the harness."""
    for attempt in (1, 2):
        try:
            return sysbench(workload, port, threads, seconds, extra=extra)
        except subprocess.CalledProcessError as e:
            tail = " / ".join(((e.stdout or "") + (e.stderr or "")).strip().splitlines()[-2:])
            failures.append(f"{label}: {tail}")
            print(f"run failed ({label}): {tail}", file=sys.stderr)
    sys.exit(f"{label} failed twice")


def parse(report):
    """qps and p50/p95/p99 latency (ms) from a sysbench report with --histogram."""
    qps = float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", report).group(1))
    queries = int(re.search(r"queries:\s+(\d+)", report).group(1))
    buckets = []
    for line in report.splitlines():
        m = re.match(r"\s+([\d.]+)\s+\|\*+\s+(\d+)$", line)
        if m:
            buckets.append((float(m.group(1)), int(m.group(2))))
    total = sum(n for _, n in buckets)

    def percentile(p):
        seen = 0
        for value, n in buckets:
            seen += n
            if seen >= total * p:
                return value
        return float("nan")

    return {"qps": qps, "queries": queries,
            "p50": percentile(0.50), "p95": percentile(0.95), "p99": percentile(0.99)}


def bring_up(*build):
    """What every harness needs first: the packages (scripts/setup.sh), the local cluster,
    and a release build (`build`: cargo's target arguments, default the whole package)."""
    run([str(ROOT / "scripts/setup.sh")])
    run([str(ROOT / "scripts/cluster.sh"), "up"], stdout=subprocess.DEVNULL)
    run(["cargo", "build", "--release", "--quiet", *build], cwd=ROOT)


def demo_config(port, admin, metrics):
    """The demo configuration (config/sluice.toml) on the given client, admin and metrics
    ports, its certificate and secret paths made absolute."""
    demo = (ROOT / "config/sluice.toml").read_text()
    return (demo.replace("127.0.0.1:6033", f"127.0.0.1:{port}")
            .replace("127.0.0.1:6032", f"127.0.0.1:{admin}")
            .replace("127.0.0.1:6070", f"127.0.0.1:{metrics}")
            .replace('"../certs/', f'"{ROOT}/certs/')
            .replace('"monitor.secret"', f'"{ROOT}/config/monitor.secret"'))


def start_sluice(work, port=SLUICE_PORT, max_connections=2000, proxy_extra="", sections="",
                 binary=None):
    """A release Sluice in front of the node; `proxy_extra` goes into [proxy], `sections`
    after it (the connection-scale script adds its own). `binary`: another build."""
    config = work / f"sluice-{port}.toml"
    config.write_text(f"""
[proxy]
listen = "127.0.0.1:{port}"
max_client_connections = 20000
{proxy_extra}
{sections}

[[servers]]
host = "127.0.0.1"
port = {NODE_PORT}
hostgroup = 10
max_connections = {max_connections}

[[users]]
name = "app"
password = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
default_hostgroup = 10
default_schema = "sbtest"
""")
    proc = subprocess.Popen([binary or str(ROOT / "target/release/sluice"), "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"sluice-{port}.log", "w"),
                            env={**os.environ, "RUST_LOG": "warn"})
    wait_port(port)
    return proc


def start_haproxy(work):
    config = work / "haproxy.cfg"
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
  server node1 127.0.0.1:{NODE_PORT}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "haproxy.log", "w"))
    wait_port(HAPROXY_PORT)
    return proc


def machine():
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,16,64")
    ap.add_argument("--workloads", default="oltp_point_select,oltp_read_only")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another build of sluice, measured beside this one in the same rounds")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    threads = [int(t) for t in opts.threads.split(",")]
    workloads = opts.workloads.split(",")

    bring_up()

    work = Path(tempfile.mkdtemp(prefix="sluice-load-"))
    procs = {}
    targets = {"direct": NODE_PORT, "haproxy": HAPROXY_PORT, "sluice": SLUICE_PORT}
    try:
        procs["sluice"] = start_sluice(work)
        procs["haproxy"] = start_haproxy(work)
        if opts.baseline:
            procs["baseline"] = start_sluice(work, port=BASELINE_PORT, binary=opts.baseline)
            targets["baseline"] = BASELINE_PORT
        sysbench("oltp_read_only", NODE_PORT, 1, 1, "cleanup")
        sysbench("oltp_read_only", NODE_PORT, 4, 1, "prepare")
        rows = []
        failures = []
        for workload in workloads:
            for n in threads:
                samples = {t: [] for t in targets}
                for _ in range(opts.rounds):
                    for target, port in targets.items():
                        proc = procs.get(target)
                        before = cpu_seconds(proc.pid) if proc else None
                        result = parse(measured(workload, port, n, opts.time, f"{workload} {n} threads {target}", failures))
                        if proc:
                            used = cpu_seconds(proc.pid) - before
                            result["cpu_per_1k"] = used / result["queries"] * 1000
                        samples[target].append(result)
                med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in samples.items()}
                rows.append((workload, n, med))
                report_row(workload, n, med)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    if failures:
        print("runs that failed and were repeated:\n  " + "\n  ".join(failures))
    if not opts.no_results_file:
        write_results(rows, opts, failures)


def report_row(workload, n, med):
    s, h, d = med["sluice"], med["haproxy"], med["direct"]
    if "baseline" in med:
        b = med["baseline"]
        print(f"{workload} {n} threads: baseline {b['qps']:.0f} qps, baseline/haproxy "
              f"{b['qps'] / h['qps']:.2f}, CPU s/1k queries {b['cpu_per_1k']:.4f}", flush=True)
    print(f"{workload} {n} threads: direct {d['qps']:.0f} qps, haproxy {h['qps']:.0f}, sluice {s['qps']:.0f}"
          f" | sluice/haproxy {s['qps'] / h['qps']:.2f}, sluice/direct {s['qps'] / d['qps']:.2f}"
          f" | p50 ms direct {d['p50']:.3f} haproxy {h['p50']:.3f} sluice {s['p50']:.3f}"
          f" | CPU s/1k queries haproxy {h['cpu_per_1k']:.4f} sluice {s['cpu_per_1k']:.4f}", flush=True)


def replace_section(heading, section):
    """Writes `section` (its lines, the first being `heading`) into benches/RESULTS.md in
    place of the section of that heading, which moves to the end; the others stay."""
    results = ROOT / "benches/RESULTS.md"
    text = results.read_text() if results.exists() else ""
    kept = [s for s in re.split(r"(?m)^(?=# )", text) if s.strip() and s.splitlines()[0] != heading]
    results.write_text("".join(s.rstrip("\n") + "\n\n" for s in kept) + "\n".join(section) + "\n")
    print(f"wrote {results}")


def write_results(rows, opts, failures):
    lines = [
        "# Load harness results",
        "",
        f"`benches/load.py --time {opts.time} --rounds {opts.rounds}` on {machine()}, "
        f"{time.strftime('%Y-%m-%d')}. The node, HAProxy (TCP mode), Sluice and sysbench share "
        "the machine; each figure is the median of the rounds, taken in one run.",
        "",
        "| workload | threads | target | qps | p50 ms | p95 ms | p99 ms | proxy CPU s / 1k queries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workload, n, med in rows:
        for target in ("direct", "haproxy", "sluice", "baseline"):
            if target not in med:
                continue
            m = med[target]
            cpu = f"{m['cpu_per_1k']:.4f}" if "cpu_per_1k" in m else "–"
            lines.append(f"| {workload} | {n} | {target} | {m['qps']:.0f} | {m['p50']:.3f} | "
                         f"{m['p95']:.3f} | {m['p99']:.3f} | {cpu} |")
    lines += ["", "| workload | threads | sluice / haproxy | sluice / direct | p50 added over direct: haproxy | sluice |",
              "|---|---|---|---|---|---|"]
    for workload, n, med in rows:
        s, h, d = med["sluice"], med["haproxy"], med["direct"]
        lines.append(f"| {workload} | {n} | {s['qps'] / h['qps']:.2f} | {s['qps'] / d['qps']:.2f} | "
                     f"{(h['p50'] - d['p50']) * 1000:.0f} µs | {(s['p50'] - d['p50']) * 1000:.0f} µs |")
    lines += ["", "Latencies are per sysbench event: one query for oltp_point_select, one transaction "
              "(BEGIN, 14 reads, COMMIT) for oltp_read_only. They come from sysbench's latency "
              "histogram, whose buckets are about 2 % wide."]
    if failures:
        lines += ["", "Runs that failed and were repeated: " + "; ".join(f"`{f}`" for f in failures) + "."]
    results = ROOT / "benches/RESULTS.md"
    # other sections of the file (criterion results) stay as they are
    others = []
    if results.exists():
        sections = re.split(r"(?m)^(?=# )", results.read_text())
        others = [s for s in sections if s.startswith("# ") and not s.startswith("# Load harness")]
    results.write_text("\n".join(lines) + "\n" + "".join("\n" + s.rstrip("\n") + "\n" for s in others))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
