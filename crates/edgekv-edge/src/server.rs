//! Listeners: the KV API and the admin endpoints, served over HTTP/1.1 and
//! HTTP/2 cleartext, with graceful shutdown; and the edge's background tasks.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::drain::Drain;
use crate::tokens::TokenMemo;
use crate::{Edge, Error, Result, admin, http::Body};

mod drain;

/// A running edge: its listeners' addresses and the handle that stops it.
#[derive(Debug)]
pub struct RunningEdge {
    /// Where the KV API listens.
    pub http_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    edge: Arc<Edge>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningEdge {
    /// Binds the listeners named in the edge's config and starts serving.
    pub async fn start(edge: Arc<Edge>) -> Result<Self> {
        let config = edge.config().clone();
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Internal(format!("cannot listen for {what} on {addr}: {e}")))
        };
        let http = bind(config.http, "the KV API").await?;
        let admin_listener = bind(config.admin, "the admin endpoints").await?;
        let http_addr = local_addr(&http)?;
        let admin_addr = local_addr(&admin_listener)?;
        let (stop, stopped) = watch::channel(false);
        let grace = Duration::from_secs(config.shutdown_grace_s);
        let mut tasks = JoinSet::new();

        let api = edge.clone();
        // Cloned for each connection, so each has its own token memo.
        let memo = TokenMemo::default();
        tasks.spawn(serve(
            http,
            stopped.clone(),
            grace,
            move |mut req: Request<Incoming>| match crate::http::try_hot(&api, &mut req, &memo) {
                Some(response) => Either::Left(std::future::ready(response)),
                None => {
                    let edge = api.clone();
                    Either::Right(Box::pin(
                        async move { crate::http::handle(&edge, req).await },
                    ))
                }
            },
        ));
        let ops = edge.clone();
        tasks.spawn(serve(
            admin_listener,
            stopped.clone(),
            grace,
            move |req: Request<Incoming>| {
                let edge = ops.clone();
                async move { admin::handle(&edge, req).await }
            },
        ));
        tasks.spawn(purge_loop(
            edge.clone(),
            Duration::from_secs(config.purge_interval_s),
            stopped.clone(),
        ));
        if !config.control.is_empty() {
            // The last good token table kept on disk, if it is this edge's
            // environment's: what the first table from control is checked against.
            if let Some((version, grants)) =
                crate::control::load_tokens(&config.data_dir, &config.environment, &config.tenant)
            {
                edge.set_control_tokens(version, grants);
            }
            tasks.spawn(crate::control::follow(
                edge.clone(),
                config.control.clone(),
                edge.credential.clone(),
                stopped.clone(),
            ));
            tasks.spawn(crate::control::follow_tokens(
                edge.clone(),
                config.control.clone(),
                edge.credential.clone(),
                stopped.clone(),
            ));
        }
        let control =
            (!config.control.is_empty()).then(|| (config.control.clone(), edge.credential.clone()));
        tasks.spawn(crate::health::run(edge.clone(), control, stopped.clone()));
        tasks.spawn(edge.clone().replay_outbox(stopped.clone()));
        tasks.spawn(crate::feed::follow(edge.clone(), stopped));
        tracing::info!(%http_addr, %admin_addr, "edge serving");
        Ok(RunningEdge {
            http_addr,
            admin_addr,
            edge,
            stop,
            tasks,
        })
    }

    /// The edge being served.
    pub fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }

    /// Stops accepting connections, lets requests in flight finish (up to the
    /// configured grace period) and stops the background tasks.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("edge stopped");
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener has no address: {e}")))
}

/// Accepts connections until told to stop, then drains them.
async fn serve<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let drain = Drain::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let answer = handler(req);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = drain.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, drain.shutdown()).await.is_err() {
        tracing::warn!(
            ?grace,
            "requests still in flight after the grace period; closing"
        );
    }
}

/// Purges expired records every `every` until stopped.
async fn purge_loop(edge: Arc<Edge>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match edge.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "purged expired records"),
            Err(err) => tracing::warn!(error = %err, "purging expired records failed"),
        }
    }
}

/// A fixed-body response, for the admin endpoints.
pub(crate) fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into().into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
