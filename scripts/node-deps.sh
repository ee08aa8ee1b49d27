#!/usr/bin/env bash
# Installs what the tests drive from Node.js into ~/.cache/edgekv-node (or
# $EDGEKV_NODE_DIR): workerd (Cloudflare's Workers runtime, whose KV binding
# reads edgekv in tests/workerd.rs) and playwright-core (drives Debian's
# chromium in the dashboard's browser test), at the versions of
# scripts/node/package-lock.json. Installs node, npm and chromium from Debian
# when missing. Prints the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${EDGEKV_NODE_DIR:-$HOME/.cache/edgekv-node}"
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  "$here/install-packages.sh" --no-install-recommends "${missing[@]}" >&2
fi
mkdir -p "$dir"
# Installed once per lock file: a changed lock installs again.
if ! cmp -s "$here/node/package-lock.json" "$dir/package-lock.json" \
   || [ ! -x "$dir/node_modules/.bin/workerd" ]; then
  cp "$here/node/package.json" "$here/node/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
"$dir/node_modules/.bin/workerd" --version >/dev/null
echo "$dir"
