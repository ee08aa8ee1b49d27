//! [`OriginCore`]: the authoritative store and its rules, shared by every build of
//! a process.
//!
//! Writes are ordered here: under one lock, a write's id is checked against those
//! already applied, each key's stamp is decided from the stamp it carries now
//! (`edgekv_kv::ordering`), and the batch is committed with the next revision. The
//! store keeps the change log that `Watch` streams.

use std::sync::Arc;

use bytes::Bytes;
use edgekv_kv::ordering::{self, Decision};
use edgekv_kv::{Clock, Mode, Namespace, Record, validate};
use edgekv_store::{Commit, ListPage, ListQuery, LogRead, NamespaceOp, SnapshotItem, Store, Write};
use parking_lot::Mutex;
use tokio::sync::watch;

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
    /// Orders read-decide-commit of writes and namespace changes.
    writer: Mutex<()>,
    committed: watch::Sender<u64>,
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
    if let Some(raw) = store.meta(DATA_SET_META)? {
        let id = String::from_utf8(raw)
            .ok()
            .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                Error::Config("the store's data-set id is corrupt (not 32 hex digits)".into())
            })?;
        return Ok(id);
    }
    let bytes: [u8; 16] = rand::random();
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    store.set_meta_synced(DATA_SET_META, id.as_bytes())?;
    tracing::info!(data_set = %id, "created the store's data-set id");
    Ok(id)
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
        let (committed, _) = watch::channel(store.revision());
        let (closing, _) = watch::channel(false);
        Ok(OriginCore {
            store,
            clock,
            writer: Mutex::new(()),
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

    /// Applies a client write. A key given twice counts once, with its last change.
    pub fn write(&self, mut request: WriteRequest) -> Result<WriteOutcome> {
        dedupe_last_wins(&mut request.mutations);
        let now_ms = self.clock.now_ms();
        if !ordering::within_skew(request.hlc, now_ms) {
            return Err(Error::ClockSkew {
                ahead_ms: edgekv_kv::Hlc::physical_ms(request.hlc).saturating_sub(now_ms),
            });
        }
        // A replay older than the tombstones kept could resurrect a delete whose
        // tombstone is gone: refused (the edge buries it as a dead letter).
        if request.replay {
            let age_ms = now_ms.saturating_sub(edgekv_kv::Hlc::physical_ms(request.hlc));
            if age_ms > self.tombstone_ttl_s.saturating_mul(1000) {
                return Err(Error::ReplayTooOld {
                    age_s: age_ms / 1000,
                    horizon_s: self.tombstone_ttl_s,
                });
            }
        }
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
        let _writer = self.writer.lock();
        self.namespace_of(&request.namespace)?;
        if let Some(id) = &write_id
            && let Some(written) = self.store.written(id)?
        {
            // The same id with other content is a node reusing ids (a data dir
            // lost without a new incarnation): never a duplicate's success.
            if let (Some(held), Some(now)) = (written.digest, digest)
                && held != now
            {
                tracing::error!(
                    write_id = %String::from_utf8_lossy(id),
                    revision = written.revision,
                    "A NODE REUSED A WRITE ID for another write: refused, not applied"
                );
                return Err(Error::WriteIdReused {
                    write_id: String::from_utf8_lossy(id).into_owned(),
                    revision: written.revision,
                });
            }
            return Ok(WriteOutcome {
                revision: written.revision,
                duplicate: true,
                superseded: false,
                records: self.current(&request)?,
            });
        }
        let mut writes = Vec::with_capacity(request.mutations.len());
        let mut superseded = false;
        for m in &request.mutations {
            let current = self.store.get(&request.namespace, &m.key)?.map(|r| r.hlc);
            let hlc = match ordering::decide(request.hlc, current, request.replay) {
                Decision::Apply(hlc) => hlc,
                Decision::Superseded => {
                    superseded = true;
                    continue;
                }
            };
            let mut record = match &m.put {
                Some((value, metadata, expiration)) => {
                    Record::value(value.clone(), metadata.clone(), *expiration)
                }
                None => Record::tombstone(Some(
                    self.clock.now_s().saturating_add(self.tombstone_ttl_s),
                )),
            };
            record.hlc = hlc;
            writes.push(Write {
                namespace: request.namespace.clone(),
                key: m.key.clone(),
                record,
            });
        }
        let revision = self.store.commit(Commit {
            writes,
            write_id,
            write_digest: digest,
            ..Commit::default()
        })?;
        self.committed.send_replace(revision);
        Ok(WriteOutcome {
            revision,
            duplicate: false,
            superseded,
            records: self.current(&request)?,
        })
    }

    /// The records now held for a write's keys (tombstones for keys never written).
    fn current(&self, request: &WriteRequest) -> Result<Vec<Record>> {
        request
            .mutations
            .iter()
            .map(|m| {
                Ok(self
                    .store
                    .get(&request.namespace, &m.key)?
                    .unwrap_or_else(|| Record::tombstone(None)))
            })
            .collect()
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
        let _writer = self.writer.lock();
        self.check_title_free(account, title, None)?;
        let namespace = Namespace {
            id: new_id(),
            title: title.to_string(),
            account: account.to_string(),
            mode,
        };
        let revision = self.commit_namespace(NamespaceOp::Put(namespace.clone()))?;
        Ok((namespace, revision))
    }

    /// Renames a namespace of `account`.
    pub fn rename_namespace(
        &self,
        account: &str,
        id: &str,
        title: &str,
    ) -> Result<(Namespace, u64)> {
        validate::title(title)?;
        let _writer = self.writer.lock();
        let mut namespace = self.owned(account, id)?;
        self.check_title_free(account, title, Some(id))?;
        namespace.title = title.to_string();
        let revision = self.commit_namespace(NamespaceOp::Put(namespace.clone()))?;
        Ok((namespace, revision))
    }

    /// Deletes a namespace of `account` and every key in it.
    pub fn delete_namespace(&self, account: &str, id: &str) -> Result<(Namespace, u64)> {
        let _writer = self.writer.lock();
        let namespace = self.owned(account, id)?;
        let revision = self.commit_namespace(NamespaceOp::Delete(id.to_string()))?;
        Ok((namespace, revision))
    }

    /// Every namespace, current as of the returned revision.
    pub fn namespaces(&self) -> Result<(Vec<Namespace>, u64)> {
        let read_revision = self.store.revision();
        Ok((self.store.namespaces()?, read_revision))
    }

    fn owned(&self, account: &str, id: &str) -> Result<Namespace> {
        match self.store.namespace(id)? {
            Some(ns) if ns.account == account => Ok(ns),
            _ => Err(Error::NamespaceNotFound(id.to_string())),
        }
    }

    fn check_title_free(&self, account: &str, title: &str, except: Option<&str>) -> Result<()> {
        let taken = self
            .store
            .namespaces()?
            .iter()
            .any(|n| n.account == account && n.title == title && Some(n.id.as_str()) != except);
        if taken {
            return Err(Error::TitleTaken(title.to_string()));
        }
        Ok(())
    }

    fn commit_namespace(&self, op: NamespaceOp) -> Result<u64> {
        let revision = self.store.commit(Commit {
            namespaces: vec![op],
            ..Commit::default()
        })?;
        self.committed.send_replace(revision);
        Ok(revision)
    }

    /// Reads log entries from `from` on. A start beyond the next revision means the
    /// caller saw revisions this store never had (it was restored or wiped): it must
    /// resync, exactly as if the log had been trimmed.
    pub fn log(&self, from: u64, max: usize) -> Result<Vec<edgekv_store::LogEntry>> {
        let head = self.store.revision();
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

    /// Trims the log to `keep` revisions and purges expired records.
    pub fn maintain(&self, keep: u64) -> Result<(usize, usize)> {
        let trimmed = self.store.trim_log(keep)?;
        let purged = self.store.purge_expired(self.clock.now_s(), 10_000)?;
        Ok((trimmed, purged))
    }
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

#[cfg(test)]
mod tests;
