//! The origin role of edgekv: the authoritative store, its revisioned change log and
//! change feed, served over gRPC by one or more *builds*.
//!
//! A build is one version of the origin service. Several builds of one environment
//! serve side by side from one process over one store ([`OriginCore`]); each
//! stamps its answers with its build id, environment and tenant, and accepts only
//! callers presenting one of its environment's credentials. The KV rules come from
//! `edgekv-kv`, shared with the edge; storage is any `edgekv-store` engine.
//!
//! # Layout
//! - [`core`]: [`OriginCore`] — ordering of writes, write ids, namespaces, the log.
//! - [`service`]: one build's gRPC `Origin` service over the core.
//! - [`credentials`]: the environment's credential set, reloaded when its file changes.
//! - [`fault`]: faults a build can be told to inject (tests and demos only).
//! - [`server`]: [`RunningOrigin`], the listeners of every build and background work.
//! - [`config`]: [`OriginConfig`] and `--build ID=ADDR` specs.

pub mod config;
pub mod core;
pub mod credentials;
pub mod fault;
pub mod server;
pub mod service;

mod error;

pub use crate::core::OriginCore;
pub use config::{BuildSpec, OriginConfig};
pub use error::{Error, REASON_KEY, RESYNC, Result, TITLE_TAKEN, WRITE_ID_REUSED};
pub use server::RunningOrigin;
