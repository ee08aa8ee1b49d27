//! Control's HTTP listener (`--http ADDR`): the rollout dashboard at `/`
//! ([`crate::dashboard`]), `/metrics` (Prometheus text, see
//! [`crate::metrics`]) and `/healthz`. Reading needs no credential: bind it
//! where only operators and the monitoring network reach it. The dashboard's
//! actions need an admin token.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::controller::Controller;
use crate::health::Analyzer;
use crate::metrics::{Inputs, render};
use crate::service::Acks;

/// What the listener reads.
#[derive(Clone)]
pub struct Sources {
    /// The deployments, route versions and tokens.
    pub controller: Arc<Controller>,
    /// The edges' ACKs.
    pub acks: Acks,
    /// The health analysis, for the active deployments' verdicts.
    pub analyzer: Arc<Analyzer>,
    /// The gRPC service: what the dashboard shows of a deployment, and who
    /// may act.
    pub service: crate::service::ControlService,
}

impl Sources {
    /// The metrics now.
    pub fn metrics(&self) -> String {
        let deployments = self.controller.deployments(None);
        let now = self.controller.now_ms();
        let verdicts: BTreeMap<String, crate::rollout::Health> = (deployments.iter())
            .filter(|d| d.phase.is_active())
            .map(|d| {
                let verdict = self.analyzer.verdict(
                    &d.environment,
                    &d.build_id,
                    d.known_good.as_deref().or(Some(&d.build_id)),
                    &d.thresholds,
                    now,
                );
                (d.id.clone(), verdict)
            })
            .collect();
        let acks = self.acks.lock().clone();
        let (token_version, _) = self.controller.tokens();
        render(&Inputs {
            deployments: &deployments,
            verdicts,
            acks: &acks,
            route_versions: self.controller.route_versions(),
            token_version,
        })
    }
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The dashboard's content security policy: its one script by hash (no other
/// script runs, whatever a page element might hold), fetches to this origin
/// only, no framing.
fn page_policy() -> &'static hyper::header::HeaderValue {
    static POLICY: std::sync::OnceLock<hyper::header::HeaderValue> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let script = crate::dashboard::PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        let policy = format!(
            "default-src 'self'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        );
        hyper::header::HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("default-src 'self'"))
    })
}

/// The most bytes of an action's body.
const MAX_ACTION_BODY: usize = 64 * 1024;

async fn route(
    sources: &Sources,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method().clone(), path.as_str()) {
        (hyper::Method::GET, "/" | "/dashboard") => {
            let mut response = answer(
                StatusCode::OK,
                "text/html; charset=utf-8",
                crate::dashboard::PAGE.to_string(),
            );
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                page_policy().clone(),
            );
            headers.insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-store"),
            );
            response
        }
        (hyper::Method::GET, "/api/state") => {
            let state = crate::dashboard::state(&sources.service);
            let mut response = answer(StatusCode::OK, "application/json", state.to_string());
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-store"),
            );
            headers.insert(
                hyper::header::X_CONTENT_TYPE_OPTIONS,
                hyper::header::HeaderValue::from_static("nosniff"),
            );
            response
        }
        (hyper::Method::GET, "/metrics") => answer(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            sources.metrics(),
        ),
        (hyper::Method::GET, "/healthz") => answer(StatusCode::OK, "text/plain", "ok\n".into()),
        (hyper::Method::POST, path) if path.starts_with("/api/") => {
            let Some(action) = crate::dashboard::Action::parse(path) else {
                return answer(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    serde_json::json!({"error": format!("no action at {path}")}).to_string(),
                );
            };
            let token = request
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string());
            use http_body_util::BodyExt as _;
            let body = match http_body_util::Limited::new(request.into_body(), MAX_ACTION_BODY)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "application/json",
                        serde_json::json!({"error": "the body is larger than 64 KiB"}).to_string(),
                    );
                }
            };
            let (status, value) =
                crate::dashboard::act(&sources.service, token.as_deref(), action, &body);
            answer(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "application/json",
                value.to_string(),
            )
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /api/state, /metrics or /healthz\n".into(),
        ),
    }
}

/// Serves until `stop` changes.
pub async fn serve(listener: TcpListener, sources: Sources, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let sources = sources.clone();
                    async move { Ok::<_, Infallible>(route(&sources, request).await) }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--http): {e}"))
}
