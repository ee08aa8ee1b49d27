//! The edge's gRPC client of one origin build, and the classification of what goes
//! wrong into build faults (the route's fault: fall back) and client faults (the
//! request's fault: answer 4xx, never retry elsewhere).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgekv_kv::{Mode, Namespace, Record};
use edgekv_proto::MAX_MESSAGE_BYTES;
use edgekv_proto::convert::{mode_to_wire, namespace_from_wire, record_from_wire};
use edgekv_proto::v1::{self, origin_client::OriginClient};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

mod batch;

pub use batch::{WriteCalls, sent as write_calls};

/// Why an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The route failed — UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, a passed
    /// deadline, a transport error, an answer stamped by another environment, tenant
    /// or build. Never the client's fault.
    #[error("build fault: {0}")]
    Build(String),
    /// The namespace title is taken in the account (a client fault).
    #[error("{0}")]
    TitleTaken(String),
    /// The origin refused a write because this node reused its write id for
    /// another write: this node's fault, neither the client's nor the route's; the
    /// write can never succeed and is never acknowledged.
    #[error("node fault: {0}")]
    NodeFault(String),
    /// The request was refused as invalid: INVALID_ARGUMENT, FAILED_PRECONDITION,
    /// NOT_FOUND, RESOURCE_EXHAUSTED.
    #[error("{message}")]
    Client {
        /// The gRPC code.
        code: Code,
        /// The origin's message.
        message: String,
    },
}

/// Sorts a status into build or client fault.
pub fn classify(status: &Status) -> UpstreamError {
    if title_taken(status) {
        return UpstreamError::TitleTaken(status.message().to_string());
    }
    if reason_is(status, "write-id-reused") {
        return UpstreamError::NodeFault(status.message().to_string());
    }
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::ResourceExhausted => UpstreamError::Client {
            code: status.code(),
            message: status.message().to_string(),
        },
        code => UpstreamError::Build(format!("{code:?}: {}", status.message())),
    }
}

/// Whether a status tells the edge to resync from a snapshot (its position is
/// older than the retained log, or beyond the origin's head).
pub fn needs_resync(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status
            .metadata()
            .get("edgekv-reason")
            .is_some_and(|v| v == "resync")
}

/// Whether a status says a namespace title is taken.
fn title_taken(status: &Status) -> bool {
    reason_is(status, "title-taken")
}

/// Whether a status carries this machine-readable reason.
fn reason_is(status: &Status, reason: &str) -> bool {
    status
        .metadata()
        .get("edgekv-reason")
        .is_some_and(|v| v == reason)
}

pub use edgekv_proto::LATENCY_BOUNDS_MS;

/// The class of a build fault, as health reports count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultClass {
    /// UNAUTHENTICATED or PERMISSION_DENIED: the build refuses this edge's
    /// credential (the 2023 failure).
    Auth,
    /// UNAVAILABLE, or the connection failed.
    Unavailable,
    /// No answer within the request's time budget.
    Deadline,
    /// An answer (or an error) of another build, environment, tenant or data
    /// set, or an error with no stamp: the route leads to the wrong thing. Counted
    /// with `Other` in reports; a probe failing so ejects the build at once.
    Identity,
    /// Anything else: a protocol error, an internal error.
    Other,
}

impl FaultClass {
    fn of(code: Code) -> Self {
        match code {
            Code::Unauthenticated | Code::PermissionDenied => FaultClass::Auth,
            Code::Unavailable => FaultClass::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => FaultClass::Deadline,
            _ => FaultClass::Other,
        }
    }
}

/// A failed probe: why, and its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ProbeFailure {
    /// The class of the fault.
    pub class: FaultClass,
    /// The fault.
    pub error: UpstreamError,
}

impl ProbeFailure {
    /// Whether the build refused this edge's credential.
    pub fn refused_auth(&self) -> bool {
        self.class == FaultClass::Auth
    }

    /// Whether the fault is one that no retry mends: a refused credential, or an
    /// answer of another build, environment, tenant or data set. It ejects at once.
    pub fn is_decisive(&self) -> bool {
        matches!(self.class, FaultClass::Auth | FaultClass::Identity)
    }
}

/// What this edge saw of one build: counters since the last health report, and
/// the run of consecutive faults that ejects it.
#[derive(Debug, Default)]
pub struct BuildStats {
    requests: AtomicU64,
    faults: [AtomicU64; 4],
    client_errors: AtomicU64,
    /// Client faults that were NOT_FOUND, and reads answered "no such key": what
    /// the client sees as 404.
    not_found: AtomicU64,
    /// Reads answered "no such key" (a subset of `requests`, not a fault).
    absent: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
    probes_ok: AtomicU64,
    probes_failed: AtomicU64,
    consecutive_faults: AtomicU32,
    failed_probes: AtomicU32,
    last_error: parking_lot::Mutex<String>,
    /// A moving average of answered calls' latency, µs (0: none yet).
    typical_us: AtomicU64,
    /// Hedged reads known-good answered first, since the last report.
    late: AtomicU64,
    /// Hedged reads in a row known-good answered first.
    consecutive_late: AtomicU32,
    /// Ejected as too slow until then (Unix ms; 0: not).
    slow_until_ms: AtomicU64,
}

/// The counters of a [`BuildStats`] taken at a report, each reset to zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDelta {
    /// Requests (probes not included).
    pub requests: u64,
    /// Build faults by class: auth, unavailable, deadline, other.
    pub faults: [u64; 4],
    /// Client faults.
    pub client_errors: u64,
    /// Answers the client sees as 404: NOT_FOUND faults and reads of no key.
    pub not_found: u64,
    /// Hedged reads known-good answered first (latency faults).
    pub late: u64,
    /// Latency histogram over [`LATENCY_BOUNDS_MS`].
    pub latency: Vec<u64>,
    /// Probes answered.
    pub probes_ok: u64,
    /// Probes failed.
    pub probes_failed: u64,
    /// The last fault's message.
    pub last_error: String,
}

impl BuildStats {
    fn latency(&self, elapsed: Duration) {
        let ms = elapsed.as_millis() as u64;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn answered(&self, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency(elapsed);
        self.consecutive_faults.store(0, Ordering::Relaxed);
        // An average over about the last eight answers (a race between two
        // updates loses one sample, which does not matter here).
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let held = self.typical_us.load(Ordering::Relaxed);
        let next = if held == 0 {
            us.max(1)
        } else {
            (held * 7 + us) / 8
        };
        self.typical_us.store(next.max(1), Ordering::Relaxed);
    }

    /// The typical latency of this build's answers, once it has answered.
    pub fn typical_latency(&self) -> Option<Duration> {
        match self.typical_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Counts a hedged read this build had not answered when known-good did (a
    /// latency fault: a request whose latency is at least `waited`, counted
    /// apart from errors); returns how many in a row it has missed.
    pub fn late(&self, waited: Duration, message: &str) -> u32 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency(waited);
        self.late.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = message.to_string();
        self.consecutive_late.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A hedged read this build answered within the delay: its run of late
    /// answers ends.
    pub fn on_time(&self) {
        self.consecutive_late.store(0, Ordering::Relaxed);
    }

    /// Marks the build ejected as too slow until `until_ms`.
    pub fn eject_slow(&self, until_ms: u64) {
        self.slow_until_ms.store(until_ms, Ordering::Relaxed);
        self.consecutive_late.store(0, Ordering::Relaxed);
    }

    /// Whether the build is ejected as too slow at `now_ms`.
    pub fn is_slow(&self, now_ms: u64) -> bool {
        self.slow_until_ms.load(Ordering::Relaxed) > now_ms
    }

    fn client_fault(&self, elapsed: Duration, not_found: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.client_errors.fetch_add(1, Ordering::Relaxed);
        if not_found {
            self.not_found.fetch_add(1, Ordering::Relaxed);
        }
        self.latency(elapsed);
        self.consecutive_faults.store(0, Ordering::Relaxed);
    }

    /// Counts a build fault (`counted`: the request was already counted).
    fn fault(&self, class: FaultClass, elapsed: Duration, message: &str, counted: bool) {
        if !counted {
            self.requests.fetch_add(1, Ordering::Relaxed);
            self.latency(elapsed);
        }
        let index = match class {
            FaultClass::Auth => 0,
            FaultClass::Unavailable => 1,
            FaultClass::Deadline => 2,
            FaultClass::Identity | FaultClass::Other => 3,
        };
        self.faults[index].fetch_add(1, Ordering::Relaxed);
        self.consecutive_faults.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = message.to_string();
    }

    fn probe(&self, result: Result<(), &str>) {
        match result {
            Ok(()) => {
                self.probes_ok.fetch_add(1, Ordering::Relaxed);
                self.failed_probes.store(0, Ordering::Relaxed);
            }
            Err(message) => {
                self.probes_failed.fetch_add(1, Ordering::Relaxed);
                self.failed_probes.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock() = message.to_string();
            }
        }
    }

    /// Probes failed in a row since the last one that succeeded.
    pub fn failed_probes(&self) -> u32 {
        self.failed_probes.load(Ordering::Relaxed)
    }

    /// Build faults in a row since the last answer.
    pub fn consecutive_faults(&self) -> u32 {
        self.consecutive_faults.load(Ordering::Relaxed)
    }

    /// Takes the counters since the previous call.
    pub fn take(&self) -> StatsDelta {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        StatsDelta {
            requests: take(&self.requests),
            faults: std::array::from_fn(|i| take(&self.faults[i])),
            client_errors: take(&self.client_errors),
            not_found: take(&self.not_found) + take(&self.absent),
            late: take(&self.late),
            latency: self.latency.iter().map(take).collect(),
            probes_ok: take(&self.probes_ok),
            probes_failed: take(&self.probes_failed),
            last_error: self.last_error.lock().clone(),
        }
    }
}

/// Adds the edge's credential to every call.
#[derive(Clone)]
pub struct Credential(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The data set this edge follows: learnt from its change feed (known-good's),
/// kept in its store, and required of every answer a route entry does not say
/// otherwise of. Shared by every client of the edge; read without a lock.
#[derive(Debug, Default)]
pub struct FollowedDataSet(arc_swap::ArcSwapOption<String>);

impl FollowedDataSet {
    /// A cell holding `id`, if the edge has learnt one.
    pub fn new(id: Option<String>) -> Self {
        FollowedDataSet(arc_swap::ArcSwapOption::from(id.map(Arc::new)))
    }

    /// The data set followed now, if one was learnt.
    pub fn get(&self) -> Option<Arc<String>> {
        self.0.load_full()
    }

    /// Follows another data set (the feed learnt or switched it).
    pub fn set(&self, id: &str) {
        self.0.store(Some(Arc::new(id.to_string())));
    }
}

/// What the edge expects of the build it calls.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The edge's environment.
    pub environment: String,
    /// The edge's tenant.
    pub tenant: String,
    /// The data set the edge follows (shared by every client).
    pub data_set: Arc<FollowedDataSet>,
    /// The PEM CA trusted for `https://` endpoints (none: they are refused).
    pub tls_ca: Option<Arc<[u8]>>,
    /// How the edge's writes to an endpoint share calls.
    pub write_calls: WriteCalls,
}

impl Expected {
    /// Expects `environment` and `tenant`, and a data set still to learn.
    pub fn new(environment: &str, tenant: &str) -> Self {
        Expected {
            environment: environment.to_string(),
            tenant: tenant.to_string(),
            data_set: Arc::default(),
            tls_ca: None,
            write_calls: WriteCalls::default(),
        }
    }
}

/// The gRPC client of one endpoint.
type Client = OriginClient<InterceptedService<Channel, Credential>>;

/// One endpoint of a build.
struct Target {
    url: String,
    client: Client,
    /// Its writes, sent together when several wait at once.
    writes: Arc<batch::Batcher>,
}

/// A client of one build, over every endpoint its route entry lists: reads are
/// spread over the endpoints in turn (skipping one that faulted in the last
/// second), other calls go to the endpoint that answered last; on a build fault a
/// call moves on to the next endpoint.
#[derive(Clone)]
pub struct Upstream {
    targets: Arc<[Target]>,
    /// The endpoint calls go to first.
    preferred: Arc<AtomicUsize>,
    /// The turn of reads spread over the endpoints.
    turn: Arc<AtomicUsize>,
    /// Per endpoint, until when (ms after `epoch`) reads skip it: it faulted.
    resting: Arc<[std::sync::atomic::AtomicU64]>,
    epoch: Instant,
    expected: Expected,
    /// The build id, learned from its first stamped answer and then required.
    build_id: std::sync::Arc<OnceLock<String>>,
    /// The data set its route entry names; `None`: the one the edge follows.
    declared_data_set: Option<Arc<str>>,
    timeout: Duration,
    stats: Arc<BuildStats>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url())
            .finish()
    }
}

/// A key's state as a build answered it, current as of `read_revision`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The record, if the key was ever written (and not purged).
    pub record: Option<Record>,
    /// The origin's revision when it read.
    pub read_revision: u64,
    /// The build that answered.
    pub build_id: String,
    /// The data set of the answer's stamp.
    pub data_set: String,
}

/// A write as the origin applied it.
#[derive(Debug, Clone)]
pub struct Written {
    /// The commit's revision.
    pub revision: u64,
    /// The records now held for the written keys, in order.
    pub records: Vec<Record>,
    /// The write had been applied before (same write id).
    pub duplicate: bool,
    /// Some keys lost to newer writes (replays only).
    pub superseded: bool,
    /// The data set of the answer's stamp.
    pub data_set: String,
}

impl Upstream {
    /// A client of the build at `url`; it connects on first use, so an edge starts
    /// while its origin is down.
    pub fn new(
        url: &str,
        credential: &str,
        expected: Expected,
        timeout: Duration,
    ) -> Result<Self, String> {
        Self::over(&[url.to_string()], credential, expected, timeout)
    }

    /// A client of a build listening at each of `urls` (at least one).
    pub fn over(
        urls: &[String],
        credential: &str,
        expected: Expected,
        timeout: Duration,
    ) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("a build needs at least one endpoint".into());
        }
        let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {credential}")
                .parse()
                .map_err(|_| "the credential is not valid header text".to_string())?;
        let targets = urls
            .iter()
            .map(|url| {
                let mut endpoint = Endpoint::from_shared(url.to_string())
                    .map_err(|e| format!("invalid origin URL {url:?}: {e}"))?
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                // An https endpoint with no CA configured is refused, never
                // called in clear with the environment's credential.
                if let Some(tls) = edgekv_proto::tls::client_for(url, expected.tls_ca.as_deref())? {
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| format!("TLS for {url}: {e}"))?;
                }
                let client = OriginClient::with_interceptor(
                    endpoint.connect_lazy(),
                    Credential(value.clone()),
                )
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
                Ok(Target {
                    url: url.clone(),
                    writes: Arc::new(batch::Batcher::new(
                        client.clone(),
                        timeout,
                        expected.write_calls,
                    )),
                    client,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Upstream {
            resting: targets.iter().map(|_| Default::default()).collect(),
            targets: targets.into(),
            preferred: Arc::default(),
            turn: Arc::default(),
            epoch: Instant::now(),
            expected,
            build_id: std::sync::Arc::default(),
            declared_data_set: None,
            timeout,
            stats: Arc::default(),
        })
    }

    /// A client of a build whose id is known (from a route table): answers stamped
    /// by any other build are refused.
    pub fn for_build(
        urls: &[String],
        credential: &str,
        expected: Expected,
        timeout: Duration,
        build_id: &str,
    ) -> Result<Self, String> {
        let upstream = Self::over(urls, credential, expected, timeout)?;
        let _ = upstream.build_id.set(build_id.to_string());
        Ok(upstream)
    }

    /// Requires answers stamped with `data_set` (a route entry's), rather than
    /// with the data set the edge follows.
    pub fn with_data_set(mut self, data_set: &str) -> Self {
        if !data_set.is_empty() {
            self.declared_data_set = Some(Arc::from(data_set));
        }
        self
    }

    /// The data set its route entry names, if it names one.
    pub fn declared_data_set(&self) -> Option<&str> {
        self.declared_data_set.as_deref()
    }

    /// The URL of the endpoint calls go to first.
    pub fn url(&self) -> &str {
        &self.targets[self.preferred.load(Ordering::Relaxed) % self.targets.len()].url
    }

    /// Every endpoint's URL, in the route entry's order.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.url.as_str())
    }

    /// The client of the endpoint calls go to first.
    fn client(&self) -> Client {
        self.targets[self.preferred.load(Ordering::Relaxed) % self.targets.len()]
            .client
            .clone()
    }

    /// Moves to the next endpoint (a stream on this one failed).
    pub fn rotate(&self) {
        if self.targets.len() > 1 {
            self.preferred.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The build id, once known.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.get().map(String::as_str)
    }

    /// What this edge saw of the build.
    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }

    /// Whether two clients call the same build.
    pub fn same_build(&self, other: &Upstream) -> bool {
        Arc::ptr_eq(&self.stats, &other.stats)
            || (self.targets[0].url == other.targets[0].url && self.build_id() == other.build_id())
    }

    /// Checks an answer's stamp: same environment and tenant as the edge, and the
    /// build it called.
    fn check(&self, stamp: Option<&v1::Stamp>) -> Result<String, UpstreamError> {
        self.check_inner(stamp).inspect_err(|err| {
            self.stats
                .fault(FaultClass::Identity, Duration::ZERO, &err.to_string(), true)
        })
    }

    fn check_inner(&self, stamp: Option<&v1::Stamp>) -> Result<String, UpstreamError> {
        let stamp = stamp.ok_or_else(|| UpstreamError::Build("answer carries no stamp".into()))?;
        if stamp.environment != self.expected.environment || stamp.tenant != self.expected.tenant {
            return Err(UpstreamError::Build(format!(
                "answer stamped by environment {:?}, tenant {:?}; this edge is {:?}, {:?}",
                stamp.environment, stamp.tenant, self.expected.environment, self.expected.tenant
            )));
        }
        let expected = self.build_id.get_or_init(|| stamp.build_id.clone());
        if *expected != stamp.build_id {
            return Err(UpstreamError::Build(format!(
                "answer stamped by build {:?}; called {expected:?}",
                stamp.build_id
            )));
        }
        self.check_data_set(stamp)?;
        Ok(stamp.build_id.clone())
    }

    /// An answer of another data set than the route entry names (or, where it
    /// names none, than the edge follows) is a build fault: a build over the wrong
    /// store answers 404 to keys that exist.
    fn check_data_set(&self, stamp: &v1::Stamp) -> Result<(), UpstreamError> {
        let followed = self.expected.data_set.get();
        let want = self
            .declared_data_set
            .as_deref()
            .or(followed.as_deref().map(String::as_str));
        match want {
            Some(want) if want != stamp.data_set => Err(UpstreamError::Build(format!(
                "answer of data set {:?} from build {}; {} data set {want:?}",
                stamp.data_set,
                stamp.build_id,
                if self.declared_data_set.is_some() {
                    "its route entry names"
                } else {
                    "this edge follows"
                }
            ))),
            _ => Ok(()),
        }
    }

    /// Sorts an error answer: a client fault only when the build it called stamped
    /// it (environment, tenant, build and data set); an unstamped error, or one of
    /// another build or data set, is the route's fault.
    fn classify_error(&self, status: &Status) -> (UpstreamError, FaultClass) {
        let class = FaultClass::of(status.code());
        let err = classify(status);
        if matches!(err, UpstreamError::Build(_)) {
            return (err, class);
        }
        match edgekv_proto::stamp::read(status.metadata()) {
            None => (
                UpstreamError::Build(format!(
                    "error answer carries no build stamp ({:?}: {})",
                    status.code(),
                    status.message()
                )),
                FaultClass::Identity,
            ),
            Some(stamp) => match self.check_inner(Some(&stamp)) {
                Ok(_) => (err, class),
                Err(fault) => (fault, FaultClass::Identity),
            },
        }
    }

    /// The endpoint a spread read goes to first: the next in turn that has not
    /// faulted in the last second (the preferred one when all have).
    fn next_in_turn(&self) -> usize {
        let n = self.targets.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.resting[i].load(Ordering::Relaxed) <= now)
            .unwrap_or_else(|| self.preferred.load(Ordering::Relaxed) % n)
    }

    /// Spread reads skip an endpoint for a second after it faulted.
    fn rest(&self, index: usize) {
        let until = self.epoch.elapsed().as_millis() as u64 + 1000;
        self.resting[index].store(until, Ordering::Relaxed);
    }

    /// Runs one call within the time budget, on the preferred endpoint and, after
    /// a build fault, on the next ones while the budget lasts; checks the answer's
    /// stamp; counts the outcome in the build's stats.
    async fn unary<T, F, Fut>(&self, spread: bool, call: F) -> Result<T, UpstreamError>
    where
        T: Stamped,
        F: Fn(&Target) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let first = if spread && self.targets.len() > 1 {
            self.next_in_turn()
        } else {
            self.preferred.load(Ordering::Relaxed)
        };
        let mut last = None;
        for attempt in 0..self.targets.len() {
            let index = (first + attempt) % self.targets.len();
            let Some(left) = self.timeout.checked_sub(started.elapsed()) else {
                break;
            };
            let outcome = tokio::time::timeout(left, call(&self.targets[index])).await;
            let (err, class) = match outcome {
                Ok(Ok(response)) => {
                    let answer = response.into_inner();
                    match self.check_inner(answer.stamp()) {
                        Ok(_) => {
                            self.stats.answered(started.elapsed());
                            if attempt > 0 {
                                self.preferred.store(index, Ordering::Relaxed);
                            }
                            self.resting[index].store(0, Ordering::Relaxed);
                            return Ok(answer);
                        }
                        Err(err) => (err, FaultClass::Identity),
                    }
                }
                Ok(Err(status)) => {
                    let (err, class) = self.classify_error(&status);
                    match &err {
                        UpstreamError::Client { code, .. } => {
                            self.stats
                                .client_fault(started.elapsed(), *code == Code::NotFound);
                            return Err(err);
                        }
                        UpstreamError::TitleTaken(_) | UpstreamError::NodeFault(_) => {
                            self.stats.client_fault(started.elapsed(), false);
                            return Err(err);
                        }
                        UpstreamError::Build(_) => (err, class),
                    }
                }
                Err(_) => (
                    UpstreamError::Build(format!(
                        "no answer within {:?} from {}",
                        self.timeout, self.targets[index].url
                    )),
                    FaultClass::Deadline,
                ),
            };
            self.rest(index);
            last = Some((err, class));
        }
        let (err, class) = last.unwrap_or_else(|| {
            (
                UpstreamError::Build(format!("no answer within {:?}", self.timeout)),
                FaultClass::Deadline,
            )
        });
        self.stats
            .fault(class, started.elapsed(), &err.to_string(), false);
        Err(err)
    }

    /// Asks the build who it is (a probe: counted apart from requests).
    pub async fn health(&self) -> Result<v1::HealthResponse, ProbeFailure> {
        let mut client = self.client();
        let outcome = tokio::time::timeout(self.timeout, client.health(v1::HealthRequest {})).await;
        let result = match outcome {
            Ok(Ok(response)) => {
                let answer = response.into_inner();
                self.check_inner(answer.stamp.as_ref())
                    .map(|_| answer)
                    .map_err(|error| ProbeFailure {
                        class: FaultClass::Identity,
                        error,
                    })
            }
            Ok(Err(status)) => {
                let (error, class) = self.classify_error(&status);
                Err(ProbeFailure { class, error })
            }
            Err(_) => Err(ProbeFailure {
                class: FaultClass::Deadline,
                error: UpstreamError::Build(format!(
                    "no answer within {:?} from {}",
                    self.timeout,
                    self.url()
                )),
            }),
        };
        let message = result.as_ref().err().map(ToString::to_string);
        self.stats.probe(message.as_deref().map_or(Ok(()), Err));
        result
    }

    /// Reads a key.
    pub async fn get(&self, namespace: &str, key: &[u8]) -> Result<Answer, UpstreamError> {
        let request = v1::GetRequest {
            namespace: namespace.to_string(),
            key: Bytes::copy_from_slice(key),
        };
        let answer = self
            .unary(true, |target: &Target| {
                let mut client = target.client.clone();
                let request = request.clone();
                async move { client.get(request).await }
            })
            .await?;
        let (build_id, data_set) = answer
            .stamp
            .as_ref()
            .map(|s| (s.build_id.clone(), s.data_set.clone()))
            .unwrap_or_default();
        if answer.record.as_ref().is_none_or(|r| r.tombstone) {
            self.stats.absent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Answer {
            record: answer.record.map(record_from_wire),
            read_revision: answer.read_revision,
            build_id,
            data_set,
        })
    }

    /// Writes and deletes keys of one namespace.
    pub async fn write(
        &self,
        header: v1::WriteHeader,
        mutations: Vec<v1::Mutation>,
    ) -> Result<Written, UpstreamError> {
        // A retry on another endpoint carries the same write id: applied once.
        let request = v1::BulkWriteRequest {
            header: Some(header),
            mutations,
        };
        let answer = self
            .unary(false, |target: &Target| {
                let (writes, request) = (target.writes.clone(), request.clone());
                async move { writes.write(request).await }
            })
            .await?;
        Ok(Written {
            revision: answer.revision,
            records: answer.records.into_iter().map(record_from_wire).collect(),
            duplicate: answer.duplicate,
            superseded: answer.superseded,
            data_set: answer.stamp.map(|s| s.data_set).unwrap_or_default(),
        })
    }

    /// Lists live keys.
    pub async fn list(
        &self,
        request: v1::ListRequest,
    ) -> Result<(Vec<(Bytes, Record)>, bool), UpstreamError> {
        let answer = self
            .unary(true, |target: &Target| {
                let mut client = target.client.clone();
                let request = request.clone();
                async move { client.list(request).await }
            })
            .await?;
        let entries = answer
            .entries
            .into_iter()
            .map(|e| (e.key, e.record.map(record_from_wire).unwrap_or_default()))
            .collect();
        Ok((entries, answer.more))
    }

    /// Creates a namespace.
    pub async fn create_namespace(
        &self,
        account: &str,
        title: &str,
        mode: Mode,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let request = v1::CreateNamespaceRequest {
            account: account.to_string(),
            title: title.to_string(),
            mode: mode_to_wire(mode),
        };
        let answer = self
            .unary(false, |target: &Target| {
                let mut client = target.client.clone();
                let request = request.clone();
                async move { client.create_namespace(request).await }
            })
            .await?;
        self.namespace_answer(answer)
    }

    /// Renames a namespace.
    pub async fn rename_namespace(
        &self,
        account: &str,
        id: &str,
        title: &str,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let request = v1::RenameNamespaceRequest {
            account: account.to_string(),
            id: id.to_string(),
            title: title.to_string(),
        };
        let answer = self
            .unary(false, |target: &Target| {
                let mut client = target.client.clone();
                let request = request.clone();
                async move { client.rename_namespace(request).await }
            })
            .await?;
        self.namespace_answer(answer)
    }

    /// Deletes a namespace.
    pub async fn delete_namespace(
        &self,
        account: &str,
        id: &str,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let request = v1::DeleteNamespaceRequest {
            account: account.to_string(),
            id: id.to_string(),
        };
        let answer = self
            .unary(false, |target: &Target| {
                let mut client = target.client.clone();
                let request = request.clone();
                async move { client.delete_namespace(request).await }
            })
            .await?;
        self.namespace_answer(answer)
    }

    fn namespace_answer(
        &self,
        answer: v1::NamespaceResponse,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let namespace = answer
            .namespace
            .ok_or_else(|| UpstreamError::Build("namespace answer without a namespace".into()))?;
        Ok((namespace_from_wire(namespace), answer.revision))
    }

    /// Every namespace, current as of the returned revision.
    pub async fn namespaces(&self) -> Result<(Vec<Namespace>, u64), UpstreamError> {
        let answer = self
            .unary(false, |target: &Target| {
                let mut client = target.client.clone();
                async move { client.list_namespaces(v1::ListNamespacesRequest {}).await }
            })
            .await?;
        let list = answer
            .namespaces
            .into_iter()
            .map(namespace_from_wire)
            .collect();
        Ok((list, answer.read_revision))
    }

    /// Opens the change feed from a revision. An OUT_OF_RANGE that asks for a resync
    /// is returned as [`WatchError::Trimmed`].
    pub async fn watch(
        &self,
        from_revision: u64,
    ) -> Result<tonic::Streaming<v1::WatchEvent>, WatchError> {
        let mut client = self.client();
        match tokio::time::timeout(
            self.timeout,
            client.watch(v1::WatchRequest { from_revision }),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if needs_resync(&status) => {
                Err(WatchError::Trimmed(status.message().to_string()))
            }
            Ok(Err(status)) => Err(WatchError::Failed(self.classify_error(&status).0)),
            Err(_) => Err(WatchError::Failed(UpstreamError::Build(
                "watch did not open in time".into(),
            ))),
        }
    }

    /// Opens a snapshot of every namespace and of the keys of `namespaces`.
    pub async fn snapshot(
        &self,
        namespaces: Vec<String>,
    ) -> Result<tonic::Streaming<v1::SnapshotChunk>, UpstreamError> {
        let mut client = self.client();
        match tokio::time::timeout(
            self.timeout,
            client.snapshot(v1::SnapshotRequest { namespaces }),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.classify_error(&status).0),
            Err(_) => Err(UpstreamError::Build("snapshot did not open in time".into())),
        }
    }

    /// Checks the stamp of a streamed event.
    pub fn check_stamp(&self, stamp: Option<&v1::Stamp>) -> Result<(), UpstreamError> {
        self.check(stamp).map(drop)
    }
}

/// An answer that carries the stamp of the build that gave it.
pub trait Stamped {
    /// The stamp, if the answer has one.
    fn stamp(&self) -> Option<&v1::Stamp>;
}

macro_rules! stamped {
    ($($answer:ty),*) => {$(
        impl Stamped for $answer {
            fn stamp(&self) -> Option<&v1::Stamp> {
                self.stamp.as_ref()
            }
        }
    )*};
}

stamped!(
    v1::GetResponse,
    v1::WriteResponse,
    v1::ListResponse,
    v1::NamespaceResponse,
    v1::ListNamespacesResponse,
    v1::HealthResponse
);

/// Why a watch could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// The asked revision is older than the retained log: resync from a snapshot.
    Trimmed(String),
    /// Any other failure.
    Failed(UpstreamError),
}
