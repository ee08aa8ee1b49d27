//! The edge's side of "never a 401", in process with a real origin: no token table
//! is a 503, the outbox bound is a 503, a queued write is visible at once and
//! replayed, and an edge whose own calls to known-good fail authentication is not
//! ready and says so in its health report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use edgekv_edge::tokens::TokenTable;
use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::{Clock, ManualClock};
use edgekv_test_support::{
    CREDENTIAL, Client, ENVIRONMENT, TOKEN, TestOrigin, eventually, token_table,
};

async fn edge_of(
    origin: &TestOrigin,
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
    tokens: TokenTable,
    credential: &str,
    tweak: impl FnOnce(&mut EdgeConfig),
) -> RunningEdge {
    let mut config = EdgeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        hot_tier_bytes: 16 * 1024 * 1024,
        shutdown_grace_s: 1,
        origin: origin.url.clone(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        ..EdgeConfig::default()
    };
    tweak(&mut config);
    let edge = edgekv_edge::open(config, clock as Arc<dyn Clock>, tokens, credential).unwrap();
    RunningEdge::start(edge).await.unwrap()
}

fn client(running: &RunningEdge) -> Client {
    Client::new(
        &format!(
            "http://{}/client/v4/accounts/acct/storage/kv",
            running.http_addr
        ),
        TOKEN,
    )
}

#[tokio::test]
async fn without_a_token_table_the_edge_answers_503_not_401() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let running = edge_of(
        &origin,
        dir.path(),
        clock,
        TokenTable::new(0, []),
        CREDENTIAL,
        |_| {},
    )
    .await;
    let response = client(&running)
        .request(
            reqwest::Method::GET,
            "/namespaces/0123456789abcdef0123456789abcdef/values/k",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let ready = reqwest::get(format!("http://{}/readyz", running.admin_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("no token table"));
    running.shutdown().await;
}

#[tokio::test]
async fn queued_writes_are_bounded_visible_at_once_and_replayed() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let running = edge_of(&origin, dir.path(), clock, token_table(), CREDENTIAL, |c| {
        c.outbox_max_writes = 2
    })
    .await;
    let kv = client(&running);
    let ns = kv.create_namespace("outbox").await;
    origin.stop().await;
    for key in ["a", "b"] {
        let response = kv
            .request(reqwest::Method::PUT, &Client::value_path(&ns, key))
            .body(format!("queued {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{key}");
        assert_eq!(response.headers()["edgekv-write"], "queued");
    }
    // Past the bound: 503, and nothing is kept.
    let response = kv
        .request(reqwest::Method::PUT, &Client::value_path(&ns, "c"))
        .body("refused")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(kv.get(&ns, "a").await, (200, b"queued a".to_vec()));
    // The refused write left nothing: the key is not held, so with the origin down
    // its read is an honest 503.
    assert_eq!(kv.get(&ns, "c").await.0, 503);
    let stats = running.edge().outbox().stats(0);
    assert_eq!((stats.depth, stats.queued), (2, 2));

    origin.restart().await;
    eventually(Duration::from_secs(10), "the outbox drains", || async {
        running.edge().outbox().is_empty()
    })
    .await;
    let stats = running.edge().outbox().stats(0);
    assert_eq!((stats.replayed, stats.dead_letters), (2, 0));
    // The origin has them: a no-cache read asks it.
    for key in ["a", "b"] {
        let response = kv
            .request(reqwest::Method::GET, &Client::value_path(&ns, key))
            .header("cache-control", "no-cache")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["edgekv-cache"], "MISS");
        assert_eq!(response.text().await.unwrap(), format!("queued {key}"));
    }
    running.shutdown().await;
}

#[tokio::test]
async fn an_edge_refused_by_known_good_is_not_ready_and_reports_it() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let running = edge_of(
        &origin,
        dir.path(),
        clock,
        token_table(),
        "not-this-environments-credential",
        |_| {},
    )
    .await;
    let edge = running.edge().clone();
    edgekv_edge::health::probe_all(&edge).await;
    assert!(edge.known_good_auth_failing());
    let ready = reqwest::get(format!("http://{}/readyz", running.admin_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("authentication"));
    let report = edgekv_edge::health::report(&edge, 1000);
    assert!(report.known_good_auth_failing);
    assert!(report.builds[0].probes_failed >= 1, "{report:?}");
    // A client still never sees the build's refusal as a 401.
    let response = client(&running)
        .request(reqwest::Method::POST, "/namespaces")
        .json(&serde_json::json!({"title": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    running.shutdown().await;
}

#[tokio::test]
async fn health_reports_count_requests_and_faults_by_class() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let running = edge_of(
        &origin,
        dir.path(),
        clock,
        token_table(),
        CREDENTIAL,
        |_| {},
    )
    .await;
    let kv = client(&running);
    let ns = kv.create_namespace("counted").await;
    for i in 0..5 {
        assert_eq!(kv.put(&ns, &format!("k{i}"), "v").await, 200);
    }
    let report = edgekv_edge::health::report(running.edge(), 1000);
    let build = &report.builds[0];
    assert!(build.requests >= 6, "{build:?}");
    assert_eq!(build.errors_auth + build.errors_unavailable, 0);
    assert_eq!(build.latency_buckets.iter().sum::<u64>(), build.requests);
    // Counters are deltas: the next report starts from zero.
    assert_eq!(
        edgekv_edge::health::report(running.edge(), 1000).builds[0].requests,
        0
    );
    origin.stop().await;
    assert_eq!(kv.put(&ns, "k9", "v").await, 202);
    let build = edgekv_edge::health::report(running.edge(), 1000).builds[0].clone();
    assert!(build.errors_unavailable >= 1, "{build:?}");
    assert!(!build.last_error.is_empty());
    running.shutdown().await;
}

#[tokio::test]
async fn writes_leave_in_the_order_the_edge_took_them() {
    use bytes::Bytes;
    use edgekv_edge::service::{Change, ReadOptions, WriteOutcome};
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = EdgeConfig {
        data_dir: dir.path().to_path_buf(),
        origin: origin.url.clone(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        ..EdgeConfig::default()
    };
    // No server and no replay task: the test replays by hand.
    let edge =
        edgekv_edge::open(config, clock as Arc<dyn Clock>, token_table(), CREDENTIAL).unwrap();
    let ns = edge
        .create_namespace("acct", "ordered", edgekv_kv::Mode::Cache)
        .await
        .unwrap()
        .id;
    let put = |value: &'static str| Change::Put {
        value: Bytes::from_static(value.as_bytes()),
        metadata: None,
        expiration: None,
    };
    origin.stop().await;
    let first = edge
        .write(&ns, vec![(Bytes::from_static(b"first"), put("1"))])
        .await
        .unwrap();
    assert_eq!(first, WriteOutcome::Queued);
    origin.restart().await;
    // The origin is back, but an earlier write still waits: this one queues behind.
    let second = edge
        .write(&ns, vec![(Bytes::from_static(b"second"), put("2"))])
        .await
        .unwrap();
    assert_eq!(second, WriteOutcome::Queued);
    // A repeated key in one write: the last value wins, and each key keeps its own.
    assert!(edge.replay_round().await.unwrap());
    let mixed = edge
        .write(
            &ns,
            vec![
                (Bytes::from_static(b"a"), put("a1")),
                (Bytes::from_static(b"b"), put("b")),
                (Bytes::from_static(b"a"), put("a2")),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(mixed, WriteOutcome::Applied(_)), "{mixed:?}");
    let read = |key: &'static str| {
        let edge = edge.clone();
        let ns = ns.clone();
        async move {
            edge.get(
                &ns,
                edgekv_kv::Mode::Cache,
                key.as_bytes(),
                ReadOptions {
                    no_cache: true,
                    ..ReadOptions::default()
                },
            )
            .await
            .unwrap()
            .record
            .unwrap()
        }
    };
    let (first, second) = (read("first").await, read("second").await);
    assert_eq!(
        (&first.value[..], &second.value[..]),
        (&b"1"[..], &b"2"[..])
    );
    assert!(first.revision < second.revision, "replayed in order");
    assert_eq!(&read("a").await.value[..], b"a2");
    assert_eq!(&read("b").await.value[..], b"b");
    // What the edge kept from the answer pairs each key with its own record.
    let kept = |key: &str| {
        edge.store()
            .get(&ns, key.as_bytes())
            .unwrap()
            .unwrap()
            .value
    };
    assert_eq!((&kept("a")[..], &kept("b")[..]), (&b"a2"[..], &b"b"[..]));
}

#[tokio::test]
async fn one_lost_probe_does_not_eject_a_build_three_do() {
    use edgekv_edge::routes::Routes;
    use edgekv_edge::upstream::Expected;
    use edgekv_routing::{RouteEntry, RouteTable};
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = EdgeConfig {
        data_dir: dir.path().to_path_buf(),
        origin: origin.url.clone(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        upstream_timeout_ms: 300,
        ..EdgeConfig::default()
    };
    let edge =
        edgekv_edge::open(config, clock as Arc<dyn Clock>, token_table(), CREDENTIAL).unwrap();
    // A port nothing listens on: every probe of v2 fails (not an auth refusal).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let entry = |id: &str, weight_bp: u32, url: &str| RouteEntry {
        build_id: id.into(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        artifact_digest: String::new(),
        weight_bp,
        endpoints: vec![url.into()],
        data_set: String::new(),
    };
    let table = RouteTable {
        version: 2,
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        issued_at: 0,
        known_good_build: "v1".into(),
        entries: vec![
            entry("v1", 5_000, &origin.url),
            entry("v2", 5_000, &dead_url),
        ],
    };
    let expected = Expected::new(ENVIRONMENT, ENVIRONMENT);
    let routes =
        Routes::from_table(table, CREDENTIAL, &expected, Duration::from_millis(300)).unwrap();
    edge.set_routes(Arc::new(routes));
    for round in 1..=3 {
        edgekv_edge::health::probe_all(&edge).await;
        let ejected = edge.routes().is_ejected("v2");
        assert_eq!(ejected, round == 3, "after {round} failed probes");
        assert!(
            !edge.routes().is_ejected("v1"),
            "known-good is never ejected"
        );
    }
}

/// A build entry may list several endpoints: a call goes to the one that answered
/// last and, on a build fault, on to the next within the time budget — so a dead
/// endpoint costs one failed connection, not the read (before, only the first
/// endpoint of an entry was ever called).
#[tokio::test]
async fn a_build_with_several_endpoints_fails_over_between_them() {
    use edgekv_edge::upstream::{Expected, Upstream};
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let upstream = Upstream::for_build(
        &[dead_url.clone(), origin.url.clone()],
        CREDENTIAL,
        Expected::new(ENVIRONMENT, ENVIRONMENT),
        Duration::from_secs(2),
        "v1",
    )
    .unwrap();
    assert_eq!(upstream.url(), dead_url, "the entry's first endpoint first");
    let (namespaces, _) = upstream.namespaces().await.unwrap();
    assert!(namespaces.is_empty());
    assert_eq!(
        upstream.url(),
        origin.url,
        "the endpoint that answered is kept"
    );
    let delta = upstream.stats().take();
    assert_eq!(
        (delta.requests, delta.faults.iter().sum::<u64>()),
        (1, 0),
        "one answered request, no fault"
    );
    // Every endpoint down: a build fault that names the last one tried.
    let gone = Upstream::for_build(
        &[dead_url.clone(), dead_url.clone()],
        CREDENTIAL,
        Expected::new(ENVIRONMENT, ENVIRONMENT),
        Duration::from_secs(2),
        "v1",
    )
    .unwrap();
    let err = gone.namespaces().await.unwrap_err();
    assert!(
        matches!(err, edgekv_edge::upstream::UpstreamError::Build(_)),
        "{err}"
    );
}

/// A queued write past the outbox's maximum age is never replayed: it goes to the
/// dead letters, so a replay that late cannot resurrect a delete whose tombstone
/// the origin no longer keeps.
#[tokio::test]
async fn a_queued_write_past_its_maximum_age_is_buried_not_replayed() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut origin = TestOrigin::start(clock.clone(), 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let running = edge_of(
        &origin,
        dir.path(),
        clock.clone(),
        token_table(),
        CREDENTIAL,
        |c| c.outbox_max_age_s = 60,
    )
    .await;
    let kv = client(&running);
    let ns = kv.create_namespace("aging").await;
    origin.stop().await;
    let response = kv
        .request(reqwest::Method::PUT, &Client::value_path(&ns, "late"))
        .body("queued long ago")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    clock.advance(Duration::from_secs(61));
    origin.restart().await;
    eventually(Duration::from_secs(10), "the outbox settles", || async {
        running.edge().outbox().is_empty()
    })
    .await;
    let stats = running.edge().outbox().stats(0);
    assert_eq!((stats.replayed, stats.dead_letters), (0, 1));
    let dead = edgekv_edge::outbox::dead_letters(&**running.edge().store(), 10).unwrap();
    assert!(
        format!("{dead:?}").contains("maximum age"),
        "the reason names the limit: {dead:?}"
    );
    let response = kv
        .request(reqwest::Method::GET, &Client::value_path(&ns, "late"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "the expired write never reached a build"
    );
    running.shutdown().await;
}

/// Copies `from` to `to`, counting the bytes as they pass.
async fn counted_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer).await {
        counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP forwarder to `to` on a port of its own, counting the bytes it carries;
/// aborting its task closes it and every connection through it.
async fn forwarder(
    to: String,
) -> (
    String,
    Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let carried = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = carried.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                continue;
            };
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            connections.spawn(counted_copy(in_read, out_write, counted.clone()));
            connections.spawn(counted_copy(out_read, in_write, counted.clone()));
        }
    });
    (url, carried, task)
}

/// Reads are spread over a build's endpoints in turn; when one dies, reads go on
/// through the others without an error.
#[tokio::test]
async fn reads_are_spread_over_the_endpoints_of_a_build() {
    use edgekv_edge::upstream::{Expected, Upstream};
    use std::sync::atomic::Ordering;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000).await;
    let address = origin.url.trim_start_matches("http://").to_string();
    let (one, through_one, one_task) = forwarder(address.clone()).await;
    let (two, through_two, _two_task) = forwarder(address).await;
    let upstream = Upstream::for_build(
        &[one, two],
        CREDENTIAL,
        Expected::new(ENVIRONMENT, ENVIRONMENT),
        Duration::from_secs(2),
        "v1",
    )
    .unwrap();
    // Not a read: it goes to the first endpoint, and the second is never dialled.
    let (ns, _) = upstream
        .create_namespace("acct", "spread", edgekv_kv::Mode::Cache)
        .await
        .unwrap();
    assert!(through_one.load(Ordering::Relaxed) > 0);
    assert_eq!(through_two.load(Ordering::Relaxed), 0);
    let before = (
        through_one.load(Ordering::Relaxed),
        through_two.load(Ordering::Relaxed),
    );
    for _ in 0..20 {
        upstream.get(&ns.id, b"k").await.unwrap();
    }
    let after = (
        through_one.load(Ordering::Relaxed),
        through_two.load(Ordering::Relaxed),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "reads went to one endpoint only: {before:?} -> {after:?}"
    );
    assert_eq!(upstream.stats().take().faults.iter().sum::<u64>(), 0);
    // Endpoint one dies: every read still answers, through two.
    one_task.abort();
    for _ in 0..20 {
        upstream.get(&ns.id, b"k").await.unwrap();
    }
    assert!(through_two.load(Ordering::Relaxed) > after.1);
}

/// After an outage, an edge under a steady write load drains its outbox and
/// writes directly again: while the replay drains the queue, new writes wait for
/// it rather than join it. (With every new write queued behind and one replay at
/// a time, the queue still held 2,411 writes 4 s after the origin came back, up
/// from 1,463 after 0.5 s, and every write stayed 202.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_under_load_drains_its_outbox_and_writes_directly_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut origin = TestOrigin::start(clock.clone(), 100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let running = edge_of(
        &origin,
        dir.path(),
        clock.clone(),
        token_table(),
        CREDENTIAL,
        |_| {},
    )
    .await;
    let kv = client(&running);
    let ns = kv.create_namespace("steady").await;
    origin.stop().await;
    let stop = Arc::new(AtomicBool::new(false));
    let back = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let kv = client(&running);
            let (ns, stop, back) = (ns.clone(), stop.clone(), back.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let status = kv.put(&ns, &format!("w{w}-{i}"), "v").await;
                    statuses.push((back.load(Ordering::Relaxed), status));
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    origin.restart().await;
    back.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for writer in writers {
        statuses.extend(writer.await.unwrap());
    }
    let queued_before = statuses.iter().filter(|(b, s)| !*b && *s == 202).count();
    assert!(
        queued_before > 50,
        "the outage queued only {queued_before} writes"
    );
    assert!(
        statuses.iter().all(|(_, s)| *s == 200 || *s == 202),
        "a write was refused"
    );
    // The last writes, well after the origin came back, were applied directly.
    let tail: Vec<u16> = statuses.iter().rev().take(20).map(|(_, s)| *s).collect();
    assert!(
        tail.iter().all(|s| *s == 200),
        "writes still queued 4 s after the origin came back: {tail:?}"
    );
    eventually(Duration::from_secs(5), "the outbox drains", || async {
        running.edge().outbox().stats(0).depth == 0
    })
    .await;
}
