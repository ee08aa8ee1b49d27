//! The hot tier: values held in memory in front of the store, bounded by bytes.
//!
//! A hit clones a [`Record`], which shares its value's `Bytes`: no value is copied.
//!
//! # Staying correct under concurrent writes
//! A reader that missed fills the tier with what it read from the store, but the
//! store may have changed between its read and its fill. Every key maps to one of
//! [`STRIPES`] counters; a writer bumps its key's counter when it installs the new
//! record, and a reader's fill succeeds only if the counter has not moved since
//! before it read the store. Both happen under the map's lock for the key, so once a
//! writer has installed its record (before the write is answered), no fill with an
//! older read can replace it.
//!
//! # Eviction
//! Second chance (CLOCK): a hit marks its entry; when the tier is over budget, one
//! thread sweeps the map, clearing marks and evicting unmarked entries until the
//! tier is under 90% of its budget.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use edgekv_kv::Record;
use edgekv_kv::limits::MAX_KEY_BYTES;
use edgekv_store::keys::NAMESPACE_ID_LEN;

/// The number of write counters keys are spread over.
const STRIPES: usize = 1024;
/// Bytes counted for each entry beyond its key, value and metadata: the map slot
/// (record fields and `Bytes` handles, about 136 B by layout) at the map's load factor, the
/// key's own allocation and the allocator's headers. Measured, not derived:
/// `make bench-memory` found 458 B resident per hot key of 14 + 100 B (1,000,000
/// keys, benches/RESULTS.md), so the budget counts what memory really holds.
const ENTRY_OVERHEAD: usize = 320;

/// The hot tier of an edge.
#[derive(Debug)]
pub struct HotTier {
    map: DashMap<Box<[u8]>, Slot, foldhash::fast::RandomState>,
    stripes: Box<[AtomicU64]>,
    capacity: usize,
    max_entry: usize,
    bytes: AtomicUsize,
    evicting: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    record: Record,
    weight: usize,
    referenced: AtomicBool,
}

/// Taken before a store read; lets the fill that follows detect a racing write.
#[derive(Debug, Clone, Copy)]
pub struct FillToken {
    stripe: usize,
    version: u64,
}

/// Counters of the hot tier, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that went to the store.
    pub misses: u64,
    /// Entries evicted to stay within budget.
    pub evictions: u64,
    /// Entries held.
    pub entries: usize,
    /// Bytes held, as counted against the budget.
    pub bytes: usize,
    /// The budget.
    pub capacity: usize,
}

/// The composite key of `(namespace, key)`, built on the stack.
struct KeyBuf {
    buf: [u8; NAMESPACE_ID_LEN + MAX_KEY_BYTES],
    len: usize,
}

/// Runs `f` on the composite key of `(namespace, key)`, built in place on the
/// stack for the keys of the hot path (no 544-byte buffer moved around on every
/// lookup), on the heap for long ones; `None` for a malformed namespace or key.
fn with_key<R>(namespace: &str, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    /// Composite keys up to this long are built on the stack.
    const SHORT: usize = 128;
    let len = namespace.len() + key.len();
    if namespace.len() != NAMESPACE_ID_LEN || len > NAMESPACE_ID_LEN + MAX_KEY_BYTES {
        return None;
    }
    if len <= SHORT {
        let mut buf = [0u8; SHORT];
        buf[..NAMESPACE_ID_LEN].copy_from_slice(namespace.as_bytes());
        buf[NAMESPACE_ID_LEN..len].copy_from_slice(key);
        Some(f(&buf[..len]))
    } else {
        Some(f(&[namespace.as_bytes(), key].concat()))
    }
}

impl KeyBuf {
    fn new(namespace: &str, key: &[u8]) -> Option<Self> {
        let len = namespace.len() + key.len();
        if namespace.len() != NAMESPACE_ID_LEN || len > NAMESPACE_ID_LEN + MAX_KEY_BYTES {
            return None;
        }
        let mut buf = [0; NAMESPACE_ID_LEN + MAX_KEY_BYTES];
        buf[..NAMESPACE_ID_LEN].copy_from_slice(namespace.as_bytes());
        buf[NAMESPACE_ID_LEN..len].copy_from_slice(key);
        Some(KeyBuf { buf, len })
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl HotTier {
    /// A hot tier holding at most `capacity` bytes. Entries larger than an eighth of
    /// it are not held, so one large value cannot flush the tier.
    pub fn new(capacity: usize) -> Self {
        HotTier {
            map: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            capacity,
            max_entry: capacity / 8,
            bytes: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Returns the record held for a key, if any (tombstones and expired records
    /// included: the caller decides what to serve).
    pub fn get(&self, namespace: &str, key: &[u8]) -> Option<Record> {
        let found = with_key(namespace, key, |k| {
            self.map.get(k).map(|slot| {
                if !slot.referenced.load(Ordering::Relaxed) {
                    slot.referenced.store(true, Ordering::Relaxed);
                }
                slot.record.clone()
            })
        })
        .flatten();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Whether a key is held, without counting a hit or a miss.
    pub fn contains(&self, namespace: &str, key: &[u8]) -> bool {
        KeyBuf::new(namespace, key).is_some_and(|k| self.map.contains_key(k.as_slice()))
    }

    /// Takes the token a fill after a store read must present.
    pub fn fill_token(&self, namespace: &str, key: &[u8]) -> FillToken {
        let stripe = KeyBuf::new(namespace, key).map_or(0, |k| self.stripe(k.as_slice()));
        FillToken {
            stripe,
            version: self.stripes[stripe].load(Ordering::Acquire),
        }
    }

    /// Holds a record read from the store, unless a write to its key was installed
    /// since `token` was taken, or a newer revision is already held.
    pub fn fill(&self, namespace: &str, key: &[u8], record: Record, token: FillToken) {
        let Some(k) = KeyBuf::new(namespace, key) else {
            return;
        };
        let weight = Self::weight(k.len, &record);
        if weight > self.max_entry {
            return;
        }
        let entry = self.map.entry(k.as_slice().into());
        if self.stripes[token.stripe].load(Ordering::Acquire) != token.version {
            return;
        }
        match entry {
            Entry::Occupied(mut held) => {
                if held.get().record.revision < record.revision {
                    let old = std::mem::replace(held.get_mut(), Slot::new(record, weight));
                    self.account(weight, old.weight);
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Slot::new(record, weight));
                self.account(weight, 0);
            }
        }
        self.evict_if_over();
    }

    /// Installs the record a write just stored; no earlier read can replace it.
    pub fn update(&self, namespace: &str, key: &[u8], record: Record) {
        let Some(k) = KeyBuf::new(namespace, key) else {
            return;
        };
        let weight = Self::weight(k.len, &record);
        let entry = self.map.entry(k.as_slice().into());
        let stripe = self.stripe(k.as_slice());
        self.stripes[stripe].fetch_add(1, Ordering::AcqRel);
        if weight > self.max_entry {
            if let Entry::Occupied(held) = entry {
                let (_, old) = held.remove_entry();
                self.account(0, old.weight);
            }
            return;
        }
        match entry {
            Entry::Occupied(mut held) => {
                let old = std::mem::replace(held.get_mut(), Slot::new(record, weight));
                self.account(weight, old.weight);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Slot::new(record, weight));
                self.account(weight, 0);
            }
        }
        self.evict_if_over();
    }

    /// Drops every entry of a namespace (it was deleted).
    pub fn remove_namespace(&self, namespace: &str) {
        // Bump every stripe first: a fill that read the namespace before it was
        // deleted must not land after the sweep.
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        let mut freed = 0;
        self.map.retain(|k, slot| {
            let keep = !k.starts_with(namespace.as_bytes());
            if !keep {
                freed += slot.weight;
            }
            keep
        });
        self.account(0, freed);
    }

    /// Drops every entry (the edge resynced from a snapshot).
    pub fn clear(&self) {
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        let mut freed = 0;
        self.map.retain(|_, slot| {
            freed += slot.weight;
            false
        });
        self.account(0, freed);
    }

    /// The tier's counters.
    pub fn stats(&self) -> HotStats {
        HotStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.map.len(),
            bytes: self.bytes.load(Ordering::Relaxed),
            capacity: self.capacity,
        }
    }

    fn weight(key_len: usize, record: &Record) -> usize {
        key_len + record.weight() + ENTRY_OVERHEAD
    }

    fn stripe(&self, key: &[u8]) -> usize {
        (self.map.hasher().hash_one(key) as usize) % STRIPES
    }

    fn account(&self, added: usize, removed: usize) {
        if added >= removed {
            self.bytes.fetch_add(added - removed, Ordering::Relaxed);
        } else {
            self.bytes.fetch_sub(removed - added, Ordering::Relaxed);
        }
    }

    fn evict_if_over(&self) {
        if self.bytes.load(Ordering::Relaxed) <= self.capacity
            || self.evicting.swap(true, Ordering::Acquire)
        {
            return;
        }
        let target = self.capacity / 10 * 9;
        // Two sweeps: the first may only clear marks.
        for _ in 0..2 {
            let mut freed = 0;
            let mut evicted = 0;
            let mut over = self.bytes.load(Ordering::Relaxed).saturating_sub(target);
            self.map.retain(|_, slot| {
                if over == 0 {
                    return true;
                }
                if slot.referenced.swap(false, Ordering::Relaxed) {
                    return true;
                }
                over = over.saturating_sub(slot.weight);
                freed += slot.weight;
                evicted += 1;
                false
            });
            self.account(0, freed);
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
            if self.bytes.load(Ordering::Relaxed) <= target {
                break;
            }
        }
        self.evicting.store(false, Ordering::Release);
    }
}

impl Slot {
    fn new(record: Record, weight: usize) -> Self {
        Slot {
            record,
            weight,
            referenced: AtomicBool::new(false),
        }
    }
}

#[cfg(test)]
mod tests;
