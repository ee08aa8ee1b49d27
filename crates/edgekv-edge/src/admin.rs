//! The admin listener: `/healthz`, `/readyz`, `/metrics` and `/status`.
//!
//! It is a separate listener so operators can firewall it apart from the KV API.

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::Edge;
use crate::http::Body;
use crate::server::text;

/// Answers one admin request.
pub fn handle<B>(edge: &Edge, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness(edge) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => text(StatusCode::OK, edge.metrics().render(&edge.hot().stats())),
        "/status" => {
            let hot = edge.hot().stats();
            let body = json!({
                "ready": readiness(edge).is_ok(),
                "token_table_version": edge.tokens_version(),
                "node_id": edge.node_id(),
                "known_good": edge.routes().known_good.as_ref().map(|k| k.url().to_string()),
                "build": edge.routes().known_good.as_ref().and_then(|k| k.build_id().map(str::to_string)),
                "route_version": edge.routes().version(),
                "feed": {
                    "connected": edge.feed().connected(),
                    "synced": edge.feed().synced(),
                    "applied_revision": edge.feed().applied(),
                    "snapshots_loaded": edge.feed().snapshots(),
                    "fresh": edge.usable(Some(0)),
                },
                "hot_tier": { "entries": hot.entries, "bytes": hot.bytes, "capacity": hot.capacity },
            });
            let mut response = text(StatusCode::OK, body.to_string());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics, /status\n",
        ),
    }
}

/// Why the edge cannot serve yet, if it cannot.
fn readiness(edge: &Edge) -> Result<(), &'static str> {
    if edge.tokens_is_empty() {
        return Err("no token table");
    }
    if !edge.feed().synced() {
        return Err("the change feed has not loaded its first snapshot");
    }
    Ok(())
}
