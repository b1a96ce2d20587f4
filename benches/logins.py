#!/usr/bin/env python3
"""Logins per second by password method, in interleaved rounds of one run.

Three Sluice processes in the demo configuration differ only in how `app` proves its
password: `mysql_native_password` (the demo's hash), `caching_sha2_password` (a verifier
from `sluice verifier`; the first login proves the password in full over TLS, every later
one takes the fast path) and MariaDB's `ed25519` (its public key, the backend password from
a file). Clients that connect with TLS, log in, run `SELECT 1` and disconnect
(`benches/churn.lua`, sysbench's libmariadb speaking each plugin), as fast as they can:
logins per second and Sluice's CPU per login, medians of the rounds.

Writes the "Logins by password method" section of benches/RESULTS.md.

usage: benches/logins.py [--time 10] [--rounds 3] [--clients 16] [--no-results-file]
"""
import argparse
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, sysbench, parsing)
import tls  # noqa: E402  (sysbench's TLS files, the churn script)

ROOT = load.ROOT
NATIVE_APP = 'password = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"'
METHODS = {  # name: (client, admin, metrics ports)
    "mysql_native_password": (16133, 16132, 16170),
    "caching_sha2_password": (16233, 16232, 16270),
    "ed25519": (16333, 16332, 16370),
}


def verifier(method, password):
    out = subprocess.run([str(ROOT / "target/release/sluice"), "verifier", "--method", method],
                         input=password + "\n", capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start(work, method, ports):
    text = load.demo_config(*ports)
    assert NATIVE_APP in text
    if method == "caching_sha2_password":
        text = text.replace(NATIVE_APP, f"password = '{verifier(method, 'app')}'")
    elif method == "ed25519":
        secret = work / "app.backend"
        secret.write_text("app\n")
        secret.chmod(0o600)
        text = text.replace(NATIVE_APP, f'password = "{verifier(method, "app")}"\n'
                                        f'backend_password_file = "{secret}"')
    config = work / f"sluice-{method}.toml"
    config.write_text(text)
    proc = subprocess.Popen([str(ROOT / "target/release/sluice"), "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{method}.log", "w"))
    load.wait_port(ports[0])
    time.sleep(2)
    return proc


def churn(port, clients, seconds, cwd):
    out = tls.sysbench([str(tls.CHURN_SCRIPT), "--mysql-host=127.0.0.1", f"--mysql-port={port}",
                        "--mysql-user=app", "--mysql-password=app", "--mysql-db=sbtest",
                        f"--threads={clients}", f"--time={seconds}", "--mysql-ssl=on",
                        "--mysql-ignore-errors=none", "run"], cwd)
    return int(re.search(r"total number of events:\s+(\d+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()

    load.bring_up("--bin", "sluice")
    work = Path(tempfile.mkdtemp(prefix="sluice-logins-"))
    cwd = tls.client_dir()
    procs = {}
    try:
        for method, ports in METHODS.items():
            procs[method] = start(work, method, ports)
        samples = {m: [] for m in METHODS}
        for _ in range(opts.rounds):
            for method, ports in METHODS.items():
                proc = procs[method]
                before = load.cpu_seconds(proc.pid)
                logins = churn(ports[0], opts.clients, opts.time, cwd)
                cpu = load.cpu_seconds(proc.pid) - before
                samples[method].append({"logins": logins / opts.time,
                                        "cpu_us": cpu / logins * 1e6})
        med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for m, rs in samples.items()}
        for method, m in med.items():
            print(f"{method}: {m['logins']:.0f} logins/s, {m['cpu_us']:.0f} µs CPU/login",
                  flush=True)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    if not opts.no_results_file:
        write_results(med, opts)


def write_results(med, opts):
    when = time.strftime("%Y-%m-%d")
    native = med["mysql_native_password"]
    section = [
        "# Logins by password method",
        "",
        f"`benches/logins.py --time {opts.time} --rounds {opts.rounds} --clients {opts.clients}` "
        f"on the same machine, {when}: {opts.clients} sysbench clients connect with TLS, log in "
        "as `app`, run `SELECT 1` and disconnect (`benches/churn.lua`), against three Sluice "
        "processes that differ only in `app`'s verifier; medians of interleaved rounds. "
        "The caching_sha2_password figures are the fast path: the first login proved the "
        "password in full, every later one is checked from memory.",
        "",
        "| method | logins/s | vs native | Sluice CPU µs/login |",
        "|---|---|---|---|",
    ]
    for method, m in med.items():
        section.append(f"| {method} | {m['logins']:.0f} | {m['logins'] / native['logins']:.2f} | "
                       f"{m['cpu_us']:.0f} |")
    load.replace_section("# Logins by password method", section)


if __name__ == "__main__":
    main()
