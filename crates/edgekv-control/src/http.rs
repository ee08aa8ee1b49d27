//! Control's HTTP listener (`--http ADDR`): `/metrics` (Prometheus text, see
//! [`crate::metrics`]) and `/healthz`. Read-only, no credential: bind it where
//! only the monitoring network reaches it.

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
                    async move {
                        let response = match (request.method(), request.uri().path()) {
                            (&hyper::Method::GET, "/metrics") => answer(
                                StatusCode::OK,
                                "text/plain; version=0.0.4",
                                sources.metrics(),
                            ),
                            (&hyper::Method::GET, "/healthz") => {
                                answer(StatusCode::OK, "text/plain", "ok\n".into())
                            }
                            _ => answer(
                                StatusCode::NOT_FOUND,
                                "text/plain",
                                "not found: try /metrics or /healthz\n".into(),
                            ),
                        };
                        Ok::<_, Infallible>(response)
                    }
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
