//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status`, `/outbox`
//! (depth and dead letters) and break-glass (`POST /break-glass`, a signed order).
//!
//! It is a separate listener so operators can firewall it apart from the KV API.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;
use serde_json::json;

use crate::Edge;
use crate::http::Body;
use crate::server::text;

/// The largest break-glass order accepted.
const MAX_ORDER_BYTES: usize = 16 * 1024;

/// Answers one admin request.
pub async fn handle<B>(edge: &Edge, request: Request<B>) -> Response<Body>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if request.uri().path() == "/break-glass" {
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST a signed order here\n");
        }
        let (parts, body) = request.into_parts();
        return break_glass(edge, &parts.headers, body).await;
    }
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
        "/metrics" => {
            let mut body = edge.metrics().render(&edge.hot().stats());
            render_edge_metrics(edge, &mut body);
            text(StatusCode::OK, body)
        }
        "/outbox" => {
            let stats = edge.outbox().stats(edge.clock().now_ms());
            let dead = crate::outbox::dead_letters(&**edge.store(), 1000).unwrap_or_default();
            json_response(json!({
                "depth": stats.depth,
                "bytes": stats.bytes,
                "oldest_age_ms": stats.oldest_age_ms,
                "queued": stats.queued,
                "replayed": stats.replayed,
                "superseded": stats.superseded,
                "duplicates": stats.duplicates,
                "dead_letter_count": stats.dead_letters,
                "dead_letters": dead,
            }))
        }
        "/status" => {
            let hot = edge.hot().stats();
            let body = json!({
                "ready": readiness(edge).is_ok(),
                "token_table_version": edge.tokens_version(),
                "token_nack": edge.token_nack().map(|(version, reason)| json!({ "version": version, "reason": reason })),
                "node_id": edge.node_id(),
                "known_good": edge.routes().known_good.as_ref().map(|k| k.url().to_string()),
                "build": edge.routes().known_good.as_ref().and_then(|k| k.build_id().map(str::to_string)),
                "route_version": edge.routes().version(),
                "feed": {
                    "connected": edge.feed().connected(),
                    "synced": edge.feed().synced(),
                    "applied_revision": edge.feed().applied(),
                    "snapshots_loaded": edge.feed().snapshots(),
                    "history_diverged": edge.feed().diverged(),
                    "fresh": edge.usable(Some(0)),
                },
                "hot_tier": { "entries": hot.entries, "bytes": hot.bytes, "capacity": hot.capacity },
                "outbox_depth": edge.outbox().stats(0).depth,
                "known_good_auth_failing": edge.known_good_auth_failing(),
                // The nonce names the pin: an unpin must name it (`edgekv break-glass
                // unpin` reads it here when not given `--pin`).
                "pinned": edge.pin().map(|p| json!({ "build": p.build, "until_ms": p.until_ms, "nonce": p.nonce })),
                "ejected": edge.routes().builds.iter()
                    .filter(|(id, _, _)| edge.routes().is_ejected(id))
                    .map(|(id, _, _)| id.clone())
                    .collect::<Vec<_>>(),
            });
            json_response(body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics, /status, /outbox\n",
        ),
    }
}

/// Checks and applies a break-glass order (the JSON of a signed order).
async fn break_glass<B>(edge: &Edge, headers: &http::HeaderMap, body: B) -> Response<Body>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let applied = async {
        let raw = crate::http::body::read(headers, body, MAX_ORDER_BYTES).await?;
        let signed: edgekv_breakglass::SignedOrder = serde_json::from_slice(&raw).map_err(|e| {
            crate::Error::BadRequest(format!("the body is not a signed order: {e}"))
        })?;
        edge.break_glass(&signed)
    }
    .await;
    match applied {
        Ok(applied) => json_response(json!(applied)),
        Err(err) => {
            tracing::error!(error = %err, "BREAK-GLASS: an order was refused");
            text(err.status(), format!("{}\n", err.client_message()))
        }
    }
}

fn json_response(body: serde_json::Value) -> Response<Body> {
    let mut response = text(StatusCode::OK, body.to_string());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The outbox's, the route table's and the builds' figures, in Prometheus text.
fn render_edge_metrics(edge: &Edge, out: &mut String) {
    use std::fmt::Write as _;
    let stats = edge.outbox().stats(edge.clock().now_ms());
    let (write_calls, writes_sent) = crate::upstream::write_calls();
    let gauges = [
        (
            "edgekv_origin_write_calls_total",
            "counter",
            "Calls that carried writes to origin builds since start: one carries every write waiting at once (WriteMany).",
            write_calls,
        ),
        (
            "edgekv_origin_writes_sent_total",
            "counter",
            "Writes those calls carried (a retry on another endpoint counts again); over the calls, the writes a call carried.",
            writes_sent,
        ),
        (
            "edgekv_outbox_depth",
            "gauge",
            "Writes waiting in the outbox.",
            stats.depth,
        ),
        (
            "edgekv_outbox_bytes",
            "gauge",
            "Bytes the writes waiting in the outbox take, as stored.",
            stats.bytes,
        ),
        (
            "edgekv_outbox_oldest_age_seconds",
            "gauge",
            "Age of the oldest waiting write.",
            stats.oldest_age_ms / 1000,
        ),
        (
            "edgekv_outbox_queued_total",
            "counter",
            "Writes queued since start.",
            stats.queued,
        ),
        (
            "edgekv_outbox_replayed_total",
            "counter",
            "Queued writes replayed since start.",
            stats.replayed,
        ),
        (
            "edgekv_outbox_superseded_total",
            "counter",
            "Replays the origin recorded as superseded by newer writes.",
            stats.superseded,
        ),
        (
            "edgekv_outbox_dead_letters",
            "gauge",
            "Writes in the dead-letter list.",
            stats.dead_letters,
        ),
        (
            "edgekv_route_version",
            "gauge",
            "The route table version in use.",
            edge.routes().version(),
        ),
        (
            "edgekv_known_good_auth_failing",
            "gauge",
            "1 when this edge's calls to known-good fail authentication.",
            u64::from(edge.known_good_auth_failing()),
        ),
        (
            "edgekv_pinned",
            "gauge",
            "1 while a break-glass pin is in force.",
            u64::from(edge.pin().is_some()),
        ),
        (
            "edgekv_table_save_failures_total",
            "counter",
            "Route and token tables installed that could not be kept on disk.",
            edge.metrics().table_save_failures(),
        ),
        (
            "edgekv_feed_snapshots_total",
            "counter",
            "Snapshots the change feed loaded since start (a first sync, a resync after falling behind the origin's log, or after a divergence).",
            edge.feed().snapshots(),
        ),
        (
            "edgekv_feed_history_diverged_total",
            "counter",
            "Times since start the origin's history differed from the one this edge applied (its store failed over to a replica that lacked commits, or restored); each resyncs from a snapshot. Alert on any.",
            edge.feed().diverged(),
        ),
        (
            "edgekv_namespace_refreshes_total",
            "counter",
            "Namespace lists asked of the origin for namespace ids this edge did not know (at most one per account per namespace_refresh_interval_ms).",
            edge.namespace_refreshes(),
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP edgekv_data_set_info The data set this edge follows (learnt from its feed).\n# TYPE edgekv_data_set_info gauge\nedgekv_data_set_info{{data_set=\"{}\"}} 1",
        edge.data_set().as_deref().map_or("", String::as_str)
    );
    let routes = edge.routes();
    let _ = writeln!(
        out,
        "# HELP edgekv_build_ejected 1 when this edge ejected the build.\n# TYPE edgekv_build_ejected gauge"
    );
    for (id, _, _) in &routes.builds {
        let _ = writeln!(
            out,
            "edgekv_build_ejected{{build=\"{id}\"}} {}",
            u64::from(routes.is_ejected(id))
        );
    }
}

/// Why the edge cannot serve yet, if it cannot.
fn readiness(edge: &Edge) -> Result<(), &'static str> {
    if edge.tokens_is_empty() {
        return Err("no token table");
    }
    if edge.known_good_auth_failing() {
        return Err("this edge's calls to the known-good build fail authentication");
    }
    if !edge.feed().synced() {
        return Err("the change feed has not loaded its first snapshot");
    }
    Ok(())
}
