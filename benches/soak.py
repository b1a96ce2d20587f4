#!/usr/bin/env python3
"""A long run with faults: two proxies of one `[cluster] name` in front of the local
cluster, a mixed load through both for `--minutes`, and every 30–90 s one fault at random.

Load (each client on its own connection, half through each proxy; a client whose
connection fails reconnects): autocommit writes into a ledger table, multi-statement
transactions (BEGIN, INSERT into the ledger, UPDATE, SELECT, COMMIT), prepared reads and
writes, reads over TLS, and connection churn (connect, SELECT 1, quit).

Faults: kill -9 of the writer (restarted 20 s later), SIGSTOP of the writer for 2–8 s,
`wsrep_desync` of the writer for 10 s, a replica's SQL thread stopped for 20 s, a replica
killed (restarted 20 s later), SIGHUP to a proxy, `LOAD MYSQL SERVERS TO RUNTIME` on a
proxy, a proxy restarted.

At the end: every write acknowledged to a client must be in the ledger (the table's primary
key makes a duplicate impossible); client errors by kind — a commit in flight when the
writer failed (a COMMIT, or an autocommit write: its outcome is unknown) may fail, and so
may a statement of a client whose own proxy was restarted under it; anything else counts
against the run; transactions replayed and refused; each proxy's resident memory and open
file descriptors at the start, the middle and the end; panics in the proxies' logs; writer
changes, each put down to a fault of the writer it left (kill, SIGSTOP, desync), to what the
monitor saw of it (Galera evicted it: not primary, not synced; no answer), to taking a peer
proxy's writer, or to nothing. Writes the "Chaos soak" section of
benches/RESULTS.md.

usage: .venv/bin/python benches/soak.py [--minutes 30] [--seed 1] [--no-results-file]
(mysql.connector comes from the virtualenv scripts/setup.sh makes.)
"""
import argparse
import datetime
import os
import re
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mysql.connector

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402

ROOT = load.ROOT
CLUSTER = Path("/tmp/sluice-cluster")
NODES = {"node1": 13306, "node2": 13307, "node3": 13308, "replica1": 13309, "replica2": 13310}
PROXIES = {"a": (16081, 16082, 16083), "b": (16084, 16085, 16086)}


def node_sql(port, sql):
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password="app",
                                   use_pure=True, ssl_disabled=True, connection_timeout=5,
                                   autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchall() if cur.with_rows else None
    finally:
        conn.close()


def pid_of(name):
    """The pid of the node's server, found as scripts/cluster.sh finds it (its pid file may
    name a launcher that exited, when the server took long to appear under load)."""
    found = subprocess.run(["pgrep", "-f", "--", f"--defaults-file={CLUSTER / name}/my.cnf"],
                           capture_output=True, text=True).stdout.split()
    for pid in found:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "mariadbd":
            return int(pid)
    raise ProcessLookupError(f"{name} is not running")


def cluster_up():
    subprocess.run([str(ROOT / "scripts/cluster.sh"), "up"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Proxy:
    def __init__(self, name, work):
        self.name, self.work = name, work
        self.port, self.admin, self.metrics = PROXIES[name]
        self.config = work / f"sluice-{name}.toml"
        self.config.write_text(load.demo_config(*PROXIES[name]) + f"""
[cluster]
name = "soak"
sync = true
user = "sluice_cluster"
password_file = "{ROOT}/config/cluster.secret"
interval_ms = 1000
""")
        os.chmod(self.config, 0o600)
        self.log = work / f"sluice-{name}.log"
        self.proc = None
        # counters of earlier processes of this proxy (a restart resets them)
        self.counted_before_restarts = {}
        self.restarts = []  # (when it was stopped, when it listened again)
        self.start()

    def start(self):
        self.proc = subprocess.Popen([str(ROOT / "target/release/sluice"), "run", "--config",
                                      str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "a"))
        load.wait_port(self.port)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def sample(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1])
        fds = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        return rss, fds

    def keep_counters(self):
        for name in COUNTED:
            self.counted_before_restarts[name] = self.counted_before_restarts.get(name, 0) + self.stat(name)

    def total(self, name):
        """A counter over every process of this proxy so far."""
        return self.counted_before_restarts.get(name, 0) + self.stat(name)

    def stat(self, name):
        conn = mysql.connector.connect(host="127.0.0.1", port=self.admin, user="admin",
                                       password="admin", use_pure=True, ssl_disabled=True)
        try:
            cur = conn.cursor()
            cur.execute("SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = %s",
                        (name,))
            return int(cur.fetchone()[0])
        finally:
            conn.close()


class Ledger:
    """What clients were told: acknowledged writes, errors, statements."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = set()
        self.errors = []  # (time, client kind, statement kind, message, proxy name)
        self.statements = 0

    def ack(self, ident):
        with self.lock:
            self.acked.add(ident)

    def error(self, kind, what, err, proxy):
        with self.lock:
            self.errors.append((time.time(), kind, what, str(err)[:160], proxy))

    def count(self, n=1):
        with self.lock:
            self.statements += n


def client(kind, number, proxy, ledger, stop):
    """One client's loop until `stop`; reconnects after a failure."""
    ids = iter(range(number * 10_000_000, (number + 1) * 10_000_000))
    conn = None
    while not stop.is_set():
        try:
            if kind == "churn":
                c = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="app",
                                            password="app", use_pure=True, ssl_disabled=True)
                cur = c.cursor()
                cur.execute("SELECT 1")
                cur.fetchall()
                c.close()
                ledger.count()
                continue
            if conn is None:
                tls = {"ssl_ca": str(ROOT / "certs/ca.pem")} if kind == "tls" else {"ssl_disabled": True}
                conn = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="app",
                                               password="app", database="sbtest",
                                               use_pure=True, autocommit=True, **tls)
            step(kind, conn, ids, ledger)
        except mysql.connector.Error as err:
            ledger.error(kind, getattr(err, "statement_kind", "statement"), err, proxy.name)
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.1)


def step(kind, conn, ids, ledger):
    cur = conn.cursor(prepared=(kind == "prepared"))
    if kind == "write":
        ident = next(ids)
        try:
            cur.execute("INSERT INTO soak_ledger (id, kind) VALUES (%s, 'write')", (ident,))
        except mysql.connector.Error as err:
            err.statement_kind = "autocommit write"
            raise
        ledger.ack(ident)
        ledger.count()
    elif kind == "transaction":
        ident = next(ids)
        cur.execute("BEGIN")
        cur.execute("INSERT INTO soak_ledger (id, kind) VALUES (%s, 'transaction')", (ident,))
        cur.execute("UPDATE soak_counter SET n = n + 1 WHERE id = %s", (ident % 16,))
        cur.execute("SELECT n FROM soak_counter WHERE id = %s", (ident % 16,))
        cur.fetchall()
        try:
            cur.execute("COMMIT")
        except mysql.connector.Error as err:
            err.statement_kind = "COMMIT"
            raise
        ledger.ack(ident)
        ledger.count(5)
    elif kind == "prepared":
        ident = next(ids)
        try:
            cur.execute("INSERT INTO soak_ledger (id, kind) VALUES (?, 'prepared')", (ident,))
        except mysql.connector.Error as err:
            err.statement_kind = "autocommit write"
            raise
        ledger.ack(ident)
        cur.execute("SELECT id, kind FROM soak_ledger WHERE id = ?", (ident,))
        cur.fetchall()
        ledger.count(2)
    else:  # read, tls
        cur.execute("SELECT COUNT(*) FROM soak_counter")
        cur.fetchall()
        ledger.count()
    cur.close()


def writer_port(proxy):
    conn = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="app", password="app",
                                   use_pure=True, ssl_disabled=True, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT @@port FOR UPDATE")
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def name_of(port):
    return next(n for n, p in NODES.items() if p == port)


def fault(kind, proxies, rng, later):
    """Injects one fault; `later` collects (when, undo) to run afterwards."""
    now = time.time()
    if kind in ("kill_writer", "stop_writer", "desync_writer"):
        writer = name_of(writer_port(proxies["a"]))
        if kind == "kill_writer":
            os.kill(pid_of(writer), signal.SIGKILL)
            later.append((now + 20, cluster_up))
            return f"kill -9 {writer}"
        if kind == "stop_writer":
            hold = rng.uniform(2, 8)
            os.kill(pid_of(writer), signal.SIGSTOP)
            later.append((now + hold, lambda: os.kill(pid_of(writer), signal.SIGCONT)))
            return f"SIGSTOP {writer} for {hold:.1f} s"
        node_sql(NODES[writer], "SET GLOBAL wsrep_desync = ON")
        later.append((now + 10, lambda: node_sql(NODES[writer], "SET GLOBAL wsrep_desync = OFF")))
        return f"wsrep_desync {writer}"
    if kind == "replica_lag":
        replica = rng.choice(["replica1", "replica2"])
        node_sql(NODES[replica], "STOP SLAVE SQL_THREAD")
        later.append((now + 20, lambda: node_sql(NODES[replica], "START SLAVE SQL_THREAD")))
        return f"SQL thread of {replica} stopped"
    if kind == "kill_replica":
        replica = rng.choice(["replica1", "replica2"])
        os.kill(pid_of(replica), signal.SIGKILL)
        later.append((now + 20, cluster_up))
        return f"kill -9 {replica}"
    proxy = proxies[rng.choice(["a", "b"])]
    if kind == "sighup":
        proxy.proc.send_signal(signal.SIGHUP)
        return f"SIGHUP proxy {proxy.name}"
    if kind == "load_servers":
        conn = mysql.connector.connect(host="127.0.0.1", port=proxy.admin, user="admin",
                                       password="admin", use_pure=True, ssl_disabled=True)
        conn.cursor().execute("LOAD MYSQL SERVERS TO RUNTIME")
        conn.close()
        return f"LOAD MYSQL SERVERS TO RUNTIME on proxy {proxy.name}"
    proxy.keep_counters()
    stopping = time.time()
    proxy.stop()
    proxy.start()
    proxy.restarts.append((stopping, time.time()))
    return f"proxy {proxy.name} restarted"


COUNTED = ["Writer_changes", "Transactions_replayed", "Transaction_replays_refused",
           "Deadlocks_retried"]
FAULTS = ["kill_writer", "stop_writer", "desync_writer", "replica_lag", "kill_replica",
          "sighup", "load_servers", "restart_proxy"]
KINDS = ["write", "transaction", "prepared", "read", "tls", "churn"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()
    rng = random.Random(opts.seed)

    load.bring_up("--bin", "sluice")
    node_sql(13306, "CREATE TABLE IF NOT EXISTS sbtest.soak_ledger "
                    "(id BIGINT PRIMARY KEY, kind VARCHAR(16), at TIMESTAMP(6) DEFAULT NOW(6))")
    node_sql(13306, "DELETE FROM sbtest.soak_ledger")
    assert node_sql(13306, "SELECT COUNT(*) FROM sbtest.soak_ledger") == [(0,)], "ledger emptied"
    node_sql(13306, "CREATE TABLE IF NOT EXISTS sbtest.soak_counter (id INT PRIMARY KEY, n BIGINT)")
    node_sql(13306, "REPLACE INTO sbtest.soak_counter VALUES " + ", ".join(f"({i}, 0)" for i in range(16)))
    work = Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    proxies = {name: Proxy(name, work) for name in PROXIES}
    time.sleep(3)
    ledger, stop = Ledger(), threading.Event()
    threads = []
    for number, kind in enumerate(k for k in KINDS for _ in range(2)):
        proxy = proxies["a" if number % 2 == 0 else "b"]
        t = threading.Thread(target=client, args=(kind, number, proxy, ledger, stop), daemon=True)
        t.start()
        threads.append(t)
    started = time.time()
    end = started + opts.minutes * 60
    samples = {"start": {n: p.sample() for n, p in proxies.items()}}
    before = {n: {c: p.stat(c) for c in COUNTED} for n, p in proxies.items()}
    faults, later = [], []
    next_fault = started + rng.uniform(30, 90)
    try:
        while time.time() < end:
            now = time.time()
            for when, undo in [l for l in later if l[0] <= now]:
                later.remove((when, undo))
                try:
                    undo()
                except Exception as e:  # a restart that fails is reported, the run goes on
                    faults.append((now - started, f"undo failed: {e}"))
            if now >= next_fault and not later:
                kind = rng.choice(FAULTS)
                try:
                    what = fault(kind, proxies, rng, later)
                except ProcessLookupError as e:  # a node down since an earlier fault
                    what = f"{kind} skipped: {e}"
                faults.append((now - started, what))
                print(f"{now - started:6.0f} s  {what}", flush=True)
                next_fault = now + rng.uniform(30, 90)
            if "middle" not in samples and now >= started + opts.minutes * 30:
                samples["middle"] = {n: p.sample() for n, p in proxies.items()}
            time.sleep(0.2)
        for when, undo in sorted(later, key=lambda l: l[0]):
            time.sleep(max(0, when - time.time()))
            undo()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    cluster_up()
    time.sleep(3)
    samples["end"] = {n: p.sample() for n, p in proxies.items()}
    counted = {c: {n: p.total(c) - before[n][c] for n, p in proxies.items()} for c in COUNTED}
    for p in proxies.values():
        p.stop()
    present = {row[0] for row in node_sql(13306, "SELECT id FROM sbtest.soak_ledger")}
    lost = sorted(ledger.acked - present)
    panics = sum(p.log.read_text().count("panicked") for p in proxies.values())
    commit_errors = [e for e in ledger.errors if in_flight_commit(e)]
    restart_errors = [e for e in ledger.errors
                      if not in_flight_commit(e) and restarted_under(e, proxies)]
    other_errors = [e for e in ledger.errors
                    if not in_flight_commit(e) and not restarted_under(e, proxies)]
    changes = writer_changes(proxies, faults, started)
    report = {
        "minutes": opts.minutes, "statements": ledger.statements, "faults": faults,
        "acknowledged": len(ledger.acked), "lost": lost, "commit_errors": len(commit_errors),
        "restart_errors": len(restart_errors),
        "other_errors": len(other_errors), "samples": samples, "panics": panics,
        "counted": counted, "changes": changes,
        "error_examples": sorted({e[3] for e in other_errors})[:8],
        "errors_by_code": by_code(other_errors),
        "errors_by_fault": by_fault(other_errors, faults, started),
    }
    print(report)
    for line in timeline(other_errors, faults, started):
        print(line)
    if not opts.no_results_file:
        write_results(report, opts)


def in_flight_commit(error):
    """A COMMIT or an autocommit write whose writer was lost with it in flight (its
    connection lost, or the node out of the primary component while it committed):
    whether it committed is unknown, so the client must hear of it."""
    _, _, what, message, _ = error
    lost = message.startswith("1152") and "during query" in message
    unknown = message.startswith("1180") and "Not connected to Primary Component" in message
    return what == "COMMIT" or (what == "autocommit write" and (lost or unknown))


def restarted_under(error, proxies):
    """An error of a client whose own proxy was being restarted (from the second before
    its SIGTERM to 5 s after the new process listened)."""
    at, proxy = error[0], error[4]
    return any(stopping - 1 <= at <= up + 5 for stopping, up in proxies[proxy].restarts)


CHANGED = re.compile(r'^(\S+Z) .*Galera writer changed .*before=\["([^"]+)"\] after=\["([^"]+)"\]')
ADOPTED = "a peer proxy has held other Galera writers for longer"


def writer_changes(proxies, faults, started):
    """Each proxy's writer changes from its log, each put down to a fault of the writer it
    left (that started within the 30 s before), to taking a peer's writer, or to nothing."""
    by_port = {f"127.0.0.1:{port}": name for name, port in NODES.items()}
    out = {}
    for name, proxy in proxies.items():
        lines = proxy.log.read_text().splitlines()
        reasons = []
        for i, line in enumerate(lines):
            m = CHANGED.match(line)
            if not m:
                continue
            at = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            if at < started:
                continue
            left = by_port.get(m.group(2), m.group(2))
            cause = next((what for t, what in faults
                          if left in what.split() and not what.startswith("undo")
                          and started + t - 1 <= at <= started + t + 30), None)
            if cause is not None:
                cause = cause.split(" ")[0]
            else:
                cause = monitor_verdict(lines[max(0, i - 5):i], m.group(2))
            if cause is None and any(ADOPTED in l for l in lines[max(0, i - 3):i]):
                cause = "taking a peer's writer"
            reasons.append(cause or "unexplained")
        out[name] = reasons
    return out


def monitor_verdict(lines, address):
    """Why the proxy's monitor took `address` out just before (its log says what the check
    saw): Galera's own verdict on the node, or no answer."""
    for line in reversed(lines):
        if f"taken out server={address} " not in line:
            continue
        if "seen=Unreachable" in line:
            return "unreachable"
        if "desync: true" in line:
            return "desynced"
        if "primary: false" in line or "local_state: 4" not in line or "ready: false" in line:
            return "Galera: not primary or not synced"
        return "taken out"
    return None


def last_fault(at, faults, started):
    """The fault injected last before `at` (wall clock): (seconds before, what), or None."""
    before = [(t, what) for t, what in faults if started + t <= at]
    if not before:
        return None
    t, what = before[-1]
    return at - (started + t), what


def timeline(errors, faults, started):
    """Each error with the time it came and the fault before it: where errors that no
    fault explains come from."""
    for at, kind, what, message, proxy in errors:
        last = last_fault(at, faults, started)
        after = f"{last[0]:5.1f} s after {last[1]}" if last else "before any fault"
        yield f"{at - started:7.1f} s  proxy {proxy} {kind}/{what}: {message[:100]}  ({after})"


def by_fault(errors, faults, started):
    """Errors counted by the kind of the fault before them, most frequent first."""
    counts = {}
    for error in errors:
        last = last_fault(error[0], faults, started)
        key = fault_kind(last[1]) if last else "no fault yet"
        counts[key] = counts.get(key, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def fault_kind(what):
    return what.split(" ")[0] if not what.startswith("SQL") else "replica SQL thread stopped"


def by_code(errors):
    """Errors counted by their code and client kind, most frequent first."""
    counts = {}
    for _, kind, _, message, _ in errors:
        code = message.split(" ", 1)[0] if message[:1].isdigit() else message[:40]
        counts[(code, kind)] = counts.get((code, kind), 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def write_results(r, opts):
    by_kind = {}
    for _, what in r["faults"]:
        key = fault_kind(what)
        by_kind[key] = by_kind.get(key, 0) + 1
    s = r["samples"]
    section = [
        "# Chaos soak",
        "",
        f"`.venv/bin/python benches/soak.py --minutes {opts.minutes:g} --seed {opts.seed}` on "
        f"the same machine, {time.strftime('%Y-%m-%d')}: two proxies of one cluster name, 12 "
        "clients (autocommit writes, transactions, prepared statements, TLS reads, reads, "
        "connection churn; half through each proxy), one fault every 30–90 s.",
        "",
        f"- duration {opts.minutes:g} min, {r['statements']:,} statements, "
        f"{r['acknowledged']:,} acknowledged writes, **{len(r['lost'])} lost**",
        f"- faults ({len(r['faults'])}): " + ", ".join(f"{k} ×{n}" for k, n in sorted(by_kind.items())),
        f"- client errors: {r['commit_errors']} on a commit in flight (a COMMIT, or an "
        f"autocommit write, lost with its writer), {r['restart_errors']} of clients whose own "
        f"proxy was restarted under them, **{r['other_errors']} other** (each failed statement "
        "ends the client's connection; it reconnects)",
        "- transactions replayed: " + ", ".join(
            f"proxy {n} {c}" for n, c in r["counted"]["Transactions_replayed"].items())
        + "; replays refused: " + ", ".join(
            f"proxy {n} {c}" for n, c in r["counted"]["Transaction_replays_refused"].items())
        + "; deadlocks retried: " + ", ".join(
            f"proxy {n} {c}" for n, c in r["counted"]["Deadlocks_retried"].items()),
        "- writer changes: " + "; ".join(
            f"proxy {n} {len(c)} (" + ", ".join(
                f"{k} ×{c.count(k)}" for k in sorted(set(c))) + ")"
            for n, c in r["changes"].items()),
        f"- panics: {r['panics']}",
        "- resident memory / open fds per proxy, start → middle → end: "
        + "; ".join(f"{n}: " + " → ".join(f"{s[w][n][0] // 1024} MiB/{s[w][n][1]}"
                                            for w in ("start", "middle", "end") if w in s)
                    for n in ("a", "b")),
    ]
    if r["errors_by_code"]:
        section += ["", "Errors by code and client: " + "; ".join(
            f"{code} {kind} ×{n}" for (code, kind), n in r["errors_by_code"])]
    if r["errors_by_fault"]:
        section += ["", "Other errors by the fault before them: " + "; ".join(
            f"{kind} ×{n}" for kind, n in r["errors_by_fault"])]
    if r["error_examples"]:
        section += ["", "Errors seen (distinct messages): " + "; ".join(f"`{e}`" for e in r["error_examples"])]
    section += ["", "Faults in order: " + "; ".join(f"{t:.0f} s {w}" for t, w in r["faults"]) + "."]
    load.replace_section("# Chaos soak", section)


if __name__ == "__main__":
    main()
