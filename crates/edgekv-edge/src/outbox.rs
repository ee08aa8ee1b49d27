//! The outbox: writes that no build could take, kept in the edge's store (fsynced)
//! and replayed in order once a build answers again.
//!
//! A queued write is answered `202 Accepted` and is visible at this edge at once:
//! its keys sit in an overlay that reads consult before anything else, until its
//! replay is settled. The overlay holds each key's write (its sequence and stamp)
//! and whether it deletes the key — never a value: a read of a queued value takes
//! it from the queued entry in the store. A replay carries the write's original id
//! (so a write the origin did apply before its answer was lost is applied once)
//! and its original hybrid-logical-clock stamp with `replay = true`, so it
//! competes with newer writes instead of overwriting them: the origin records it
//! as `superseded` when the key has moved on. A write that can never succeed (a
//! client fault surfacing late, such as a namespace deleted meanwhile) moves to
//! the dead-letter list and does not hold up the rest.
//!
//! # Bounds and the writer
//! The outbox is bounded by writes (`outbox_max_writes`) and by the bytes of its
//! entries as stored (`outbox_max_bytes`); a write is admitted — its place
//! reserved — before it is queued, and refused with a 503 past either bound.
//! Admitted writes go to one writer thread, which puts every write waiting for
//! it into one batch with one fsync (group commit) and then answers each with its
//! sequence number, so an fsync never holds an async worker. The writer puts a
//! batch's keys in the overlay before it answers (a `202` is visible at once) and
//! only once the batch is on disk (a write that failed is never seen). It stops
//! when the outbox is dropped with its edge (its channel closes), and holds the
//! store only while it writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};

use bytes::Bytes;
use dashmap::DashMap;
use edgekv_kv::Record;
use edgekv_proto::v1;
use edgekv_store::{Store, keys};
use prost::Message as _;
use tokio::sync::{Notify, oneshot};

use crate::{Error, Result};

/// The queue of writes waiting for a build.
pub(crate) const OUTBOX: &str = "outbox";
/// The queue of writes that can never succeed.
pub(crate) const DEAD_LETTERS: &str = "dead_letters";

/// The most writes the writer puts in one batch.
const GROUP_MAX_WRITES: usize = 256;
/// A batch takes no more writes once it holds this many bytes.
const GROUP_MAX_BYTES: u64 = 16 << 20;
/// Entries read per page while the outbox loads (their values are dropped page by
/// page; an entry is at most a write's size, so a page stays far below the
/// outbox's byte bound).
const LOAD_PAGE: usize = 16;

/// The outbox: its figures, the overlay of queued keys, and the channel to its
/// writer.
#[derive(Debug)]
pub struct Outbox {
    state: Arc<State>,
    /// Admitted writes, to the writer thread (which ends when this is dropped).
    writer: mpsc::Sender<Push>,
    /// Woken when a write is queued, so replay starts without waiting for a tick.
    pub(crate) wake: Arc<Notify>,
}

/// What the outbox shares with its writer.
#[derive(Debug, Default)]
struct State {
    /// Writes waiting (on disk, in the overlay).
    depth: AtomicU64,
    /// The bytes of the waiting writes' entries, as stored.
    bytes: AtomicU64,
    /// When the oldest waiting write was queued, Unix ms (0: none waiting).
    oldest_ms: AtomicU64,
    queued: AtomicU64,
    replayed: AtomicU64,
    superseded: AtomicU64,
    duplicates: AtomicU64,
    dead: AtomicU64,
    /// The highest sequence number whose write is counted and in the overlay:
    /// replay reads no further, so a write is never settled before it is booked.
    booked: AtomicU64,
    /// Queued keys by composite key: which write holds each, and how.
    overlay: DashMap<Box<[u8]>, Held>,
    /// Orders the depth/oldest bookkeeping of the writer against removals, so the
    /// figures stay consistent with the queue.
    books: parking_lot::Mutex<()>,
    /// Places taken by admitted writes the writer has not booked yet; taken and
    /// checked against the bounds under this lock.
    reserved: parking_lot::Mutex<Reserved>,
}

/// What a queued write does to one key: all the overlay keeps (no value).
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The outbox sequence of the write.
    sequence: u64,
    /// The write's stamp.
    hlc: u64,
    /// Whether it deletes the key.
    tombstone: bool,
}

/// Admitted writes not yet booked.
#[derive(Debug, Default)]
struct Reserved {
    writes: u64,
    bytes: u64,
}

/// An admitted write on its way to the writer, and where its answer goes (its
/// sequence number, or why it could not be kept).
struct Push {
    entry: v1::OutboxEntry,
    encoded: Vec<u8>,
    answer: oneshot::Sender<std::result::Result<u64, String>>,
}

/// A snapshot of the outbox's figures, for `/metrics` and the admin listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Writes waiting.
    pub depth: u64,
    /// The bytes the waiting writes take, as stored.
    pub bytes: u64,
    /// Age of the oldest waiting write, ms.
    pub oldest_age_ms: u64,
    /// Writes queued since start.
    pub queued: u64,
    /// Replays the origin applied since start.
    pub replayed: u64,
    /// Replays the origin recorded as superseded by newer writes.
    pub superseded: u64,
    /// Replays the origin had already applied (same write id).
    pub duplicates: u64,
    /// Writes in the dead-letter list.
    pub dead_letters: u64,
}

/// A stored entry that cannot be decoded: its sequence and bytes.
pub(crate) type Undecodable = (u64, Vec<u8>);

/// One queued write as decoded from the store.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) sequence: u64,
    pub(crate) entry: v1::OutboxEntry,
    /// The bytes of its entry as stored.
    pub(crate) size: u64,
}

/// The record a queued write leaves for a key, stamped with the write's stamp: a
/// value with `put`, else a tombstone.
fn record_of(hlc: u64, put: Option<&v1::Value>) -> Record {
    match put {
        Some(value) => Record {
            hlc,
            ..Record::value(
                value.value.clone(),
                value.metadata.clone(),
                value.expiration,
            )
        },
        None => Record {
            hlc,
            ..Record::tombstone(None)
        },
    }
}

impl Outbox {
    /// Loads the counters and the overlay from what the store holds (after a
    /// restart the waiting writes are visible again at once), then starts the
    /// writer. The queue is read page by page and only keys, stamps and sizes are
    /// kept: the values of a page are dropped before the next is read.
    pub(crate) fn load(store: &Arc<dyn Store>) -> Result<Self> {
        let state = State::default();
        let mut after = 0;
        loop {
            let page = store.queue_scan(OUTBOX, after, LOAD_PAGE)?;
            let Some(&(last, _)) = page.last() else {
                break;
            };
            for (sequence, raw) in page {
                state.depth.fetch_add(1, Ordering::Relaxed);
                state.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
                match v1::OutboxEntry::decode(Bytes::from(raw)) {
                    Ok(entry) => {
                        if state.oldest_ms.load(Ordering::Relaxed) == 0 {
                            state.oldest_ms.store(entry.queued_ms, Ordering::Relaxed);
                        }
                        state.cover(sequence, &entry);
                    }
                    Err(err) => {
                        tracing::error!(sequence, error = %err, "an outbox entry cannot be decoded; it will move to the dead letters")
                    }
                }
            }
            after = last;
        }
        state.booked.store(after, Ordering::Relaxed);
        state
            .dead
            .store(store.queue_len(DEAD_LETTERS)?, Ordering::Relaxed);
        let state = Arc::new(state);
        let wake = Arc::new(Notify::new());
        let (writer, pushes) = mpsc::channel();
        let (shared, woken, held) = (state.clone(), wake.clone(), Arc::downgrade(store));
        std::thread::Builder::new()
            .name("edgekv-outbox".into())
            .spawn(move || write_loop(shared, woken, held, pushes))
            // Detached: it ends when the channel closes.
            .map(drop)
            .map_err(|e| Error::Internal(format!("cannot start the outbox's writer: {e}")))?;
        Ok(Outbox {
            state,
            writer,
            wake,
        })
    }

    /// Whether any write waits (the hot path checks this before the overlay).
    pub fn is_empty(&self) -> bool {
        self.state.depth.load(Ordering::Acquire) == 0
    }

    /// The record a waiting write left for a key, if any: a deletion from the
    /// overlay alone, a value read from the write's entry in `store`. None when
    /// no waiting write holds the key, or its write was settled meanwhile.
    pub(crate) fn overlay(
        &self,
        store: &dyn Store,
        namespace: &str,
        key: &[u8],
    ) -> Result<Option<Record>> {
        let overlay = &self.state.overlay;
        if overlay.is_empty() {
            return Ok(None);
        }
        let Some(held) = overlay
            .get(keys::data_key(namespace, key).as_slice())
            .map(|held| *held)
        else {
            return Ok(None);
        };
        if held.tombstone {
            return Ok(Some(record_of(held.hlc, None)));
        }
        let Some(raw) = store.queue_get(OUTBOX, held.sequence)? else {
            return Ok(None);
        };
        let entry = match v1::OutboxEntry::decode(Bytes::from(raw)) {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(sequence = held.sequence, error = %err, "a queued write cannot be decoded; its keys read as not queued");
                return Ok(None);
            }
        };
        Ok(entry
            .mutations
            .iter()
            .rev()
            .find(|mutation| mutation.key == key)
            .map(|mutation| record_of(held.hlc, mutation.put.as_ref())))
    }

    /// Takes keys out of the overlay where a write a build answered overtook the
    /// queued one (its record's stamp is not older), so reads here see it; a queued
    /// write with a newer stamp stays.
    pub(crate) fn overtaken(&self, namespace: &str, keys: &[Bytes], records: &[Record]) {
        let overlay = &self.state.overlay;
        if overlay.is_empty() {
            return;
        }
        for (key, record) in keys.iter().zip(records) {
            overlay.remove_if(keys::data_key(namespace, key).as_slice(), |_, queued| {
                queued.hlc <= record.hlc
            });
        }
    }

    /// Queues a write and makes it visible at once: answered once the writer has
    /// it on disk (fsynced, in a batch with the writes that came meanwhile) and in
    /// the overlay. 503 past `max_writes` waiting writes or `max_bytes` of them,
    /// checked before the write is encoded or sent.
    pub(crate) async fn push(
        &self,
        max_writes: u64,
        max_bytes: u64,
        entry: v1::OutboxEntry,
    ) -> Result<u64> {
        let size = entry.encoded_len() as u64;
        self.admit(max_writes, max_bytes, size)?;
        let (answer, answered) = oneshot::channel();
        let push = Push {
            encoded: entry.encode_to_vec(),
            entry,
            answer,
        };
        if self.writer.send(push).is_err() {
            self.state.release(1, size);
            return Err(Error::Internal("the outbox's writer has stopped".into()));
        }
        // From here the writer owns the write: a caller that goes away leaves it
        // queued, counted and visible, like any other.
        match answered.await {
            Ok(Ok(sequence)) => Ok(sequence),
            Ok(Err(why)) => Err(Error::Internal(format!(
                "the outbox could not keep a write: {why}"
            ))),
            Err(_) => Err(Error::Internal(
                "the outbox's writer stopped before it answered".into(),
            )),
        }
    }

    /// Takes a place for a write of `size` bytes, or says which bound it would pass.
    fn admit(&self, max_writes: u64, max_bytes: u64, size: u64) -> Result<()> {
        let mut reserved = self.state.reserved.lock();
        let writes = self.state.depth.load(Ordering::Acquire) + reserved.writes;
        if writes >= max_writes {
            return Err(Error::Unavailable(format!(
                "origin unavailable and this edge's outbox is full ({max_writes} writes wait); retry later"
            )));
        }
        let bytes = self.state.bytes.load(Ordering::Acquire) + reserved.bytes;
        if bytes.saturating_add(size) > max_bytes {
            return Err(Error::Unavailable(format!(
                "origin unavailable and this edge's outbox is full: its waiting writes take {bytes} bytes, and this write's {size} would pass its bound of {max_bytes} bytes (outbox_max_bytes); retry later"
            )));
        }
        reserved.writes += 1;
        reserved.bytes += size;
        Ok(())
    }

    /// The oldest waiting writes, in order; an entry that cannot be decoded comes
    /// back as `Err` so the caller moves it to the dead letters. Only writes the
    /// writer has booked (in the overlay and the counts): a write on disk but not
    /// booked yet waits for the next round.
    pub(crate) fn head(
        &self,
        store: &dyn Store,
        max: usize,
    ) -> Result<Vec<std::result::Result<Queued, Undecodable>>> {
        let booked = self.state.booked.load(Ordering::Acquire);
        Ok(store
            .queue_read(OUTBOX, max)?
            .into_iter()
            .take_while(|(sequence, _)| *sequence <= booked)
            .map(|(sequence, raw)| {
                let size = raw.len() as u64;
                match v1::OutboxEntry::decode(raw.as_slice()) {
                    Ok(entry) => Ok(Queued {
                        sequence,
                        entry,
                        size,
                    }),
                    Err(_) => Err((sequence, raw)),
                }
            })
            .collect())
    }

    /// Settles a replayed write: out of the queue and the overlay. The removal
    /// (fsynced) runs on a blocking thread, never on an async worker.
    pub(crate) async fn settled(
        &self,
        store: &Arc<dyn Store>,
        queued: &Queued,
        duplicate: bool,
        superseded: bool,
    ) -> Result<()> {
        let (state, store, queued) = (self.state.clone(), store.clone(), queued.clone());
        off_the_reactor(move || state.settled(&*store, &queued, duplicate, superseded)).await
    }

    /// Moves a write that can never succeed to the dead letters, with the reason;
    /// on a blocking thread, as [`Outbox::settled`].
    pub(crate) async fn bury(
        &self,
        store: &Arc<dyn Store>,
        sequence: u64,
        entry: Option<&v1::OutboxEntry>,
        reason: String,
    ) -> Result<()> {
        let (state, store, entry) = (self.state.clone(), store.clone(), entry.cloned());
        off_the_reactor(move || state.bury(&*store, sequence, entry.as_ref(), reason)).await
    }

    /// The figures now.
    pub fn stats(&self, now_ms: u64) -> OutboxStats {
        let state = &self.state;
        let oldest = state.oldest_ms.load(Ordering::Acquire);
        let depth = state.depth.load(Ordering::Acquire);
        OutboxStats {
            depth,
            bytes: state.bytes.load(Ordering::Acquire),
            oldest_age_ms: if depth == 0 || oldest == 0 {
                0
            } else {
                now_ms.saturating_sub(oldest)
            },
            queued: state.queued.load(Ordering::Relaxed),
            replayed: state.replayed.load(Ordering::Relaxed),
            superseded: state.superseded.load(Ordering::Relaxed),
            duplicates: state.duplicates.load(Ordering::Relaxed),
            dead_letters: state.dead.load(Ordering::Relaxed),
        }
    }
}

impl State {
    /// Puts a queued write's keys in the overlay. Where another queued write holds
    /// a key, the newer stamp keeps it — as at the origin, where the replay of the
    /// older one is superseded — whichever was queued first.
    fn cover(&self, sequence: u64, entry: &v1::OutboxEntry) {
        let Some(header) = &entry.header else { return };
        for mutation in &entry.mutations {
            let composite: Box<[u8]> = keys::data_key(&header.namespace, &mutation.key).into();
            let queued = Held {
                sequence,
                hlc: header.hlc,
                tombstone: mutation.put.is_none(),
            };
            self.overlay
                .entry(composite)
                .and_modify(|held| {
                    if held.hlc <= queued.hlc {
                        *held = queued;
                    }
                })
                .or_insert(queued);
        }
    }

    /// Takes a settled write's keys out of the overlay, unless a later queued
    /// write of the same key holds them.
    fn uncover(&self, sequence: u64, entry: &v1::OutboxEntry) {
        let Some(header) = &entry.header else { return };
        for mutation in &entry.mutations {
            let composite = keys::data_key(&header.namespace, &mutation.key);
            self.overlay
                .remove_if(composite.as_slice(), |_, held| held.sequence == sequence);
        }
    }

    /// Frees the places of admitted writes that were not kept.
    fn release(&self, writes: u64, bytes: u64) {
        let mut reserved = self.reserved.lock();
        reserved.writes = reserved.writes.saturating_sub(writes);
        reserved.bytes = reserved.bytes.saturating_sub(bytes);
    }

    /// Writes one batch of admitted writes (one fsync), books them — the overlay
    /// first, then the counts, so a write is never counted before it is visible —
    /// and answers each with its sequence number. On a store error nothing is
    /// booked: the places are freed and each write is answered with the error.
    fn commit(&self, store: &Weak<dyn Store>, wake: &Notify, mut batch: Vec<Push>, bytes: u64) {
        let count = batch.len() as u64;
        let encoded: Vec<Vec<u8>> = batch
            .iter_mut()
            .map(|push| std::mem::take(&mut push.encoded))
            .collect();
        // The store is held only while the batch is written: an edge dropped
        // meanwhile closes its store once this is done.
        let written = match store.upgrade() {
            Some(store) => store
                .queue_push_many(OUTBOX, &encoded)
                .map_err(|e| e.to_string()),
            None => Err("the edge's store is closed".to_string()),
        };
        drop(encoded);
        let sequences = match written {
            Ok(sequences) => sequences,
            Err(why) => {
                tracing::error!(error = %why, writes = count, "the outbox could not keep a batch of writes");
                self.release(count, bytes);
                for push in batch {
                    let _ = push.answer.send(Err(why.clone()));
                }
                return;
            }
        };
        for (push, &sequence) in batch.iter().zip(&sequences) {
            self.cover(sequence, &push.entry);
        }
        {
            let _books = self.books.lock();
            if let Some(first) = batch.first() {
                let _ = self.oldest_ms.compare_exchange(
                    0,
                    first.entry.queued_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            // Counted and unreserved under the admission lock: a bound check sees
            // each write once, never twice or not at all.
            let mut reserved = self.reserved.lock();
            self.depth.fetch_add(count, Ordering::AcqRel);
            self.bytes.fetch_add(bytes, Ordering::AcqRel);
            reserved.writes = reserved.writes.saturating_sub(count);
            reserved.bytes = reserved.bytes.saturating_sub(bytes);
            if let Some(&last) = sequences.last() {
                self.booked.fetch_max(last, Ordering::AcqRel);
            }
        }
        self.queued.fetch_add(count, Ordering::Relaxed);
        wake.notify_one();
        for (push, sequence) in batch.into_iter().zip(sequences) {
            // A caller that went away leaves its write queued.
            let _ = push.answer.send(Ok(sequence));
        }
    }

    /// Settles a replayed write (see [`Outbox::settled`]); blocking.
    fn settled(
        &self,
        store: &dyn Store,
        queued: &Queued,
        duplicate: bool,
        superseded: bool,
    ) -> Result<()> {
        store.queue_remove(OUTBOX, queued.sequence, None)?;
        self.uncover(queued.sequence, &queued.entry);
        self.replayed.fetch_add(1, Ordering::Relaxed);
        if superseded {
            self.superseded.fetch_add(1, Ordering::Relaxed);
        }
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        self.after_removal(store, queued.size)
    }

    /// Moves a write to the dead letters (see [`Outbox::bury`]); blocking.
    fn bury(
        &self,
        store: &dyn Store,
        sequence: u64,
        entry: Option<&v1::OutboxEntry>,
        reason: String,
    ) -> Result<()> {
        // Its stored size leaves the byte count (none when it is gone already).
        let size = store
            .queue_get(OUTBOX, sequence)?
            .map_or(0, |raw| raw.len() as u64);
        let dead = match entry {
            Some(entry) => {
                self.uncover(sequence, entry);
                v1::OutboxEntry {
                    reason,
                    ..entry.clone()
                }
            }
            None => v1::OutboxEntry {
                reason,
                ..Default::default()
            },
        };
        store.queue_remove(
            OUTBOX,
            sequence,
            Some((DEAD_LETTERS, &dead.encode_to_vec())),
        )?;
        self.dead.fetch_add(1, Ordering::Relaxed);
        self.after_removal(store, size)
    }

    /// Counts a write out (its stored `size` too) and finds the new oldest one.
    fn after_removal(&self, store: &dyn Store, size: u64) -> Result<()> {
        let _books = self.books.lock();
        let _ = self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                Some(d.saturating_sub(1))
            });
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(size))
            });
        let oldest = store
            .queue_read(OUTBOX, 1)?
            .first()
            .and_then(|(_, raw)| v1::OutboxEntry::decode(raw.as_slice()).ok())
            .map_or(0, |e| e.queued_ms.max(1));
        self.oldest_ms.store(oldest, Ordering::Release);
        Ok(())
    }
}

/// The writer: takes the first admitted write, then every one that came
/// meanwhile (up to a batch's bounds), and keeps them with one fsync; until the
/// outbox is dropped and its channel closes.
fn write_loop(
    state: Arc<State>,
    wake: Arc<Notify>,
    store: Weak<dyn Store>,
    pushes: mpsc::Receiver<Push>,
) {
    while let Ok(first) = pushes.recv() {
        let mut bytes = first.encoded.len() as u64;
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX_WRITES && bytes < GROUP_MAX_BYTES {
            match pushes.try_recv() {
                Ok(push) => {
                    bytes += push.encoded.len() as u64;
                    batch.push(push);
                }
                Err(_) => break,
            }
        }
        state.commit(&store, &wake, batch, bytes);
    }
}

/// A dead letter as the admin listener shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// Its place in the dead-letter list.
    pub sequence: u64,
    /// The namespace it wrote to.
    pub namespace: String,
    /// The keys it wrote (lossy UTF-8).
    pub keys: Vec<String>,
    /// The write id, `node:incarnation:sequence`.
    pub write_id: String,
    /// When it was accepted, Unix ms.
    pub queued_ms: u64,
    /// Why it can never succeed.
    pub reason: String,
}

/// The dead letters, oldest first (at most `max`).
pub fn dead_letters(store: &dyn Store, max: usize) -> Result<Vec<DeadLetter>> {
    Ok(store
        .queue_read(DEAD_LETTERS, max)?
        .into_iter()
        .map(|(sequence, raw)| {
            let entry = v1::OutboxEntry::decode(raw.as_slice()).unwrap_or_default();
            let header = entry.header.unwrap_or_default();
            let write_id = header
                .write_id
                .map(|w| format!("{}:{}:{}", w.node_id, w.incarnation, w.sequence))
                .unwrap_or_default();
            DeadLetter {
                sequence,
                namespace: header.namespace,
                keys: entry
                    .mutations
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.key).into_owned())
                    .collect(),
                write_id,
                queued_ms: entry.queued_ms,
                reason: entry.reason,
            }
        })
        .collect())
}

/// The keys of a queued write (for the write marks of its replay).
pub(crate) fn keys_of(entry: &v1::OutboxEntry) -> Vec<Bytes> {
    entry.mutations.iter().map(|m| m.key.clone()).collect()
}

#[cfg(test)]
mod tests;

/// Runs store work (an fsynced removal) on a blocking thread.
async fn off_the_reactor(work: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("outbox task failed: {e}")))?
}
