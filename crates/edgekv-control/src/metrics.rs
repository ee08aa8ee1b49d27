//! Control's figures in Prometheus text (pure: the listener in [`crate::http`]
//! gathers the inputs): deployments by phase, the active ones' step, weight and
//! verdict, rollbacks by a bounded class of reason, edges connected and behind,
//! and the route and token table versions.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Deployment, Phase};
use crate::rollout::Health;
use crate::service::EdgeAck;

/// What the figures are computed from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Every deployment.
    pub deployments: &'a [Deployment],
    /// Per active deployment id, the health analysis' verdict now.
    pub verdicts: BTreeMap<String, Health>,
    /// Per environment, per edge, its last word on route tables.
    pub acks: &'a BTreeMap<String, BTreeMap<String, EdgeAck>>,
    /// Per environment, the last route table version issued.
    pub route_versions: BTreeMap<String, u64>,
    /// The token table's version.
    pub token_version: u64,
}

/// The phases, as the `phase` label spells them.
const PHASES: [&str; 5] = ["running", "paused", "completed", "aborted", "rolled_back"];

/// A phase as the `phase` label (and the dashboard) spells it.
pub(crate) fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Running { .. } => "running",
        Phase::Paused { .. } => "paused",
        Phase::Completed => "completed",
        Phase::Aborted { .. } => "aborted",
        Phase::RolledBack { .. } => "rolled_back",
    }
}

/// An automatic rollback's reason in one of a few classes, so that the label
/// stays bounded (the reason itself, with its evidence, is in `deploy status`).
pub fn reason_class(reason: &str) -> &'static str {
    let reason = reason.to_ascii_lowercase();
    if reason.contains("data set") {
        "data_set"
    } else if reason.contains("404 rate") {
        "not_found_rate"
    } else if reason.contains("4xx rate") {
        "client_error_rate"
    } else if reason.contains("p99") || reason.contains("latency") {
        "latency"
    } else if reason.contains("ejected") {
        "ejected"
    } else if reason.contains("fail") || reason.contains("error rate") {
        "errors"
    } else {
        "other"
    }
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The figures, in Prometheus text format.
pub fn render(inputs: &Inputs<'_>) -> String {
    fn family(out: &mut String, name: &str, kind: &str, help: &str) -> String {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        name.to_string()
    }
    let mut out = String::new();
    let environments: std::collections::BTreeSet<&str> = (inputs.deployments.iter())
        .map(|d| d.environment.as_str())
        .chain(inputs.route_versions.keys().map(String::as_str))
        .chain(inputs.acks.keys().map(String::as_str))
        .collect();

    let name = family(
        &mut out,
        "edgekv_control_deployments",
        "gauge",
        "Deployments by environment and phase.",
    );
    let mut lines = String::new();
    for environment in &environments {
        for phase in PHASES {
            let count = (inputs.deployments.iter())
                .filter(|d| d.environment == *environment && phase_name(&d.phase) == phase)
                .count();
            let _ = writeln!(
                lines,
                "{name}{{environment=\"{}\",phase=\"{phase}\"}} {count}",
                label(environment)
            );
        }
    }
    let _ = write!(out, "{lines}");

    let name = family(
        &mut out,
        "edgekv_control_rollbacks_total",
        "counter",
        "Deployments rolled back, by environment and class of reason (the reason is in deploy status).",
    );
    let mut rollbacks: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for d in inputs.deployments {
        if let Phase::RolledBack { reason } = &d.phase {
            // An operator's rollback carries the operator's own words: its class
            // comes from the history line that records who rolled back.
            let by_operator = (d.history.iter().rev())
                .find(|line| line.contains("rolled back"))
                .is_some_and(|line| line.contains("by an operator"));
            let class = if by_operator {
                "operator"
            } else {
                reason_class(reason)
            };
            *rollbacks
                .entry((d.environment.as_str(), class))
                .or_default() += 1;
        }
    }
    for ((environment, class), count) in &rollbacks {
        let _ = writeln!(
            out,
            "{name}{{environment=\"{}\",reason=\"{class}\"}} {count}",
            label(environment)
        );
    }

    let active: Vec<&Deployment> = (inputs.deployments.iter())
        .filter(|d| d.phase.is_active())
        .collect();
    let name = family(
        &mut out,
        "edgekv_control_deployment_step",
        "gauge",
        "The step an active deployment is at (0 is the first).",
    );
    for d in &active {
        let step = match d.phase {
            Phase::Running { step, .. } | Phase::Paused { step } => step,
            _ => 0,
        };
        let _ = writeln!(
            out,
            "{name}{{environment=\"{}\",deployment=\"{}\",build=\"{}\"}} {step}",
            label(&d.environment),
            label(&d.id),
            label(&d.build_id)
        );
    }
    let name = family(
        &mut out,
        "edgekv_control_deployment_weight_ratio",
        "gauge",
        "The share of traffic an active deployment's build gets now (0 to 1).",
    );
    for d in &active {
        let step = match d.phase {
            Phase::Running { step, .. } | Phase::Paused { step } => step,
            _ => 0,
        };
        let weight = d.steps.get(step).map_or(0, |s| s.weight_bp);
        let _ = writeln!(
            out,
            "{name}{{environment=\"{}\",deployment=\"{}\",build=\"{}\"}} {}",
            label(&d.environment),
            label(&d.id),
            label(&d.build_id),
            f64::from(weight) / 10_000.0
        );
    }
    let name = family(
        &mut out,
        "edgekv_control_deployment_verdict",
        "gauge",
        "1 for the health analysis' verdict on an active deployment now.",
    );
    for d in &active {
        let verdict = match inputs.verdicts.get(&d.id) {
            Some(Health::Healthy) => "healthy",
            Some(Health::Inconclusive(_)) => "inconclusive",
            Some(Health::Breach(_)) => "breach",
            None => continue,
        };
        for candidate in ["healthy", "inconclusive", "breach"] {
            let _ = writeln!(
                out,
                "{name}{{environment=\"{}\",deployment=\"{}\",verdict=\"{candidate}\"}} {}",
                label(&d.environment),
                label(&d.id),
                u8::from(candidate == verdict)
            );
        }
    }

    let name = family(
        &mut out,
        "edgekv_control_route_version",
        "gauge",
        "The last route table version issued, per environment.",
    );
    for (environment, version) in &inputs.route_versions {
        let _ = writeln!(
            out,
            "{name}{{environment=\"{}\"}} {version}",
            label(environment)
        );
    }
    let name = family(
        &mut out,
        "edgekv_control_edges_connected",
        "gauge",
        "Edges with a route stream open, per environment.",
    );
    let mut behind_lines = String::new();
    let mut nacking_lines = String::new();
    for environment in &environments {
        let edges = inputs.acks.get(*environment);
        let connected: Vec<&EdgeAck> = edges
            .map(|e| e.values().filter(|a| a.left_ms.is_none()).collect())
            .unwrap_or_default();
        let current = inputs
            .route_versions
            .get(*environment)
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}{{environment=\"{}\"}} {}",
            label(environment),
            connected.len()
        );
        let behind = connected.iter().filter(|a| a.version < current).count();
        let nacking = connected.iter().filter(|a| a.nack.is_some()).count();
        let _ = writeln!(
            behind_lines,
            "edgekv_control_edges_behind{{environment=\"{}\"}} {behind}",
            label(environment)
        );
        let _ = writeln!(
            nacking_lines,
            "edgekv_control_edges_nacking{{environment=\"{}\"}} {nacking}",
            label(environment)
        );
    }
    family(
        &mut out,
        "edgekv_control_edges_behind",
        "gauge",
        "Connected edges whose ACKed route table is older than the last issued.",
    );
    let _ = write!(out, "{behind_lines}");
    family(
        &mut out,
        "edgekv_control_edges_nacking",
        "gauge",
        "Connected edges whose last word was a NACK (they refused the table).",
    );
    let _ = write!(out, "{nacking_lines}");
    let name = family(
        &mut out,
        "edgekv_control_token_table_version",
        "gauge",
        "The token table's version.",
    );
    let _ = writeln!(out, "{name} {}", inputs.token_version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fall_in_bounded_classes() {
        assert_eq!(
            reason_class("404 rate 40.0% is above 200% of known-good's"),
            "not_found_rate"
        );
        assert_eq!(
            reason_class("kv-v2 answers for data set a, the edges follow b"),
            "data_set"
        );
        assert_eq!(reason_class("p99 latency 900 ms is above"), "latency");
        assert_eq!(reason_class("something new"), "other");
    }

    #[test]
    fn an_empty_control_renders_its_families() {
        let acks = BTreeMap::new();
        let text = render(&Inputs {
            deployments: &[],
            verdicts: BTreeMap::new(),
            acks: &acks,
            route_versions: BTreeMap::new(),
            token_version: 3,
        });
        assert!(text.contains("# TYPE edgekv_control_deployments gauge"));
        assert!(text.contains("edgekv_control_token_table_version 3"));
        assert!(!text.contains("NaN"));
    }
}
