#!/usr/bin/env bash
# Installs each of the benchmarks' tools named (valgrind, wrk) that is missing:
# their Debian packages are named as the commands are.
set -euo pipefail
missing=()
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
exec "$(dirname "$0")/../scripts/install-packages.sh" "${missing[@]}"
