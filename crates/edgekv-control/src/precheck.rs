//! The checks that refuse a deployment before any traffic moves, each with a
//! message that names the reason.

use edgekv_routing::WEIGHT_TOTAL;

use crate::model::{Build, Deployment, Step};

/// Why a deployment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No build of this id is registered.
    #[error("build {0:?} is not registered")]
    UnknownBuild(String),
    /// The build belongs to another environment (the 2023 failure).
    #[error("build {build_id} belongs to environment {build_environment:?}, not {environment:?}")]
    WrongEnvironment {
        /// The build.
        build_id: String,
        /// Its environment.
        build_environment: String,
        /// The deployment's.
        environment: String,
    },
    /// The build belongs to another tenant.
    #[error("build {build_id} belongs to tenant {build_tenant:?}, not {tenant:?}")]
    WrongTenant {
        /// The build.
        build_id: String,
        /// Its tenant.
        build_tenant: String,
        /// The deployment's.
        tenant: String,
    },
    /// An endpoint of the build failed a health probe made with the target
    /// environment's credential.
    #[error(
        "build {build_id} failed its health probe at {endpoint} with the {environment} credential: {reason}"
    )]
    HealthFailed {
        /// The build.
        build_id: String,
        /// The endpoint probed.
        endpoint: String,
        /// The environment whose credential was used.
        environment: String,
        /// What the probe got.
        reason: String,
    },
    /// The build serves another data set than known-good (an empty store, an old
    /// backup, another environment's data) and the operator did not name it.
    #[error(
        "build {build_id} serves data set {build_data_set}, but known-good {known_good} serves {known_good_data_set}; if this is a real migration to the new data set, name it: --new-data-set {build_data_set}"
    )]
    WrongDataSet {
        /// The build.
        build_id: String,
        /// Its data set, as its endpoints answered.
        build_data_set: String,
        /// The known-good build.
        known_good: String,
        /// Known-good's data set.
        known_good_data_set: String,
    },
    /// The build's endpoints answered with different data sets.
    #[error("build {build_id}'s endpoints serve different data sets: {data_sets}")]
    MixedDataSets {
        /// The build.
        build_id: String,
        /// Each endpoint and its data set.
        data_sets: String,
    },
    /// The operator named a data set the build does not serve.
    #[error(
        "--new-data-set {named} was named, but build {build_id} serves data set {build_data_set}"
    )]
    NotTheNamedDataSet {
        /// The build.
        build_id: String,
        /// What the operator named.
        named: String,
        /// What the build serves.
        build_data_set: String,
    },
    /// Another deployment is active in the environment.
    #[error("deployment {0} is still active in this environment; pause, abort or finish it first")]
    ActiveDeployment(String),
    /// The steps are not a valid rollout.
    #[error("invalid steps: {0}")]
    InvalidSteps(String),
}

/// Checks the steps: at least one, weights strictly increasing within 1..=10000,
/// ending at 10000.
pub fn steps(steps: &[Step]) -> Result<(), Refusal> {
    let Some(last) = steps.last() else {
        return Err(Refusal::InvalidSteps(
            "there must be at least one step".into(),
        ));
    };
    let mut previous = 0;
    for (i, step) in steps.iter().enumerate() {
        if step.weight_bp == 0 || step.weight_bp > WEIGHT_TOTAL {
            return Err(Refusal::InvalidSteps(format!(
                "step {} has weight {} bp; weights must be 1..=10000",
                i + 1,
                step.weight_bp
            )));
        }
        if step.weight_bp <= previous {
            return Err(Refusal::InvalidSteps(format!(
                "step {} ({} bp) does not increase on the step before ({previous} bp)",
                i + 1,
                step.weight_bp
            )));
        }
        previous = step.weight_bp;
    }
    if last.weight_bp != WEIGHT_TOTAL {
        return Err(Refusal::InvalidSteps(format!(
            "the last step must be 10000 bp (100%), not {}",
            last.weight_bp
        )));
    }
    Ok(())
}

/// Runs every pre-check but the health probe, cheapest first: the build exists,
/// belongs to the environment and tenant, no deployment is active there, the steps
/// are valid. Returns the build to probe.
pub fn check<'a>(
    builds: impl IntoIterator<Item = &'a Build>,
    deployments: impl IntoIterator<Item = &'a Deployment>,
    build_id: &str,
    environment: &str,
    tenant: &str,
    planned: &[Step],
) -> Result<&'a Build, Refusal> {
    let build = builds
        .into_iter()
        .find(|b| b.build_id == build_id)
        .ok_or_else(|| Refusal::UnknownBuild(build_id.to_string()))?;
    if build.environment != environment {
        return Err(Refusal::WrongEnvironment {
            build_id: build_id.to_string(),
            build_environment: build.environment.clone(),
            environment: environment.to_string(),
        });
    }
    if build.tenant != tenant {
        return Err(Refusal::WrongTenant {
            build_id: build_id.to_string(),
            build_tenant: build.tenant.clone(),
            tenant: tenant.to_string(),
        });
    }
    if let Some(active) = deployments
        .into_iter()
        .find(|d| d.environment == environment && d.phase.is_active())
    {
        return Err(Refusal::ActiveDeployment(active.id.clone()));
    }
    steps(planned)?;
    Ok(build)
}

/// Checks the data set the build's endpoints answered with against known-good's:
/// equal, or different and named by the operator (`new_data_set`, a real
/// migration). `known_good` is `None` for a bootstrap.
pub fn data_set(
    build_id: &str,
    build_data_set: &str,
    known_good: Option<(&str, &str)>,
    new_data_set: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(named) = new_data_set
        && named != build_data_set
    {
        return Err(Refusal::NotTheNamedDataSet {
            build_id: build_id.to_string(),
            named: named.to_string(),
            build_data_set: build_data_set.to_string(),
        });
    }
    match known_good {
        Some((known_good, known_good_data_set))
            if known_good_data_set != build_data_set && new_data_set.is_none() =>
        {
            Err(Refusal::WrongDataSet {
                build_id: build_id.to_string(),
                build_data_set: build_data_set.to_string(),
                known_good: known_good.to_string(),
                known_good_data_set: known_good_data_set.to_string(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
