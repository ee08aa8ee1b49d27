//! The PostgreSQL engine of edgekv's storage trait: the origin's store in a
//! database that several origin processes, on any hosts, share.
//!
//! Every commit is one transaction that first takes the lock of the one row of
//! `edgekv_head`, reads what the decision needs, and bumps the head's revision in
//! the same transaction: commits of every process are ordered by that lock, and
//! revisions have no gaps (a sequence would skip the numbers of rolled-back
//! transactions). Each commit NOTIFYs the other processes, which follow the head
//! ([`tail`]). Values and log entries are cut into chunks of at most 1 MiB, within
//! the row sizes of the engines that speak PostgreSQL's wire.
//!
//! The trait is synchronous; the engine runs tokio-postgres on a small runtime of
//! its own and blocks the calling thread (callers keep store calls off their
//! reactor, as with every engine).
//!
//! # Layout
//! - [`PgStore`]: the engine; [`PgOptions`]: its pool and timings.
//! - [`schema`]: versioned migrations, applied at open.
//! - [`tail`]: following the database's head across processes.
//! - [`lease`]: a lease and the document its holder writes (control's state,
//!   shared by an active and a standby control).
//! - [`testing`]: a throwaway PostgreSQL server for tests.

pub mod lease;
mod link;
pub mod schema;
pub mod tail;
pub mod testing;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use edgekv_kv::{Namespace, Record};
use edgekv_store::{
    Commit, Error, ListPage, ListQuery, LogEntry, LogRead, NamespaceOp, ReadSet, ReadView, Result,
    SnapshotItem, Store, Write, WrittenId, codec, keys,
};
use futures_util::TryFutureExt as _;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, Row, SimpleQueryMessage};

pub use crate::tls::{MakeTls, SslMode};

/// The most revisions one trim of the log drops (maintenance runs every second).
pub const TRIM_STEP: u64 = 10_000;

/// The largest chunk of a stored value or log entry.
pub const CHUNK: usize = 1 << 20;

/// How a [`PgStore`] connects and follows the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The most connections the pool holds.
    pub pool_size: usize,
    /// How often the head is polled when no notification arrives.
    pub poll_interval: Duration,
    /// How many times a transaction that lost a conflict, or whose connection
    /// broke before it committed, is tried again.
    pub retries: u32,
    /// How long a connection may take to open, and a call may wait for one.
    pub connect_timeout: Duration,
    /// How long a snapshot waits for one of the pool's snapshot places (a
    /// quarter of `pool_size`: slow or many resyncing edges never hold the
    /// connections writes and reads need).
    pub snapshot_wait: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            poll_interval: Duration::from_secs(1),
            retries: 8,
            connect_timeout: Duration::from_secs(5),
            snapshot_wait: Duration::from_secs(30),
        }
    }
}

/// Places for snapshots at once: each holds a connection (and a transaction)
/// for as long as the edge receiving it takes.
struct SnapshotPlaces {
    free: parking_lot::Mutex<usize>,
    freed: parking_lot::Condvar,
}

/// A snapshot's place, given back when dropped.
struct SnapshotPlace<'a>(&'a SnapshotPlaces);

impl SnapshotPlaces {
    fn new(places: usize) -> Self {
        SnapshotPlaces {
            free: parking_lot::Mutex::new(places.max(1)),
            freed: parking_lot::Condvar::new(),
        }
    }

    /// Takes a place, waiting `wait` at most.
    fn take(&self, wait: Duration) -> Option<SnapshotPlace<'_>> {
        let deadline = std::time::Instant::now() + wait;
        let mut free = self.free.lock();
        while *free == 0 {
            if self.freed.wait_until(&mut free, deadline).timed_out() && *free == 0 {
                return None;
            }
        }
        *free -= 1;
        Some(SnapshotPlace(self))
    }
}

impl Drop for SnapshotPlace<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// Whom to call when another process commits.
type Listeners = Arc<parking_lot::Mutex<Vec<Box<dyn Fn(u64) + Send + Sync>>>>;

/// A failure inside the engine: whether trying again may succeed.
#[derive(Debug)]
pub struct Fail {
    message: String,
    retry: bool,
    /// The database rolled the transaction back (a conflict): trying again is
    /// safe even at COMMIT.
    conflict: bool,
}

impl Fail {
    fn fatal(message: impl Into<String>) -> Self {
        Fail {
            message: message.into(),
            retry: false,
            conflict: false,
        }
    }
}

impl Fail {
    /// A failure in the round trip that carried the COMMIT: its outcome is
    /// unknown (a connection lost), so it is not tried again — a write id makes
    /// the caller's retry safe — unless it was a conflict, which rolled back.
    /// The transaction's connection is closed either way.
    fn unless_conflict(self) -> Fail {
        Fail {
            retry: self.conflict,
            ..self
        }
    }
}

/// A transaction's revisions and log entries.
type Committed = (Vec<u64>, Vec<LogEntry>);

impl From<tokio_postgres::Error> for Fail {
    fn from(err: tokio_postgres::Error) -> Self {
        let conflict = err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            || err.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED);
        let retry = conflict
            || err.is_closed()
            || err.code() == Some(&SqlState::ADMIN_SHUTDOWN)
            || err.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
            || err.as_db_error().is_none();
        let message = match err.as_db_error() {
            Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
            None => format!("PostgreSQL: {}", with_causes(&err)),
        };
        Fail {
            message,
            retry,
            conflict,
        }
    }
}

/// An error and its causes, each said once ("a: b: c"): a TLS handshake's
/// failure says why (the certificate's name, its issuer).
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Fail {
            message: format!("PostgreSQL: no connection: {}", with_causes(&err)),
            // The database may be failing over to a new primary.
            retry: true,
            conflict: false,
        }
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Fail::fatal(err.to_string())
    }
}

impl From<Fail> for Error {
    fn from(fail: Fail) -> Self {
        Error::Engine(fail.message)
    }
}

/// A connection inside a transaction. Dropped without [`InTxn::finish`] (an error,
/// a panic in a decision), the connection is closed, never returned to the pool
/// with the transaction open.
struct InTxn(Option<Object>);

impl InTxn {
    fn client(&self) -> &Object {
        // Only `finish` takes the connection, and it consumes the guard.
        #[allow(clippy::expect_used)]
        self.0
            .as_ref()
            .expect("a transaction's connection is held until it ends")
    }

    /// Ends the transaction with `sql` (COMMIT or ROLLBACK); the connection goes
    /// back to the pool only if that worked.
    async fn finish(mut self, sql: &str) -> Result<(), Fail> {
        let client = self.0.take();
        if let Some(client) = client {
            match client.batch_execute(sql).await {
                Ok(()) => drop(client),
                Err(err) => {
                    drop(Object::take(client));
                    return Err(err.into());
                }
            }
        }
        Ok(())
    }
}

impl InTxn {
    /// The transaction was committed by a COMMIT sent on its connection: the
    /// connection goes back to the pool.
    fn committed(mut self) {
        drop(self.0.take());
    }
}

impl Drop for InTxn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// A [`Store`] in a PostgreSQL database.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    head: Arc<AtomicU64>,
    listeners: Listeners,
    options: PgOptions,
    /// Whether the engine has NOTIFY (PostgreSQL does; some engines that speak
    /// its wire do not, and are then only polled).
    notify: bool,
    /// Places for snapshots at once.
    snapshots: SnapshotPlaces,
    /// The database, without credentials, for messages.
    target: String,
    /// This process's mark in its commits' notifications: its own are not
    /// followed up (it knows its head already).
    instance: u64,
    /// The committing thread's own connection ([`link`]).
    link: parking_lot::Mutex<link::Link>,
    /// The newest log entries, for the watch streams ([`RecentLog`]).
    recent: Arc<parking_lot::Mutex<RecentLog>>,
    /// Held while the log is read from the database: streams that missed
    /// [`RecentLog`] together make one read.
    log_reading: parking_lot::Mutex<()>,
    /// How many times the log was read from the database.
    log_queries: AtomicU64,
}

/// The newest entries of the change log, in memory: every watch stream (one per
/// edge following this process) reads the log after every commit, and without
/// this each read would be a query — edges × commits of them. Filled by this
/// process's commits and by what the database answered; emptied when the
/// database's head is found to have gone back.
#[derive(Default)]
struct RecentLog {
    entries: std::collections::BTreeMap<u64, LogEntry>,
    /// The bytes of keys, values and metadata held.
    bytes: usize,
    /// How many times it was emptied (the database's head went back): a read
    /// of the database begun before is not kept.
    generation: u64,
}

impl RecentLog {
    /// The most entries kept.
    const MAX: usize = 4096;
    /// The most bytes kept (a value may be 25 MiB).
    const MAX_BYTES: usize = 64 << 20;

    fn weight(entry: &LogEntry) -> usize {
        64 + edgekv_store::log_entry_weight(entry)
    }

    fn keep(&mut self, entries: impl IntoIterator<Item = LogEntry>) {
        for entry in entries {
            self.bytes += Self::weight(&entry);
            if let Some(old) = self.entries.insert(entry.revision, entry) {
                self.bytes -= Self::weight(&old);
            }
        }
        while self.entries.len() > Self::MAX || self.bytes > Self::MAX_BYTES {
            match self.entries.pop_first() {
                Some((_, gone)) => self.bytes -= Self::weight(&gone),
                None => break,
            }
        }
    }

    /// Forgets the entries at and below `floor` (trimmed).
    fn forget_through(&mut self, floor: u64) {
        let kept = self.entries.split_off(&floor.saturating_add(1));
        for gone in std::mem::replace(&mut self.entries, kept).values() {
            self.bytes -= Self::weight(gone);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.generation += 1;
    }

    /// The entries from `from` on, as long as none is missing, at most `max`,
    /// within [`edgekv_store::LOG_READ_BYTES`] as a read of the database is.
    fn from(&self, from: u64, max: usize) -> Vec<LogEntry> {
        let mut budget = edgekv_store::LogBudget::default();
        (from..)
            .zip(self.entries.range(from..))
            .take_while(|(next, (revision, _))| *revision == next)
            .take(max)
            .take_while(|(_, (_, entry))| budget.admits(edgekv_store::log_entry_weight(entry)))
            .map(|(_, (_, entry))| entry.clone())
            .collect()
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropped anywhere (an async task included): never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Parses a PostgreSQL URL (hosts may be several, comma-separated) into the
/// connections' configuration and their TLS ([`tls`]: `sslmode`, `sslrootcert`,
/// `sslcert`, `sslkey`, whose files are read now); the error never repeats the
/// URL (it may hold a password).
pub fn parse_url(url: &str) -> std::result::Result<(Config, MakeTls), String> {
    let (url, params) = tls::split_url(url).map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
    let mut config: Config = url
        .parse()
        .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
    if config.get_hosts().is_empty() {
        return Err("invalid PostgreSQL URL: it names no host".into());
    }
    if config.get_dbname().is_none() {
        return Err(
            "invalid PostgreSQL URL: it names no database (postgres://USER@HOST/DB)".into(),
        );
    }
    let tls = MakeTls::new(&params, &mut config)?;
    Ok((config, tls))
}

/// The longest one call to the database may take (one phase of a transaction,
/// a statement): past it, the call fails; at COMMIT, its outcome is unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Session settings that bound what a dead or cut-off peer costs the others: the
/// server ends a session idle in a transaction after 10 s (releasing the head's
/// lock a vanished origin held), probes idle connections every second after 5 s
/// (an advisory lease of a host that vanished is freed in ~10 s), and a lock is
/// waited for 20 s at most. Both ends keep TCP alive, and end a connection whose
/// sent data stays unacknowledged for 10 s.
pub(crate) fn guard_sessions(config: &mut Config) {
    let guards = "-c idle_in_transaction_session_timeout=10000 -c lock_timeout=20000 \
                  -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=5 \
                  -c tcp_user_timeout=10000";
    let options = match config.get_options() {
        Some(given) if !given.is_empty() => format!("{given} {guards}"),
        _ => guards.to_string(),
    };
    config
        .options(&options)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(5)
        // Sent data unacknowledged this long ends the connection: a primary
        // that vanished without a reset (powered off, cut off) while a query
        // was in flight, where keepalives do not probe. Else the kernel's
        // retransmissions hold the connection for about 15 minutes.
        .tcp_user_timeout(TCP_USER_TIMEOUT);
}

/// How long sent data may stay unacknowledged before a connection is ended.
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `database`, the head just read, is behind `known`, the head this
/// process knew when it began reading it; if so, the database lost commits this
/// process saw (a failover to a
/// replica that had not received them, or a restore). The known head goes back
/// to the database's — unless a commit of this process moved it meanwhile — and
/// what was kept of the lost history is dropped, so that a caller ahead of the
/// database is told to resync, and no lost entry is served again.
fn went_back(head: &AtomicU64, recent: &parking_lot::Mutex<RecentLog>, known: u64, database: u64) {
    if database < known
        && head
            .compare_exchange(known, database, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        recent.lock().clear();
        tracing::error!(
            database,
            known,
            "THE DATABASE'S HEAD WENT BACK: it lost commits this origin saw (a failover to a replica that had not received them, or a restore); those writes are lost, and edges that applied them resync from a snapshot"
        );
    }
}

/// Runs `work` on a runtime and waits for it on this thread (any thread: the wait
/// is a channel's, never a runtime's `block_on`), for [`CALL_TIMEOUT`] at most.
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T, Fail>> + Send + 'static,
) -> Result<T, Fail> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Fail::fatal(format!(
                "PostgreSQL: no answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
        };
        let _ = done.send(outcome);
    });
    result
        .recv()
        .map_err(|_| Fail::fatal("the PostgreSQL store's runtime has stopped"))?
}

/// The hosts and database of a configuration, without credentials.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = (config.get_hosts().iter().enumerate())
        .map(|(i, host)| {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

fn at(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Cuts an encoded record or log entry into chunks of at most [`CHUNK`] bytes (at
/// least one).
fn chunks(encoded: &[u8]) -> Vec<&[u8]> {
    if encoded.is_empty() {
        return vec![encoded];
    }
    encoded.chunks(CHUNK).collect()
}

/// A record's stored row: its chunks and the columns queries filter on.
struct RecordRow {
    namespace: String,
    key: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    revision: i64,
    expiration: Option<i64>,
    tombstone: bool,
}

impl RecordRow {
    fn new(write: &Write) -> Self {
        let encoded = write.record.encode();
        RecordRow {
            namespace: write.namespace.clone(),
            key: write.key.to_vec(),
            chunks: chunks(&encoded).into_iter().map(<[u8]>::to_vec).collect(),
            revision: at(write.record.revision),
            expiration: write.record.expiration.map(at),
            tombstone: write.record.tombstone,
        }
    }
}

/// Joins chunks read in order (`head`, then parts 1, 2, ...) into a record.
fn assemble(head: &[u8], parts: &[&[u8]]) -> Result<Record> {
    if parts.is_empty() {
        return Ok(Record::decode(Bytes::copy_from_slice(head))?);
    }
    let mut whole =
        BytesMut::with_capacity(head.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    whole.extend_from_slice(head);
    for part in parts {
        whole.extend_from_slice(part);
    }
    Ok(Record::decode(whole.freeze())?)
}

/// Reads rows of `(…, head, parts, part, data)` — a record per run of rows with
/// the same key, parts in order — into records. `key_of` names a row's key.
fn records_of<K: PartialEq + Clone>(
    rows: &[Row],
    key_of: impl Fn(&Row) -> K,
    head_at: usize,
) -> std::result::Result<Vec<(K, Record)>, Fail> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let key = key_of(&rows[i]);
        let head: &[u8] = rows[i].get(head_at);
        let count: i32 = rows[i].get(head_at + 1);
        let mut parts: Vec<&[u8]> = Vec::new();
        while i < rows.len() && key_of(&rows[i]) == key {
            if let Some(data) = rows[i].get::<_, Option<&[u8]>>(head_at + 3) {
                parts.push(data);
            }
            i += 1;
        }
        if parts.len() + 1 != usize::try_from(count).unwrap_or(0) {
            return Err(Fail::fatal(format!(
                "a stored record has {} of its {count} chunks",
                parts.len() + 1
            )));
        }
        out.push((key, assemble(head, &parts)?));
    }
    Ok(out)
}

/// The first key after every key that starts with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

const SELECT_RECORD: &str = "SELECT r.head, r.parts, p.part, p.data FROM edgekv_records r \
     LEFT JOIN edgekv_record_parts p \
       ON p.namespace = r.namespace AND p.key = r.key AND p.part < r.parts \
     WHERE r.namespace = $1 AND r.key = $2 ORDER BY p.part";

/// The held records of a set of keys, chunks in order.
///
/// One index probe per key, whatever the planner believes of the table's size: a
/// plain join is planned once per pooled connection, and a plan made while the
/// table was small (a new database) is a hash join over a scan of the whole
/// table, kept until the statistics catch up — each write group would then read
/// every record. The parts are read only for records that have some.
const READ_RECORDS: &str = "SELECT k.namespace, k.key, r.head, r.parts, p.part, p.data \
     FROM unnest($1::text[], $2::bytea[]) AS k(namespace, key) \
     CROSS JOIN LATERAL (SELECT head, parts FROM edgekv_records \
       WHERE namespace = k.namespace AND key = k.key LIMIT 1) r \
     LEFT JOIN LATERAL (SELECT part, data FROM edgekv_record_parts \
       WHERE r.parts > 1 AND namespace = k.namespace AND key = k.key AND part < r.parts \
       OFFSET 0) p ON true \
     ORDER BY k.namespace, k.key, p.part";

/// All namespaces (`$1`) or those named (`$2`). Two arms, each gated by a
/// one-time filter, so that a generic plan still probes the index for the
/// named ones (`$1 OR id = ANY($2)` would plan a scan of the table).
const READ_NAMESPACES: &str = "SELECT id, body FROM edgekv_namespaces WHERE $1 \
     UNION ALL SELECT id, body FROM edgekv_namespaces WHERE NOT $1 AND id = ANY($2) \
     ORDER BY id";

/// The known write ids of a set, one index probe each (as [`READ_RECORDS`]).
const READ_WRITTEN: &str = "SELECT w.id, x.revision, x.digest FROM unnest($1::bytea[]) AS w(id) \
     CROSS JOIN LATERAL (SELECT revision, digest FROM edgekv_written \
       WHERE id = w.id LIMIT 1) x";

/// The log from `$1` up to (not including) `$2`, without the entries that
/// begin past `$3` bytes of those before them, with the floor; in one snapshot.
/// The sizes are read from the values' headers, the data only of what is kept.
const READ_LOG: &str = "WITH sizes AS ( \
       SELECT revision, sum(octet_length(data))::int8 AS bytes FROM edgekv_log \
       WHERE revision >= $1 AND revision < $2 GROUP BY revision), \
     kept AS ( \
       SELECT max(revision) AS last FROM ( \
         SELECT revision, (sum(bytes) OVER (ORDER BY revision))::int8 - bytes AS before \
         FROM sizes) s WHERE before < $3::int8) \
     SELECT h.log_floor, l.revision, l.data FROM edgekv_head h \
     LEFT JOIN edgekv_log l ON l.revision >= $1 AND l.revision <= (SELECT last FROM kept) \
     WHERE h.id = 1 ORDER BY l.revision, l.part";

/// A page of a namespace's records after `$2` (from the start when NULL): at most
/// `$3`, without those that begin past `$4` bytes of the ones before them (at
/// least one). A record's size is told by its head and its count of 1 MiB parts,
/// so only the data of what is returned is read.
const SNAPSHOT_PAGE: &str = "WITH listed AS ( \
       SELECT namespace, key, head, parts, \
         octet_length(head)::int8 + (greatest(parts, 1) - 1)::int8 * 1048576 AS size \
       FROM edgekv_records \
       WHERE namespace = $1 AND ($2::bytea IS NULL OR key > $2) \
       ORDER BY key LIMIT $3), \
     r AS ( \
       SELECT namespace, key, head, parts FROM ( \
         SELECT *, (sum(size) OVER (ORDER BY key))::int8 - size AS before FROM listed) w \
       WHERE before < $4::int8) \
     SELECT r.key, r.head, r.parts, p.part, p.data FROM r \
     LEFT JOIN edgekv_record_parts p \
       ON p.namespace = r.namespace AND p.key = r.key AND p.part < r.parts \
     ORDER BY r.key, p.part";

/// A connection that caches its prepared statements: a pooled one, or the
/// writer's link ([`link::Link`]).
trait Session: Sync {
    fn client(&self) -> &tokio_postgres::Client;

    fn prepared(
        &self,
        sql: &'static str,
    ) -> impl Future<Output = Result<tokio_postgres::Statement, tokio_postgres::Error>> + Send;
}

impl Session for Object {
    fn client(&self) -> &tokio_postgres::Client {
        self
    }

    fn prepared(
        &self,
        sql: &'static str,
    ) -> impl Future<Output = Result<tokio_postgres::Statement, tokio_postgres::Error>> + Send {
        self.prepare_cached(sql)
    }
}

#[cfg(test)]
mod recent_log_tests {
    use super::*;

    fn entry(revision: u64, value_len: usize) -> LogEntry {
        LogEntry {
            revision,
            writes: vec![Write {
                namespace: "n".into(),
                key: Bytes::from_static(b"k"),
                record: Record::value(Bytes::from(vec![0u8; value_len]), None, None),
            }],
            namespaces: Vec::new(),
            write_id: None,
        }
    }

    #[test]
    fn recent_entries_are_bounded_and_served_only_without_a_gap() {
        let mut recent = RecentLog::default();
        recent.keep((1..=5).map(|r| entry(r, 10)));
        recent.keep([entry(7, 10)]);
        let revisions = |v: Vec<LogEntry>| v.iter().map(|e| e.revision).collect::<Vec<_>>();
        assert_eq!(
            revisions(recent.from(2, 100)),
            vec![2, 3, 4, 5],
            "stops at the gap"
        );
        assert_eq!(revisions(recent.from(2, 2)), vec![2, 3]);
        assert!(
            recent.from(6, 100).is_empty(),
            "a missing first entry: nothing"
        );
        recent.forget_through(3);
        assert!(recent.from(3, 100).is_empty());
        assert_eq!(revisions(recent.from(4, 100)), vec![4, 5]);
        // Large values: the byte budget, not the count, bounds it.
        recent.keep((10..20).map(|r| entry(r, 20 << 20)));
        assert!(recent.bytes <= RecentLog::MAX_BYTES);
        // Within the read's bytes: 20 MiB entries, two of them.
        assert_eq!(revisions(recent.from(17, 100)), vec![17, 18]);
        assert_eq!(revisions(recent.from(19, 100)), vec![19]);
        assert!(recent.from(4, 100).is_empty(), "the oldest went first");
        recent.clear();
        assert_eq!((recent.entries.len(), recent.bytes), (0, 0));
    }
}

/// The statements that write records, prepared (and cached) on a connection.
struct RecordStatements {
    drop_parts: tokio_postgres::Statement,
    upsert: tokio_postgres::Statement,
    add_parts: tokio_postgres::Statement,
}

impl RecordStatements {
    async fn prepare<S: Session>(session: &S) -> Result<Self, Fail> {
        let drop_parts = session
            .prepared(
                "DELETE FROM edgekv_record_parts p USING unnest($1::text[], $2::bytea[]) \
                   AS k(namespace, key) WHERE p.namespace = k.namespace AND p.key = k.key",
            )
            .await?;
        let upsert = session
            .prepared(
                "INSERT INTO edgekv_records \
                   (namespace, key, head, revision, expiration, tombstone, parts) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[], \
                   $5::int8[], $6::bool[], $7::int4[]) \
                 ON CONFLICT (namespace, key) DO UPDATE SET head = excluded.head, \
                   revision = excluded.revision, expiration = excluded.expiration, \
                   tombstone = excluded.tombstone, parts = excluded.parts",
            )
            .await?;
        let add_parts = session
            .prepared(
                "INSERT INTO edgekv_record_parts (namespace, key, part, data) \
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int4[], $4::bytea[])",
            )
            .await?;
        Ok(RecordStatements {
            drop_parts,
            upsert,
            add_parts,
        })
    }
}

/// Which keys of a transaction may have parts stored (chunks after the first):
/// the parts of a key's old record are dropped only then.
struct Parts {
    /// The keys whose held records the transaction read (`None`: none known).
    read: Option<HashSet<(String, Vec<u8>)>>,
    /// Of those, and of the keys written since, the ones with parts.
    chunked: HashSet<(String, Vec<u8>)>,
}

impl Parts {
    fn read(keys: impl Iterator<Item = (String, Vec<u8>)>) -> Self {
        Parts {
            read: Some(keys.collect()),
            chunked: HashSet::new(),
        }
    }

    fn unknown() -> Self {
        Parts {
            read: None,
            chunked: HashSet::new(),
        }
    }

    fn may_have(&self, namespace: &str, key: &[u8]) -> bool {
        let slot = (namespace.to_string(), key.to_vec());
        match &self.read {
            Some(read) => !read.contains(&slot) || self.chunked.contains(&slot),
            None => true,
        }
    }
}

/// A statement parameter.
type Param<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

const LOCK_HEAD: &str = "SELECT revision FROM edgekv_head WHERE id = 1 FOR UPDATE";

/// A transaction begun holding the head's lock, as one simple query.
const BEGIN_LOCKED: &str = "BEGIN; SELECT revision FROM edgekv_head WHERE id = 1 FOR UPDATE";

/// The end of a write group, in one statement: its log entries, its write ids,
/// the head's new revision and, when `$8`, the notification of the commit.
/// (PostgreSQL runs each data-modifying part of a WITH exactly once, read or
/// not; no two of them touch one table.)
const FINISH_GROUP: &str = "WITH logged AS ( \
       INSERT INTO edgekv_log (revision, part, data) \
       SELECT * FROM unnest($1::int8[], $2::int4[], $3::bytea[])), \
     ids AS ( \
       INSERT INTO edgekv_written (id, revision, digest, until_s) \
       SELECT * FROM unnest($4::bytea[], $5::int8[], $6::bytea[], $11::int8[]) \
       ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, digest = excluded.digest, \
         until_s = excluded.until_s), \
     head AS (UPDATE edgekv_head SET revision = $7 WHERE id = 1) \
     SELECT pg_notify($9, $10) WHERE $8";

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]
    /// [,HOST2[:PORT2]...]/DB[?target_session_attrs=read-write]`), applies the
    /// schema's migrations and starts following the head.
    pub fn open(url: &str, options: &PgOptions) -> Result<Self> {
        let (mut config, tls) = parse_url(url).map_err(Error::Engine)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("edgekv");
        }
        guard_sessions(&mut config);
        let target = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edgekv-postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Engine(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| Error::Engine(format!("cannot make the PostgreSQL pool: {e}")))?;
        let handle = runtime.handle().clone();
        let migrating = pool.clone();
        let (head, notify) = run_on(&handle, async move {
            let mut client = migrating.get().await?;
            schema::migrate(&mut client).await?;
            let head: i64 = client
                .query_one("SELECT revision FROM edgekv_head WHERE id = 1", &[])
                .await?
                .get(0);
            let notify = client
                .execute("SELECT pg_notify($1, '')", &[&"edgekv_probe"])
                .await
                .is_ok();
            Ok((head, notify))
        })
        .map_err(|e| Error::Engine(format!("{target}: {}", e.message)))?;
        if !notify {
            tracing::warn!(target = %target, "the database has no NOTIFY: other origins' commits are polled");
        }
        let store = PgStore {
            handle,
            runtime: Some(runtime),
            pool,
            head: Arc::new(AtomicU64::new(unsigned(head))),
            listeners: Arc::default(),
            options: options.clone(),
            notify,
            snapshots: SnapshotPlaces::new(options.pool_size / 4),
            target,
            instance: tail::instance(),
            recent: Arc::default(),
            log_reading: parking_lot::Mutex::new(()),
            log_queries: AtomicU64::new(0),
            link: parking_lot::Mutex::new(
                link::Link::new(config.clone(), tls.clone()).map_err(|e| {
                    Error::Engine(format!("cannot start the writer's runtime: {e}"))
                })?,
            ),
        };
        store.handle.spawn(tail::follow(
            config,
            tls,
            tail::Following {
                head: store.head.clone(),
                recent: store.recent.clone(),
                listeners: store.listeners.clone(),
                poll: options.poll_interval,
                listen: notify,
                instance: store.instance,
            },
        ));
        tracing::info!(target = %store.target, revision = head, "opened the PostgreSQL store");
        Ok(store)
    }

    /// How many times the change log was read from the database (the rest
    /// came from memory).
    pub fn log_queries(&self) -> u64 {
        self.log_queries.load(Ordering::Relaxed)
    }

    /// The database, without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `work` on the engine's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Fail>> + Send + 'static,
    ) -> Result<T, Fail> {
        run_on(&self.handle, work)
    }

    /// Runs `work` again while it fails in a way worth retrying, with backoff, at
    /// most `retries` more times.
    fn retrying<T: Send + 'static, F>(&self, what: &str, mut work: impl FnMut() -> F) -> Result<T>
    where
        F: Future<Output = Result<T, Fail>> + Send + 'static,
    {
        self.retry(what, || self.run(work()))
    }

    /// Calls `attempt` again while it fails in a way worth retrying, with
    /// backoff, at most `retries` more times.
    fn retry<T>(&self, what: &str, mut attempt: impl FnMut() -> Result<T, Fail>) -> Result<T> {
        let mut backoff = Duration::from_millis(20);
        let mut tried = 0;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(fail) if fail.retry && tried < self.options.retries => {
                    tried += 1;
                    tracing::debug!(what, attempt = tried, error = %fail.message, "retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(fail) => return Err(fail.into()),
            }
        }
    }

    /// Begins a transaction that holds the head's lock: returns it and the head.
    async fn begin_locked(pool: Pool) -> Result<(InTxn, u64), Fail> {
        let txn = InTxn(Some(pool.get().await?));
        txn.client().batch_execute("BEGIN").await?;
        let row = txn.client().query_one(LOCK_HEAD, &[]).await?;
        Ok((txn, unsigned(row.get(0))))
    }

    /// Begins a transaction on `session` that holds the head's lock and reads a
    /// view, in one round trip (the statements are pipelined): returns the head,
    /// the view and which of the keys read have parts.
    async fn read_view<S: Session>(
        session: &S,
        reads: ReadSet,
    ) -> Result<(u64, ReadView, Parts), Fail> {
        let client = session.client();
        let namespaces = session.prepared(READ_NAMESPACES).await?;
        let records = session.prepared(READ_RECORDS).await?;
        let written = session.prepared(READ_WRITTEN).await?;
        let mut asked: Vec<(String, Bytes)> = reads.keys.clone();
        asked.sort_unstable();
        asked.dedup();
        let key_namespaces: Vec<&str> = asked.iter().map(|(n, _)| n.as_str()).collect();
        let keys: Vec<&[u8]> = asked.iter().map(|(_, k)| k.as_ref()).collect();
        let namespace_params: [&Param<'_>; 2] = [&reads.all_namespaces, &reads.namespaces];
        let record_params: [&Param<'_>; 2] = [&key_namespaces, &keys];
        let written_params: [&Param<'_>; 1] = [&reads.write_ids];
        // BEGIN and the lock in one message: one reply to wait for, not two.
        let (begun, namespace_rows, record_rows, written_rows) = futures_util::try_join!(
            client.simple_query(BEGIN_LOCKED),
            client.query(&namespaces, &namespace_params),
            client.query(&records, &record_params),
            client.query(&written, &written_params),
        )?;
        let head = begun
            .iter()
            .find_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            })
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| Fail::fatal("the head's row is missing or not a number"))?;
        let head = unsigned(head);
        let mut view = ReadView::default();
        for row in namespace_rows {
            let namespace = keys::decode_namespace(row.get(1)).map_err(Error::CorruptNamespace)?;
            view.namespaces.insert(row.get(0), namespace);
        }
        let mut parts = Parts::read(asked.iter().map(|(n, k)| (n.clone(), k.to_vec())));
        for row in &record_rows {
            if row.get::<_, i32>(3) > 1 {
                parts.chunked.insert((row.get(0), row.get(1)));
            }
        }
        let found = records_of(
            &record_rows,
            |row| (row.get::<_, String>(0), row.get::<_, Vec<u8>>(1)),
            2,
        )?;
        for ((namespace, key), record) in found {
            view.records.insert((namespace, Bytes::from(key)), record);
        }
        for row in written_rows {
            let digest: Option<Vec<u8>> = row.get(2);
            let digest = match digest {
                None => None,
                Some(raw) => Some(
                    <[u8; 32]>::try_from(raw.as_slice())
                        .map_err(|_| Fail::fatal("a stored write digest is not 32 bytes"))?,
                ),
            };
            view.written.insert(
                row.get(0),
                WrittenId {
                    revision: unsigned(row.get(1)),
                    digest,
                },
            );
        }
        Ok((head, view, parts))
    }

    /// Writes records (each key once: the last of `rows` for a key wins); the
    /// statements are pipelined. The parts of a key's old record are dropped only
    /// where `parts` says it may have some.
    ///
    /// Its statements are sent in order when it is first polled (it awaits
    /// nothing else before them): pipelined with the statements after it, a
    /// COMMIT included.
    async fn put_records<S: Session>(
        session: &S,
        statements: &RecordStatements,
        rows: Vec<RecordRow>,
        parts: &mut Parts,
    ) -> Result<(), Fail> {
        let client = session.client();
        if rows.is_empty() {
            return Ok(());
        }
        let mut last: HashMap<(String, Vec<u8>), usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            last.insert((row.namespace.clone(), row.key.clone()), i);
        }
        let mut kept: Vec<usize> = last.into_values().collect();
        kept.sort_unstable();
        let rows: Vec<&RecordRow> = kept.iter().map(|&i| &rows[i]).collect();
        let namespaces: Vec<&str> = rows.iter().map(|r| r.namespace.as_str()).collect();
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.key.as_slice()).collect();
        let (drop_namespaces, drop_keys): (Vec<&str>, Vec<&[u8]>) = (rows.iter())
            .filter(|r| parts.may_have(&r.namespace, &r.key))
            .map(|r| (r.namespace.as_str(), r.key.as_slice()))
            .unzip();
        for row in &rows {
            let slot = (row.namespace.clone(), row.key.clone());
            if row.chunks.len() > 1 {
                parts.chunked.insert(slot);
            } else {
                parts.chunked.remove(&slot);
            }
        }
        let heads: Vec<&[u8]> = rows.iter().map(|r| r.chunks[0].as_slice()).collect();
        let revisions: Vec<i64> = rows.iter().map(|r| r.revision).collect();
        let expirations: Vec<Option<i64>> = rows.iter().map(|r| r.expiration).collect();
        let tombstones: Vec<bool> = rows.iter().map(|r| r.tombstone).collect();
        let parts: Vec<i32> = (rows.iter())
            .map(|r| i32::try_from(r.chunks.len()).unwrap_or(i32::MAX))
            .collect();
        let mut part_namespaces = Vec::new();
        let mut part_keys: Vec<&[u8]> = Vec::new();
        let mut part_numbers: Vec<i32> = Vec::new();
        let mut part_data: Vec<&[u8]> = Vec::new();
        for row in &rows {
            for (n, chunk) in row.chunks.iter().enumerate().skip(1) {
                part_namespaces.push(row.namespace.as_str());
                part_keys.push(&row.key);
                part_numbers.push(i32::try_from(n).unwrap_or(i32::MAX));
                part_data.push(chunk);
            }
        }
        let RecordStatements {
            drop_parts,
            upsert,
            add_parts,
        } = statements;
        let drop_params: [&Param<'_>; 2] = [&drop_namespaces, &drop_keys];
        let upsert_params: [&Param<'_>; 7] = [
            &namespaces,
            &keys,
            &heads,
            &revisions,
            &expirations,
            &tombstones,
            &parts,
        ];
        let part_params: [&Param<'_>; 4] =
            [&part_namespaces, &part_keys, &part_numbers, &part_data];
        futures_util::try_join!(
            async {
                if !drop_keys.is_empty() {
                    client.execute(drop_parts, &drop_params).await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            },
            client.execute(upsert, &upsert_params),
            async {
                if !part_keys.is_empty() {
                    client.execute(add_parts, &part_params).await?;
                }
                Ok::<_, tokio_postgres::Error>(())
            },
        )?;
        Ok(())
    }

    async fn put_meta(
        client: &tokio_postgres::Client,
        meta: &[(String, Vec<u8>)],
    ) -> Result<(), Fail> {
        for (name, value) in meta {
            client
                .execute(
                    "INSERT INTO edgekv_meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    &[name, value],
                )
                .await?;
        }
        Ok(())
    }

    /// Applies commits after `head`, in a transaction holding the head's lock,
    /// and commits it: the last statements and the COMMIT go in one round trip.
    /// Returns the revisions.
    ///
    /// On an error the transaction is over or must be ended by closing the
    /// connection; whether it committed is known only for a conflict (it did
    /// not).
    async fn apply_and_commit<S: Session>(
        session: &S,
        head: u64,
        commits: Vec<Commit>,
        mut parts: Parts,
        notify: Option<u64>,
    ) -> Result<Committed, Fail> {
        let client = session.client();
        let statements = RecordStatements::prepare(session).await?;
        let mut committed = Vec::with_capacity(commits.len());
        let mut revision = head;
        let mut revisions = Vec::with_capacity(commits.len());
        let mut pending: Vec<RecordRow> = Vec::new();
        let mut log_revisions: Vec<i64> = Vec::new();
        let mut log_parts: Vec<i32> = Vec::new();
        let mut log_data: Vec<Vec<u8>> = Vec::new();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let mut id_revisions: Vec<i64> = Vec::new();
        let mut id_digests: Vec<Option<Vec<u8>>> = Vec::new();
        let mut id_untils: Vec<i64> = Vec::new();
        for commit in commits {
            revision += 1;
            revisions.push(revision);
            let mut logged = Vec::with_capacity(commit.writes.len());
            for write in commit.writes {
                let mut write = write;
                write.record.revision = revision;
                pending.push(RecordRow::new(&write));
                logged.push(write);
            }
            for op in &commit.namespaces {
                // Keys written before a namespace change land before it.
                let rows = std::mem::take(&mut pending);
                Self::put_records(session, &statements, rows, &mut parts).await?;
                match op {
                    NamespaceOp::Put(ns) => {
                        client
                            .execute(
                                "INSERT INTO edgekv_namespaces (id, body) VALUES ($1, $2) \
                                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                                &[&ns.id, &keys::encode_namespace(ns)],
                            )
                            .await?;
                    }
                    NamespaceOp::Delete(id) => {
                        client
                            .execute("DELETE FROM edgekv_namespaces WHERE id = $1", &[id])
                            .await?;
                        client
                            .execute("DELETE FROM edgekv_records WHERE namespace = $1", &[id])
                            .await?;
                        client
                            .execute(
                                "DELETE FROM edgekv_record_parts WHERE namespace = $1",
                                &[id],
                            )
                            .await?;
                    }
                }
            }
            Self::put_meta(client, &commit.meta).await?;
            if let Some(id) = &commit.write_id {
                ids.push(id.clone());
                id_revisions.push(at(revision));
                id_digests.push(commit.write_digest.map(|d| d.to_vec()));
                id_untils.push(at(commit.write_id_until_s));
            }
            let logged = LogEntry {
                revision,
                writes: logged,
                namespaces: commit.namespaces,
                write_id: commit.write_id,
            };
            let entry = codec::encode_entry(&logged);
            committed.push(logged);
            for (n, chunk) in chunks(&entry).into_iter().enumerate() {
                log_revisions.push(at(revision));
                log_parts.push(i32::try_from(n).unwrap_or(i32::MAX));
                log_data.push(chunk.to_vec());
            }
        }
        let finish = session.prepared(FINISH_GROUP).await?;
        let (channel, text) = (tail::CHANNEL, tail::payload(notify.unwrap_or(0), revision));
        // One round trip: the records, then the log, the ids, the head and the
        // notification in one statement, then the COMMIT, pipelined in this order
        // (each is sent when first polled, and the join polls them in order). A
        // statement that fails aborts the transaction, and PostgreSQL answers the
        // COMMIT with a rollback; the statement's error is what the join returns.
        let head = at(revision);
        let wake = notify.is_some();
        let finish_params: [&Param<'_>; 11] = [
            &log_revisions,
            &log_parts,
            &log_data,
            &ids,
            &id_revisions,
            &id_digests,
            &head,
            &wake,
            &channel,
            &text,
            &id_untils,
        ];
        futures_util::try_join!(
            Self::put_records(session, &statements, pending, &mut parts),
            client.execute(&finish, &finish_params).map_err(Fail::from),
            client.batch_execute("COMMIT").map_err(Fail::from),
        )?;
        Ok((revisions, committed))
    }

    /// [`Store::transact`] on pooled connections, the store's runtime doing the
    /// IO: for callers on a runtime's thread, which must not block on one.
    fn transact_pooled(
        &self,
        reads: &ReadSet,
        decide: &mut dyn FnMut(ReadView) -> Result<Vec<Commit>>,
    ) -> Result<Result<Committed>> {
        let notify = self.notify.then_some(self.instance);
        self.retry("a transaction", || {
            let (pool, reads) = (self.pool.clone(), reads.clone());
            let known = self.head.load(Ordering::Acquire);
            let (txn, head, view, parts) = self.run(async move {
                let txn = InTxn(Some(pool.get().await?));
                let (head, view, parts) = Self::read_view(txn.client(), reads).await?;
                Ok((txn, head, view, parts))
            })?;
            went_back(&self.head, &self.recent, known, head);
            let commits = match decide(view) {
                Ok(commits) if !commits.is_empty() => commits,
                decided => {
                    let _ = self.run(txn.finish("ROLLBACK"));
                    return Ok(decided.map(|_| Committed::default()));
                }
            };
            self.run(async move {
                let committed = Self::apply_and_commit(txn.client(), head, commits, parts, notify)
                    .await
                    .map_err(Fail::unless_conflict)?;
                txn.committed();
                Ok(Ok(committed))
            })
        })
    }

    /// [`Store::transact`] on the calling thread's own connection ([`link`]):
    /// read, decide and commit without leaving the thread. Tried again as the
    /// pooled path is: a failure before the COMMIT's round trip when it is worth
    /// it, a conflict always, an unknown outcome never.
    fn transact_on_link(
        &self,
        reads: &ReadSet,
        decide: &mut dyn FnMut(ReadView) -> Result<Vec<Commit>>,
    ) -> Result<Result<Committed>> {
        let notify = self.notify.then_some(self.instance);
        let mut link = self.link.lock();
        self.retry("a transaction", || {
            let known = self.head.load(Ordering::Acquire);
            link.run(async |session| {
                let (head, view, parts) = Self::read_view(session, reads.clone()).await?;
                went_back(&self.head, &self.recent, known, head);
                let commits = match decide(view) {
                    Ok(commits) if !commits.is_empty() => commits,
                    decided => {
                        session.client().batch_execute("ROLLBACK").await?;
                        return Ok(decided.map(|_| Committed::default()));
                    }
                };
                let committed = Self::apply_and_commit(session, head, commits, parts, notify)
                    .await
                    .map_err(Fail::unless_conflict)?;
                Ok(Ok(committed))
            })
        })
    }

    /// Reads the log from the database (see [`Store::log`]).
    fn log_from_database(&self, from: u64, max: usize) -> Result<LogRead> {
        self.log_queries.fetch_add(1, Ordering::Relaxed);
        let to = from.saturating_add(max as u64);
        let rows: Vec<(i64, Option<i64>, Option<Vec<u8>>)> =
            self.simple("reading the change log", move |client| async move {
                let budget = i64::try_from(edgekv_store::LOG_READ_BYTES).unwrap_or(i64::MAX);
                let rows = client
                    .query(READ_LOG, &[&at(from), &at(to), &budget])
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| (row.get(0), row.get(1), row.get(2)))
                    .collect())
            })?;
        let floor = rows.first().map_or(0, |row| unsigned(row.0));
        if from <= floor {
            return Ok(LogRead::Trimmed { first: floor + 1 });
        }
        let mut entries = Vec::new();
        let mut current: Option<(u64, Vec<u8>)> = None;
        for (_, revision, data) in rows {
            let (Some(revision), Some(data)) = (revision, data) else {
                continue;
            };
            let revision = unsigned(revision);
            match &mut current {
                Some((r, whole)) if *r == revision => whole.extend_from_slice(&data),
                _ => {
                    if let Some((r, whole)) = current.take() {
                        entries.push(codec::decode_entry(r, Bytes::from(whole))?);
                    }
                    current = Some((revision, data));
                }
            }
        }
        if let Some((r, whole)) = current {
            entries.push(codec::decode_entry(r, Bytes::from(whole))?);
        }
        Ok(LogRead::Entries(entries))
    }

    /// Trims the log in the database; returns how many entries went and the
    /// floor (the newest revision trimmed).
    fn trim_log_in_database(&self, keep: u64) -> Result<(usize, u64)> {
        self.locked("trimming the change log", move |txn, head| async move {
            let held: i64 = txn
                .client()
                .query_one("SELECT log_floor FROM edgekv_head WHERE id = 1", &[])
                .await?
                .get(0);
            // At most TRIM_STEP revisions per call, so the head's lock — every
            // origin's commits wait on it — is never held for a long delete.
            let floor = head
                .saturating_sub(keep)
                .min(unsigned(held).saturating_add(TRIM_STEP));
            if floor <= unsigned(held) {
                return Ok((txn, (0, unsigned(held))));
            }
            let row = txn
                .client()
                .query_one(
                    "WITH gone AS (DELETE FROM edgekv_log WHERE revision <= $1 RETURNING part) \
                     SELECT count(*) FILTER (WHERE part = 0) FROM gone",
                    &[&at(floor)],
                )
                .await?;
            let dropped: i64 = row.get(0);
            txn.client()
                .execute(
                    // Only the ids kept before ids had a time go with the log.
                    "DELETE FROM edgekv_written WHERE revision <= $1 AND until_s IS NULL",
                    &[&at(floor)],
                )
                .await?;
            txn.client()
                .execute(
                    "UPDATE edgekv_head SET log_floor = $1 WHERE id = 1",
                    &[&at(floor)],
                )
                .await?;
            Ok((txn, (usize::try_from(dropped).unwrap_or(0), floor)))
        })
    }

    /// After a commit of this process: its head, and its log entries kept for
    /// the watch streams.
    fn committed(&self, revisions: &[u64], entries: Vec<LogEntry>) {
        if let Some(last) = revisions.last() {
            self.learn(*last);
        }
        self.recent.lock().keep(entries);
    }

    fn learn(&self, revision: u64) {
        // Our own commit: no listener is told (they hear only of other processes').
        self.head.fetch_max(revision, Ordering::AcqRel);
    }

    /// Reads the head from the database (the known head may lag another process's
    /// commits by a notification).
    ///
    /// A database head *behind* the one known here means the database lost
    /// commits this process saw — failed over to a replica that had not
    /// received them, or restored from a backup: that is logged as the error it
    /// is, and the known head goes back to the database's, so that a caller
    /// ahead of it is told to resync ([`edgekv_store::Store::refresh_revision`]).
    pub fn refresh_head(&self) -> Result<u64> {
        let known = self.head.load(Ordering::Acquire);
        let pool = self.pool.clone();
        let head: i64 = self.retrying("reading the head", || {
            let pool = pool.clone();
            async move {
                let client = pool.get().await?;
                let row = client
                    .query_one("SELECT revision FROM edgekv_head WHERE id = 1", &[])
                    .await?;
                Ok(row.get::<_, i64>(0))
            }
        })?;
        let head = unsigned(head);
        if head < known {
            went_back(&self.head, &self.recent, known, head);
            return Ok(self.head.load(Ordering::Acquire));
        }
        tail::learn(&self.head, &self.listeners, head);
        Ok(self.head.load(Ordering::Acquire))
    }

    /// One transaction holding the head's lock: `work` gets it and the head, and
    /// hands it back to be committed. Tried again as [`PgStore::retrying`] does.
    fn locked<T: Send + 'static, F>(
        &self,
        what: &str,
        work: impl Fn(InTxn, u64) -> F + Clone + Send + 'static,
    ) -> Result<T>
    where
        F: Future<Output = Result<(InTxn, T), Fail>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.retrying(what, || {
            let pool = pool.clone();
            let work = work.clone();
            async move {
                let (txn, head) = Self::begin_locked(pool).await?;
                let (txn, value) = work(txn, head).await?;
                txn.finish("COMMIT").await?;
                Ok(value)
            }
        })
    }

    /// One statement (or a few) on a pooled connection, outside any transaction.
    fn simple<T: Send + 'static, F>(
        &self,
        what: &str,
        work: impl Fn(Object) -> F + Clone + Send + 'static,
    ) -> Result<T>
    where
        F: Future<Output = Result<T, Fail>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.retrying(what, || {
            let pool = pool.clone();
            let work = work.clone();
            async move {
                let client = pool.get().await?;
                work(client).await
            }
        })
    }
}

impl Store for PgStore {
    fn namespace(&self, id: &str) -> Result<Option<Namespace>> {
        let id = id.to_string();
        let raw: Option<Vec<u8>> = self.simple("reading a namespace", move |client| {
            let id = id.clone();
            async move {
                let row = client
                    .query_opt("SELECT body FROM edgekv_namespaces WHERE id = $1", &[&id])
                    .await?;
                Ok(row.map(|row| row.get(0)))
            }
        })?;
        raw.map(|raw| keys::decode_namespace(&raw).map_err(Error::CorruptNamespace))
            .transpose()
    }

    fn namespaces(&self) -> Result<Vec<Namespace>> {
        let raw: Vec<Vec<u8>> = self.simple("reading namespaces", |client| async move {
            let rows = client
                .query("SELECT body FROM edgekv_namespaces ORDER BY id", &[])
                .await?;
            Ok(rows.into_iter().map(|row| row.get(0)).collect())
        })?;
        (raw.iter())
            .map(|raw| keys::decode_namespace(raw).map_err(Error::CorruptNamespace))
            .collect()
    }

    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>> {
        let (namespace, key) = (namespace.to_string(), key.to_vec());
        self.simple("reading a key", move |client| {
            let (namespace, key) = (namespace.clone(), key.clone());
            async move {
                let rows = client.query(SELECT_RECORD, &[&namespace, &key]).await?;
                Ok(records_of(&rows, |_| (), 0)?
                    .pop()
                    .map(|(_, record)| record))
            }
        })
    }

    fn commit(&self, commit: Commit) -> Result<u64> {
        let revisions = self.transact(&ReadSet::default(), &mut |_| Ok(vec![commit.clone()]))?;
        revisions
            .first()
            .copied()
            .ok_or_else(|| Error::Engine("a commit got no revision".into()))
    }

    fn transact(
        &self,
        reads: &ReadSet,
        decide: &mut dyn FnMut(ReadView) -> Result<Vec<Commit>>,
    ) -> Result<Vec<u64>> {
        let committed = if tokio::runtime::Handle::try_current().is_err() {
            // A plain thread (the origin's writer): the transaction runs here.
            self.transact_on_link(reads, decide)
        } else {
            self.transact_pooled(reads, decide)
        };
        let (revisions, entries) = committed??;
        self.committed(&revisions, entries);
        Ok(revisions)
    }

    fn on_foreign_commit(&self, notify: Box<dyn Fn(u64) + Send + Sync>) {
        self.listeners.lock().push(notify);
    }

    fn refresh_revision(&self) -> Result<u64> {
        self.refresh_head()
    }

    fn init_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.simple("initialising metadata", move |client| {
            let (name, value) = (name.clone(), value.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO edgekv_meta (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &value],
                    )
                    .await?;
                let row = client
                    .query_one("SELECT value FROM edgekv_meta WHERE name = $1", &[&name])
                    .await?;
                Ok(row.get(0))
            }
        })
    }

    fn keep_newer(&self, writes: Vec<Write>, meta: Vec<(String, Vec<u8>)>) -> Result<Vec<bool>> {
        let writes = Arc::new(writes);
        let meta = Arc::new(meta);
        self.locked("keeping newer records", move |txn, _| {
            let (writes, meta) = (writes.clone(), meta.clone());
            async move {
                let namespaces: Vec<&str> = writes.iter().map(|w| w.namespace.as_str()).collect();
                let keys: Vec<&[u8]> = writes.iter().map(|w| w.key.as_ref()).collect();
                let rows = txn
                    .client()
                    .query(
                        "SELECT k.namespace, k.key, r.revision \
                         FROM unnest($1::text[], $2::bytea[]) AS k(namespace, key) \
                         CROSS JOIN LATERAL (SELECT revision FROM edgekv_records \
                           WHERE namespace = k.namespace AND key = k.key LIMIT 1) r",
                        &[&namespaces, &keys],
                    )
                    .await?;
                let mut held: HashMap<(String, Vec<u8>), u64> = (rows.iter())
                    .map(|row| ((row.get(0), row.get(1)), unsigned(row.get(2))))
                    .collect();
                let mut kept = Vec::with_capacity(writes.len());
                let mut rows = Vec::new();
                for write in writes.iter() {
                    let slot = (write.namespace.clone(), write.key.to_vec());
                    let newer = held
                        .get(&slot)
                        .is_none_or(|revision| *revision < write.record.revision);
                    if newer {
                        held.insert(slot, write.record.revision);
                        rows.push(RecordRow::new(write));
                    }
                    kept.push(newer);
                }
                let statements = RecordStatements::prepare(txn.client()).await?;
                let mut parts = Parts::unknown();
                Self::put_records(txn.client(), &statements, rows, &mut parts).await?;
                Self::put_meta(txn.client(), &meta).await?;
                Ok((txn, kept))
            }
        })
    }

    fn list(&self, namespace: &str, query: &ListQuery, now_s: u64) -> Result<ListPage> {
        let namespace = namespace.to_string();
        let query = query.clone();
        self.simple("listing keys", move |client| {
            let (namespace, query) = (namespace.clone(), query.clone());
            async move {
                let end = prefix_end(&query.prefix);
                let limit = i64::try_from(query.limit)
                    .unwrap_or(i64::MAX)
                    .saturating_add(1);
                let rows = client
                    .query(
                        // The head chunk alone: it holds the record's header and
                        // metadata (at most 1 KiB, before the value).
                        "SELECT key, head FROM edgekv_records \
                         WHERE namespace = $1 AND key >= $2 \
                           AND ($3::bytea IS NULL OR key < $3) \
                           AND ($4::bytea IS NULL OR key > $4) \
                           AND NOT tombstone AND (expiration IS NULL OR expiration > $5) \
                         ORDER BY key LIMIT $6",
                        &[
                            &namespace,
                            &query.prefix,
                            &end,
                            &query.start_after,
                            &at(now_s),
                            &limit,
                        ],
                    )
                    .await?;
                let mut entries = Vec::with_capacity(rows.len());
                for row in &rows {
                    let head: Vec<u8> = row.get(1);
                    let record = Record::decode(Bytes::from(head)).map_err(Error::from)?;
                    entries.push((row.get::<_, Vec<u8>>(0), record.listed()));
                }
                let more = entries.len() > query.limit;
                entries.truncate(query.limit);
                Ok(ListPage {
                    entries: (entries.into_iter())
                        .map(|(key, record)| (Bytes::from(key), record))
                        .collect(),
                    more,
                })
            }
        })
    }

    fn purge_expired(&self, now_s: u64, max: usize) -> Result<usize> {
        self.locked("purging expired records", move |txn, _| async move {
            let row = txn
                .client()
                .query_one(
                    "WITH doomed AS ( \
                       SELECT namespace, key FROM edgekv_records WHERE expiration <= $1 \
                       ORDER BY expiration LIMIT $2), \
                     gone AS ( \
                       DELETE FROM edgekv_records r USING doomed d \
                       WHERE r.namespace = d.namespace AND r.key = d.key \
                       RETURNING r.namespace, r.key), \
                     parts AS ( \
                       DELETE FROM edgekv_record_parts p USING gone g \
                       WHERE p.namespace = g.namespace AND p.key = g.key) \
                     SELECT count(*) FROM gone",
                    &[&at(now_s), &i64::try_from(max).unwrap_or(i64::MAX)],
                )
                .await?;
            let purged: i64 = row.get(0);
            Ok((txn, usize::try_from(purged).unwrap_or(0)))
        })
    }

    fn revision(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    fn log(&self, from: u64, max: usize) -> Result<LogRead> {
        // Caught up: nothing past the known head (a commit of another process
        // raises it, and wakes the streams, when it is heard of).
        if from > self.head.load(Ordering::Acquire) {
            return Ok(LogRead::Entries(Vec::new()));
        }
        let recent = self.recent.lock().from(from, max);
        if !recent.is_empty() {
            return Ok(LogRead::Entries(recent));
        }
        let _reading = self.log_reading.lock();
        // Another stream may have read it meanwhile.
        let (recent, generation) = {
            let recent = self.recent.lock();
            (recent.from(from, max), recent.generation)
        };
        if !recent.is_empty() {
            return Ok(LogRead::Entries(recent));
        }
        let read = self.log_from_database(from, max)?;
        if let LogRead::Entries(entries) = &read {
            let mut recent = self.recent.lock();
            // Not if the head went back meanwhile: the read may be of the lost
            // history, which must not be served again.
            if recent.generation == generation {
                recent.keep(entries.iter().cloned());
            }
        }
        Ok(read)
    }

    fn trim_log(&self, keep: u64) -> Result<usize> {
        let (trimmed, floor) = self.trim_log_in_database(keep)?;
        self.recent.lock().forget_through(floor);
        Ok(trimmed)
    }

    fn forget_write_ids(&self, now_s: u64, max: usize) -> Result<usize> {
        // Not under the head's lock: an id committed again meanwhile has a later
        // time, which the delete sees (it re-checks the row it finds changed).
        // Rows another origin is forgetting at the same moment are skipped.
        self.simple("forgetting write ids", move |client| async move {
            let forgotten = client
                .execute(
                    "DELETE FROM edgekv_written WHERE id IN ( \
                       SELECT id FROM edgekv_written WHERE until_s <= $1 \
                       ORDER BY until_s LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     AND until_s <= $1",
                    &[&at(now_s), &i64::try_from(max).unwrap_or(i64::MAX)],
                )
                .await?;
            Ok(usize::try_from(forgotten).unwrap_or(usize::MAX))
        })
    }

    fn written(&self, write_id: &[u8]) -> Result<Option<WrittenId>> {
        let id = write_id.to_vec();
        let row: Option<(i64, Option<Vec<u8>>)> =
            self.simple("reading a write id", move |client| {
                let id = id.clone();
                async move {
                    let row = client
                        .query_opt(
                            "SELECT revision, digest FROM edgekv_written WHERE id = $1",
                            &[&id],
                        )
                        .await?;
                    Ok(row.map(|row| (row.get(0), row.get(1))))
                }
            })?;
        row.map(|(revision, digest)| {
            let digest = digest
                .map(|raw| {
                    <[u8; 32]>::try_from(raw.as_slice())
                        .map_err(|_| Error::Engine("a stored write digest is not 32 bytes".into()))
                })
                .transpose()?;
            Ok(WrittenId {
                revision: unsigned(revision),
                digest,
            })
        })
        .transpose()
    }

    fn snapshot(
        &self,
        namespaces: &[String],
        visit: &mut dyn FnMut(SnapshotItem) -> Result<()>,
    ) -> Result<u64> {
        const PAGE: i64 = 256;
        // The records of a page that begin past this many bytes wait for the
        // next one (a record is at most 25 MiB: 256 of them would be 6.4 GB).
        const PAGE_BYTES: i64 = 32 << 20;
        let _place = self
            .snapshots
            .take(self.options.snapshot_wait)
            .ok_or_else(|| {
                Error::Engine(format!(
                    "{} snapshots are being read already; try again later",
                    (self.options.pool_size / 4).max(1)
                ))
            })?;
        let pool = self.pool.clone();
        let (mut txn, head, all) = self.run(async move {
            let txn = InTxn(Some(pool.get().await?));
            txn.client()
                // A snapshot is read at the pace of the edge that receives it: idle
                // between pages for longer than a write's transaction may be. It
                // holds no lock, only the rows it sees.
                .batch_execute(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                     SET LOCAL idle_in_transaction_session_timeout = 300000",
                )
                .await?;
            let head: i64 = txn
                .client()
                .query_one("SELECT revision FROM edgekv_head WHERE id = 1", &[])
                .await?
                .get(0);
            let rows = txn
                .client()
                .query("SELECT body FROM edgekv_namespaces ORDER BY id", &[])
                .await?;
            let all: Vec<Vec<u8>> = rows.into_iter().map(|row| row.get(0)).collect();
            Ok((txn, unsigned(head), all))
        })?;
        for raw in &all {
            let namespace = keys::decode_namespace(raw).map_err(Error::CorruptNamespace)?;
            visit(SnapshotItem::Namespace(namespace))?;
        }
        for namespace in namespaces {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let (id, from) = (namespace.clone(), after.clone());
                let (back, page) = self.run(async move {
                    let rows = txn
                        .client()
                        .query(SNAPSHOT_PAGE, &[&id, &from, &PAGE, &PAGE_BYTES])
                        .await?;
                    let page = records_of(&rows, |row| row.get::<_, Vec<u8>>(0), 1)?;
                    Ok((txn, page))
                })?;
                txn = back;
                // A page may end early at its bytes: only an empty one ends.
                let done = page.is_empty();
                for (key, record) in page {
                    after = Some(key.clone());
                    visit(SnapshotItem::Key(Write {
                        namespace: namespace.clone(),
                        key: Bytes::from(key),
                        record,
                    }))?;
                }
                if done {
                    break;
                }
            }
        }
        self.run(txn.finish("COMMIT"))?;
        Ok(head)
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_string();
        self.simple("reading metadata", move |client| {
            let name = name.clone();
            async move {
                let row = client
                    .query_opt("SELECT value FROM edgekv_meta WHERE name = $1", &[&name])
                    .await?;
                Ok(row.map(|row| row.get(0)))
            }
        })
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let meta = Arc::new(vec![(name.to_string(), value.to_vec())]);
        self.simple("writing metadata", move |client| {
            let meta = meta.clone();
            async move { Self::put_meta(&client, &meta).await }
        })
    }

    fn queue_push(&self, queue: &str, entry: &[u8]) -> Result<u64> {
        self.queue_push_many(queue, &[entry.to_vec()])?
            .first()
            .copied()
            .ok_or_else(|| Error::Engine("a queued entry got no sequence".into()))
    }

    fn queue_push_many(&self, queue: &str, entries: &[Vec<u8>]) -> Result<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (queue, entries) = (queue.to_string(), entries.to_vec());
        let pool = self.pool.clone();
        // Not tried again: a push whose COMMIT was lost may have landed.
        Ok(self.run(async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await?;
            let sequences = push(&txn, &queue, &entries).await?;
            txn.commit().await?;
            Ok(sequences)
        })?)
    }

    fn queue_get(&self, queue: &str, sequence: u64) -> Result<Option<Vec<u8>>> {
        let queue = queue.to_string();
        self.simple("reading a queue", move |client| {
            let queue = queue.clone();
            async move {
                let row = client
                    .query_opt(
                        "SELECT entry FROM edgekv_queues WHERE queue = $1 AND sequence = $2",
                        &[&queue, &at(sequence)],
                    )
                    .await?;
                Ok(row.map(|row| row.get(0)))
            }
        })
    }

    fn queue_scan(&self, queue: &str, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let queue = queue.to_string();
        self.simple("reading a queue", move |client| {
            let queue = queue.clone();
            async move {
                let rows = client
                    .query(
                        "SELECT sequence, entry FROM edgekv_queues \
                         WHERE queue = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
                        &[&queue, &at(after), &i64::try_from(max).unwrap_or(i64::MAX)],
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| (unsigned(row.get(0)), row.get(1)))
                    .collect())
            }
        })
    }

    fn queue_remove(
        &self,
        queue: &str,
        sequence: u64,
        move_to: Option<(&str, &[u8])>,
    ) -> Result<()> {
        let queue = queue.to_string();
        let move_to = move_to.map(|(to, entry)| (to.to_string(), entry.to_vec()));
        let pool = self.pool.clone();
        Ok(self.run(async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await?;
            let removed = txn
                .execute(
                    "DELETE FROM edgekv_queues WHERE queue = $1 AND sequence = $2",
                    &[&queue, &at(sequence)],
                )
                .await?;
            if let (1.., Some((to, entry))) = (removed, move_to) {
                push(&txn, &to, &[entry]).await?;
            }
            txn.commit().await?;
            Ok(())
        })?)
    }

    fn queue_len(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_string();
        self.simple("counting a queue", move |client| {
            let queue = queue.clone();
            async move {
                let row = client
                    .query_one(
                        "SELECT count(*) FROM edgekv_queues WHERE queue = $1",
                        &[&queue],
                    )
                    .await?;
                Ok(unsigned(row.get(0)))
            }
        })
    }
}

/// Appends entries to a queue inside a transaction: their sequence numbers.
async fn push(
    txn: &tokio_postgres::Transaction<'_>,
    queue: &str,
    entries: &[Vec<u8>],
) -> Result<Vec<u64>, Fail> {
    let count = i64::try_from(entries.len()).unwrap_or(i64::MAX);
    let last: i64 = txn
        .query_one(
            "INSERT INTO edgekv_queue_counters (queue, last) VALUES ($1, $2) \
             ON CONFLICT (queue) DO UPDATE SET last = edgekv_queue_counters.last + excluded.last \
             RETURNING last",
            &[&queue, &count],
        )
        .await?
        .get(0);
    let sequences: Vec<i64> = (last - count + 1..=last).collect();
    txn.execute(
        "INSERT INTO edgekv_queues (queue, sequence, entry) \
         SELECT $1, * FROM unnest($2::int8[], $3::bytea[])",
        &[&queue, &sequences, &entries],
    )
    .await?;
    Ok(sequences.into_iter().map(unsigned).collect())
}

#[cfg(test)]
mod tests;
