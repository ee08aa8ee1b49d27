//! The control plane's state, one JSON document, kept where a [`StateStore`] puts
//! it: a file written atomically ([`StateFile`]: a new version goes to a
//! temporary file, is fsynced, and renamed over the old one, so a crash leaves
//! either the old state or the new, never half of one), or a row of a PostgreSQL
//! database written under a lease ([`SharedState`]: an active control writes it,
//! a standby takes the lease and reads it when the active one dies).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Build, Deployment};

/// Why the state could not be read, written or changed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("control state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not a control state.
    #[error("control state {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A build id is taken by a different build.
    #[error(
        "build id {0:?} is already registered with other content (environment, tenant, digest or endpoints)"
    )]
    BuildConflict(String),
    /// A listing did not name its environment and tenant.
    #[error("environment and tenant are both required")]
    ScopeRequired,
    /// The database holding the state failed, or this control lost its lease.
    #[error("control state in the database: {0}")]
    Database(String),
}

/// Where control keeps its state.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Reads the state; none kept yet is an empty state.
    fn load(&self) -> Result<ControlState, StateError>;
    /// Writes the state atomically and durably.
    fn save(&self, state: &ControlState) -> Result<(), StateError>;
}

impl StateStore for StateFile {
    fn load(&self) -> Result<ControlState, StateError> {
        StateFile::load(self)
    }

    fn save(&self, state: &ControlState) -> Result<(), StateError> {
        StateFile::save(self, state)
    }
}

/// Control's state as a document of a PostgreSQL database, written on the
/// connection that holds the control lease: once the lease is lost, no write of
/// this control lands.
#[derive(Debug)]
pub struct SharedState {
    lease: edgekv_store_postgres::lease::PgLease,
}

/// The lease two controls of one database compete for.
pub const CONTROL_LEASE: &str = "control";

impl SharedState {
    /// Waits until this control holds the lease of the database at `url`
    /// (blocking: as long as another control holds it), calling `waiting` once
    /// when it starts to wait.
    pub fn acquire(url: &str, waiting: &mut dyn FnMut()) -> Result<Self, StateError> {
        let lease = edgekv_store_postgres::lease::PgLease::acquire(url, CONTROL_LEASE, waiting)
            .map_err(|e| StateError::Database(e.to_string()))?;
        Ok(SharedState { lease })
    }

    /// The database, without credentials.
    pub fn target(&self) -> &str {
        self.lease.target()
    }

    /// Calls `lost` once, with why, when the lease's connection fails: the
    /// control must stop acting (another one may take over).
    pub fn on_lost(&self, lost: Box<dyn Fn(String) + Send + Sync>) {
        self.lease.on_lost(lost);
    }
}

impl StateStore for SharedState {
    fn load(&self) -> Result<ControlState, StateError> {
        let corrupt = |reason: String| StateError::Corrupt {
            path: PathBuf::from(format!("{} (edgekv_documents)", self.lease.target())),
            reason,
        };
        match self
            .lease
            .load()
            .map_err(|e| StateError::Database(e.to_string()))?
        {
            None => Ok(ControlState::default()),
            Some(body) => serde_json::from_slice(&body).map_err(|e| corrupt(e.to_string())),
        }
    }

    fn save(&self, state: &ControlState) -> Result<(), StateError> {
        let body = serde_json::to_vec(state).map_err(|e| StateError::Database(e.to_string()))?;
        self.lease
            .save(&body)
            .map_err(|e| StateError::Database(e.to_string()))
    }
}

/// What control knows of one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The build traffic falls back to.
    pub known_good: Option<String>,
    /// Earlier known-good builds, newest last: `Rollback` defaults to the last.
    pub known_good_history: Vec<String>,
    /// The last route table version issued.
    pub route_version: u64,
}

/// A token control issued: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The SHA-256 of the token, hex.
    pub hash: String,
    /// The account it acts for.
    pub account: String,
    /// The namespaces it may touch; empty for all of the account's.
    pub namespaces: Vec<String>,
    /// Whether it may only read.
    pub read_only: bool,
    /// Whether it may use operator features.
    pub admin: bool,
    /// The environment whose edges accept the token: control sends it only in
    /// that environment's token table, so a staging token never works on a
    /// production edge. Every token issued now names one (`CreateToken` refuses
    /// a token without). Empty only in a token read from a state file written
    /// before tokens had an environment: such a token stays valid in every
    /// environment, as it was when it was issued, so an upgrade locks no client
    /// out; revoke it and issue one per environment to scope it.
    #[serde(default)]
    pub environment: String,
}

impl TokenRecord {
    /// Whether the edges of `environment` accept the token: it is that
    /// environment's, or it was issued before tokens had an environment.
    pub fn is_for(&self, environment: &str) -> bool {
        self.environment.is_empty() || self.environment == environment
    }
}

/// Everything control persists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// Every build, by id.
    pub builds: BTreeMap<String, Build>,
    /// Every deployment, oldest first.
    pub deployments: Vec<Deployment>,
    /// Per environment.
    pub environments: BTreeMap<String, Environment>,
    /// Issued tokens by name.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    /// The token table's version: it goes up with every create and revoke.
    #[serde(default)]
    pub token_version: u64,
}

impl ControlState {
    /// Registers a build. Registering the same build again changes nothing (what
    /// control learnt of it, its data set, stays); a different build under a taken
    /// id is refused.
    pub fn register_build(&mut self, build: Build) -> Result<bool, StateError> {
        match self.builds.get(&build.build_id) {
            Some(held) if held.same_registration(&build) => Ok(false),
            Some(_) => Err(StateError::BuildConflict(build.build_id)),
            None => {
                self.builds.insert(build.build_id.clone(), build);
                Ok(true)
            }
        }
    }

    /// The builds of one environment and tenant — never another's.
    pub fn list_builds(&self, environment: &str, tenant: &str) -> Result<Vec<&Build>, StateError> {
        if environment.trim().is_empty() || tenant.trim().is_empty() {
            return Err(StateError::ScopeRequired);
        }
        Ok(self
            .builds
            .values()
            .filter(|b| b.environment == environment && b.tenant == tenant)
            .collect())
    }
}

/// The file that holds a [`ControlState`].
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file `control.json` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        StateFile {
            path: dir.join("control.json"),
        }
    }

    /// Reads the state; an absent file is an empty state.
    pub fn load(&self) -> Result<ControlState, StateError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ControlState::default());
            }
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, state: &ControlState) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let temp = self.path.with_extension("json.tmp");
        {
            let mut file = std::fs::File::create(&temp).map_err(io)?;
            file.write_all(&text).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&temp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Phase, Step};

    fn build(id: &str, environment: &str) -> Build {
        Build {
            build_id: id.into(),
            version: "1".into(),
            environment: environment.into(),
            tenant: environment.into(),
            artifact_digest: "sha256:x".into(),
            endpoints: vec!["http://x:1".into()],
            data_set: String::new(),
        }
    }

    /// The 2023 bug: look-alike ids in two environments; a listing of one never
    /// shows the other's.
    #[test]
    fn listings_never_mix_environments() {
        let mut state = ControlState::default();
        state
            .register_build(build("kv-1030", "production"))
            .unwrap();
        state
            .register_build(build("kv-1030-staging", "staging"))
            .unwrap();
        let production = state.list_builds("production", "production").unwrap();
        assert_eq!(
            production
                .iter()
                .map(|b| b.build_id.as_str())
                .collect::<Vec<_>>(),
            ["kv-1030"]
        );
        assert!(
            state
                .list_builds("production", "staging")
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            state.list_builds("", "production"),
            Err(StateError::ScopeRequired)
        ));
        assert!(matches!(
            state.list_builds("production", " "),
            Err(StateError::ScopeRequired)
        ));
    }

    #[test]
    fn a_taken_build_id_is_refused() {
        let mut state = ControlState::default();
        assert!(state.register_build(build("v1", "production")).unwrap());
        assert!(
            !state.register_build(build("v1", "production")).unwrap(),
            "idempotent"
        );
        assert!(matches!(
            state.register_build(build("v1", "staging")),
            Err(StateError::BuildConflict(_))
        ));
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        assert_eq!(file.load().unwrap(), ControlState::default());
        let mut state = ControlState::default();
        state.register_build(build("v1", "production")).unwrap();
        state.deployments.push(Deployment {
            id: "d1".into(),
            environment: "production".into(),
            tenant: "production".into(),
            build_id: "v1".into(),
            known_good: None,
            steps: vec![Step {
                weight_bp: 10_000,
                bake_ms: 0,
            }],
            phase: Phase::RolledBack {
                reason: "breach: 401s".into(),
            },
            created_ms: 5,
            history: vec!["5: created".into()],
            thresholds: Default::default(),
        });
        state.environments.insert(
            "production".into(),
            Environment {
                known_good: Some("v1".into()),
                known_good_history: vec![],
                route_version: 12,
            },
        );
        file.save(&state).unwrap();
        assert_eq!(StateFile::in_dir(dir.path()).load().unwrap(), state);
        std::fs::write(dir.path().join("control.json"), b"{ half a state").unwrap();
        assert!(matches!(file.load(), Err(StateError::Corrupt { .. })));
    }

    /// A token of a state file written before tokens had an environment still
    /// loads, and stays valid in every environment (as it was when issued); a
    /// token of today is valid in its own environment only.
    #[test]
    fn a_token_without_an_environment_is_valid_everywhere_and_one_with_is_only_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("control.json"),
            br#"{"builds": {}, "deployments": [], "environments": {},
                "tokens": {"old": {"hash": "ab", "account": "acct", "namespaces": [],
                                   "read_only": false, "admin": false}},
                "token_version": 3}"#,
        )
        .unwrap();
        let state = StateFile::in_dir(dir.path()).load().unwrap();
        let old = &state.tokens["old"];
        assert_eq!(old.environment, "");
        assert!(old.is_for("production") && old.is_for("staging"));
        let staging = TokenRecord {
            environment: "staging".into(),
            ..old.clone()
        };
        assert!(staging.is_for("staging"));
        assert!(!staging.is_for("production"));
        assert!(!staging.is_for(""));
    }
}
