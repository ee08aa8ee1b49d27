//! Listeners: the KV API and the admin endpoints, served over HTTP/1.1 and
//! HTTP/2 cleartext, with graceful shutdown; and the edge's background tasks.
//!
//! Each listener's connections are bounded by construction: at most
//! `max_connections` at once (accepting pauses past it), and a connection that
//! does not send a request's header within `header_read_timeout_ms`, or stays
//! idle past `idle_timeout_ms`, is closed (`ConnectionLimits`).

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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::drain::Drain;
use crate::tokens::TokenMemo;
use crate::{Edge, EdgeConfig, Error, Result, admin, http::Body};

mod drain;

/// A running edge: its listeners' addresses and the handle that stops it.
#[derive(Debug)]
pub struct RunningEdge {
    /// Where the KV API listens.
    pub http_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// Where workerd's KV binding protocol listens, if it does.
    pub binding_addr: Option<SocketAddr>,
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
        let binding = match config.binding {
            Some(addr) => Some(bind(addr, "workerd's KV binding").await?),
            None => None,
        };
        let http_addr = local_addr(&http)?;
        let admin_addr = local_addr(&admin_listener)?;
        let binding_addr = binding.as_ref().map(local_addr).transpose()?;
        let (stop, stopped) = watch::channel(false);
        let grace = Duration::from_secs(config.shutdown_grace_s);
        let limits = ConnectionLimits::of(&config);
        let mut tasks = JoinSet::new();

        let api = edge.clone();
        // Cloned for each connection, so each has its own token memo.
        let memo = TokenMemo::default();
        tasks.spawn(serve(
            http,
            stopped.clone(),
            grace,
            limits,
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
        if let Some(listener) = binding {
            let api = edge.clone();
            let memo = TokenMemo::default();
            tasks.spawn(serve(
                listener,
                stopped.clone(),
                grace,
                limits,
                move |req: Request<Incoming>| match crate::binding::try_hot(&api, &req, &memo) {
                    Some(response) => Either::Left(std::future::ready(response)),
                    None => {
                        let edge = api.clone();
                        Either::Right(Box::pin(
                            async move { crate::binding::handle(&edge, req).await },
                        ))
                    }
                },
            ));
        }
        let ops = edge.clone();
        // The admin listener has places of its own: a flood of the KV API never
        // keeps `/healthz` and `/metrics` from being answered.
        tasks.spawn(serve(
            admin_listener,
            stopped.clone(),
            grace,
            limits,
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
        tracing::info!(%http_addr, %admin_addr, ?binding_addr, "edge serving");
        Ok(RunningEdge {
            http_addr,
            admin_addr,
            binding_addr,
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

/// What bounds the connections of one listener.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    /// The most connections served at once; past it, accepting pauses.
    max: usize,
    /// How long a connection has to send a request's whole header.
    header_read: Duration,
    /// How long a connection with no request in flight is kept.
    idle: Duration,
}

/// How long an HTTP/2 keep-alive ping may go unanswered before the connection
/// is closed (at most the idle timeout).
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a full listener says so in the log, at most.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

impl ConnectionLimits {
    /// The limits an edge's config sets.
    fn of(config: &EdgeConfig) -> Self {
        ConnectionLimits {
            max: config.max_connections,
            header_read: Duration::from_millis(config.header_read_timeout_ms),
            idle: Duration::from_millis(config.idle_timeout_ms),
        }
    }

    /// How long an HTTP/1.1 connection may go without a whole request header:
    /// hyper's header timer runs from the end of one answer until the next
    /// request's header is whole, so it is also the idle timeout of an HTTP/1.1
    /// connection, and the shorter of the two is used. A new connection has as
    /// long to send its first bytes, before hyper's timer starts.
    fn header_wait(&self) -> Duration {
        self.header_read.min(self.idle)
    }

    /// A connection builder that keeps these limits: hyper's header timer on
    /// HTTP/1.1, keep-alive pings on HTTP/2.
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_wait());
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.idle)
            .keep_alive_timeout(H2_PING_TIMEOUT.min(self.idle));
        builder
    }
}

/// Accepts connections until told to stop, then drains them.
///
/// A place among `limits.max` is taken before each `accept`, and moves into the
/// connection's task: with every place taken, accepting pauses (new connections
/// wait in the kernel's backlog) until a connection ends.
async fn serve<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    limits: ConnectionLimits,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(limits.builder());
    let header_wait = limits.header_wait();
    let places = Arc::new(Semaphore::new(limits.max.clamp(1, Semaphore::MAX_PERMITS)));
    let drain = Drain::default();
    let mut warned_full: Option<Instant> = None;
    loop {
        let place = match places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                    tracing::warn!(
                        max_connections = limits.max,
                        "every connection place is taken: accepting pauses until one closes"
                    );
                    warned_full = Some(Instant::now());
                }
                tokio::select! {
                    place = places.clone().acquire_owned() => match place {
                        Ok(place) => place,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                    _ = stop.changed() => break,
                }
            }
        };
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
        let builder = builder.clone();
        let drain = drain.clone();
        let mut stopping = stop.clone();
        tokio::spawn(async move {
            // Held until the connection ends.
            let _place = place;
            let opened = tokio::select! {
                opened = opening(&stream, header_wait) => opened,
                _ = stopping.changed() => false,
            };
            if !opened {
                return;
            }
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = drain.watch(connection);
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

/// Waits until a new connection has sent enough to tell HTTP/1.1 from HTTP/2 —
/// hyper-util reads that much before hyper's header timer starts, with no timer
/// of its own — or `within` has passed. False when it had not (or the client
/// closed, or the socket failed): the connection is dropped unserved.
async fn opening(stream: &TcpStream, within: Duration) -> bool {
    /// What an HTTP/2 client sends first.
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = Instant::now() + within;
    let mut seen = [0u8; 24];
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.peek(&mut seen)).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        // A whole preface, or bytes that begin none: hyper-util decides at once.
        if n == PREFACE.len() || seen[..n] != PREFACE[..n] {
            return true;
        }
        // The start of a preface, and no more yet: peeking again would return
        // at once, so wait a moment for the rest.
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
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
