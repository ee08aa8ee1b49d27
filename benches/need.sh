#!/usr/bin/env bash
# Installs the Debian package of each command named that is missing (the
# benchmarks' tools, valgrind and wrk, whose packages are named as the commands
# are), with sudo when not root.
set -euo pipefail
missing=()
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "${missing[@]}" || {
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
}
