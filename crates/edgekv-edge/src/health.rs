//! Probing every build of the route table each interval, and streaming what the
//! edge saw of each build to control for its health analysis.
//!
//! A probe is a `Health` call made with this edge's own credential. A build other
//! than known-good whose probe is refused authentication or answered by another
//! build or data set, or fails three times in a row, is ejected (its share goes to known-good) and comes back once a probe
//! succeeds; a new route table starts afresh. A failing
//! probe of known-good is never an ejection — known-good is the fallback — but
//! when it fails *authentication* this edge is itself unhealthy: it fails
//! `/readyz` and says so in its reports, and control leaves it out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgekv_proto::v1::{self, control_client::ControlClient};
use futures_util::future::join_all;
use tokio::sync::{mpsc, watch};

use crate::Edge;
use crate::upstream::{ProbeFailure, StatsDelta};

/// Probes the builds and reports to control (when `control` is given) every
/// `probe_interval_ms`, until `stop` changes.
pub async fn run(
    edge: Arc<Edge>,
    control: Option<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let every = Duration::from_millis(edge.config().probe_interval_ms);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reports: Option<mpsc::Sender<v1::HealthReport>> = None;
    let mut turn = 0usize;
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        probe_all(&edge).await;
        let Some((url, credential)) = &control else {
            continue;
        };
        let interval_ms = last.elapsed().as_millis() as u64;
        last = tokio::time::Instant::now();
        let report = report(&edge, interval_ms);
        let sent = match &reports {
            Some(tx) => tx.try_send(report).is_ok(),
            None => false,
        };
        if !sent {
            // Not connected (or control stopped reading): the counts of this round
            // are dropped, and the stream is opened again for the next — to the
            // next control of the list, when the edge knows several.
            let urls = crate::control::split_urls(url);
            let url = &urls[turn % urls.len()];
            turn += 1;
            reports = open_reports(url, credential, edge.expected().tls_ca.as_deref()).await;
            if reports.is_some() {
                // Stay on the control that answered.
                turn -= 1;
            }
        }
    }
}

/// Probes failed in a row (other than auth refusals) that eject a build.
pub const EJECT_AFTER_PROBES: u32 = 3;

fn failed_probes(routes: &crate::routes::Routes, build_id: &str) -> u32 {
    routes
        .build(build_id)
        .map_or(0, |upstream| upstream.stats().failed_probes())
}

/// Probes every build of the current table at once and ejects or restores each.
pub async fn probe_all(edge: &Edge) {
    let routes = edge.routes.load_full();
    let known_good = routes.table.as_ref().map(|t| t.known_good_build.clone());
    let probes = routes.builds.iter().map(|(build_id, _, upstream)| {
        let upstream = upstream.clone();
        async move { (build_id.clone(), upstream.health().await) }
    });
    let single = routes
        .table
        .is_none()
        .then(|| routes.known_good.clone())
        .flatten();
    for (build_id, result) in join_all(probes).await {
        if Some(&build_id) == known_good.as_ref() {
            known_good_probed(edge, &build_id, result.err());
            continue;
        }
        let slow = routes
            .build(&build_id)
            .is_some_and(|u| u.stats().is_slow(edge.clock().now_ms()));
        match result {
            // An outlier ejected as too slow stays out for its ejection time,
            // whatever its probes say: a build can answer probes quickly and reads
            // slowly.
            Ok(_) if slow => {}
            Ok(_) if routes.is_ejected(&build_id) => {
                tracing::info!(build = %build_id, "a probe succeeded: the build serves again");
                routes.restore(&build_id);
            }
            Ok(_) => {}
            // A refused credential (the 2023 failure) or an answer of another
            // build or data set ejects at once; other failures — a timeout, a
            // restart — only when they repeat, so one lost probe at one edge does
            // not roll a deployment back.
            Err(err)
                if !routes.is_ejected(&build_id)
                    && (err.is_decisive()
                        || failed_probes(&routes, &build_id) >= EJECT_AFTER_PROBES) =>
            {
                tracing::warn!(build = %build_id, error = %err, "ejecting a build whose probe failed");
                routes.eject(&build_id);
            }
            Err(_) => {}
        }
    }
    if let Some(upstream) = single {
        let result = upstream.health().await;
        known_good_probed(edge, upstream.build_id().unwrap_or("origin"), result.err());
    }
}

fn known_good_probed(edge: &Edge, build_id: &str, error: Option<ProbeFailure>) {
    let failing = error.as_ref().is_some_and(ProbeFailure::refused_auth);
    let was = edge.known_good_auth_failing.swap(failing, Ordering::AcqRel);
    if failing && !was {
        tracing::error!(build = %build_id, error = ?error, "this edge's calls to known-good fail authentication: not ready, and left out of control's health analysis");
    } else if !failing && was {
        tracing::info!(build = %build_id, "known-good accepts this edge's credential again");
    }
}

/// What this edge saw of each build since the previous report.
pub fn report(edge: &Edge, interval_ms: u64) -> v1::HealthReport {
    let routes = edge.routes.load_full();
    let mut builds: Vec<(String, StatsDelta, bool)> = routes
        .builds
        .iter()
        .map(|(id, _, upstream)| (id.clone(), upstream.stats().take(), routes.is_ejected(id)))
        .collect();
    if routes.table.is_none()
        && let Some(single) = &routes.known_good
    {
        let id = single.build_id().unwrap_or("origin").to_string();
        builds.push((id, single.stats().take(), false));
    }
    let config = edge.config();
    v1::HealthReport {
        node_id: edge.node_id().to_string(),
        environment: config.environment.clone(),
        tenant: config.tenant.clone(),
        route_version: routes.version(),
        pinned: edge
            .pin()
            .map(|p| format!("{},{}", p.build, p.until_ms))
            .unwrap_or_default(),
        known_good_auth_failing: edge.known_good_auth_failing(),
        interval_ms,
        builds: builds
            .into_iter()
            .map(|(build_id, delta, ejected)| v1::BuildHealth {
                build_id,
                requests: delta.requests,
                errors_auth: delta.faults[0],
                errors_unavailable: delta.faults[1],
                errors_deadline: delta.faults[2],
                errors_other: delta.faults[3],
                client_errors: delta.client_errors,
                not_found: delta.not_found,
                late: delta.late,
                latency_buckets: delta.latency,
                probes_ok: delta.probes_ok,
                probes_failed: delta.probes_failed,
                ejected,
                last_error: delta.last_error,
            })
            .collect(),
    }
}

/// Opens the report stream to control; `None` when control cannot be reached.
async fn open_reports(
    url: &str,
    credential: &str,
    ca: Option<&[u8]>,
) -> Option<mpsc::Sender<v1::HealthReport>> {
    let channel = crate::control::channel(url, ca)
        .await
        .map_err(|e| tracing::debug!(error = %e, "cannot reach control to report health"))
        .ok()?;
    let (tx, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let value = format!("Bearer {credential}").parse().ok()?;
    request.metadata_mut().insert("authorization", value);
    let mut client = ControlClient::new(channel);
    tokio::spawn(async move {
        if let Err(status) = client.report_health(request).await {
            tracing::warn!(%status, "control ended the health report stream");
        }
    });
    Some(tx)
}
