//! The storage trait of edgekv, with an in-memory engine and the test suite that
//! every engine must pass.
//!
//! Roles hold a `dyn Store` and never name an engine; this crate has no RocksDB
//! dependency (the RocksDB engine lives in `edgekv-store-rocksdb`), so a PostgreSQL
//! engine can slot in beside it and run the same [`suite`].
//!
//! # Layout
//! - [`Store`]: the trait — namespaces, records, ordered listing, expiry purge, a
//!   small space of node metadata and durable queues.
//! - [`keys`]: how `(namespace, key)` pairs map onto one ordered byte space.
//! - [`codec`]: the stored form of change-log entries.
//! - [`MemoryStore`]: the in-memory engine.
//! - [`suite`]: the shared engine test suite and the [`store_suite!`] macro.

pub mod codec;
pub mod keys;
pub mod suite;

mod error;
mod memory;

pub use error::{Error, Result};
pub use memory::MemoryStore;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use edgekv_kv::{Namespace, Record};

/// One write of a batch: the record to store under `key` in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The namespace id.
    pub namespace: String,
    /// The key bytes (already validated).
    pub key: Bytes,
    /// The record; [`Store::commit`] gives it the commit's revision,
    /// [`Store::keep_newer`] keeps the one it has.
    pub record: Record,
}

/// A change to the set of namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceOp {
    /// Creates or replaces a namespace description.
    Put(Namespace),
    /// Removes a namespace and every key in it.
    Delete(String),
}

/// One atomic, durable commit: it gets the store's next revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Records to store, each given the commit's revision.
    pub writes: Vec<Write>,
    /// Namespace changes.
    pub namespaces: Vec<NamespaceOp>,
    /// The id of the client write, remembered (see [`Store::written`]) until
    /// `write_id_until_s`, whether or not its commit is still in the change log.
    pub write_id: Option<Vec<u8>>,
    /// When (Unix seconds) the write id may be forgotten
    /// ([`Store::forget_write_ids`]): past the last replay of it the origin would
    /// accept.
    pub write_id_until_s: u64,
    /// The digest of the client write's content, remembered with its id: a known
    /// id with another digest is a reused id, never a duplicate.
    pub write_digest: Option<[u8; 32]>,
    /// Node metadata written in the same batch.
    pub meta: Vec<(String, Vec<u8>)>,
}

/// What the store remembers of a client write's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenId {
    /// The revision it was committed at.
    pub revision: u64,
    /// The digest of its content, when it was committed with one.
    pub digest: Option<[u8; 32]>,
}

impl WrittenId {
    /// The stored form: the revision (8 bytes, big-endian), then the digest.
    pub fn encode(revision: u64, digest: Option<&[u8; 32]>) -> Vec<u8> {
        let mut out = revision.to_be_bytes().to_vec();
        if let Some(digest) = digest {
            out.extend_from_slice(digest);
        }
        out
    }

    /// Reads the stored form (8 bytes: no digest; 40: with one).
    pub fn decode(raw: &[u8]) -> Result<Self> {
        let revision = raw
            .get(..8)
            .and_then(|r| <[u8; 8]>::try_from(r).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| Error::Engine("stored write id is shorter than 8 bytes".into()))?;
        let digest = match raw.len() {
            8 => None,
            40 => raw[8..].try_into().ok(),
            n => {
                return Err(Error::Engine(format!(
                    "stored write id is {n} bytes; expected 8 or 40"
                )));
            }
        };
        Ok(WrittenId { revision, digest })
    }
}

/// One commit as the change log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The commit's revision.
    pub revision: u64,
    /// Its records, with their revision.
    pub writes: Vec<Write>,
    /// Its namespace changes.
    pub namespaces: Vec<NamespaceOp>,
    /// The id of the client write, if any.
    pub write_id: Option<Vec<u8>>,
}

/// What a read of the change log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRead {
    /// The entries from the asked revision on (possibly none yet).
    Entries(Vec<LogEntry>),
    /// The asked revision is no longer retained; the log starts at `first`.
    Trimmed {
        /// The oldest revision still in the log.
        first: u64,
    },
}

/// One item of a consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotItem {
    /// A namespace.
    Namespace(Namespace),
    /// A key of one of the asked namespaces (tombstones included).
    Key(Write),
}

/// A page request over the keys of one namespace, in key-byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only keys that start with these bytes.
    pub prefix: Vec<u8>,
    /// Only keys strictly after this one (from a cursor).
    pub start_after: Option<Vec<u8>>,
    /// The most entries to return.
    pub limit: usize,
}

/// A page of live entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Live `(key, record)` pairs in key-byte order; the records' values are
    /// left out (empty).
    pub entries: Vec<(Bytes, Record)>,
    /// Whether live keys remain after the last entry.
    pub more: bool,
}

/// What a transaction reads before it decides (see [`Store::transact`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSet {
    /// The keys whose records the decision needs.
    pub keys: Vec<(String, Bytes)>,
    /// The client write ids whose commits the decision needs.
    pub write_ids: Vec<Vec<u8>>,
    /// The namespaces, by id, the decision needs.
    pub namespaces: Vec<String>,
    /// Whether the decision needs every namespace (a title check).
    pub all_namespaces: bool,
}

/// What the store held for a [`ReadSet`] when the transaction took the store's
/// write order: nothing commits between these reads and the transaction's commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadView {
    /// The records held for the asked keys (absent: none held).
    pub records: HashMap<(String, Bytes), Record>,
    /// The asked write ids that are known.
    pub written: HashMap<Vec<u8>, WrittenId>,
    /// The asked namespaces that exist (every namespace with `all_namespaces`).
    pub namespaces: BTreeMap<String, Namespace>,
}

/// The bytes of log entries after which one [`Store::log`] read stops (an
/// entry that begins within it is returned whole). 256 entries of 25 MiB values
/// would otherwise be read at once.
pub const LOG_READ_BYTES: usize = 32 << 20;

/// What one [`Store::log`] read has taken of [`LOG_READ_BYTES`].
#[derive(Debug, Default)]
pub struct LogBudget {
    taken: usize,
}

impl LogBudget {
    /// Whether an entry of `weight` bytes is read: it is if it begins within the
    /// budget (the first always does); its weight is then taken.
    pub fn admits(&mut self, weight: usize) -> bool {
        let within = self.taken < LOG_READ_BYTES;
        self.taken = self.taken.saturating_add(weight);
        within
    }
}

/// The bytes a log entry weighs against [`LOG_READ_BYTES`]: its keys, values
/// and metadata.
pub fn log_entry_weight(entry: &LogEntry) -> usize {
    (entry.writes.iter())
        .map(|w| {
            w.key.len() + w.record.value.len() + w.record.metadata.as_ref().map_or(0, |m| m.len())
        })
        .sum()
}

/// The storage engine of a node.
///
/// Calls are synchronous: engines answer point reads from memory or a local disk in
/// microseconds, and callers move long calls (lists, commits) off the reactor.
///
/// An origin's store keeps a change log (every commit, by revision, for a window)
/// and remembers write ids; an edge's store does not, and keeps records with the
/// revisions the origin gave them ([`Store::keep_newer`]).
pub trait Store: Send + Sync + 'static {
    /// Adds a namespace; fails with [`Error::NamespaceExists`] if its id is taken.
    fn create_namespace(&self, namespace: &Namespace) -> Result<()> {
        if self.namespace(&namespace.id)?.is_some() {
            return Err(Error::NamespaceExists(namespace.id.clone()));
        }
        self.commit(Commit {
            namespaces: vec![NamespaceOp::Put(namespace.clone())],
            ..Commit::default()
        })
        .map(drop)
    }
    /// Replaces a namespace's description (a rename); fails if it does not exist.
    fn update_namespace(&self, namespace: &Namespace) -> Result<()> {
        if self.namespace(&namespace.id)?.is_none() {
            return Err(Error::NoSuchNamespace(namespace.id.clone()));
        }
        self.commit(Commit {
            namespaces: vec![NamespaceOp::Put(namespace.clone())],
            ..Commit::default()
        })
        .map(drop)
    }
    /// Removes a namespace and every key in it; returns whether it existed.
    fn delete_namespace(&self, id: &str) -> Result<bool> {
        let existed = self.namespace(id)?.is_some();
        self.commit(Commit {
            namespaces: vec![NamespaceOp::Delete(id.to_string())],
            ..Commit::default()
        })?;
        Ok(existed)
    }
    /// Returns a namespace by id.
    fn namespace(&self, id: &str) -> Result<Option<Namespace>>;
    /// Returns every namespace, ordered by id.
    fn namespaces(&self) -> Result<Vec<Namespace>>;

    /// Returns the record held for a key, tombstones and expired records included;
    /// callers decide what is servable.
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>>;
    /// Applies a batch of records atomically and durably, as one commit; returns
    /// its revision.
    fn write(&self, batch: Vec<Write>) -> Result<u64> {
        self.commit(Commit {
            writes: batch,
            ..Commit::default()
        })
    }
    /// Applies a commit atomically and durably; returns its revision.
    fn commit(&self, commit: Commit) -> Result<u64>;
    /// A read-decide-commit, ordered against every other writer of the store —
    /// of this process and, for an engine shared by several processes, of all of
    /// them: the engine takes its write order, reads `reads`, hands the view to
    /// `decide`, and applies the commits it returns atomically, durably (one
    /// fsync), as consecutive revisions, which it returns in order. No commit lands
    /// between the reads and these commits. An engine may call `decide` more than
    /// once (a transaction retried after a conflict): it must decide from the view
    /// alone. An error from `decide` commits nothing and is returned.
    fn transact(
        &self,
        reads: &ReadSet,
        decide: &mut dyn FnMut(ReadView) -> Result<Vec<Commit>>,
    ) -> Result<Vec<u64>>;
    /// Registers `notify`, called with the head revision whenever the engine learns
    /// that another process committed to it (an engine shared by several origin
    /// processes). Engines of one process never call it: their commits are the
    /// caller's own.
    fn on_foreign_commit(&self, notify: Box<dyn Fn(u64) + Send + Sync>) {
        drop(notify);
    }
    /// The head revision as the engine holds it now: for an engine shared by several
    /// processes, read from it (the [`Store::revision`] known here may lag another
    /// process's commits by a notification).
    fn refresh_revision(&self) -> Result<u64> {
        Ok(self.revision())
    }
    /// Writes a metadata value unless one is held, fsynced, atomically against every
    /// other process of a shared engine; returns the value held afterwards (a
    /// data-set id two processes create at once: one wins, both read it).
    fn init_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        if let Some(held) = self.meta(name)? {
            return Ok(held);
        }
        self.set_meta_synced(name, value)?;
        Ok(value.to_vec())
    }
    /// Stores each record whose revision is newer than the one held for its key (or
    /// when none is held), keeping the record's own revision; writes `meta` in the
    /// same atomic batch. Returns, per write, whether it was kept.
    fn keep_newer(&self, writes: Vec<Write>, meta: Vec<(String, Vec<u8>)>) -> Result<Vec<bool>>;
    /// Returns one page of live keys of a namespace. Its records carry no value
    /// (empty): a listing never holds its keys' values (a page of 1000 keys of
    /// 25 MiB values would be 25 GB).
    fn list(&self, namespace: &str, query: &ListQuery, now_s: u64) -> Result<ListPage>;
    /// Removes up to `max` records that expired before `now_s` (tombstones included);
    /// returns how many it removed.
    fn purge_expired(&self, now_s: u64, max: usize) -> Result<usize>;
    /// The revision of the last commit.
    fn revision(&self) -> u64;

    /// Reads up to `max` log entries from revision `from` on, and no entry that
    /// begins past [`LOG_READ_BYTES`] of those before it (at least one, whatever
    /// its size): a reader never holds more than that and one value.
    fn log(&self, from: u64, max: usize) -> Result<LogRead>;
    /// Drops log entries so that at most `keep` remain; returns how many it
    /// dropped. The write ids of their commits stay until their time (those kept
    /// before ids had a time go with their entry).
    fn trim_log(&self, keep: u64) -> Result<usize>;
    /// Forgets up to `max` write ids whose time ([`Commit::write_id_until_s`]) is
    /// `now_s` or earlier; returns how many it forgot (it may look at `max` ids
    /// and forget fewer, where some were committed again since).
    fn forget_write_ids(&self, now_s: u64, max: usize) -> Result<usize>;
    /// The revision a write id was committed at, and the digest it was committed
    /// with (none for ids kept before digests), until the id is forgotten.
    fn written(&self, write_id: &[u8]) -> Result<Option<WrittenId>>;
    /// Visits every namespace, then every record of the `namespaces` asked for, as
    /// of one revision, which it returns.
    fn snapshot(
        &self,
        namespaces: &[String],
        visit: &mut dyn FnMut(SnapshotItem) -> Result<()>,
    ) -> Result<u64>;

    /// Reads a value of the node's own metadata (generated secrets, sync positions).
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a value of the node's own metadata, with the store's write policy
    /// (fsynced only where the store syncs every write).
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()>;
    /// Writes a value of the node's own metadata and fsyncs it before returning,
    /// whatever the store's write policy (sequence reservations, break-glass pins).
    fn set_meta_synced(&self, name: &str, value: &[u8]) -> Result<()> {
        self.set_meta(name, value)
    }

    /// Appends an entry to a named durable queue (an edge's outbox, its dead
    /// letters). The entry is on disk — fsynced, whatever the store's write policy —
    /// before this returns. Returns its sequence number, above every earlier one.
    fn queue_push(&self, queue: &str, entry: &[u8]) -> Result<u64>;
    /// Appends entries to a queue in one batch, fsynced once (an outbox's group
    /// commit): their sequence numbers, in the order of `entries`, each above every
    /// earlier one. Engines make it atomic — all entries or none; this default
    /// pushes them one by one, each fsynced, for an engine that has no batch.
    fn queue_push_many(&self, queue: &str, entries: &[Vec<u8>]) -> Result<Vec<u64>> {
        entries
            .iter()
            .map(|entry| self.queue_push(queue, entry))
            .collect()
    }
    /// One entry of a queue by its sequence number; `None` when the queue does not
    /// hold it (never pushed, or removed).
    fn queue_get(&self, queue: &str, sequence: u64) -> Result<Option<Vec<u8>>>;
    /// Up to `max` entries of a queue whose sequence numbers are above `after`,
    /// oldest first, with their sequence numbers: a queue read page by page.
    fn queue_scan(&self, queue: &str, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>>;
    /// Up to `max` entries of a queue, oldest first, with their sequence numbers.
    fn queue_read(&self, queue: &str, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        // Sequence numbers start at 1.
        self.queue_scan(queue, 0, max)
    }
    /// Removes an entry from a queue; with `move_to = (other, entry)`, appends
    /// `entry` to `other` in the same atomic, fsynced batch (a write moving to the
    /// dead letters with its reason). Removing an absent entry is not an error, and
    /// then nothing is appended.
    fn queue_remove(
        &self,
        queue: &str,
        sequence: u64,
        move_to: Option<(&str, &[u8])>,
    ) -> Result<()>;
    /// How many entries a queue holds.
    fn queue_len(&self, queue: &str) -> Result<u64>;
}
