#!/usr/bin/env bash
# Counts the user-space instructions per request of a whole server under load,
# with callgrind: the bare hyper server of benches/ answering its fixed 100 B body,
# then an edge answering hot GETs of 100 B values over KEYS keys (10,000 unless
# set). Everything a request costs in the process is in the count — hyper's
# parsing and encoding, tokio, the handler — and nothing of the kernel's (the
# two make the same system calls per request: one recvfrom, one writev). The
# difference of the two counts is what the edge adds per request, exactly, where
# timings on a shared machine swing by tens of percent. It is not a time: cache
# misses and atomics cost more than their count. With CACHE=1 callgrind also
# simulates a 2 MiB last-level cache and reports its data misses per request.
# The bare server is counted twice: as it is, and sending the two headers every
# hot answer of the edge carries (baseline_headers), the part of the difference
# that the edge's contract costs in HTTP work alone. With KEEP=DIR the callgrind
# dumps are kept in DIR (edge.out.1, bare.out.1, headed.out.1) for
# callgrind_annotate. KEYS and HOT_TIER_BYTES set the edge's keys and hot tier
# (KEYS=100000 HOT_TIER_BYTES=1048576 counts warm GETs: nearly every read a
# RocksDB read); CALLGRIND_ARGS adds callgrind options (--dump-instr=yes, say).
#
# Usage: benches/server-instructions.sh [REQUESTS]   (make bench-server-instructions)
set -euo pipefail
requests=${1:-20000}
keys=${KEYS:-10000}
token=0123456789abcdef0123456789abcdef
: "${CARGO_TARGET_DIR:=$HOME/.cache/edgekv-target}"
export CARGO_TARGET_DIR
bin=$CARGO_TARGET_DIR/release

"$(dirname "$0")/need.sh" valgrind
echo "building edgekv and the bare server (bench profile)" >&2
cargo build --locked --profile bench -p edgekv -p edgekv-benches >&2

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp "$dir"/*.out.1 "$KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
# Servers on core 0 and the load on core 1, where there are two cores: the
# command prefix that pins to core $1 (a prefix, not a function, so that `$!` of
# a server started in the background is the server's pid, as callgrind_control
# needs).
pin() {
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then echo "taskset -c $1"; fi
}
# The first http:// address a server printed (valgrind's own lines left out).
address() {
  for _ in $(seq 600); do
    url=$(grep -v "^==" "$1" 2>/dev/null | grep -o 'http://[0-9.:]*' | head -1 || true)
    [ -n "$url" ] && { echo "$url"; return; }
    sleep 0.1
  done
  echo "error: no server address in $1" >&2
  exit 1
}
load() {
  $(pin 1) "$bin/edgekv" bench --threads 1 --quiet "$@" >/dev/null
}
# Runs `requests` requests against a server under callgrind and prints the
# instructions (and, with CACHE=1, last-level data misses) per request.
count() {
  local pid=$1 out=$2
  shift 2
  load -c 16 --requests 2000 "$@"
  callgrind_control -z "$pid" >/dev/null 2>&1
  load -c 64 --requests "$requests" "$@"
  callgrind_control -d "$pid" >/dev/null 2>&1
  # The dump is written after the command returns.
  local summary=""
  for _ in $(seq 100); do
    summary=$(sed -n 's/^summary: *//p' "$out".1 2>/dev/null || true)
    [ -n "$summary" ] && break
    sleep 0.1
  done
  [ -n "$summary" ] || { echo "error: callgrind wrote no count to $out.1" >&2; exit 1; }
  read -r -a events <<<"$summary"
  # The requests the dump holds, counted in it: calls of hyper's service. The
  # zeroing can take effect after the counted run has begun (seen with the slow
  # warm edge: 12,549 of 20,000), so the run's size is not the divisor.
  local served
  served=$(served_requests "$out".1)
  [ "${served:-0}" -gt 0 ] || { echo "error: no request served in $out.1" >&2; exit 1; }
  [ "$served" -eq "$requests" ] || echo "note: the dump holds $served of the $requests requests" >&2
  if [ -n "${CACHE:-}" ]; then
    # Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    echo "$((events[0] / served)) instructions, $(((events[7] + events[8]) * 100 / served))/100 last-level data misses per request"
  else
    echo "$((events[0] / served)) instructions per request"
  fi
}
# Calls of `HttpService::call` (one per request) in a callgrind dump. Names are
# compressed in the format: `cfn=(id) name` the first time, `cfn=(id)` after.
served_requests() {
  awk '
    /^c?fn=\([0-9]+\)/ {
      match($0, /\([0-9]+\)/); id = substr($0, RSTART, RLENGTH)
      rest = substr($0, RSTART + RLENGTH)
      if (rest != "") names[id] = rest
      callee = ($0 ~ /^cfn=/) ? id : ""
      next
    }
    /^calls=/ {
      if (callee != "" && names[callee] ~ /HttpService<B1>>::call$/) {
        split(substr($0, 7), n, " "); total += n[1]
      }
      callee = ""
    }
    END { print total + 0 }
  ' "$1"
}
callgrind=(valgrind --tool=callgrind ${CALLGRIND_ARGS:-})
[ -n "${CACHE:-}" ] && callgrind+=(--cache-sim=yes --LL=2097152,16,64)

echo bench-credential >"$dir/credential"
echo "starting an origin, and an edge under callgrind (slow: about a minute)" >&2
$(pin 1) "$bin/edgekv" origin --data-dir "$dir/origin" --environment bench \
  --credential-file "$dir/credential" --build b1=127.0.0.1:0 >"$dir/origin.log" 2>&1 &
pids+=($!)
origin=$(address "$dir/origin.log")
$(pin 0) "${callgrind[@]}" --callgrind-out-file="$dir/edge.out" "$bin/edgekv" edge \
  --origin "$origin" --environment bench --credential-file "$dir/credential" \
  --data-dir "$dir/edge" --http 127.0.0.1:0 --admin 127.0.0.1:0 --account bench \
  --token "$token" --hot-tier-bytes "${HOT_TIER_BYTES:-1073741824}" >"$dir/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")
edge=$(address "$dir/edge.log")
kv=(--url "$edge" --token "$token" --account bench)
load "${kv[@]}" --keys "$keys" --prime --requests 1 --json "$dir/fill.json"
namespace=$(sed -n 's/.*"namespace": *"\([0-9a-f]*\)".*/\1/p' "$dir/fill.json")
[ -n "$namespace" ] || { echo "error: the fill named no namespace" >&2; exit 1; }
echo "counting $requests hot GETs over $keys keys" >&2
edge_count=$(count "$edge_pid" "$dir/edge.out" "${kv[@]}" --namespace "$namespace" --no-fill --keys "$keys")

path="/client/v4/accounts/bench/storage/kv/namespaces/$namespace/values/bench-00000001"
# The bare server as it is, then also sending the edge's two headers.
bare_counts=()
for kind in bare headed; do
  echo "starting the bare hyper server ($kind) under callgrind" >&2
  program=baseline
  [ "$kind" = headed ] && program=baseline_headers
  $(pin 0) "${callgrind[@]}" --callgrind-out-file="$dir/$kind.out" "$bin/$program" \
    --listen 127.0.0.1:0 --body-size 100 >"$dir/$kind.log" 2>&1 &
  bare_pid=$!
  pids+=("$bare_pid")
  bare=$(address "$dir/$kind.log")
  bare_counts+=("$(count "$bare_pid" "$dir/$kind.out" --raw --token "$token" --url "$bare$path")")
done

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')"
echo "bare hyper server: ${bare_counts[0]}"
echo "bare hyper server + the edge's two headers: ${bare_counts[1]}"
echo "edge, GET over $keys keys (hot tier ${HOT_TIER_BYTES:-1073741824} B): $edge_count ($revision)"
