#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: Debian's MariaDB server, Galera,
# client, sysbench and tools; cargo-nextest; for the driver tests a JDK with MariaDB
# Connector/J, and a Python virtualenv (.venv) with MySQL Connector/Python. Runs as root
# on Debian 12.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'setup: %s\n' "$*" >&2; }

packages=(mariadb-server mariadb-client galera-4 rsync sysbench haproxy iproute2 lsof procps openssl python3-venv prometheus openjdk-17-jdk-headless libmariadb-java nodejs node-mysql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || { log "need root to install packages"; exit 1; }
  apt-get update -qq
  # the package's own service must not start: the cluster script runs its own servers
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

connector=mysql-connector-python==26.10.0
if [ ! -x "$root/.venv/bin/python" ] || ! "$root/.venv/bin/python" -c 'import mysql.connector' 2>/dev/null; then
  log "creating .venv with $connector"
  python3 -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --disable-pip-version-check "$connector"
fi

"$root/scripts/certs.sh" >/dev/null
