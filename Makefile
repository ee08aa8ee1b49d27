# The two commands of the README: `make dev` and `make test`.
# One persistent target dir outside the clone: RocksDB's C++ build is done once.
CARGO_TARGET_DIR ?= $(HOME)/.cache/edgekv-target
export CARGO_TARGET_DIR
ARGS ?=

.PHONY: dev test lint deps build install schemathesis fuzz fuzz-ci bench bench-e2e bench-memory bench-sweep bench-fanout bench-outbox bench-instructions bench-server-instructions test-ha bench-stores bench-workerd

## Installs what is missing, builds, and runs `edgekv dev` (ARGS="..." adds flags).
dev: deps
	cargo run --locked -p edgekv -- dev $(ARGS)

## Runs the whole test suite (installs first what some tests drive edgekv with:
## promtool, systemd-analyze, and Python's gRPC clients in $(HOME)/.cache/edgekv-venv),
## then schemathesis against `edgekv dev` for 90 s (docs/openapi.yaml).
test: deps
	./scripts/test-deps.sh
	cargo test --locked --workspace --all-targets
	SCHEMATHESIS_MAX_TIME=$${SCHEMATHESIS_MAX_TIME:-90} ./scripts/schemathesis.sh

## Formatting and lints, as CI checks them.
## The origin over a Patroni cluster (two PostgreSQL nodes, synchronous
## replication, etcd): the primary killed under a write load (also in `make test`).
test-ha: deps
	./scripts/test-deps.sh
	cargo test --locked -p edgekv --test ha -- --nocapture

lint: deps
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

## Installs the edgekv binary into ~/.cargo/bin (on the PATH after rustup).
install: deps
	cargo install --locked --path crates/edgekv

## Builds the binary into $(CARGO_TARGET_DIR)/debug/edgekv.
build: deps
	cargo build --locked -p edgekv

## Fuzzes `edgekv dev` against docs/openapi.yaml with schemathesis (installed into
## ~/.cache/edgekv-venv if missing), every check on, for about 2.5 minutes: no server
## error, every answer as documented (ARGS="..." goes to `schemathesis run`).
schemathesis: build
	./scripts/schemathesis.sh $(ARGS)

## cargo-fuzz (libFuzzer) on every target for 60 s each: the codecs, cursors, route
## tables and break-glass orders (fuzz/), then the edge's HTTP handler, bulk and
## multipart bodies (fuzz/edge/, whose first build compiles RocksDB again). Installs
## cargo-fuzz if missing; builds go to ~/.cache/edgekv-fuzz-target. ARGS="TARGET..."
## runs only those.
fuzz: deps
	./scripts/fuzz.sh 60 $(ARGS)

## The fuzz targets CI runs: those of fuzz/ (pure crates, no RocksDB), 15 s each.
fuzz-ci: deps
	./scripts/fuzz.sh 15 --pure

## Benchmarks: hot path micro-costs (criterion), then sync propagation and origin
## write throughput. Figures go in benches/RESULTS.md by hand, with the machine.
bench: deps
	cargo bench --locked -p edgekv-edge --bench hot_path
	cargo run --locked --profile bench -p edgekv-benches --bin sync

## The origin's stores side by side, durability on: pgbench's TPS on the same
## PostgreSQL server, origin writes/s over RocksDB and over PostgreSQL (1 and 16
## clients), and propagation between two origins over one database
## (ARGS="SECONDS WRITES").
bench-stores: deps
	./scripts/test-deps.sh
	cargo build --locked --profile bench -p edgekv-benches
	$(CARGO_TARGET_DIR)/release/stores $(ARGS)

## A Worker on workerd doing hot env.KV.get() under wrk, with edgekv behind its
## KV binding vs workerd's bundled KV backend, alternating in one run
## (ARGS="SECONDS ROUNDS"; installs workerd and wrk if missing).
bench-workerd: deps
	./scripts/node-deps.sh >/dev/null
	./benches/need.sh wrk
	cargo build --locked --profile bench -p edgekv
	./benches/workerd.py $(CARGO_TARGET_DIR)/release/edgekv $(ARGS)

## The read path beside a bare hyper server, in one run: writes the table to
## benches/RESULTS.md (needs 2 cores for pinning; taskset from util-linux; installs
## wrk if missing, for the check of the load tool).
bench-e2e: deps
	./benches/need.sh wrk || echo "no wrk: the check of the load tool is skipped"
	cargo build --locked --profile bench -p edgekv -p edgekv-benches
	$(CARGO_TARGET_DIR)/release/e2e $(ARGS)

## Instructions per hot GET through the held path, counted by callgrind: exact
## where timings swing (installs valgrind if missing). ARGS=N requests.
bench-instructions: deps
	./benches/instructions.sh $(ARGS)

## User-space instructions per request of the whole bare server and the whole edge
## under load (callgrind; CACHE=1 adds a 2 MiB cache simulation).
bench-server-instructions: deps
	./benches/server-instructions.sh $(ARGS)

## Resident memory per key of the hot tier (ARGS=N keys, default 1,000,000).
bench-memory: deps
	cargo build --locked --profile bench -p edgekv -p edgekv-benches
	$(CARGO_TARGET_DIR)/release/memory $(ARGS)

## The writes' worst-case wait for an eviction sweep of a full 256 MiB hot tier
## (ARGS=N rounds, default 3).
bench-sweep: deps
	cargo build --locked --profile bench -p edgekv -p edgekv-benches
	$(CARGO_TARGET_DIR)/release/sweep $(ARGS)

## Control's fan-out: N simulated edges on one control (ARGS="EDGES PUSHES TICK_MS",
## default 1000 20 500): push latency to every edge, control CPU per push, memory
## per edge, and a reconnect storm that must issue no new route version.
bench-fanout: deps
	cargo build --locked --profile bench -p edgekv-benches
	$(CARGO_TARGET_DIR)/release/fanout $(ARGS)

## Whether queuing writes stalls cached reads: hot GET p50/p99/max at a fixed rate
## with the origin up, then stopped, then stopped with W writers filling the outbox
## (ARGS="RATE SECONDS WRITERS", default 2000 5 64), and the writes queued per second.
bench-outbox: deps
	cargo build --locked --profile bench -p edgekv-benches
	$(CARGO_TARGET_DIR)/release/outbox $(ARGS)

deps:
	@./scripts/install-deps.sh
