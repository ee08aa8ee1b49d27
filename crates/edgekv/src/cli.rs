//! The command line. Every flag can also be set with an `EDGEKV_*` environment
//! variable, and the role flags with a key of the `--config` TOML file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// edgekv: an edge key-value store with versioned routing.
#[derive(Debug, Parser)]
#[command(name = "edgekv", version, about, long_about = None)]
pub struct Cli {
    /// A TOML config file; flags and EDGEKV_* variables override its values.
    #[arg(long, global = true, env = "EDGEKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// How logs are written to stderr: `text` (colours only on a terminal) or
    /// `json` (one object per line).
    #[arg(long, global = true, env = "EDGEKV_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs every role in one process: a working edge on 127.0.0.1:8787.
    Dev(DevArgs),
    /// Runs an origin process: one or more builds over one store.
    Origin(OriginArgs),
    /// Runs an edge node.
    Edge(Box<EdgeArgs>),
    /// Runs the control plane.
    Control(ControlArgs),
    /// Talks to an edge's KV API.
    Kv(KvArgs),
    /// Registers and lists builds on the control plane.
    Build(BuildArgs),
    /// Starts and steers progressive deployments.
    Deploy(DeployArgs),
    /// Creates, revokes and lists API tokens on the control plane.
    Token(TokenArgs),
    /// Signed orders that work when everything else is down: pin edges to a build.
    #[command(name = "break-glass")]
    BreakGlass(BreakGlassArgs),
    /// A load generator for the KV API of any edge: fills keys, then runs a
    /// read/write mix and prints throughput and latency percentiles.
    Bench(BenchArgs),
}

/// How `edgekv bench` picks keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (rank i with probability ∝ 1/(i+1)^θ).
    Zipfian,
}

/// Flags of `edgekv bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The edge's base URL (with --raw: the URL every request GETs).
    #[arg(long, env = "EDGEKV_URL", default_value = "http://127.0.0.1:8787")]
    pub url: String,
    /// The bearer token.
    #[arg(long, env = "EDGEKV_TOKEN", hide_env_values = true, default_value = "")]
    pub token: String,
    /// The account id.
    #[arg(long, env = "EDGEKV_ACCOUNT", default_value = "dev")]
    pub account: String,
    /// The namespace to use (default: a new one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// How many keys to fill and spread the load over.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// The size of each value, in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Skips the fill (the keys exist already).
    #[arg(long)]
    pub no_fill: bool,
    /// After the fill, reads every key once (so an edge holds all of them hot).
    #[arg(long)]
    pub prime: bool,
    /// The share of reads, in percent; the rest are writes of the same keys.
    #[arg(long, default_value_t = 100.0)]
    pub reads: f64,
    /// How keys are picked.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// θ of the zipfian distribution.
    #[arg(long, default_value_t = 0.99)]
    pub theta: f64,
    /// Seed of the key picks (each connection derives its own from it). Default: a
    /// new one each run, so that consecutive runs do not replay the same keys into
    /// a cache; the report names the seed, to repeat a run exactly.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Each request is a bulk get of this many keys (0: single-key requests).
    #[arg(long, default_value_t = 0)]
    pub bulk_get: usize,
    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// Requests per second in all (open loop, latency from each request's due
    /// time); 0: as fast as the server answers (closed loop).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to run, e.g. 10s.
    #[arg(long, short = 'd', default_value = "10s")]
    pub duration: String,
    /// Stops after this many requests (or the duration, whichever comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// GETs --url as is: no namespace, no fill (for any HTTP server).
    #[arg(long)]
    pub raw: bool,
    /// Worker threads of the load generator (default: one per core it may use).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Busy-polls for answers instead of sleeping: the load generator's threads
    /// never idle. On one machine, a server's answer to a sleeping client costs
    /// the server's core a cross-core wake-up, which a client across a network
    /// never costs it; spinning measures the server without that.
    #[arg(long)]
    pub spin: bool,
    /// Writes the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// `edgekv break-glass ...`
#[derive(Debug, Args)]
pub struct BreakGlassArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BreakGlassCommand,
}

/// The `edgekv break-glass` subcommands.
#[derive(Debug, Subcommand)]
pub enum BreakGlassCommand {
    /// Generates an Ed25519 key pair: keep the private key offline; give edges
    /// (`--break-glass-key`) and control the public one.
    Keygen {
        /// Where to write the private key (mode 0600; never overwritten).
        #[arg(long)]
        private: PathBuf,
        /// Where to write the public key.
        #[arg(long)]
        public: PathBuf,
    },
    /// Routes every request of the edges to one build until the pin ends. Each
    /// edge verifies the signed order itself: no control plane, no network auth,
    /// no KV involved.
    Pin {
        /// The private key file.
        #[arg(long)]
        key_file: PathBuf,
        /// An edge's admin URL, e.g. http://127.0.0.1:8788; repeat for several.
        #[arg(long = "edge", required = true)]
        edges: Vec<String>,
        /// The build to pin to (one of the edges' route table, e.g. known-good).
        #[arg(long)]
        build: String,
        /// How long the pin lasts, e.g. 15m (at most 24h).
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// The edges' environment.
        #[arg(long)]
        environment: String,
        /// One node id, or `all`.
        #[arg(long, default_value = "all")]
        node: String,
    },
    /// Lifts a pin: the route table decides again. The order names the pin it
    /// lifts, and an edge holding another pin refuses it.
    Unpin {
        /// The private key file.
        #[arg(long)]
        key_file: PathBuf,
        /// An edge's admin URL; repeat for several.
        #[arg(long = "edge", required = true)]
        edges: Vec<String>,
        /// The edges' environment.
        #[arg(long)]
        environment: String,
        /// One node id, or `all`.
        #[arg(long, default_value = "all")]
        node: String,
        /// The nonce of the pin to lift (`pinned.nonce` in an edge's `/status`);
        /// without it, the pin each edge has in force is read from its admin
        /// listener and named.
        #[arg(long = "pin", value_name = "NONCE")]
        pin: Option<String>,
    },
}

/// `edgekv token ...`
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Control and auth.
    #[command(flatten)]
    pub client: ControlClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The `edgekv token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it (once: control keeps only its hash).
    Create {
        /// A name for listings and revocation.
        name: String,
        /// The account it acts for.
        #[arg(long)]
        account: String,
        /// The environment whose edges accept it (required): control sends it to
        /// that environment's edges only, so a staging token never works on a
        /// production edge.
        #[arg(long)]
        environment: String,
        /// Limits it to a namespace; repeat for several.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Read-only.
        #[arg(long)]
        read_only: bool,
        /// An operator token (may use edgekv-version-override).
        #[arg(long)]
        admin: bool,
    },
    /// Revokes a token: every edge refuses it within a second.
    Revoke {
        /// Its name.
        name: String,
    },
    /// Lists tokens (names and scopes, never secrets).
    List {
        /// Only the tokens this environment's edges accept (its own, and those
        /// issued before tokens had an environment).
        #[arg(long)]
        environment: Option<String>,
    },
}

/// Flags of `edgekv control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Where the Control service listens.
    #[arg(long, env = "EDGEKV_GRPC", default_value = "127.0.0.1:7000")]
    pub grpc: SocketAddr,
    /// Where control serves /metrics (Prometheus) and /healthz over HTTP; read-only
    /// and without a credential: keep it on the monitoring network.
    #[arg(long, env = "EDGEKV_CONTROL_HTTP")]
    pub http: Option<SocketAddr>,
    /// Where control keeps its state (never the KV data plane).
    #[arg(long, env = "EDGEKV_DATA_DIR", default_value = "./edgekv-data/control")]
    pub data_dir: PathBuf,
    /// Control's state in a PostgreSQL database instead of --data-dir: run two
    /// controls over one database; the one holding its lease serves, the other
    /// waits and takes over when it dies (postgres://USER@HOST/DB).
    #[arg(long, env = "EDGEKV_CONTROL_STORE")]
    pub store: Option<String>,
    /// Operators' admin tokens, one per line.
    #[arg(long, env = "EDGEKV_ADMIN_TOKEN_FILE")]
    pub admin_token_file: PathBuf,
    /// ENV=FILE: the credential used to probe ENV's builds and accepted from its
    /// edges. Repeat for each environment.
    #[arg(long = "probe-credential", value_name = "ENV=FILE")]
    pub probe_credential: Vec<String>,
    /// How often deployments advance, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub tick_ms: u64,
    /// The Ed25519 public key whose signed orders `Rollback` accepts when admin
    /// auth is down (`edgekv break-glass keygen`).
    #[arg(long, env = "EDGEKV_BREAK_GLASS_KEY")]
    pub break_glass_key: Option<PathBuf>,
    /// The PEM certificate chain the Control service serves TLS with (with
    /// --tls-key).
    #[arg(long, env = "EDGEKV_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "EDGEKV_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The PEM CA trusted when probing https:// build endpoints.
    #[arg(long, env = "EDGEKV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Validates the configuration (the TOML file, EDGEKV_* variables and flags,
    /// and the files they name), prints what would run, and exits.
    #[arg(long)]
    pub check_config: bool,
}

/// Where the control plane is, and the operator's token.
#[derive(Debug, Args)]
pub struct ControlClientArgs {
    /// The control plane's URL.
    #[arg(
        long,
        env = "EDGEKV_CONTROL",
        default_value = "http://127.0.0.1:7000",
        global = true
    )]
    pub control: String,
    /// An admin token.
    #[arg(
        long,
        env = "EDGEKV_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    /// Prints JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The PEM CA trusted when --control is an https:// URL.
    #[arg(long, env = "EDGEKV_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
}

/// `edgekv build ...`
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Control and auth.
    #[command(flatten)]
    pub client: ControlClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: BuildCommand,
}

/// The `edgekv build` subcommands.
#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Registers a build.
    Register {
        /// The build id (unique across environments).
        build_id: String,
        /// Its environment.
        #[arg(long)]
        environment: String,
        /// Its tenant (default: the environment).
        #[arg(long)]
        tenant: Option<String>,
        /// Its version string.
        #[arg(long, default_value = "")]
        version: String,
        /// The digest of its artifact.
        #[arg(long, default_value = "")]
        artifact_digest: String,
        /// Where it listens; repeat for several.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
    },
    /// Lists the builds of one environment (and tenant): never another's.
    List {
        /// The environment.
        #[arg(long)]
        environment: String,
        /// The tenant (default: the environment).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `edgekv deploy ...`
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Control and auth.
    #[command(flatten)]
    pub client: ControlClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: DeployCommand,
}

/// The `edgekv deploy` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Starts a deployment after control's pre-checks.
    Start {
        /// The build to deploy.
        build_id: String,
        /// The environment.
        #[arg(long)]
        environment: String,
        /// The tenant (default: the environment).
        #[arg(long)]
        tenant: Option<String>,
        /// The steps as PERCENT[:BAKE], e.g. `10:30s,50:30s,100:60s`.
        #[arg(long, default_value = "1:60s,10:60s,50:60s,100:300s")]
        steps: String,
        /// Health: fewer requests to the new build in a window hold promotion
        /// (0: promote on bake time alone).
        #[arg(long, default_value_t = 20)]
        min_requests: u64,
        /// Health: the error rate (build faults) that rolls back, in percent.
        #[arg(long, default_value_t = 5.0)]
        max_error_rate: f64,
        /// Health: the p99 latency that rolls back, in ms.
        #[arg(long, default_value_t = 1000)]
        max_p99_ms: u64,
        /// Health: the new build's error rate may not exceed known-good's times
        /// this factor plus one point.
        #[arg(long, default_value_t = 2.0)]
        relative_error: f64,
        /// Health: the new build's p99 may not exceed known-good's times this
        /// factor (checked only past 50 ms).
        #[arg(long, default_value_t = 3.0)]
        relative_p99: f64,
        /// Health: the window the analysis sums over.
        #[arg(long, default_value = "10s")]
        health_window: String,
        /// Health: the new build's client-error rates (404s, 4xx refusals) may
        /// exceed known-good's times --relative-error by this many percentage
        /// points.
        #[arg(long, default_value_t = 5.0)]
        client_error_margin: f64,
        /// For a real data migration: the data set the build serves when it is
        /// not known-good's (the pre-check names both ids). Without it, a build
        /// over another data set is refused.
        #[arg(long, value_name = "ID")]
        new_data_set: Option<String>,
    },
    /// Shows deployments: steps, weights, known-good, each edge's ACKed version,
    /// why it stopped.
    Status {
        /// One deployment (default: every deployment of --environment, or all).
        id: Option<String>,
        /// Only this environment.
        #[arg(long)]
        environment: Option<String>,
        /// Follows the deployment (the one named, else the active one of
        /// --environment) until it ends: redrawn in place on a terminal, a line per
        /// change otherwise. Exits 0 when it completed, 10 when rolled back, 11
        /// when aborted.
        #[arg(long)]
        watch: bool,
    },
    /// Holds a deployment at its step.
    Pause {
        /// The deployment.
        id: String,
    },
    /// Resumes a paused deployment.
    Resume {
        /// The deployment.
        id: String,
    },
    /// Stops a deployment; traffic goes back to known-good.
    Abort {
        /// The deployment.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Rolls an environment back to known-good (or to --to).
    Rollback {
        /// The environment.
        #[arg(long)]
        environment: String,
        /// The build to go back to (default: the previous known-good).
        #[arg(long)]
        to: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// Signs the rollback with this break-glass private key: control accepts
        /// it when the admin token path is down.
        #[arg(long)]
        break_glass_key_file: Option<PathBuf>,
    },
}

/// Flags of `edgekv dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the KV API listens.
    #[arg(long, env = "EDGEKV_HTTP")]
    pub http: Option<SocketAddr>,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, env = "EDGEKV_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Where workerd's KV binding protocol listens; also writes a workerd
    /// config and a sample Worker into <data dir>/workerd and prints how to run it.
    #[arg(long, env = "EDGEKV_BINDING")]
    pub binding: Option<SocketAddr>,
    /// Where all data is kept.
    #[arg(long, env = "EDGEKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The origin's store in a PostgreSQL database (postgres://USER@HOST/DB)
    /// instead of RocksDB under --data-dir.
    #[arg(long, env = "EDGEKV_STORE")]
    pub store: Option<String>,
    /// The account the printed token acts for.
    #[arg(long, env = "EDGEKV_ACCOUNT")]
    pub account: Option<String>,
    /// The token to accept (default: one generated once and kept in the data dir).
    #[arg(long, env = "EDGEKV_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where the control plane listens.
    #[arg(long, env = "EDGEKV_CONTROL_LISTEN", default_value = "127.0.0.1:8789")]
    pub control_listen: SocketAddr,
    /// Where control's rollout dashboard (and its /metrics) listens (default:
    /// 127.0.0.1:8792, or any free port when that one is taken).
    #[arg(long, env = "EDGEKV_DASHBOARD")]
    pub dashboard: Option<SocketAddr>,
    /// Validates the configuration (the TOML file, EDGEKV_* variables and flags,
    /// and the files they name), prints what would run, and exits.
    #[arg(long)]
    pub check_config: bool,
}

/// Flags of `edgekv origin`.
#[derive(Debug, Args)]
pub struct OriginArgs {
    /// The directory of the authoritative store.
    #[arg(long, env = "EDGEKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store in a PostgreSQL database that several origin processes share:
    /// postgres://USER[:PASSWORD]@HOST[:PORT][,HOST2[:PORT2]...]/DB[?target_session_attrs=read-write].
    /// Without it: RocksDB in --data-dir. Prefer EDGEKV_STORE for a URL with a password.
    #[arg(long, env = "EDGEKV_STORE")]
    pub store: Option<String>,
    /// The environment of every build of this process.
    #[arg(long, env = "EDGEKV_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The tenant of that environment.
    #[arg(long, env = "EDGEKV_TENANT")]
    pub tenant: Option<String>,
    /// The environment's credentials, one per line; reloaded when the file changes.
    #[arg(long, env = "EDGEKV_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// Where the single build listens (with --build-id).
    #[arg(
        long,
        env = "EDGEKV_GRPC",
        requires = "build_id",
        conflicts_with = "build"
    )]
    pub grpc: Option<SocketAddr>,
    /// The id of the single build (with --grpc).
    #[arg(long, env = "EDGEKV_BUILD_ID", requires = "grpc")]
    pub build_id: Option<String>,
    /// A build to serve: ID=ADDR[,version=V][,fault=F]; repeat for several builds
    /// over one store. `fault=` is TEST ONLY (see --fault).
    #[arg(long = "build", value_name = "ID=ADDR")]
    pub build: Vec<String>,
    /// TEST ONLY: a fault for the single build (--grpc/--build-id):
    /// unauthenticated | unavailable | latency=DUR | error-rate=P, optionally
    /// followed by ;after=DUR (armed that long after start) and/or ;when=PATH
    /// (armed once the file PATH exists).
    #[arg(long, requires = "grpc")]
    pub fault: Option<String>,
    /// How many revisions the change log keeps.
    #[arg(long, env = "EDGEKV_LOG_RETAIN")]
    pub log_retain: Option<u64>,
    /// The PEM certificate chain the builds serve TLS with (with --tls-key).
    #[arg(long, env = "EDGEKV_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "EDGEKV_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Validates the configuration (the TOML file, EDGEKV_* variables and flags,
    /// and the files they name), prints what would run, and exits.
    #[arg(long)]
    pub check_config: bool,
}

/// Flags of `edgekv edge`.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Where the KV API listens.
    #[arg(long, env = "EDGEKV_HTTP")]
    pub http: Option<SocketAddr>,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, env = "EDGEKV_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Where workerd's KV binding protocol listens (the service a Worker's
    /// kvNamespace binding names; it sends `Authorization: Bearer TOKEN` and
    /// `edgekv-namespace: ID` via injectRequestHeaders).
    #[arg(long, env = "EDGEKV_BINDING")]
    pub binding: Option<SocketAddr>,
    /// The directory of the edge's store.
    #[arg(long, env = "EDGEKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The hot tier's budget, in bytes (while an eviction sweep is spread over
    /// several writes, the tier may hold up to an eighth more, and what a sweep
    /// evicts in bulk is freed a moment later by a thread of its own).
    #[arg(long, env = "EDGEKV_HOT_TIER_BYTES")]
    pub hot_tier_bytes: Option<usize>,
    /// The one origin build to read through to and follow, e.g. http://127.0.0.1:7001;
    /// several URLs, comma-separated, are endpoints of that build (origin processes
    /// sharing one PostgreSQL database), between which the edge fails over.
    #[arg(long, env = "EDGEKV_ORIGIN", conflicts_with = "control")]
    pub origin: Option<String>,
    /// The control plane whose route tables pick the builds, e.g. http://127.0.0.1:7000.
    #[arg(long, env = "EDGEKV_CONTROL")]
    pub control: Option<String>,
    /// The file holding this edge's environment credential (its first line).
    #[arg(long, env = "EDGEKV_CREDENTIAL_FILE")]
    pub credential_file: Option<PathBuf>,
    /// The edge's environment; every build it calls must belong to it.
    #[arg(long, env = "EDGEKV_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The edge's tenant.
    #[arg(long, env = "EDGEKV_TENANT")]
    pub tenant: Option<String>,
    /// This node's id (default: generated once and kept in the data dir).
    #[arg(long, env = "EDGEKV_NODE_ID")]
    pub node_id: Option<String>,
    /// How long held entries stay usable after the feed fell behind, in seconds.
    #[arg(long, env = "EDGEKV_CACHE_TTL_S")]
    pub cache_ttl_s: Option<u64>,
    /// The Ed25519 public key break-glass orders must be signed with.
    #[arg(long, env = "EDGEKV_BREAK_GLASS_KEY")]
    pub break_glass_key: Option<PathBuf>,
    /// The most calls of gathered writes in flight per origin endpoint
    /// (default 4): while one is in flight, the writes that come go together.
    #[arg(long, env = "EDGEKV_ORIGIN_WRITE_CALLS_IN_FLIGHT")]
    pub origin_write_calls_in_flight: Option<usize>,
    /// The most writes one call to an origin carries (default 256; 1: each write
    /// alone; at most 512).
    #[arg(long, env = "EDGEKV_ORIGIN_WRITE_CALL_MAX_WRITES")]
    pub origin_write_call_max_writes: Option<usize>,
    /// The bytes of writes past which a call to an origin takes no further
    /// write (default 1 MiB; a larger write goes alone).
    #[arg(long, env = "EDGEKV_ORIGIN_WRITE_CALL_MAX_BYTES")]
    pub origin_write_call_max_bytes: Option<usize>,
    /// The most writes the outbox holds before writes get 503.
    #[arg(long, env = "EDGEKV_OUTBOX_MAX_WRITES")]
    pub outbox_max_writes: Option<u64>,
    /// The most bytes the outbox's waiting writes take before writes get 503
    /// (default 1 GiB; at least 1 MiB).
    #[arg(long, env = "EDGEKV_OUTBOX_MAX_BYTES")]
    pub outbox_max_bytes: Option<u64>,
    /// How long a queued write may wait for its replay, in seconds (default 24 h;
    /// keep it below the origin's tombstone retention).
    #[arg(long, env = "EDGEKV_OUTBOX_MAX_AGE_S")]
    pub outbox_max_age_s: Option<u64>,
    /// How often every build is probed and health reported, in ms.
    #[arg(long, env = "EDGEKV_PROBE_INTERVAL_MS")]
    pub probe_interval_ms: Option<u64>,
    /// The PEM CA trusted for https:// builds and control (without it an https
    /// endpoint is refused, never called in clear).
    #[arg(long, env = "EDGEKV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// How often, at most, the namespace list of one account is asked of the
    /// origin for a namespace id the edge does not know, in ms (default 1000);
    /// an id found unknown answers 404 without an origin call for this long.
    #[arg(long, env = "EDGEKV_NAMESPACE_REFRESH_INTERVAL_MS")]
    pub namespace_refresh_interval_ms: Option<u64>,
    /// The most namespace ids remembered as unknown at once (default 10000).
    #[arg(long, env = "EDGEKV_UNKNOWN_NAMESPACES_MAX")]
    pub unknown_namespaces_max: Option<usize>,
    /// The longest a read to a deploying build waits before known-good is asked
    /// too, in ms (0: no hedging).
    #[arg(long, env = "EDGEKV_HEDGE_MAX_MS")]
    pub hedge_max_ms: Option<u64>,
    /// How long a build too slow for the hedge delay stays ejected, in ms.
    #[arg(long, env = "EDGEKV_SLOW_EJECT_MS")]
    pub slow_eject_ms: Option<u64>,
    /// How long a client has to send a request's whole header, in ms (default
    /// 30000); the connection is closed past it.
    #[arg(long, env = "EDGEKV_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// How long a connection with no request in flight is kept, in ms (default
    /// 60000; an idle HTTP/1.1 connection is closed after the shorter of this
    /// and --header-read-timeout-ms).
    #[arg(long, env = "EDGEKV_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// The most connections each listener serves at once (default 10000); past
    /// it, accepting pauses until one closes.
    #[arg(long, env = "EDGEKV_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// The most requests with a body served at once (default 256).
    #[arg(long, env = "EDGEKV_MAX_BODY_REQUESTS")]
    pub max_body_requests: Option<usize>,
    /// How long a request with a body waits for a place before it is answered
    /// 503, in ms (default 1000).
    #[arg(long, env = "EDGEKV_BODY_WAIT_MS")]
    pub body_wait_ms: Option<u64>,
    /// The account of the bootstrap token.
    #[arg(long, env = "EDGEKV_ACCOUNT", requires = "token")]
    pub account: Option<String>,
    /// A bootstrap token with full rights on --account.
    #[arg(
        long,
        env = "EDGEKV_TOKEN",
        hide_env_values = true,
        requires = "account"
    )]
    pub token: Option<String>,
    /// Validates the configuration (the TOML file, EDGEKV_* variables and flags,
    /// and the files they name), prints what would run, and exits.
    #[arg(long)]
    pub check_config: bool,
}

/// Flags of `edgekv kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// The edge's base URL.
    #[arg(
        long,
        env = "EDGEKV_URL",
        default_value = "http://127.0.0.1:8787",
        global = true
    )]
    pub url: String,
    /// The bearer token.
    #[arg(long, env = "EDGEKV_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The account id.
    #[arg(long, env = "EDGEKV_ACCOUNT", default_value = "dev", global = true)]
    pub account: String,
    /// What to do.
    #[command(subcommand)]
    pub command: KvCommand,
}

/// The `edgekv kv` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Manages namespaces.
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Writes a key. The value is the VALUE argument, --file, or standard input.
    Put {
        /// The namespace id.
        namespace: String,
        /// The key.
        key: String,
        /// The value; omit it to use --file or standard input.
        value: Option<String>,
        /// Reads the value from a file (`-` for standard input).
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Metadata, as JSON.
        #[arg(long)]
        metadata: Option<String>,
        /// Expires the key this many seconds from now (at least 60).
        #[arg(long)]
        ttl: Option<u64>,
        /// Expires the key at this Unix time, in seconds.
        #[arg(long, conflicts_with = "ttl")]
        expiration: Option<u64>,
    },
    /// Prints a key's value. Exits 1 if the key does not exist.
    Get {
        /// The namespace id.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Deletes a key.
    Delete {
        /// The namespace id.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Lists keys, one per line.
    List {
        /// The namespace id.
        namespace: String,
        /// Only keys with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// The most keys to print (all when not given).
        #[arg(long)]
        limit: Option<usize>,
        /// Prints each key as a JSON object with its expiration and metadata.
        #[arg(long)]
        json: bool,
    },
}

/// The `edgekv kv namespace` subcommands.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Creates a namespace and prints its id.
    Create {
        /// The title.
        title: String,
    },
    /// Lists namespaces as `ID<TAB>TITLE`.
    List {
        /// Prints JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Renames a namespace.
    Rename {
        /// The namespace id.
        id: String,
        /// The new title.
        title: String,
    },
    /// Deletes a namespace and every key in it.
    Delete {
        /// The namespace id.
        id: String,
    },
}
