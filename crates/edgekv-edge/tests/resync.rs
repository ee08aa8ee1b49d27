//! A resync from a snapshot removes what the snapshot no longer has — even when a
//! full namespace has no key left at all, so the snapshot carries none of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use edgekv_kv::ManualClock;
use edgekv_test_support::{TestEdge, TestOrigin, eventually};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_namespace_emptied_while_an_edge_was_away_is_empty_after_its_resync() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 3).await;
    let a = TestEdge::start_with(&origin.url, clock.clone()).await;
    let b = TestEdge::start_with(&origin.url, clock.clone()).await;
    let (ka, kb) = (a.client(), b.client());
    let full = ka.create_full_namespace("full").await;
    let other = ka.create_namespace("other").await;
    assert_eq!(ka.put(&full, "gone", "x").await, 200);
    eventually(Duration::from_secs(10), "B holds the key", || async {
        kb.get(&full, "gone").await == (200, b"x".to_vec())
    })
    .await;

    // B goes away; the key is deleted, its tombstone purged two days later, and the
    // log moves far past where B stopped.
    let dir = b.dir().to_path_buf();
    let mut b = b;
    b.stop().await;
    assert_eq!(ka.delete(&full, "gone").await, 200);
    clock.advance(Duration::from_secs(49 * 3600));
    for i in 0..10 {
        assert_eq!(ka.put(&other, &format!("k{i}"), "v").await, 200);
    }
    let store = origin.running.as_ref().unwrap().core().store().clone();
    eventually(
        Duration::from_secs(10),
        "the origin purges the tombstone",
        || {
            let store = store.clone();
            let full = full.clone();
            async move { store.get(&full, b"gone").unwrap().is_none() }
        },
    )
    .await;

    // B comes back behind the retained log: it resyncs, and the key is gone.
    let b = TestEdge::start_in(&dir, &origin.url, clock.clone()).await;
    eventually(Duration::from_secs(10), "B resyncs from a snapshot", || {
        let edge = b.edge().clone();
        async move { edge.feed().snapshots() >= 1 }
    })
    .await;
    let kb = b.client();
    assert_eq!(
        kb.get(&full, "gone").await.0,
        404,
        "B still serves a key deleted while it was away"
    );
    drop(a);
}

/// An origin whose store went back in time — restored from a backup, or a
/// database failed over to a replica that had not seen the latest commits —
/// numbers new writes with revisions an edge already applied from the lost
/// history. The edge, resuming at the last event it applied, finds another
/// event there and resyncs: it holds the new history, and nothing of the lost
/// one. (Resuming after it, as before, it kept the lost writes and missed the
/// new ones at those revisions for good.)
/// An edge that applied writes its origin's store then lost: the store is
/// backed up (origin stopped), the edge's feed applies `lost` writes, the
/// edge stops, and the backup is restored under the origin. The origin runs
/// again; the edge (its data dir kept) is not running.
struct LostHistory {
    clock: Arc<ManualClock>,
    origin: TestOrigin,
    /// The edge, stopped; it owns its data dir (a temporary one, gone with it).
    edge: TestEdge,
    /// The full namespace written to; it holds `kept` = "v" from before the backup.
    full: String,
    _backup: tempfile::TempDir,
}

impl LostHistory {
    async fn make(lost: &[&str]) -> LostHistory {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let mut origin = TestOrigin::start(clock.clone(), 1_000_000).await;
        let mut a = TestEdge::start_with(&origin.url, clock.clone()).await;
        let ka = a.client();
        let full = ka.create_full_namespace("full").await;
        assert_eq!(ka.put(&full, "kept", "v").await, 200);
        // A backup of the origin's store, taken while it is stopped.
        origin.stop().await;
        let backup = tempfile::tempdir().unwrap();
        copy_dir(origin.dir(), backup.path());
        origin.restart().await;
        // Writes the backup does not have; the edge's feed applies them.
        let before = a.edge().feed().applied();
        for key in lost {
            assert_eq!(ka.put(&full, key, "lost").await, 200);
        }
        let edge = a.edge().clone();
        let want = before + lost.len() as u64;
        eventually(
            Duration::from_secs(20),
            "the feed applies the lost writes",
            || {
                let edge = edge.clone();
                async move { edge.feed().applied() >= want }
            },
        )
        .await;
        a.stop().await;
        origin.stop().await;
        restore_dir(backup.path(), origin.dir());
        origin.restart().await;
        LostHistory {
            clock,
            origin,
            edge: a,
            full,
            _backup: backup,
        }
    }

    /// The edge again, over its data dir; it has synced.
    async fn edge_again(&self) -> TestEdge {
        TestEdge::start_in(self.edge.dir(), &self.origin.url, self.clock.clone()).await
    }
}

/// An origin whose store went back in time — restored from a backup, or a
/// database failed over to a replica that had not seen the latest commits —
/// numbers new writes with revisions an edge already applied from the lost
/// history. The edge, resuming at the last event it applied, finds another
/// event there and resyncs: it holds the new history, and nothing of the lost
/// one. (Resuming after it, as before, it kept the lost writes and missed the
/// new ones at those revisions for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_resyncs_when_the_origin_history_it_followed_was_lost() {
    let lost = LostHistory::make(&["lost-1", "lost-2"]).await;
    let full = &lost.full;
    // New writes, through another edge, take the lost writes' revisions and more.
    let b = TestEdge::start_with(&lost.origin.url, lost.clock.clone()).await;
    let kb = b.client();
    for key in ["new-1", "new-2", "new-3", "new-4"] {
        assert_eq!(kb.put(full, key, "new").await, 200);
    }

    // A comes back: it finds another history at its last revision and resyncs.
    let a = lost.edge_again().await;
    let ka = a.client();
    eventually(Duration::from_secs(10), "A resyncs from a snapshot", || {
        let edge = a.edge().clone();
        async move { edge.feed().snapshots() >= 1 }
    })
    .await;
    assert!(a.edge().feed().diverged() >= 1, "the divergence is counted");
    let metrics = reqwest::get(format!("{}/metrics", a.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edgekv_feed_history_diverged_total ")
                && l != "edgekv_feed_history_diverged_total 0"),
        "{metrics}"
    );
    for key in ["new-1", "new-2", "new-3", "new-4"] {
        assert_eq!(ka.get(full, key).await, (200, b"new".to_vec()), "{key}");
    }
    for key in ["lost-1", "lost-2"] {
        assert_eq!(
            ka.get(full, key).await.0,
            404,
            "A still serves {key} of the lost history"
        );
    }
    assert_eq!(ka.get(full, "kept").await, (200, b"v".to_vec()));
    drop(b);
}

/// The same, when the store lost the edge's last revision and nothing was
/// written since: the origin has no entry where the edge applied one, and
/// says so only by its progress (its head is one short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_resyncs_when_its_last_revision_was_lost_and_nothing_came_after() {
    let lost = LostHistory::make(&["lost"]).await;
    let a = lost.edge_again().await;
    eventually(Duration::from_secs(10), "A resyncs from a snapshot", || {
        let edge = a.edge().clone();
        async move { edge.feed().diverged() >= 1 && edge.feed().snapshots() >= 1 }
    })
    .await;
    let ka = a.client();
    assert_eq!(
        ka.get(&lost.full, "lost").await.0,
        404,
        "A still serves the lost write"
    );
    assert_eq!(ka.get(&lost.full, "kept").await, (200, b"v".to_vec()));
}

/// No false alarm: an origin restarted over the same store has the same
/// history, and an edge resumes it with no resync, whatever its last event was
/// (a namespace's creation, a delete, a write of several keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_resumes_the_same_history_without_a_resync() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut origin = TestOrigin::start(clock.clone(), 1_000_000).await;
    let a = TestEdge::start_with(&origin.url, clock.clone()).await;
    let ka = a.client();
    let full = ka.create_full_namespace("full").await;
    eventually(
        Duration::from_secs(10),
        "A loads the new full namespace",
        || {
            let edge = a.edge().clone();
            async move { edge.feed().snapshots() >= 1 && edge.feed().connected() }
        },
    )
    .await;
    let snapshots = a.edge().feed().snapshots();
    for step in 0..4 {
        let head = a.edge().feed().applied() + 1;
        match step {
            0 => assert_eq!(ka.put(&full, "k", "v").await, 200),
            1 => assert_eq!(ka.delete(&full, "k").await, 200),
            2 => {
                let items =
                    serde_json::json!([{"key": "x", "value": "1"}, {"key": "y", "value": "2"}]);
                let response = ka
                    .request(Method::PUT, &format!("/namespaces/{full}/bulk"))
                    .json(&items)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
            _ => {
                ka.create_namespace("another").await;
            }
        }
        eventually(
            Duration::from_secs(20),
            "A's feed applies the event",
            || {
                let edge = a.edge().clone();
                async move { edge.feed().applied() >= head }
            },
        )
        .await;
        // The event is A's last when the origin restarts; a write after it
        // shows A's feed resumed past the check.
        origin.restart().await;
        let next = a.edge().feed().applied() + 1;
        assert_eq!(ka.put(&full, &format!("probe-{step}"), "p").await, 200);
        eventually(
            Duration::from_secs(20),
            &format!("A's feed resumes after step {step}"),
            || {
                let edge = a.edge().clone();
                async move { edge.feed().applied() >= next }
            },
        )
        .await;
        assert_eq!(
            a.edge().feed().diverged(),
            0,
            "a false alarm after step {step}"
        );
        assert_eq!(
            a.edge().feed().snapshots(),
            snapshots,
            "a resync after step {step}"
        );
    }
}

/// The feed's events for an edge's own writes keep nothing (the answers were
/// kept), and their position is written once per burst, not once per event: it
/// still reaches the store as soon as the feed is idle, where a restart resumes
/// from it and checks the origin's history at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_of_events_that_kept_nothing_reaches_the_store_when_the_feed_is_idle() {
    let test = TestEdge::start().await;
    let client = test.client();
    let full = client.create_full_namespace("position").await;
    let writes = (0..40).map(|i| {
        let client = client.clone();
        let full = full.clone();
        async move { client.put(&full, &format!("k{i}"), "v").await }
    });
    for status in futures_util::future::join_all(writes).await {
        assert_eq!(status, 200);
    }
    let edge = test.edge().clone();
    let head = (0..40)
        .map(|i| {
            let key = format!("k{i}");
            edge.store()
                .get(&full, key.as_bytes())
                .unwrap()
                .unwrap()
                .revision
        })
        .max()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the feed applies the writes' events",
        || {
            let edge = edge.clone();
            async move { edge.feed().applied() >= head }
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the store holds the position the feed applied",
        || {
            let edge = edge.clone();
            async move {
                let stored = edge.store().meta("feed_revision").unwrap();
                stored.as_deref() == Some(&edge.feed().applied().to_be_bytes()[..])
            }
        },
    )
    .await;
    let fingerprint = edge.store().meta("feed_fingerprint").unwrap().unwrap();
    assert_eq!(
        fingerprint[..8],
        edge.feed().applied().to_be_bytes(),
        "the fingerprint is of another revision than the position"
    );
}

/// Copies a directory tree (a stopped store).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Replaces `to`'s contents with a copy of `from`'s.
fn restore_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(to).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    copy_dir(from, to);
}

/// A page of a cache namespace is listed by the origin; its values stay home, so a
/// page of 1,000 large values still fits in one gRPC message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_values_lists() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("large").await;
    let value = "x".repeat(40 * 1024);
    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"key": format!("k{i:04}"), "value": value}))
        .collect();
    let response = kv
        .request(Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = kv
        .request(Method::GET, &format!("/namespaces/{ns}/keys"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "40 MB of values in one page");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["result"].as_array().unwrap().len(), 1000);
}
