#!/usr/bin/env bash
# Counts the instructions of a hot GET through the held path (in process, one key
# of 100 B, the request's header map reused as a hyper connection does) with
# callgrind. Timings on a shared machine swing by tens of percent from run to
# run; an instruction count is exact, so it shows a change to the hot path that
# timings cannot. It is not a time: cache misses and atomics cost more than their
# count. Compare builds by running it on each.
#
# With KEEP=FILE the callgrind dump is kept there, for callgrind_annotate.
#
# Usage: benches/instructions.sh [REQUESTS]   (make bench-instructions)
set -euo pipefail
requests=${1:-100000}
: "${CARGO_TARGET_DIR:=$HOME/.cache/edgekv-target}"
export CARGO_TARGET_DIR

"$(dirname "$0")/need.sh" valgrind

echo "building the hot path bench (bench profile)" >&2
bin=$(cargo bench --locked -p edgekv-edge --bench hot_path --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$bin" ] || { echo "error: the hot_path bench did not build" >&2; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "counting $requests held-path requests under callgrind (about a minute)" >&2
EDGEKV_HELD_REQUESTS=$requests valgrind --tool=callgrind --toggle-collect='*held_requests*' \
  --callgrind-out-file="$out" "$bin" >/dev/null 2>&1
[ -n "${KEEP:-}" ] && cp "$out" "$KEEP"
total=$(sed -n 's/^summary: *//p' "$out")
[ -n "$total" ] || { echo "error: callgrind wrote no count" >&2; exit 1; }
echo "$((total / requests)) instructions per hot GET (held path, one key, $requests requests; $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes'))"
