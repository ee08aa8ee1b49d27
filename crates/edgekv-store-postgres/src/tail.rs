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
use tokio_postgres::{AsyncMessage, Config};

use crate::{Listeners, MakeTls};

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

/// A mark for this process's commits, random per store opened.
pub fn instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A commit's notification: the committing process's mark and the head after it.
pub fn payload(instance: u64, revision: u64) -> String {
    format!("{instance:016x} {revision}")
}

/// What a notification says: another process's head (`Some`), or nothing to do
/// (`None`: this process's own commit). A payload of another form (an older
/// origin's) is read as "something committed": the head is then read.
fn heard(instance: u64, payload: &str) -> Heard {
    let mut words = payload.split(' ');
    match (
        words.next(),
        words.next().map(str::parse::<u64>),
        words.next(),
    ) {
        (Some(mark), Some(Ok(revision)), None) if mark.len() == 16 => {
            if u64::from_str_radix(mark, 16).ok() == Some(instance) {
                Heard::Own
            } else {
                Heard::Head(revision)
            }
        }
        _ => Heard::Unknown,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Heard {
    Own,
    Head(u64),
    Unknown,
}

/// What a follower keeps up to date, and how.
pub struct Following {
    /// The known head.
    pub head: Arc<AtomicU64>,
    /// Told when another process's commit moves it.
    pub listeners: Listeners,
    /// How often the head is read when nothing is heard.
    pub poll: Duration,
    /// Whether to LISTEN (the engine has NOTIFY).
    pub listen: bool,
    /// This process's mark (see [`payload`]).
    pub instance: u64,
}

/// Follows the head until the runtime stops.
pub async fn follow(config: Config, tls: MakeTls, following: Following) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        let err = follow_once(&config, &tls, &following).await;
        // A connection that served a while failed: start the backoff afresh.
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        tracing::warn!(error = %err, ?backoff, "following the database's commits failed; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn follow_once(config: &Config, tls: &MakeTls, following: &Following) -> String {
    match follow_connected(config, tls, following).await {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

async fn follow_connected(
    config: &Config,
    tls: &MakeTls,
    following: &Following,
) -> Result<std::convert::Infallible, String> {
    let Following {
        head,
        listeners,
        poll,
        listen,
        instance,
    } = following;
    let (client, mut connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (woken, mut wakes) = mpsc::channel::<()>(1);
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
    let (told_head, told_listeners, instance) = (head.clone(), listeners.clone(), *instance);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => match heard(instance, note.payload()) {
                    Heard::Own => {}
                    // Sent in the commit's transaction, so heard once it committed.
                    Heard::Head(revision) => learn(&told_head, &told_listeners, revision),
                    Heard::Unknown => {
                        let _ = woken.try_send(());
                    }
                },
                Ok(_) => {}
                Err(err) => {
                    let _ = ended_tx.send(err);
                    return;
                }
            }
        }
    });
    if *listen {
        (client.batch_execute(&format!("LISTEN {CHANNEL}")).await).map_err(|e| e.to_string())?;
    }
    let read_head = client
        .prepare("SELECT revision FROM edgekv_head WHERE id = 1")
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let row = client
            .query_one(&read_head, &[])
            .await
            .map_err(|e| e.to_string())?;
        let revision: i64 = row.get(0);
        learn(head, listeners, revision.max(0) as u64);
        tokio::select! {
            _ = wakes.recv() => {}
            _ = tokio::time::sleep(*poll) => {}
            err = &mut ended => {
                return Err(err.map_or_else(|_| "the connection closed".into(), |e| e.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_says_whose_commit_it_was() {
        let me = 0x0123_4567_89ab_cdef;
        assert_eq!(heard(me, &payload(me, 42)), Heard::Own);
        assert_eq!(heard(me, &payload(7, 42)), Heard::Head(42));
        assert_eq!(heard(me, "42"), Heard::Unknown);
        assert_eq!(heard(me, ""), Heard::Unknown);
        assert_eq!(heard(me, "0123456789abcdef x"), Heard::Unknown);
        assert_eq!(heard(me, "0123456789abcdef 1 2"), Heard::Unknown);
    }
}
