#!/usr/bin/env bash
# A real local MariaDB cluster on 127.0.0.1 for the demo and the integration tests:
#   Galera nodes  node1 13306, node2 13307, node3 13308  (wsrep_gtid_mode, rsync SST)
#   async replicas replica1 13309, replica2 13310        (GTID replication from node3)
# Users: app/app and app_tls/app_tls (all privileges, from 127.0.0.1), monitor/monitor,
# sluice_cluster/sluice_cluster (the proxies' shared configuration, schema sluice), repl/repl; database sbtest; max_allowed_packet 64M everywhere; TLS on every node with the
# certificates of scripts/certs.sh.
#
# usage: scripts/cluster.sh up|down|status
#   up      idempotent: starts what is not running, waits until every Galera node is Synced
#           and both replicas replicate
#   down    stops exactly the servers this script started (by their pid files)
#   status  one line per server
#
# Environment: SLUICE_CLUSTER_DIR (default /tmp/sluice-cluster) holds datadirs, configs,
# logs and sockets. It must be reachable by the mysql user, which the servers run as
# (rsync SST drops privileges and cannot run as root).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${SLUICE_CLUSTER_DIR:-/tmp/sluice-cluster}
galera_nodes=(node1 node2 node3)
replicas=(replica1 replica2)
all_nodes=("${galera_nodes[@]}" "${replicas[@]}")

declare -A port=([node1]=13306 [node2]=13307 [node3]=13308 [replica1]=13309 [replica2]=13310)
declare -A index=([node1]=1 [node2]=2 [node3]=3 [replica1]=4 [replica2]=5)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

ensure_packages() {
  local missing=()
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  [ -f /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
  command -v rsync >/dev/null || missing+=(rsync)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v lsof >/dev/null || missing+=(lsof)
  command -v pgrep >/dev/null || missing+=(procps)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

galera_running() {
  local n
  for n in "${galera_nodes[@]}"; do running "$n" && return 0; done
  return 1
}

sock() { echo "$work/$1/mysqld.sock"; }
# Our own record of the pid we started (mariadbd writes its pid file only later).
pidfile() { echo "$work/$1/started.pid"; }

client() { # node [mariadb args...]
  local node=$1; shift
  mariadb --no-defaults -uroot --socket="$(sock "$node")" -N -B "$@"
}

replica_status() { # node: SHOW REPLICA STATUS as "Field: value" lines
  mariadb --no-defaults -uroot --socket="$(sock "$1")" -B -e 'SHOW REPLICA STATUS\G'
}

# Running means: the pid we recorded is alive and is still our mariadbd (a pid file left
# over from before a reboot may name an unrelated process).
running() {
  local pf pid
  pf=$(pidfile "$1")
  [ -f "$pf" ] || return 1
  pid=$(cat "$pf")
  kill -0 "$pid" 2>/dev/null && grep -qF "$work/$1/my.cnf" "/proc/$pid/cmdline" 2>/dev/null
}

write_config() { # node
  local node=$1 i=${index[$1]} dir="$work/$1"
  local base=$((14557 + 10 * i))  # node1: 14567 gcomm, 14568 IST, 14569 SST
  {
    cat <<CNF
[mariadbd]
user = mysql
datadir = $dir/data
socket = $dir/mysqld.sock
pid-file = $dir/mysqld.pid
log-error = $dir/error.log
port = ${port[$node]}
bind-address = 127.0.0.1
skip-name-resolve
max_allowed_packet = 64M
max_connections = 2000
performance_schema = OFF
innodb_buffer_pool_size = 64M
innodb_log_file_size = 32M
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0
default_storage_engine = InnoDB
binlog_format = ROW
log_bin = $dir/data/binlog
log_slave_updates = ON
ssl_ca = $work/certs/ca.pem
ssl_cert = $work/certs/server.pem
ssl_key = $work/certs/server-key.pem
CNF
    if [[ $node == node* ]]; then
      cat <<CNF
server_id = 1
gtid_domain_id = $((10 + i))
innodb_autoinc_lock_mode = 2
wsrep_on = ON
wsrep_provider = /usr/lib/galera/libgalera_smm.so
wsrep_cluster_name = sluice-local
wsrep_cluster_address = gcomm://127.0.0.1:14567,127.0.0.1:14577,127.0.0.1:14587
wsrep_node_name = $node
wsrep_node_address = 127.0.0.1
# Galera's own failure-detection timeouts (evs.*) stay at their defaults: shortened ones
# (3 s / 6 s) made two survivors on a busy 2-core machine miss each other's install
# messages after a kill and fall into a non-primary component.
wsrep_provider_options = "gmcast.listen_addr=tcp://127.0.0.1:$((base + 10));ist.recv_addr=127.0.0.1:$((base + 11));gcache.size=64M"
wsrep_sst_receive_address = 127.0.0.1:$((base + 12))
wsrep_sst_method = rsync
# A rejoining node copies from node3 (the lowest-priority writer candidate), so that the
# rsync SST, which blocks its donor, does not stall the writer.
wsrep_sst_donor = $([ "$node" = node3 ] && echo "node2," || echo "node3,")
wsrep_gtid_mode = ON
wsrep_gtid_domain_id = 1

# The SST script would otherwise pick up the ssl_* settings above and ask for stunnel.
[sst]
ssl-mode = DISABLED
CNF
    else
      cat <<CNF
server_id = $i
gtid_domain_id = $i
read_only = ON
CNF
    fi
  } >"$dir/my.cnf"
}

# A freshly initialised datadir is made once and copied: cheaper than running
# mariadb-install-db three times.
template() {
  local t="$work/template"
  if [ ! -f "$t/.done" ]; then
    rm -rf "$t"
    mkdir -p "$t"
    chown mysql:mysql "$t"
    mariadb-install-db --no-defaults --user=mysql --datadir="$t" --auth-root-authentication-method=socket \
      --skip-test-db >"$work/install-db.log" 2>&1 || die "mariadb-install-db failed, see $work/install-db.log"
    touch "$t/.done"
  fi
  echo "$t"
}

prepare_node() { # node
  local node=$1 dir="$work/$1"
  mkdir -p "$dir"
  if [ ! -d "$dir/data" ]; then
    if [[ $node == replica* ]] || ! galera_running; then
      cp -a "$(template)" "$dir/data"
      rm -f "$dir/data/.done"
    else
      mkdir -p "$dir/data"   # joiners receive node1's data by SST
    fi
  fi
  write_config "$node"
  chown -R mysql:mysql "$dir"
}

start_node() { # node [extra mariadbd args]
  local node=$1; shift
  running "$node" && return 0
  prepare_node "$node"
  rm -f "$(sock "$node")"
  log "starting $node on port ${port[$node]}"
  # setsid: the servers must outlive this script and its terminal
  setsid mariadbd --defaults-file="$work/$node/my.cnf" "$@" </dev/null >>"$work/$node/stdout.log" 2>&1 &
  # $! is setsid's pid, which is mariadbd's only when setsid did not have to fork: record
  # the server's own pid
  local launched=$! pid="" _
  # up to 30 s: a loaded machine can take that long to exec the server
  for _ in $(seq 1 300); do
    pid=$(server_pid "$node")
    [ -n "$pid" ] && break
    sleep 0.1
  done
  echo "${pid:-$launched}" >"$(pidfile "$node")"
}

server_pid() { # node: the pid of the mariadbd running with this node's config, if any
  local p
  for p in $(pgrep -f -- "--defaults-file=$work/$1/my.cnf"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = mariadbd ] && { echo "$p"; return; }
  done
}

wait_until() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
    sleep 0.2
  done
}

synced() { [ "$(client "$1" -e "SHOW STATUS LIKE 'wsrep_local_state'" 2>/dev/null | cut -f2)" = 4 ]; }
node_alive() {
  running "$1" || die "$1 is not running, see $work/$1/error.log"
  client "$1" -e 'SELECT 1' >/dev/null 2>&1
}
replicating() {
  local status
  status=$(replica_status "$1" 2>/dev/null)
  grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

bootstrap_sql() {
  cat <<'SQL'
CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app';
GRANT ALL PRIVILEGES ON *.* TO 'app'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'app_tls'@'127.0.0.1' IDENTIFIED BY 'app_tls';
GRANT ALL PRIVILEGES ON *.* TO 'app_tls'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'app_local'@'127.0.0.1' IDENTIFIED BY 'app_local';
GRANT ALL PRIVILEGES ON *.* TO 'app_local'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'monitor'@'127.0.0.1' IDENTIFIED BY 'monitor';
GRANT USAGE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO 'monitor'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'sluice_cluster'@'127.0.0.1' IDENTIFIED BY 'sluice_cluster';
GRANT ALL PRIVILEGES ON sluice.* TO 'sluice_cluster'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS sbtest;
SQL
}

cmd_up() {
  ensure_packages
  mkdir -p "$work"
  chmod 755 "$work"
  # The servers get a copy of the repository's test PKI that the mysql user may read.
  "$root/scripts/certs.sh" >/dev/null
  rm -rf "$work/certs"
  cp -r "$root/certs" "$work/certs"
  chown -R mysql:mysql "$work/certs"

  # A Galera node that is down rejoins with an empty datadir and a full (small) rsync SST:
  # simpler and more reliable than IST from a possibly stale gcache. With nothing running
  # at all, the whole cluster starts afresh: it is a test fixture, not a place for data.
  local node any=0
  for node in "${all_nodes[@]}"; do running "$node" && any=1; done
  if [ $any = 0 ]; then
    for node in "${all_nodes[@]}"; do rm -rf "${work:?}/$node"; done
    start_node node1 --wsrep-new-cluster
  fi
  if ! running node1; then
    rm -rf "${work:?}/node1/data"
    start_node node1
  fi
  wait_until 60 "node1 to accept connections" node_alive node1
  wait_until 60 "node1 to be Synced" synced node1
  for node in node2 node3; do
    running "$node" || { rm -rf "${work:?}/$node/data"; start_node "$node"; }
  done
  for node in node2 node3; do
    wait_until 120 "$node to accept connections" node_alive "$node"
    wait_until 60 "$node to be Synced" synced "$node"
  done
  # after every node joined, so that each node's binlog holds these events
  bootstrap_sql | client node1

  # The replicas follow node3 (with GTIDs, so they could follow any node whose binlog
  # reaches back far enough); the failover tests never kill node3.
  for r in "${replicas[@]}"; do start_node "$r"; done
  for r in "${replicas[@]}"; do
    wait_until 60 "$r to accept connections" node_alive "$r"
    if ! replicating "$r"; then
      client "$r" -e "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=13308,
        MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos; START SLAVE;"
    fi
  done
  for r in "${replicas[@]}"; do
    wait_until 60 "$r to replicate" replicating "$r"
  done
  # Servers that were already running take up this repository's certificates.
  for node in "${all_nodes[@]}"; do client "$node" -e 'FLUSH SSL'; done
  wait_until 30 "replicas to receive the users" \
    bash -c "$(declare -f client sock); work='$work'; for r in ${replicas[*]}; do
      [ \"\$(client \$r -e \"SELECT COUNT(*) FROM mysql.user WHERE user='app'\")\" = 1 ] || exit 1; done"
  cmd_status
}

cmd_down() {
  local pids=() node pf
  for node in "${all_nodes[@]}"; do
    pf=$(pidfile "$node")
    if running "$node"; then
      log "stopping $node"
      pids+=("$(cat "$pf")")
      kill "$(cat "$pf")"
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "pid $pid did not stop, killing it"; kill -9 "$pid"; }
  done
  return 0
}

cmd_status() {
  local node
  for node in "${all_nodes[@]}"; do
    if ! running "$node"; then
      printf '%-9s %5s  stopped\n' "$node" "${port[$node]}"
    elif [[ $node == node* ]]; then
      printf '%-9s %5s  %s\n' "$node" "${port[$node]}" "$(client "$node" -e \
        "SELECT CONCAT('wsrep_local_state=', (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_LOCAL_STATE_COMMENT'), ' cluster_size=', (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_CLUSTER_SIZE'))" 2>&1)"
    else
      local st
      st=$(replica_status "$node" 2>&1)
      printf '%-9s %5s  io=%s sql=%s lag=%s\n' "$node" "${port[$node]}" \
        "$(awk '/Slave_IO_Running:/{print $2}' <<<"$st")" \
        "$(awk '/Slave_SQL_Running:/{print $2}' <<<"$st")" \
        "$(awk '/Seconds_Behind_Master:/{print $2}' <<<"$st")"
    fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
