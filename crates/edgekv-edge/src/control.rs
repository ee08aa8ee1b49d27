//! Following control's route tables: each table is validated exactly as
//! `edgekv_routing::validate` says (this edge does not trust control blindly),
//! ACKed or NACKed with the reason, kept on disk when good, and installed without
//! a lock on the hot path.

use std::sync::Arc;
use std::time::Duration;

use edgekv_proto::v1::{self, control_client::ControlClient};
use edgekv_routing::{RouteEntry, RouteTable, Verdict, validate};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;

use crate::Edge;
use crate::routes::{self, Routes};
use crate::upstream::Expected;

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
            })
            .collect(),
    }
}

/// Follows control's route stream until told to stop, reconnecting after failures.
pub async fn follow(edge: Arc<Edge>, url: String, credential: String, stop: watch::Receiver<bool>) {
    reconnecting("route", stop, || stream(&edge, &url, &credential)).await;
}

/// Runs one stream after another until told to stop, backing off after each
/// failure; what the edge holds stays in use meanwhile.
async fn reconnecting<F, Fut>(what: &str, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            outcome = round() => outcome,
            _ = stop.changed() => return,
        };
        if let Err(why) = outcome {
            tracing::warn!(%why, ?backoff, "{what} stream from control interrupted; keeping the last good table");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn stream(edge: &Arc<Edge>, url: &str, credential: &str) -> Result<(), String> {
    let config = edge.config();
    let mut client = ControlClient::connect(url.to_string())
        .await
        .map_err(|e| format!("cannot reach control at {url}: {e}"))?;
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
    let expected = Expected {
        environment: config.environment.clone(),
        tenant: config.tenant.clone(),
    };
    let timeout = Duration::from_millis(config.upstream_timeout_ms);
    let version = table.version;
    routes::save_table(&config.data_dir, &table)
        .map_err(|e| format!("cannot keep the table on disk: {e}"))?;
    let known_good = table.known_good_build.clone();
    let routes = Arc::new(Routes::from_table(table, credential, &expected, timeout)?);
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

/// A token table from the wire, or why it is refused.
pub fn tokens_from_wire(
    table: &v1::TokenTable,
) -> Result<Vec<(crate::tokens::TokenHash, crate::tokens::Grant)>, String> {
    table
        .grants
        .iter()
        .map(|g| {
            let raw =
                hex::decode(&g.hash).map_err(|_| format!("token {:?}: hash is not hex", g.name))?;
            let hash: crate::tokens::TokenHash = raw
                .try_into()
                .map_err(|_| format!("token {:?}: hash is not 32 bytes", g.name))?;
            if g.account.is_empty() {
                return Err(format!("token {:?} has no account", g.name));
            }
            let grant = crate::tokens::Grant {
                name: g.name.clone(),
                account: g.account.clone(),
                namespaces: (!g.namespaces.is_empty()).then(|| g.namespaces.clone()),
                read_only: g.read_only,
                admin: g.admin,
            };
            Ok((hash, grant))
        })
        .collect()
}

/// Follows control's token tables until told to stop: a revocation reaches the
/// edge within one round trip, whatever happens to route tables.
pub async fn follow_tokens(
    edge: Arc<Edge>,
    url: String,
    credential: String,
    stop: watch::Receiver<bool>,
) {
    reconnecting("token", stop, || stream_tokens(&edge, &url, &credential)).await;
}

async fn stream_tokens(edge: &Arc<Edge>, url: &str, credential: &str) -> Result<(), String> {
    let mut client = ControlClient::connect(url.to_string())
        .await
        .map_err(|e| format!("cannot reach control at {url}: {e}"))?;
    let ack = |version: u64, nack: String| v1::TokenAck {
        node_id: edge.node_id().to_string(),
        version,
        nack_reason: nack,
    };
    let (tx, rx) = mpsc::channel(8);
    tx.send(ack(edge.tokens_version(), String::new()))
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
        let reply = match tokens_from_wire(&table) {
            Ok(grants) => {
                edge.set_control_tokens(table.version, grants);
                if let Err(err) = save_tokens(&edge.config().data_dir, &table) {
                    tracing::warn!(error = %err, "cannot keep the token table on disk");
                }
                ack(table.version, String::new())
            }
            Err(why) => ack(edge.tokens_version(), why),
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

/// Reads the last good token table kept on disk.
pub fn load_tokens(data_dir: &std::path::Path) -> Option<v1::TokenTable> {
    use prost::Message as _;
    let raw = std::fs::read(data_dir.join("tokens.pb")).ok()?;
    v1::TokenTable::decode(raw.as_slice()).ok()
}
