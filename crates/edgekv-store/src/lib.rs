//! The storage trait of edgekv, with an in-memory engine and the test suite that
//! every engine must pass.
//!
//! Roles hold a `dyn Store` and never name an engine; this crate has no RocksDB
//! dependency (the RocksDB engine lives in `edgekv-store-rocksdb`), so a PostgreSQL
//! engine can slot in beside it and run the same [`suite`].
//!
//! # Layout
//! - [`Store`]: the trait — namespaces, records, ordered listing, expiry purge and a
//!   small space of node metadata.
//! - [`keys`]: how `(namespace, key)` pairs map onto one ordered byte space.
//! - [`MemoryStore`]: the in-memory engine.
//! - [`suite`]: the shared engine test suite and the [`store_suite!`] macro.

pub mod keys;
pub mod suite;

mod error;
mod memory;

pub use error::{Error, Result};
pub use memory::MemoryStore;

use bytes::Bytes;
use edgekv_kv::{Namespace, Record};

/// One write of a batch: the record to store under `key` in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The namespace id.
    pub namespace: String,
    /// The key bytes (already validated).
    pub key: Bytes,
    /// The record; its `revision` is assigned by [`Store::write`].
    pub record: Record,
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
    /// Live `(key, record)` pairs in key-byte order.
    pub entries: Vec<(Bytes, Record)>,
    /// Whether live keys remain after the last entry.
    pub more: bool,
}

/// The storage engine of a node.
///
/// Calls are synchronous: engines answer point reads from memory or a local disk in
/// microseconds, and callers move long calls (lists, bulk writes) off the reactor.
pub trait Store: Send + Sync + 'static {
    /// Adds a namespace; fails with [`Error::NamespaceExists`] if its id is taken.
    fn create_namespace(&self, namespace: &Namespace) -> Result<()>;
    /// Replaces a namespace's description (a rename); fails if it does not exist.
    fn update_namespace(&self, namespace: &Namespace) -> Result<()>;
    /// Returns a namespace by id.
    fn namespace(&self, id: &str) -> Result<Option<Namespace>>;
    /// Returns every namespace, ordered by id.
    fn namespaces(&self) -> Result<Vec<Namespace>>;
    /// Removes a namespace and every key in it; returns whether it existed.
    fn delete_namespace(&self, id: &str) -> Result<bool>;

    /// Returns the record held for a key, tombstones and expired records included;
    /// callers decide what is servable.
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>>;
    /// Applies a batch atomically and durably. Every record in it is given the next
    /// revision of the store, which is returned.
    fn write(&self, batch: Vec<Write>) -> Result<u64>;
    /// Returns one page of live keys of a namespace.
    fn list(&self, namespace: &str, query: &ListQuery, now_s: u64) -> Result<ListPage>;
    /// Removes up to `max` records that expired before `now_s` (tombstones included);
    /// returns how many it removed.
    fn purge_expired(&self, now_s: u64, max: usize) -> Result<usize>;
    /// The revision of the last write.
    fn revision(&self) -> u64;

    /// Reads a value of the node's own metadata (generated secrets, sync positions).
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a value of the node's own metadata, durably.
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()>;
}
