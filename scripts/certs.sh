#!/usr/bin/env bash
# Creates a throw-away PKI for local testing: a CA, a server certificate valid for
# localhost/127.0.0.1 (used by Sluice's client listener and by the MariaDB nodes), a client
# certificate, and a second, unrelated CA with its own client certificate (for tests that
# must be refused). Idempotent: existing files are kept.
#
# usage: scripts/certs.sh [DIR]   (default: certs/ at the repository root)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/certs}
mkdir -p "$dir"
cd "$dir"

command -v openssl >/dev/null || { echo "certs.sh: openssl is required" >&2; exit 1; }

days=3650
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

make_ca() { # name subject
  [ -f "$1.pem" ] && return 0
  openssl req -x509 "${ec[@]}" -days "$days" -subj "$2" \
    -keyout "$1-key.pem" -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

make_leaf() { # name ca subject extended-key-usage [subjectAltName]
  [ -f "$1.pem" ] && return 0
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$4"
    [ -n "${5:-}" ] && echo "subjectAltName=$5"
  } >"$ext"
  openssl req "${ec[@]}" -subj "$3" -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial \
    -days "$days" -extfile "$ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$ext"
}

make_ca ca "/O=Sluice test/CN=Sluice test CA"
make_leaf server ca "/O=Sluice test/CN=localhost" serverAuth "DNS:localhost,IP:127.0.0.1"
make_leaf client ca "/O=Sluice test/CN=app_tls" clientAuth
make_ca other-ca "/O=Elsewhere/CN=Unrelated CA"
make_leaf other-client other-ca "/O=Elsewhere/CN=app_tls" clientAuth
chmod 600 ./*-key.pem
echo "certificates in $dir"
