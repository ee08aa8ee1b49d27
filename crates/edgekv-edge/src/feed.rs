//! The change feed at the edge: follows the origin's `Watch` from the last applied
//! revision (persisted with the data it numbers), applies changes to held keys, to
//! every key of `full` namespaces and to namespaces, and resyncs from a snapshot
//! when the edge has fallen behind the retained log (or has never synced).
//!
//! An edge resumes one revision early, at the last event it applied, and checks
//! that event's fingerprint (its writes' keys and HLC stamps) against the one it
//! kept: a store failed over to a replica that had not seen the latest commits,
//! or restored from a backup, numbers new writes with revisions the edge has
//! already applied from the lost history, and resuming after them would miss
//! those writes without a sign. A different event there (or none) resyncs from a
//! snapshot.
//!
//! The feed is also where the edge learns the data set it follows: the first
//! stamped event names it, and it is kept in the store. A feed of another data set
//! is refused (a known-good build over an empty or restored store must not empty
//! the edge) unless the route table's known-good entry names that data set — a
//! migration control was told of — and then the edge resyncs from a snapshot of it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use edgekv_kv::{Mode, Record};
use edgekv_proto::convert::{namespace_from_wire, record_from_wire};
use edgekv_proto::v1;
use edgekv_store::{Commit, ListQuery, NamespaceOp};
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tokio_stream::StreamExt as _;

use crate::service::{FEED_FINGERPRINT, FEED_REVISION, SYNCED};
use crate::upstream::{UpstreamError, WatchError};
use crate::{Edge, Error, Result};

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Follows the feed until told to stop.
pub async fn follow(edge: Arc<Edge>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(50);
    let mut needs_snapshot = !edge.feed.synced();
    // After a divergence, nothing held may stand against the snapshot.
    let mut wipe = false;
    loop {
        let step = async {
            if needs_snapshot {
                resync(&edge, wipe).await
            } else {
                stream(&edge).await
            }
        };
        let outcome = tokio::select! {
            outcome = step => outcome,
            _ = stop.changed() => return,
        };
        edge.feed.connected.store(false, Ordering::Release);
        match outcome {
            Ok(()) if needs_snapshot => {
                needs_snapshot = false;
                wipe = false;
                backoff = Duration::from_millis(50);
                continue;
            }
            Ok(()) => backoff = Duration::from_millis(50),
            Err(FeedError::Trimmed(why)) => {
                tracing::warn!(%why, "the edge is behind the origin's retained log; resyncing from a snapshot");
                needs_snapshot = true;
                continue;
            }
            Err(FeedError::Diverged(why)) => {
                tracing::error!(%why, "THE ORIGIN'S HISTORY DIFFERS from what this edge applied; resyncing from a snapshot");
                edge.feed.diverged.fetch_add(1, Ordering::AcqRel);
                needs_snapshot = true;
                wipe = true;
                continue;
            }
            Err(FeedError::Failed(why)) => {
                tracing::warn!(%why, ?backoff, "change feed interrupted; reconnecting");
                // The next attempt goes to known-good's next endpoint, if it has
                // several.
                if let Ok(known_good) = edge.known_good() {
                    known_good.rotate();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum FeedError {
    Trimmed(String),
    /// The origin's history is not the one this edge applied.
    Diverged(String),
    Failed(String),
}

impl From<Error> for FeedError {
    fn from(err: Error) -> Self {
        FeedError::Failed(err.to_string())
    }
}

impl From<UpstreamError> for FeedError {
    fn from(err: UpstreamError) -> Self {
        FeedError::Failed(err.to_string())
    }
}

/// Streams changes until the stream ends or fails. Once it is open, no snapshot is
/// needed to resume.
async fn stream(edge: &Arc<Edge>) -> Result<(), FeedError> {
    let applied = edge.feed.applied();
    // The last applied event, to check the origin's history against.
    let mut check = match edge.store.meta(FEED_FINGERPRINT).map_err(Error::from)? {
        Some(kept) if kept.len() == 16 && kept[..8] == applied.to_be_bytes() => {
            kept[8..].try_into().ok().map(|f: [u8; 8]| (applied, f))
        }
        _ => None,
    };
    let upstream = edge.known_good()?;
    let mut from = if check.is_some() {
        applied
    } else {
        applied + 1
    };
    let mut events = match upstream.watch(from).await {
        Ok(events) => events,
        // The last applied event was trimmed from the log a moment ago: it
        // cannot be checked, and resuming after it is as it was before the
        // check (a resync here would cost a snapshot for nothing).
        Err(WatchError::Trimmed(_)) if check.is_some() => {
            check = None;
            from = applied + 1;
            match upstream.watch(from).await {
                Ok(events) => events,
                Err(WatchError::Trimmed(why)) => return Err(FeedError::Trimmed(why)),
                Err(WatchError::Failed(err)) => return Err(err.into()),
            }
        }
        Err(WatchError::Trimmed(why)) => return Err(FeedError::Trimmed(why)),
        Err(WatchError::Failed(err)) => return Err(err.into()),
    };
    edge.feed.connected.store(true, Ordering::Release);
    tracing::info!(from, "change feed connected");
    let mut position = Position::new(edge);
    loop {
        // The position of events that kept nothing is written when no further
        // event is ready: once per burst, not once per event.
        let next = match events.next().now_or_never() {
            Some(next) => next,
            None => {
                position.write()?;
                events.next().await
            }
        };
        let Some(event) = next else { break };
        let event = match event {
            Ok(event) => event,
            Err(status) if crate::upstream::needs_resync(&status) => {
                return Err(FeedError::Trimmed(status.message().to_string()));
            }
            Err(status) => return Err(FeedError::Failed(status.to_string())),
        };
        upstream.check_stamp(event.stamp.as_ref())?;
        if let Some(stamp) = &event.stamp {
            follows(edge, &stamp.data_set)?;
        }
        // A new known-good build: follow it instead, from where this one stopped.
        if edge
            .routes
            .load()
            .known_good
            .as_ref()
            .and_then(|k| k.build_id())
            != upstream.build_id()
        {
            return Err(FeedError::Failed("the known-good build changed".into()));
        }
        if let Some((revision, kept)) = check {
            // Progress short of the checked revision: the origin has no entry
            // there, though this edge applied one of this data set — the
            // store lost it (and nothing was written since).
            let lost = event.progress && event.revision < revision;
            let other =
                !event.progress && (event.revision != revision || fingerprint(&event) != kept);
            if lost || other {
                return Err(FeedError::Diverged(format!(
                    "the origin has {} at revision {revision}, where this edge applied another write (its store was failed over to a replica that had not received it, or restored from a backup)",
                    if lost { "nothing" } else { "another event" }
                )));
            }
            if !event.progress {
                check = None;
                continue;
            }
        }
        if event.progress {
            if edge.feed.applied() >= event.revision {
                edge.feed
                    .caught_up_ms
                    .store(edge.clock().now_ms().max(1), Ordering::Release);
            }
            continue;
        }
        apply(edge, event, &mut position)?;
    }
    position.write()?;
    Err(FeedError::Failed("the origin ended the change feed".into()))
}

/// The feed position (revision and fingerprint) of the last applied events that
/// wrote nothing else, not yet in the store. Written before the next event is
/// awaited, and when the stream ends, fails or is dropped; an event that keeps
/// records writes its position with them, superseding this one.
///
/// Under a steady stream, the position is still written every
/// [`POSITION_EVERY`] events or [`POSITION_AGE`], whichever comes first. A
/// crash loses at most that much: the edge resumes before those events
/// (applying an event twice keeps nothing twice) and checks the origin's
/// history at the position it had written.
struct Position<'a> {
    edge: &'a Edge,
    meta: Option<Vec<(String, Vec<u8>)>>,
    /// Events held back, and when the first of them was.
    held: usize,
    since: Option<std::time::Instant>,
}

/// The most events whose position is held back at once.
const POSITION_EVERY: usize = 32;
/// The longest a position is held back.
const POSITION_AGE: Duration = Duration::from_millis(10);

impl<'a> Position<'a> {
    fn new(edge: &'a Edge) -> Self {
        Position {
            edge,
            meta: None,
            held: 0,
            since: None,
        }
    }

    /// Holds back the position of an event that kept nothing.
    fn hold(&mut self, meta: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.meta = Some(meta);
        self.held += 1;
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if self.held >= POSITION_EVERY || since.elapsed() >= POSITION_AGE {
            self.write()?;
        }
        Ok(())
    }

    /// Forgets the held position: a later one was written with records.
    fn superseded(&mut self) {
        self.meta = None;
        self.held = 0;
        self.since = None;
    }

    fn write(&mut self) -> Result<()> {
        if let Some(meta) = self.meta.take() {
            self.edge.store.keep_newer(Vec::new(), meta)?;
        }
        self.superseded();
        Ok(())
    }
}

impl Drop for Position<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.write() {
            tracing::warn!(error = %err, "could not record the change feed's position");
        }
    }
}

/// Checks a feed event's data set against the one the edge follows: learns it
/// when the edge has none; a known-good entry naming another one (its stamp
/// already checked against the entry) is a migration: resync from its snapshot.
fn follows(edge: &Edge, data_set: &str) -> Result<(), FeedError> {
    if data_set.is_empty() {
        return Ok(());
    }
    match edge.data_set() {
        None => {
            edge.follow_data_set(data_set)?;
            tracing::info!(%data_set, "following the data set of the change feed");
            Ok(())
        }
        Some(followed) if *followed != data_set => Err(FeedError::Trimmed(format!(
            "known-good now serves data set {data_set} (its route entry names it); this edge followed {followed}"
        ))),
        Some(_) => Ok(()),
    }
}

/// Applies one committed revision.
fn apply(edge: &Edge, event: v1::WatchEvent, position: &mut Position<'_>) -> Result<()> {
    let revision = event.revision;
    if revision <= edge.feed.applied() {
        return Ok(());
    }
    let mut kept = revision.to_be_bytes().to_vec();
    kept.extend_from_slice(&fingerprint(&event));
    let revision_meta = vec![
        (FEED_REVISION.to_string(), revision.to_be_bytes().to_vec()),
        (FEED_FINGERPRINT.to_string(), kept),
    ];
    // Namespace changes write the revision at once: its fingerprint goes with it.
    let now = !event.namespaces.is_empty();
    if !event.namespaces.is_empty() {
        let ops = event
            .namespaces
            .into_iter()
            .filter_map(|change| {
                let ns = change.namespace?;
                Some(if change.deleted {
                    NamespaceOp::Delete(ns.id)
                } else {
                    NamespaceOp::Put(namespace_from_wire(ns))
                })
            })
            .collect();
        edge.apply_namespaces(ops, Some(revision))?;
    }
    // Group the keys by namespace; a commit touches one namespace in practice.
    let mut by_namespace: HashMap<String, Vec<(Bytes, Record)>> = HashMap::new();
    for change in event.keys {
        let Some(record) = change.record else {
            continue;
        };
        by_namespace
            .entry(change.namespace)
            .or_default()
            .push((change.key, record_from_wire(record)));
    }
    let mut meta = Some(revision_meta);
    for (namespace, items) in by_namespace {
        let mode = edge.namespaces.load().get(&namespace).map(|ns| ns.mode);
        let Some(mode) = mode else { continue };
        let _lock = edge.lock_keys(&namespace, items.iter().map(|(k, _)| k.as_ref()));
        let mut keep = Vec::with_capacity(items.len());
        for (key, record) in items {
            let composite = edgekv_store::keys::data_key(&namespace, &key);
            edge.mark_in_flight(&composite, revision);
            // The answer to this edge's own write was kept already, this revision
            // or a later one: nothing to read or write again for the key. (What
            // the hot tier holds, the store kept first.)
            if edge.hot.revision(&namespace, &key) >= Some(revision) {
                continue;
            }
            // Held in the store, or still in the hot tier after the store purged it.
            let held = || -> Result<bool> {
                Ok(edge.store.get(&namespace, &key)?.is_some()
                    || edge.hot.contains(&namespace, &key))
            };
            if mode == Mode::Full || held()? {
                keep.push((key, record));
            }
        }
        if keep.is_empty() {
            continue;
        }
        let meta = meta.take().unwrap_or_default();
        if !meta.is_empty() {
            // Written with these records: newer than a position held back.
            position.superseded();
        }
        edge.keep_locked(&namespace, keep, meta)?;
    }
    if let Some(meta) = meta {
        // Nothing kept: still record how far the feed has come.
        position.hold(meta)?;
        if now {
            position.write()?;
        }
    }
    edge.feed.applied.store(revision, Ordering::Release);
    edge.feed_caught_up_namespaces(revision);
    edge.feed.progressed.notify_waiters();
    Ok(())
}

/// What identifies a feed event within a history: its revision, and each
/// change's namespace, key, tombstone flag and stamp (a write's HLC stamp is its own; another
/// history's write at the same revision has another). The first 8 bytes of a
/// SHA-256 over them, in the event's order.
fn fingerprint(event: &v1::WatchEvent) -> [u8; 8] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(&event.revision.to_be_bytes());
    for change in &event.keys {
        field(change.namespace.as_bytes());
        field(&change.key);
        if let Some(record) = &change.record {
            field(&record.hlc.to_be_bytes());
            field(&[u8::from(record.tombstone)]);
        }
    }
    for change in &event.namespaces {
        if let Some(ns) = &change.namespace {
            field(ns.id.as_bytes());
            field(ns.title.as_bytes());
        }
        field(&[u8::from(change.deleted)]);
    }
    let digest = hash.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Loads a consistent snapshot: every namespace, every key of `full` namespaces;
/// drops what is held of `cache` namespaces (it is read through again).
///
/// `wipe` after a divergence: what the edge holds came partly from a history
/// the origin no longer has, and its revisions mean nothing against the
/// snapshot's — a record of the lost history numbered above the snapshot would
/// otherwise stand as "newer". Every namespace is emptied first, full ones
/// included, and refilled from the snapshot.
async fn resync(edge: &Arc<Edge>, wipe: bool) -> Result<(), FeedError> {
    let mut full: Vec<String> = edge
        .namespaces
        .load()
        .values()
        .filter(|n| n.mode == Mode::Full)
        .map(|n| n.id.clone())
        .collect();
    loop {
        let snapshot = load_snapshot(edge, full.clone()).await?;
        let now_full: Vec<String> = snapshot
            .namespaces
            .iter()
            .filter(|n| n.mode == Mode::Full)
            .map(|n| n.id.clone())
            .collect();
        let asked: HashSet<&String> = full.iter().collect();
        if now_full.iter().all(|id| asked.contains(id)) {
            install(edge, snapshot, wipe)?;
            return Ok(());
        }
        // A full namespace appeared since we asked: ask again, including it.
        full = now_full;
    }
}

struct Snapshot {
    revision: u64,
    /// The data set it is a copy of.
    data_set: String,
    namespaces: Vec<edgekv_kv::Namespace>,
    keys: HashMap<String, Vec<(Bytes, Record)>>,
}

async fn load_snapshot(edge: &Edge, full: Vec<String>) -> Result<Snapshot, FeedError> {
    let upstream = edge.known_good()?;
    let mut chunks = upstream.snapshot(full).await?;
    let mut snapshot = Snapshot {
        revision: 0,
        data_set: String::new(),
        namespaces: Vec::new(),
        keys: HashMap::new(),
    };
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|s| FeedError::Failed(format!("snapshot: {s}")))?;
        upstream.check_stamp(chunk.stamp.as_ref())?;
        if let Some(stamp) = &chunk.stamp {
            snapshot.data_set.clone_from(&stamp.data_set);
        }
        snapshot
            .namespaces
            .extend(chunk.namespaces.into_iter().map(namespace_from_wire));
        for change in chunk.keys {
            if let Some(record) = change.record {
                snapshot
                    .keys
                    .entry(change.namespace)
                    .or_default()
                    .push((change.key, record_from_wire(record)));
            }
        }
        if chunk.last {
            snapshot.revision = chunk.revision;
            return Ok(snapshot);
        }
    }
    Err(FeedError::Failed("the snapshot ended early".into()))
}

/// While an install moves the edge to another data set: the data set it moves
/// to is set on the edge (answers of no other are kept), cleared when dropped
/// (the install ended, well or not).
struct Migrating<'a>(&'a Edge);

impl<'a> Migrating<'a> {
    fn start(edge: &'a Edge, to: &str) -> Self {
        edge.migrating_to.store(Some(Arc::new(to.to_string())));
        Migrating(edge)
    }
}

impl Drop for Migrating<'_> {
    fn drop(&mut self) {
        self.0.migrating_to.store(None);
    }
}

fn install(edge: &Edge, mut snapshot: Snapshot, wipe: bool) -> Result<()> {
    let revision = snapshot.revision;
    // Another data set's revisions are another count: a record held from the
    // one followed so far must not stand against the snapshot's on its number.
    let migrated = !snapshot.data_set.is_empty()
        && edge
            .data_set()
            .is_some_and(|followed| *followed != snapshot.data_set);
    // A history that diverged (same data set) is wiped too: its answers in
    // flight count in the lost history, and are not kept at all.
    let diverged = wipe && !migrated;
    let wipe = wipe || migrated;
    // Until the install ends, only answers of the data set it moves to are
    // kept (their revisions count in it); the others' are another count.
    let _migrating = migrated.then(|| Migrating::start(edge, &snapshot.data_set));
    // No answer is kept between these marks and the store's emptying (an answer
    // checked before the marks would otherwise land after the wipe).
    let gate = edge.resync.write();
    // Reads and writes in flight were answered before or at the snapshot; the
    // changes after their answer that the edge skipped are in it, not in the feed.
    edge.mark_all_in_flight(if diverged { u64::MAX } else { revision });
    if wipe {
        // Namespaces learned from answers are of the history left.
        edge.learned_namespaces.lock().clear();
    }
    let now_s = edge.clock().now_s();
    let tombstone_until = now_s.saturating_add(edge.config.tombstone_ttl_s);
    // Namespaces: drop those gone, empty the cache ones, keep the full ones.
    let listed: HashSet<&str> = snapshot.namespaces.iter().map(|n| n.id.as_str()).collect();
    // A namespace learned from an answer newer than the snapshot (created through
    // this edge while the snapshot streamed) is not "gone": the feed brings it.
    let newer: HashSet<String> = edge
        .learned_namespaces
        .lock()
        .iter()
        .filter(|(_, at)| **at > revision)
        .map(|(id, _)| id.clone())
        .collect();
    let mut ops: Vec<NamespaceOp> = edge
        .namespaces
        .load()
        .keys()
        .filter(|id| !listed.contains(id.as_str()) && !newer.contains(id.as_str()))
        .map(|id| NamespaceOp::Delete(id.clone()))
        .collect();
    for ns in &snapshot.namespaces {
        if ns.mode == Mode::Cache || wipe {
            ops.push(NamespaceOp::Delete(ns.id.clone()));
        }
        ops.push(NamespaceOp::Put(ns.clone()));
    }
    edge.apply_namespaces(ops, None)?;
    edge.hot.clear();
    drop(gate);
    // Every full namespace, including those whose keys are all gone.
    let full: Vec<String> = snapshot
        .namespaces
        .iter()
        .filter(|n| n.mode == Mode::Full)
        .map(|n| n.id.clone())
        .collect();
    for namespace in full {
        let items = snapshot.keys.remove(&namespace).unwrap_or_default();
        let present: HashSet<Bytes> = items.iter().map(|(k, _)| k.clone()).collect();
        // Keys held but absent from the snapshot were purged at the origin: drop them.
        let mut stale = Vec::new();
        let mut start_after: Option<Vec<u8>> = None;
        loop {
            let query = ListQuery {
                prefix: Vec::new(),
                start_after: start_after.clone(),
                limit: 1000,
            };
            let page = edge.store.list(&namespace, &query, 0)?;
            for (key, _) in &page.entries {
                if !present.contains(key) {
                    let gone = Record {
                        revision,
                        ..Record::tombstone(Some(tombstone_until))
                    };
                    stale.push((key.clone(), gone));
                }
            }
            match (page.more, page.entries.last()) {
                (true, Some((last, _))) => start_after = Some(last.to_vec()),
                _ => break,
            }
        }
        for batch in items
            .chunks(1000)
            .map(<[_]>::to_vec)
            .chain(std::iter::once(stale))
        {
            let _lock = edge.lock_keys(&namespace, batch.iter().map(|(k, _)| k.as_ref()));
            edge.keep_locked(&namespace, batch, Vec::new())?;
        }
    }
    edge.store.commit(Commit {
        meta: vec![
            (FEED_REVISION.to_string(), revision.to_be_bytes().to_vec()),
            (SYNCED.to_string(), vec![1]),
            // A snapshot has no event to check the next feed against.
            (FEED_FINGERPRINT.to_string(), Vec::new()),
        ],
        ..Commit::default()
    })?;
    if !snapshot.data_set.is_empty() && edge.data_set().as_deref() != Some(&snapshot.data_set) {
        edge.follow_data_set(&snapshot.data_set)?;
        tracing::warn!(data_set = %snapshot.data_set, "now following another data set, from its snapshot");
    }
    edge.feed.applied.store(revision, Ordering::Release);
    edge.feed_caught_up_namespaces(revision);
    edge.feed.synced.store(true, Ordering::Release);
    edge.feed.snapshots.fetch_add(1, Ordering::AcqRel);
    edge.feed.progressed.notify_waiters();
    tracing::info!(revision, "loaded a snapshot");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use edgekv_store::{MemoryStore, Store};

    use super::*;
    use crate::service::tests::{edge_over, namespace};

    /// A position held back is written after [`POSITION_EVERY`] events, or once
    /// [`POSITION_AGE`] has passed, even when events never stop coming.
    #[test]
    fn a_held_position_is_written_every_few_events_or_milliseconds() {
        let store = Arc::new(MemoryStore::new());
        let edge = edge_over(store.clone());
        let at = |revision: u64| vec![(FEED_REVISION.to_string(), revision.to_be_bytes().to_vec())];
        let stored = || store.meta(FEED_REVISION).unwrap();
        let mut position = Position::new(&edge);
        // Held back while events come fast (the age check is far off here).
        for revision in 1..POSITION_EVERY as u64 {
            position.hold(at(revision)).unwrap();
        }
        if position.since.unwrap().elapsed() < POSITION_AGE {
            assert_eq!(stored(), None, "written before the bound");
        }
        position.hold(at(POSITION_EVERY as u64)).unwrap();
        assert_eq!(stored(), Some(at(POSITION_EVERY as u64)[0].1.clone()));

        position.hold(at(100)).unwrap();
        std::thread::sleep(POSITION_AGE);
        position.hold(at(101)).unwrap();
        assert_eq!(stored(), Some(at(101)[0].1.clone()), "held past its age");

        position.hold(at(102)).unwrap();
        drop(position);
        assert_eq!(stored(), Some(at(102)[0].1.clone()), "lost when dropped");
    }

    /// An edge following data set "old", with one full namespace.
    fn following_old() -> (Arc<MemoryStore>, Edge, edgekv_kv::Namespace) {
        let store = Arc::new(MemoryStore::new());
        let edge = edge_over(store.clone());
        let full = edgekv_kv::Namespace {
            mode: Mode::Full,
            ..namespace("0123456789abcdef0123456789abcdef")
        };
        edge.follow_data_set("old").unwrap();
        edge.apply_namespaces(vec![NamespaceOp::Put(full.clone())], None)
            .unwrap();
        (store, edge, full)
    }

    /// A snapshot of data set "new" at revision 3: `full` with `k` at 2.
    fn snapshot_of_new(full: edgekv_kv::Namespace, k: &'static [u8]) -> Snapshot {
        let id = full.id.clone();
        Snapshot {
            revision: 3,
            data_set: "new".into(),
            namespaces: vec![full],
            keys: HashMap::from([(
                id,
                vec![(
                    Bytes::from_static(k),
                    Record {
                        revision: 2,
                        ..Record::value(Bytes::from_static(b"new"), None, None)
                    },
                )],
            )]),
        }
    }

    /// A snapshot of another data set (known-good migrated to another store)
    /// replaces what a full namespace held: the old data set's revisions, higher
    /// than the new one's, do not outrank its records.
    #[test]
    fn a_snapshot_of_another_data_set_replaces_a_full_namespace() {
        let (store, edge, full) = following_old();
        let id = full.id.clone();
        let record = |revision, value: &'static [u8]| Record {
            revision,
            ..Record::value(Bytes::from_static(value), None, None)
        };
        let held = vec![
            (Bytes::from_static(b"k"), record(40, b"old")),
            (Bytes::from_static(b"gone"), record(41, b"old")),
        ];
        edge.keep_locked(&id, held, Vec::new()).unwrap();

        install(&edge, snapshot_of_new(full, b"k"), false).unwrap();
        assert_eq!(store.get(&id, b"k").unwrap().unwrap().value, "new");
        assert!(
            store.get(&id, b"gone").unwrap().is_none_or(|r| r.tombstone),
            "a key of the old data set survived"
        );
        assert_eq!(edge.data_set().as_deref().map(String::as_str), Some("new"));
    }

    fn answered(revision: u64, value: &'static [u8]) -> Vec<Record> {
        vec![Record {
            revision,
            ..Record::value(Bytes::from_static(value), None, None)
        }]
    }

    /// A write answered by a build of the data set the edge leaves (in flight
    /// across a migration's install, or still routed after it) is not kept: its
    /// revision counts in the old history and would outrank the new one's.
    ///
    /// Before, the answer at 1000 passed the in-flight mark (the snapshot's 3) and
    /// stood over the snapshot's record, and over every event of the new data set
    /// up to 1000.
    #[test]
    fn an_answer_of_the_data_set_left_is_not_kept() {
        let (store, edge, full) = following_old();
        let id = full.id.clone();
        let k = Bytes::from_static(b"k");
        let marks = crate::service::WriteMarks::register(&edge, &id, std::slice::from_ref(&k));
        install(&edge, snapshot_of_new(full, b"k"), false).unwrap();
        let value = || store.get(&id, &k).unwrap().unwrap().value;
        let keep = |revision, answer, data_set| {
            let marks = crate::service::WriteMarks::register(&edge, &id, std::slice::from_ref(&k));
            edge.keep_written(
                &id,
                vec![k.clone()],
                answered(revision, answer),
                data_set,
                &marks,
                true,
            )
            .unwrap();
        };
        // In flight across the install (its mark passes: 3 <= 1000).
        edge.keep_written(
            &id,
            vec![k.clone()],
            answered(1000, b"old"),
            "old",
            &marks,
            true,
        )
        .unwrap();
        assert_eq!(value(), "new");
        drop(marks);
        // Sent after it, to a build of the old data set still routed.
        keep(1001, b"old", "old");
        assert_eq!(value(), "new");
        // While an install moves the edge on to another data set, only that
        // one's answers are kept.
        let migrating = Migrating::start(&edge, "next");
        keep(1002, b"mid", "new");
        assert_eq!(value(), "new");
        keep(1003, b"next", "next");
        assert_eq!(value(), "next");
        drop(migrating);
        keep(1004, b"after", "new");
        assert_eq!(value(), "after");
    }

    /// An answer past its checks (under [`Edge::resync`], shared) is written
    /// before a resync's install marks what is in flight and empties the store:
    /// the install waits for it, and then empties the cache namespace it landed in.
    ///
    /// Before, the install could empty the namespace between the answer's check
    /// and its store write: the answer, older than the snapshot, stayed in the
    /// store, and the feed (resuming after the snapshot) never corrected it.
    #[test]
    fn an_install_waits_for_an_answer_being_kept() {
        let store = Arc::new(MemoryStore::new());
        let edge = edge_over(store.clone());
        let cache = namespace("0123456789abcdef0123456789abcdef");
        let id = cache.id.clone();
        edge.apply_namespaces(vec![NamespaceOp::Put(cache.clone())], None)
            .unwrap();
        let snapshot = Snapshot {
            revision: 110,
            data_set: String::new(),
            namespaces: vec![cache],
            keys: HashMap::new(),
        };
        std::thread::scope(|scope| {
            let keeping = edge.resync.read();
            let installing = scope.spawn(|| install(&edge, snapshot, false));
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(
                !installing.is_finished(),
                "the install ran while an answer was being kept"
            );
            let k = Bytes::from_static(b"k");
            let at_100 = Record {
                revision: 100,
                ..Record::value(Bytes::from_static(b"v100"), None, None)
            };
            edge.keep_locked(&id, vec![(k, at_100)], Vec::new())
                .unwrap();
            drop(keeping);
            installing.join().unwrap().unwrap();
        });
        assert!(
            store.get(&id, b"k").unwrap().is_none(),
            "an answer older than the snapshot stayed in the store"
        );
    }
}
