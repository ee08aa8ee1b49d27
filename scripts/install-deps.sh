#!/usr/bin/env bash
# Installs what building edgekv needs and the machine lacks: a Rust toolchain
# check, a C++ compiler and libclang (RocksDB's bindings are generated with bindgen).
set -euo pipefail

missing=()
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust from rustup.rs first" >&2; exit 1; }
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if ! ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so'; then
  missing+=(libclang-dev)
fi

exec "$(dirname "$0")/install-packages.sh" "${missing[@]}"
