//! The TOML config file. Its values sit under `EDGEKV_*` variables and flags: a
//! flag or variable that is given wins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use edgekv_edge::EdgeConfig;
use serde::Deserialize;

/// The whole config file. Every table is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[edge]`: the edge role (also the edge inside `edgekv dev`).
    #[serde(default)]
    pub edge: Option<EdgeConfig>,
    /// `[origin]`: the origin role (builds come from flags).
    #[serde(default)]
    pub origin: Option<edgekv_origin::OriginConfig>,
    /// `[dev]`: the embedded default.
    #[serde(default)]
    pub dev: DevConfig,
}

/// `[dev]`: where `edgekv dev` listens and keeps its data, and who it serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevConfig {
    /// Where the KV API listens.
    pub http: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin: SocketAddr,
    /// Where all data is kept; each role has a folder inside.
    pub data_dir: PathBuf,
    /// The account the printed token acts for.
    pub account: String,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8787)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8788)),
            data_dir: PathBuf::from("./edgekv-data"),
            account: "dev".into(),
        }
    }
}

impl File {
    /// Reads the config file, or the defaults when none is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<File> {
        let Some(path) = path else {
            return Ok(File::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses config text and checks every role table in it.
    pub fn parse(text: &str) -> anyhow::Result<File> {
        let file: File = toml::from_str(text)?;
        if let Some(edge) = &file.edge {
            edge.validate_local()
                .map_err(|e| anyhow::anyhow!("[edge]: {e}"))?;
        }
        Ok(file)
    }
}
