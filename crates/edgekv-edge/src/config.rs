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
    /// Where workerd's KV binding protocol listens, if anywhere: the service a
    /// Worker's `kvNamespace` binding names ([`crate::binding`]).
    pub binding: Option<SocketAddr>,
    /// The directory of the edge's RocksDB database and node state.
    pub data_dir: PathBuf,
    /// The hot tier's budget, in bytes. While an eviction sweep is spread over
    /// several writes the tier may hold up to an eighth more, and what sweeps
    /// evicted is freed by a thread of its own a moment later (what at most
    /// two evicting writes unlinked waits for it).
    pub hot_tier_bytes: usize,
    /// How long a deleted key's tombstone is kept, in seconds.
    pub tombstone_ttl_s: u64,
    /// How often expired records are purged from the store, in seconds.
    pub purge_interval_s: u64,
    /// Whether each local write waits for `fsync`. The edge's store is a cache of
    /// the origin, and the feed position is written atomically with the data it
    /// numbers, so a crash loses at most a tail that is read again.
    pub sync_writes: bool,
    /// How long shutdown waits for requests in flight, in seconds.
    pub shutdown_grace_s: u64,
    /// The URL of the one origin build this edge reads through to and follows
    /// (empty when it follows control's route tables instead); several URLs,
    /// comma-separated, are endpoints of that one build — origin processes
    /// sharing one database — between which the edge fails over.
    pub origin: String,
    /// The URL of the control plane whose route tables this edge follows (empty
    /// when it names one `origin` build); several, comma-separated, for an active
    /// control and its standby: the edge moves to the next when one fails.
    pub control: String,
    /// The edge's environment: every build it calls must belong to it.
    pub environment: String,
    /// The edge's tenant.
    pub tenant: String,
    /// This node's id, part of every write id (default: generated once and kept).
    pub node_id: Option<String>,
    /// The change feed counts as caught up while its lag is under this, in ms.
    pub lag_bound_ms: u64,
    /// How long held entries stay usable after the feed fell behind, in seconds
    /// (per request: `?cache_ttl=`).
    pub cache_ttl_s: u64,
    /// The time budget of one upstream call, in milliseconds.
    pub upstream_timeout_ms: u64,
    /// The most calls of gathered writes in flight per origin endpoint: while
    /// one is in flight, the writes that come wait and go together.
    pub origin_write_calls_in_flight: usize,
    /// The most writes one call to an origin carries (1: each write alone; at
    /// most 512).
    pub origin_write_call_max_writes: usize,
    /// A call to an origin takes no further write past this many bytes of
    /// writes (a larger write goes alone).
    pub origin_write_call_max_bytes: usize,
    /// The most writes the outbox holds; past it, writes no build can take are
    /// answered 503.
    pub outbox_max_writes: u64,
    /// The most bytes the outbox's waiting writes take, encoded as they are kept
    /// on disk; past it, writes no build can take are answered 503. At least
    /// 1 MiB.
    pub outbox_max_bytes: u64,
    /// How long a queued write may wait for its replay, in seconds; an older one
    /// goes to the dead letters, never to a build. Kept below the origin's replay
    /// horizon (its tombstone retention, 48 h by default), so a late replay can
    /// never resurrect a delete.
    pub outbox_max_age_s: u64,
    /// How often every build of the route table is probed (and health is reported
    /// to control), in milliseconds.
    pub probe_interval_ms: u64,
    /// How often, at most, the edge asks the origin for the namespace list of one
    /// account because a request named a namespace id it does not know (one
    /// created at another edge a moment ago, before the feed brought it), in ms.
    /// Requests meanwhile share the refresh in flight, or answer 404 at once from
    /// the last one, and an id found unknown is remembered as unknown this long:
    /// a flood of random ids costs the origin one call per account per interval.
    /// It is also how long a namespace created elsewhere may answer 404 here when
    /// the feed has not brought it yet.
    pub namespace_refresh_interval_ms: u64,
    /// The most namespace ids remembered as unknown at once (and the most
    /// accounts whose last namespace refresh is remembered). When full, ids older
    /// than `namespace_refresh_interval_ms` are dropped, or all of them if none
    /// is; the per-account refresh bound holds either way.
    pub unknown_namespaces_max: usize,
    /// The file of the Ed25519 public key that break-glass orders must be signed
    /// with (none: this edge accepts no break-glass order).
    pub break_glass_key: Option<PathBuf>,
    /// The PEM CA trusted for `https://` builds and control; without it an
    /// `https://` endpoint is refused (a route table naming one is NACKed), never
    /// called in clear.
    pub tls_ca: Option<PathBuf>,
    /// A read sent to a build other than known-good is also sent to known-good
    /// when the first has not answered after four times known-good's typical
    /// latency, within these bounds (ms); the first good answer wins, and the
    /// late build is counted as a latency fault. `hedge_max_ms` 0 turns hedging
    /// off.
    pub hedge_min_ms: u64,
    /// The longest a hedged read waits for the picked build (ms).
    pub hedge_max_ms: u64,
    /// A build that misses the hedge delay this many reads in a row is ejected
    /// as an outlier (its share goes to known-good), as a failing one is.
    pub slow_eject_after: u32,
    /// How long an outlier stays ejected before it is given traffic again (ms).
    pub slow_eject_ms: u64,
    /// How long a client has to send a request's whole header, in ms, counted
    /// from when the connection opens or the previous answer was sent (a
    /// connection that has not sent a first byte by then is closed too). Past
    /// it, the connection is closed.
    pub header_read_timeout_ms: u64,
    /// How long a connection with no request in flight is kept, in ms. On
    /// HTTP/1.1 the header timer above also runs while a connection waits for
    /// its next request, so an idle HTTP/1.1 connection is closed after the
    /// shorter of the two. On HTTP/2 the edge pings an idle connection this
    /// often and closes it when the ping is not answered.
    pub idle_timeout_ms: u64,
    /// The most connections each listener serves at once; past it, accepting
    /// pauses (new connections wait in the kernel's backlog) until one closes.
    pub max_connections: usize,
    /// The most requests with a body (writes, bulk requests, namespace changes)
    /// served at once; each holds its place from before its body is read until
    /// it is answered.
    pub max_body_requests: usize,
    /// How long a request with a body waits for a place when all
    /// `max_body_requests` are taken, in ms, before it is answered 503 with
    /// `Retry-After`.
    pub body_wait_ms: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8787)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8788)),
            binding: None,
            data_dir: PathBuf::from("./edgekv-data/edge"),
            hot_tier_bytes: 256 * 1024 * 1024,
            tombstone_ttl_s: 24 * 3600,
            purge_interval_s: 30,
            sync_writes: false,
            shutdown_grace_s: 10,
            origin: String::new(),
            control: String::new(),
            environment: "dev".into(),
            tenant: "dev".into(),
            node_id: None,
            lag_bound_ms: 2000,
            cache_ttl_s: 60,
            upstream_timeout_ms: 2000,
            origin_write_calls_in_flight: 4,
            origin_write_call_max_writes: 256,
            origin_write_call_max_bytes: 1 << 20,
            outbox_max_writes: 100_000,
            outbox_max_bytes: 1 << 30,
            outbox_max_age_s: 24 * 3600,
            probe_interval_ms: 1000,
            namespace_refresh_interval_ms: 1000,
            unknown_namespaces_max: 10_000,
            break_glass_key: None,
            tls_ca: None,
            hedge_min_ms: 50,
            hedge_max_ms: 250,
            slow_eject_after: 10,
            slow_eject_ms: 30_000,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
            max_body_requests: 256,
            body_wait_ms: 1000,
        }
    }
}

impl EdgeConfig {
    /// Checks the values against each other; says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_local()?;
        let url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        match (self.origin.is_empty(), self.control.is_empty()) {
            (false, false) => {
                Err("give either an origin build or a control plane, not both".into())
            }
            (true, true) => Err(
                "origin must be a URL like http://127.0.0.1:7001 (or give a control URL)".into(),
            ),
            (false, true) if !self.origin_endpoints().iter().all(|u| url(u)) => Err(format!(
                "origin must be a URL like http://127.0.0.1:7001 (or several, comma-separated), got {:?}",
                self.origin
            )),
            (true, false)
                if !crate::control::split_urls(&self.control)
                    .iter()
                    .all(|u| url(u)) =>
            {
                Err(format!(
                    "control must be a URL like http://127.0.0.1:7000 (or several, comma-separated: an active control and its standby), got {:?}",
                    self.control
                ))
            }
            _ => Ok(()),
        }
    }

    /// The endpoints of `origin`, in order.
    pub fn origin_endpoints(&self) -> Vec<String> {
        (self.origin.split(','))
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Checks every value but the origin, which `edgekv dev` fills in itself.
    pub fn validate_local(&self) -> Result<(), String> {
        if self.http == self.admin && self.http.port() != 0 {
            return Err(format!(
                "http and admin must listen on different addresses; both are {}",
                self.http
            ));
        }
        self.write_calls().validate()?;
        if self.outbox_max_writes == 0 {
            return Err("outbox_max_writes must be at least 1".into());
        }
        if self.outbox_max_bytes < 1024 * 1024 {
            return Err(format!(
                "outbox_max_bytes is {}; it must be at least 1 MiB",
                self.outbox_max_bytes
            ));
        }
        if self.outbox_max_age_s == 0 {
            return Err("outbox_max_age_s must be at least 1".into());
        }
        if self.probe_interval_ms == 0 {
            return Err("probe_interval_ms must be at least 1".into());
        }
        if self.namespace_refresh_interval_ms == 0 {
            return Err("namespace_refresh_interval_ms must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.unknown_namespaces_max) {
            return Err(format!(
                "unknown_namespaces_max is {}; it must be between 1 and 1000000",
                self.unknown_namespaces_max
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
        if self.environment.trim().is_empty() || self.tenant.trim().is_empty() {
            return Err("environment and tenant must not be empty".into());
        }
        if self.upstream_timeout_ms == 0 || self.lag_bound_ms == 0 {
            return Err("upstream_timeout_ms and lag_bound_ms must be at least 1".into());
        }
        if self.hedge_max_ms != 0 && self.hedge_min_ms > self.hedge_max_ms {
            return Err(format!(
                "hedge_min_ms ({}) must not be above hedge_max_ms ({})",
                self.hedge_min_ms, self.hedge_max_ms
            ));
        }
        if self.slow_eject_after == 0 {
            return Err("slow_eject_after must be at least 1".into());
        }
        self.validate_connection_limits()
    }

    /// How the edge's writes to an origin endpoint share calls.
    pub fn write_calls(&self) -> crate::upstream::WriteCalls {
        crate::upstream::WriteCalls {
            in_flight: self.origin_write_calls_in_flight,
            max_writes: self.origin_write_call_max_writes,
            max_bytes: self.origin_write_call_max_bytes,
        }
    }

    /// Checks the bounds on connections and requests with a body.
    fn validate_connection_limits(&self) -> Result<(), String> {
        /// An hour: a timeout longer than this holds a connection as long as none.
        const MAX_TIMEOUT_MS: u64 = 3_600_000;
        for (name, ms) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                return Err(format!(
                    "{name} is {ms}; it must be between 1 and {MAX_TIMEOUT_MS} (an hour)"
                ));
            }
        }
        for (name, max) in [
            ("max_connections", self.max_connections),
            ("max_body_requests", self.max_body_requests),
        ] {
            if !(1..=1_000_000).contains(&max) {
                return Err(format!("{name} is {max}; it must be between 1 and 1000000"));
            }
        }
        if self.body_wait_ms > 60_000 {
            return Err(format!(
                "body_wait_ms is {}; it must be at most 60000 (a minute)",
                self.body_wait_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_once_an_origin_is_named() {
        assert!(
            EdgeConfig::default()
                .validate()
                .unwrap_err()
                .contains("origin")
        );
        let config = EdgeConfig {
            origin: "http://127.0.0.1:7001".into(),
            ..EdgeConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let mut config = EdgeConfig {
            admin: EdgeConfig::default().http,
            origin: "http://127.0.0.1:7001".into(),
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
            origin: "http://127.0.0.1:7001".into(),
            ..EdgeConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("hot_tier_bytes"));
        config = EdgeConfig {
            outbox_max_bytes: 1024 * 1024 - 1,
            origin: "http://127.0.0.1:7001".into(),
            ..EdgeConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("outbox_max_bytes"));
    }

    #[test]
    fn connection_limits_are_checked() {
        let valid = EdgeConfig {
            origin: "http://127.0.0.1:7001".into(),
            ..EdgeConfig::default()
        };
        let refused = [
            EdgeConfig {
                header_read_timeout_ms: 0,
                ..valid.clone()
            },
            EdgeConfig {
                idle_timeout_ms: 3_600_001,
                ..valid.clone()
            },
            EdgeConfig {
                max_connections: 0,
                ..valid.clone()
            },
            EdgeConfig {
                max_body_requests: 0,
                ..valid.clone()
            },
            EdgeConfig {
                body_wait_ms: 60_001,
                ..valid.clone()
            },
        ];
        for (config, name) in refused.iter().zip([
            "header_read_timeout_ms",
            "idle_timeout_ms",
            "max_connections",
            "max_body_requests",
            "body_wait_ms",
        ]) {
            assert!(config.validate().unwrap_err().contains(name), "{name}");
        }
        assert_eq!(valid.validate(), Ok(()));
    }

    #[test]
    fn the_unknown_namespace_bounds_are_checked() {
        let valid = EdgeConfig {
            origin: "http://127.0.0.1:7001".into(),
            ..EdgeConfig::default()
        };
        let refused = [
            EdgeConfig {
                namespace_refresh_interval_ms: 0,
                ..valid.clone()
            },
            EdgeConfig {
                unknown_namespaces_max: 0,
                ..valid.clone()
            },
        ];
        for (config, name) in refused
            .iter()
            .zip(["namespace_refresh_interval_ms", "unknown_namespaces_max"])
        {
            assert!(config.validate().unwrap_err().contains(name), "{name}");
        }
        assert_eq!(valid.validate(), Ok(()));
    }
}
