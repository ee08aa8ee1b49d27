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

/// A commit's notification: the committing process's mark and the head after it
/// (the head is for people reading the traffic; followers read it from the table).
pub fn payload(instance: u64, revision: u64) -> String {
    format!("{instance:016x} {revision}")
}

/// Whether a notification is of this process's own commit, which it knows of
/// already. Any other — another origin's, or one of another form — makes the
/// follower read the head from the table: the payload is never believed, since
/// any role that can connect to the database may NOTIFY, and a head raised by a
/// forged payload would make answers claim freshness they do not have.
fn is_own(instance: u64, payload: &str) -> bool {
    payload.split_once(' ').and_then(|(mark, _)| {
        u64::from_str_radix(mark, 16)
            .ok()
            .filter(|_| mark.len() == 16)
    }) == Some(instance)
}

/// The longest wait for the head's row before the connection is made anew.
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a follower keeps up to date, and how.
pub struct Following {
    /// The known head.
    pub head: Arc<AtomicU64>,
    /// The process's recent log entries, dropped if the database's head goes back.
    pub(crate) recent: Arc<parking_lot::Mutex<crate::RecentLog>>,
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
        recent,
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
    let instance = *instance;
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if !is_own(instance, note.payload()) {
                        let _ = woken.try_send(());
                    }
                }
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
    // A standby (a multi-host URL without `target_session_attrs=read-write`)
    // lags the primary: a head behind the known one is its lag there, not the
    // database going back. An engine without the function is taken for a
    // primary.
    let standby = match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
        Ok(row) => row.try_get::<_, bool>(0).unwrap_or(false),
        Err(_) => false,
    };
    loop {
        // Loaded before the read: a commit this process learnt of by then is in
        // what the read sees, so a lower head read is the database going back.
        let known = head.load(Ordering::Acquire);
        // Bounded: a connection whose server vanished must not keep this
        // process on a stale head (the poll never leaves the socket idle long
        // enough for keepalives to probe it).
        let row = tokio::time::timeout(HEAD_READ_TIMEOUT, client.query_one(&read_head, &[]))
            .await
            .map_err(|_| format!("no answer to a read of the head within {HEAD_READ_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let revision = row.get::<_, i64>(0).max(0) as u64;
        if revision < known && !standby {
            crate::went_back(head, recent, known, revision);
        } else {
            learn(head, listeners, revision);
        }
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
    fn only_a_notification_of_this_process_is_its_own() {
        let me = 0x0123_4567_89ab_cdef;
        assert!(is_own(me, &payload(me, 42)));
        assert!(!is_own(me, &payload(7, 42)));
        assert!(!is_own(me, "42"));
        assert!(!is_own(me, ""));
        assert!(!is_own(me, "123456789abcdef 42"), "a mark is 16 digits");
    }
}
