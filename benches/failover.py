#!/usr/bin/env python3
"""Writer failover beside HAProxy, in one run: the writer (node1) is killed (`kill -9`) or
hung (SIGSTOP, resumed after `--hold` seconds) while three sets of clients insert rows as
fast as they can, at the same time, on the same cluster:

- 4 clients through Sluice (the demo configuration: Galera hostgroups, monitor every
  500 ms, 1 s timeout);
- 4 clients through HAProxy in TCP mode, the usual Galera writer setup: node1 active,
  node2 and node3 as backups, TCP checks every 300 ms (`fall 2 rise 3`), sessions shut
  down when a server is marked down;
- 1 client straight to node3 (never faulted): Galera's own write stall.

For each proxy it reports the stall it adds to Galera's own (the longest pause between
two acknowledged inserts from the fault on, minus the direct client's), the client
errors (statements that failed, and of them those sent after the fault; failed logins
apart), and the acknowledged inserts missing from the cluster afterwards. A client
reconnects after an error, as an application's pool would. Sluice is started anew each
round, so both proxies begin on node1.

Results go to stdout and to the "Failover" section of benches/RESULTS.md.

usage: benches/failover.py [--rounds 3] [--hold 20] [--faults kill,stop]
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, machine facts, RESULTS.md)
import scale  # noqa: E402  (a minimal protocol client)
import consistency  # noqa: E402  (query over that client)

ROOT = load.ROOT
CLUSTER = Path(os.environ.get("SLUICE_CLUSTER_DIR", "/tmp/sluice-cluster"))
SLUICE_PORT, SLUICE_ADMIN, SLUICE_METRICS = 16073, 16074, 16075
HAPROXY_PORT = 16076
WRITER, DIRECT = 13306, 13308
CLIENTS = 4
# a statement or login that hangs longer than this counts as failed
socket.setdefaulttimeout(60)


def start_sluice(work, round_no):
    config = load.demo_config(SLUICE_PORT, SLUICE_ADMIN, SLUICE_METRICS)
    path = work / "sluice.toml"
    path.write_text(config)
    proc = subprocess.Popen([str(ROOT / "target/release/sluice"), "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL,
                            stderr=open(work / f"sluice-{round_no}.log", "w"),
                            env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"})
    load.wait_port(SLUICE_PORT)
    return proc


def start_haproxy(work):
    config = work / "haproxy.cfg"
    config.write_text(f"""
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
listen galera_writer
  bind 127.0.0.1:{HAPROXY_PORT}
  default-server check inter 300 fall 2 rise 3 on-marked-down shutdown-sessions
  server node1 127.0.0.1:13306
  server node2 127.0.0.1:13307 backup
  server node3 127.0.0.1:13308 backup
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "haproxy.log", "w"))
    load.wait_port(HAPROXY_PORT)
    return proc


class Writer(threading.Thread):
    """One client inserting rows (src, 1), (src, 2), … until told to stop."""

    def __init__(self, port, src, stop):
        super().__init__(daemon=True)
        self.port, self.src, self.stop = port, src, stop
        self.acked, self.failed, self.failed_logins = [], [], 0

    def run(self):
        n, sock = 0, None
        while not self.stop.is_set():
            if sock is None:
                try:
                    sock = scale.login(self.port)
                except Exception:  # refused, reset, timed out: the application retries
                    self.failed_logins += 1
                    time.sleep(0.02)
                    continue
            n += 1
            sent = time.monotonic()
            try:
                consistency.query(sock, f"INSERT INTO sbtest.failover_writes (src, n) VALUES ('{self.src}', {n})")
                self.acked.append((n, time.monotonic()))
            except RuntimeError:
                self.failed.append(sent)
                time.sleep(0.02)
            except OSError:
                self.failed.append(sent)
                sock.close()
                sock = None


def node(port, sql):
    return scale.mariadb(port, sql)


def writer_port(port):
    return node(port, "SELECT @@port FOR UPDATE")


def pid(name):
    return int((CLUSTER / name / "started.pid").read_text())


def view(port):
    try:
        return node(port, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN "
                          "('wsrep_cluster_conf_id', 'wsrep_cluster_size', 'wsrep_local_state') ORDER BY VARIABLE_NAME")
    except subprocess.CalledProcessError:
        return None


def cluster_whole():
    """Waits until node1 is back in the survivors' view, then lets cluster.sh restart
    whatever is down."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        mine, theirs = view(WRITER), view(DIRECT)
        if mine is not None and mine == theirs and theirs.split("\n")[1:] == ["3", "4"]:
            break
        if mine is None and not process_alive(pid("node1")):
            break
        time.sleep(0.5)
    load.run([str(ROOT / "scripts/cluster.sh"), "up"], stdout=subprocess.DEVNULL)


def process_alive(p):
    try:
        os.kill(p, 0)
        return True
    except ProcessLookupError:
        return False


def stall(acked, fault_at, until):
    times = sorted(t for _, t in acked)
    before = [t for t in times if t <= fault_at]
    after = [t for t in times if t > fault_at]
    if not after:
        return until - (before[-1] if before else fault_at), False
    series = before[-1:] + after
    return max(b - a for a, b in zip(series, series[1:])), True


def one_round(fault, round_no, work, opts):
    sluice = start_sluice(work, round_no)
    time.sleep(2)  # the monitor's first checks place the writer
    try:
        assert writer_port(SLUICE_PORT) == str(WRITER), "Sluice starts on node1"
        assert writer_port(HAPROXY_PORT) == str(WRITER), "HAProxy is back on node1"
        stop = threading.Event()
        tag = f"{fault}-{round_no}-{os.getpid()}"
        loops = {
            "sluice": [Writer(SLUICE_PORT, f"sluice-{tag}-{i}", stop) for i in range(CLIENTS)],
            "haproxy": [Writer(HAPROXY_PORT, f"haproxy-{tag}-{i}", stop) for i in range(CLIENTS)],
            "direct": [Writer(DIRECT, f"direct-{tag}", stop)],
        }
        for w in (w for ws in loops.values() for w in ws):
            w.start()
        time.sleep(2)
        fault_at = time.monotonic()
        os.kill(pid("node1"), signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        if fault == "stop":
            time.sleep(opts.hold)
            os.kill(pid("node1"), signal.SIGCONT)
        # until every client has written again for 2 s, or 60 s have passed
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recent = time.monotonic() - 2
            if all(any(t > fault_at and t < recent for _, t in w.acked) for ws in loops.values() for w in ws):
                break
            time.sleep(0.2)
        time.sleep(2)
        until = time.monotonic()
        stop.set()
        for w in (w for ws in loops.values() for w in ws):
            w.join(70)
    finally:
        sluice.send_signal(signal.SIGTERM)
        sluice.wait(30)
    cluster_whole()
    result = {}
    for target, ws in loops.items():
        stalls = [stall(w.acked, fault_at, until) for w in ws]
        stored = set()
        for w in ws:
            rows = node(DIRECT, f"SELECT n FROM sbtest.failover_writes WHERE src = '{w.src}'")
            stored |= {(w.src, int(n)) for n in rows.split()}
        acked = {(w.src, n) for w in ws for n, _ in w.acked}
        result[target] = {
            "stall": max(s for s, _ in stalls),
            "resumed": all(r for _, r in stalls),
            "errors": sum(len(w.failed) for w in ws),
            "errors_after": sum(1 for w in ws for t in w.failed if t > fault_at + 0.05),
            "failed_logins": sum(w.failed_logins for w in ws),
            "acked": len(acked),
            "lost": len(acked - stored),
        }
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold", type=float, default=20.0, help="seconds node1 stays stopped")
    ap.add_argument("--faults", default="kill,stop")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    load.bring_up()
    node(WRITER, "CREATE TABLE IF NOT EXISTS sbtest.failover_writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                 "src VARCHAR(40), n BIGINT, KEY (src, n))")
    work = Path(tempfile.mkdtemp(prefix="sluice-failover-"))
    haproxy = start_haproxy(work)
    runs = {}
    try:
        for fault in opts.faults.split(","):
            for r in range(opts.rounds):
                # HAProxy fails back to node1 once it has passed `rise` checks
                time.sleep(3)
                res = one_round(fault, r, work, opts)
                runs.setdefault(fault, []).append(res)
                print(f"{fault} round {r}: " + "; ".join(
                    f"{t} stall {v['stall']:.3f} s{'' if v['resumed'] else ' (not resumed)'}, errors {v['errors']}"
                    f" (after the fault {v['errors_after']}), failed logins {v['failed_logins']},"
                    f" acked {v['acked']}, lost {v['lost']}" for t, v in res.items()), flush=True)
    finally:
        haproxy.send_signal(signal.SIGTERM)
    if not opts.no_results_file:
        write_results(runs, opts)


def write_results(runs, opts):
    lines = ["# Failover", "",
             f"`benches/failover.py --rounds {opts.rounds} --hold {opts.hold:g}` on {load.machine()}: "
             "the Galera writer (node1) faulted while 4 clients insert through Sluice, 4 through "
             "HAProxy (TCP mode, node1 active, node2/node3 backup, `check inter 300 fall 2 rise 3`, "
             "`on-marked-down shutdown-sessions`) and 1 straight into node3, all at once. Stall "
             "added = the longest pause between acknowledged inserts from the fault on, minus the "
             "direct client's (Galera's own); medians of the rounds. Errors: failed statements, "
             "summed over the rounds (those sent after the fault in brackets); failed logins apart.",
             "",
             "| fault | Galera's own stall | proxy | stall added | client errors (after fault) | failed logins | acknowledged writes lost |",
             "|---|---|---|---|---|---|---|"]
    for fault, rounds in runs.items():
        own = statistics.median(r["direct"]["stall"] for r in rounds)
        name = {"kill": "kill -9", "stop": f"SIGSTOP, SIGCONT after {opts.hold:g} s"}[fault]
        for target in ("sluice", "haproxy"):
            added = statistics.median(r[target]["stall"] - r["direct"]["stall"] for r in rounds)
            resumed = all(r[target]["resumed"] for r in rounds)
            lines.append(
                f"| {name} | {own:.2f} s | {target} | {added * 1000:+.0f} ms{'' if resumed else ' (not resumed)'} "
                f"| {sum(r[target]['errors'] for r in rounds)} ({sum(r[target]['errors_after'] for r in rounds)}) "
                f"| {sum(r[target]['failed_logins'] for r in rounds)} "
                f"| {sum(r[target]['lost'] for r in rounds)} of {sum(r[target]['acked'] for r in rounds)} |")
    lines += ["", "A TCP check passes while a node is stopped (its kernel still accepts connections), so "
              "HAProxy keeps sending to a hung writer: its clients wait until the node is resumed, then "
              "get errors while it rejoins (it answers but is not in the primary component). Sluice's "
              "monitor times out on the node (1 s checks, `fail_after = 2`), releases the statements "
              "in flight there with ERR 2013 and sends the next ones to the new writer, where they "
              "commit when Galera has evicted the hung node. The statements in flight at the fault "
              "fail through either proxy (their outcome is unknown; a write is not replayed)."]
    load.replace_section("# Failover", lines)


if __name__ == "__main__":
    main()
