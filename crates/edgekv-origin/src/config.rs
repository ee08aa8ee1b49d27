//! The origin's configuration and `--build ID=ADDR[,version=V][,fault=F]` specs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::fault::Fault;

/// How an origin process runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    /// The directory of the authoritative store (the embedded RocksDB engine).
    pub data_dir: PathBuf,
    /// The authoritative store in a PostgreSQL database shared by several origin
    /// processes: `postgres://USER[:PASSWORD]@HOST[:PORT][,HOST2...]/DB[?...]`.
    /// None: RocksDB in `data_dir`.
    pub store: Option<String>,
    /// The environment every build of this process belongs to.
    pub environment: String,
    /// The tenant of that environment.
    pub tenant: String,
    /// The file of the environment's credentials, one per line.
    pub credential_file: PathBuf,
    /// The builds to serve, each on its own address.
    #[serde(skip)]
    pub builds: Vec<BuildSpec>,
    /// How many revisions the change log keeps; a watch from before them is
    /// answered OUT_OF_RANGE.
    pub log_retain: u64,
    /// How often a caught-up watch stream gets a progress event, in milliseconds.
    pub progress_interval_ms: u64,
    /// Whether each write waits for `fsync` before it is acknowledged.
    pub sync_writes: bool,
    /// How often the log is trimmed and expired records purged, in milliseconds.
    pub maintenance_interval_ms: u64,
    /// How long a deleted key's tombstone is kept, in seconds; also the replay
    /// horizon: an outbox replay stamped longer ago than this is refused, since
    /// the tombstones it would compete with may be gone. Keep it above the edges'
    /// `outbox_max_age_s` (24 h by default).
    pub tombstone_ttl_s: u64,
    /// The PEM certificate chain the builds serve TLS with (with `tls_key`);
    /// none: cleartext gRPC.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            data_dir: PathBuf::from("./edgekv-data/origin"),
            store: None,
            environment: "dev".into(),
            tenant: "dev".into(),
            credential_file: PathBuf::from("./edgekv-data/credentials"),
            builds: Vec::new(),
            log_retain: 1_000_000,
            progress_interval_ms: 500,
            sync_writes: true,
            maintenance_interval_ms: 1000,
            tombstone_ttl_s: 48 * 3600,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl OriginConfig {
    /// Checks the values against each other; says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.builds.is_empty() {
            return Err("no build to serve: give --grpc and --build-id, or --build ID=ADDR".into());
        }
        let mut ids: Vec<&str> = self.builds.iter().map(|b| b.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("build id {:?} is given twice", w[0]));
        }
        if self.environment.trim().is_empty() || self.tenant.trim().is_empty() {
            return Err("environment and tenant must not be empty".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together: give both or neither".into());
        }
        if let Some(url) = &self.store {
            check_store_url(url)?;
        }
        if self.log_retain == 0 {
            return Err("log_retain must be at least 1".into());
        }
        if self.progress_interval_ms == 0 || self.maintenance_interval_ms == 0 {
            return Err("intervals must be at least 1 ms".into());
        }
        Ok(())
    }
}

/// Checks a `store` URL: a PostgreSQL URL the client can parse.
pub fn check_store_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "store {:?} is not a postgres:// URL (leave it out for RocksDB in data_dir)",
            redact(url)
        ));
    }
    edgekv_store_postgres::parse_url(url).map(drop)
}

/// A store URL with its password hidden, for logs and `--check-config`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// One build to serve: `ID=ADDR[,version=V][,fault=KIND[;after=DUR][;when=PATH]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    /// The build id, stamped on every answer.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its version string, reported by `Health`.
    pub version: String,
    /// A fault to inject (tests and demos only).
    pub fault: Option<Fault>,
}

impl FromStr for BuildSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let (id, addr) = head
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ID=ADDR[,version=V][,fault=F]"))?;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "build id {id:?} must be letters, digits, '-', '_' or '.'"
            ));
        }
        let addr = addr
            .parse()
            .map_err(|_| format!("build {id}: {addr:?} is not an address like 127.0.0.1:7001"))?;
        let mut spec = BuildSpec {
            id: id.to_string(),
            addr,
            version: id.to_string(),
            fault: None,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("version", v)) => spec.version = v.to_string(),
                Some(("fault", f)) => {
                    spec.fault = Some(f.parse().map_err(|e| format!("build {id}: {e}"))?)
                }
                _ => return Err(format!("build {id}: unknown option {part:?}")),
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_specs() {
        let spec: BuildSpec = "v2=127.0.0.1:7002,version=2.0.1,fault=unauthenticated;after=1s"
            .parse()
            .unwrap();
        assert_eq!(spec.id, "v2");
        assert_eq!(spec.version, "2.0.1");
        assert!(spec.fault.is_some());
        assert!("v1".parse::<BuildSpec>().is_err());
        assert!("v 1=127.0.0.1:1".parse::<BuildSpec>().is_err());
        assert!("v1=nowhere".parse::<BuildSpec>().is_err());
        assert!("v1=127.0.0.1:1,colour=red".parse::<BuildSpec>().is_err());
    }

    #[test]
    fn validation() {
        let mut config = OriginConfig::default();
        assert!(config.validate().unwrap_err().contains("no build"));
        config.builds = vec![
            "a=127.0.0.1:1".parse().unwrap(),
            "a=127.0.0.1:2".parse().unwrap(),
        ];
        assert!(config.validate().unwrap_err().contains("twice"));
    }
}
