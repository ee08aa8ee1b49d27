//! Following the database's head: every origin process learns of the commits of
//! the others, to wake its watch streams.
//!
//! A connection of its own LISTENs on the commit channel (each commit NOTIFYs it,
//! in the commit's transaction); a slow poll of the head is the fallback, for a
//! lost notification or an engine without LISTEN. The connection is made again,
//! with backoff, whenever it fails (a primary that failed over, say).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::Listeners;

/// The NOTIFY channel of commits.
pub const CHANNEL: &str = "edgekv_commits";

/// Raises the known head to `revision`; tells the listeners when it moved.
pub fn learn(head: &AtomicU64, listeners: &Listeners, revision: u64) {
    if head.fetch_max(revision, Ordering::AcqRel) < revision {
        for notify in listeners.lock().iter() {
            notify(revision);
        }
    }
}

/// Follows the head until the runtime stops.
pub async fn follow(
    config: Config,
    head: Arc<AtomicU64>,
    listeners: Listeners,
    poll: Duration,
    listen: bool,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        let err = follow_once(&config, &head, &listeners, poll, listen).await;
        // A connection that served a while failed: start the backoff afresh.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tracing::warn!(error = %err, ?backoff, "following the database's commits failed; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow_once(
    config: &Config,
    head: &AtomicU64,
    listeners: &Listeners,
    poll: Duration,
    listen: bool,
) -> String {
    match follow_connected(config, head, listeners, poll, listen).await {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

async fn follow_connected(
    config: &Config,
    head: &AtomicU64,
    listeners: &Listeners,
    poll: Duration,
    listen: bool,
) -> Result<std::convert::Infallible, String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (woken, mut wakes) = mpsc::channel::<()>(1);
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = woken.try_send(());
                }
                Ok(_) => {}
                Err(err) => {
                    let _ = ended_tx.send(err);
                    return;
                }
            }
        }
    });
    if listen {
        (client.batch_execute(&format!("LISTEN {CHANNEL}")).await).map_err(|e| e.to_string())?;
    }
    loop {
        let row = client
            .query_one("SELECT revision FROM edgekv_head WHERE id = 1", &[])
            .await
            .map_err(|e| e.to_string())?;
        let revision: i64 = row.get(0);
        learn(head, listeners, revision.max(0) as u64);
        tokio::select! {
            _ = wakes.recv() => {}
            _ = tokio::time::sleep(poll) => {}
            err = &mut ended => {
                return Err(err.map_or_else(|_| "the connection closed".into(), |e| e.to_string()));
            }
        }
    }
}
