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
    /// The data set its endpoints answered with when control last probed them;
    /// empty until control could probe it. Learnt by control, never given.
    #[serde(default)]
    pub data_set: String,
}

impl Build {
    /// Whether two registrations describe the same build: everything the
    /// operator gives (not what control learnt since).
    pub fn same_registration(&self, other: &Build) -> bool {
        Build {
            data_set: String::new(),
            ..self.clone()
        } == Build {
            data_set: String::new(),
            ..other.clone()
        }
    }
}

/// Formats Unix milliseconds as an RFC 3339 UTC time, e.g.
/// `2026-12-07T06:31:24.123Z`: what operators read in `deploy status`.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
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
    /// Held at a step by an operator (still judged: a breach rolls it back).
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

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_698_675_321_042), "2023-10-30T14:15:21.042Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
