//! The builds an edge calls: one named by `--origin`, or those of the route table
//! control streams, each with its own client. The hot path reads the current
//! [`Routes`] through an `ArcSwap`, without a lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgekv_routing::{RouteTable, pick};

use crate::upstream::{Expected, Upstream};

/// The builds of the current route table.
#[derive(Debug)]
pub struct Routes {
    /// The table, when control sent one; `None` for a single `--origin`.
    pub table: Option<RouteTable>,
    /// The build traffic falls back to and the change feed follows.
    pub known_good: Option<Upstream>,
    /// Every build of the table with its client, in table order.
    pub builds: Vec<(String, u32, Upstream)>,
    /// Per build (same order as `builds`), whether this edge ejected it: its probe
    /// failed, so its share goes to known-good until a later table. Atomics, so the
    /// pick takes no lock.
    pub ejected: Vec<std::sync::atomic::AtomicBool>,
    /// `edgekv-route-version`, formatted once per table.
    pub version_header: Option<http::HeaderValue>,
}

impl Routes {
    /// No build yet: an edge of control that has not received a table.
    pub fn empty() -> Self {
        Routes {
            table: None,
            known_good: None,
            builds: Vec::new(),
            version_header: None,
            ejected: Vec::new(),
        }
    }

    /// One build, named by `--origin`.
    pub fn single(upstream: Upstream) -> Self {
        Routes {
            table: None,
            known_good: Some(upstream),
            builds: Vec::new(),
            version_header: None,
            ejected: Vec::new(),
        }
    }

    /// The clients of a validated table's builds.
    pub fn from_table(
        table: RouteTable,
        credential: &str,
        expected: &Expected,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut builds = Vec::with_capacity(table.entries.len());
        let mut known_good = None;
        for entry in &table.entries {
            let upstream = Upstream::for_build(
                &entry.endpoints,
                credential,
                expected.clone(),
                timeout,
                &entry.build_id,
            )?
            .with_data_set(&entry.data_set);
            if entry.build_id == table.known_good_build {
                known_good = Some(upstream.clone());
            }
            builds.push((entry.build_id.clone(), entry.weight_bp, upstream));
        }
        Ok(Routes {
            version_header: Some(http::HeaderValue::from(table.version)),
            table: Some(table),
            known_good,
            ejected: builds.iter().map(|_| Default::default()).collect(),
            builds,
        })
    }

    /// Marks a build as ejected (its probe failed).
    pub fn eject(&self, build_id: &str) {
        if let Some(i) = self.builds.iter().position(|(id, _, _)| id == build_id) {
            self.ejected[i].store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Restores an ejected build (a probe of it succeeded).
    pub fn restore(&self, build_id: &str) {
        if let Some(i) = self.builds.iter().position(|(id, _, _)| id == build_id) {
            self.ejected[i].store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether a build is ejected.
    pub fn is_ejected(&self, build_id: &str) -> bool {
        self.builds
            .iter()
            .position(|(id, _, _)| id == build_id)
            .is_some_and(|i| self.ejected[i].load(std::sync::atomic::Ordering::Acquire))
    }

    /// The route table version in use (0 without a table).
    pub fn version(&self) -> u64 {
        self.table.as_ref().map_or(0, |t| t.version)
    }

    /// The client of a build of the current table (or of the single build).
    pub fn build(&self, build_id: &str) -> Option<&Upstream> {
        if self.table.is_none() {
            return self
                .known_good
                .as_ref()
                .filter(|k| k.build_id() == Some(build_id));
        }
        self.builds
            .iter()
            .find(|(id, _, _)| id == build_id)
            .map(|(_, _, upstream)| upstream)
    }

    /// The build that serves an affinity key: the weighted, sticky choice of the
    /// table, or the single build.
    pub fn pick(&self, affinity: &[u8]) -> Option<&Upstream> {
        let Some(table) = &self.table else {
            return self.known_good.as_ref();
        };
        let chosen = pick(table, affinity)?;
        let index = self
            .builds
            .iter()
            .position(|(id, _, _)| *id == chosen.build_id);
        match index {
            Some(i) if !self.ejected[i].load(std::sync::atomic::Ordering::Acquire) => {
                Some(&self.builds[i].2)
            }
            _ => self.known_good.as_ref(),
        }
    }
}

/// Where an edge keeps its last good route table.
pub fn table_file(data_dir: &Path) -> PathBuf {
    data_dir.join("routes.json")
}

/// Reads the last good route table, if one was kept.
pub fn load_table(data_dir: &Path) -> Option<RouteTable> {
    let text = std::fs::read(table_file(data_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Keeps a route table on disk, atomically.
pub fn save_table(data_dir: &Path, table: &RouteTable) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = table_file(data_dir);
    let temp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?;
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&text)?;
        file.sync_all()?;
    }
    std::fs::rename(temp, path)
}
