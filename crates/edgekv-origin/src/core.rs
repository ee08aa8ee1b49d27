//! [`OriginCore`]: the authoritative store and its rules, shared by every build of
//! a process.
//!
//! Writes are ordered here, in groups: one writer thread takes the writes waiting
//! (group commit: one transaction and one fsync for many writes), the store reads
//! what they need under its write order — a lock, or for an engine shared by several
//! origin processes, a database transaction — and [`decide`] checks each write's id
//! against those already applied and decides each key's stamp from the stamp it
//! carries now (`edgekv_kv::ordering`); each write is committed with the next
//! revision. The store keeps the change log that `Watch` streams.

use std::sync::Arc;

use bytes::Bytes;

use edgekv_kv::{Clock, Mode, Namespace, Record, validate};
use edgekv_store::{
    Commit, ListPage, ListQuery, LogRead, NamespaceOp, ReadSet, ReadView, SnapshotItem, Store,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use self::decide::{Pending, Verdict};

use crate::{Error, Result};

/// One key of a write: a value to put, or a delete.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The key.
    pub key: Bytes,
    /// The value, metadata (compact JSON) and expiration; `None` deletes.
    pub put: Option<(Bytes, Option<Bytes>, Option<u64>)>,
}

/// A client write: one or more keys of one namespace.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The namespace id.
    pub namespace: String,
    /// The keys and their changes.
    pub mutations: Vec<Mutation>,
    /// `node_id:incarnation:sequence`, applied at most once.
    pub write_id: Option<String>,
    /// The stamp taken by the edge that accepted the write.
    pub hlc: u64,
    /// Whether it is an outbox replay (competes on its stamp).
    pub replay: bool,
}

/// What a write did.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The revision it was committed at (for a duplicate: the first commit's).
    pub revision: u64,
    /// It had been applied before and was not applied again.
    pub duplicate: bool,
    /// Some of its keys lost to newer writes (replays only).
    pub superseded: bool,
    /// The records now held for its keys, in its order.
    pub records: Vec<Record>,
}

/// The shared state of every build of an origin process.
pub struct OriginCore {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The queue of the writer thread, which commits writes in groups (taken
    /// when the core is dropped: the thread then ends).
    writes: Mutex<Option<mpsc::Sender<Queued>>>,
    /// The writer thread, joined when the core is dropped: it holds the store,
    /// which must be closed before the process exits, never while it does.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    committed: Arc<watch::Sender<u64>>,
    /// Set when the process stops: open watch streams end.
    closing: watch::Sender<bool>,
    tombstone_ttl_s: u64,
    /// The store's data-set id, 32 hex digits.
    data_set: String,
}

/// The digest of a client write's content: its namespace and, per key, the
/// change — not its stamp or whether it is a replay, which a retry of the same
/// write may carry differently.
pub fn digest(request: &WriteRequest) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(request.namespace.as_bytes());
    for m in &request.mutations {
        field(&m.key);
        match &m.put {
            None => field(b"delete"),
            Some((value, metadata, expiration)) => {
                field(b"put");
                field(value);
                field(metadata.as_deref().unwrap_or(b"\0none"));
                field(&expiration.map_or([0xff; 8], u64::to_be_bytes));
            }
        }
    }
    hasher.finalize().into()
}

/// The store metadata entry holding the data-set id.
pub const DATA_SET_META: &str = "data_set";

/// Reads the store's data-set id, creating it (128 random bits) with a store that
/// has none yet: an empty store, never one holding data — a store with commits but
/// no id predates ids, and gets one too, once, fsynced before it is used.
pub fn data_set_of(store: &dyn Store) -> Result<String> {
    let held = match store.meta(DATA_SET_META)? {
        Some(raw) => raw,
        None => {
            let bytes: [u8; 16] = rand::random();
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // Two origin processes starting at once on a shared engine: one id wins.
            let held = store.init_meta(DATA_SET_META, id.as_bytes())?;
            if held == id.as_bytes() {
                tracing::info!(data_set = %id, "created the store's data-set id");
            }
            held
        }
    };
    String::from_utf8(held)
        .ok()
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            Error::Config("the store's data-set id is corrupt (not 32 hex digits)".into())
        })
}

impl Drop for OriginCore {
    fn drop(&mut self) {
        // The queue closes, the writer thread commits what it holds and ends,
        // releasing its handle of the store (a RocksDB closed while the process
        // exits aborts it).
        self.writes.get_mut().take();
        if let Some(writer) = self.writer.get_mut().take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for OriginCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginCore")
            .field("revision", &self.store.revision())
            .finish()
    }
}

impl OriginCore {
    /// A core over a store that keeps a change log; reads the store's data-set id,
    /// creating it with a new store.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, tombstone_ttl_s: u64) -> Result<Self> {
        let data_set = data_set_of(store.as_ref())?;
        let committed = Arc::new(watch::channel(store.revision()).0);
        let (closing, _) = watch::channel(false);
        // Another origin process's commits (a shared engine) wake watch streams too.
        let foreign = committed.clone();
        store.on_foreign_commit(Box::new(move |head| advance(&foreign, head)));
        let (queue, queued) = mpsc::channel(QUEUE_MAX_WRITES);
        let writer = Writer {
            store: store.clone(),
            clock: clock.clone(),
            committed: committed.clone(),
            tombstone_ttl_s,
        };
        let writer = std::thread::Builder::new()
            .name("origin-writer".into())
            .spawn(move || writer.run(queued))
            .map_err(|e| Error::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(OriginCore {
            store,
            clock,
            writes: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
            committed,
            closing,
            tombstone_ttl_s,
            data_set,
        })
    }

    /// The data-set id of the store: every build's answers carry it.
    pub fn data_set(&self) -> &str {
        &self.data_set
    }

    /// Ends every open watch stream (the process is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that turns true when the process stops.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The revision of the last commit.
    pub fn revision(&self) -> u64 {
        self.store.revision()
    }

    /// A receiver that changes on every commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    fn namespace_of(&self, id: &str) -> Result<Namespace> {
        self.store
            .namespace(id)?
            .ok_or_else(|| Error::NamespaceNotFound(id.to_string()))
    }

    /// Reads a key; the answer is current as of the returned revision.
    pub fn get(&self, namespace: &str, key: &[u8]) -> Result<(Option<Record>, u64)> {
        validate::key(key)?;
        let read_revision = self.store.revision();
        self.namespace_of(namespace)?;
        Ok((self.store.get(namespace, key)?, read_revision))
    }

    /// Applies a client write, waiting on this thread (never call it on an async
    /// runtime's: see [`OriginCore::write_async`]). A key given twice counts once,
    /// with its last change.
    pub fn write(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let queued = self.checked(request)?;
        let (queue, answer) = (self.queue()?, queued.1);
        queue.blocking_send(queued.0).map_err(|_| stopped())?;
        answer.blocking_recv().map_err(|_| stopped())?
    }

    /// Applies a client write; the task waits for its group's commit, no thread
    /// does. When the writer's queue is full, the caller waits for a place.
    pub async fn write_async(&self, request: WriteRequest) -> Result<WriteOutcome> {
        let (queued, answer) = self.checked(request)?;
        let queue = self.queue()?;
        queue.send(queued).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn queue(&self) -> Result<mpsc::Sender<Queued>> {
        self.writes.lock().clone().ok_or_else(stopped)
    }

    /// A write checked and ready to queue, and where its answer will come.
    fn checked(
        &self,
        mut request: WriteRequest,
    ) -> Result<(Queued, oneshot::Receiver<Result<WriteOutcome>>)> {
        dedupe_last_wins(&mut request.mutations);
        let now_ms = self.clock.now_ms();
        if !edgekv_kv::ordering::within_skew(request.hlc, now_ms) {
            return Err(Error::ClockSkew {
                ahead_ms: edgekv_kv::Hlc::physical_ms(request.hlc).saturating_sub(now_ms),
            });
        }
        // A replay older than the tombstones kept could resurrect a delete whose
        // tombstone is gone: refused (the edge buries it as a dead letter).
        if request.replay {
            let horizon = decide::Horizon {
                now_ms,
                tombstone_ttl_s: self.tombstone_ttl_s,
            };
            horizon.check_replay(request.hlc)?;
        }
        // Checked before the write joins a group: a malformed id must fail alone,
        // never the group's transaction.
        validate::namespace_id(&request.namespace)?;
        for m in &request.mutations {
            validate::key(&m.key)?;
            if let Some((value, metadata, _)) = &m.put {
                validate::value_len(value.len())?;
                if let Some(metadata) = metadata {
                    validate::metadata_text(metadata)?;
                }
            }
        }
        let write_id = request.write_id.as_ref().map(|id| id.as_bytes().to_vec());
        let digest = write_id.as_ref().map(|_| digest(&request));
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            pending: Pending {
                request,
                write_id,
                digest,
            },
            reply,
        };
        Ok((queued, answer))
    }

    /// Returns a page of live keys, current as of the returned revision.
    pub fn list(&self, namespace: &str, query: &ListQuery) -> Result<(ListPage, u64)> {
        let read_revision = self.store.revision();
        self.namespace_of(namespace)?;
        let page = self.store.list(namespace, query, self.clock.now_s())?;
        Ok((page, read_revision))
    }

    /// Creates a namespace with a new random id.
    pub fn create_namespace(
        &self,
        account: &str,
        title: &str,
        mode: Mode,
    ) -> Result<(Namespace, u64)> {
        validate::title(title)?;
        let id = new_id();
        let reads = ReadSet {
            all_namespaces: true,
            ..ReadSet::default()
        };
        self.change_namespace(&reads, |view| {
            check_title_free(view, account, title, None)?;
            let namespace = Namespace {
                id: id.clone(),
                title: title.to_string(),
                account: account.to_string(),
                mode,
            };
            Ok((namespace.clone(), NamespaceOp::Put(namespace)))
        })
    }

    /// Renames a namespace of `account`.
    pub fn rename_namespace(
        &self,
        account: &str,
        id: &str,
        title: &str,
    ) -> Result<(Namespace, u64)> {
        validate::title(title)?;
        let reads = ReadSet {
            all_namespaces: true,
            ..ReadSet::default()
        };
        self.change_namespace(&reads, |view| {
            let mut namespace = owned(view, account, id)?;
            check_title_free(view, account, title, Some(id))?;
            namespace.title = title.to_string();
            Ok((namespace.clone(), NamespaceOp::Put(namespace)))
        })
    }

    /// Deletes a namespace of `account` and every key in it.
    pub fn delete_namespace(&self, account: &str, id: &str) -> Result<(Namespace, u64)> {
        let reads = ReadSet {
            namespaces: vec![id.to_string()],
            ..ReadSet::default()
        };
        self.change_namespace(&reads, |view| {
            let namespace = owned(view, account, id)?;
            Ok((namespace, NamespaceOp::Delete(id.to_string())))
        })
    }

    /// One namespace change, decided under the store's write order (titles are
    /// unique per account across every origin process of a shared engine).
    fn change_namespace(
        &self,
        reads: &ReadSet,
        change: impl Fn(&ReadView) -> Result<(Namespace, NamespaceOp)>,
    ) -> Result<(Namespace, u64)> {
        let mut decided = None;
        let revisions = self.store.transact(reads, &mut |view| {
            let outcome = change(&view);
            let commits = match &outcome {
                Ok((_, op)) => vec![Commit {
                    namespaces: vec![op.clone()],
                    ..Commit::default()
                }],
                Err(_) => Vec::new(),
            };
            decided = Some(outcome);
            Ok(commits)
        })?;
        let (namespace, _) = decided.ok_or_else(|| {
            Error::Store(edgekv_store::Error::Engine(
                "the store committed without deciding".into(),
            ))
        })??;
        let revision = revisions.first().copied().ok_or_else(|| {
            Error::Store(edgekv_store::Error::Engine(
                "the store returned no revision for a commit".into(),
            ))
        })?;
        advance(&self.committed, revision);
        Ok((namespace, revision))
    }

    /// Every namespace, current as of the returned revision.
    pub fn namespaces(&self) -> Result<(Vec<Namespace>, u64)> {
        let read_revision = self.store.revision();
        Ok((self.store.namespaces()?, read_revision))
    }

    /// Reads log entries from `from` on. A start beyond the next revision means the
    /// caller saw revisions this store never had (it was restored or wiped): it must
    /// resync, exactly as if the log had been trimmed.
    pub fn log(&self, from: u64, max: usize) -> Result<Vec<edgekv_store::LogEntry>> {
        let mut head = self.store.revision();
        if from > head + 1 {
            // The head known here may lag another origin's commits (a shared
            // engine): ask the engine before calling the caller's revision unknown.
            head = self.store.refresh_revision()?;
        }
        if from > head + 1 {
            return Err(Error::Ahead { asked: from, head });
        }
        match self.store.log(from.max(1), max)? {
            LogRead::Entries(entries) => Ok(entries),
            LogRead::Trimmed { first } => Err(Error::Trimmed { asked: from, first }),
        }
    }

    /// Visits a consistent snapshot; returns its revision.
    pub fn snapshot(
        &self,
        namespaces: &[String],
        visit: &mut dyn FnMut(SnapshotItem) -> edgekv_store::Result<()>,
    ) -> Result<u64> {
        Ok(self.store.snapshot(namespaces, visit)?)
    }

    /// Trims the log to `keep` revisions, purges expired records and forgets the
    /// write ids past their time. Each step runs whatever another's outcome: a
    /// failing trim must not keep ids from being forgotten. The first error is
    /// returned, after all three ran.
    pub fn maintain(&self, keep: u64) -> Result<Maintained> {
        let now_s = self.clock.now_s();
        let trimmed = self.store.trim_log(keep).map_err(Error::from);
        let purged = in_batches(|max| self.store.purge_expired(now_s, max));
        let forgotten = in_batches(|max| self.store.forget_write_ids(now_s, max));
        Ok(Maintained {
            trimmed: trimmed?,
            purged: purged?,
            forgotten: forgotten?,
        })
    }
}

/// What a round of [`OriginCore::maintain`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Log entries trimmed.
    pub trimmed: usize,
    /// Expired records (tombstones included) purged.
    pub purged: usize,
    /// Write ids forgotten.
    pub forgotten: usize,
}

/// Maintenance removes at most this many items per call of the store, which may
/// hold the store's write order meanwhile.
const MAINTENANCE_BATCH: usize = 10_000;
/// ... and makes at most this many calls per round: 160,000 items a second at
/// the default interval, above a sustained write rate of one origin.
const MAINTENANCE_BATCHES: usize = 16;

/// Runs `step` (which removes up to its argument's count of items) until it
/// finds less than a batch, at most [`MAINTENANCE_BATCHES`] times; returns how
/// many it removed.
fn in_batches(mut step: impl FnMut(usize) -> edgekv_store::Result<usize>) -> Result<usize> {
    let mut total = 0;
    for _ in 0..MAINTENANCE_BATCHES {
        let removed = step(MAINTENANCE_BATCH)?;
        total += removed;
        if removed < MAINTENANCE_BATCH {
            break;
        }
    }
    Ok(total)
}

/// A namespace of `account` in a view; another account's reads as absent.
fn owned(view: &ReadView, account: &str, id: &str) -> Result<Namespace> {
    match view.namespaces.get(id) {
        Some(ns) if ns.account == account => Ok(ns.clone()),
        _ => Err(Error::NamespaceNotFound(id.to_string())),
    }
}

fn check_title_free(
    view: &ReadView,
    account: &str,
    title: &str,
    except: Option<&str>,
) -> Result<()> {
    let taken = (view.namespaces.values())
        .any(|n| n.account == account && n.title == title && Some(n.id.as_str()) != except);
    if taken {
        return Err(Error::TitleTaken(title.to_string()));
    }
    Ok(())
}

/// Moves the committed head forward (never back: another process's commit may be
/// learnt after a later one of ours).
fn advance(committed: &watch::Sender<u64>, revision: u64) {
    committed.send_if_modified(|head| {
        let newer = revision > *head;
        if newer {
            *head = revision;
        }
        newer
    });
}

/// A write queued for the writer thread, with where its answer goes.
struct Queued {
    pending: Pending,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

/// The error of a write the writer thread never answered (the origin stops).
fn stopped() -> Error {
    Error::Io("the origin's writer did not commit this write".into())
}

/// The most writes waiting for the writer thread; past it, a caller waits for a
/// place (as many as one group takes).
const QUEUE_MAX_WRITES: usize = GROUP_MAX_WRITES;

/// The most writes one group commits.
const GROUP_MAX_WRITES: usize = 512;
/// A group stops growing past this many bytes of values.
const GROUP_MAX_BYTES: usize = 64 << 20;

/// The writer thread: commits the writes waiting, in groups.
struct Writer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    committed: Arc<watch::Sender<u64>>,
    tombstone_ttl_s: u64,
}

impl Writer {
    fn run(self, mut queued: mpsc::Receiver<Queued>) {
        // Ends when the core (the queue's only lasting sender) is dropped.
        while let Some(first) = queued.blocking_recv() {
            let mut group = vec![first];
            let mut bytes = weight(&group[0].pending);
            while group.len() < GROUP_MAX_WRITES && bytes < GROUP_MAX_BYTES {
                match queued.try_recv() {
                    Ok(next) => {
                        bytes += weight(&next.pending);
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            // A bug in one group must not end writing for the process: its writes
            // fail (their answers are dropped), the next group goes on.
            let committed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.commit(group)));
            if committed.is_err() {
                tracing::error!("A WRITE GROUP PANICKED: its writes failed; writing goes on");
            }
        }
    }

    fn commit(&self, group: Vec<Queued>) {
        let (pending, replies): (Vec<Pending>, Vec<_>) =
            group.into_iter().map(|q| (q.pending, q.reply)).unzip();
        let reads = decide::reads(&pending);
        let horizon = decide::Horizon {
            now_ms: self.clock.now_ms(),
            tombstone_ttl_s: self.tombstone_ttl_s,
        };
        let mut verdicts = Vec::new();
        let committed = self.store.transact(&reads, &mut |view| {
            let (commits, decided) = decide::group(&pending, view, horizon);
            verdicts = decided;
            Ok(commits)
        });
        let revisions = match committed {
            Ok(revisions) => revisions,
            Err(err) => {
                let message = err.to_string();
                for reply in replies {
                    let failed = edgekv_store::Error::Engine(message.clone());
                    let _ = reply.send(Err(Error::Store(failed)));
                }
                return;
            }
        };
        if let Some(last) = revisions.last() {
            advance(&self.committed, *last);
        }
        for (verdict, reply) in verdicts.into_iter().zip(replies) {
            let outcome = match verdict {
                Verdict::Refused(err) => Err(err),
                Verdict::Done {
                    at,
                    duplicate,
                    superseded,
                    records,
                } => Ok(WriteOutcome {
                    revision: at.resolve(&revisions),
                    duplicate,
                    superseded,
                    records: (records.into_iter())
                        .map(|(mut record, at)| {
                            record.revision = at.resolve(&revisions);
                            record
                        })
                        .collect(),
                }),
            };
            // A caller that gave up (its request was cancelled) reads nothing.
            let _ = reply.send(outcome);
        }
    }
}

/// The bytes of values a write carries, for a group's size.
fn weight(pending: &Pending) -> usize {
    (pending.request.mutations.iter())
        .map(|m| m.put.as_ref().map_or(0, |(value, _, _)| value.len()) + m.key.len())
        .sum()
}

/// Keeps only the last change of each key, in the order of those last changes.
fn dedupe_last_wins(mutations: &mut Vec<Mutation>) {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Mutation> = mutations
        .drain(..)
        .rev()
        .filter(|m| seen.insert(m.key.clone()))
        .collect();
    kept.reverse();
    *mutations = kept;
}

/// A new namespace id: 128 random bits as 32 lowercase hex digits.
fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

mod decide;

#[cfg(test)]
mod tests;
