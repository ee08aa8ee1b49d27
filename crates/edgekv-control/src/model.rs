//! Builds, deployments, steps and phases.

use serde::{Deserialize, Serialize};

/// One version of the origin service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Unique across every environment.
    pub build_id: String,
    /// The version string it reports.
    pub version: String,
    /// The environment it belongs to.
    pub environment: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The digest of its artifact.
    pub artifact_digest: String,
    /// Where it listens.
    pub endpoints: Vec<String>,
}

/// One step of a deployment: the new build's share, held for a bake time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The new build's share, in basis points.
    pub weight_bp: u32,
    /// How long the step must hold while healthy before the next, in ms.
    pub bake_ms: u64,
}

/// Where a deployment is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Serving `steps[step]`, since `since_ms`.
    Running {
        /// The index of the current step.
        step: usize,
        /// When the step started (or resumed), Unix ms.
        since_ms: u64,
    },
    /// Held at a step by an operator.
    Paused {
        /// The index of the held step.
        step: usize,
    },
    /// Held 100% for its bake time while healthy: the build is known-good.
    Completed,
    /// Stopped by an operator; traffic went back to known-good.
    Aborted {
        /// Why.
        reason: String,
    },
    /// Rolled back to known-good, by an operator or by health analysis.
    RolledBack {
        /// Why, with the evidence.
        reason: String,
    },
}

impl Phase {
    /// Whether the deployment still shapes traffic (running or paused).
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Running { .. } | Phase::Paused { .. })
    }
}

/// A progressive deployment of one build in one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Unique id.
    pub id: String,
    /// The environment it deploys to.
    pub environment: String,
    /// The tenant it deploys to.
    pub tenant: String,
    /// The build being deployed.
    pub build_id: String,
    /// The known-good build when it started (none for a bootstrap).
    pub known_good: Option<String>,
    /// The steps, e.g. 1% → 10% → 50% → 100%.
    pub steps: Vec<Step>,
    /// Where it is.
    pub phase: Phase,
    /// When it was created, Unix ms.
    pub created_ms: u64,
    /// What happened, in order: a line per transition, for `deploy status`.
    pub history: Vec<String>,
    /// The health analysis' thresholds for this deployment.
    #[serde(default)]
    pub thresholds: crate::health::Thresholds,
}

impl Deployment {
    /// Whether this is the environment's first deployment: its build is
    /// provisionally known-good from the start.
    pub fn is_bootstrap(&self) -> bool {
        self.known_good.is_none()
    }
}
