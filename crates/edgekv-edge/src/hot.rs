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
//! # Layout
//! The map holds each composite key inline in its slot up to [`INLINE_KEY`] bytes,
//! and each value packed into an allocation of its own with its reference count
//! beside the bytes ([`pack`]). A hit on a key not in the CPU's caches then
//! touches the slot and the value's one allocation — not also a key allocation and
//! a separate reference count. Packing also means a held value never keeps a
//! larger buffer alive (the request body or store read it arrived in).
//!
//! # Eviction
//! Second chance (CLOCK): a hit marks its entry; when the tier is over budget, one
//! thread sweeps the map, clearing marks and evicting unmarked entries until the
//! tier is under 90% of its budget.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
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
    map: DashMap<HotKey, Slot, foldhash::fast::RandomState>,
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

/// Composite keys up to this long are held inline in their map slot.
pub const INLINE_KEY: usize = 62;

/// A composite key as the map holds it: inline up to [`INLINE_KEY`] bytes (a
/// namespace id and a key of up to 30 bytes), else on the heap. Hashes and
/// compares as its bytes, so the map is probed with a plain `&[u8]`.
#[derive(Debug)]
enum HotKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl HotKey {
    fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            HotKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            HotKey::Heap(key.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            HotKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            HotKey::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for HotKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for HotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for HotKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for HotKey {}

/// A value's bytes copied into one allocation with its reference count ahead of
/// them, in size classes up to 512 bytes; longer values get an exact-size buffer of
/// their own. Either way the held value shares no larger buffer.
fn pack(value: &Bytes) -> Bytes {
    match value.len() {
        0 => Bytes::new(),
        1..=32 => packed::<32>(value),
        33..=64 => packed::<64>(value),
        65..=96 => packed::<96>(value),
        97..=128 => packed::<128>(value),
        129..=192 => packed::<192>(value),
        193..=256 => packed::<256>(value),
        257..=384 => packed::<384>(value),
        385..=512 => packed::<512>(value),
        _ => Bytes::copy_from_slice(value),
    }
}

/// The bytes a packed value of `len` bytes occupies: its size class and the
/// header ahead of it (reference count, drop function, length).
fn packed_size(len: usize) -> usize {
    match len {
        0 => 0,
        1..=512 => {
            24 + [32, 64, 96, 128, 192, 256, 384, 512]
                .into_iter()
                .find(|&c| len <= c)
                .unwrap_or(512)
        }
        _ => len,
    }
}

/// The owner of a packed value: its length and bytes, inline.
struct Packed<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Packed<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn packed<const N: usize>(value: &[u8]) -> Bytes {
    let mut bytes = [0; N];
    bytes[..value.len()].copy_from_slice(value);
    Bytes::from_owner(Packed {
        len: value.len(),
        bytes,
    })
}

/// The record as the hot tier holds it: value and metadata packed.
fn packed_record(record: Record) -> Record {
    Record {
        value: pack(&record.value),
        metadata: record.metadata.as_ref().map(pack),
        ..record
    }
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
        let record = packed_record(record);
        let entry = self.map.entry(HotKey::new(k.as_slice()));
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
        let record = if weight > self.max_entry {
            record
        } else {
            packed_record(record)
        };
        let entry = self.map.entry(HotKey::new(k.as_slice()));
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
            let keep = !k.as_slice().starts_with(namespace.as_bytes());
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
        let key = if key_len <= INLINE_KEY { 0 } else { key_len };
        let metadata = record.metadata.as_ref().map_or(0, |m| packed_size(m.len()));
        key + packed_size(record.value.len()) + metadata + ENTRY_OVERHEAD
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
