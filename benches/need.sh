#!/usr/bin/env bash
# Installs the Debian package of each command named that is missing (the
# benchmarks' tools: valgrind, wrk), with sudo when not root.
set -euo pipefail
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 && continue
  echo "installing $command"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$command"
done
