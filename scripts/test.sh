#!/usr/bin/env bash
# The whole test suite: installs what is missing, starts the local cluster if it is not
# running (and stops it again at the end, pass or fail), and runs every test with
# cargo-nextest. Extra arguments go to both `cargo nextest run` invocations.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh

# Servers this run starts are stopped when it ends; a cluster that was already up stays up.
before=$(scripts/cluster.sh status)
if grep -q stopped <<<"$before"; then
  trap 'scripts/cluster.sh down' EXIT
fi
scripts/cluster.sh up

# Everything but the failover and replay tests runs in parallel; those kill and stop
# servers of the shared cluster, so they run afterwards, one at a time.
faults='binary(failover) | binary(replay)'
status=0
cargo nextest run --no-fail-fast -E "not ($faults)" "$@" || status=$?
cargo nextest run --no-fail-fast -j 1 -E "$faults" "$@" || status=$?
exit $status
