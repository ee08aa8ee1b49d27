//! The in-memory engine: ordered maps behind one lock. For tests, benchmarks and
//! nodes that keep nothing across restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use edgekv_kv::{Namespace, Record};
use parking_lot::RwLock;

use crate::keys::{self, NAMESPACE_ID_LEN};
use crate::{Error, ListPage, ListQuery, Result, Store, Write};

/// A [`Store`] held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    namespaces: BTreeMap<String, Namespace>,
    data: BTreeMap<Vec<u8>, Record>,
    expiry: BTreeSet<Vec<u8>>,
    meta: HashMap<String, Vec<u8>>,
    revision: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn create_namespace(&self, namespace: &Namespace) -> Result<()> {
        let mut inner = self.inner.write();
        if inner.namespaces.contains_key(&namespace.id) {
            return Err(Error::NamespaceExists(namespace.id.clone()));
        }
        inner
            .namespaces
            .insert(namespace.id.clone(), namespace.clone());
        Ok(())
    }

    fn update_namespace(&self, namespace: &Namespace) -> Result<()> {
        let mut inner = self.inner.write();
        match inner.namespaces.get_mut(&namespace.id) {
            Some(held) => {
                *held = namespace.clone();
                Ok(())
            }
            None => Err(Error::NoSuchNamespace(namespace.id.clone())),
        }
    }

    fn namespace(&self, id: &str) -> Result<Option<Namespace>> {
        Ok(self.inner.read().namespaces.get(id).cloned())
    }

    fn namespaces(&self) -> Result<Vec<Namespace>> {
        Ok(self.inner.read().namespaces.values().cloned().collect())
    }

    fn delete_namespace(&self, id: &str) -> Result<bool> {
        let mut inner = self.inner.write();
        let existed = inner.namespaces.remove(id).is_some();
        let doomed: Vec<Vec<u8>> = inner
            .data
            .range(id.as_bytes().to_vec()..)
            .take_while(|(k, _)| k.starts_with(id.as_bytes()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            inner.data.remove(&key);
        }
        Ok(existed)
    }

    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>> {
        let stored = keys::data_key(namespace, key);
        Ok(self.inner.read().data.get(&stored).cloned())
    }

    fn write(&self, batch: Vec<Write>) -> Result<u64> {
        let mut inner = self.inner.write();
        let revision = inner.revision + 1;
        for write in batch {
            let stored = keys::data_key(&write.namespace, &write.key);
            let mut record = write.record;
            record.revision = revision;
            if let Some(at) = record.expiration {
                inner.expiry.insert(keys::expiry_key(at, &stored));
            }
            inner.data.insert(stored, record);
        }
        inner.revision = revision;
        Ok(revision)
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
            page.entries.push((key, record.clone()));
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

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.read().meta.get(name).cloned())
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.inner.write().meta.insert(name.into(), value.to_vec());
        Ok(())
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

    crate::store_suite!((MemoryStore::new(), ()));

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
