//! The rollout dashboard on control's `--http` listener: a page (plain HTML,
//! CSS and a little JavaScript, compiled into the binary) that polls
//! `/api/state` every second, and the operator actions it offers.
//!
//! Reading needs no credential, as `/metrics` does not: bind the listener
//! where only operators reach it. Acting — pause, resume, abort, rollback —
//! needs an admin token in `Authorization: Bearer`, the same tokens the gRPC
//! service takes; the page keeps the one typed in the browser's session
//! storage only. A token in a header (never a cookie) also means no other
//! site's page can make a browser act here.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::controller::ControlError;
use crate::metrics::phase_name;
use crate::model::Phase;
use crate::service::ControlService;
use crate::view::{deployment_json, figures_json};

/// The page.
pub const PAGE: &str = include_str!("dashboard/page.html");

/// How many ended deployments of an environment the page shows, newest first.
const HISTORY: usize = 20;

/// Everything the page draws, per environment.
pub fn state(service: &ControlService) -> Value {
    let controller = service.controller();
    let now = controller.now_ms();
    let deployments = controller.deployments(None);
    let route_versions = controller.route_versions();
    let acks = service.acks().lock().clone();
    let token_acks = service.token_acks().lock().clone();
    let analyzer = service.analyzer();
    let (token_version, _) = controller.tokens();
    let environments: BTreeSet<String> = (deployments.iter().map(|d| d.environment.clone()))
        .chain(route_versions.keys().cloned())
        .chain(acks.keys().cloned())
        .collect();
    let environments: Vec<Value> = environments
        .into_iter()
        .map(|environment| {
            let tenant = controller.tenant_of(&environment).unwrap_or_default();
            let builds: Vec<Value> = controller
                .list_builds(&environment, &tenant)
                .unwrap_or_default()
                .into_iter()
                .map(|b| {
                    json!({
                        "build_id": b.build_id, "version": b.version,
                        "environment": b.environment, "tenant": b.tenant,
                        "data_set": b.data_set, "endpoints": b.endpoints,
                    })
                })
                .collect();
            let mut mine: Vec<_> = (deployments.iter())
                .filter(|d| d.environment == environment)
                .cloned()
                .collect();
            mine.sort_by_key(|d| std::cmp::Reverse(d.created_ms));
            let active = mine.iter().find(|d| d.phase.is_active()).map(|d| {
                let figures = analyzer.figures(
                    &d.environment,
                    &d.build_id,
                    d.known_good.as_deref().or(Some(&d.build_id)),
                    d.thresholds.window_ms,
                    now,
                );
                let mut view = deployment_json(&service.deployment(d.clone()));
                view["figures"] = figures_json(&figures);
                view
            });
            let history: Vec<Value> = (mine.iter())
                .filter(|d| !d.phase.is_active())
                .take(HISTORY)
                .map(|d| {
                    let mut view = deployment_json(&service.deployment(d.clone()));
                    view["created_ms"] = d.created_ms.into();
                    if let Phase::RolledBack { reason } | Phase::Aborted { reason } = &d.phase {
                        view["reason"] = reason.clone().into();
                    }
                    view
                })
                .collect();
            let pins = analyzer.pins(&environment, now);
            let tokens = token_acks.get(&environment);
            let edges: Vec<Value> = (acks.get(&environment).into_iter().flatten())
                .map(|(node, ack)| {
                    let token = tokens.and_then(|t| t.get(node));
                    json!({
                        "node": node,
                        "route_version": ack.version,
                        "route_nack": ack.nack,
                        "connected": ack.left_ms.is_none(),
                        "left_ms": ack.left_ms,
                        "token_version": token.map(|(version, _)| *version),
                        "token_nack": token.and_then(|(_, nack)| nack.clone()),
                        "pin": pins.get(node).map(|(build, until)| json!({"build": build, "until_ms": until})),
                    })
                })
                .collect();
            json!({
                "name": environment,
                "tenant": tenant,
                "known_good": controller.known_good(&environment),
                "route_version": route_versions.get(&environment),
                "builds": builds,
                "active": active,
                "history": history,
                "edges": edges,
            })
        })
        .collect();
    json!({
        "now_ms": now,
        "token_version": token_version,
        "environments": environments,
    })
}

/// An operator action, as the page posts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `POST /api/deployments/{id}/pause`
    Pause(String),
    /// `POST /api/deployments/{id}/resume`
    Resume(String),
    /// `POST /api/deployments/{id}/abort`, `{"reason"}`
    Abort(String),
    /// `POST /api/environments/{environment}/rollback`, `{"reason", "to"?}`
    Rollback(String),
}

impl Action {
    /// The action a POST path names, if any.
    pub fn parse(path: &str) -> Option<Action> {
        let rest = path.strip_prefix("/api/")?;
        let (kind, rest) = rest.split_once('/')?;
        let (name, verb) = rest.split_once('/')?;
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .ok()?
            .into_owned();
        if name.is_empty() {
            return None;
        }
        match (kind, verb) {
            ("deployments", "pause") => Some(Action::Pause(name)),
            ("deployments", "resume") => Some(Action::Resume(name)),
            ("deployments", "abort") => Some(Action::Abort(name)),
            ("environments", "rollback") => Some(Action::Rollback(name)),
            _ => None,
        }
    }
}

/// The body of an action (every field optional).
#[derive(Debug, Default, Deserialize)]
struct Body {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    to: String,
}

/// An action's outcome: the HTTP status and a JSON body (`error` on refusal).
pub fn act(
    service: &ControlService,
    token: Option<&str>,
    action: Action,
    body: &[u8],
) -> (u16, Value) {
    match token {
        Some(token) if service.is_admin(token) => {}
        Some(_) => {
            tracing::warn!(action = ?action, "dashboard action refused: not an admin token");
            return (401, json!({"error": "not an admin token of this control"}));
        }
        None => {
            return (
                401,
                json!({"error": "an admin token is needed: the dashboard is read-only without one"}),
            );
        }
    }
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(body) => body,
            Err(err) => {
                return (
                    400,
                    json!({"error": format!("the body is not JSON: {err}")}),
                );
            }
        }
    };
    let reason = |default: &str| {
        let reason = body.reason.trim();
        if reason.is_empty() {
            default.to_string()
        } else {
            format!("{reason} (by an operator, from the dashboard)")
        }
    };
    let controller = service.controller();
    let what = format!("{action:?}");
    let outcome = match action {
        Action::Pause(id) => controller
            .pause(&id)
            .map(|d| json!({"phase": phase_name(&d.phase), "id": d.id})),
        Action::Resume(id) => controller
            .resume(&id)
            .map(|d| json!({"phase": phase_name(&d.phase), "id": d.id})),
        Action::Abort(id) => controller
            .abort(&id, &reason("aborted by an operator, from the dashboard"))
            .map(|d| json!({"phase": phase_name(&d.phase), "id": d.id})),
        Action::Rollback(environment) => {
            let to = (!body.to.trim().is_empty()).then_some(body.to.trim());
            controller
                .rollback(
                    &environment,
                    to,
                    &reason("rolled back by an operator, from the dashboard"),
                )
                .map(|known_good| json!({"known_good": known_good}))
        }
    };
    match outcome {
        Ok(value) => {
            tracing::info!(action = %what, reason = %body.reason, "dashboard action done");
            (200, value)
        }
        Err(err) => {
            let status = match &err {
                ControlError::NotFound(_) => 404,
                ControlError::Invalid(_) | ControlError::Refused(_) => 409,
                ControlError::State(_) => 500,
            };
            tracing::warn!(action = %what, error = %err, "dashboard action refused");
            (status, json!({"error": err.to_string()}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_by_their_paths() {
        assert_eq!(
            Action::parse("/api/deployments/dev-2/pause"),
            Some(Action::Pause("dev-2".into()))
        );
        assert_eq!(
            Action::parse("/api/deployments/a%20b/abort"),
            Some(Action::Abort("a b".into()))
        );
        assert_eq!(
            Action::parse("/api/environments/production/rollback"),
            Some(Action::Rollback("production".into()))
        );
        for path in [
            "/api/deployments//pause",
            "/api/deployments/x/delete",
            "/api/environments/x/pause",
            "/api/state",
            "/api/deployments/%FF/pause",
        ] {
            assert_eq!(Action::parse(path), None, "{path}");
        }
    }
}
