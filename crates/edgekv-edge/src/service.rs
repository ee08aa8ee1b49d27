//! [`Edge`]: the KV operations of an edge, apart from HTTP.
//!
//! The HTTP layer parses and authenticates; everything it then asks for is a call
//! here. The edge currently owns its data (the local store is authoritative); the
//! read-through to origin builds slots in behind [`Edge::get`] and [`Edge::commit`].

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use edgekv_kv::{Clock, Hlc, Namespace, Record, validate};
use edgekv_store::{ListPage, ListQuery, Store, Write};
use parking_lot::Mutex;

use crate::hot::HotTier;
use crate::metrics::Metrics;
use crate::tokens::TokenTable;
use crate::{EdgeConfig, Error, Result};

/// One edge node: its store, hot tier, namespaces and tokens.
pub struct Edge {
    config: EdgeConfig,
    store: Arc<dyn Store>,
    hot: HotTier,
    clock: Arc<dyn Clock>,
    hlc: Hlc,
    /// Every namespace by id; read lock-free on each request.
    namespaces: ArcSwap<HashMap<String, Namespace>>,
    tokens: ArcSwap<TokenTable>,
    /// Orders a write's store commit with its hot-tier install, so two writes to
    /// one key install in the order they committed.
    write_order: Mutex<()>,
    /// Serialises namespace changes, so titles stay unique per account.
    namespace_changes: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.config)
            .finish()
    }
}

/// What an authorised request may do beyond its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Whether the token is an operator's.
    pub admin: bool,
}

/// What a write changes: a value or a deletion.
#[derive(Debug, Clone)]
pub enum Change {
    /// Stores a value.
    Put {
        /// The value bytes.
        value: Bytes,
        /// Compact JSON metadata.
        metadata: Option<Bytes>,
        /// Absolute expiration, Unix seconds.
        expiration: Option<u64>,
    },
    /// Deletes the key.
    Delete,
}

impl Edge {
    /// An edge over `store`, with the namespaces it holds loaded.
    pub fn new(
        config: EdgeConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        tokens: TokenTable,
    ) -> Result<Self> {
        let namespaces = store
            .namespaces()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        Ok(Edge {
            hot: HotTier::new(config.hot_tier_bytes),
            hlc: Hlc::new(clock.clone()),
            config,
            store,
            clock,
            namespaces: ArcSwap::from_pointee(namespaces),
            tokens: ArcSwap::from_pointee(tokens),
            write_order: Mutex::new(()),
            namespace_changes: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
        })
    }

    /// The edge's configuration.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// The hot tier.
    pub fn hot(&self) -> &HotTier {
        &self.hot
    }

    /// The request metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The edge's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replaces the token table.
    pub fn set_tokens(&self, table: TokenTable) {
        self.tokens.store(Arc::new(table));
    }

    /// Whether the token table is empty (no client can be served).
    pub fn tokens_is_empty(&self) -> bool {
        self.tokens.load().is_empty()
    }

    /// The version of the token table in use.
    pub fn tokens_version(&self) -> u64 {
        self.tokens.load().version()
    }

    /// Checks a bearer token against the request: 401 when there is none or it is
    /// unknown, 403 when it is for another account or namespace, or read-only and
    /// the request writes.
    pub fn authorize(
        &self,
        bearer: Option<&str>,
        account: &str,
        namespace: Option<&str>,
        write: bool,
    ) -> Result<Access> {
        let token = bearer.ok_or(Error::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ))?;
        let tokens = self.tokens.load();
        let grant = tokens
            .lookup(token)
            .ok_or(Error::Unauthorized("invalid or revoked token"))?;
        if grant.account != account {
            return Err(Error::Forbidden(format!(
                "the token is not valid for account {account:?}"
            )));
        }
        if let Some(ns) = namespace
            && !grant.covers(ns)
        {
            return Err(Error::Forbidden(format!(
                "the token is not valid for namespace {ns}"
            )));
        }
        if write && grant.read_only {
            return Err(Error::Forbidden("the token is read-only".into()));
        }
        Ok(Access { admin: grant.admin })
    }

    /// Returns a namespace of `account`; another account's namespace is not found.
    pub fn namespace(&self, account: &str, id: &str) -> Result<Namespace> {
        match self.namespaces.load().get(id) {
            Some(ns) if ns.account == account => Ok(ns.clone()),
            _ => Err(Error::NamespaceNotFound),
        }
    }

    /// Checks that a namespace of `account` exists, without cloning it.
    pub fn check_namespace(&self, account: &str, id: &str) -> Result<()> {
        match self.namespaces.load().get(id) {
            Some(ns) if ns.account == account => Ok(()),
            _ => Err(Error::NamespaceNotFound),
        }
    }

    /// Returns the namespaces of `account`, ordered by id.
    pub fn namespaces(&self, account: &str) -> Vec<Namespace> {
        let mut list: Vec<Namespace> = self
            .namespaces
            .load()
            .values()
            .filter(|n| n.account == account)
            .cloned()
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Creates a namespace with a new random id.
    pub async fn create_namespace(&self, account: &str, title: &str) -> Result<Namespace> {
        validate::title(title)?;
        let _changes = self.namespace_changes.lock().await;
        self.check_title_free(account, title, None)?;
        let namespace = Namespace {
            id: new_namespace_id(),
            title: title.to_string(),
            account: account.to_string(),
        };
        let store = self.store.clone();
        let created = namespace.clone();
        blocking(move || store.create_namespace(&created)).await??;
        self.namespaces.rcu(|all| {
            let mut all = HashMap::clone(all);
            all.insert(namespace.id.clone(), namespace.clone());
            all
        });
        Ok(namespace)
    }

    /// Renames a namespace.
    pub async fn rename_namespace(&self, account: &str, id: &str, title: &str) -> Result<()> {
        validate::title(title)?;
        let _changes = self.namespace_changes.lock().await;
        let mut namespace = self.namespace(account, id)?;
        self.check_title_free(account, title, Some(id))?;
        namespace.title = title.to_string();
        let store = self.store.clone();
        let renamed = namespace.clone();
        blocking(move || store.update_namespace(&renamed)).await??;
        self.namespaces.rcu(|all| {
            let mut all = HashMap::clone(all);
            all.insert(namespace.id.clone(), namespace.clone());
            all
        });
        Ok(())
    }

    /// Deletes a namespace and every key in it.
    pub async fn delete_namespace(&self, account: &str, id: &str) -> Result<()> {
        let _changes = self.namespace_changes.lock().await;
        self.check_namespace(account, id)?;
        // Drop it from the map first, under the write lock, so no write lands in it
        // after its keys are gone.
        {
            let _order = self.write_order.lock();
            self.namespaces.rcu(|all| {
                let mut all = HashMap::clone(all);
                all.remove(id);
                all
            });
        }
        let store = self.store.clone();
        let doomed = id.to_string();
        blocking(move || store.delete_namespace(&doomed)).await??;
        self.hot.remove_namespace(id);
        Ok(())
    }

    fn check_title_free(&self, account: &str, title: &str, except: Option<&str>) -> Result<()> {
        let taken = self
            .namespaces
            .load()
            .values()
            .any(|n| n.account == account && n.title == title && Some(n.id.as_str()) != except);
        if taken {
            return Err(Error::TitleTaken(title.to_string()));
        }
        Ok(())
    }

    /// Returns the live record of a key, from the hot tier or the store.
    pub fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Record>> {
        let now_s = self.clock.now_s();
        if let Some(record) = self.hot.get(namespace, key) {
            return Ok(record.is_live(now_s).then_some(record));
        }
        let token = self.hot.fill_token(namespace, key);
        let Some(record) = self.store.get(namespace, key)? else {
            return Ok(None);
        };
        let live = record.is_live(now_s).then(|| record.clone());
        self.hot.fill(namespace, key, record, token);
        Ok(live)
    }

    /// Turns a change into the record to store, stamped now.
    pub fn record(&self, change: Change) -> Record {
        let mut record = match change {
            Change::Put {
                value,
                metadata,
                expiration,
            } => Record::value(value, metadata, expiration),
            Change::Delete => Record::tombstone(Some(
                self.clock
                    .now_s()
                    .saturating_add(self.config.tombstone_ttl_s),
            )),
        };
        record.hlc = self.hlc.now();
        record
    }

    /// Stores a batch of writes and installs them in the hot tier; returns its
    /// revision. Every namespace of the batch must still exist.
    pub async fn commit(self: &Arc<Self>, batch: Vec<Write>) -> Result<u64> {
        let edge = self.clone();
        blocking(move || {
            let _order = edge.write_order.lock();
            let namespaces = edge.namespaces.load();
            if batch.iter().any(|w| !namespaces.contains_key(&w.namespace)) {
                return Err(Error::NamespaceNotFound);
            }
            let installs: Vec<(String, Bytes, Record)> = batch
                .iter()
                .map(|w| (w.namespace.clone(), w.key.clone(), w.record.clone()))
                .collect();
            let revision = edge.store.write(batch)?;
            for (namespace, key, mut record) in installs {
                record.revision = revision;
                edge.hot.update(&namespace, &key, record);
            }
            Ok(revision)
        })
        .await?
    }

    /// Writes one key.
    pub async fn write(
        self: &Arc<Self>,
        namespace: &str,
        key: Bytes,
        change: Change,
    ) -> Result<u64> {
        let record = self.record(change);
        self.commit(vec![Write {
            namespace: namespace.to_string(),
            key,
            record,
        }])
        .await
    }

    /// Returns a page of live keys.
    pub async fn list(&self, namespace: &str, query: ListQuery) -> Result<ListPage> {
        let store = self.store.clone();
        let namespace = namespace.to_string();
        let now_s = self.clock.now_s();
        Ok(blocking(move || store.list(&namespace, &query, now_s)).await??)
    }

    /// Purges records that have expired; returns how many.
    pub async fn purge_expired(&self) -> Result<usize> {
        let store = self.store.clone();
        let now_s = self.clock.now_s();
        blocking(move || {
            let mut total = 0;
            loop {
                let purged = store.purge_expired(now_s, 10_000)?;
                total += purged;
                if purged < 10_000 {
                    return Ok(total);
                }
            }
        })
        .await?
    }
}

/// Runs store work off the reactor.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("storage task failed: {e}")))
}

/// A new namespace id: 128 random bits as 32 lowercase hex digits.
fn new_namespace_id() -> String {
    crate::tokens::generate()
}
