//! [`Edge`]: the KV operations of an edge, apart from HTTP.
//!
//! The edge is a cache of the origin. A read looks in the hot tier, then the local
//! store; a held entry is served while the change feed keeps it fresh (or for
//! `cache_ttl` after the feed fell behind); otherwise the read goes to the build,
//! and the answer is kept if it is newer than what the edge holds. A write goes to
//! the build, and the records it answers are kept at once (read-your-writes).
//!
//! # Never reinstalling a deleted value
//! Every record carries the origin's revision, and the edge keeps a record only if
//! it is newer than the one it holds ([`Store::keep_newer`]). A slow read can still
//! race a change the feed skipped because the key was not held yet; so a read in
//! flight is registered in `inflight`, the feed marks it with the revision of any
//! change to its key, and the read keeps its answer only if no mark is newer than
//! the answer's read revision. Both sides run under the key's apply lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use dashmap::DashMap;
use edgekv_kv::{Clock, Hlc, Mode, Namespace, Record};
use edgekv_proto::v1;
use edgekv_store::{Commit, ListPage, ListQuery, NamespaceOp, Store, Write, keys};
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::hot::{HotTier, NamespaceIndex, ValueBuf};
use crate::metrics::Metrics;
use crate::namespaces::{Join, Refreshed, UnknownNamespaces};
use crate::outbox::{Outbox, Queued};
use crate::routes::Routes;
use crate::tokens::{self, TokenHash, TokenTable};
use crate::upstream::{Expected, FollowedDataSet, Upstream, UpstreamError};
use crate::{EdgeConfig, Error, Result};

/// Keys are spread over this many apply locks.
const APPLY_STRIPES: usize = 256;
/// The meta entry holding the last applied feed revision.
pub(crate) const FEED_REVISION: &str = "feed_revision";
/// The meta entry present once a first snapshot is loaded.
pub(crate) const SYNCED: &str = "synced";
/// The last applied feed event's revision and fingerprint (16 bytes; empty
/// after a snapshot): what the edge checks the origin's history against when
/// it resumes ([`crate::feed`]).
pub(crate) const FEED_FINGERPRINT: &str = "feed_fingerprint";
const NODE_ID: &str = "node_id";
/// The meta entry holding the data set the edge follows.
pub(crate) const FOLLOWED_DATA_SET: &str = "followed_data_set";

/// The data set an edge's store says it follows, if it learnt one.
pub fn followed_data_set(store: &dyn Store) -> Result<Option<String>> {
    Ok(store
        .meta(FOLLOWED_DATA_SET)?
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
        .filter(|id| !id.is_empty()))
}

/// Every namespace by id. Looked up on every request: foldhash (seeded per map)
/// instead of SipHash.
pub(crate) type NamespaceMap = HashMap<String, Namespace, foldhash::fast::RandomState>;

/// What an authorised request may do beyond its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Whether the token is an operator's.
    pub admin: bool,
}

/// Build faults in a row after which an edge ejects a build (until a probe of it
/// succeeds, or a new route table arrives).
pub const EJECT_AFTER_FAULTS: u32 = 5;

/// How a write was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A build applied it at this revision.
    Applied(u64),
    /// No build could take it: it waits in the outbox (`202 Accepted`).
    Queued,
}

impl WriteOutcome {
    /// The revision a build applied the write at; `None` while it waits in the outbox.
    pub fn revision(self) -> Option<u64> {
        match self {
            WriteOutcome::Applied(revision) => Some(revision),
            WriteOutcome::Queued => None,
        }
    }
}

/// A break-glass pin in force: every request goes to `build` until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The pinned build.
    pub build: String,
    /// When the pin ends, Unix ms.
    pub until_ms: u64,
    /// The signed order's nonce: it names the pin, and an unpin must name it.
    pub nonce: String,
}

/// What a write changes: a value or a deletion.
#[derive(Debug, Clone)]
pub enum Change {
    /// Stores a value.
    Put {
        /// The value bytes.
        value: Bytes,
        /// Compact JSON metadata.
        metadata: Option<Bytes>,
        /// Absolute expiration, Unix seconds.
        expiration: Option<u64>,
    },
    /// Deletes the key.
    Delete,
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Held by the edge and fresh (or within `cache_ttl`).
    Hit,
    /// Read from a build just now.
    Miss {
        /// The build that answered.
        build: String,
    },
    /// Held by the edge, served because no build could answer.
    Stale,
}

/// The answer to a read: the live record, if any, and where it came from.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The live record; `None` for a missing, deleted or expired key.
    pub record: Option<Record>,
    /// Where the answer came from.
    pub source: Source,
}

/// Per-request read options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// `edgekv-version-override` (admin tokens only): read from this build of the
    /// current table, nothing held, nothing kept.
    pub build: Option<Arc<str>>,
    /// `edgekv-version-key`: the affinity key that picks the build during a
    /// rollout (default: the key itself; for lists, the namespace).
    pub version_key: Option<Bytes>,
    /// `cache-control: no-cache`: ask a build even for a fresh entry.
    pub no_cache: bool,
    /// `?cache_ttl=`: how long held entries stay usable once the feed is behind.
    pub cache_ttl_s: Option<u64>,
}

/// The change feed's state, read by every request that decides freshness.
#[derive(Debug, Default)]
pub struct FeedState {
    pub(crate) connected: AtomicBool,
    /// Clock milliseconds when the feed last reported everything applied.
    pub(crate) caught_up_ms: AtomicU64,
    /// The last revision applied.
    pub(crate) applied: AtomicU64,
    /// How many times the origin's history was found to differ from the one
    /// applied (each followed by a resync).
    pub(crate) diverged: AtomicU64,
    /// Whether a consistent snapshot has ever been loaded (every `full` namespace
    /// complete); persisted, and kept through later resyncs.
    pub(crate) synced: AtomicBool,
    /// Snapshots loaded since the process started.
    pub(crate) snapshots: AtomicU64,
    /// Woken whenever `applied` moves.
    pub(crate) progressed: tokio::sync::Notify,
}

impl FeedState {
    /// The last revision applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether the feed is connected.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether the edge has loaded its first snapshot.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// How many times, since the process started, the origin's history was
    /// found to differ from the one applied (each followed by a resync).
    pub fn diverged(&self) -> u64 {
        self.diverged.load(Ordering::Acquire)
    }

    /// Snapshots loaded since the process started.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Acquire)
    }
}

/// What a read in flight answers, once it has.
type FlightAnswer = Option<std::result::Result<Lookup, UpstreamError>>;

/// A read in flight to a build, shared by every request for its key. It runs as
/// its own task, so a client that goes away cannot abandon it half-way.
pub(crate) struct Flight {
    /// The newest revision of a change to the key the feed saw meanwhile.
    pub(crate) invalidated: AtomicU64,
    answer: tokio::sync::watch::Receiver<FlightAnswer>,
}

/// One edge node.
pub struct Edge {
    pub(crate) config: EdgeConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hot: HotTier,
    clock: Arc<dyn Clock>,
    hlc: Hlc,
    /// Every namespace by id; read lock-free on each request.
    pub(crate) namespaces: ArcSwap<NamespaceMap>,
    tokens: ArcSwap<TokenTable>,
    /// Moves after every new token table, namespace change and route table, once
    /// it is in place: what a connection memoised about a read scope holds while it
    /// stands.
    scope_generation: AtomicU64,
    /// The tokens given at start (`--account/--token`), kept beside control's.
    bootstrap_tokens: TokenTable,
    /// The last token table from control this edge refused, `(version, reason)`,
    /// while no newer one was accepted: shown on `/status`.
    token_nack: Mutex<Option<(u64, String)>>,
    /// The builds this edge calls; swapped whole when a new route table arrives.
    pub(crate) routes: ArcSwap<Routes>,
    /// The edge's environment credential, for builds and control.
    pub(crate) credential: String,
    pub(crate) feed: FeedState,
    apply_locks: Box<[Mutex<()>]>,
    /// Held shared by the keep of an upstream answer, from its checks to its
    /// store write, and alone by a snapshot's install while it marks what is in
    /// flight and empties the store and the hot tier: an answer checked before
    /// an install never lands after its wipe.
    pub(crate) resync: RwLock<()>,
    /// Set while an install moves the edge to another data set: the one it moves
    /// to, the only one whose answers are kept meanwhile (another's revisions
    /// are another count).
    pub(crate) migrating_to: ArcSwapOption<String>,
    stripe_hasher: std::hash::RandomState,
    pub(crate) inflight: DashMap<Box<[u8]>, Arc<Flight>>,
    node_id: String,
    /// This process's incarnation, part of every write id (see [`Edge::open`]).
    incarnation: String,
    /// The last write sequence number handed out by this process.
    sequence: AtomicU64,
    /// Bounds the origin calls of namespace ids the edge does not know: one
    /// refresh per account per interval, shared, and a negative cache.
    unknown_namespaces: UnknownNamespaces,
    /// Orders namespace changes from the feed with those learned from answers.
    namespace_lock: Mutex<()>,
    /// Namespaces learned from an answer (at its revision) that the feed has not
    /// applied yet: a snapshot older than that revision must not drop them.
    pub(crate) learned_namespaces: Mutex<HashMap<String, u64>>,
    /// Writes in flight, by key: the feed marks them like reads in flight.
    pub(crate) writes_in_flight: DashMap<Box<[u8]>, Arc<WriteMark>>,
    metrics: Metrics,
    /// Writes no build could take, waiting for replay.
    pub(crate) outbox: Outbox,
    /// When a replay round last settled every write it read (builds take writes
    /// again): new writes then wait for the queue to drain rather than join it.
    replay_settled_at: Mutex<Option<std::time::Instant>>,
    /// Woken after every replay round.
    replayed: tokio::sync::Notify,
    /// A break-glass pin, when one is in force.
    pub(crate) pin: arc_swap::ArcSwapOption<Pin>,
    /// Set by the prober: this edge's calls to known-good fail authentication.
    pub(crate) known_good_auth_failing: AtomicBool,
    /// Checks break-glass orders, when a public key is configured.
    pub(crate) break_glass: Option<crate::breakglass::BreakGlass>,
    /// What every build's answers must be: this edge's environment and tenant,
    /// and the data set it follows (shared with every client of a build).
    expected: Expected,
    /// Bounds the requests with a body served at once (`max_body_requests`).
    pub(crate) body_gate: crate::http::body::Gate,
}

/// The write marks of one write, released when it is done (or abandoned).
pub(crate) struct WriteMarks<'a> {
    edge: &'a Edge,
    entries: Vec<(Box<[u8]>, Arc<WriteMark>)>,
}

impl<'a> WriteMarks<'a> {
    pub(crate) fn register(edge: &'a Edge, namespace: &str, keys: &[Bytes]) -> Self {
        let entries = keys
            .iter()
            .map(|key| {
                let composite: Box<[u8]> = keys::data_key(namespace, key).into();
                let mark = edge
                    .writes_in_flight
                    .entry(composite.clone())
                    .or_default()
                    .clone();
                mark.writers.fetch_add(1, Ordering::AcqRel);
                (composite, mark)
            })
            .collect();
        WriteMarks { edge, entries }
    }
}

impl Drop for WriteMarks<'_> {
    fn drop(&mut self) {
        for (composite, mark) in &self.entries {
            mark.writers.fetch_sub(1, Ordering::AcqRel);
            self.edge.writes_in_flight.remove_if(composite, |_, held| {
                Arc::ptr_eq(held, mark) && held.writers.load(Ordering::Acquire) == 0
            });
        }
    }
}

/// A key being written through the origin; the feed records the newest change of
/// the key it saw meanwhile, so the write's answer is not kept over it.
#[derive(Default)]
pub(crate) struct WriteMark {
    pub(crate) invalidated: AtomicU64,
    writers: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("node_id", &self.node_id)
            .field("route_version", &self.routes.load().version())
            .finish()
    }
}

/// How many queued writes of distinct keys replay at once.
pub const REPLAY_CONCURRENCY: usize = 16;

/// How long a new write waits for a draining outbox before it joins the queue.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

impl Edge {
    /// An edge over `store`, reading through to `upstream`, with what the store
    /// holds (namespaces, feed position, node id) loaded.
    pub fn new(
        config: EdgeConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        tokens: TokenTable,
        routes: Routes,
        credential: String,
    ) -> Result<Self> {
        let namespaces = store
            .namespaces()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let applied = read_u64(&*store, FEED_REVISION)?;
        let node_id = match (&config.node_id, store.meta(NODE_ID)?) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) => String::from_utf8_lossy(&id).into_owned(),
            (None, None) => {
                let id = format!("edge-{}", &crate::tokens::generate()[..12]);
                store.set_meta(NODE_ID, id.as_bytes())?;
                id
            }
        };
        // A write id's incarnation is random and made at every start, never read
        // from the data dir: a data dir restored from a backup (or copied to
        // another machine) holds the state of an earlier start, and would hand out
        // again the ids its original went on to use after the copy, for other
        // writes. Queued writes keep the ids they were given (stored with them).
        let incarnation: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // The origin's logs name a write by its id: this says which start wrote it.
        tracing::info!(node = %node_id, %incarnation, "write ids of this start carry this incarnation");
        let outbox = Outbox::load(&store)?;
        let break_glass = crate::breakglass::load(&config)?;
        let expected = Expected {
            environment: config.environment.clone(),
            tenant: config.tenant.clone(),
            data_set: Arc::new(FollowedDataSet::new(followed_data_set(&*store)?)),
            tls_ca: config
                .tls_ca
                .as_deref()
                .map(edgekv_proto::tls::read_ca)
                .transpose()
                .map_err(Error::Config)?
                .map(Arc::from),
            write_calls: config.write_calls(),
        };
        let unknown_namespaces = UnknownNamespaces::new(
            config.namespace_refresh_interval_ms,
            config.unknown_namespaces_max,
        );
        let feed = FeedState::default();
        feed.applied.store(applied, Ordering::Release);
        feed.synced
            .store(store.meta(SYNCED)?.is_some(), Ordering::Release);
        Ok(Edge {
            hot: HotTier::new(config.hot_tier_bytes),
            body_gate: crate::http::body::Gate::new(
                config.max_body_requests,
                Duration::from_millis(config.body_wait_ms),
            ),
            hlc: Hlc::new(clock.clone()),
            config,
            store,
            clock,
            namespaces: ArcSwap::from_pointee(namespaces),
            bootstrap_tokens: tokens.clone(),
            tokens: ArcSwap::from_pointee(tokens),
            token_nack: Mutex::new(None),
            scope_generation: AtomicU64::new(0),
            routes: ArcSwap::from_pointee(routes),
            credential,
            feed,
            apply_locks: (0..APPLY_STRIPES).map(|_| Mutex::new(())).collect(),
            resync: RwLock::new(()),
            migrating_to: ArcSwapOption::empty(),
            stripe_hasher: std::hash::RandomState::new(),
            inflight: DashMap::new(),
            node_id,
            incarnation,
            sequence: AtomicU64::new(0),
            unknown_namespaces,
            namespace_lock: Mutex::new(()),
            learned_namespaces: Mutex::new(HashMap::new()),
            writes_in_flight: DashMap::new(),
            metrics: Metrics::default(),
            outbox,
            replay_settled_at: Mutex::new(None),
            replayed: tokio::sync::Notify::new(),
            pin: arc_swap::ArcSwapOption::empty(),
            known_good_auth_failing: AtomicBool::new(false),
            break_glass,
            expected,
        })
        .and_then(|edge| {
            edge.load_pin()?;
            edge.load_nonces()?;
            Ok(edge)
        })
    }

    /// The edge's configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Shares `expected` (and its followed data set) with the clients of the
    /// route table the edge was opened with.
    pub fn following(mut self, expected: Expected) -> Self {
        self.expected = expected;
        self
    }

    /// What every build's answers must be.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// The data set this edge follows, once learnt from its feed.
    pub fn data_set(&self) -> Option<Arc<String>> {
        self.expected.data_set.get()
    }

    /// Follows `data_set` from now on: kept in the store (fsynced) first.
    pub(crate) fn follow_data_set(&self, data_set: &str) -> Result<()> {
        self.store
            .set_meta_synced(FOLLOWED_DATA_SET, data_set.as_bytes())?;
        self.expected.data_set.set(data_set);
        Ok(())
    }

    /// The hot tier.
    pub fn hot(&self) -> &HotTier {
        &self.hot
    }

    /// The request metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The edge's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The break-glass pin in force, if any (an expired pin is none).
    pub fn pin(&self) -> Option<Arc<Pin>> {
        self.pin
            .load_full()
            .filter(|p| p.until_ms > self.clock.now_ms())
    }

    /// Whether this edge's own calls to known-good fail authentication (it is then
    /// not ready, and control leaves it out of the health analysis).
    pub fn known_good_auth_failing(&self) -> bool {
        self.known_good_auth_failing.load(Ordering::Acquire)
    }

    /// The change feed's state.
    pub fn feed(&self) -> &FeedState {
        &self.feed
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The builds this edge calls now.
    pub fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.routes.load()
    }

    /// Installs the builds of a new route table (shared with the probes that may
    /// eject them).
    pub fn set_routes(&self, routes: Arc<Routes>) {
        self.routes.store(routes);
        // After the table is in place: a hot read that sees the new generation
        // reads the new table (its version header).
        self.scope_generation.fetch_add(1, Ordering::Release);
    }

    /// The known-good build: the feed follows it, namespace changes go to it.
    pub(crate) fn known_good(&self) -> std::result::Result<Upstream, UpstreamError> {
        self.routes
            .load()
            .known_good
            .clone()
            .ok_or_else(|| UpstreamError::Build("no route table yet: no build to call".into()))
    }

    /// The build a request goes to: the one an admin named (it must be in the
    /// current table), else the one the affinity key picks.
    fn target(&self, build: Option<&str>, affinity: &[u8]) -> Result<Upstream> {
        match build {
            Some(name) => self.routes.load().build(name).cloned().ok_or_else(|| {
                Error::BadRequest(format!("build {name:?} is not in the current route table"))
            }),
            None => Ok(self.pick(affinity)?),
        }
    }

    /// The build that serves an affinity key: the pinned build while a break-glass
    /// pin is in force, else the table's weighted, sticky choice.
    pub(crate) fn pick(&self, affinity: &[u8]) -> std::result::Result<Upstream, UpstreamError> {
        let routes = self.routes.load();
        if let Some(pin) = self.pin.load().as_ref()
            && pin.until_ms > self.clock.now_ms()
            && let Some(pinned) = routes.build(&pin.build)
        {
            return Ok(pinned.clone());
        }
        routes
            .pick(affinity)
            .cloned()
            .ok_or_else(|| UpstreamError::Build("no route table yet: no build to call".into()))
    }

    /// The known-good build, when it is another build than `tried`: where a request
    /// goes after a build fault.
    fn fallback(&self, tried: &Upstream) -> Option<Upstream> {
        self.known_good().ok().filter(|k| !k.same_build(tried))
    }

    /// Runs a call on `first`; after a build fault, on known-good.
    async fn with_fallback<T, F, Fut>(
        &self,
        first: Upstream,
        call: F,
    ) -> std::result::Result<T, UpstreamError>
    where
        F: Fn(Upstream) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, UpstreamError>>,
    {
        match call(first.clone()).await {
            Err(UpstreamError::Build(why)) => {
                self.note_fault(&first);
                match self.fallback(&first) {
                    Some(known_good) => call(known_good).await,
                    None => Err(UpstreamError::Build(why)),
                }
            }
            other => other,
        }
    }

    /// Notes a build fault of `upstream`: after [`EJECT_AFTER_FAULTS`] in a row the
    /// build is ejected locally (never known-good: it is the fallback).
    pub(crate) fn note_fault(&self, upstream: &Upstream) {
        if upstream.stats().consecutive_faults() < EJECT_AFTER_FAULTS {
            return;
        }
        let routes = self.routes.load();
        let Some(build) = upstream.build_id() else {
            return;
        };
        let known_good = routes.table.as_ref().map(|t| t.known_good_build.as_str());
        if known_good != Some(build) && !routes.is_ejected(build) {
            tracing::warn!(
                build,
                faults = upstream.stats().consecutive_faults(),
                "ejecting a build after consecutive faults"
            );
            routes.eject(build);
        }
    }

    /// Installs control's token table, beside the bootstrap tokens, with the
    /// content hash of control's grants, which the next table is checked against
    /// ([`tokens::validate`]). Clears the last token NACK.
    pub fn set_control_tokens(
        &self,
        version: u64,
        grants: Vec<(crate::tokens::TokenHash, crate::tokens::Grant)>,
    ) {
        let content_hash = tokens::validate::content_hash(&grants);
        let bootstrap = self
            .bootstrap_tokens
            .entries()
            .map(|(h, g)| (*h, g.clone()));
        self.tokens.store(Arc::new(
            TokenTable::new(version, grants.into_iter().chain(bootstrap))
                .with_content_hash(content_hash),
        ));
        self.scope_generation.fetch_add(1, Ordering::Release);
        *self.token_nack.lock() = None;
    }

    /// The version and content hash of control's token table in use; `None`
    /// while the edge has only its bootstrap tokens.
    pub fn control_tokens_held(&self) -> Option<tokens::validate::Held> {
        self.tokens.load().held()
    }

    /// Records the NACK of a token table from control (`Some((version,
    /// reason))`), or that the table offered was the one held (`None`).
    pub fn note_token_nack(&self, nack: Option<(u64, String)>) {
        *self.token_nack.lock() = nack;
    }

    /// The last token table from control this edge refused, `(version, reason)`,
    /// unless it accepted one since.
    pub fn token_nack(&self) -> Option<(u64, String)> {
        self.token_nack.lock().clone()
    }

    /// The scope generation: read it before the token, namespace and route tables,
    /// and a decision made from them holds while it stands (see
    /// [`crate::tokens::TokenMemo`]).
    pub fn scope_generation(&self) -> u64 {
        self.scope_generation.load(Ordering::Acquire)
    }

    /// Whether the token table is empty (no client can be served).
    pub fn tokens_is_empty(&self) -> bool {
        self.tokens.load().is_empty()
    }

    /// The version of the token table in use.
    pub fn tokens_version(&self) -> u64 {
        self.tokens.load().version()
    }

    /// Checks a bearer token against the request: 401 when there is none or it is
    /// unknown, 403 when it is for another account or namespace, or read-only and
    /// the request writes; 503 while the edge has no token table at all.
    pub fn authorize(
        &self,
        bearer: Option<&str>,
        account: &str,
        namespace: Option<&str>,
        write: bool,
    ) -> Result<Access> {
        self.authorize_hashed(bearer.map(tokens::hash), account, namespace, write)
    }

    /// [`Edge::authorize`] for a token already hashed ([`tokens::TokenMemo`]).
    pub fn authorize_hashed(
        &self,
        token: Option<TokenHash>,
        account: &str,
        namespace: Option<&str>,
        write: bool,
    ) -> Result<Access> {
        let table = self.tokens.load();
        let grant = Self::checked_grant(&table, token, account, namespace, write)?;
        Ok(Access { admin: grant.admin })
    }

    /// `with` the account a bearer token acts for, checked for `namespace` as
    /// [`Edge::authorize`] checks a request: what workerd's KV binding, whose
    /// requests name no account, acts for ([`crate::binding`]). The account is
    /// lent, not copied: the binding's hot path allocates nothing for it.
    pub fn with_binding_account<T>(
        &self,
        token: Option<TokenHash>,
        namespace: &str,
        write: bool,
        with: impl FnOnce(&str) -> T,
    ) -> Result<T> {
        let table = self.tokens.load();
        // An unknown (or missing) token fails the check as it would on any
        // account: 401, or 503 while there is no table.
        let account = token
            .as_ref()
            .and_then(|token| table.lookup_hash(token))
            .map_or("", |grant| grant.account.as_str());
        Self::checked_grant(&table, token, account, Some(namespace), write)?;
        Ok(with(account))
    }

    /// Checks a bearer token for creating a namespace of `account` (`namespace`
    /// none), or renaming or deleting `namespace`: as [`Edge::authorize`] for a
    /// write, and 403 for a token scoped to namespaces. A scoped token uses the
    /// namespaces it was issued for; which namespaces exist is the business of the
    /// account's own tokens, so a scoped token may neither make one (its scope
    /// could not hold it) nor rename or remove one (it may be in other scopes too).
    pub fn authorize_namespace_change(
        &self,
        bearer: Option<&str>,
        account: &str,
        namespace: Option<&str>,
    ) -> Result<Access> {
        let table = self.tokens.load();
        let token = bearer.map(tokens::hash);
        let grant = Self::checked_grant(&table, token, account, namespace, true)?;
        if grant.namespaces.is_some() {
            return Err(Error::Forbidden(
                "the token is scoped to namespaces: it may not create, rename or delete namespaces"
                    .into(),
            ));
        }
        Ok(Access { admin: grant.admin })
    }

    /// The namespaces of `account` a bearer token may see, ordered by id: every
    /// one for a token of the whole account, only those of its scope for a token
    /// scoped to namespaces (a listing names no namespace it could not open).
    /// Checked as [`Edge::authorize`] for a read of the account.
    pub fn visible_namespaces(
        &self,
        bearer: Option<&str>,
        account: &str,
    ) -> Result<Vec<Namespace>> {
        let table = self.tokens.load();
        let token = bearer.map(tokens::hash);
        let grant = Self::checked_grant(&table, token, account, None, false)?;
        let mut list = self.namespaces(account);
        list.retain(|namespace| grant.covers(&namespace.id));
        Ok(list)
    }

    /// Whether a bearer token is one this edge accepts (any account): its id —
    /// the first 32 hex digits of its SHA-256, never the secret — or 401 as for
    /// any request (503 while the edge has no token table).
    pub fn verify_token(&self, bearer: Option<&str>) -> Result<String> {
        let token = bearer.map(tokens::hash).ok_or(Error::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ))?;
        let table = self.tokens.load();
        if table.is_empty() {
            return Err(Error::Unavailable(
                "this edge has no token table yet (control unreachable since it started); retry shortly".into(),
            ));
        }
        table
            .lookup_hash(&token)
            .ok_or(Error::Unauthorized("invalid or revoked token"))?;
        Ok(hex::encode(&token[..16]))
    }

    /// The grant of `token` in `table` if it allows the request (see
    /// [`Edge::authorize`]).
    fn checked_grant<'t>(
        table: &'t TokenTable,
        token: Option<TokenHash>,
        account: &str,
        namespace: Option<&str>,
        write: bool,
    ) -> Result<&'t tokens::Grant> {
        let token = token.ok_or(Error::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ))?;
        if table.is_empty() {
            // Nothing can be checked yet: the client's token may well be valid, so
            // this is the edge's condition, not the client's fault.
            return Err(Error::Unavailable(
                "this edge has no token table yet (control unreachable since it started); retry shortly".into(),
            ));
        }
        let grant = table
            .lookup_hash(&token)
            .ok_or(Error::Unauthorized("invalid or revoked token"))?;
        if grant.account != account {
            return Err(Error::Forbidden(format!(
                "the token is not valid for account {account:?}"
            )));
        }
        if let Some(ns) = namespace
            && !grant.covers(ns)
        {
            return Err(Error::Forbidden(format!(
                "the token is not valid for namespace {ns}"
            )));
        }
        if write && grant.read_only {
            return Err(Error::Forbidden("the token is read-only".into()));
        }
        Ok(grant)
    }

    /// Returns a namespace of `account`; another account's namespace is not found.
    pub fn namespace(&self, account: &str, id: &str) -> Result<Namespace> {
        match self.namespaces.load().get(id) {
            Some(ns) if ns.account == account => Ok(ns.clone()),
            _ => Err(Error::NamespaceNotFound),
        }
    }

    /// Returns the mode of a namespace of `account`, asking the origin when the edge
    /// does not know it yet (it may have been created at another edge a moment ago).
    ///
    /// Bounded for a flood of unknown ids ([`crate::namespaces`]): an id found
    /// unknown less than `namespace_refresh_interval_ms` ago answers 404 at once;
    /// otherwise the request waits for its account's refresh in flight, or for one
    /// it starts, unless the account refreshed within the interval, whose outcome
    /// then answers at once. No lock is held while the origin answers.
    pub async fn namespace_mode(self: &Arc<Self>, account: &str, id: &str) -> Result<Mode> {
        if let Some(mode) = self.known_mode(account, id) {
            return mode;
        }
        if edgekv_kv::validate::namespace_id(id).is_err() {
            return Err(Error::NamespaceNotFound);
        }
        let now_ms = self.clock.now_ms();
        if self.unknown_namespaces.remembers(account, id, now_ms) {
            return Err(Error::NamespaceNotFound);
        }
        let mut outcome = match self.unknown_namespaces.join(account, now_ms)? {
            Join::Follow(outcome) => outcome,
            Join::Lead(lead) => {
                let outcome = lead.subscribe();
                // A task of its own: a client that goes away does not abandon the
                // refresh the others wait for.
                let edge = self.clone();
                let account = account.to_string();
                tokio::spawn(async move {
                    let refreshed = edge.refresh_namespaces(&account).await;
                    lead.send_replace(Some(refreshed));
                });
                outcome
            }
        };
        let refreshed = outcome
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|done| done.clone())
            .unwrap_or_else(|| {
                Refreshed::Failed("the namespace refresh ended without an answer".into())
            });
        if let Some(mode) = self.known_mode(account, id) {
            return mode;
        }
        if refreshed.settles_unknown(id) {
            self.unknown_namespaces.remember(account, id, now_ms);
        }
        Err(refreshed.answer(id))
    }

    /// Asks the origin for the namespace list and keeps every namespace of
    /// `account` the edge did not hold (a full one is only noted as loading: its
    /// keys arrive through the feed).
    async fn refresh_namespaces(&self, account: &str) -> Refreshed {
        let listed = match self.known_good() {
            Ok(build) => build.namespaces().await,
            Err(err) => Err(err),
        };
        match listed {
            Ok((all, read_revision)) => {
                let held = self.namespaces.load();
                let mut loading = std::collections::HashSet::new();
                let mut found = Vec::new();
                for ns in all
                    .into_iter()
                    .filter(|n| n.account == account && !held.contains_key(&n.id))
                {
                    if ns.mode == Mode::Full {
                        loading.insert(ns.id);
                    } else {
                        found.push(NamespaceOp::Put(ns));
                    }
                }
                drop(held);
                if !found.is_empty()
                    && let Err(err) = self.apply_namespaces_at(found, read_revision)
                {
                    tracing::error!(error = %err, "could not keep the namespaces the origin listed");
                    return Refreshed::Failed(err.to_string().into());
                }
                Refreshed::Listed(Arc::new(loading))
            }
            Err(UpstreamError::Build(why)) if !self.feed.synced() || !self.usable(None) => {
                Refreshed::Unavailable(format!(
                    "the edge cannot tell whether this namespace exists: the origin is unavailable ({why}) and the edge's view is not fresh"
                ).into())
            }
            Err(err) => {
                tracing::debug!(error = %err, "the namespace list is unavailable; the edge's fresh view answers");
                Refreshed::Unlisted
            }
        }
    }

    /// Namespace-list refreshes this edge asked of the origin for unknown
    /// namespace ids since it started (`edgekv_namespace_refreshes_total`).
    pub fn namespace_refreshes(&self) -> u64 {
        self.unknown_namespaces.refreshes()
    }

    /// The mode of a namespace of `account` the edge knows now (no origin call).
    pub fn known_mode(&self, account: &str, id: &str) -> Option<Result<Mode>> {
        self.namespaces.load().get(id).map(|ns| {
            if ns.account == account {
                Ok(ns.mode)
            } else {
                Err(Error::NamespaceNotFound)
            }
        })
    }

    /// Returns the namespaces of `account`, ordered by id.
    pub fn namespaces(&self, account: &str) -> Vec<Namespace> {
        let mut list: Vec<Namespace> = self
            .namespaces
            .load()
            .values()
            .filter(|n| n.account == account)
            .cloned()
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Creates a namespace at the origin.
    pub async fn create_namespace(
        &self,
        account: &str,
        title: &str,
        mode: Mode,
    ) -> Result<Namespace> {
        edgekv_kv::validate::title(title)?;
        let (namespace, revision) = self
            .with_fallback(self.pick(account.as_bytes())?, |build| async move {
                build.create_namespace(account, title, mode).await
            })
            .await?;
        self.apply_namespaces_at(vec![NamespaceOp::Put(namespace.clone())], revision)?;
        Ok(namespace)
    }

    /// Renames a namespace at the origin.
    pub async fn rename_namespace(
        &self,
        account: &str,
        id: &str,
        title: &str,
    ) -> Result<Namespace> {
        edgekv_kv::validate::title(title)?;
        let (namespace, revision) = self
            .with_fallback(self.pick(id.as_bytes())?, |build| async move {
                build.rename_namespace(account, id, title).await
            })
            .await?;
        self.apply_namespaces_at(vec![NamespaceOp::Put(namespace.clone())], revision)?;
        Ok(namespace)
    }

    /// Deletes a namespace and every key in it, at the origin.
    pub async fn delete_namespace(&self, account: &str, id: &str) -> Result<()> {
        let (_, revision) = self
            .with_fallback(self.pick(id.as_bytes())?, |build| async move {
                build.delete_namespace(account, id).await
            })
            .await?;
        self.apply_namespaces_at(vec![NamespaceOp::Delete(id.to_string())], revision)
    }

    /// Applies namespace changes locally (and a feed revision, when given).
    pub(crate) fn apply_namespaces(
        &self,
        ops: Vec<NamespaceOp>,
        feed_revision: Option<u64>,
    ) -> Result<()> {
        let _order = self.namespace_lock.lock();
        self.apply_namespaces_locked(ops, feed_revision)
    }

    /// Applies namespace changes learned outside the feed (an answer at `revision`),
    /// unless the feed has already applied that revision: then what the feed applied
    /// (perhaps a later rename or delete) stands.
    fn apply_namespaces_at(&self, ops: Vec<NamespaceOp>, revision: u64) -> Result<()> {
        let _order = self.namespace_lock.lock();
        if self.feed.applied() >= revision || self.migrating_to.load().is_some() {
            return Ok(());
        }
        {
            let mut learned = self.learned_namespaces.lock();
            for op in &ops {
                match op {
                    NamespaceOp::Put(ns) => {
                        learned.insert(ns.id.clone(), revision);
                    }
                    NamespaceOp::Delete(id) => {
                        learned.remove(id);
                    }
                }
            }
        }
        self.apply_namespaces_locked(ops, None)
    }

    /// Forgets namespaces learned from answers at or before `revision`: the feed
    /// has applied them.
    pub(crate) fn feed_caught_up_namespaces(&self, revision: u64) {
        let mut learned = self.learned_namespaces.lock();
        if !learned.is_empty() {
            learned.retain(|_, at| *at > revision);
        }
    }

    fn apply_namespaces_locked(
        &self,
        ops: Vec<NamespaceOp>,
        feed_revision: Option<u64>,
    ) -> Result<()> {
        let meta = feed_revision
            .map(|r| vec![(FEED_REVISION.to_string(), r.to_be_bytes().to_vec())])
            .unwrap_or_default();
        self.store.commit(Commit {
            namespaces: ops.clone(),
            meta,
            ..Commit::default()
        })?;
        self.namespaces.rcu(|all| {
            let mut all = NamespaceMap::clone(all);
            for op in &ops {
                match op {
                    NamespaceOp::Put(ns) => {
                        all.insert(ns.id.clone(), ns.clone());
                    }
                    NamespaceOp::Delete(id) => {
                        all.remove(id);
                    }
                }
            }
            all
        });
        self.scope_generation.fetch_add(1, Ordering::Release);
        let now = self.namespaces.load();
        for op in &ops {
            if let NamespaceOp::Put(ns) = op {
                // It exists now: never answered from the negative cache again
                // (the namespace map is looked at first anyway; this keeps the
                // cache to ids that do not exist).
                self.unknown_namespaces.forget(&ns.id);
            }
            if let NamespaceOp::Delete(id) = op {
                if now.contains_key(id) {
                    // Deleted and put back in this batch (a resync): the same
                    // namespace, loaded anew.
                    self.hot.remove_namespace(id);
                } else {
                    self.hot.forget_namespace(id);
                }
            }
        }
        Ok(())
    }

    /// Returns the record held locally for a key: a queued write of it, unless the
    /// store holds a newer one (by stamp); else the hot tier, then the store.
    /// `index` is the namespace's in the hot tier, when the caller has it.
    fn held(
        &self,
        namespace: &str,
        index: Option<NamespaceIndex>,
        key: &[u8],
    ) -> Result<Option<Record>> {
        Ok(self.held_queued(namespace, index, key)?.0)
    }

    /// [`Edge::held`], and whether the answer is a write still in the outbox (this
    /// edge's newest knowledge of the key: no build has it yet).
    fn held_queued(
        &self,
        namespace: &str,
        index: Option<NamespaceIndex>,
        key: &[u8],
    ) -> Result<(Option<Record>, bool)> {
        let queued = if self.outbox.is_empty() {
            None
        } else {
            self.outbox.overlay(&*self.store, namespace, key)?
        };
        let stored = self.held_stored(namespace, index, key)?;
        Ok(match (queued, stored) {
            (Some(queued), Some(stored)) if stored.hlc > queued.hlc => (Some(stored), false),
            (Some(queued), _) => (Some(queued), true),
            (None, stored) => (stored, false),
        })
    }

    /// The record of the hot tier, then of the store (filling the hot tier). The
    /// namespace's index in the tier is looked up here when the caller has none.
    fn held_stored(
        &self,
        namespace: &str,
        index: Option<NamespaceIndex>,
        key: &[u8],
    ) -> Result<Option<Record>> {
        let index = index.or_else(|| self.hot.intern(namespace));
        if let Some(record) = index.and_then(|index| self.hot.get_in(index, key)) {
            return Ok(Some(record));
        }
        self.stored(namespace, index, key)
    }

    /// The record of the store, filling the hot tier (which missed) under the
    /// namespace's index there.
    fn stored(
        &self,
        namespace: &str,
        index: Option<NamespaceIndex>,
        key: &[u8],
    ) -> Result<Option<Record>> {
        let token = self.hot.fill_token_in(index, key);
        let Some(record) = self.store.get(namespace, key)? else {
            return Ok(None);
        };
        self.hot.fill(key, record.clone(), token);
        Ok(Some(record))
    }

    /// Whether held entries may be served without asking a build.
    pub fn usable(&self, cache_ttl_s: Option<u64>) -> bool {
        self.usable_at(cache_ttl_s, self.clock.now_ms())
    }

    /// [`Edge::usable`] at `now_ms`.
    fn usable_at(&self, cache_ttl_s: Option<u64>, now_ms: u64) -> bool {
        let caught_up = self.feed.caught_up_ms.load(Ordering::Acquire);
        if caught_up == 0 {
            return false;
        }
        let age = now_ms.saturating_sub(caught_up);
        let lag_bound = self.config.lag_bound_ms;
        if self.feed.connected() && age < lag_bound {
            return true;
        }
        let ttl_ms = cache_ttl_s
            .unwrap_or(self.config.cache_ttl_s)
            .saturating_mul(1000);
        age < lag_bound.saturating_add(ttl_ms)
    }

    /// The read path without waiting: the answer when the edge holds the key (the
    /// outbox overlay, the hot tier, then a point read of the local store) — or,
    /// in a synced `full` namespace, knows it is absent — and held entries may be
    /// served now. `None` when the read needs a build ([`Edge::get`] then). No
    /// lock and no upstream call; a store read only on a hot-tier miss.
    /// `index` is the namespace's in the hot tier ([`HotTier::intern`]), for a
    /// caller that reads many keys of it.
    pub fn get_held(
        &self,
        namespace: &str,
        index: Option<NamespaceIndex>,
        mode: Mode,
        key: &[u8],
    ) -> Option<Lookup> {
        let now_s = self.held_servable(mode)?;
        answer_held(self.held(namespace, index, key).ok()?, mode, now_s)
    }

    /// The time (Unix seconds) when held entries of a namespace in `mode` may be
    /// served now without asking a build; `None` when they may not.
    fn held_servable(&self, mode: Mode) -> Option<u64> {
        if mode == Mode::Full && !self.feed.synced() {
            return None;
        }
        let now_ms = self.clock.now_ms();
        self.usable_at(None, now_ms).then_some(now_ms / 1000)
    }

    /// [`Edge::get_held`] for the hot read path, which answers only with a value:
    /// `Some(Some(value))` to serve (a HIT), `Some(None)` for a 404 (a HIT too: a
    /// deleted, expired or, in a synced `full` namespace, absent key). A value in
    /// the hot tier is taken in place, with no [`Record`] built: `index` is the
    /// namespace's in the hot tier ([`HotTier::intern`]).
    pub fn get_held_value(
        &self,
        namespace: &str,
        index: NamespaceIndex,
        mode: Mode,
        key: &[u8],
    ) -> Option<Option<ValueBuf>> {
        let now_s = self.held_servable(mode)?;
        let held = if self.outbox.is_empty() {
            // No write of this edge waits to overlay what is held.
            let hot = self.hot.read_in(index, key, |held| {
                held.is_live(now_s).then(|| ValueBuf::Held(held.value()))
            });
            match hot {
                Some(value) => return Some(value),
                None => self.stored(namespace, Some(index), key),
            }
        } else {
            self.held(namespace, Some(index), key)
        };
        let lookup = answer_held(held.ok()?, mode, now_s)?;
        Some(lookup.record.map(|record| record.value.into()))
    }

    /// Reads a key: held and usable → HIT; else a build → MISS; on a build fault,
    /// what the edge holds → STALE, or 503.
    pub async fn get(
        self: &Arc<Self>,
        namespace: &str,
        mode: Mode,
        key: &[u8],
        options: ReadOptions,
    ) -> Result<Lookup> {
        let now_s = self.clock.now_s();
        if mode == Mode::Full && !self.feed.synced() {
            return Err(Error::Unavailable(
                "this full namespace is still loading its first snapshot".into(),
            ));
        }
        if let Some(build) = &options.build {
            let upstream = self.routes.load().build(build).cloned().ok_or_else(|| {
                Error::BadRequest(format!("build {build:?} is not in the current route table"))
            })?;
            let answer = upstream.get(namespace, key).await?;
            // An absent key reads as a tombstone: 404.
            let record = answer.record.unwrap_or_else(|| Record::tombstone(None));
            return Ok(live(
                record,
                now_s,
                Source::Miss {
                    build: answer.build_id,
                },
            ));
        }
        let (held, queued) = self.held_queued(namespace, None, key)?;
        if queued && let Some(record) = held {
            // A write of this edge no build has yet: every read here sees it, even
            // one that asks a build (which would answer the older value).
            return Ok(live(record, now_s, Source::Hit));
        }
        if !options.no_cache
            && self.usable(options.cache_ttl_s)
            && let Some(lookup) = answer_held(held.clone(), mode, now_s)
        {
            return Ok(lookup);
        }
        let affinity = options.version_key.clone();
        // A key the edge does not hold falls back to known-good on a build fault; a
        // held one is served stale first.
        let fallback = held.is_none();
        match self.read_through(namespace, key, affinity, fallback).await {
            Ok(lookup) => Ok(lookup),
            Err(UpstreamError::Build(why)) => match held {
                Some(record) => {
                    tracing::debug!(%why, "serving a held entry stale");
                    Ok(live(record, now_s, Source::Stale))
                }
                None => Err(Error::Unavailable(format!("origin unavailable: {why}"))),
            },
            Err(client) => Err(client.into()),
        }
    }

    /// Reads a key from the build, once for all concurrent callers, and keeps the
    /// answer if it is newer than what is held and no change raced it.
    async fn read_through(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        affinity: Option<Bytes>,
        fallback: bool,
    ) -> std::result::Result<Lookup, UpstreamError> {
        let composite: Box<[u8]> = keys::data_key(namespace, key).into();
        let mut answer = match self.inflight.entry(composite.clone()) {
            dashmap::mapref::entry::Entry::Occupied(flight) => flight.get().answer.clone(),
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                let flight = Arc::new(Flight {
                    invalidated: AtomicU64::new(0),
                    answer: rx.clone(),
                });
                slot.insert(flight.clone());
                let edge = self.clone();
                let (namespace, key) = (namespace.to_string(), Bytes::copy_from_slice(key));
                tokio::spawn(async move {
                    let result = edge
                        .fetch_and_keep(&namespace, &key, affinity.as_deref(), fallback, &flight)
                        .await;
                    edge.inflight
                        .remove_if(&composite, |_, v| Arc::ptr_eq(v, &flight));
                    let _ = tx.send(Some(result));
                });
                rx
            }
        };
        let done = answer
            .wait_for(Option::is_some)
            .await
            .map_err(|_| UpstreamError::Build("the read task ended without an answer".into()))?;
        done.clone().unwrap_or_else(|| {
            Err(UpstreamError::Build(
                "the read task ended without an answer".into(),
            ))
        })
    }

    /// The body of a read in flight: ask the build, keep the answer unless the feed
    /// saw a newer change of the key meanwhile.
    async fn fetch_and_keep(
        &self,
        namespace: &str,
        key: &Bytes,
        affinity: Option<&[u8]>,
        fallback: bool,
        flight: &Flight,
    ) -> std::result::Result<Lookup, UpstreamError> {
        let picked = self.pick(affinity.unwrap_or(key))?;
        let answer = match self.fallback(&picked) {
            Some(known_good) if self.config.hedge_max_ms > 0 => {
                self.hedged_get(&picked, &known_good, namespace, key, fallback)
                    .await?
            }
            _ => match picked.get(namespace, key).await {
                Ok(answer) => answer,
                Err(UpstreamError::Build(why)) => {
                    self.note_fault(&picked);
                    match self.fallback(&picked).filter(|_| fallback) {
                        Some(known_good) => {
                            tracing::debug!(%why, "reading from known-good after a build fault");
                            known_good.get(namespace, key).await?
                        }
                        None => return Err(UpstreamError::Build(why)),
                    }
                }
                Err(client) => return Err(client),
            },
        };
        let now_s = self.clock.now_s();
        let record = answer.record.clone().unwrap_or_else(|| Record {
            revision: answer.read_revision,
            ..Record::tombstone(Some(now_s.saturating_add(self.config.tombstone_ttl_s)))
        });
        let record = {
            let _gate = self.resync.read();
            let _lock = self.lock_keys(namespace, std::iter::once(key.as_ref()));
            let raced = flight.invalidated.load(Ordering::Acquire) > answer.read_revision;
            if !raced
                && self.keeps_answers_of(&answer.data_set)
                && let Err(err) =
                    self.keep_locked(namespace, vec![(key.clone(), record.clone())], vec![])
            {
                tracing::warn!(error = %err, "could not keep an upstream answer");
            }
            // A write answered at this edge meanwhile is newer: callers that joined
            // this read late must see it (read-your-writes).
            match self.store.get(namespace, key) {
                Ok(Some(held)) if held.revision > record.revision => held,
                _ => record,
            }
        };
        Ok(live(
            record,
            now_s,
            Source::Miss {
                build: answer.build_id,
            },
        ))
    }

    /// How long a read waits for a build other than known-good before asking
    /// known-good too: four times known-good's typical latency, within the
    /// configured bounds.
    pub fn hedge_delay(&self, known_good: &Upstream) -> Duration {
        let min = Duration::from_millis(self.config.hedge_min_ms);
        let max = Duration::from_millis(self.config.hedge_max_ms);
        known_good
            .stats()
            .typical_latency()
            .map_or(max, |typical| (typical * 4).clamp(min, max))
    }

    /// Reads from `picked` (a build other than known-good); when it has not
    /// answered within the hedge delay, asks known-good too and takes the first
    /// good answer; when known-good's comes first, `picked` is counted late (a
    /// latency fault). A build late this way `slow_eject_after` times in a row is
    /// ejected as an outlier for `slow_eject_ms`, and control sees the ejection in
    /// the next report. After a
    /// build fault of `picked`, known-good answers only where `fallback` allows
    /// (a held key is served stale instead).
    async fn hedged_get(
        &self,
        picked: &Upstream,
        known_good: &Upstream,
        namespace: &str,
        key: &[u8],
        fallback: bool,
    ) -> std::result::Result<crate::upstream::Answer, UpstreamError> {
        let delay = self.hedge_delay(known_good);
        let first = picked.get(namespace, key);
        tokio::pin!(first);
        let early = tokio::select! {
            answer = &mut first => Some(answer),
            _ = tokio::time::sleep(delay) => None,
        };
        match early {
            Some(Ok(answer)) => {
                picked.stats().on_time();
                return Ok(answer);
            }
            Some(Err(UpstreamError::Build(why))) => {
                self.note_fault(picked);
                if !fallback {
                    return Err(UpstreamError::Build(why));
                }
                tracing::debug!(%why, "reading from known-good after a build fault");
                return known_good.get(namespace, key).await;
            }
            Some(Err(client)) => return Err(client),
            None => {}
        }
        // The picked build is late: ask known-good too; the first good answer wins.
        let second = known_good.get(namespace, key);
        tokio::pin!(second);
        let mut first_done: Option<UpstreamError> = None;
        let mut second_done: Option<UpstreamError> = None;
        loop {
            tokio::select! {
                answer = &mut first, if first_done.is_none() => match answer {
                    // Late, but before known-good: the machine or the network is
                    // slow, not this build against known-good.
                    Ok(answer) => {
                        picked.stats().on_time();
                        return Ok(answer);
                    }
                    Err(err) => {
                        if matches!(err, UpstreamError::Build(_)) {
                            self.note_fault(picked);
                        }
                        first_done = Some(err);
                    }
                },
                answer = &mut second, if second_done.is_none() => match answer {
                    Ok(answer) => {
                        if first_done.is_none() {
                            self.count_late(picked, delay);
                        }
                        return Ok(answer);
                    }
                    Err(err) => second_done = Some(err),
                },
            }
            if let (Some(first), Some(second)) = (&first_done, &second_done) {
                // Neither answered: a client fault of either is the answer (the
                // request's own fault), else the picked build's fault.
                return Err(match (first, second) {
                    (UpstreamError::Build(_), UpstreamError::Build(_)) => first.clone(),
                    (UpstreamError::Build(_), client) | (client, _) => client.clone(),
                });
            }
        }
    }

    /// Counts a hedged read known-good answered while the picked build had not
    /// (past the delay), and ejects the build as an outlier when it keeps being
    /// beaten so.
    fn count_late(&self, picked: &Upstream, delay: Duration) {
        let Some(build) = picked.build_id() else {
            return;
        };
        let missed = picked.stats().late(
            delay,
            &format!(
                "no answer within the hedge delay of {} ms, while known-good answered",
                delay.as_millis()
            ),
        );
        if missed >= self.config.slow_eject_after {
            let until = self
                .clock
                .now_ms()
                .saturating_add(self.config.slow_eject_ms);
            picked.stats().eject_slow(until);
            let routes = self.routes.load();
            if !routes.is_ejected(build) {
                tracing::warn!(
                    build,
                    missed,
                    delay_ms = delay.as_millis() as u64,
                    "ejecting a build too slow for the hedge delay (an outlier)"
                );
                routes.eject(build);
            }
        }
    }

    /// Records that the feed saw a change of a key at `revision`, for every read and
    /// write of that key in flight. The caller holds the key's apply lock.
    pub(crate) fn mark_in_flight(&self, composite: &[u8], revision: u64) {
        if let Some(flight) = self.inflight.get(composite) {
            flight.invalidated.fetch_max(revision, Ordering::AcqRel);
        }
        if let Some(mark) = self.writes_in_flight.get(composite) {
            mark.invalidated.fetch_max(revision, Ordering::AcqRel);
        }
    }

    /// Marks every read and write in flight as overtaken by a snapshot at `revision`.
    pub(crate) fn mark_all_in_flight(&self, revision: u64) {
        for flight in self.inflight.iter() {
            flight.invalidated.fetch_max(revision, Ordering::AcqRel);
        }
        for mark in self.writes_in_flight.iter() {
            mark.invalidated.fetch_max(revision, Ordering::AcqRel);
        }
    }

    /// Whether an upstream answer of `data_set` may be kept: only of the data set
    /// followed, or, while an install moves the edge to another, of that one (a
    /// build of another data set may still be routed, its route entry naming it:
    /// its revisions are another count). The caller holds [`Edge::resync`]
    /// shared.
    fn keeps_answers_of(&self, data_set: &str) -> bool {
        match &*self.migrating_to.load() {
            Some(to) => to.as_str() == data_set,
            None => self
                .data_set()
                .is_none_or(|followed| followed.as_str() == data_set),
        }
    }

    /// Locks the apply locks of some keys, in a fixed order.
    pub(crate) fn lock_keys<'a>(
        &self,
        namespace: &str,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .map(|k| {
                let composite = keys::data_key(namespace, k);
                (self.stripe_hasher.hash_one(&composite) as usize) % APPLY_STRIPES
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.apply_locks[i].lock())
            .collect()
    }

    /// Keeps records newer than those held, in the store and the hot tier. The
    /// caller holds the keys' apply locks.
    pub(crate) fn keep_locked(
        &self,
        namespace: &str,
        items: Vec<(Bytes, Record)>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let writes: Vec<Write> = items
            .into_iter()
            // What the hot tier holds, the store kept first: a record no newer
            // than that (the feed's event for a write whose answer was kept, or
            // the answer after the event) needs no read or write of the store.
            .filter(|(key, record)| self.hot.revision(namespace, key) < Some(record.revision))
            .map(|(key, record)| Write {
                namespace: namespace.to_string(),
                key,
                record,
            })
            .collect();
        if writes.is_empty() && meta.is_empty() {
            return Ok(());
        }
        let drops = self.hot.drops();
        let kept = self.store.keep_newer(writes.clone(), meta)?;
        for (write, kept) in writes.into_iter().zip(kept) {
            if kept {
                (self.hot).update_unless_dropped(namespace, &write.key, write.record, drops);
            }
        }
        Ok(())
    }

    /// Turns a change into the mutation sent to the origin.
    fn mutation(key: Bytes, change: Change) -> v1::Mutation {
        let put = match change {
            Change::Put {
                value,
                metadata,
                expiration,
            } => Some(v1::Value {
                value,
                metadata,
                expiration,
            }),
            Change::Delete => None,
        };
        v1::Mutation { key, put }
    }

    /// Writes keys of one namespace through the origin and keeps what it answers.
    pub async fn write(
        &self,
        namespace: &str,
        changes: Vec<(Bytes, Change)>,
    ) -> Result<WriteOutcome> {
        self.write_keyed(namespace, changes, None, None).await
    }

    /// Writes keys of one namespace through the build that `version_key` picks
    /// (default: the key for one key, the namespace for several); on a build fault
    /// through known-good; when no build can take it, into the outbox.
    pub async fn write_keyed(
        &self,
        namespace: &str,
        changes: Vec<(Bytes, Change)>,
        version_key: Option<&[u8]>,
        build: Option<&str>,
    ) -> Result<WriteOutcome> {
        let changes = last_per_key(changes);
        let keys: Vec<Bytes> = changes.iter().map(|(k, _)| k.clone()).collect();
        let header = v1::WriteHeader {
            namespace: namespace.to_string(),
            write_id: Some(v1::WriteId {
                node_id: self.node_id.clone(),
                sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
                incarnation: self.incarnation.clone(),
            }),
            hlc: self.hlc.now(),
            replay: false,
        };
        let mutations: Vec<v1::Mutation> = changes
            .into_iter()
            .map(|(key, change)| Self::mutation(key, change))
            .collect();
        // Registered before the call, so the feed marks any change it sees meanwhile.
        let marks = WriteMarks::register(self, namespace, &keys);
        let affinity = match version_key {
            Some(affinity) => affinity,
            None if keys.len() == 1 => keys[0].as_ref(),
            None => namespace.as_bytes(),
        };
        // Writes leave this edge in the order it took them: behind the queue.
        // While the replay drains it (builds take writes again), a new write waits
        // for the queue to empty — backpressure — rather than join it: a queue
        // joined as fast as it drains never empties.
        if build.is_none() && !self.outbox.is_empty() && !self.wait_for_drain().await {
            drop(marks);
            return self
                .enqueue(
                    header,
                    mutations,
                    "earlier writes of this edge are still queued".into(),
                )
                .await;
        }
        let target = self.target(build, affinity)?;
        let written = match target.write(header.clone(), mutations.clone()).await {
            Ok(written) => written,
            // A write an operator aimed at one build is not redirected.
            Err(UpstreamError::Build(why)) if build.is_none() => {
                self.note_fault(&target);
                let retried = match self.fallback(&target) {
                    Some(known_good) => known_good.write(header.clone(), mutations.clone()).await,
                    None => Err(UpstreamError::Build(why)),
                };
                match retried {
                    Ok(written) => written,
                    Err(UpstreamError::Build(why)) => {
                        drop(marks);
                        return self.enqueue(header, mutations, why).await;
                    }
                    Err(client) => return Err(client.into()),
                }
            }
            Err(err) => return Err(err.into()),
        };
        self.keep_written(
            namespace,
            keys,
            written.records,
            &written.data_set,
            &marks,
            true,
        )?;
        Ok(WriteOutcome::Applied(written.revision))
    }

    /// Keeps the records a build answered for a write, except where the feed saw a
    /// newer change meanwhile. A write taken synchronously (`overtake`) is newer
    /// than any queued write of its keys, which leave the overlay.
    pub(crate) fn keep_written(
        &self,
        namespace: &str,
        keys: Vec<Bytes>,
        records: Vec<Record>,
        data_set: &str,
        marks: &WriteMarks<'_>,
        overtake: bool,
    ) -> Result<()> {
        let _gate = self.resync.read();
        let _lock = self.lock_keys(namespace, keys.iter().map(|k| k.as_ref()));
        if overtake {
            self.outbox.overtaken(namespace, &keys, &records);
        }
        if !self.keeps_answers_of(data_set) {
            return Ok(());
        }
        let keep = keys
            .into_iter()
            .zip(records)
            .zip(&marks.entries)
            .filter(|((_, record), (_, mark))| {
                mark.invalidated.load(Ordering::Acquire) <= record.revision
            })
            .map(|(item, _)| item)
            .collect();
        self.keep_locked(namespace, keep, vec![])
    }

    /// Puts a write no build could take in the outbox (fsynced, by the outbox's
    /// writer, off the async workers), visible here at once.
    async fn enqueue(
        &self,
        header: v1::WriteHeader,
        mutations: Vec<v1::Mutation>,
        why: String,
    ) -> Result<WriteOutcome> {
        let entry = v1::OutboxEntry {
            header: Some(header),
            mutations,
            queued_ms: self.clock.now_ms(),
            reason: why,
        };
        tracing::warn!(reason = %entry.reason, "no build can take a write: queued in the outbox");
        self.outbox
            .push(
                self.config.outbox_max_writes,
                self.config.outbox_max_bytes,
                entry,
            )
            .await?;
        Ok(WriteOutcome::Queued)
    }

    /// Waits, up to [`DRAIN_WAIT`], for the outbox to empty while the replay is
    /// draining it (a round settled everything it read within the last second);
    /// whether it emptied. False at once when no build takes the replays.
    async fn wait_for_drain(&self) -> bool {
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        loop {
            let replayed = self.replayed.notified();
            if self.outbox.is_empty() {
                return true;
            }
            let draining = self
                .replay_settled_at
                .lock()
                .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
            if !draining || tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = replayed => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Replays the outbox whenever writes wait, until `stop` changes:
    /// woken when a write is queued, retrying with a growing pause while no build
    /// takes the writes.
    pub async fn replay_outbox(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        const FIRST_PAUSE: Duration = Duration::from_millis(200);
        let mut pause = FIRST_PAUSE;
        loop {
            if self.outbox.is_empty() {
                tokio::select! {
                    _ = self.outbox.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let round = self.replay_round().await;
            if let Ok(true) = round {
                *self.replay_settled_at.lock() = Some(std::time::Instant::now());
            }
            self.replayed.notify_waiters();
            match round {
                Ok(true) => pause = FIRST_PAUSE,
                Ok(false) => {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::error!(error = %err, "outbox replay failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    /// Replays the waiting writes until one meets a build fault; returns whether
    /// every write it read was settled. Writes of different keys replay side by
    /// side, up to [`REPLAY_CONCURRENCY`] at a time (the origin orders replays by
    /// their stamps, and commits them in groups); a write waits for every earlier
    /// write of one of its keys, so each key's writes leave in the order the edge
    /// took them. Replaying one at a time, an edge under a steady write load could
    /// take new writes into the queue as fast as it replayed old ones, and never
    /// write directly again.
    pub async fn replay_round(&self) -> Result<bool> {
        let head = self.outbox.head(&*self.store, 64)?;
        let mut batch: Vec<Queued> = Vec::new();
        let mut batch_keys: std::collections::HashSet<(String, Bytes)> =
            std::collections::HashSet::new();
        let mut all_settled = true;
        for item in head {
            let queued = match item {
                Ok(queued) => queued,
                Err((sequence, _)) => {
                    self.outbox
                        .bury(
                            &self.store,
                            sequence,
                            None,
                            "the stored entry cannot be decoded".into(),
                        )
                        .await?;
                    continue;
                }
            };
            let namespace = (queued.entry.header.as_ref())
                .map(|h| h.namespace.clone())
                .unwrap_or_default();
            let keys: Vec<(String, Bytes)> = (crate::outbox::keys_of(&queued.entry).into_iter())
                .map(|k| (namespace.clone(), k))
                .collect();
            if batch.len() == REPLAY_CONCURRENCY || keys.iter().any(|k| batch_keys.contains(k)) {
                all_settled &= self.replay_batch(std::mem::take(&mut batch)).await?;
                batch_keys.clear();
                if !all_settled {
                    return Ok(false);
                }
            }
            batch_keys.extend(keys);
            batch.push(queued);
        }
        all_settled &= self.replay_batch(batch).await?;
        Ok(all_settled)
    }

    /// Replays writes of distinct keys side by side; whether all were settled.
    async fn replay_batch(&self, batch: Vec<Queued>) -> Result<bool> {
        let outcomes =
            futures_util::future::join_all(batch.iter().map(|queued| self.replay_one(queued)))
                .await;
        let mut all_settled = true;
        for outcome in outcomes {
            all_settled &= outcome?;
        }
        if all_settled {
            // Builds take writes again: new writes wait for the drain (a round of
            // several batches may take longer than the second that counts).
            *self.replay_settled_at.lock() = Some(std::time::Instant::now());
        }
        Ok(all_settled)
    }

    /// Replays one write: settled (applied, a duplicate, or superseded), buried
    /// (a client fault: it can never succeed), or left waiting (a build fault:
    /// returns false).
    async fn replay_one(&self, queued: &Queued) -> Result<bool> {
        // Past its maximum age a queued write is never replayed: the origin may
        // have forgotten the tombstones and write ids it would compete with, and
        // a late replay must not resurrect a delete.
        let age_ms = self.clock.now_ms().saturating_sub(queued.entry.queued_ms);
        if age_ms > self.config.outbox_max_age_s.saturating_mul(1000) {
            let why = format!(
                "queued {} s ago, past the outbox's maximum age of {} s: never replayed",
                age_ms / 1000,
                self.config.outbox_max_age_s
            );
            tracing::error!(sequence = queued.sequence, %why, "a queued write expired: moved to the dead letters");
            self.outbox
                .bury(&self.store, queued.sequence, Some(&queued.entry), why)
                .await?;
            return Ok(true);
        }
        let header = v1::WriteHeader {
            replay: true,
            ..queued.entry.header.clone().unwrap_or_default()
        };
        let namespace = header.namespace.clone();
        let keys = crate::outbox::keys_of(&queued.entry);
        let marks = WriteMarks::register(self, &namespace, &keys);
        let mut last_fault = String::new();
        let mut candidates = Vec::with_capacity(2);
        if let Ok(known_good) = self.known_good() {
            candidates.push(known_good);
        }
        if let Ok(picked) = self.pick(namespace.as_bytes())
            && !candidates.iter().any(|c| c.same_build(&picked))
        {
            candidates.push(picked);
        }
        for build in candidates {
            match build
                .write(header.clone(), queued.entry.mutations.clone())
                .await
            {
                Ok(written) => {
                    if let Err(err) = self.keep_written(
                        &namespace,
                        keys,
                        written.records,
                        &written.data_set,
                        &marks,
                        false,
                    ) {
                        tracing::warn!(error = %err, "could not keep a replayed write's answer");
                    }
                    self.outbox
                        .settled(&self.store, queued, written.duplicate, written.superseded)
                        .await?;
                    tracing::info!(
                        sequence = queued.sequence,
                        superseded = written.superseded,
                        duplicate = written.duplicate,
                        "replayed a queued write"
                    );
                    return Ok(true);
                }
                Err(UpstreamError::Build(why)) => {
                    self.note_fault(&build);
                    last_fault = why;
                }
                Err(client) => {
                    tracing::error!(sequence = queued.sequence, error = %client, "a queued write can never succeed: moved to the dead letters");
                    drop(marks);
                    self.outbox
                        .bury(
                            &self.store,
                            queued.sequence,
                            Some(&queued.entry),
                            client.to_string(),
                        )
                        .await?;
                    return Ok(true);
                }
            }
        }
        tracing::debug!(fault = %last_fault, "no build takes queued writes yet");
        Ok(false)
    }

    /// Writes many keys of one namespace, in as many origin writes as the gRPC
    /// message limit needs (a bulk write is not atomic, as in Workers KV).
    pub async fn write_many(
        &self,
        namespace: &str,
        changes: Vec<(Bytes, Change)>,
        version_key: Option<&[u8]>,
        build: Option<&str>,
    ) -> Result<WriteOutcome> {
        let version_key = Some(version_key.unwrap_or(namespace.as_bytes()));
        let mut outcome = WriteOutcome::Applied(0);
        let mut note = |o: WriteOutcome| {
            outcome = match (outcome, o) {
                (WriteOutcome::Queued, _) | (_, WriteOutcome::Queued) => WriteOutcome::Queued,
                (WriteOutcome::Applied(a), WriteOutcome::Applied(b)) => {
                    WriteOutcome::Applied(a.max(b))
                }
            };
        };
        /// Room under the gRPC message limit for framing and keys.
        const CHUNK_BYTES: usize = edgekv_proto::MAX_MESSAGE_BYTES / 2;
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (key, change) in changes {
            let size = key.len()
                + match &change {
                    Change::Put {
                        value, metadata, ..
                    } => value.len() + metadata.as_ref().map_or(0, Bytes::len),
                    Change::Delete => 0,
                };
            if !chunk.is_empty() && bytes + size > CHUNK_BYTES {
                note(
                    self.write_keyed(namespace, std::mem::take(&mut chunk), version_key, build)
                        .await?,
                );
                bytes = 0;
            }
            bytes += size;
            chunk.push((key, change));
        }
        if !chunk.is_empty() {
            note(
                self.write_keyed(namespace, chunk, version_key, build)
                    .await?,
            );
        }
        Ok(outcome)
    }

    /// Lists live keys: locally for a synced `full` namespace while fresh, else
    /// from the build; a `full` namespace falls back to what it holds.
    pub async fn list(
        &self,
        namespace: &str,
        mode: Mode,
        query: ListQuery,
        options: ReadOptions,
    ) -> Result<(ListPage, Source)> {
        let full = mode == Mode::Full;
        if full && !self.feed.synced() {
            return Err(Error::Unavailable(
                "this full namespace is still loading its first snapshot".into(),
            ));
        }
        if full && !options.no_cache && self.usable(options.cache_ttl_s) {
            return Ok((self.list_local(namespace, query).await?, Source::Hit));
        }
        let request = v1::ListRequest {
            namespace: namespace.to_string(),
            prefix: Bytes::from(query.prefix.clone()),
            start_after: query.start_after.clone().map(Bytes::from),
            limit: query.limit as u32,
        };
        let build = self.target(
            options.build.as_deref(),
            options
                .version_key
                .as_deref()
                .unwrap_or(namespace.as_bytes()),
        )?;
        let mut answer = build.list(request.clone()).await;
        let mut answered_by = build.clone();
        if matches!(answer, Err(UpstreamError::Build(_))) && options.build.is_none() {
            self.note_fault(&build);
            if let Some(known_good) = self.fallback(&build) {
                answer = known_good.list(request).await;
                answered_by = known_good;
            }
        }
        match answer {
            Ok((entries, more)) => {
                let build = answered_by.build_id().unwrap_or_default().to_string();
                Ok((ListPage { entries, more }, Source::Miss { build }))
            }
            Err(UpstreamError::Build(_)) if full => {
                Ok((self.list_local(namespace, query).await?, Source::Stale))
            }
            Err(UpstreamError::Build(why)) => Err(Error::Unavailable(format!(
                "origin unavailable, and a cache namespace cannot be listed from what the edge holds: {why}"
            ))),
            Err(client) => Err(client.into()),
        }
    }

    async fn list_local(&self, namespace: &str, query: ListQuery) -> Result<ListPage> {
        let store = self.store.clone();
        let namespace = namespace.to_string();
        let now_s = self.clock.now_s();
        Ok(blocking(move || store.list(&namespace, &query, now_s)).await??)
    }

    /// Purges records that have expired; returns how many.
    pub async fn purge_expired(&self) -> Result<usize> {
        let store = self.store.clone();
        let now_s = self.clock.now_s();
        blocking(move || {
            let mut total = 0;
            loop {
                let purged = store.purge_expired(now_s, 10_000)?;
                total += purged;
                if purged < 10_000 {
                    return Ok(total);
                }
            }
        })
        .await?
    }

    /// Waits until the feed has applied `revision` (for tests and tools); false if
    /// the deadline passed first.
    pub async fn wait_for_revision(&self, revision: u64, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let progressed = self.feed.progressed.notified();
                if self.feed.applied() >= revision {
                    return;
                }
                progressed.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

/// One change per key, the last one given for it (as in Workers KV, the last of
/// repeated keys in a bulk write wins): the origin answers one record per distinct
/// key, and the edge pairs them with its keys in order.
fn last_per_key(changes: Vec<(Bytes, Change)>) -> Vec<(Bytes, Change)> {
    if changes.len() < 2 {
        return changes;
    }
    let mut last: HashMap<Bytes, usize> = HashMap::with_capacity(changes.len());
    for (i, (key, _)) in changes.iter().enumerate() {
        last.insert(key.clone(), i);
    }
    if last.len() == changes.len() {
        return changes;
    }
    changes
        .into_iter()
        .enumerate()
        .filter(|(i, (key, _))| last.get(key) == Some(i))
        .map(|(_, change)| change)
        .collect()
}

/// The answer from what the edge holds, while held entries may be served: the
/// record, or — in a `full` namespace, where the edge holds every key — its
/// absence; `None` when a build must be asked.
fn answer_held(held: Option<Record>, mode: Mode, now_s: u64) -> Option<Lookup> {
    match held {
        Some(record) => Some(live(record, now_s, Source::Hit)),
        None if mode == Mode::Full => Some(Lookup {
            record: None,
            source: Source::Hit,
        }),
        None => None,
    }
}

/// The lookup of a held or answered record at `now_s`: only live records are served.
fn live(record: Record, now_s: u64, source: Source) -> Lookup {
    Lookup {
        record: record.is_live(now_s).then_some(record),
        source,
    }
}

fn read_u64(store: &dyn Store, name: &str) -> Result<u64> {
    Ok(store
        .meta(name)?
        .and_then(|raw| raw.as_slice().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

/// Runs store work off the reactor.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("storage task failed: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use edgekv_kv::ManualClock;
    use edgekv_store::MemoryStore;

    use super::*;

    /// An edge over `store`, with no upstream: for tests of what it keeps.
    pub(crate) fn edge_over(store: Arc<MemoryStore>) -> Edge {
        Edge::new(
            EdgeConfig::default(),
            store,
            Arc::new(ManualClock::new(1_700_000_000_000)),
            TokenTable::default(),
            Routes::empty(),
            "credential".into(),
        )
        .unwrap()
    }

    /// A cache namespace of account `acct`, titled as its id.
    pub(crate) fn namespace(id: &str) -> Namespace {
        Namespace {
            id: id.into(),
            title: id.into(),
            account: "acct".into(),
            mode: Mode::Cache,
        }
    }

    /// A record no newer than the one the hot tier holds (the feed's event for a
    /// write whose answer was kept, or the answer after the event) is neither
    /// read nor written in the store again; the meta that comes with it is.
    #[test]
    fn a_record_the_hot_tier_holds_is_not_kept_twice() {
        let store = Arc::new(MemoryStore::new());
        let edge = edge_over(store.clone());
        let id = "0123456789abcdef0123456789abcdef";
        let full = Namespace {
            mode: Mode::Full,
            ..namespace(id)
        };
        edge.apply_namespaces(vec![NamespaceOp::Put(full)], None)
            .unwrap();
        let at = |revision, value: &'static [u8]| {
            let record = Record::value(Bytes::from_static(value), None, None);
            vec![(Bytes::from_static(b"k"), Record { revision, ..record })]
        };

        edge.keep_locked(id, at(5, b"five"), vec![]).unwrap();
        assert_eq!(store.keep_reads(), 1);
        let meta = vec![("feed".to_string(), b"5".to_vec())];
        edge.keep_locked(id, at(5, b"five"), meta).unwrap();
        edge.keep_locked(id, at(4, b"four"), vec![]).unwrap();
        assert_eq!(
            store.keep_reads(),
            1,
            "a record held in the hot tier was kept again"
        );
        assert_eq!(store.meta("feed").unwrap().as_deref(), Some(&b"5"[..]));
        assert_eq!(store.get(id, b"k").unwrap().unwrap().value, "five");

        edge.keep_locked(id, at(6, b"six"), vec![]).unwrap();
        assert_eq!(store.keep_reads(), 2);
        assert_eq!(store.get(id, b"k").unwrap().unwrap().value, "six");
        assert_eq!(edge.hot().get(id, b"k").unwrap().value, "six");
    }

    /// A resync deletes and puts back each cache namespace in one batch: the hot
    /// tier drops what it held, but the namespace keeps its index, which
    /// connections remember ([`crate::tokens::Admission`]) and must go on reading
    /// through. Only a namespace deleted for good loses it.
    #[test]
    fn a_namespace_put_back_in_the_batch_that_deletes_it_keeps_its_hot_index() {
        let edge = edge_over(Arc::new(MemoryStore::new()));
        let (id, other) = (
            "0123456789abcdef0123456789abcdef",
            "ffffffffffffffffffffffffffffffff",
        );
        let put = |id| NamespaceOp::Put(namespace(id));
        let delete = |id: &str| NamespaceOp::Delete(id.into());
        edge.apply_namespaces(vec![put(id), put(other)], None)
            .unwrap();
        let index = edge.hot().intern(id).unwrap();
        edge.hot().update(
            id,
            b"k",
            Record::value(Bytes::from_static(b"v"), None, None),
        );

        edge.apply_namespaces(vec![delete(id), put(id)], None)
            .unwrap();
        assert!(edge.hot().get(id, b"k").is_none(), "held entries survived");
        assert_eq!(edge.hot().intern(id), Some(index), "the index changed");

        edge.apply_namespaces(vec![delete(id)], None).unwrap();
        assert_ne!(
            edge.hot().intern(id),
            Some(index),
            "a deleted namespace kept its index"
        );
    }
}
