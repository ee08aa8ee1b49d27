//! The in-memory engine: ordered maps behind one lock. For tests, benchmarks and
//! nodes that keep nothing across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use edgekv_kv::{Namespace, Record};
use parking_lot::RwLock;

use crate::keys::{self, NAMESPACE_ID_LEN};
use crate::{
    Commit, ListPage, ListQuery, LogEntry, LogRead, NamespaceOp, ReadSet, ReadView, Result,
    SnapshotItem, Store, Write,
};

/// A [`Store`] held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
    keeps_log: bool,
    /// Records [`Store::keep_newer`] looked up, to compare with what it was given.
    keep_reads: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    namespaces: BTreeMap<String, Namespace>,
    data: BTreeMap<Vec<u8>, Record>,
    expiry: BTreeSet<Vec<u8>>,
    meta: HashMap<String, Vec<u8>>,
    revision: u64,
    log: VecDeque<LogEntry>,
    /// The highest revision dropped from the log.
    log_floor: u64,
    /// Write ids, with the time each may be forgotten.
    written: HashMap<Vec<u8>, (crate::WrittenId, u64)>,
    /// The write ids by the time they may be forgotten.
    written_until: BTreeSet<(u64, Vec<u8>)>,
    /// Durable queues by name: sequence → entry.
    queues: HashMap<String, BTreeMap<u64, Vec<u8>>>,
    /// Per queue, the last sequence handed out.
    queue_sequences: HashMap<String, u64>,
}

impl MemoryStore {
    /// An empty store without a change log (an edge's).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps a change log (an origin's).
    pub fn with_log() -> Self {
        MemoryStore {
            keeps_log: true,
            ..Self::default()
        }
    }

    /// How many held records [`Store::keep_newer`] has looked up so far: the
    /// work a caller that knows a record is no newer can spare the store.
    pub fn keep_reads(&self) -> u64 {
        self.keep_reads.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn apply(&mut self, commit: Commit, keeps_log: bool) -> u64 {
        let inner = self;
        let revision = inner.revision + 1;
        let mut logged = Vec::with_capacity(commit.writes.len());
        for write in commit.writes {
            let stored = keys::data_key(&write.namespace, &write.key);
            let mut record = write.record;
            record.revision = revision;
            if keeps_log {
                logged.push(Write {
                    namespace: write.namespace,
                    key: write.key,
                    record: record.clone(),
                });
            }
            inner.put_record(stored, record);
        }
        for op in &commit.namespaces {
            match op {
                NamespaceOp::Put(ns) => {
                    inner.namespaces.insert(ns.id.clone(), ns.clone());
                }
                NamespaceOp::Delete(id) => inner.drop_namespace(id),
            }
        }
        for (name, value) in commit.meta {
            inner.meta.insert(name, value);
        }
        if keeps_log {
            if let Some(id) = &commit.write_id {
                let written = crate::WrittenId {
                    revision,
                    digest: commit.write_digest,
                };
                let until = commit.write_id_until_s;
                if let Some((_, before)) = inner.written.insert(id.clone(), (written, until)) {
                    inner.written_until.remove(&(before, id.clone()));
                }
                inner.written_until.insert((until, id.clone()));
            }
            inner.log.push_back(LogEntry {
                revision,
                writes: logged,
                namespaces: commit.namespaces,
                write_id: commit.write_id,
            });
        }
        inner.revision = revision;
        revision
    }

    fn put_record(&mut self, stored: Vec<u8>, record: Record) {
        if let Some(at) = record.expiration {
            self.expiry.insert(keys::expiry_key(at, &stored));
        }
        self.data.insert(stored, record);
    }

    fn drop_namespace(&mut self, id: &str) {
        self.namespaces.remove(id);
        let doomed: Vec<Vec<u8>> = self
            .data
            .range(id.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(id.as_bytes()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            self.data.remove(&key);
        }
    }
}

impl Store for MemoryStore {
    fn namespace(&self, id: &str) -> Result<Option<Namespace>> {
        Ok(self.inner.read().namespaces.get(id).cloned())
    }

    fn namespaces(&self) -> Result<Vec<Namespace>> {
        Ok(self.inner.read().namespaces.values().cloned().collect())
    }

    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>> {
        let stored = keys::data_key(namespace, key);
        Ok(self.inner.read().data.get(&stored).cloned())
    }

    fn commit(&self, commit: Commit) -> Result<u64> {
        Ok(self.inner.write().apply(commit, self.keeps_log))
    }

    fn transact(
        &self,
        reads: &ReadSet,
        decide: &mut dyn FnMut(ReadView) -> Result<Vec<Commit>>,
    ) -> Result<Vec<u64>> {
        let mut inner = self.inner.write();
        let mut view = ReadView::default();
        for (namespace, key) in &reads.keys {
            if let Some(record) = inner.data.get(&keys::data_key(namespace, key)) {
                view.records
                    .insert((namespace.clone(), key.clone()), record.clone());
            }
        }
        for id in &reads.write_ids {
            if let Some((written, _)) = inner.written.get(id) {
                view.written.insert(id.clone(), *written);
            }
        }
        if reads.all_namespaces {
            view.namespaces = inner.namespaces.clone();
        } else {
            for id in &reads.namespaces {
                if let Some(ns) = inner.namespaces.get(id) {
                    view.namespaces.insert(id.clone(), ns.clone());
                }
            }
        }
        let commits = decide(view)?;
        Ok(commits
            .into_iter()
            .map(|commit| inner.apply(commit, self.keeps_log))
            .collect())
    }

    fn keep_newer(&self, writes: Vec<Write>, meta: Vec<(String, Vec<u8>)>) -> Result<Vec<bool>> {
        let mut inner = self.inner.write();
        let mut kept = Vec::with_capacity(writes.len());
        for write in writes {
            let stored = keys::data_key(&write.namespace, &write.key);
            self.keep_reads.fetch_add(1, Ordering::Relaxed);
            let newer = inner
                .data
                .get(&stored)
                .is_none_or(|held| held.revision < write.record.revision);
            if newer {
                inner.put_record(stored, write.record);
            }
            kept.push(newer);
        }
        for (name, value) in meta {
            inner.meta.insert(name, value);
        }
        Ok(kept)
    }

    fn list(&self, namespace: &str, query: &ListQuery, now_s: u64) -> Result<ListPage> {
        let inner = self.inner.read();
        let start = keys::list_start(namespace, &query.prefix, query.start_after.as_deref());
        let prefix = keys::data_key(namespace, &query.prefix);
        let mut page = ListPage::default();
        for (stored, record) in inner
            .data
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            if !record.is_live(now_s) {
                continue;
            }
            if page.entries.len() == query.limit {
                page.more = true;
                break;
            }
            let key = Bytes::copy_from_slice(&stored[NAMESPACE_ID_LEN..]);
            page.entries.push((key, record.clone().listed()));
        }
        Ok(page)
    }

    fn purge_expired(&self, now_s: u64, max: usize) -> Result<usize> {
        let mut inner = self.inner.write();
        let due: Vec<Vec<u8>> = inner
            .expiry
            .range(..keys::expiry_key(now_s.saturating_add(1), &[]))
            .take(max)
            .cloned()
            .collect();
        let mut purged = 0;
        for entry in due {
            inner.expiry.remove(&entry);
            let Some((at, stored)) = keys::split_expiry_key(&entry) else {
                continue;
            };
            // The index may name a record since overwritten; only the record that
            // still carries this expiration goes.
            if inner.data.get(stored).and_then(|r| r.expiration) == Some(at) {
                inner.data.remove(stored);
                purged += 1;
            }
        }
        Ok(purged)
    }

    fn revision(&self) -> u64 {
        self.inner.read().revision
    }

    fn log(&self, from: u64, max: usize) -> Result<LogRead> {
        let inner = self.inner.read();
        if from <= inner.log_floor || !self.keeps_log {
            return Ok(LogRead::Trimmed {
                first: inner.log_floor + 1,
            });
        }
        let mut budget = crate::LogBudget::default();
        Ok(LogRead::Entries(
            inner
                .log
                .iter()
                .filter(|e| e.revision >= from)
                .take(max)
                .take_while(|e| budget.admits(crate::log_entry_weight(e)))
                .cloned()
                .collect(),
        ))
    }

    fn trim_log(&self, keep: u64) -> Result<usize> {
        let mut inner = self.inner.write();
        let mut dropped = 0;
        while inner.log.len() as u64 > keep {
            let Some(entry) = inner.log.pop_front() else {
                break;
            };
            inner.log_floor = entry.revision;
            dropped += 1;
        }
        Ok(dropped)
    }

    fn forget_write_ids(&self, now_s: u64, max: usize) -> Result<usize> {
        let mut inner = self.inner.write();
        let due: Vec<(u64, Vec<u8>)> = (inner.written_until.iter())
            .take_while(|(until, _)| *until <= now_s)
            .take(max)
            .cloned()
            .collect();
        for entry in &due {
            inner.written_until.remove(entry);
            inner.written.remove(&entry.1);
        }
        Ok(due.len())
    }

    fn written(&self, write_id: &[u8]) -> Result<Option<crate::WrittenId>> {
        Ok(self.inner.read().written.get(write_id).map(|(w, _)| *w))
    }

    fn snapshot(
        &self,
        namespaces: &[String],
        visit: &mut dyn FnMut(SnapshotItem) -> Result<()>,
    ) -> Result<u64> {
        let inner = self.inner.read();
        for ns in inner.namespaces.values() {
            visit(SnapshotItem::Namespace(ns.clone()))?;
        }
        for id in namespaces {
            for (stored, record) in inner
                .data
                .range(id.as_bytes().to_vec()..)
                .take_while(|(k, _)| k.starts_with(id.as_bytes()))
            {
                visit(SnapshotItem::Key(Write {
                    namespace: id.clone(),
                    key: Bytes::copy_from_slice(&stored[NAMESPACE_ID_LEN..]),
                    record: record.clone(),
                }))?;
            }
        }
        Ok(inner.revision)
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.read().meta.get(name).cloned())
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.inner.write().meta.insert(name.into(), value.to_vec());
        Ok(())
    }

    fn queue_push(&self, queue: &str, entry: &[u8]) -> Result<u64> {
        Ok(self.inner.write().push(queue, entry.to_vec()))
    }

    fn queue_push_many(&self, queue: &str, entries: &[Vec<u8>]) -> Result<Vec<u64>> {
        let mut inner = self.inner.write();
        Ok(entries
            .iter()
            .map(|entry| inner.push(queue, entry.clone()))
            .collect())
    }

    fn queue_get(&self, queue: &str, sequence: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .inner
            .read()
            .queues
            .get(queue)
            .and_then(|q| q.get(&sequence).cloned()))
    }

    fn queue_scan(&self, queue: &str, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        Ok(self
            .inner
            .read()
            .queues
            .get(queue)
            .map_or_else(Vec::new, |q| {
                q.range((Bound::Excluded(after), Bound::Unbounded))
                    .take(max)
                    .map(|(s, e)| (*s, e.clone()))
                    .collect()
            }))
    }

    fn queue_remove(
        &self,
        queue: &str,
        sequence: u64,
        move_to: Option<(&str, &[u8])>,
    ) -> Result<()> {
        let mut inner = self.inner.write();
        let removed = inner
            .queues
            .get_mut(queue)
            .and_then(|q| q.remove(&sequence));
        if let (Some(_), Some((to, entry))) = (removed, move_to) {
            inner.push(to, entry.to_vec());
        }
        Ok(())
    }

    fn queue_len(&self, queue: &str) -> Result<u64> {
        Ok(self
            .inner
            .read()
            .queues
            .get(queue)
            .map_or(0, |q| q.len() as u64))
    }
}

impl Inner {
    fn push(&mut self, queue: &str, entry: Vec<u8>) -> u64 {
        let sequence = self.queue_sequences.entry(queue.to_string()).or_default();
        *sequence += 1;
        let sequence = *sequence;
        self.queues
            .entry(queue.to_string())
            .or_default()
            .insert(sequence, entry);
        sequence
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;
    use edgekv_kv::Record;
    use proptest::prelude::*;

    use crate::{MemoryStore, Store, Write};

    crate::store_suite!((MemoryStore::with_log(), ()));

    proptest! {
        /// Paging with cursors returns every live key exactly once, in order.
        #[test]
        fn paging_returns_every_live_key_once(
            keys in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 1..20), any::<bool>(), 0..200),
            page_size in 1usize..50,
        ) {
            let store = MemoryStore::new();
            let ns = "0123456789abcdef0123456789abcdef";
            let mut live = BTreeSet::new();
            for (key, alive) in &keys {
                let record = if *alive {
                    live.insert(key.clone());
                    Record::value(Bytes::from_static(b"v"), None, None)
                } else {
                    Record::tombstone(None)
                };
                store.write(vec![Write { namespace: ns.into(), key: key.clone().into(), record }]).unwrap();
            }
            let seen = crate::suite::page_through(&store, ns, page_size, 0);
            let seen: Vec<Vec<u8>> = seen.into_iter().map(|k| k.to_vec()).collect();
            prop_assert_eq!(seen, live.into_iter().collect::<Vec<_>>());
        }
    }
}
