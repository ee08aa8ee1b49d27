//! Deployments and health figures as JSON: what `edgekv deploy status --json`
//! prints and what the dashboard ([`crate::dashboard`]) draws.

use edgekv_proto::v1;
use serde_json::{Value, json};

use crate::health::{Figures, Totals};

/// A deployment as JSON.
pub fn deployment_json(d: &v1::Deployment) -> Value {
    json!({
        "id": d.id, "environment": d.environment, "tenant": d.tenant, "build_id": d.build_id,
        "known_good": d.known_good, "current_known_good": d.current_known_good,
        "data_set": d.data_set, "phase": d.phase, "step": d.step, "reason": d.reason,
        "steps": d.steps.iter().map(|s| json!({"weight_bp": s.weight_bp, "bake_ms": s.bake_ms})).collect::<Vec<_>>(),
        "acked": d.acked, "departed": d.departed, "history": d.history, "health": d.health, "pins": d.pins,
        "step_since_ms": d.step_since_ms, "now_ms": d.now_ms,
        "thresholds": d.thresholds.as_ref().map(|t| json!({
            "window_ms": t.window_ms, "min_requests": t.min_requests, "max_error_bp": t.max_error_bp,
            "relative_error_pct": t.relative_error_pct, "max_p99_ms": t.max_p99_ms,
            "relative_p99_pct": t.relative_p99_pct,
        })),
    })
}

/// One build's figures as JSON: requests, error rates by class (per cent),
/// p99.
pub fn totals_json(t: &Totals) -> Value {
    let pct = |count: u64| {
        count
            .saturating_mul(10_000)
            .checked_div(t.requests)
            .map_or(0.0, |bp| bp as f64 / 100.0)
    };
    json!({
        "requests": t.requests,
        "error_pct": pct(t.errors()),
        "auth_pct": pct(t.faults[0]),
        "unavailable_pct": pct(t.faults[1]),
        "deadline_pct": pct(t.faults[2]),
        "other_pct": pct(t.faults[3]),
        "not_found_pct": pct(t.not_found),
        "client_error_pct": pct(t.client_errors),
        "p99_ms": t.p99_ms(),
        "last_error": t.last_error,
    })
}

/// What a verdict was judged from, as JSON.
pub fn figures_json(f: &Figures) -> Value {
    json!({
        "deploying": totals_json(&f.deploying),
        "known_good": totals_json(&f.known_good),
        "reporting": f.reporting,
        "left_out": f.left_out,
        "ejected": f.ejected.as_ref().map(|(node, why)| json!({"node": node, "why": why})),
    })
}
