//! How a deployment advances, and the route table it implies.
//!
//! A running step is promoted once it has held for its bake time with a healthy
//! verdict; an inconclusive verdict (too few requests) holds it where it is; a
//! breach rolls it back at once. The known-good build is always an entry of the
//! table, at weight 0 when the new build has all the traffic.

use edgekv_routing::{RouteEntry, RouteTable, WEIGHT_TOTAL};

use crate::model::{Build, Deployment, Phase};

/// The health analysis' verdict on the deploying build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Within thresholds, with enough requests to tell.
    Healthy,
    /// Too few requests to tell: blocks promotion, does not roll back.
    Inconclusive(String),
    /// A threshold was breached (or an edge ejected the build): roll back.
    Breach(String),
}

/// What [`advance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Moved to the step of this index.
    Stepped(usize),
    /// Held 100% for its bake time: the build is now known-good.
    Completed,
    /// Rolled back to known-good.
    RolledBack(String),
}

/// The deploying build's share of traffic now, if the deployment shapes traffic.
pub fn share(deployment: &Deployment) -> Option<u32> {
    match deployment.phase {
        Phase::Running { step, .. } | Phase::Paused { step } => {
            deployment.steps.get(step).map(|s| s.weight_bp)
        }
        Phase::Completed => Some(WEIGHT_TOTAL),
        Phase::Aborted { .. } | Phase::RolledBack { .. } => None,
    }
}

/// Advances a running deployment at `now_ms` given the health verdict. A paused
/// deployment does not advance, but is still judged: a breach rolls it back.
pub fn advance(deployment: &mut Deployment, now_ms: u64, health: &Health) -> Option<Transition> {
    let (step, since_ms) = match deployment.phase {
        Phase::Running { step, since_ms } => (step, since_ms),
        Phase::Paused { .. } if matches!(health, Health::Breach(_)) => (0, now_ms),
        _ => return None,
    };
    let transition = match health {
        Health::Breach(why) => {
            deployment.phase = Phase::RolledBack {
                reason: why.clone(),
            };
            Transition::RolledBack(why.clone())
        }
        Health::Inconclusive(_) => return None,
        Health::Healthy => {
            let bake = deployment.steps.get(step)?.bake_ms;
            if now_ms.saturating_sub(since_ms) < bake {
                return None;
            }
            if step + 1 < deployment.steps.len() {
                deployment.phase = Phase::Running {
                    step: step + 1,
                    since_ms: now_ms,
                };
                Transition::Stepped(step + 1)
            } else {
                deployment.phase = Phase::Completed;
                Transition::Completed
            }
        }
    };
    let line = match &transition {
        Transition::Stepped(i) => format!(
            "step {} of {}: {}% of traffic",
            i + 1,
            deployment.steps.len(),
            f64::from(deployment.steps[*i].weight_bp) / 100.0
        ),
        Transition::Completed => format!("completed: {} is known-good", deployment.build_id),
        Transition::RolledBack(why) => format!("rolled back automatically: {why}"),
    };
    deployment
        .history
        .push(format!("{}: {line}", crate::model::rfc3339(now_ms)));
    Some(transition)
}

fn entry(build: &Build, weight_bp: u32) -> RouteEntry {
    RouteEntry {
        build_id: build.build_id.clone(),
        environment: build.environment.clone(),
        tenant: build.tenant.clone(),
        artifact_digest: build.artifact_digest.clone(),
        weight_bp,
        endpoints: build.endpoints.clone(),
        data_set: build.data_set.clone(),
    }
}

/// The route table of an environment: known-good with the rest of the traffic,
/// the deploying build (if a deployment shapes traffic) with its share.
pub fn route_table(
    known_good: &Build,
    deploying: Option<(&Build, &Deployment)>,
    version: u64,
    issued_at: u64,
) -> RouteTable {
    let new_share = deploying
        .filter(|(build, _)| build.build_id != known_good.build_id)
        .and_then(|(build, d)| share(d).map(|s| (build, s)));
    let mut entries = vec![entry(
        known_good,
        WEIGHT_TOTAL - new_share.map_or(0, |(_, s)| s),
    )];
    if let Some((build, share)) = new_share {
        entries.push(entry(build, share));
    }
    RouteTable {
        version,
        environment: known_good.environment.clone(),
        tenant: known_good.tenant.clone(),
        issued_at,
        known_good_build: known_good.build_id.clone(),
        entries,
    }
}

/// The next route version: above everything control stored and every edge
/// reported holding, so versions never go backwards — not even when control lost
/// its store.
pub fn next_version(stored: u64, reported: impl IntoIterator<Item = u64>) -> Option<u64> {
    reported.into_iter().fold(stored, u64::max).checked_add(1)
}

#[cfg(test)]
mod tests;
