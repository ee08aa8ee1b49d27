//! The outbox: writes that no build could take, kept in the edge's store (fsynced)
//! and replayed in order once a build answers again.
//!
//! A queued write is answered `202 Accepted` and is visible at this edge at once:
//! its records sit in an overlay that reads consult before anything else, until
//! its replay is settled. A replay carries the write's original id (so a write the
//! origin did apply before its answer was lost is applied once) and its original
//! hybrid-logical-clock stamp with `replay = true`, so it competes with newer
//! writes instead of overwriting them: the origin records it as `superseded` when
//! the key has moved on. A write that can never succeed (a client fault surfacing
//! late, such as a namespace deleted meanwhile) moves to the dead-letter list and
//! does not hold up the rest.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use edgekv_kv::Record;
use edgekv_proto::v1;
use edgekv_store::{Store, keys};
use prost::Message as _;

use crate::{Error, Result};

/// The queue of writes waiting for a build.
pub(crate) const OUTBOX: &str = "outbox";
/// The queue of writes that can never succeed.
pub(crate) const DEAD_LETTERS: &str = "dead_letters";

/// The outbox's counters and the overlay of queued records.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Writes waiting.
    depth: AtomicU64,
    /// When the oldest waiting write was queued, Unix ms (0: none waiting).
    oldest_ms: AtomicU64,
    queued: AtomicU64,
    replayed: AtomicU64,
    superseded: AtomicU64,
    duplicates: AtomicU64,
    dead: AtomicU64,
    /// Queued records by composite key, with the outbox sequence that wrote them;
    /// read before the hot tier while any write waits.
    overlay: DashMap<Box<[u8]>, (u64, Record)>,
    /// Woken when a write is queued, so replay starts without waiting for a tick.
    pub(crate) wake: tokio::sync::Notify,
    /// Orders the bound check, the push and the depth/oldest bookkeeping against
    /// removals, so the figures stay consistent with the queue.
    books: parking_lot::Mutex<()>,
}

/// A snapshot of the outbox's figures, for `/metrics` and the admin listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Writes waiting.
    pub depth: u64,
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
}

impl Outbox {
    /// Loads the counters and the overlay from what the store holds (after a
    /// restart the waiting writes are visible again at once).
    pub(crate) fn load(store: &dyn Store) -> Result<Self> {
        let outbox = Outbox::default();
        let waiting = store.queue_read(OUTBOX, usize::MAX)?;
        for (sequence, raw) in &waiting {
            match v1::OutboxEntry::decode(raw.as_slice()) {
                Ok(entry) => {
                    if outbox.oldest_ms.load(Ordering::Relaxed) == 0 {
                        outbox.oldest_ms.store(entry.queued_ms, Ordering::Relaxed);
                    }
                    outbox.cover(*sequence, &entry);
                }
                Err(err) => {
                    tracing::error!(sequence, error = %err, "an outbox entry cannot be decoded; it will move to the dead letters")
                }
            }
        }
        outbox.depth.store(waiting.len() as u64, Ordering::Relaxed);
        outbox
            .dead
            .store(store.queue_len(DEAD_LETTERS)?, Ordering::Relaxed);
        Ok(outbox)
    }

    /// Whether any write waits (the hot path checks this before the overlay).
    pub fn is_empty(&self) -> bool {
        self.depth.load(Ordering::Acquire) == 0
    }

    /// The record a waiting write left for a key, if any.
    pub(crate) fn overlay(&self, namespace: &str, key: &[u8]) -> Option<Record> {
        if self.overlay.is_empty() {
            return None;
        }
        self.overlay
            .get(keys::data_key(namespace, key).as_slice())
            .map(|held| held.1.clone())
    }

    /// Puts a queued write's records in the overlay.
    fn cover(&self, sequence: u64, entry: &v1::OutboxEntry) {
        let Some(header) = &entry.header else { return };
        for mutation in &entry.mutations {
            let record = match &mutation.put {
                Some(value) => Record {
                    hlc: header.hlc,
                    ..Record::value(
                        value.value.clone(),
                        value.metadata.clone(),
                        value.expiration,
                    )
                },
                None => Record {
                    hlc: header.hlc,
                    ..Record::tombstone(None)
                },
            };
            let composite: Box<[u8]> = keys::data_key(&header.namespace, &mutation.key).into();
            self.overlay.insert(composite, (sequence, record));
        }
    }

    /// Takes a settled write's records out of the overlay, unless a later queued
    /// write of the same key holds them.
    fn uncover(&self, sequence: u64, entry: &v1::OutboxEntry) {
        let Some(header) = &entry.header else { return };
        for mutation in &entry.mutations {
            let composite = keys::data_key(&header.namespace, &mutation.key);
            self.overlay
                .remove_if(composite.as_slice(), |_, (held, _)| *held == sequence);
        }
    }

    /// Takes keys out of the overlay where a write a build answered overtook the
    /// queued one (its record's stamp is not older), so reads here see it; a queued
    /// write with a newer stamp stays.
    pub(crate) fn overtaken(&self, namespace: &str, keys: &[Bytes], records: &[Record]) {
        if self.overlay.is_empty() {
            return;
        }
        for (key, record) in keys.iter().zip(records) {
            self.overlay.remove_if(
                keys::data_key(namespace, key).as_slice(),
                |_, (_, queued)| queued.hlc <= record.hlc,
            );
        }
    }

    /// Queues a write (fsynced before it returns) and makes it visible at once; 503
    /// past `bound` waiting writes.
    pub(crate) fn push(
        &self,
        store: &dyn Store,
        bound: u64,
        entry: v1::OutboxEntry,
    ) -> Result<u64> {
        let _books = self.books.lock();
        if self.depth.load(Ordering::Acquire) >= bound {
            return Err(Error::Unavailable(format!(
                "origin unavailable and this edge's outbox is full ({bound} writes wait); retry later"
            )));
        }
        let sequence = store.queue_push(OUTBOX, &entry.encode_to_vec())?;
        self.cover(sequence, &entry);
        let _ = self.oldest_ms.compare_exchange(
            0,
            entry.queued_ms,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.depth.fetch_add(1, Ordering::AcqRel);
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(sequence)
    }

    /// The oldest waiting writes, in order; an entry that cannot be decoded comes
    /// back as `Err` so the caller moves it to the dead letters.
    pub(crate) fn head(
        &self,
        store: &dyn Store,
        max: usize,
    ) -> Result<Vec<std::result::Result<Queued, Undecodable>>> {
        Ok(store
            .queue_read(OUTBOX, max)?
            .into_iter()
            .map(
                |(sequence, raw)| match v1::OutboxEntry::decode(raw.as_slice()) {
                    Ok(entry) => Ok(Queued { sequence, entry }),
                    Err(_) => Err((sequence, raw)),
                },
            )
            .collect())
    }

    /// Settles a replayed write: out of the queue and the overlay.
    pub(crate) fn settled(
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
        self.after_removal(store)
    }

    /// Moves a write that can never succeed to the dead letters, with the reason.
    pub(crate) fn bury(
        &self,
        store: &dyn Store,
        sequence: u64,
        entry: Option<&v1::OutboxEntry>,
        reason: String,
    ) -> Result<()> {
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
        self.after_removal(store)
    }

    fn after_removal(&self, store: &dyn Store) -> Result<()> {
        let _books = self.books.lock();
        self.depth.fetch_sub(1, Ordering::AcqRel);
        let oldest = store
            .queue_read(OUTBOX, 1)?
            .first()
            .and_then(|(_, raw)| v1::OutboxEntry::decode(raw.as_slice()).ok())
            .map_or(0, |e| e.queued_ms.max(1));
        self.oldest_ms.store(oldest, Ordering::Release);
        Ok(())
    }

    /// The figures now.
    pub fn stats(&self, now_ms: u64) -> OutboxStats {
        let oldest = self.oldest_ms.load(Ordering::Acquire);
        let depth = self.depth.load(Ordering::Acquire);
        OutboxStats {
            depth,
            oldest_age_ms: if depth == 0 || oldest == 0 {
                0
            } else {
                now_ms.saturating_sub(oldest)
            },
            queued: self.queued.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            superseded: self.superseded.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            dead_letters: self.dead.load(Ordering::Relaxed),
        }
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
    /// The write id, `node:sequence`.
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
                .map(|w| format!("{}:{}", w.node_id, w.sequence))
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
