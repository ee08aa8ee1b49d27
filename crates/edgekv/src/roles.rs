//! The long-running roles: `edgekv edge`.

use std::sync::Arc;

use anyhow::Context as _;
use edgekv_edge::RunningEdge;
use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_kv::SystemClock;

use crate::cli::EdgeArgs;
use crate::config::File;

/// Runs an edge until SIGINT or SIGTERM.
pub async fn edge(args: EdgeArgs, file: &File) -> anyhow::Result<()> {
    let mut config = file.edge.clone().unwrap_or_default();
    if let Some(http) = args.http {
        config.http = http;
    }
    if let Some(admin) = args.admin {
        config.admin = admin;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(bytes) = args.hot_tier_bytes {
        config.hot_tier_bytes = bytes;
    }
    let table = match (args.account, args.token) {
        (Some(account), Some(token)) => TokenTable::new(
            1,
            [(tokens::hash(&token), Grant::full("bootstrap", account))],
        ),
        _ => {
            tracing::warn!("no --account/--token: the edge has no token table and is not ready");
            TokenTable::default()
        }
    };
    let edge =
        edgekv_edge::open(config, Arc::new(SystemClock), table).context("cannot open the edge")?;
    let running = RunningEdge::start(edge).await?;
    println!(
        "edge listening on http://{} (admin http://{})",
        running.http_addr, running.admin_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
