#!/usr/bin/env python3
"""Connection-scale runs against the local cluster, in one go:

1. Folding: sysbench's point select (text protocol, so sessions multiplex) from 64 and
   then 2,000 clients through Sluice onto a writer capped at 64 backend connections, and
   the same 64 and 2,000 clients directly on the node (its max_connections raised for the
   run), in interleaved rounds; medians of the rounds. Prints qps, errors and the most
   backend connections Sluice used. The clients come from `examples/pointload.rs` (one
   thread, one task per client) unless `--client sysbench` asks for sysbench, whose
   thread per client costs this small machine more CPU at 2,000 clients than the proxy
   and the node together.
2. Idle memory: 10,000 client connections held open, plain and then TLS, first just
   logged in and then after one `SELECT 1` each (what a pooled application connection
   looks like); prints the proxy's resident memory per idle connection.

`--baseline BINARY` runs another build beside this one (its own ports) in the same rounds
and idle measurements, so that a change is judged against the build before it.

Results go to stdout and to the "Connection scale" section of benches/RESULTS.md.
"""

import argparse
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from hashlib import sha1
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (the load harness: cluster, sysbench, parsing)

ROOT = load.ROOT
SLUICE_PORT, ADMIN_PORT = 16043, 16042
BASELINE_PORT, BASELINE_ADMIN_PORT = 16053, 16052
CAP = 64


def start_sluice(work, port=SLUICE_PORT, admin_port=ADMIN_PORT, binary=None):
    return load.start_sluice(work, port, CAP, binary=binary, proxy_extra="idle_timeout_ms = 3600000",
                             sections=f"""
[pool]
wait_timeout_ms = 10000

[admin]
listen = "127.0.0.1:{admin_port}"
users = [{{ name = "admin", password = "*4ACFE3202A5FF5CF467898FC58AAB1D615029441" }}]

[frontend_tls]
cert = "{ROOT}/certs/server.pem"
key = "{ROOT}/certs/server-key.pem"
""")


def mariadb(port, sql, user="app", password="app"):
    return load.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", f"-u{user}",
                     f"-p{password}", "-N", "-B", "-e", sql], capture_output=True).stdout.strip()


def point_selects(port, threads, seconds, client="pointload", prepared=False):
    """Point selects (text protocol, or prepared as sysbench does by default); qps and
    errors (a failed run counts as such)."""
    if client == "pointload":
        done = subprocess.run([str(ROOT / "target/release/examples/pointload"), "--port", str(port),
                               "--clients", str(threads), "--time", str(seconds),
                               "--tables", str(load.TABLES), "--table-size", str(load.TABLE_SIZE),
                               "--prepared", str(int(prepared))],
                              capture_output=True, text=True)
        fields = dict(kv.split("=", 1) for kv in done.stdout.split())
        if "qps" not in fields:
            return {"qps": 0.0, "errors": "run failed: " + done.stderr.strip()[-300:]}
        failed = int(fields["failed_clients"])
        errors = fields["errors"] + (f" ({failed} clients failed)" if failed else "")
        return {"qps": float(fields["qps"]), "errors": errors}
    args = ["sysbench", "oltp_point_select", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
            "--mysql-user=app", "--mysql-password=app", "--mysql-db=sbtest",
            f"--tables={load.TABLES}", f"--table-size={load.TABLE_SIZE}",
            f"--threads={threads}", f"--time={seconds}",
            "--db-ps-mode=auto" if prepared else "--db-ps-mode=disable",
            "--mysql-ignore-errors=none", "run"]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return {"qps": 0.0, "errors": "run failed: " + " / ".join(tail)}
    qps = float(re.search(r"queries:\s+\d+\s+\(([\d.]+) per sec", done.stdout).group(1))
    errors = re.search(r"ignored errors:\s+(\d+)", done.stdout).group(1)
    return {"qps": qps, "errors": errors}


# --- a minimal MySQL client login, to hold thousands of idle sessions cheaply ---

def read_packet(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    length = head[0] | head[1] << 8 | head[2] << 16
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return head[3], body


def write_packet(sock, seq, payload):
    sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)


def select_one(sock):
    """Runs `SELECT 1` on a logged-in connection and reads its answer (column count, one
    column definition, EOF, one row, EOF)."""
    write_packet(sock, 0, b"\x03SELECT 1")
    for _ in range(5):
        _, body = read_packet(sock)
        if body[:1] == b"\xff":
            raise RuntimeError(f"SELECT 1 failed: {body!r}")


def login(port, tls_context=None, user="app", password="app", database="sbtest", extra_caps=0):
    sock = socket.create_connection(("127.0.0.1", port))
    _, greeting = read_packet(sock)
    end = greeting.index(b"\0", 1)
    rest = greeting[end + 1:]
    scramble = rest[4:12] + rest[31:43]
    caps = 0x0200 | 0x8000 | 0x80000 | 0x0008  # PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB
    caps |= extra_caps
    seq = 1
    if tls_context:
        caps |= 0x0800  # SSL
        write_packet(sock, seq, struct.pack("<IIB23x", caps, 1 << 24, 45))
        seq += 1
        sock = tls_context.wrap_socket(sock, server_hostname="localhost")
    stage1 = sha1(password.encode()).digest()
    proof = bytes(a ^ b for a, b in zip(stage1, sha1(scramble + sha1(stage1).digest()).digest()))
    payload = (struct.pack("<IIB23x", caps, 1 << 24, 45) + user.encode() + b"\0" + bytes([len(proof)])
               + proof + database.encode() + b"\0" + b"mysql_native_password\0")
    write_packet(sock, seq, payload)
    _, answer = read_packet(sock)
    if answer[:1] != b"\0":
        raise RuntimeError(f"login refused: {answer!r}")
    return sock


def rss_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def heap_allocated(admin_port):
    """Bytes jemalloc has handed out and not had back (the proxy's live heap)."""
    return int(mariadb(admin_port, "SELECT Variable_Value FROM stats_memory_metrics "
                       "WHERE Variable_Name = 'jemalloc_allocated'", user="admin", password="admin"))


def idle_per_connection(pid, port, admin_port, count, tls_context, query):
    """The proxy's resident memory before and after `count` idle connections (logged in;
    with `query`, after one `SELECT 1` each), KiB per connection by RSS and by live heap.
    As many connections are opened and closed first, and their memory given back, so that
    tables sized by the number of sessions are grown before measuring."""
    def open_some():
        socks = []
        for _ in range(count):
            sock = login(port, tls_context)
            if query:
                select_one(sock)
            socks.append(sock)
        return socks
    for s in open_some():
        s.close()
    time.sleep(12)  # jemalloc's background threads give back freed pages (10 s decay)
    before, heap_before = rss_kib(pid), heap_allocated(admin_port)
    held = open_some()
    time.sleep(1)
    after, heap_after = rss_kib(pid), heap_allocated(admin_port)
    for s in held:
        s.close()
    time.sleep(1)
    return before, after, (after - before) / count, (heap_after - heap_before) / 1024 / count


CLIENT_NAMES = {
    "pointload": "`examples/pointload.rs` (one thread, a task per client)",
    "sysbench": "sysbench (`oltp_point_select`, a thread per client)",
}


def median_run(runs):
    """The run with the median qps (its errors come with it)."""
    return sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]


def folding(opts, has_baseline):
    """The interleaved folding rounds; lines for the table, the summary and the per-round
    ratios of 2,000 to 64 clients (Sluice, and the baseline build when there is one)."""
    original = mariadb(load.NODE_PORT, "SELECT @@global.max_connections")
    load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
    load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
    names = ["few", "many", "direct_few", "direct"] + (["base_few", "base_many"] if has_baseline else [])
    runs = {name: [] for name in names}
    used = []
    for r in range(opts.rounds):
        runs["few"].append(point_selects(SLUICE_PORT, CAP, opts.time, opts.client, opts.prepared))
        runs["many"].append(point_selects(SLUICE_PORT, opts.clients, opts.time, opts.client, opts.prepared))
        used.append(int(mariadb(ADMIN_PORT, "SELECT MaxConnUsed FROM stats_mysql_connection_pool",
                                user="admin", password="admin")))
        if has_baseline:
            runs["base_few"].append(point_selects(BASELINE_PORT, CAP, opts.time, opts.client, opts.prepared))
            runs["base_many"].append(point_selects(BASELINE_PORT, opts.clients, opts.time, opts.client,
                                                   opts.prepared))
        mariadb(load.NODE_PORT, f"SET GLOBAL max_connections = {opts.clients + 500}")
        runs["direct_few"].append(point_selects(load.NODE_PORT, CAP, opts.time, opts.client, opts.prepared))
        runs["direct"].append(point_selects(load.NODE_PORT, opts.clients, opts.time, opts.client, opts.prepared))
        mariadb(load.NODE_PORT, f"SET GLOBAL max_connections = {original}")
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['qps']:.0f}" for k, v in runs.items()),
              flush=True)
    med = {k: median_run(v) for k, v in runs.items()}

    def ratios(few, many):
        pairs = [m["qps"] / f["qps"] if f["qps"] else float("nan") for f, m in zip(runs[few], runs[many])]
        ratio = med[many]["qps"] / med[few]["qps"] if med[few]["qps"] else float("nan")
        return ratio, ", ".join(f"{p:.2f}" for p in pairs)

    lines = [
        f"| {CAP} clients through Sluice | {med['few']['qps']:.0f} | {med['few']['errors']} |",
        f"| {opts.clients} clients through Sluice | {med['many']['qps']:.0f} | {med['many']['errors']} |",
    ]
    if has_baseline:
        lines += [
            f"| {CAP} clients through the baseline build | {med['base_few']['qps']:.0f} | "
            f"{med['base_few']['errors']} |",
            f"| {opts.clients} clients through the baseline build | {med['base_many']['qps']:.0f} | "
            f"{med['base_many']['errors']} |",
        ]
    lines += [
        f"| {CAP} clients directly on the node | {med['direct_few']['qps']:.0f} | {med['direct_few']['errors']} |",
        f"| {opts.clients} clients directly on the node | {med['direct']['qps']:.0f} | {med['direct']['errors']} |",
    ]
    ratio, rounds = ratios("few", "many")
    summary = (f"{opts.clients} clients on ≤ {CAP} connections reach {ratio:.2f}× the qps of {CAP} "
               f"clients (per round: {rounds}); the most backend connections Sluice held at once: "
               f"{max(used)}.")
    if has_baseline:
        ratio, rounds = ratios("base_few", "base_many")
        summary += f" The baseline build: {ratio:.2f}× (per round: {rounds})."
    direct = med["direct"]["qps"] / med["direct_few"]["qps"]
    summary += (f" Directly on the node, {opts.clients} clients reach {direct:.2f}× the qps of "
                f"{CAP}: the same machine runs the clients, the node and the proxy.")
    print("\n".join(lines))
    print(summary)
    return lines, summary


def idle_memory(opts, targets):
    """KiB per idle connection for each (name, pid, port, admin port) target: logged in,
    and after one statement, plain and TLS."""
    context = ssl.create_default_context(cafile=str(ROOT / "certs/ca.pem"))
    rows = []
    for query in (False, True):
        for name, pid, port, admin_port in targets:
            plain = idle_per_connection(pid, port, admin_port, opts.idle, None, query)
            tls = idle_per_connection(pid, port, admin_port, opts.idle, context, query)
            state = "after one SELECT 1" if query else "logged in"
            row = (f"| {name} | {state} | {plain[2]:.1f} / {plain[3]:.1f} ({plain[0]:,} → {plain[1]:,}) | "
                   f"{tls[2]:.1f} / {tls[3]:.1f} ({tls[0]:,} → {tls[1]:,}) |")
            print(row, flush=True)
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time", type=int, default=10)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--client", choices=["pointload", "sysbench"], default="pointload")
    ap.add_argument("--prepared", action="store_true",
                    help="prepared point selects (binary protocol), as sysbench runs by default")
    ap.add_argument("--skip-idle", action="store_true", help="only the folding runs")
    ap.add_argument("--only-idle", action="store_true", help="only the idle memory")
    ap.add_argument("--baseline", metavar="BINARY", help="another Sluice build to run beside this one")
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()

    load.bring_up("--bin", "sluice", "--example", "pointload")
    work = Path(tempfile.mkdtemp(prefix="sluice-scale-"))
    proc = start_sluice(work)
    targets = [("Sluice", proc.pid, SLUICE_PORT, ADMIN_PORT)]
    base = None
    if opts.baseline:
        base = start_sluice(work, BASELINE_PORT, BASELINE_ADMIN_PORT, opts.baseline)
        targets.append(("baseline build", base.pid, BASELINE_PORT, BASELINE_ADMIN_PORT))
    lines, summary, idle_rows = [], "", []
    try:
        if not opts.only_idle:
            lines, summary = folding(opts, base is not None)
            statements = mariadb(ADMIN_PORT, "SELECT Variable_Name, Variable_Value FROM stats_mysql_global "
                                 "WHERE Variable_Name LIKE 'Com_%stmt%' OR Variable_Name LIKE 'Stmt_%'",
                                 user="admin", password="admin").replace("\t", " = ").replace("\n", ", ")
            if opts.prepared:
                print(f"statements: {statements}")
        if not opts.skip_idle:
            idle_rows = idle_memory(opts, targets)
    finally:
        for p in (proc, base):
            if p:
                p.terminate()
                p.wait(timeout=60)
    if opts.no_results_file:
        return
    heading = "# Connection scale, prepared statements" if opts.prepared else "# Connection scale"
    if opts.client != "pointload":
        heading += f" ({opts.client})"
    if opts.only_idle:
        heading = "# Idle connections"
    protocol = ("prepared (binary protocol, parameter types sent with each statement's first "
                "execute only, as sysbench does by default)" if opts.prepared else
                "over the text protocol")
    flags = "".join(f" --{f.replace('_', '-')}" for f in ("prepared", "skip_idle", "only_idle")
                    if getattr(opts, f))
    command = (f"`benches/scale.py --time {opts.time} --rounds {opts.rounds} --client {opts.client}{flags}"
               f"{' --baseline <previous build>' if opts.baseline else ''}` on the same machine, "
               f"{time.strftime('%Y-%m-%d')}")
    section = [heading, ""]
    if lines:
        section += [
            f"{command}: sysbench's point select "
            f"{protocol}, clients from {CLIENT_NAMES[opts.client]}, the "
            f"writer capped at {CAP} backend connections in Sluice; the direct runs raise the "
            "node's max_connections. Medians of the rounds, run interleaved.",
            "",
            "| run | qps | errors |",
            "|---|---|---|",
            *lines,
            "",
            summary,
        ]
        if opts.prepared:
            section += ["", f"Sluice's statement counters after the run: {statements}."]
    if idle_rows:
        if not lines:
            section += [f"{command}."]
        section += [
            "",
            f"Idle sessions: {opts.idle:,} client connections held open; KiB each of the "
            "proxy's resident memory / of its live heap (jemalloc's allocated bytes), and the "
            "RSS before → after in KiB. Kernel socket buffers are not counted in either.",
            "",
            "| build | state | plain | TLS |",
            "|---|---|---|---|",
            *idle_rows,
        ]
    load.replace_section(heading, section)


if __name__ == "__main__":
    main()
