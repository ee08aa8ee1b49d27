#!/usr/bin/env bash
# Runs edgekv's cargo-fuzz targets (libFuzzer), each for SECONDS, and exits
# non-zero if any of them found a crash, printing the crash file.
#
#   make fuzz                              # every target, 60 s each
#   make fuzz-ci                           # the targets of fuzz/, 15 s each (CI)
#   scripts/fuzz.sh SECONDS [TARGET...]    # the named targets (default: all)
#   scripts/fuzz.sh SECONDS --pure         # the targets of fuzz/ only
#
# Targets:
#   fuzz/       (pure crates and the in-memory store; built in about a minute)
#     record_decode, list_cursor, route_table, breakglass_order
#   fuzz/edge/  (the edge's HTTP handler; links RocksDB, whose first build in
#                the fuzz target dir takes about 20 minutes on two cores)
#     http_handler, bulk_body, multipart
#
# Settings (environment):
#   EDGEKV_FUZZ_TARGET_DIR  the build dir, kept between runs and clones
#                           (default ~/.cache/edgekv-fuzz-target); never the
#                           workspace's CARGO_TARGET_DIR, whose builds have other flags
#   EDGEKV_FUZZ_CORPUS      where the corpus grows between runs
#                           (default ~/.cache/edgekv-fuzz-corpus/TARGET); the seeds in
#                           fuzz/corpus/TARGET are read, never written
#   FUZZ_SANITIZER          address (default) or none
#   FUZZ_ARGS               more libFuzzer flags, e.g. "-jobs=2 -workers=2"
#
# The toolchain is stable: cargo-fuzz passes nightly-only flags (-Zsanitizer),
# which RUSTC_BOOTSTRAP=1 lets stable rustc take. A crash is kept in
# fuzz/artifacts/TARGET/ (fuzz/edge/artifacts/TARGET/ for the edge's targets);
# replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run [--fuzz-dir fuzz/edge] TARGET CRASH_FILE
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The cargo-fuzz this script is written for.
CARGO_FUZZ_VERSION=0.13.2
PURE=(record_decode list_cursor route_table breakglass_order)
EDGE=(http_handler bulk_body multipart)

usage() {
    echo "usage: $0 SECONDS [--pure | TARGET...]  (targets: ${PURE[*]} ${EDGE[*]})" >&2
    exit 2
}
[ $# -ge 1 ] || usage
seconds=$1
shift
[[ $seconds =~ ^[0-9]+$ ]] || usage
if [ $# -eq 0 ]; then
    targets=("${PURE[@]}" "${EDGE[@]}")
elif [ "$1" = --pure ]; then
    targets=("${PURE[@]}")
else
    targets=("$@")
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
target_dir="${EDGEKV_FUZZ_TARGET_DIR:-$HOME/.cache/edgekv-fuzz-target}"
corpus_root="${EDGEKV_FUZZ_CORPUS:-$HOME/.cache/edgekv-fuzz-corpus}"
sanitizer="${FUZZ_SANITIZER:-address}"
read -r -a extra <<<"${FUZZ_ARGS:-}"

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    # Not into the workspace's CARGO_TARGET_DIR (make exports it): a temp dir.
    env -u CARGO_TARGET_DIR cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# The fuzz dir (its own cargo workspace) of a target.
fuzz_dir() {
    local t
    for t in "${PURE[@]}"; do [ "$t" = "$1" ] && { echo fuzz; return; }; done
    for t in "${EDGE[@]}"; do [ "$t" = "$1" ] && { echo fuzz/edge; return; }; done
    echo "error: unknown fuzz target $1" >&2
    usage
}

# Release builds with debug assertions and overflow checks (`-a`): an overflow is
# a finding even where production wraps.
fuzz() {
    cargo fuzz "$1" --fuzz-dir "$2" --target-dir "$target_dir" --sanitizer "$sanitizer" \
        --debug-assertions "${@:3}"
}

# Each fuzz dir is built once, before any target runs, so SECONDS is fuzzing.
dirs=()
for t in "${targets[@]}"; do
    d=$(fuzz_dir "$t")
    [[ " ${dirs[*]} " == *" $d "* ]] || dirs+=("$d")
done
for d in "${dirs[@]}"; do
    echo "== building $d"
    fuzz build "$d"
done

failed=()
for t in "${targets[@]}"; do
    d=$(fuzz_dir "$t")
    corpus="$corpus_root/$t"
    artifacts="$root/$d/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    before=$(ls -1 "$artifacts" | wc -l)
    flags=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    # Each input of the edge's targets starts an edge (its outbox thread, tokio
    # tasks), so nearly every input ends with memory still held, and libFuzzer
    # would run a LeakSanitizer scan after each: a fifth of the speed. The pure
    # targets keep the check.
    [ "$d" = fuzz/edge ] && flags+=(-detect_leaks=0)
    echo "== $t: $seconds s (corpus $corpus, seeds fuzz/corpus/$t)"
    if ! fuzz run "$d" "$t" "$corpus" "$root/fuzz/corpus/$t" -- "${flags[@]}" "${extra[@]}"; then
        failed+=("$t")
        # The newest artifact is this run's crash (or timeout, or leak).
        crash=$(ls -1t "$artifacts" | head -n 1)
        if [ -n "$crash" ] && [ "$(ls -1 "$artifacts" | wc -l)" -gt "$before" ]; then
            echo "== $t: crash file $artifacts/$crash"
            head -c 512 "$artifacts/$crash" | od -A d -c | head -n 20
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (crash files under fuzz/artifacts/ and fuzz/edge/artifacts/)" >&2
    exit 1
fi
echo "fuzzing passed: ${targets[*]} (${seconds} s each)"
