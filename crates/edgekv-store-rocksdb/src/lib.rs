//! The RocksDB engine behind edgekv's [`Store`] trait: real files on disk, the
//! write-ahead log on, every write durable before it is acknowledged.
//!
//! One database holds seven column families: `data` (records under
//! `namespace id ++ key`), `expiry` (an index from expiration time to stored key,
//! so expired records are purged without a scan), `namespaces`, `meta`, `log` (the
//! change log, by big-endian revision) and `writes` (write id → revision and
//! digest, kept for a time, with an index of the ids by that time under keys no id
//! has) and `queues` (durable queues such as an edge's outbox, always written with
//! fsync). A release that adds to the store adds keys an earlier one never reads,
//! never a column family (an earlier release refuses to open a database that has
//! one it does not know): rolling a binary back must not lock it out of its data. The store's revision is kept in `meta` and written in
//! the same atomic batch as the commit it numbers.

use std::cell::Cell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use edgekv_kv::{Namespace, Record};
use edgekv_store::keys::{self, NAMESPACE_ID_LEN};
use edgekv_store::{
    Commit, Error, ListPage, ListQuery, LogEntry, LogRead, NamespaceOp, ReadSet, ReadView, Result,
    SnapshotItem, Store, Write, WrittenId, codec,
};
use parking_lot::Mutex;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

const CF_DATA: &str = "data";
const CF_EXPIRY: &str = "expiry";
const CF_NAMESPACES: &str = "namespaces";
const CF_META: &str = "meta";
const CF_LOG: &str = "log";
const CF_WRITES: &str = "writes";
/// The first byte of the keys of `writes` that index the write ids by the time
/// they may be forgotten: `0xFF ++ until (8 bytes, big-endian) ++ id` → the
/// id's revision. No id begins with it (ids are UTF-8 text, which never holds
/// 0xFF), and a binary of an earlier release, which looks ids up by key alone,
/// never meets these keys: it can still open the store (a new column family
/// would lock it out, and a new stored form of the ids would fail its reads).
const WRITE_TIME_PREFIX: u8 = 0xFF;
/// The `meta` entry holding the head revision when this store was first opened
/// by a release that keeps write ids for a time: the ids of commits up to it have
/// no time, and go with their commit's log entry.
const TIMED_IDS_FROM_KEY: &[u8] = b"\x00timed_ids_from";
const CF_QUEUES: &str = "queues";
/// The `meta` entry holding the highest revision dropped from the log.
const LOG_FLOOR_KEY: &[u8] = b"\x00log_floor";
/// The `meta` entry holding the revision of the last write.
const REVISION_KEY: &[u8] = b"\x00revision";
/// Prefix of `meta` entries written through [`Store::set_meta`].
const USER_META_PREFIX: &[u8] = b"m:";

/// How a [`RocksStore`] is opened.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Whether each write waits for `fsync` of the write-ahead log. On, a write
    /// survives a machine crash once acknowledged; off, it survives a process crash
    /// only (the log is still written before the call returns).
    pub sync_writes: bool,
    /// The size of RocksDB's block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Whether commits are kept in a change log (an origin's store).
    pub change_log: bool,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            sync_writes: true,
            block_cache_bytes: 64 * 1024 * 1024,
            change_log: false,
        }
    }
}

/// The deleted entries a namespace deletion steps over, looking for a live one,
/// before it writes its range tombstone anyway.
const HOLDS_KEYS_SKIP_LIMIT: u64 = 10_000;

/// The longest stored key (namespace id and key) a point read builds on the stack.
const STACK_KEY_BYTES: usize = 160;

/// Turns RocksDB's per-thread performance counters off on the calling thread, once.
/// At RocksDB's default level every read counts into a thread-local context that
/// nothing here reads, through C++'s thread-local init wrapper on each access:
/// turning them off saved about 310 instructions of a point read from the
/// memtable, under callgrind.
fn perf_counters_off() {
    thread_local! {
        static OFF: Cell<bool> = const { Cell::new(false) };
    }
    OFF.with(|off| {
        if !off.get() {
            rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
            off.set(true);
        }
    });
}

/// A [`Store`] in a RocksDB database on disk.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    write_options: WriteOptions,
    /// The options of point reads, made once (the default ones are allocated and
    /// freed by RocksDB on every call).
    point_read: ReadOptions,
    /// Serialises writes: it holds the last revision, which each batch advances.
    writer: Mutex<u64>,
    /// The time up to which [`Store::forget_write_ids`] went through the ids'
    /// time entries (taken after `writer`).
    forgotten_through: Mutex<u64>,
    /// Always fsynced (queue writes, synced metadata): an acknowledged queued write
    /// must survive a machine crash even where cache writes need not.
    queue_options: WriteOptions,
    /// Serialises queue pushes and moves (each reads and advances a sequence).
    queues: Mutex<()>,
    change_log: bool,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish()
    }
}

/// A key of `writes` that indexes an id by its time ([`WRITE_TIME_PREFIX`]).
fn write_time_key(until_s: u64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + id.len());
    key.push(WRITE_TIME_PREFIX);
    key.extend_from_slice(&until_s.to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn engine(err: rocksdb::Error) -> Error {
    Error::Engine(err.into_string())
}

impl RocksStore {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: impl AsRef<Path>, options: &RocksOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_compression_type(DBCompressionType::Lz4);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&rocksdb::Cache::new_lru_cache(options.block_cache_bytes));
        block.set_bloom_filter(10.0, false);
        let mut data_options = db_options.clone();
        data_options.set_block_based_table_factory(&block);
        let families = [
            ColumnFamilyDescriptor::new(CF_DATA, data_options),
            ColumnFamilyDescriptor::new(CF_EXPIRY, db_options.clone()),
            ColumnFamilyDescriptor::new(CF_NAMESPACES, db_options.clone()),
            ColumnFamilyDescriptor::new(CF_META, db_options.clone()),
            ColumnFamilyDescriptor::new(CF_LOG, db_options.clone()),
            ColumnFamilyDescriptor::new(CF_WRITES, db_options.clone()),
            ColumnFamilyDescriptor::new(CF_QUEUES, db_options.clone()),
        ];
        let db = DB::open_cf_descriptors(&db_options, &path, families).map_err(|e| {
            Error::Engine(format!("opening {}: {}", path.display(), e.into_string()))
        })?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        let mut queue_options = WriteOptions::default();
        queue_options.set_sync(true);
        let store = RocksStore {
            db,
            path,
            write_options,
            point_read: ReadOptions::default(),
            queue_options,
            writer: Mutex::new(0),
            forgotten_through: Mutex::new(0),
            queues: Mutex::new(()),
            change_log: options.change_log,
        };
        let revision = store.meta_u64(REVISION_KEY)?;
        *store.writer.lock() = revision;
        if store.change_log
            && (store.db.get_cf(store.cf(CF_META), TIMED_IDS_FROM_KEY))
                .map_err(engine)?
                .is_none()
        {
            store
                .db
                .put_cf_opt(
                    store.cf(CF_META),
                    TIMED_IDS_FROM_KEY,
                    revision.to_be_bytes(),
                    &store.queue_options,
                )
                .map_err(engine)?;
        }
        Ok(store)
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64> {
        match self.db.get_cf(self.cf(CF_META), key).map_err(engine)? {
            Some(raw) => {
                Ok(u64::from_be_bytes(raw.as_slice().try_into().map_err(
                    |_| Error::Engine(format!("stored {key:?} is not 8 bytes")),
                )?))
            }
            None => Ok(0),
        }
    }

    fn put_record(&self, batch: &mut WriteBatch, stored: Vec<u8>, record: &Record) {
        if let Some(at) = record.expiration {
            batch.put_cf(self.cf(CF_EXPIRY), keys::expiry_key(at, &stored), b"");
        }
        batch.put_cf(self.cf(CF_DATA), stored, record.encode());
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // The four families are created at open; a missing one is a bug here.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Whether the store may hold an entry of a namespace (tombstones aside). The
    /// look runs under the writer lock; past `HOLDS_KEYS_SKIP_LIMIT` deleted
    /// entries (a namespace emptied by expiry purges, say) it gives up and says
    /// yes, so a deletion never waits on a long scan.
    fn holds_keys(&self, namespace: &str) -> Result<bool> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::namespace_end(namespace));
        options.set_max_skippable_internal_keys(HOLDS_KEYS_SKIP_LIMIT);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_DATA), options);
        iter.seek(namespace.as_bytes());
        if iter.valid() {
            return Ok(true);
        }
        match iter.status() {
            Ok(()) => Ok(false),
            // RocksDB's "Incomplete": the skip limit was reached.
            Err(err) if err.kind() == rocksdb::ErrorKind::Incomplete => Ok(true),
            Err(err) => Err(engine(err)),
        }
    }

    /// Adds one commit at `revision` to a batch. `writes_to`: the namespaces the
    /// batch writes keys to, which a deletion in it must cover even where the store
    /// holds nothing yet. Runs under the writer lock.
    fn stage(
        &self,
        batch: &mut WriteBatch,
        revision: u64,
        commit: Commit,
        writes_to: &HashSet<String>,
    ) -> Result<()> {
        let mut logged = Vec::with_capacity(if self.change_log {
            commit.writes.len()
        } else {
            0
        });
        for write in commit.writes {
            let mut record = write.record;
            record.revision = revision;
            self.put_record(batch, keys::data_key(&write.namespace, &write.key), &record);
            if self.change_log {
                logged.push(Write {
                    namespace: write.namespace,
                    key: write.key,
                    record,
                });
            }
        }
        for op in &commit.namespaces {
            match op {
                NamespaceOp::Put(ns) => {
                    batch.put_cf(self.cf(CF_NAMESPACES), &ns.id, keys::encode_namespace(ns))
                }
                NamespaceOp::Delete(id) => {
                    batch.delete_cf(self.cf(CF_NAMESPACES), id);
                    // A range tombstone costs every point read of the memtable it
                    // sits in (and later of its table file), whatever key is
                    // read: none is written over a range with nothing to delete,
                    // as a resync's delete-and-put of an empty cache namespace,
                    // or the deletion of a namespace never written, would be.
                    // Data writes all hold the writer lock, so the range cannot
                    // fill between this look and the batch.
                    if self.holds_keys(id)? || writes_to.contains(id) {
                        batch.delete_range_cf(
                            self.cf(CF_DATA),
                            id.as_bytes(),
                            &keys::namespace_end(id),
                        );
                    }
                }
            }
        }
        for (name, value) in &commit.meta {
            batch.put_cf(self.cf(CF_META), user_meta_key(name), value);
        }
        if self.change_log {
            if let Some(id) = &commit.write_id {
                if id.first() == Some(&WRITE_TIME_PREFIX) {
                    return Err(Error::Engine(
                        "a write id may not begin with byte 0xFF (ids are UTF-8 text)".into(),
                    ));
                }
                batch.put_cf(
                    self.cf(CF_WRITES),
                    id,
                    WrittenId::encode(revision, commit.write_digest.as_ref()),
                );
                batch.put_cf(
                    self.cf(CF_WRITES),
                    write_time_key(commit.write_id_until_s, id),
                    revision.to_be_bytes(),
                );
            }
            let entry = LogEntry {
                revision,
                writes: logged,
                namespaces: commit.namespaces,
                write_id: commit.write_id,
            };
            batch.put_cf(
                self.cf(CF_LOG),
                revision.to_be_bytes(),
                codec::encode_entry(&entry),
            );
        }
        Ok(())
    }

    fn decode_namespace(raw: &[u8]) -> Result<Namespace> {
        keys::decode_namespace(raw).map_err(Error::CorruptNamespace)
    }
}

impl Store for RocksStore {
    fn namespace(&self, id: &str) -> Result<Option<Namespace>> {
        self.db
            .get_cf(self.cf(CF_NAMESPACES), id)
            .map_err(engine)?
            .map(|raw| Self::decode_namespace(&raw))
            .transpose()
    }

    fn namespaces(&self) -> Result<Vec<Namespace>> {
        self.db
            .iterator_cf(self.cf(CF_NAMESPACES), IteratorMode::Start)
            .map(|item| {
                let (_, raw) = item.map_err(engine)?;
                Self::decode_namespace(&raw)
            })
            .collect()
    }

    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>> {
        perf_counters_off();
        // The stored key on the stack when it fits (most do), not allocated.
        let mut buffer = [0u8; STACK_KEY_BYTES];
        let owned;
        let data_key = match buffer.get_mut(..namespace.len() + key.len()) {
            Some(stored) => {
                let (id, rest) = stored.split_at_mut(namespace.len());
                id.copy_from_slice(namespace.as_bytes());
                rest.copy_from_slice(key);
                &*stored
            }
            None => {
                owned = keys::data_key(namespace, key);
                &owned[..]
            }
        };
        let stored = self
            .db
            .get_cf_opt(self.cf(CF_DATA), data_key, &self.point_read)
            .map_err(engine)?;
        match stored {
            Some(raw) => Ok(Some(Record::decode(Bytes::from(raw))?)),
            None => Ok(None),
        }
    }

    fn commit(&self, commit: Commit) -> Result<u64> {
        let mut last = self.writer.lock();
        let revision = *last + 1;
        let mut batch = WriteBatch::default();
        let deletes = (commit.namespaces.iter()).any(|op| matches!(op, NamespaceOp::Delete(_)));
        let mut writes_to = HashSet::new();
        if deletes {
            writes_to.extend(commit.writes.iter().map(|w| w.namespace.clone()));
        }
        self.stage(&mut batch, revision, commit, &writes_to)?;
        batch.put_cf(self.cf(CF_META), REVISION_KEY, revision.to_be_bytes());
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(engine)?;
        *last = revision;
        Ok(revision)
    }

    fn transact(
        &self,
        reads: &ReadSet,
        decide: &mut dyn FnMut(ReadView) -> Result<Vec<Commit>>,
    ) -> Result<Vec<u64>> {
        let mut last = self.writer.lock();
        let mut view = ReadView::default();
        for (namespace, key) in &reads.keys {
            if let Some(record) = self.get(namespace, key)? {
                view.records
                    .insert((namespace.clone(), key.clone()), record);
            }
        }
        for id in &reads.write_ids {
            if let Some(written) = self.written(id)? {
                view.written.insert(id.clone(), written);
            }
        }
        if reads.all_namespaces {
            view.namespaces = (self.namespaces()?.into_iter())
                .map(|ns| (ns.id.clone(), ns))
                .collect();
        } else {
            for id in &reads.namespaces {
                if let Some(ns) = self.namespace(id)? {
                    view.namespaces.insert(id.clone(), ns);
                }
            }
        }
        let commits = decide(view)?;
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        // Every commit in one batch, one fsync: group commit.
        let mut batch = WriteBatch::default();
        let deletes = (commits.iter().flat_map(|c| &c.namespaces))
            .any(|op| matches!(op, NamespaceOp::Delete(_)));
        let mut writes_to = HashSet::new();
        if deletes {
            for commit in &commits {
                writes_to.extend(commit.writes.iter().map(|w| w.namespace.clone()));
            }
        }
        let mut revisions = Vec::with_capacity(commits.len());
        let mut revision = *last;
        for commit in commits {
            revision += 1;
            self.stage(&mut batch, revision, commit, &writes_to)?;
            revisions.push(revision);
        }
        batch.put_cf(self.cf(CF_META), REVISION_KEY, revision.to_be_bytes());
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(engine)?;
        *last = revision;
        Ok(revisions)
    }

    fn keep_newer(&self, writes: Vec<Write>, meta: Vec<(String, Vec<u8>)>) -> Result<Vec<bool>> {
        // The writer lock makes "held is older, so replace" atomic.
        let _writer = self.writer.lock();
        let mut batch = WriteBatch::default();
        let mut kept = Vec::with_capacity(writes.len());
        let mut seen: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
        for write in writes {
            let stored = keys::data_key(&write.namespace, &write.key);
            let held = match seen.get(&stored) {
                Some(revision) => Some(*revision),
                None => self
                    .db
                    .get_pinned_cf(self.cf(CF_DATA), &stored)
                    .map_err(engine)?
                    .map(|raw| Record::revision_of(&raw))
                    .transpose()?,
            };
            let newer = held.is_none_or(|held| held < write.record.revision);
            if newer {
                seen.insert(stored.clone(), write.record.revision);
                self.put_record(&mut batch, stored, &write.record);
            }
            kept.push(newer);
        }
        for (name, value) in &meta {
            batch.put_cf(self.cf(CF_META), user_meta_key(name), value);
        }
        if !batch.is_empty() {
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(engine)?;
        }
        Ok(kept)
    }

    fn list(&self, namespace: &str, query: &ListQuery, now_s: u64) -> Result<ListPage> {
        let start = keys::list_start(namespace, &query.prefix, query.start_after.as_deref());
        let prefix = keys::data_key(namespace, &query.prefix);
        let mut page = ListPage::default();
        let iter = self.db.iterator_cf(
            self.cf(CF_DATA),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (stored, raw) = item.map_err(engine)?;
            if !stored.starts_with(&prefix) {
                break;
            }
            let record = Record::decode(Bytes::from(raw))?;
            if !record.is_live(now_s) {
                continue;
            }
            if page.entries.len() == query.limit {
                page.more = true;
                break;
            }
            let key = Bytes::copy_from_slice(&stored[NAMESPACE_ID_LEN..]);
            page.entries.push((key, record.listed()));
        }
        Ok(page)
    }

    fn purge_expired(&self, now_s: u64, max: usize) -> Result<usize> {
        // Holding the writer lock makes "still carries this expiration, so delete"
        // atomic with respect to writes.
        let _writer = self.writer.lock();
        let data = self.cf(CF_DATA);
        let expiry = self.cf(CF_EXPIRY);
        let end = keys::expiry_key(now_s.saturating_add(1), &[]);
        let mut batch = WriteBatch::default();
        let mut purged = 0;
        for item in self.db.iterator_cf(expiry, IteratorMode::Start).take(max) {
            let (entry, _) = item.map_err(engine)?;
            if entry.as_ref() >= end.as_slice() {
                break;
            }
            batch.delete_cf(expiry, &entry);
            let Some((at, stored)) = keys::split_expiry_key(&entry) else {
                continue;
            };
            if let Some(raw) = self.db.get_cf(data, stored).map_err(engine)?
                && Record::decode(Bytes::from(raw))?.expiration == Some(at)
            {
                batch.delete_cf(data, stored);
                purged += 1;
            }
        }
        if !batch.is_empty() {
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(engine)?;
        }
        Ok(purged)
    }

    fn revision(&self) -> u64 {
        *self.writer.lock()
    }

    fn log(&self, from: u64, max: usize) -> Result<LogRead> {
        let floor = self.meta_u64(LOG_FLOOR_KEY)?;
        if from <= floor || !self.change_log {
            return Ok(LogRead::Trimmed { first: floor + 1 });
        }
        let start = from.to_be_bytes();
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut budget = edgekv_store::LogBudget::default();
        for item in iter.take(max) {
            let (key, raw) = item.map_err(engine)?;
            if !budget.admits(raw.len()) {
                break;
            }
            let revision = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| Error::Engine("log key is not 8 bytes".into()))?,
            );
            entries.push(codec::decode_entry(revision, Bytes::from(raw))?);
        }
        // The floor may have moved while reading: never return a gap.
        if self.meta_u64(LOG_FLOOR_KEY)? >= from {
            return self.log(from, max);
        }
        Ok(LogRead::Entries(entries))
    }

    fn trim_log(&self, keep: u64) -> Result<usize> {
        let _writer = self.writer.lock();
        let revision = self.meta_u64(REVISION_KEY)?;
        let floor = self.meta_u64(LOG_FLOOR_KEY)?;
        let new_floor = revision.saturating_sub(keep);
        if new_floor <= floor {
            return Ok(0);
        }
        let timed_from = self.meta_u64(TIMED_IDS_FROM_KEY)?;
        let mut batch = WriteBatch::default();
        let mut dropped = 0;
        let end = (new_floor + 1).to_be_bytes();
        for item in self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::Start) {
            let (key, raw) = item.map_err(engine)?;
            if key.as_ref() >= &end[..] {
                break;
            }
            // Only an id kept before ids had a time goes with its entry (the
            // one committed then, not one committed again since).
            let at = u64::from_be_bytes(key.as_ref().try_into().unwrap_or_default());
            if at <= timed_from {
                let entry = codec::decode_entry(at, Bytes::from(raw))?;
                if let Some(id) = entry.write_id
                    && let Some(held) = self.db.get_cf(self.cf(CF_WRITES), &id).map_err(engine)?
                    && WrittenId::decode(&held).is_ok_and(|w| w.revision == at)
                {
                    batch.delete_cf(self.cf(CF_WRITES), id);
                }
            }
            batch.delete_cf(self.cf(CF_LOG), key);
            dropped += 1;
        }
        batch.put_cf(self.cf(CF_META), LOG_FLOOR_KEY, new_floor.to_be_bytes());
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(engine)?;
        Ok(dropped)
    }

    fn forget_write_ids(&self, now_s: u64, max: usize) -> Result<usize> {
        // Held so that an id committed again meanwhile is not dropped on the
        // strength of its older time entry.
        let _writer = self.writer.lock();
        let mut through = self.forgotten_through.lock();
        let mut batch = WriteBatch::default();
        let mut forgotten = 0;
        // From where the last call stopped: the entries before it are deleted,
        // and a seek past their tombstones spares stepping over each.
        let from = write_time_key(*through, &[]);
        let end = write_time_key(now_s.saturating_add(1), &[]);
        let mode = IteratorMode::From(&from, Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_WRITES), mode).take(max) {
            let (key, value) = item.map_err(engine)?;
            if key.as_ref() >= end.as_slice() {
                break;
            }
            batch.delete_cf(self.cf(CF_WRITES), &key);
            let Some((until, id)) = key[1..].split_first_chunk::<8>() else {
                continue;
            };
            *through = u64::from_be_bytes(*until);
            let Ok(revision) = <[u8; 8]>::try_from(value.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            let held = self.db.get_cf(self.cf(CF_WRITES), id).map_err(engine)?;
            match held.as_deref().map(WrittenId::decode) {
                Some(Ok(held)) if held.revision == revision => {
                    batch.delete_cf(self.cf(CF_WRITES), id);
                    forgotten += 1;
                }
                // Committed again since (with a later time entry), or gone.
                Some(Ok(_)) | None => {}
                Some(Err(err)) => {
                    tracing::warn!(id = %String::from_utf8_lossy(id), error = %err, "a stored write id cannot be read; its time entry is dropped");
                }
            }
        }
        if !batch.is_empty() {
            self.db
                .write_opt(batch, &self.write_options)
                .map_err(engine)?;
        }
        Ok(forgotten)
    }

    fn written(&self, write_id: &[u8]) -> Result<Option<WrittenId>> {
        if write_id.first() == Some(&WRITE_TIME_PREFIX) {
            return Ok(None);
        }
        self.db
            .get_cf(self.cf(CF_WRITES), write_id)
            .map_err(engine)?
            .map(|raw| WrittenId::decode(&raw))
            .transpose()
    }

    fn snapshot(
        &self,
        namespaces: &[String],
        visit: &mut dyn FnMut(SnapshotItem) -> Result<()>,
    ) -> Result<u64> {
        let snapshot = self.db.snapshot();
        for item in snapshot.iterator_cf(self.cf(CF_NAMESPACES), IteratorMode::Start) {
            let (_, raw) = item.map_err(engine)?;
            visit(SnapshotItem::Namespace(Self::decode_namespace(&raw)?))?;
        }
        for id in namespaces {
            let iter = snapshot.iterator_cf(
                self.cf(CF_DATA),
                IteratorMode::From(id.as_bytes(), Direction::Forward),
            );
            for item in iter {
                let (stored, raw) = item.map_err(engine)?;
                if !stored.starts_with(id.as_bytes()) {
                    break;
                }
                visit(SnapshotItem::Key(Write {
                    namespace: id.clone(),
                    key: Bytes::copy_from_slice(&stored[NAMESPACE_ID_LEN..]),
                    record: Record::decode(Bytes::from(raw))?,
                }))?;
            }
        }
        match snapshot
            .get_cf(self.cf(CF_META), REVISION_KEY)
            .map_err(engine)?
        {
            Some(raw) => {
                Ok(u64::from_be_bytes(raw.as_slice().try_into().map_err(
                    |_| Error::Engine("stored revision is not 8 bytes".into()),
                )?))
            }
            None => Ok(0),
        }
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(CF_META), user_meta_key(name))
            .map_err(engine)
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), user_meta_key(name), value);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(engine)
    }

    fn set_meta_synced(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), user_meta_key(name), value);
        self.db
            .write_opt(batch, &self.queue_options)
            .map_err(engine)
    }

    fn queue_push(&self, queue: &str, entry: &[u8]) -> Result<u64> {
        let _order = self.queues.lock();
        let mut batch = WriteBatch::default();
        let sequence = self.append(&mut batch, queue, entry)?;
        self.db
            .write_opt(batch, &self.queue_options)
            .map_err(engine)?;
        Ok(sequence)
    }

    fn queue_push_many(&self, queue: &str, entries: &[Vec<u8>]) -> Result<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _order = self.queues.lock();
        let counter = queue_counter(queue);
        let last = self.meta_u64(&counter)?;
        let mut batch = WriteBatch::default();
        let mut sequences = Vec::with_capacity(entries.len());
        for (sequence, entry) in (last + 1..).zip(entries) {
            batch.put_cf(self.cf(CF_QUEUES), queue_key(queue, sequence), entry);
            sequences.push(sequence);
        }
        let last = last + entries.len() as u64;
        batch.put_cf(self.cf(CF_META), counter, last.to_be_bytes());
        // One batch, one fsync: every entry or none.
        self.db
            .write_opt(batch, &self.queue_options)
            .map_err(engine)?;
        Ok(sequences)
    }

    fn queue_get(&self, queue: &str, sequence: u64) -> Result<Option<Vec<u8>>> {
        perf_counters_off();
        self.db
            .get_cf_opt(
                self.cf(CF_QUEUES),
                queue_key(queue, sequence),
                &self.point_read,
            )
            .map_err(engine)
    }

    fn queue_scan(&self, queue: &str, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        if max == 0 {
            return Ok(Vec::new());
        }
        let prefix = queue_prefix(queue);
        let start = queue_key(queue, first);
        let iter = self.db.iterator_cf(
            self.cf(CF_QUEUES),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(engine)?;
            if !key.starts_with(&prefix) {
                break;
            }
            let sequence = key[prefix.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Engine(format!("queue {queue}: malformed entry key")))?;
            out.push((sequence, value.to_vec()));
            // Stops here rather than at the next entry: a page reads no value past
            // its last.
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    fn queue_remove(
        &self,
        queue: &str,
        sequence: u64,
        move_to: Option<(&str, &[u8])>,
    ) -> Result<()> {
        let _order = self.queues.lock();
        let key = queue_key(queue, sequence);
        let mut batch = WriteBatch::default();
        if let Some((to, entry)) = move_to {
            if self
                .db
                .get_cf(self.cf(CF_QUEUES), &key)
                .map_err(engine)?
                .is_none()
            {
                return Ok(());
            }
            self.append(&mut batch, to, entry)?;
        }
        batch.delete_cf(self.cf(CF_QUEUES), key);
        self.db
            .write_opt(batch, &self.queue_options)
            .map_err(engine)
    }

    fn queue_len(&self, queue: &str) -> Result<u64> {
        let prefix = queue_prefix(queue);
        let iter = self.db.iterator_cf(
            self.cf(CF_QUEUES),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        let mut count = 0;
        for item in iter {
            let (key, _) = item.map_err(engine)?;
            if !key.starts_with(&prefix) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}

impl RocksStore {
    /// Adds an entry to `batch` at the end of a queue, advancing the queue's
    /// sequence (kept in `meta`, so a sequence is never reused). The caller holds
    /// `self.queues`.
    fn append(&self, batch: &mut WriteBatch, queue: &str, entry: &[u8]) -> Result<u64> {
        let counter = queue_counter(queue);
        let sequence = self.meta_u64(&counter)? + 1;
        batch.put_cf(self.cf(CF_META), counter, sequence.to_be_bytes());
        batch.put_cf(self.cf(CF_QUEUES), queue_key(queue, sequence), entry);
        Ok(sequence)
    }
}

/// The `meta` entry holding the last sequence a queue handed out.
fn queue_counter(queue: &str) -> Vec<u8> {
    [b"\x00queue:".as_slice(), queue.as_bytes()].concat()
}

/// Queue entries are stored under `name ++ 0x00 ++ big-endian sequence`.
fn queue_prefix(queue: &str) -> Vec<u8> {
    [queue.as_bytes(), &[0]].concat()
}

fn queue_key(queue: &str, sequence: u64) -> Vec<u8> {
    [queue_prefix(queue).as_slice(), &sequence.to_be_bytes()].concat()
}

fn user_meta_key(name: &str) -> Vec<u8> {
    [USER_META_PREFIX, name.as_bytes()].concat()
}

#[cfg(test)]
mod tests;
