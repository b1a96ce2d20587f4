#!/usr/bin/env bash
# One command from a fresh machine to a running proxy: installs the packages, creates the
# test certificates, starts the local Galera cluster and its replicas, builds Sluice and
# runs it in the foreground in front of them (Ctrl-C stops Sluice; the cluster stays up
# until `scripts/cluster.sh down`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh
scripts/cluster.sh up
cargo build --release

cat <<TEXT

Sluice is starting on 127.0.0.1:6033 in front of the local cluster. Connect with:

  mariadb -h127.0.0.1 -P6033 -uapp -papp                       # plain
  mariadb -h127.0.0.1 -P6033 -uapp_tls -papp_tls --ssl \\
          --ssl-ca=$root/certs/ca.pem --ssl-verify-server-cert  # TLS, verified

Stop Sluice with Ctrl-C; stop the databases with: scripts/cluster.sh down

TEXT
exec target/release/sluice run --config config/sluice.toml
