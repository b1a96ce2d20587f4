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
2. Idle memory: 10,000 logged-in client connections held open, plain and then TLS;
   prints the proxy's resident memory per idle connection.

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
CAP = 64


def start_sluice(work):
    return load.start_sluice(work, SLUICE_PORT, CAP, proxy_extra="idle_timeout_ms = 3600000", sections=f"""
[pool]
wait_timeout_ms = 10000

[admin]
listen = "127.0.0.1:{ADMIN_PORT}"
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


def idle_per_connection(pid, count, tls_context):
    warm = [login(SLUICE_PORT, tls_context) for _ in range(200)]
    for s in warm:
        s.close()
    time.sleep(1)
    before = rss_kib(pid)
    held = [login(SLUICE_PORT, tls_context) for _ in range(count)]
    time.sleep(1)
    after = rss_kib(pid)
    for s in held:
        s.close()
    time.sleep(1)
    return before, after, (after - before) / count


CLIENT_NAMES = {
    "pointload": "`examples/pointload.rs` (one thread, a task per client)",
    "sysbench": "sysbench (`oltp_point_select`, a thread per client)",
}


def median_run(runs):
    """The run with the median qps (its errors come with it)."""
    return sorted(runs, key=lambda r: r["qps"])[len(runs) // 2]


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
    ap.add_argument("--no-results-file", action="store_true")
    opts = ap.parse_args()

    load.bring_up("--bin", "sluice", "--example", "pointload")
    work = Path(tempfile.mkdtemp(prefix="sluice-scale-"))
    proc = start_sluice(work)
    original = mariadb(load.NODE_PORT, "SELECT @@global.max_connections")
    lines = []
    try:
        load.sysbench("oltp_read_only", load.NODE_PORT, 1, 1, "cleanup")
        load.sysbench("oltp_read_only", load.NODE_PORT, 4, 1, "prepare")
        runs = {name: [] for name in ("few", "many", "direct_few", "direct")}
        used = []
        for r in range(opts.rounds):
            runs["few"].append(point_selects(SLUICE_PORT, CAP, opts.time, opts.client, opts.prepared))
            runs["many"].append(point_selects(SLUICE_PORT, opts.clients, opts.time, opts.client, opts.prepared))
            used.append(int(mariadb(ADMIN_PORT, "SELECT MaxConnUsed FROM stats_mysql_connection_pool",
                                    user="admin", password="admin")))
            mariadb(load.NODE_PORT, f"SET GLOBAL max_connections = {opts.clients + 500}")
            runs["direct_few"].append(point_selects(load.NODE_PORT, CAP, opts.time, opts.client, opts.prepared))
            runs["direct"].append(point_selects(load.NODE_PORT, opts.clients, opts.time, opts.client, opts.prepared))
            mariadb(load.NODE_PORT, f"SET GLOBAL max_connections = {original}")
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['qps']:.0f}" for k, v in runs.items()),
                  flush=True)
        few, many, direct_few, direct = (median_run(runs[k]) for k in ("few", "many", "direct_few", "direct"))
        used = max(used)
        pairs = [m["qps"] / f["qps"] if f["qps"] else float("nan") for f, m in zip(runs["few"], runs["many"])]
        ratio = many["qps"] / few["qps"] if few["qps"] else float("nan")
        lines += [
            f"| {CAP} clients through Sluice | {few['qps']:.0f} | {few['errors']} |",
            f"| {opts.clients} clients through Sluice | {many['qps']:.0f} | {many['errors']} |",
            f"| {CAP} clients directly on the node | {direct_few['qps']:.0f} | {direct_few['errors']} |",
            f"| {opts.clients} clients directly on the node | {direct['qps']:.0f} | {direct['errors']} |",
        ]
        print("\n".join(lines))
        print(f"{opts.clients}/{CAP} through Sluice: {ratio:.2f} (rounds: "
              + ", ".join(f"{p:.2f}" for p in pairs) + f"); most backend connections used: {used}")

        statements = mariadb(ADMIN_PORT, "SELECT Variable_Name, Variable_Value FROM stats_mysql_global "
                             "WHERE Variable_Name LIKE 'Com_%stmt%' OR Variable_Name LIKE 'Stmt_%'",
                             user="admin", password="admin").replace("\t", " = ").replace("\n", ", ")
        if opts.prepared:
            print(f"statements: {statements}")
        plain = tls = None
        if not opts.skip_idle:
            context = ssl.create_default_context(cafile=str(ROOT / "certs/ca.pem"))
            plain = idle_per_connection(proc.pid, opts.idle, None)
            tls = idle_per_connection(proc.pid, opts.idle, context)
            print(f"idle plain: RSS {plain[0]} → {plain[1]} KiB, {plain[2]:.1f} KiB per connection")
            print(f"idle TLS:   RSS {tls[0]} → {tls[1]} KiB, {tls[2]:.1f} KiB per connection")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if opts.no_results_file:
        return
    heading = "# Connection scale, prepared statements" if opts.prepared else "# Connection scale"
    if opts.client != "pointload":
        heading += f" ({opts.client})"
    protocol = ("prepared (binary protocol, parameter types sent with each statement's first "
                "execute only, as sysbench does by default)" if opts.prepared else
                "over the text protocol")
    section = [
        heading,
        "",
        f"`benches/scale.py --time {opts.time} --rounds {opts.rounds} --client {opts.client}"
        f"{' --prepared' if opts.prepared else ''}{' --skip-idle' if opts.skip_idle else ''}` "
        f"on the same machine, {time.strftime('%Y-%m-%d')}: sysbench's point select "
        f"{protocol}, clients from {CLIENT_NAMES[opts.client]}, the "
        f"writer capped at {CAP} backend connections in Sluice; the direct runs raise the "
        "node's max_connections. Medians of the rounds, run interleaved.",
        "",
        "| run | qps | errors |",
        "|---|---|---|",
        *lines,
        "",
        f"{opts.clients} clients on ≤ {CAP} connections reach {ratio:.2f}× the qps of {CAP} "
        "clients (per round: " + ", ".join(f"{p:.2f}" for p in pairs) + "); the most backend "
        f"connections Sluice held at once: {used}. Directly on the "
        f"node, {opts.clients} clients reach {direct['qps'] / direct_few['qps']:.2f}× the qps of "
        f"{CAP}: the same machine runs the clients, the node and the proxy.",
    ]
    if opts.prepared:
        section += ["", f"Sluice's statement counters after the run: {statements}."]
    if plain:
        section += [
        "",
        f"Idle sessions ({opts.idle:,} logged-in connections held open): plain "
        f"{plain[2]:.1f} KiB each (RSS {plain[0]:,} → {plain[1]:,} KiB), TLS {tls[2]:.1f} KiB "
        f"each (RSS {tls[0]:,} → {tls[1]:,} KiB).",
        ]
    load.replace_section(heading, section)


if __name__ == "__main__":
    main()
