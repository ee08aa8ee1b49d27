//! The edge's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// How an edge runs. Read from TOML (`[edge]`), `EDGEKV_*` variables and flags, in
/// that order of increasing precedence, by the binary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Where the KV API listens.
    pub http: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` listen.
    pub admin: SocketAddr,
    /// The directory of the edge's RocksDB database and node state.
    pub data_dir: PathBuf,
    /// The hot tier's budget, in bytes.
    pub hot_tier_bytes: usize,
    /// How long a deleted key's tombstone is kept, in seconds.
    pub tombstone_ttl_s: u64,
    /// How often expired records are purged from the store, in seconds.
    pub purge_interval_s: u64,
    /// Whether each write waits for `fsync` before it is acknowledged.
    pub sync_writes: bool,
    /// How long shutdown waits for requests in flight, in seconds.
    pub shutdown_grace_s: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8787)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8788)),
            data_dir: PathBuf::from("./edgekv-data/edge"),
            hot_tier_bytes: 256 * 1024 * 1024,
            tombstone_ttl_s: 24 * 3600,
            purge_interval_s: 30,
            sync_writes: true,
            shutdown_grace_s: 10,
        }
    }
}

impl EdgeConfig {
    /// Checks the values against each other; says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.http == self.admin && self.http.port() != 0 {
            return Err(format!(
                "http and admin must listen on different addresses; both are {}",
                self.http
            ));
        }
        if self.hot_tier_bytes < 1024 * 1024 {
            return Err(format!(
                "hot_tier_bytes is {}; it must be at least 1 MiB",
                self.hot_tier_bytes
            ));
        }
        if self.purge_interval_s == 0 {
            return Err("purge_interval_s must be at least 1".into());
        }
        if self.tombstone_ttl_s < 60 {
            return Err("tombstone_ttl_s must be at least 60".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(EdgeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let mut config = EdgeConfig {
            admin: EdgeConfig::default().http,
            ..EdgeConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .contains("different addresses")
        );
        config = EdgeConfig {
            hot_tier_bytes: 10,
            ..EdgeConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("hot_tier_bytes"));
    }
}
