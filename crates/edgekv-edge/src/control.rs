//! Following control's route tables: each table is validated exactly as
//! `edgekv_routing::validate` says (this edge does not trust control blindly),
//! ACKed or NACKed with the reason, kept on disk when good, and installed without
//! a lock on the hot path. Token tables follow the same rules
//! ([`crate::tokens::validate`]) on a stream of their own.

use std::sync::Arc;
use std::time::Duration;

use edgekv_proto::v1::{self, control_client::ControlClient};
use edgekv_routing::{RouteEntry, RouteTable, Verdict, validate};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;

use crate::Edge;
use crate::routes::{self, Routes};

/// A route table from the wire.
pub fn table_from_wire(table: v1::RouteTable) -> RouteTable {
    RouteTable {
        version: table.version,
        environment: table.environment,
        tenant: table.tenant,
        issued_at: table.issued_at,
        known_good_build: table.known_good_build,
        entries: table
            .entries
            .into_iter()
            .map(|e| RouteEntry {
                build_id: e.build_id,
                environment: e.environment,
                tenant: e.tenant,
                artifact_digest: e.artifact_digest,
                weight_bp: e.weight_bp,
                endpoints: e.endpoints,
                data_set: e.data_set,
            })
            .collect(),
    }
}

/// Follows control's route stream until told to stop, reconnecting after failures.
/// `urls`: one control URL, or several comma-separated (an active control and its
/// standbys): each reconnection tries the next.
pub async fn follow(
    edge: Arc<Edge>,
    urls: String,
    credential: String,
    stop: watch::Receiver<bool>,
) {
    reconnecting("route", &urls, stop, |url| {
        let (edge, credential) = (edge.clone(), credential.clone());
        async move { stream(&edge, &url, &credential).await }
    })
    .await;
}

/// The URLs of a comma-separated list (at least one: an empty list is one empty
/// URL, which fails to connect and says so).
pub fn split_urls(urls: &str) -> Vec<String> {
    let list: Vec<String> = (urls.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return vec![urls.to_string()];
    }
    list
}

/// How long connecting to control may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on control links: a link whose pings go unanswered for
/// `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` is closed and reconnected, so a
/// half-open link (a peer or middlebox gone silent without a FIN) is noticed
/// within 10 s with the connect timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// How long a ping may go unanswered.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A channel to control with connect timeout and keepalive, over TLS when `url`
/// is `https://` (trusting `ca`; refused without one).
pub async fn channel(url: &str, ca: Option<&[u8]>) -> Result<tonic::transport::Channel, String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid control URL {url:?}: {e}"))?;
    if let Some(tls) = edgekv_proto::tls::client_for(url, ca)? {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS for {url}: {e}"))?;
    }
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| format!("cannot reach control at {url}: {e}"))
}

/// The wait before reconnection attempt `attempt` (0 first): exponential from
/// 100 ms to 2 s, with ±50% jitter so a fleet that lost control at once does not
/// come back in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(5))
        .min(Duration::from_secs(2));
    base.mul_f64(rand::random::<f64>() + 0.5)
}

/// A stream that lived this long was healthy: the next failure starts the
/// backoff afresh.
const HEALTHY_STREAM: Duration = Duration::from_secs(10);

/// Runs one stream after another until told to stop, backing off (with jitter)
/// after each failure; what the edge holds stays in use meanwhile. `urls` is a
/// comma-separated list of controls: each stream goes to the next in turn.
async fn reconnecting<F, Fut>(what: &str, urls: &str, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let urls = split_urls(urls);
    let mut attempt = 0;
    let mut turn = 0usize;
    loop {
        let started = tokio::time::Instant::now();
        let url = urls[turn % urls.len()].clone();
        turn = turn.wrapping_add(1);
        let outcome = tokio::select! {
            outcome = round(url) => outcome,
            _ = stop.changed() => return,
        };
        if started.elapsed() >= HEALTHY_STREAM {
            attempt = 0;
        }
        let wait = backoff(attempt);
        if let Err(why) = outcome {
            tracing::warn!(%why, ?wait, "{what} stream from control interrupted; keeping the last good table");
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        attempt = attempt.saturating_add(1);
    }
}

async fn stream(edge: &Arc<Edge>, url: &str, credential: &str) -> Result<(), String> {
    let config = edge.config();
    let mut client = ControlClient::new(channel(url, edge.expected().tls_ca.as_deref()).await?);
    let ack = |version: u64, nack: Option<(u64, String)>| v1::RouteAck {
        node_id: edge.node_id().to_string(),
        environment: config.environment.clone(),
        tenant: config.tenant.clone(),
        version,
        nack_reason: nack.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
        nacked_version: nack.map_or(0, |(v, _)| v),
        pinned: edge
            .pin()
            .map(|p| format!("{},{}", p.build, p.until_ms))
            .unwrap_or_default(),
    };
    let (tx, rx) = mpsc::channel(8);
    tx.send(ack(edge.routes().version(), None))
        .await
        .map_err(|_| "ack channel closed".to_string())?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let value = format!("Bearer {credential}")
        .parse()
        .map_err(|_| "the credential is not valid header text".to_string())?;
    request.metadata_mut().insert("authorization", value);
    let mut tables = client
        .stream_routes(request)
        .await
        .map_err(|s| format!("control refused the route stream: {s}"))?
        .into_inner();
    while let Some(table) = tables.next().await {
        let table = table_from_wire(table.map_err(|s| s.to_string())?);
        let held = edge
            .routes()
            .table
            .as_ref()
            .map(|t| (t.version, t.content_hash()));
        let verdict = validate(
            &table,
            &config.environment,
            &config.tenant,
            held.as_ref().map(|(v, h)| (*v, h.as_str())),
        );
        let reply = match verdict {
            Ok(Verdict::AckAgain) => ack(table.version, None),
            Ok(Verdict::Install) => match install(edge, table.clone(), credential) {
                Ok(()) => ack(table.version, None),
                Err(why) => ack(edge.routes().version(), Some((table.version, why))),
            },
            Err(nack) => {
                tracing::warn!(version = table.version, reason = %nack, "NACKed a route table; keeping the last good one");
                ack(
                    edge.routes().version(),
                    Some((table.version, nack.to_string())),
                )
            }
        };
        tx.send(reply)
            .await
            .map_err(|_| "control closed the ack stream".to_string())?;
    }
    Err("control ended the route stream".into())
}

fn install(edge: &Edge, table: RouteTable, credential: &str) -> Result<(), String> {
    let config = edge.config();
    let timeout = Duration::from_millis(config.upstream_timeout_ms);
    let version = table.version;
    let known_good = table.known_good_build.clone();
    let routes = Arc::new(Routes::from_table(
        table.clone(),
        credential,
        edge.expected(),
        timeout,
    )?);
    // A table that validates is installed even when it cannot be kept on disk (a
    // full or read-only disk must not stop a rollback): ACKed, warned, counted.
    if let Err(err) = routes::save_table(&config.data_dir, &table) {
        edge.metrics().table_save_failed();
        tracing::warn!(version, error = %err, "installed a route table that cannot be kept on disk; a restart would start from the last one kept");
    }
    // Probe every build but known-good with this edge's own credential; a build
    // that fails (or answers as another) is ejected: its share goes to known-good.
    for (build_id, _, upstream) in &routes.builds {
        if *build_id == known_good {
            continue;
        }
        let (routes, build_id, upstream) = (routes.clone(), build_id.clone(), upstream.clone());
        tokio::spawn(async move {
            if let Err(err) = upstream.health().await {
                tracing::warn!(build = %build_id, error = %err, "ejecting a build whose health probe failed");
                routes.eject(&build_id);
            }
        });
    }
    edge.set_routes(routes);
    tracing::info!(version, "installed a route table");
    Ok(())
}

/// Follows control's token tables until told to stop: a revocation reaches the
/// edge within one round trip, whatever happens to route tables. Each table is
/// checked as [`crate::tokens::validate`] says, exactly as route tables are: one
/// of another environment or tenant, an older one, or the same version with
/// other content is NACKed, and the edge keeps serving with the table it holds.
pub async fn follow_tokens(
    edge: Arc<Edge>,
    urls: String,
    credential: String,
    stop: watch::Receiver<bool>,
) {
    reconnecting("token", &urls, stop, |url| {
        let (edge, credential) = (edge.clone(), credential.clone());
        async move { stream_tokens(&edge, &url, &credential).await }
    })
    .await;
}

async fn stream_tokens(edge: &Arc<Edge>, url: &str, credential: &str) -> Result<(), String> {
    use crate::tokens::validate::{self as rules, Verdict};
    let config = edge.config();
    let mut client = ControlClient::new(channel(url, edge.expected().tls_ca.as_deref()).await?);
    // Every message says who the edge is; control reads the first one before it
    // sends any table, and sends this environment's tokens only.
    let held_version = || edge.control_tokens_held().map_or(0, |held| held.version);
    let ack = |version: u64, nack: Option<(u64, String)>| v1::TokenAck {
        node_id: edge.node_id().to_string(),
        environment: config.environment.clone(),
        tenant: config.tenant.clone(),
        version,
        nack_reason: nack.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
        nacked_version: nack.map_or(0, |(v, _)| v),
    };
    let (tx, rx) = mpsc::channel(8);
    tx.send(ack(held_version(), None))
        .await
        .map_err(|_| "ack channel closed".to_string())?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let value = format!("Bearer {credential}")
        .parse()
        .map_err(|_| "the credential is not valid header text".to_string())?;
    request.metadata_mut().insert("authorization", value);
    let mut tables = client
        .stream_tokens(request)
        .await
        .map_err(|s| format!("control refused the token stream: {s}"))?
        .into_inner();
    while let Some(table) = tables.next().await {
        let table = table.map_err(|s| s.to_string())?;
        let verdict = rules::validate(
            &table,
            &config.environment,
            &config.tenant,
            edge.control_tokens_held(),
        );
        let reply = match verdict {
            Ok(Verdict::AckAgain) => {
                edge.note_token_nack(None);
                ack(table.version, None)
            }
            Ok(Verdict::Install(grants)) => {
                edge.set_control_tokens(table.version, grants);
                // A table that validates is in use even when it cannot be kept.
                if let Err(err) = save_tokens(&config.data_dir, &table) {
                    edge.metrics().table_save_failed();
                    tracing::warn!(version = table.version, error = %err, "installed a token table that cannot be kept on disk; a restart would start from the last one kept");
                }
                tracing::info!(version = table.version, "installed a token table");
                ack(table.version, None)
            }
            Err(nack) => {
                tracing::warn!(version = table.version, reason = %nack, "NACKed a token table; keeping the one held");
                let nack = (table.version, nack.to_string());
                edge.note_token_nack(Some(nack.clone()));
                ack(held_version(), Some(nack))
            }
        };
        tx.send(reply)
            .await
            .map_err(|_| "control closed the ack stream".to_string())?;
    }
    Err("control ended the token stream".into())
}

/// Keeps a token table (hashes only) on disk, atomically.
fn save_tokens(data_dir: &std::path::Path, table: &v1::TokenTable) -> std::io::Result<()> {
    use prost::Message as _;
    let path = data_dir.join("tokens.pb");
    let temp = path.with_extension("pb.tmp");
    std::fs::write(&temp, table.encode_to_vec())?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(temp, path)
}

/// Reads the last good token table kept on disk, checked as a table from control
/// is: one of another environment or tenant (or written before tables had one),
/// or not well formed, is not loaded. Returns its version and grants.
pub fn load_tokens(
    data_dir: &std::path::Path,
    environment: &str,
    tenant: &str,
) -> Option<(u64, Vec<(crate::tokens::TokenHash, crate::tokens::Grant)>)> {
    use crate::tokens::validate::{Verdict, validate};
    use prost::Message as _;
    let path = data_dir.join("tokens.pb");
    let raw = std::fs::read(&path).ok()?;
    let table = match v1::TokenTable::decode(raw.as_slice()) {
        Ok(table) => table,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "not loading a token table that does not decode");
            return None;
        }
    };
    match validate(&table, environment, tenant, None) {
        Ok(Verdict::Install(grants)) => Some((table.version, grants)),
        Ok(Verdict::AckAgain) => None,
        Err(nack) => {
            tracing::warn!(path = %path.display(), reason = %nack, "not loading the token table kept on disk");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reconnections spread out: each wait is within ±50% of its exponential
    /// base (100 ms doubling to 2 s), and a fleet's waits are not all equal.
    #[test]
    fn backoff_is_exponential_with_jitter() {
        for attempt in 0..10 {
            let base = (100u64 << attempt.min(5)).min(2_000) as f64;
            let waits: Vec<f64> = (0..200)
                .map(|_| backoff(attempt).as_secs_f64() * 1000.0)
                .collect();
            assert!(
                waits.iter().all(|w| *w >= base * 0.5 && *w <= base * 1.5),
                "attempt {attempt}: {waits:?}"
            );
            let (min, max) = waits
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
            assert!(
                max - min > base * 0.5,
                "attempt {attempt}: spread {min}..{max}"
            );
        }
    }
}
