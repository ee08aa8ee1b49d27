#!/usr/bin/env bash
# Fuzzes the HTTP API of `edgekv dev` against docs/openapi.yaml with schemathesis
# (PyPI), every check on: no answer may be a server error, and every answer must
# conform to the document (status, content type, headers, body schema; 405 with
# `Allow` for other methods; 401/403 without a valid token). Exits non-zero on
# any failure.
#
#   make schemathesis                      # builds, then runs this
#   scripts/schemathesis.sh [FLAGS]        # FLAGS go to `schemathesis run`
#
# Settings (environment):
#   SCHEMATHESIS_MAX_TIME  seconds of fuzzing (default 150)
#   SCHEMATHESIS_WORKERS   concurrent workers (default 2)
#   SCHEMATHESIS_SEED      a seed, to replay a run
#   EDGEKV_BIN             the binary (default $CARGO_TARGET_DIR/debug/edgekv)
#   EDGEKV_VENV            the virtualenv schemathesis lives in (~/.cache/edgekv-venv)
#
# It (a) installs schemathesis into the virtualenv when missing, (b) starts
# `edgekv dev` on free loopback ports over a fresh data dir with a token of its
# own and creates two namespaces (one for `deleteNamespace`), (c) runs schemathesis
# with scripts/schemathesis.toml and (d) stops `edgekv dev`. The JUnit report goes
# to $CARGO_TARGET_DIR/schemathesis-report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The version whose CLI, checks and configuration this script and
# scripts/schemathesis.toml are written for.
SCHEMATHESIS_VERSION=4.32.5
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgekv-target}"
bin="${EDGEKV_BIN:-$CARGO_TARGET_DIR/debug/edgekv}"
venv="${EDGEKV_VENV:-$HOME/.cache/edgekv-venv}"
max_time="${SCHEMATHESIS_MAX_TIME:-150}"
workers="${SCHEMATHESIS_WORKERS:-2}"
report_dir="$CARGO_TARGET_DIR/schemathesis-report"
account=dev

[ -x "$bin" ] || { echo "error: $bin not found; run \`make build\` first" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || ./scripts/install-packages.sh curl

# (a) schemathesis, pinned, in the project's virtualenv (scripts/python-venv.sh
# installs the test suite's Python clients into the same one).
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n1)" != "$SCHEMATHESIS_VERSION" ]; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1 \
    || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    ./scripts/install-packages.sh python3 python3-venv
  fi
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# (b) `edgekv dev`, on ports the kernel picks (its banner says which).
work=$(mktemp -d "${TMPDIR:-/tmp}/edgekv-schemathesis.XXXXXX")
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
pid=""
cleanup() {
  local status=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -s "$work/edgekv.log" ]; then
    echo "--- the last lines of edgekv dev's log ($work/edgekv.log is removed):" >&2
    tail -n 40 "$work/edgekv.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

env -u EDGEKV_CONFIG "$bin" dev \
  --http 127.0.0.1:0 --admin 127.0.0.1:0 --control-listen 127.0.0.1:0 \
  --data-dir "$work/data" --account "$account" --token "$token" \
  >"$work/banner" 2>"$work/edgekv.log" &
pid=$!

url=""
for _ in $(seq 1 600); do
  url=$(sed -n 's|^  edge: *\(http://[^ ]*\)$|\1|p' "$work/banner")
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "error: edgekv dev exited before it was serving" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "error: edgekv dev printed no edge URL within 60 s" >&2; exit 1; }
echo "edgekv dev is serving on $url (pid $pid, data in $work/data)"

kv="$url/client/v4/accounts/$account/storage/kv"
create_namespace() {
  curl -fsS --max-time 30 -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -X POST "$kv/namespaces" -d "{\"title\":\"$1\"}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["result"]["id"])'
}
namespace=$(create_namespace schemathesis)
spare=$(create_namespace schemathesis-spare)
# A few keys for reads to find.
for key in a 0 config%2Fflags; do
  curl -fsS --max-time 30 -o /dev/null -H "Authorization: Bearer $token" \
    -X PUT "$kv/namespaces/$namespace/values/$key" --data-binary '{"dark_mode":true}'
done
curl -fsS --max-time 30 -o /dev/null -H "Authorization: Bearer $token" \
  -X PUT "$kv/namespaces/$namespace/values/user%3A42" -F value=alice -F 'metadata={"plan":"pro"}'
echo "namespaces: $namespace, spare $spare"

# (c) schemathesis: every check, bounded in time (a hung run is killed well after).
export EDGEKV_TOKEN="$token" EDGEKV_ACCOUNT="$account" EDGEKV_NAMESPACE="$namespace" \
  EDGEKV_SPARE_NAMESPACE="$spare"
seed=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && seed=(--seed "$SCHEMATHESIS_SEED")
set +e
# From the scratch dir: schemathesis and hypothesis keep their caches in the
# working directory (.schemathesis/, .hypothesis/), which goes with it.
cd "$work"
run_schemathesis() {
  timeout --kill-after=10 "$((max_time + 180))" \
    "$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" run "$root/docs/openapi.yaml" \
    --url "$url" \
    --checks all \
    --max-time "$max_time" \
    --workers "$workers" \
    --request-timeout 30 \
    --report junit --report-dir "$report_dir" \
    --no-color \
    "$@" 2>&1 | tee "$work/schemathesis.out"
  return "${PIPESTATUS[0]}"
}
run_schemathesis "${seed[@]}" "$@"
status=$?
# schemathesis' own generator can crash (seen once: a hypothesis "AST constructor
# recursion depth mismatch" in its coverage phase) with no failure found in the
# API: that run proves nothing either way, so it runs once more, with a new seed.
if [ "$status" -ne 0 ] && grep -q "Runtime Error" "$work/schemathesis.out" \
  && ! grep -q "= FAILURES =" "$work/schemathesis.out"; then
  echo "schemathesis itself failed (a runtime error, no API failure): running it once more"
  run_schemathesis "$@"
  status=$?
fi
set -e
if ! kill -0 "$pid" 2>/dev/null; then
  echo "error: edgekv dev died during the run" >&2
  [ "$status" -ne 0 ] || status=1
fi
cd "$root"
echo "schemathesis exited $status (report: $report_dir)"
# (d) the EXIT trap stops edgekv dev.
exit "$status"
