//! The edge role of edgekv: the Workers KV HTTP API, answered from an in-memory hot
//! tier in front of a local RocksDB store that caches the origin.
//!
//! An edge authenticates each request against a local table of token hashes, looks
//! the key up in the hot tier, then in its store, and answers while its change feed
//! keeps what it holds fresh; otherwise it reads through to an origin build over
//! gRPC. It depends on the KV rules (`edgekv-kv`), the storage trait
//! (`edgekv-store`) and the wire types (`edgekv-proto`); it never parses flags or
//! config files — the binary does, and hands it an [`EdgeConfig`].
//!
//! # Layout
//! - [`service`]: [`Edge`], the KV operations apart from HTTP: freshness, read-through,
//!   writes through the origin.
//! - [`upstream`]: the gRPC client of an origin build; build faults vs client faults.
//! - [`feed`]: the change feed: watch, apply, resync from a snapshot.
//! - [`namespaces`]: namespace ids the edge does not know: one origin refresh per
//!   account per interval, shared, and a bounded negative cache.
//! - [`routes`]: the builds an edge calls and the weighted choice among them.
//! - [`control`]: following control's route and token tables (validate, ACK/NACK,
//!   keep on disk).
//! - [`hot`]: the hot tier, bounded by bytes, correct under concurrent writes.
//! - [`tokens`]: the token table, looked up by SHA-256, and the checks of control's.
//! - [`http`]: routes, handlers and the v4 JSON envelope.
//! - [`server`]: listeners (HTTP/1.1 and h2c) and their connection limits, graceful
//!   shutdown, background purge.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/status`.
//! - [`metrics`]: lock-free counters and histograms.
//! - [`config`]: the edge's configuration, [`EdgeConfig`].

pub mod admin;
pub mod binding;
pub mod breakglass;
pub mod config;
pub mod control;
pub mod feed;
pub mod health;
pub mod hot;
pub mod http;
pub mod metrics;
pub mod namespaces;
pub mod outbox;
pub mod routes;
pub mod server;
pub mod service;
pub mod tokens;
pub mod upstream;

mod error;

use std::sync::Arc;

pub use config::EdgeConfig;
pub use error::{Error, Result};
pub use server::RunningEdge;
pub use service::Edge;

use edgekv_kv::Clock;
use edgekv_store_rocksdb::{RocksOptions, RocksStore};

/// Opens the edge's store in its data dir and builds the edge, reading through to
/// the origin named in the config with `credential`.
pub fn open(
    config: EdgeConfig,
    clock: Arc<dyn Clock>,
    tokens: tokens::TokenTable,
    credential: &str,
) -> Result<Arc<Edge>> {
    config.validate().map_err(Error::Config)?;
    let options = RocksOptions {
        sync_writes: config.sync_writes,
        ..RocksOptions::default()
    };
    let store = RocksStore::open(config.data_dir.join("db"), &options)?;
    let expected = upstream::Expected {
        environment: config.environment.clone(),
        tenant: config.tenant.clone(),
        data_set: Arc::new(upstream::FollowedDataSet::new(service::followed_data_set(
            &store,
        )?)),
        tls_ca: config
            .tls_ca
            .as_deref()
            .map(edgekv_proto::tls::read_ca)
            .transpose()
            .map_err(Error::Config)?
            .map(Arc::from),
        write_calls: config.write_calls(),
    };
    let timeout = std::time::Duration::from_millis(config.upstream_timeout_ms);
    let routes = if config.origin.is_empty() {
        // An edge of control: start from the last good table kept on disk, if any.
        match routes::load_table(&config.data_dir) {
            Some(table)
                if edgekv_routing::validate(&table, &config.environment, &config.tenant, None)
                    .is_ok() =>
            {
                routes::Routes::from_table(table, credential, &expected, timeout)
                    .map_err(Error::Config)?
            }
            _ => routes::Routes::empty(),
        }
    } else {
        routes::Routes::single(
            upstream::Upstream::over(
                &config.origin_endpoints(),
                credential,
                expected.clone(),
                timeout,
            )
            .map_err(Error::Config)?,
        )
    };
    Ok(Arc::new(
        Edge::new(
            config,
            Arc::new(store),
            clock,
            tokens,
            routes,
            credential.to_string(),
        )?
        .following(expected),
    ))
}
