#!/usr/bin/env bash
# Installs the Debian packages named, with sudo when not root: what
# install-deps.sh finds missing for the build, and the benchmarks' tools
# (benches/need.sh).
set -euo pipefail
[ $# -eq 0 ] && exit 0
echo "installing: $*"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install $*" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "$@"
