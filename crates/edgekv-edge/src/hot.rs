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
//! Each entry is one allocation of exactly its size ([`pack`]): a reference
//! count, a head of lengths, flags, expiration and CLOCK mark, the length of
//! the packed bytes, then the packed bytes — the composite key, the value, the
//! metadata, the revision and the stamp: 32 bytes ahead of the packed bytes.
//! The map's slot is a one-word pointer to the entry (a [`ThinArc`]: the length
//! is in the allocation, not beside the pointer). The composite key is the
//! namespace's index — four bytes the tier gives each namespace on first use
//! ([`HotTier::intern`]) — and the key: not the namespace's 32-character id,
//! which every entry would repeat (and every lookup hash and compare).
//!
//! A hit on a key not in the CPU's caches waits for the slot, then for the
//! entry, whose lines — count, head, key and value — are all requested at once
//! ([`Slot::fetch`]) before the key is compared. The value is what the answer
//! sends anyway: the kernel then copies it from cache. With 10,000 keys the
//! slot arrays are 128 KiB (16,384 slots), against 1 MiB when a slot was a
//! whole cache line holding the head. A profile of the edge under load with
//! 16-byte slots (`perf`, 10,000 hot keys, benches/RESULTS.md) put 0.64 µs a
//! request in the lookup and the kernel's copy of the value, against 0.80 µs
//! with whole-line slots. An answer sends the value in place ([`HeldBytes`],
//! counting a reference to the entry); a [`Record`] read from the tier boxes a
//! small owner for each of its `Bytes`. The cost: an eviction sweep reads each
//! entry it passes (its mark and length live in the entry, not in the slot
//! array). Packing also means a held value never keeps a larger buffer alive
//! (the request body or store read it arrived in).
//!
//! # Admission
//! Until the tier is nearly full, every record read from the local store is held.
//! From then on such a record is held only on its key's second miss within a
//! window (a doorkeeper, as in TinyLFU): a workload that reads more distinct
//! stored keys than fit — a scan, a uniform spread over a large keyspace — stops
//! churning the tier (a fill and an eviction on every read, for entries evicted
//! before they are read again), while a key read twice soon is held as before.
//! Records installed by [`HotTier::update`] — writes, the change feed, answers read
//! through from a build — are always held: they must replace what is there.
//!
//! # Eviction
//! Second chance (CLOCK): a hit marks its entry; when the tier is over budget, one
//! thread sweeps on from where the last sweep stopped, a shard at a time, clearing
//! marks and evicting unmarked entries until the tier is under 90% of its budget.
//! A sweep runs in the write (or the fill after a read's miss) that went over
//! budget, and visits at most a
//! sixteenth of the shards ([`SWEEP_SHARDS`]); the writes after it go on with it
//! until the tier is under 90%. So no one write waits for the whole tier: when
//! every entry was read since the last sweep, the marks of all of them must be
//! cleared before anything can be evicted, which at 1,200,000 entries took one
//! write 56–85 ms (`make bench-sweep`). Past its budget by an eighth (the largest
//! entry held), the tier sweeps as far as it must in one write. Evicted entries
//! are unlinked under each shard's lock and freed after the sweep, outside the
//! locks: freeing, not unlinking, is most of an evicting write's time, so a
//! write that evicted [`FREE_ELSEWHERE`] entries or more hands them to a thread
//! of its own when it has room for them (one batch may wait while another is
//! freed: [`free`]); smaller batches, and a third one, the write frees itself.

mod free;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes};
use edgekv_kv::Record;
use edgekv_kv::limits::MAX_KEY_BYTES;
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use triomphe::{HeaderWithLength, ThinArc};

/// The number of write counters keys are spread over.
const STRIPES: usize = 1024;
/// Bytes counted for each entry beyond its allocator's chunk ([`held_size`]):
/// its slot in the map (8 B) and control byte, at the map's load factor.
/// Measured, not derived, so the budget counts what memory really holds: `make
/// bench-memory` found 183–187 B resident per hot key of 14 + 100 B (1,000,000
/// keys, benches/RESULTS.md), whose entry takes a chunk of 176 B. It was 216 B
/// per key with 16-byte slots and the bytes in size classes of 16, and 304 B
/// with slots of a whole cache line.
const MAP_OVERHEAD: usize = 8;

/// The hot tier of an edge.
#[derive(Debug)]
pub struct HotTier {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
    /// The CLOCK hand: the shard the next eviction sweep starts at.
    hand: AtomicUsize,
    stripes: Box<[AtomicU64]>,
    /// Bumped before entries are dropped wholesale ([`HotTier::clear`], a
    /// namespace's purge): see [`HotTier::update_unless_dropped`].
    drops: AtomicU64,
    capacity: usize,
    max_entry: usize,
    bytes: AtomicUsize,
    evicting: AtomicBool,
    /// A sweep stopped at its bound before the tier was under 90%: the next
    /// write goes on with it.
    sweep_owed: AtomicBool,
    doorkeeper: Doorkeeper,
    evictions: AtomicU64,
    /// Read on every lookup by namespace id without a lock; replaced whole, under
    /// `indexing`, when a namespace gets or loses its index (rarely).
    namespaces: ArcSwap<Namespaces>,
    indexing: Mutex<()>,
    /// Frees what sweeps evict.
    freer: free::Freer<Slot>,
}

/// A namespace as the tier's keys name it: a number given on its first use
/// ([`HotTier::intern`]), kept until the namespace is deleted for good
/// ([`HotTier::forget_namespace`]), and never given to another namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceIndex(u32);

/// The bytes of a [`NamespaceIndex`] at the head of a composite key.
const INDEX_LEN: usize = 4;

/// The namespaces the tier has indexed, by id.
#[derive(Debug, Default, Clone)]
struct Namespaces {
    by_id: HashMap<Box<str>, NamespaceIndex, foldhash::fast::RandomState>,
    /// The index the next new namespace gets.
    next: u32,
}

/// The most shards one sweep visits, unless the tier is past its hard limit.
const SWEEP_SHARDS: usize = SHARDS / 16;

/// Fewer evicted entries than this are freed by the write that unlinked them:
/// tens of microseconds of frees, not worth waking the freeing thread for.
const FREE_ELSEWHERE: usize = 256;

/// The number of shards the map is split into, each under its own lock. Also the
/// grain of the CLOCK hand: a sweep visits whole shards, from where the last
/// one stopped.
const SHARDS: usize = 64;

/// One shard of the map, on cache lines of its own, with the hit and miss counts
/// of its keys: a lookup writes the lines its lock is on anyway, and lookups on
/// different cores count in different places.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    /// Entries by the hash of their composite key, the one hash a lookup takes:
    /// it also picks the shard.
    map: RwLock<HashTable<Slot>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// An entry of the tier as the map holds it: one word, pointing at its
/// allocation.
struct Slot(Entry);

/// A record and its composite key in one allocation of exactly their size: the
/// reference count, the head, the length of the bytes, then the packed bytes
/// (`key | value | metadata | revision | hlc`); absent options are flags.
type Entry = ThinArc<Head, u8>;

/// What an entry says of its packed bytes, and its CLOCK mark.
struct Head {
    expiration: u64,
    value_len: u32,
    key_len: u16,
    flags: u8,
    referenced: AtomicBool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = self.head();
        f.debug_struct("Slot")
            .field("key_len", &head.key_len)
            .field("value_len", &head.value_len)
            .field("len", &self.bytes().len())
            .field("flags", &head.flags)
            .finish_non_exhaustive()
    }
}

/// Part of a held entry's bytes (a value, say), keeping the entry alive: a
/// [`Buf`] an answer's body sends without the allocation a [`Bytes`] of it
/// takes ([`HeldBytes::into_bytes`]).
pub struct HeldBytes {
    entry: Entry,
    start: u32,
    end: u32,
}

impl HeldBytes {
    /// The bytes as [`Bytes`], sharing the entry (one small allocation).
    pub fn into_bytes(self) -> Bytes {
        if self.start == self.end {
            return Bytes::new();
        }
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for HeldBytes {
    fn as_ref(&self) -> &[u8] {
        &self.entry.slice[self.start as usize..self.end as usize]
    }
}

impl std::ops::Deref for HeldBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

impl PartialEq for HeldBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Buf for HeldBytes {
    fn remaining(&self) -> usize {
        (self.end - self.start) as usize
    }

    fn chunk(&self) -> &[u8] {
        self.as_ref()
    }

    fn advance(&mut self, cnt: usize) {
        assert!(
            cnt <= self.remaining(),
            "advanced past the end of held bytes"
        );
        // At most `remaining`, a u32.
        self.start += cnt as u32;
    }
}

impl std::fmt::Debug for HeldBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldBytes")
            .field("len", &self.remaining())
            .finish_non_exhaustive()
    }
}

/// A value as an answer's body sends it: in place in the hot tier, or any bytes.
#[derive(Debug)]
pub enum ValueBuf {
    /// Shared with the hot tier's entry.
    Held(HeldBytes),
    /// Anything else (a store read, a build's answer, an envelope).
    Bytes(Bytes),
}

impl From<Bytes> for ValueBuf {
    fn from(bytes: Bytes) -> Self {
        ValueBuf::Bytes(bytes)
    }
}

impl Buf for ValueBuf {
    fn remaining(&self) -> usize {
        match self {
            ValueBuf::Held(held) => held.remaining(),
            ValueBuf::Bytes(bytes) => bytes.remaining(),
        }
    }

    fn chunk(&self) -> &[u8] {
        match self {
            ValueBuf::Held(held) => held.chunk(),
            ValueBuf::Bytes(bytes) => bytes.chunk(),
        }
    }

    fn advance(&mut self, cnt: usize) {
        match self {
            ValueBuf::Held(held) => held.advance(cnt),
            ValueBuf::Bytes(bytes) => bytes.advance(cnt),
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        match self {
            // Shared, not copied, as `Bytes` does it.
            ValueBuf::Bytes(bytes) => bytes.copy_to_bytes(len),
            ValueBuf::Held(held) => held.copy_to_bytes(len),
        }
    }
}

/// The bytes after the metadata: the revision and the stamp, little-endian.
const TRAILER: usize = 16;

const TOMBSTONE: u8 = 1;
const METADATA: u8 = 2;
const EXPIRATION: u8 = 4;

/// A record held by the tier, seen in place ([`HotTier::read`]).
#[derive(Debug, Clone, Copy)]
pub struct Held<'a>(&'a Slot);

impl Held<'_> {
    /// Whether the record may be served at `now_s`, by the rule every copy of a
    /// record follows ([`edgekv_kv::record::live`]).
    pub fn is_live(&self, now_s: u64) -> bool {
        let head = self.0.head();
        let expiration = (head.flags & EXPIRATION != 0).then_some(head.expiration);
        edgekv_kv::record::live(head.flags & TOMBSTONE != 0, expiration, now_s)
    }

    /// The value, sharing the held bytes.
    pub fn value(&self) -> HeldBytes {
        self.0
            .part(usize::from(self.0.head().key_len), self.0.value_end())
    }
}

/// Taken before a store read; names the key's namespace and lets the fill that
/// follows detect a racing write.
#[derive(Debug, Clone, Copy)]
pub struct FillToken {
    /// `None` when the namespace could not be indexed: the fill holds nothing.
    namespace: Option<NamespaceIndex>,
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

/// What an entry's allocation holds ahead of its bytes: the reference count,
/// the head and the bytes' length.
const ENTRY_HEADER: usize = 8 + std::mem::size_of::<HeaderWithLength<Head>>();
const _: () = assert!(ENTRY_HEADER == 32);

/// An entry of a head and the bytes of `parts`, one after the other.
fn pack(head: Head, parts: &[&[u8]]) -> Entry {
    /// Bytes up to this long are put together on the stack.
    const SHORT: usize = 512;
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    if len > SHORT {
        return ThinArc::from_header_and_slice(head, &parts.concat());
    }
    let mut bytes = [0; SHORT];
    let mut at = 0;
    for part in parts {
        bytes[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    ThinArc::from_header_and_slice(head, &bytes[..len])
}

/// The bytes of the allocation [`pack`] makes for `len` packed bytes.
fn packed_size(len: usize) -> usize {
    (ENTRY_HEADER + len).next_multiple_of(8)
}

/// What an entry of `len` packed bytes costs the memory, as the budget counts
/// it: the allocator's chunk for its allocation (glibc's: an 8-byte header, in
/// steps of 16 bytes) and the map's share ([`MAP_OVERHEAD`]).
fn held_size(len: usize) -> usize {
    (packed_size(len) + 8).next_multiple_of(16).max(32) + MAP_OVERHEAD
}

/// The write counter of a key's hash.
fn stripe(hash: u64) -> usize {
    (hash as usize) % STRIPES
}

/// Matches the entry of a composite key.
fn is(key: &[u8]) -> impl Fn(&Slot) -> bool + '_ {
    move |slot| {
        slot.fetch();
        slot.key() == key
    }
}

/// Runs `f` on the composite key of `(namespace, key)`, built in place on the
/// stack for the keys of the hot path (no 516-byte buffer moved around on every
/// lookup), on the heap for long ones; `None` for a key longer than any valid one.
fn with_key<R>(namespace: NamespaceIndex, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    /// Composite keys up to this long are built on the stack.
    const SHORT: usize = 128;
    if key.len() > MAX_KEY_BYTES {
        return None;
    }
    let index = namespace.0.to_le_bytes();
    let len = INDEX_LEN + key.len();
    if len <= SHORT {
        let mut buf = [0u8; SHORT];
        buf[..INDEX_LEN].copy_from_slice(&index);
        buf[INDEX_LEN..len].copy_from_slice(key);
        Some(f(&buf[..len]))
    } else {
        Some(f(&[&index[..], key].concat()))
    }
}

impl HotTier {
    /// A hot tier of `capacity` bytes. Entries larger than an eighth of it are not
    /// held, so one large value cannot flush the tier. A sweep spread over several
    /// writes may leave it over `capacity` between them, by at most an eighth of
    /// it (its hard limit) and the entry a write adds past that.
    pub fn new(capacity: usize) -> Self {
        HotTier {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    map: RwLock::new(HashTable::new()),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            hand: AtomicUsize::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            drops: AtomicU64::new(0),
            capacity,
            max_entry: capacity / 8,
            bytes: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            sweep_owed: AtomicBool::new(false),
            doorkeeper: Doorkeeper::new(capacity),
            evictions: AtomicU64::new(0),
            namespaces: ArcSwap::default(),
            indexing: Mutex::new(()),
            freer: free::Freer::new(FREE_ELSEWHERE),
        }
    }

    /// The index of a namespace's entries, given now if it has none; `None` only
    /// once 2^32 namespaces have had one (nothing of a new one is held then). Call
    /// it for namespaces that exist: an index lasts until
    /// [`HotTier::forget_namespace`].
    pub fn intern(&self, namespace: &str) -> Option<NamespaceIndex> {
        if let Some(index) = self.index(namespace) {
            return Some(index);
        }
        let _indexing = self.indexing.lock();
        if let Some(index) = self.index(namespace) {
            return Some(index);
        }
        let mut namespaces = Namespaces::clone(&self.namespaces.load());
        let index = NamespaceIndex(namespaces.next);
        namespaces.next = namespaces.next.checked_add(1)?;
        namespaces.by_id.insert(namespace.into(), index);
        self.namespaces.store(Arc::new(namespaces));
        Some(index)
    }

    /// The index of a namespace's entries, if it has one.
    fn index(&self, namespace: &str) -> Option<NamespaceIndex> {
        self.namespaces.load().by_id.get(namespace).copied()
    }

    /// Returns the record held for a key, if any (tombstones and expired records
    /// included: the caller decides what to serve).
    pub fn get(&self, namespace: &str, key: &[u8]) -> Option<Record> {
        self.read(namespace, key, |held| held.0.record())
    }

    /// [`HotTier::get`] by the namespace's index.
    pub fn get_in(&self, namespace: NamespaceIndex, key: &[u8]) -> Option<Record> {
        self.read_in(namespace, key, |held| held.0.record())
    }

    /// Runs `f` on the record held for a key in place, under its shard's lock, and
    /// counts a hit or a miss; `None` when the key is not held.
    pub fn read<R>(&self, namespace: &str, key: &[u8], f: impl FnOnce(Held<'_>) -> R) -> Option<R> {
        match self.index(namespace) {
            Some(namespace) => self.read_in(namespace, key, f),
            None => {
                self.shards[0].misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// [`HotTier::read`] by the namespace's index. The hot read path takes what it
    /// answers with this way (a live value's bytes), with the index it remembers
    /// for the connection, and without building a [`Record`] as [`HotTier::get`]
    /// does.
    pub fn read_in<R>(
        &self,
        namespace: NamespaceIndex,
        key: &[u8],
        f: impl FnOnce(Held<'_>) -> R,
    ) -> Option<R> {
        with_key(namespace, key, |k| {
            let hash = self.hash(k);
            let shard = self.shard(hash);
            let map = shard.map.read();
            let Some(slot) = map.find(hash, is(k)) else {
                drop(map);
                shard.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if !slot.head().referenced.load(Ordering::Relaxed) {
                slot.head().referenced.store(true, Ordering::Relaxed);
            }
            let answer = f(Held(slot));
            drop(map);
            shard.hits.fetch_add(1, Ordering::Relaxed);
            Some(answer)
        })
        .unwrap_or_else(|| {
            self.shards[0].misses.fetch_add(1, Ordering::Relaxed);
            None
        })
    }

    /// Whether a key is held, without counting a hit or a miss.
    pub fn contains(&self, namespace: &str, key: &[u8]) -> bool {
        self.index(namespace)
            .and_then(|namespace| {
                with_key(namespace, key, |k| {
                    let hash = self.hash(k);
                    self.shard(hash).map.read().find(hash, is(k)).is_some()
                })
            })
            .unwrap_or(false)
    }

    /// The revision of the record held for a key, if any, without counting a hit
    /// or a miss.
    pub fn revision(&self, namespace: &str, key: &[u8]) -> Option<u64> {
        self.index(namespace).and_then(|namespace| {
            with_key(namespace, key, |k| {
                let hash = self.hash(k);
                (self.shard(hash).map.read())
                    .find(hash, is(k))
                    .map(Slot::revision)
            })
            .flatten()
        })
    }

    /// Takes the token a fill of a key after a store read must present.
    pub fn fill_token(&self, namespace: &str, key: &[u8]) -> FillToken {
        self.fill_token_in(self.intern(namespace), key)
    }

    /// [`HotTier::fill_token`] for a namespace by its index (from
    /// [`HotTier::intern`]), not looked up again. Without an index the fill that
    /// presents the token holds nothing.
    pub fn fill_token_in(&self, namespace: Option<NamespaceIndex>, key: &[u8]) -> FillToken {
        let stripe = namespace
            .and_then(|namespace| with_key(namespace, key, |k| stripe(self.hash(k))))
            .unwrap_or(0);
        FillToken {
            namespace,
            stripe,
            version: self.stripes[stripe].load(Ordering::Acquire),
        }
    }

    /// Holds a record of the key and namespace `token` was taken for, read from the
    /// store, unless a write to the key was installed since, or a newer revision is
    /// already held.
    pub fn fill(&self, key: &[u8], record: Record, token: FillToken) {
        if let Some(namespace) = token.namespace {
            with_key(namespace, key, |k| self.fill_key(k, record, token));
        }
    }

    fn fill_key(&self, k: &[u8], record: Record, token: FillToken) {
        let weight = Self::weight(k.len(), &record);
        if weight > self.max_entry {
            return;
        }
        let hash = self.hash(k);
        if self.bytes.load(Ordering::Relaxed) > self.capacity / 10 * 9
            && !self.doorkeeper.admit(hash)
        {
            return;
        }
        {
            let mut map = self.shard(hash).map.write();
            if self.stripes[token.stripe].load(Ordering::Acquire) != token.version {
                return;
            }
            match map.find_mut(hash, is(k)) {
                Some(held) => {
                    if held.revision() < record.revision {
                        let old = std::mem::replace(held, Slot::new(k, record));
                        self.account(weight, old.weight());
                    }
                }
                None => {
                    let entry = Slot::new(k, record);
                    map.insert_unique(hash, entry, |slot| self.hash(slot.key()));
                    self.account(weight, 0);
                }
            }
        }
        self.evict_if_over();
    }

    /// Installs the record a write just stored; no earlier read can replace it.
    pub fn update(&self, namespace: &str, key: &[u8], record: Record) {
        // Without an index nothing of the namespace is held, nor can be filled.
        if let Some(namespace) = self.intern(namespace) {
            with_key(namespace, key, |k| self.update_key(k, record, None));
        }
    }

    /// How many times entries were dropped wholesale so far: taken before a
    /// store write whose record [`HotTier::update_unless_dropped`] installs.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Acquire)
    }

    /// [`HotTier::update`], unless entries were dropped wholesale since `drops`
    /// was taken (a resync emptied the store and the tier meanwhile): then the
    /// key's entry is dropped instead, and its next read goes to the store. What
    /// the tier holds is thus always what the store kept, which
    /// [`crate::Edge`] relies on to skip records no newer.
    pub fn update_unless_dropped(&self, namespace: &str, key: &[u8], record: Record, drops: u64) {
        if let Some(namespace) = self.intern(namespace) {
            with_key(namespace, key, |k| self.update_key(k, record, Some(drops)));
        }
    }

    fn update_key(&self, k: &[u8], record: Record, drops: Option<u64>) {
        let weight = Self::weight(k.len(), &record);
        let hash = self.hash(k);
        {
            let mut map = self.shard(hash).map.write();
            self.stripes[stripe(hash)].fetch_add(1, Ordering::AcqRel);
            let dropped = drops.is_some_and(|taken| self.drops.load(Ordering::Acquire) != taken);
            if dropped || weight > self.max_entry {
                if let Ok(held) = map.find_entry(hash, is(k)) {
                    let (old, _) = held.remove();
                    self.account(0, old.weight());
                }
                return;
            }
            match map.find_mut(hash, is(k)) {
                Some(held) => {
                    let old = std::mem::replace(held, Slot::new(k, record));
                    self.account(weight, old.weight());
                }
                None => {
                    let entry = Slot::new(k, record);
                    map.insert_unique(hash, entry, |slot| self.hash(slot.key()));
                    self.account(weight, 0);
                }
            }
        }
        self.evict_if_over();
    }

    /// Drops every entry of a namespace that is being loaded anew (a resync
    /// deletes and puts back a cache namespace in one batch). It keeps its index:
    /// an index remembered before (a connection's, in
    /// [`crate::tokens::Admission`]) must go on reading what the namespace holds
    /// after, not be left behind while its writes are held under a new one.
    pub fn remove_namespace(&self, namespace: &str) {
        // A namespace without an index has nothing held, and no fill in flight
        // (its token would have given it one).
        if let Some(index) = self.index(namespace) {
            self.purge(index);
        }
    }

    /// Drops every entry of a namespace deleted for good, and its index, so that
    /// the tier does not keep one for every namespace it ever held. Call it once
    /// the namespace is gone from the edge's table: no read can be admitted to it
    /// any more to remember the index.
    pub fn forget_namespace(&self, namespace: &str) {
        let index = {
            let _indexing = self.indexing.lock();
            let mut namespaces = Namespaces::clone(&self.namespaces.load());
            let index = namespaces.by_id.remove(namespace);
            if index.is_some() {
                self.namespaces.store(Arc::new(namespaces));
            }
            index
        };
        match index {
            Some(index) => self.purge(index),
            // Nothing held, but a keep racing the namespace's removal must not
            // install an entry under it (it would intern it anew, unreachable).
            None => {
                self.drops.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Drops every entry under a namespace index: unlinked under each shard's
    /// lock, freed outside them.
    fn purge(&self, index: NamespaceIndex) {
        // Bump every stripe first: a fill that read the namespace before it was
        // deleted must not land after the sweep; nor a write's update.
        self.drops.fetch_add(1, Ordering::AcqRel);
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        self.sweep_owed.store(false, Ordering::Relaxed);
        let prefix = index.0.to_le_bytes();
        let mut dropped = Vec::new();
        let mut unlinked = 0;
        for shard in self.shards.iter() {
            let mut map = shard.map.write();
            dropped.extend(map.extract_if(|slot| {
                let of_namespace = slot.key().starts_with(&prefix);
                if of_namespace {
                    unlinked += slot.weight();
                }
                of_namespace
            }));
        }
        self.account(0, unlinked);
        // Freed here, after the locks: not handed to the freeing thread, which
        // would let the tier fill up again while a whole namespace (or a whole
        // tier, for `clear`) waits there to be freed.
        drop(dropped);
    }

    /// Drops every entry (the edge resynced from a snapshot); namespaces keep
    /// their indexes.
    pub fn clear(&self) {
        self.drops.fetch_add(1, Ordering::AcqRel);
        for stripe in self.stripes.iter() {
            stripe.fetch_add(1, Ordering::AcqRel);
        }
        self.sweep_owed.store(false, Ordering::Relaxed);
        let mut dropped = Vec::new();
        let mut unlinked = 0;
        for shard in self.shards.iter() {
            dropped.extend(shard.map.write().drain().inspect(|slot| {
                unlinked += slot.weight();
            }));
        }
        self.account(0, unlinked);
        // Freed here, after the locks, as `purge` does.
        drop(dropped);
    }

    /// The tier's counters.
    pub fn stats(&self) -> HotStats {
        HotStats {
            hits: self.count(|shard| &shard.hits),
            misses: self.count(|shard| &shard.misses),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.shards.iter().map(|shard| shard.map.read().len()).sum(),
            bytes: self.bytes.load(Ordering::Relaxed),
            capacity: self.capacity,
        }
    }

    /// The sum over the shards of one counter.
    fn count(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| counter(shard).load(Ordering::Relaxed))
            .sum()
    }

    fn weight(key_len: usize, record: &Record) -> usize {
        held_size(key_len + record.weight() + TRAILER)
    }

    /// The hash of a composite key.
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a key's hash: by bits its table does not use for its control
    /// bytes (the top seven) or its bucket (the low ones).
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[((hash << 7) >> (64 - SHARDS.trailing_zeros())) as usize]
    }

    fn account(&self, added: usize, removed: usize) {
        if added >= removed {
            self.bytes.fetch_add(added - removed, Ordering::Relaxed);
        } else {
            self.bytes.fetch_sub(removed - added, Ordering::Relaxed);
        }
    }

    /// Second chance from where the last sweep stopped, a shard at a time, until
    /// the tier is under 90% of its budget: each sweep visits only the shards it
    /// needs (about a tenth of the tier when few entries are marked), and at most
    /// [`SWEEP_SHARDS`] of them unless the tier is past its hard limit.
    fn evict_if_over(&self) {
        let target = self.capacity / 10 * 9;
        let bytes = self.bytes.load(Ordering::Relaxed);
        let owed = self.sweep_owed.load(Ordering::Relaxed) && bytes > target;
        if (bytes <= self.capacity && !owed) || self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        // Past the hard limit, twice round at most: the first round may only
        // clear marks.
        let hard_limit = self.capacity.saturating_add(self.capacity / 8);
        let visits = if bytes > hard_limit {
            2 * SHARDS
        } else {
            SWEEP_SHARDS
        };
        // Released however the sweep ends.
        struct Sweeping<'a>(&'a AtomicBool);
        impl Drop for Sweeping<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _sweeping = Sweeping(&self.evicting);
        // Unlinked under each shard's lock, freed after the sweep: reads of a
        // shard wait for the sweep's pass over it, not for the allocator, and
        // the write does not wait for it either when the freeing thread takes
        // the batch.
        let mut evicted: Vec<Slot> = Vec::new();
        let mut hand = self.hand.load(Ordering::Relaxed);
        for _ in 0..visits {
            let over = self.bytes.load(Ordering::Relaxed).saturating_sub(target);
            if over == 0 {
                break;
            }
            let mut left = over;
            let mut unlinked = 0;
            let before = evicted.len();
            evicted.extend(self.shards[hand].map.write().extract_if(|slot| {
                if left == 0 {
                    return false;
                }
                // Under the write lock no hit can mark it meanwhile: a load and
                // a store, not a locked swap, so that the misses of the entries
                // a sweep passes overlap.
                if slot.head().referenced.load(Ordering::Relaxed) {
                    slot.head().referenced.store(false, Ordering::Relaxed);
                    return false;
                }
                left = left.saturating_sub(slot.weight());
                unlinked += slot.weight();
                true
            }));
            self.account(0, unlinked);
            self.evictions
                .fetch_add((evicted.len() - before) as u64, Ordering::Relaxed);
            hand = (hand + 1) % SHARDS;
        }
        self.hand.store(hand, Ordering::Relaxed);
        self.sweep_owed.store(
            self.bytes.load(Ordering::Relaxed) > target,
            Ordering::Relaxed,
        );
        self.freer.free(evicted);
    }
}

/// Remembers which keys missed recently: one bit per key hash, all cleared once an
/// eighth of them are set (so about one first miss in eight or fewer is admitted
/// by a collision, which costs only a fill). At most 2^22 bits (512 KiB, cleared
/// in well under a millisecond by the fill that crosses the threshold).
#[derive(Debug)]
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    seen: AtomicUsize,
}

impl Doorkeeper {
    /// Sized for the tier: about one bit per 32 bytes of budget, 2^16 to 2^22.
    fn new(capacity: usize) -> Self {
        let bits = (capacity / 32).clamp(1 << 16, 1 << 22).next_power_of_two();
        Doorkeeper {
            bits: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            seen: AtomicUsize::new(0),
        }
    }

    /// Whether a key with this hash missed since the last clearing; marks it.
    fn admit(&self, hash: u64) -> bool {
        let bit = (hash as usize) & (self.bits.len() * 64 - 1);
        let mask = 1u64 << (bit % 64);
        if self.bits[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            return true;
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 >= self.bits.len() * 8 {
            self.seen.store(0, Ordering::Relaxed);
            for word in self.bits.iter() {
                word.store(0, Ordering::Relaxed);
            }
        }
        false
    }
}

impl Slot {
    fn new(key: &[u8], record: Record) -> Self {
        debug_assert!(record.value.len() <= u32::MAX as usize);
        debug_assert!(key.len() <= usize::from(u16::MAX));
        let metadata = record.metadata.as_deref();
        let mut flags = 0;
        for (set, flag) in [
            (record.tombstone, TOMBSTONE),
            (metadata.is_some(), METADATA),
            (record.expiration.is_some(), EXPIRATION),
        ] {
            if set {
                flags |= flag;
            }
        }
        let parts = [
            key,
            &record.value,
            metadata.unwrap_or_default(),
            &record.revision.to_le_bytes(),
            &record.hlc.to_le_bytes(),
        ];
        // Values are at most 25 MiB, and a held entry at most that plus its
        // metadata and overhead: all fit. Composite keys are at most 516 bytes.
        let head = Head {
            expiration: record.expiration.unwrap_or_default(),
            value_len: u32::try_from(record.value.len()).unwrap_or(u32::MAX),
            key_len: u16::try_from(key.len()).unwrap_or(u16::MAX),
            flags,
            referenced: AtomicBool::new(false),
        };
        Slot(pack(head, &parts))
    }

    /// What the entry counts against the budget: the same as
    /// [`HotTier::weight`] of the record it was made from.
    fn weight(&self) -> usize {
        held_size(self.bytes().len())
    }

    fn head(&self) -> &Head {
        &self.0.header.header
    }

    /// The packed bytes.
    fn bytes(&self) -> &[u8] {
        &self.0.slice
    }

    /// Requests the entry's first cache lines from memory at once — the counts,
    /// the head, the key and the value — so that a hit waits for memory once, not
    /// once for the key's line and again (in the kernel's copy of the answer) for
    /// the value's. The lines are loaded, not used: a load that misses does not
    /// hold up the instructions after it that do not need it.
    fn fetch(&self) {
        const LINE: usize = 64;
        /// The lines of longer bytes are left to be loaded as they are copied.
        const MOST: usize = 4 * LINE;
        // The count, at the start of the allocation; the bytes' length, and
        // their first bytes, on the same line or the next.
        let mut touched = ThinArc::strong_count(&self.0);
        // Where the bytes start does not wait for the line: only how far they
        // go does, and the loads below are issued on the branches' predictions.
        let bytes = self.bytes();
        let end = bytes.len().min(MOST);
        // The line the bytes start on, then each next one.
        touched ^= usize::from(bytes.first().copied().unwrap_or_default());
        let mut at = LINE - bytes.as_ptr().addr() % LINE;
        while at < end {
            touched ^= usize::from(bytes[at]);
            at += LINE;
        }
        std::hint::black_box(touched);
    }

    /// Bytes `start..end` of the packed bytes, sharing the entry.
    fn part(&self, start: usize, end: usize) -> HeldBytes {
        // Both within `len`, a u32.
        HeldBytes {
            entry: self.0.clone(),
            start: start as u32,
            end: end.max(start) as u32,
        }
    }

    /// [`Slot::part`] as [`Bytes`].
    fn share(&self, start: usize, end: usize) -> Bytes {
        self.part(start, end).into_bytes()
    }

    /// The composite key.
    fn key(&self) -> &[u8] {
        &self.bytes()[..usize::from(self.head().key_len)]
    }

    /// Where the value ends in the packed bytes.
    fn value_end(&self) -> usize {
        let head = self.head();
        usize::from(head.key_len) + head.value_len as usize
    }

    /// The trailer's `i`th number (0: revision, 1: stamp).
    fn trailer(&self, i: usize) -> u64 {
        let bytes = self.bytes();
        let at = bytes.len() - TRAILER + 8 * i;
        let mut number = [0; 8];
        number.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(number)
    }

    fn revision(&self) -> u64 {
        self.trailer(0)
    }

    /// The record held, sharing the entry's bytes.
    fn record(&self) -> Record {
        let value_end = self.value_end();
        let head = self.head();
        Record {
            value: self.share(usize::from(head.key_len), value_end),
            metadata: (head.flags & METADATA != 0)
                .then(|| self.share(value_end, self.bytes().len() - TRAILER)),
            expiration: (head.flags & EXPIRATION != 0).then_some(head.expiration),
            revision: self.revision(),
            hlc: self.trailer(1),
            tombstone: head.flags & TOMBSTONE != 0,
        }
    }
}

#[cfg(test)]
mod tests;
