#!/usr/bin/env python3
"""TLS on the client link, as the reference deployment runs it, in interleaved rounds of one
run:

1. Reads split over the two replicas (sysbench `oltp_point_select`, prepared and text),
   every client on TLS (`--mysql-ssl=on`): directly on the two replicas (the servers do
   the TLS), through HAProxy in TCP mode balancing over them (it passes the TLS through:
   the servers do the TLS), through Sluice terminating TLS with plain backend connections,
   and through Sluice terminating TLS with TLS backend connections; and Sluice without TLS
   for the cost of TLS itself. Median qps, p50/p99 and each proxy's CPU per query.
2. Login churn: clients that connect with TLS, log in, run `SELECT 1` and disconnect, as
   fast as they can (`examples/churn.rs`: full handshakes, and resumed ones with the
   tickets the server gave), straight to a replica and through Sluice: logins per second
   and Sluice's CPU per login. sysbench (`benches/churn.lua`) is not the client here:
   libmariadb builds an OpenSSL context per connection and spends about 2 ms of CPU per
   login, so on this machine its runs measured the client.

`--baseline BINARY` runs another build of Sluice beside this one (TLS and plain, and in
the churn), in the same rounds, so that a change is judged against the build before it.

Writes the "TLS on the client link" and "Login churn" sections of benches/RESULTS.md.

usage: benches/tls.py [--time 10] [--rounds 3] [--threads 16,64] [--churn-clients 16,64]
                      [--modes prepared,text] [--baseline BINARY] [--only-churn]
                      [--no-results-file]
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, sysbench, parsing)
import split  # noqa: E402  (the split-reads setup: HAProxy over the replicas, Sluice's demo)

ROOT = load.ROOT
REPLICAS = ",".join(str(p) for p in split.REPLICAS)
BACKEND_TLS_PORTS = (16063, 16064, 16065)
CHURN_SCRIPT = ROOT / "benches/churn.lua"


def client_dir():
    """sysbench 1.0 reads its TLS files from the working directory, by fixed names."""
    d = Path(tempfile.mkdtemp(prefix="sluice-tls-client-"))
    shutil.copy(ROOT / "certs/ca.pem", d / "cacert.pem")
    shutil.copy(ROOT / "certs/client.pem", d / "client-cert.pem")
    shutil.copy(ROOT / "certs/client-key.pem", d / "client-key.pem")
    return d


def start_sluice_backend_tls(work):
    """The demo configuration with every server on TLS."""
    config = work / "sluice-backend-tls.toml"
    text = load.demo_config(*BACKEND_TLS_PORTS)
    for port in (13306, 13307, 13308, 13309, 13310):
        text = text.replace(f"port = {port}\n", f"port = {port}\ntls = true\n")
    assert text.count("tls = true") >= 5, "every server on TLS"
    config.write_text(text)
    proc = subprocess.Popen(
        [str(ROOT / "target/release/sluice"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=open(work / "sluice-backend-tls.log", "w"))
    load.wait_port(BACKEND_TLS_PORTS[0])
    time.sleep(2)
    return proc


def sysbench(args, cwd):
    return load.run(["sysbench", *args], capture_output=True, cwd=cwd).stdout


def point_selects(port, threads, seconds, mode, tls, cwd):
    hosts = ",".join("127.0.0.1" for _ in str(port).split(","))
    return load.parse(sysbench([
        "oltp_point_select", f"--mysql-host={hosts}", f"--mysql-port={port}",
        "--mysql-user=app", "--mysql-password=app", "--mysql-db=sbtest",
        f"--tables={load.TABLES}", f"--table-size={load.TABLE_SIZE}",
        f"--threads={threads}", f"--time={seconds}", "--histogram=on",
        "--mysql-ignore-errors=none", *split.MODES[mode],
        f"--mysql-ssl={'on' if tls else 'off'}", "run"], cwd))


class Replica:
    """The replica the direct churn runs against, for its CPU: the pid scripts/cluster.sh
    recorded when it started it."""
    def __init__(self):
        work = Path(os.environ.get("SLUICE_CLUSTER_DIR", "/tmp/sluice-cluster"))
        self.pid = int((work / "replica1/started.pid").read_text().split()[0])


def churn(port, clients, seconds, resume=False):
    """Logins per second of `clients` connecting with TLS, one `SELECT 1` each, with full
    handshakes or resuming the sessions the server gave them."""
    done = subprocess.run([str(ROOT / "target/release/examples/churn"), "--port", str(port),
                           "--clients", str(clients), "--time", str(seconds),
                           "--ca", str(ROOT / "certs/ca.pem"), "--resume", str(int(resume))],
                          capture_output=True, text=True)
    fields = dict(kv.split("=", 1) for kv in done.stdout.split())
    if "logins" not in fields or done.returncode != 0:
        raise RuntimeError(f"churn against {port} failed: {done.stderr.strip()[-300:]}")
    return int(fields["logins"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="16,64")
    ap.add_argument("--churn-clients", default="16,64")
    ap.add_argument("--modes", default="prepared,text")
    ap.add_argument("--baseline", metavar="BINARY", help="another Sluice build to run beside this one")
    ap.add_argument("--only-churn", action="store_true", help="only the login churn")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    threads = [int(t) for t in opts.threads.split(",")]
    churners = [int(t) for t in opts.churn_clients.split(",")]
    modes = opts.modes.split(",")

    load.bring_up("--bin", "sluice", "--example", "churn")
    load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
    load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
    time.sleep(2)  # the replicas apply the tables
    work = Path(tempfile.mkdtemp(prefix="sluice-tls-"))
    cwd = client_dir()
    procs = {}
    try:
        procs["sluice"] = split.start_sluice(work)
        procs["haproxy"] = split.start_haproxy(work)
        procs["sluice_backend_tls"] = start_sluice_backend_tls(work)
        targets = {  # name: (port, client TLS, process whose CPU counts)
            "direct": (REPLICAS, True, None),
            "haproxy": (split.HAPROXY_PORT, True, "haproxy"),
            "sluice": (split.SLUICE_PORT, True, "sluice"),
            "sluice_backend_tls": (BACKEND_TLS_PORTS[0], True, "sluice_backend_tls"),
            "sluice_plain": (split.SLUICE_PORT, False, "sluice"),
        }
        if opts.baseline:
            procs["baseline"] = split.start_sluice(
                work, (split.BASELINE_PORT, split.BASELINE_ADMIN, split.BASELINE_METRICS), opts.baseline)
            targets["baseline"] = (split.BASELINE_PORT, True, "baseline")
            targets["baseline_plain"] = (split.BASELINE_PORT, False, "baseline")
        rows = []
        for mode in ([] if opts.only_churn else modes):
            for n in threads:
                samples = {t: [] for t in targets}
                for _ in range(opts.rounds):
                    for name, (port, tls, owner) in targets.items():
                        proc = procs.get(owner)
                        before = load.cpu_seconds(proc.pid) if proc else None
                        result = point_selects(port, n, opts.time, mode, tls, cwd)
                        if proc:
                            result["cpu_us"] = ((load.cpu_seconds(proc.pid) - before)
                                                / result["queries"] * 1e6)
                        samples[name].append(result)
                med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                       for t, rs in samples.items()}
                rows.append((mode, n, med))
                s, h = med["sluice"], med["haproxy"]
                print(f"{mode} {n} threads: " + ", ".join(f"{t} {m['qps']:.0f}" for t, m in med.items())
                      + f" | sluice/haproxy {s['qps'] / h['qps']:.2f}, CPU µs/query sluice "
                      f"{s['cpu_us']:.1f} haproxy {h['cpu_us']:.1f}", flush=True)
        churn_rows = []
        procs_cpu = {**procs, "replica": Replica()}
        churn_targets = {  # name: (port, resume, process whose CPU counts)
            "direct": (split.REPLICAS[0], False, "replica"),
            "sluice": (split.SLUICE_PORT, False, "sluice"),
            "sluice_resumed": (split.SLUICE_PORT, True, "sluice"),
        }
        if opts.baseline:
            churn_targets["baseline"] = (split.BASELINE_PORT, False, "baseline")
            churn_targets["baseline_resumed"] = (split.BASELINE_PORT, True, "baseline")
        for n in churners:
            samples = {t: [] for t in churn_targets}
            for _ in range(opts.rounds):
                for name, (port, resume, owner) in churn_targets.items():
                    proc = procs_cpu.get(owner)
                    before = load.cpu_seconds(proc.pid) if proc else 0
                    logins = churn(port, n, opts.time, resume)
                    sample = {"logins": logins}
                    if proc:
                        sample["cpu_us"] = (load.cpu_seconds(proc.pid) - before) / logins * 1e6
                    samples[name].append(sample)
            med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                   for t, rs in samples.items()}
            churn_rows.append((n, med))
            print(f"churn {n} clients: " + ", ".join(
                f"{t} {m['logins'] / opts.time:.0f}/s" + (f" ({m['cpu_us']:.0f} µs/login)" if "cpu_us" in m else "")
                for t, m in med.items()), flush=True)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    if not opts.no_results_file:
        write_results(rows, churn_rows, opts)


def write_results(rows, churn_rows, opts):
    when = time.strftime("%Y-%m-%d")
    section = [
        "# TLS on the client link",
        "",
        f"`benches/tls.py --time {opts.time} --rounds {opts.rounds} --threads {opts.threads}"
        f"{' --baseline <previous build>' if opts.baseline else ''}` "
        f"on the same machine, {when}: sysbench `oltp_point_select` with `--mysql-ssl=on`, "
        "reads split over both replicas; medians of interleaved rounds. HAProxy (TCP mode, "
        "round robin) passes the clients' TLS through to the replicas, which do the crypto; "
        "Sluice terminates it (its demo configuration), with plain or TLS backend "
        "connections; `sluice plain` is Sluice without TLS on the client link.",
        "",
        "| mode | threads | direct qps | HAProxy qps | Sluice qps | Sluice, backend TLS qps | Sluice plain qps "
        "| Sluice/HAProxy | Sluice TLS/plain | p50 ms HAProxy / Sluice | p99 ms HAProxy / Sluice "
        "| CPU µs/query HAProxy / Sluice / Sluice backend TLS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, n, m in rows:
        d, h, s, b, p = (m[k] for k in ("direct", "haproxy", "sluice", "sluice_backend_tls",
                                         "sluice_plain"))
        section.append(
            f"| {mode} | {n} | {d['qps']:.0f} | {h['qps']:.0f} | {s['qps']:.0f} | {b['qps']:.0f} | "
            f"{p['qps']:.0f} | {s['qps'] / h['qps']:.2f} | {s['qps'] / p['qps']:.2f} | "
            f"{h['p50']:.2f} / {s['p50']:.2f} | {h['p99']:.2f} / {s['p99']:.2f} | "
            f"{h['cpu_us']:.1f} / {s['cpu_us']:.1f} / {b['cpu_us']:.1f} |")
    if opts.baseline:
        section += [
            "",
            "Against the build before this work, in the same rounds (plain: no TLS on the client "
            "link; CPU is the proxy's per query):",
            "",
            "| mode | threads | qps TLS: baseline / Sluice | qps plain: baseline / Sluice "
            "| CPU µs/query TLS: baseline / Sluice | CPU µs/query plain: baseline / Sluice |",
            "|---|---|---|---|---|---|",
        ]
        for mode, n, m in rows:
            s, p, bs, bp = (m[k] for k in ("sluice", "sluice_plain", "baseline", "baseline_plain"))
            section.append(
                f"| {mode} | {n} | {bs['qps']:.0f} / {s['qps']:.0f} | {bp['qps']:.0f} / {p['qps']:.0f} | "
                f"{bs['cpu_us']:.1f} / {s['cpu_us']:.1f} | {bp['cpu_us']:.1f} / {p['cpu_us']:.1f} |")
    if rows:
        load.replace_section("# TLS on the client link", section)
    churn = [
        "# Login churn",
        "",
        (f"`benches/tls.py --only-churn --time {opts.time} --rounds {opts.rounds}"
         f"{' --baseline <previous build>' if opts.baseline else ''}` on the same machine"
         if opts.only_churn else "`benches/tls.py` (same run)")
        + f", {when}: clients that connect with TLS, log in, run "
        f"`SELECT 1` and disconnect (`examples/churn.rs`, rustls, one thread) for {opts.time} s, "
        "straight to a replica and through Sluice (which logs them in itself and serves them "
        "from its pool); full handshakes, and resumed ones (the client keeps the ticket the "
        "server gave it); medians of the rounds. CPU is per login: the replica's own "
        "(mariadbd) when the clients log in there, the proxy's through Sluice.",
        "",
        "| clients | replica logins/s | replica CPU µs/login | Sluice logins/s | Sluice/replica | Sluice CPU µs/login "
        "| Sluice resumed logins/s | resumed CPU µs/login | baseline logins/s full / resumed "
        "| baseline CPU µs/login full / resumed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, m in churn_rows:
        rate = {t: v["logins"] / opts.time for t, v in m.items()}
        d, s, r = rate["direct"], rate["sluice"], rate["sluice_resumed"]
        base = "– | –"
        if "baseline" in m:
            base = (f"{rate['baseline']:.0f} / {rate['baseline_resumed']:.0f} | "
                    f"{m['baseline']['cpu_us']:.0f} / {m['baseline_resumed']['cpu_us']:.0f}")
        churn.append(f"| {n} | {d:.0f} | {m['direct']['cpu_us']:.0f} | {s:.0f} | {s / d:.2f} | "
                     f"{m['sluice']['cpu_us']:.0f} | {r:.0f} | "
                     f"{m['sluice_resumed']['cpu_us']:.0f} | {base} |")
    load.replace_section("# Login churn", churn)


if __name__ == "__main__":
    main()
