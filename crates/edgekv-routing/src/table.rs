//! The route table and its content hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The weights of a table's entries sum to this (basis points: 100.00%).
pub const WEIGHT_TOTAL: u32 = 10_000;

/// One build in a route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The build id.
    pub build_id: String,
    /// The build's environment; must be the edge's.
    pub environment: String,
    /// The build's tenant; must be the edge's.
    pub tenant: String,
    /// The digest of the build's artifact.
    pub artifact_digest: String,
    /// Its share of traffic in basis points (0 allowed: reachable, not picked).
    pub weight_bp: u32,
    /// Where it listens (`http://host:port`).
    pub endpoints: Vec<String>,
    /// The data set the build's answers must be stamped with; empty: the one the
    /// edge follows on its change feed.
    #[serde(default)]
    pub data_set: String,
}

/// A versioned route table of one environment and tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Versions only go up; the same version must have the same content.
    pub version: u64,
    /// The environment every entry belongs to.
    pub environment: String,
    /// The tenant every entry belongs to.
    pub tenant: String,
    /// When control issued it, Unix milliseconds.
    pub issued_at: u64,
    /// The build to fall back to; always an entry of the table.
    pub known_good_build: String,
    /// The builds and their weights.
    pub entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// The SHA-256 of the table's content (everything but `issued_at`), as hex.
    /// Two tables of the same version must have the same hash.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(&self.version.to_be_bytes());
        field(self.environment.as_bytes());
        field(self.tenant.as_bytes());
        field(self.known_good_build.as_bytes());
        for entry in &self.entries {
            field(entry.build_id.as_bytes());
            field(entry.environment.as_bytes());
            field(entry.tenant.as_bytes());
            field(entry.artifact_digest.as_bytes());
            field(&entry.weight_bp.to_be_bytes());
            for endpoint in &entry.endpoints {
                field(endpoint.as_bytes());
            }
            // Hashed only when named, so a table from before data sets hashes as
            // it did.
            if !entry.data_set.is_empty() {
                field(b"data_set");
                field(entry.data_set.as_bytes());
            }
            field(b"|");
        }
        let digest = hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The entry of a build.
    pub fn entry(&self, build_id: &str) -> Option<&RouteEntry> {
        self.entries.iter().find(|e| e.build_id == build_id)
    }
}
