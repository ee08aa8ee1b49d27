//! The writes an edge sends one endpoint, together: while a call to the endpoint
//! is in flight, the writes that come wait, and go in one `WriteMany` call. Each
//! write still gets an answer of its own — the answer, or the status, its own
//! call would have had.
//!
//! A write that finds the endpoint idle goes at once, alone, from its caller's
//! future (as `Put`, `Delete` or `BulkWrite`): a quiet edge calls as it always
//! did. So does a write larger than a call carries. Writes gather while calls are
//! in flight ([`WriteCalls`] bounds them and their calls per endpoint), so
//! the busier the edge, the more each call carries.
//!
//! Whatever goes wrong with a call as a whole — a transport error, a refusal of
//! the call (its credential, an injected fault, an origin of an earlier release
//! without `WriteMany`), an answer that does not fit — its writes go again one by
//! one, each on a call of its own, so each is sorted (build fault, client fault)
//! and counted exactly as it was before writes travelled together. A write's id
//! makes a second sending of a write the origin applied a duplicate, never a
//! second write. An endpoint that answers UNIMPLEMENTED gets its writes one by
//! one for [`RETRY_MANY_AFTER`] before it is asked again.
//!
//! A write whose caller gave up (its time budget ran out while it waited) is not
//! sent: the caller moved on (another build, the outbox) and a late copy would
//! be stamped anew.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use edgekv_proto::{ANSWER_TOO_LARGE, MAX_WRITES_PER_CALL, v1};
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Code, Status};

use super::Client;

/// The status metadata holding a machine-readable reason.
const REASON_KEY: &str = "edgekv-reason";

/// How an endpoint's writes share calls (the edge's `origin_write_call_*`
/// settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCalls {
    /// The most calls of gathered writes in flight per endpoint; past it, writes
    /// wait and join the next call. Under the 90/10 mix one gave calls of 20
    /// writes and the slowest writes; two, four and eight gave 9, 4.5 and 2.4
    /// writes a call, the machine's noise hiding any difference in req/s.
    pub in_flight: usize,
    /// The most writes one call carries (1: every write alone); at most
    /// [`MAX_WRITES_PER_CALL`].
    pub max_writes: usize,
    /// A call takes no further write past this many bytes of writes; a larger
    /// write goes alone, at once.
    pub max_bytes: usize,
}

impl Default for WriteCalls {
    fn default() -> Self {
        WriteCalls {
            in_flight: 4,
            max_writes: 256,
            max_bytes: 1 << 20,
        }
    }
}

impl WriteCalls {
    /// Checks the settings: each at least 1, and no more writes a call than an
    /// origin takes.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.in_flight) {
            return Err(format!(
                "origin_write_calls_in_flight is {}; it must be between 1 and 1024",
                self.in_flight
            ));
        }
        if !(1..=MAX_WRITES_PER_CALL).contains(&self.max_writes) {
            return Err(format!(
                "origin_write_call_max_writes is {}; it must be between 1 and {MAX_WRITES_PER_CALL}",
                self.max_writes
            ));
        }
        if !(1024..=16 << 20).contains(&self.max_bytes) {
            return Err(format!(
                "origin_write_call_max_bytes is {}; it must be between 1024 and 16777216 (16 MiB)",
                self.max_bytes
            ));
        }
        Ok(())
    }

    /// The most writes waiting for a call, past which a write waits for a place.
    /// Never reached in practice: an edge holds at most `max_body_requests`
    /// client writes and 16 replays at once.
    fn queue(&self) -> usize {
        4 * self.max_writes.max(256)
    }
}
/// How long an endpoint that answered UNIMPLEMENTED gets its writes one by one
/// before it is asked again (it may have been upgraded).
const RETRY_MANY_AFTER: Duration = Duration::from_secs(60);

/// Calls that carried writes, since start (all endpoints of all builds).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Writes those calls carried.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Calls that carried writes to origin builds since start, and the writes they
/// carried (a retry on another endpoint counts again).
pub fn sent() -> (u64, u64) {
    (
        CALLS.load(Ordering::Relaxed),
        WRITES.load(Ordering::Relaxed),
    )
}

/// Counts one call of `writes` writes.
fn count(writes: usize) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    WRITES.fetch_add(writes as u64, Ordering::Relaxed);
}

/// One write waiting for its call, and where its answer goes.
struct Queued {
    request: v1::BulkWriteRequest,
    size: usize,
    reply: oneshot::Sender<Result<v1::WriteResponse, Status>>,
}

/// The writes of one endpoint.
pub(super) struct Batcher {
    client: Client,
    /// The queue of the task that makes the calls of gathered writes, started at
    /// the first write that waits (an edge's clients are made before its runtime
    /// runs).
    queue: OnceLock<mpsc::Sender<Queued>>,
    shared: Shared,
}

impl Batcher {
    pub(super) fn new(client: Client, timeout: Duration, limits: WriteCalls) -> Self {
        Batcher {
            client,
            queue: OnceLock::new(),
            shared: Shared {
                timeout,
                limits,
                single_until: Arc::default(),
                busy: Arc::default(),
                epoch: Instant::now(),
            },
        }
    }

    /// Sends a write: at once and alone when the endpoint is idle, else with
    /// those waiting beside it. Its answer, or the status its own call would have
    /// had.
    pub(super) async fn write(
        &self,
        request: v1::BulkWriteRequest,
    ) -> Result<tonic::Response<v1::WriteResponse>, Status> {
        let size = request.encoded_len();
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        let limits = self.shared.limits;
        if size > limits.max_bytes
            || limits.max_writes == 1
            || now < self.shared.single_until.load(Ordering::Relaxed)
        {
            return alone(self.client.clone(), request).await;
        }
        if self.shared.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            let _busy = Busy(&self.shared.busy);
            return alone(self.client.clone(), request).await;
        }
        self.shared.busy.fetch_sub(1, Ordering::AcqRel);
        let queue = self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::channel(limits.queue());
            tokio::spawn(run(self.client.clone(), waiting, self.shared.clone()));
            queue
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(Queued {
                request,
                size,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("the edge's write calls stopped"))?;
        let answer = answer
            .await
            .map_err(|_| Status::unavailable("the edge's write call was dropped"))?;
        answer.map(tonic::Response::new)
    }
}

/// Counts a call in flight while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the calls of one endpoint share with its batcher.
#[derive(Clone)]
struct Shared {
    timeout: Duration,
    limits: WriteCalls,
    /// Until when (ms after `epoch`) writes go one by one: the endpoint answered
    /// UNIMPLEMENTED.
    single_until: Arc<AtomicU64>,
    /// Calls of this endpoint's writes in flight.
    busy: Arc<AtomicUsize>,
    epoch: Instant,
}

/// Takes the waiting writes a call at a time, up to `in_flight` calls at once.
/// Ends when the batcher is dropped.
async fn run(client: Client, mut waiting: mpsc::Receiver<Queued>, shared: Shared) {
    let limits = shared.limits;
    let calls = Arc::new(Semaphore::new(limits.in_flight));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Writes that come while the calls are all in flight join this one.
        let Ok(call) = calls.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < limits.max_writes {
            let Ok(next) = waiting.try_recv() else { break };
            if bytes + next.size > limits.max_bytes {
                carried = Some(next);
                break;
            }
            bytes += next.size;
            batch.push(next);
        }
        // A caller that gave up (its budget ran out) has moved on.
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (client, shared) = (client.clone(), shared.clone());
        shared.busy.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let _busy = Busy(&shared.busy);
            send(client, batch, &shared).await;
            drop(call);
        });
    }
}

/// Makes one call of `batch` and answers each of its writes; what the call as a
/// whole could not answer goes again one by one.
async fn send(client: Client, batch: Vec<Queued>, shared: &Shared) {
    if batch.len() == 1 {
        one_by_one(client, batch, shared.timeout).await;
        return;
    }
    let mut call = client.clone();
    count(batch.len());
    let request = v1::WriteManyRequest {
        writes: batch.iter().map(|q| q.request.clone()).collect(),
    };
    let outcome = tokio::time::timeout(shared.timeout, call.write_many(request)).await;
    let response = match outcome {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            if status.code() == Code::Unimplemented {
                let until = shared.epoch.elapsed() + RETRY_MANY_AFTER;
                (shared.single_until).store(until.as_millis() as u64, Ordering::Relaxed);
                tracing::info!(
                    "the origin does not take several writes in one call (an earlier release): \
                     writes go one by one for a minute"
                );
            }
            // The call's fault is no write's: each goes again on a call of its
            // own, and is sorted as that call is.
            one_by_one(client, batch, shared.timeout).await;
            return;
        }
        Err(_) => {
            let status = Status::deadline_exceeded(format!(
                "no answer to {} writes within {:?}",
                batch.len(),
                shared.timeout
            ));
            for queued in batch {
                let _ = queued.reply.send(Err(status.clone()));
            }
            return;
        }
    };
    if response.results.len() != batch.len() {
        // Unstamped: sorted as the route's fault, never as the client's.
        let status = Status::internal(format!(
            "WriteMany answered {} results for {} writes",
            response.results.len(),
            batch.len()
        ));
        for queued in batch {
            let _ = queued.reply.send(Err(status.clone()));
        }
        return;
    }
    let mut again = Vec::new();
    for (result, queued) in response.results.into_iter().zip(batch) {
        let answer = match result.result {
            Some(v1::write_result::Result::Written(written)) => Ok(written),
            Some(v1::write_result::Result::Error(error)) if error.reason == ANSWER_TOO_LARGE => {
                again.push(queued);
                continue;
            }
            Some(v1::write_result::Result::Error(error)) => {
                Err(status_of(error, response.stamp.as_ref()))
            }
            None => Err(Status::internal("a WriteMany result holds nothing")),
        };
        let _ = queued.reply.send(answer);
    }
    if !again.is_empty() {
        one_by_one(client, again, shared.timeout).await;
    }
}

/// Sends each write of `batch` on a call of its own, all at once, answering each
/// as its call ends (not a write whose caller gave up).
async fn one_by_one(client: Client, batch: Vec<Queued>, timeout: Duration) {
    let calls = batch.into_iter().map(|queued| {
        let client = client.clone();
        async move {
            if queued.reply.is_closed() {
                return;
            }
            let answer = match tokio::time::timeout(timeout, alone(client, queued.request)).await {
                Ok(answer) => answer.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                ))),
            };
            let _ = queued.reply.send(answer);
        }
    });
    futures_util::future::join_all(calls).await;
}

/// The status a write's own call would have carried: its code, message and
/// reason, stamped by the build that answered the call.
fn status_of(error: v1::WriteError, stamp: Option<&v1::Stamp>) -> Status {
    let mut status = Status::new(Code::from(error.code), error.message);
    if !error.reason.is_empty()
        && let Ok(reason) = error.reason.parse()
    {
        status.metadata_mut().insert(REASON_KEY, reason);
    }
    if let Some(stamp) = stamp {
        edgekv_proto::stamp::write(stamp, status.metadata_mut());
    }
    status
}

/// One write in a call of its own: `Put` or `Delete` for one key, `BulkWrite`
/// for several.
async fn alone(
    mut client: Client,
    request: v1::BulkWriteRequest,
) -> Result<tonic::Response<v1::WriteResponse>, Status> {
    count(1);
    let v1::BulkWriteRequest { header, mutations } = request;
    if mutations.len() != 1 {
        return client
            .bulk_write(v1::BulkWriteRequest { header, mutations })
            .await;
    }
    let Some(m) = mutations.into_iter().next() else {
        return Err(Status::invalid_argument("empty write"));
    };
    match m.put {
        Some(value) => {
            client
                .put(v1::PutRequest {
                    header,
                    key: m.key,
                    value: Some(value),
                })
                .await
        }
        None => {
            client
                .delete(v1::DeleteRequest { header, key: m.key })
                .await
        }
    }
}
