#!/usr/bin/env python3
"""Two logins over TLS with CPython's ssl module (OpenSSL), the second offering the TLS
session the first was given: prints, for each, whether OpenSSL says the session was
reused and what `SHOW STATUS LIKE 'Ssl_sessions_reused'` answers on that link.

usage: tls_resume.py PORT CA_FILE
"""

import hashlib
import socket
import ssl
import struct
import sys

CAPABILITIES = 0x0200 | 0x8000 | 0x80000 | 0x0001  # PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | LONG_PASSWORD
SSL = 0x0800


def read_packet(sock):
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return data
    head = exactly(4)
    return exactly(head[0] | head[1] << 8 | head[2] << 16)


def write_packet(sock, seq, payload):
    sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)


def login(port, context, session):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    greeting = read_packet(sock)
    rest = greeting[greeting.index(b"\0", 1) + 1:]
    scramble = rest[4:12] + rest[31:43]
    caps = CAPABILITIES | SSL
    write_packet(sock, 1, struct.pack("<IIB23x", caps, 1 << 24, 45))
    sock = context.wrap_socket(sock, server_hostname="localhost", session=session)
    stage1 = hashlib.sha1(b"app").digest()
    proof = bytes(a ^ b for a, b in zip(stage1, hashlib.sha1(scramble + hashlib.sha1(stage1).digest()).digest()))
    write_packet(sock, 2, struct.pack("<IIB23x", caps, 1 << 24, 45) + b"app\0" + bytes([len(proof)]) + proof
                 + b"mysql_native_password\0")
    answer = read_packet(sock)
    if answer[:1] != b"\0":
        raise RuntimeError(f"login refused: {answer!r}")
    return sock


def sessions_reused(sock):
    """The value of the Ssl_sessions_reused row (column count, two column definitions, EOF,
    the row, EOF)."""
    write_packet(sock, 0, b"\x03SHOW STATUS LIKE 'Ssl_sessions_reused'")
    packets = [read_packet(sock) for _ in range(6)]
    row = packets[4]
    name_len = row[0]
    value = row[1 + name_len + 1:1 + name_len + 1 + row[1 + name_len]]
    return value.decode()


def main():
    port, ca = int(sys.argv[1]), sys.argv[2]
    context = ssl.create_default_context(cafile=ca)
    session = None
    for attempt in ("first", "second"):
        sock = login(port, context, session)
        status = sessions_reused(sock)
        print(f"{attempt} reused={int(sock.session_reused)} status={status}")
        session = sock.session
        write_packet(sock, 0, b"\x01")
        sock.close()


if __name__ == "__main__":
    main()
