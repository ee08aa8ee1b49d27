#!/usr/bin/env bash
# Installs what the test suite drives edgekv with, beyond the build: promtool
# (Debian's prometheus package) to lint /metrics, systemd-analyze to verify the
# systemd units, PostgreSQL (the tests start throwaway servers of their own with
# its initdb and pg_ctl), Patroni and etcd (a two-node PostgreSQL cluster that
# fails over), the Python gRPC clients (scripts/python-venv.sh), and workerd,
# playwright-core and chromium (scripts/node-deps.sh).
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# The high-availability test (tests/ha.rs): a Patroni cluster with etcd.
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  ./install-packages.sh --no-install-recommends "${missing[@]}"
fi
./python-venv.sh >/dev/null
./node-deps.sh >/dev/null
