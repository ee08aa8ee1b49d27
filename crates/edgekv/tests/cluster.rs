//! End-to-end sync with real processes: one origin process, two edges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Edge, Kv, Origin, eventually};

const ENV: &str = "production";
const CRED: &str = "production-credential";
/// Far longer than any test: TTL expiry cannot be what makes a change visible.
const LONG_TTL: &[&str] = &["--cache-ttl-s", "86400"];

struct Cluster {
    origin: Origin,
    a: Edge,
    b: Edge,
    _dirs: Vec<tempfile::TempDir>,
}

async fn cluster(origin_specs: &[&str], origin_extra: &[&str]) -> Cluster {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(dirs[0].path(), ENV, CRED, origin_specs, origin_extra);
    let first = origin.builds[0].1.clone();
    let last = origin.builds.last().unwrap().1.clone();
    let a = Edge::start(dirs[1].path(), &first, ENV, CRED, LONG_TTL);
    let b = Edge::start(dirs[2].path(), &last, ENV, CRED, LONG_TTL);
    a.ready().await;
    b.ready().await;
    Cluster {
        origin,
        a,
        b,
        _dirs: dirs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_writes_overwrites_and_deletes_reach_the_other_edge() {
    let c = cluster(&["v1"], &[]).await;
    let (a, b) = (Kv::of(&c.a), Kv::of(&c.b));

    // A namespace created at A is usable at B at once.
    let ns = a.create_namespace("shared", "cache").await;
    assert_eq!(b.get(&ns, "nothing").await.0, 404);
    assert_eq!(b.put(&ns, "from-b", "hello from b").await, 200);
    assert_eq!(
        a.get(&ns, "from-b").await,
        (200, "hello from b".to_string())
    );

    // A write at A is readable at B; B now holds it.
    assert_eq!(a.put(&ns, "k", "v1").await, 200);
    let (status, body, cache) = b.get_with(&ns, "k", false).await;
    assert_eq!((status, body.as_str()), (200, "v1"));
    assert_eq!(cache, "MISS", "B did not hold it yet");
    let (_, _, cache) = b.get_with(&ns, "k", false).await;
    assert_eq!(cache, "HIT", "B holds it now");

    // An overwrite at A reaches B through the feed: B answers it from what it holds.
    assert_eq!(a.put(&ns, "k", "v2").await, 200);
    eventually(
        Duration::from_secs(10),
        "the overwrite reaches B",
        || async { b.get_with(&ns, "k", false).await == (200, "v2".into(), "HIT".into()) },
    )
    .await;
    // A delete at A reaches B the same way.
    assert_eq!(a.delete(&ns, "k").await, 200);
    eventually(Duration::from_secs(10), "the delete reaches B", || async {
        let (status, _, cache) = b.get_with(&ns, "k", false).await;
        status == 404 && cache == "HIT"
    })
    .await;
    // Renames travel too.
    let response = a
        .request(reqwest::Method::PUT, &format!("/namespaces/{ns}"))
        .json(&serde_json::json!({"title": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(10), "the rename reaches B", || async {
        let body: serde_json::Value = b
            .request(reqwest::Method::GET, &format!("/namespaces/{ns}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["result"]["title"] == "renamed"
    })
    .await;
    drop(c.origin);
}

/// A read that left for the build before a delete and answers after it must not
/// put the deleted value back. Edge B reads through build v2, which answers one
/// second late; meanwhile A deletes the key through v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_delete_never_reinstalls_the_deleted_value() {
    let c = cluster(&["v1", "v2,fault=latency=1500ms"], &[]).await;
    let (a, b) = (Kv::of(&c.a), Kv::of(&c.b));
    let ns = a.create_namespace("race", "cache").await;
    assert_eq!(a.put(&ns, "k", "doomed").await, 200);
    // B does not hold the key: its read goes to the slow build.
    let slow_read = {
        let b = Kv::of(&c.b);
        let ns = ns.clone();
        tokio::spawn(async move { b.get_with(&ns, "k", true).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.delete(&ns, "k").await, 200);
    let (status, body, cache) = slow_read.await.unwrap();
    // The slow read answers what it read: the value before the delete.
    assert_eq!(
        (status, body.as_str(), cache.as_str()),
        (200, "doomed", "MISS")
    );
    // But B must not keep it: once the feed brought the delete, no read of B
    // serves the old value again.
    let (status, _, _) = b.get_with(&ns, "k", false).await;
    assert_eq!(status, 404, "B reinstalled the deleted value");
    let (status, _, cache) = b.get_with(&ns, "k", false).await;
    assert_eq!(
        (status, cache.as_str()),
        (404, "HIT"),
        "B holds the tombstone"
    );
    drop(c.origin);
}

/// The same race for a write: B's write answers late, after A deleted the key and
/// B's feed skipped both changes (B did not hold the key). B must not keep its
/// write's answer over the delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_after_a_newer_delete_is_not_kept() {
    let c = cluster(&["v1", "v2,fault=latency=1500ms"], &[]).await;
    let (a, b) = (Kv::of(&c.a), Kv::of(&c.b));
    let ns = a.create_namespace("write-race", "cache").await;
    let slow_write = {
        let b = Kv::of(&c.b);
        let ns = ns.clone();
        tokio::spawn(async move { b.put(&ns, "k", "overtaken").await })
    };
    // The write commits at once and answers 1.5 s later; delete it meanwhile.
    eventually(
        Duration::from_secs(5),
        "B's write reaches the origin",
        || async { a.get_with(&ns, "k", true).await.0 == 200 },
    )
    .await;
    assert_eq!(a.delete(&ns, "k").await, 200);
    assert_eq!(slow_write.await.unwrap(), 200);
    let (status, _, _) = b.get_with(&ns, "k", false).await;
    assert_eq!(status, 404, "B kept its write's answer over a newer delete");
    drop(c.origin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_during_writes_resumes_and_converges() {
    let mut c = cluster(&["v1"], &[]).await;
    let a = Kv::of(&c.a);
    let ns = a.create_namespace("stream", "full").await;
    let writer = {
        let a = Kv::of(&c.a);
        let ns = ns.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..400 {
                let key = format!("k{i:03}");
                if a.put(&ns, &key, &format!("v{i}")).await == 200 {
                    acknowledged.push((key, format!("v{i}")));
                }
            }
            acknowledged
        })
    };
    // Let B apply part of the stream, then kill it without warning.
    eventually(
        Duration::from_secs(20),
        "B applies part of the stream",
        || async {
            c.b.status().await["feed"]["applied_revision"]
                .as_u64()
                .unwrap_or(0)
                > 50
        },
    )
    .await;
    let before = c.b.status().await["feed"]["applied_revision"]
        .as_u64()
        .unwrap();
    c.b.proc.kill9();
    let acknowledged = writer.await.unwrap();
    assert_eq!(acknowledged.len(), 400, "A acknowledged every write");

    c.b = c.b.start_again();
    c.b.ready().await;
    let resumed = c.b.status().await["feed"]["applied_revision"]
        .as_u64()
        .unwrap();
    assert!(
        resumed >= before,
        "B restarted from {resumed}, behind its persisted {before}"
    );
    let b = Kv::of(&c.b);
    eventually(
        Duration::from_secs(20),
        "B converges on every acknowledged write",
        || async {
            let (status, keys) = b.list(&ns).await;
            status == 200 && keys.len() == acknowledged.len()
        },
    )
    .await;
    for (key, value) in &acknowledged {
        assert_eq!(b.get(&ns, key).await, (200, value.clone()), "{key}");
    }
    drop(c.origin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_reconnect_and_catch_up_after_an_origin_restart() {
    let mut c = cluster(&["v1"], &[]).await;
    let (a, b) = (Kv::of(&c.a), Kv::of(&c.b));
    let ns = a.create_namespace("restart", "cache").await;
    assert_eq!(a.put(&ns, "k", "before").await, 200);
    assert_eq!(b.get(&ns, "k").await, (200, "before".to_string()));
    c.origin.restart();
    // The first write may meet the edge still reconnecting; it is refused (503),
    // never acknowledged and lost.
    eventually(
        Duration::from_secs(20),
        "A writes through the restarted origin",
        || async { a.put(&ns, "k", "after").await == 200 },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "B catches up through its reconnected feed",
        || async { b.get_with(&ns, "k", false).await == (200, "after".into(), "HIT".into()) },
    )
    .await;
    let status = c.b.status().await;
    assert_eq!(status["feed"]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_behind_the_retained_log_resyncs_from_a_snapshot() {
    let mut c = cluster(&["v1"], &["--log-retain", "5"]).await;
    let a = Kv::of(&c.a);
    let ns = a.create_namespace("resync", "full").await;
    assert_eq!(a.put(&ns, "gone", "x").await, 200);
    eventually(Duration::from_secs(10), "B holds the key", || async {
        Kv::of(&c.b).get(&ns, "gone").await.0 == 200
    })
    .await;
    c.b.proc.terminate();
    assert_eq!(a.delete(&ns, "gone").await, 200);
    for i in 0..40 {
        assert_eq!(a.put(&ns, &format!("k{i:02}"), &format!("v{i}")).await, 200);
    }
    // Give the origin a moment to trim its log past where B stopped.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.b = c.b.start_again();
    c.b.ready().await;
    eventually(
        Duration::from_secs(20),
        "B resyncs from a snapshot",
        || async { c.b.status().await["feed"]["snapshots_loaded"].as_u64() == Some(1) },
    )
    .await;
    let b = Kv::of(&c.b);
    eventually(
        Duration::from_secs(20),
        "B has every key after its resync",
        || async { b.list(&ns).await == (200, (0..40).map(|i| format!("k{i:02}")).collect()) },
    )
    .await;
    assert_eq!(
        b.get(&ns, "gone").await.0,
        404,
        "a delete inside the trimmed log is seen"
    );
    assert_eq!(b.get(&ns, "k39").await, (200, "v39".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_namespace_is_served_with_the_origin_stopped() {
    let mut c = cluster(&["v1"], &[]).await;
    let a = Kv::of(&c.a);
    let ns = a.create_namespace("everywhere", "full").await;
    for i in 0..30 {
        assert_eq!(a.put(&ns, &format!("k{i:02}"), &format!("v{i}")).await, 200);
    }
    let b = Kv::of(&c.b);
    let expected: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    eventually(Duration::from_secs(10), "B holds every key", || async {
        b.list(&ns).await == (200, expected.clone())
    })
    .await;
    c.origin.proc.terminate();
    // B never read these keys itself; it holds them because the namespace is full.
    for i in 0..30 {
        let (status, body, _) = b.get_with(&ns, &format!("k{i:02}"), false).await;
        assert_eq!((status, body), (200, format!("v{i}")));
    }
    assert_eq!(b.list(&ns).await, (200, expected.clone()));
    // Even a read that asks for a build falls back to what B holds.
    let (status, body, cache) = b.get_with(&ns, "k07", true).await;
    assert_eq!(
        (status, body.as_str(), cache.as_str()),
        (200, "v7", "STALE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_edge_never_passes_on_a_staging_builds_401() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let staging = Origin::start(
        dirs[0].path(),
        "staging",
        "staging-credential",
        &["kv-v2"],
        &[],
    );
    let edge = Edge::start(dirs[1].path(), &staging.url("kv-v2"), ENV, CRED, &[]);
    // The staging build refuses the production credential: the edge never syncs...
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = reqwest::get(format!("{}/readyz", edge.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // ...and answers 503 with Retry-After, never the build's 401.
    let kv = Kv::of(&edge);
    let response = kv
        .request(
            reqwest::Method::GET,
            "/namespaces/0123456789abcdef0123456789abcdef/values/k",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let response = kv
        .request(reqwest::Method::POST, "/namespaces")
        .json(&serde_json::json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}
