//! Namespace ids the edge does not know cost the origin at most one namespace
//! list per account per `namespace_refresh_interval_ms`: a flood of random ids
//! answers 404 without a call each, a namespace created elsewhere is found once
//! the interval has passed, and no one waits behind a refresh of another account
//! or for a namespace the edge knows. In process with a real origin; the
//! interval runs on the edge's manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use edgekv_edge::routes::Routes;
use edgekv_edge::upstream::Expected;
use edgekv_edge::{Edge, EdgeConfig, Error};
use edgekv_kv::{Clock, ManualClock, Mode};
use edgekv_routing::{RouteEntry, RouteTable};
use edgekv_test_support::{
    ACCOUNT, CREDENTIAL, Client, ENVIRONMENT, TestEdge, TestOrigin, eventually, token_table,
};
use serde_json::Value;

/// A well-formed namespace id no namespace has.
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// An edge of `origin_url` with no server, and so no change feed: it learns of a
/// namespace it did not create only by asking the origin.
fn edge_without_feed(
    dir: &std::path::Path,
    origin_url: &str,
    clock: Arc<ManualClock>,
) -> Arc<Edge> {
    let config = EdgeConfig {
        data_dir: dir.to_path_buf(),
        origin: origin_url.to_string(),
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        namespace_refresh_interval_ms: 1000,
        ..EdgeConfig::default()
    };
    edgekv_edge::open(config, clock as Arc<dyn Clock>, token_table(), CREDENTIAL).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_namespace_ids_makes_one_origin_call_per_interval() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let known = kv.create_namespace("known").await;
    assert_eq!(kv.put(&known, "k", "v").await, 200);
    let before = edge.edge().namespace_refreshes();

    // 500 GETs of values in random namespace ids of one account, in five waves of
    // 100 at once, the edge's clock moving 250 ms between waves: the flood spans
    // one whole interval (1000 ms, the default), from 0 to 1000 ms.
    for wave in 0..5 {
        if wave > 0 {
            edge.clock.advance(Duration::from_millis(250));
        }
        let gets = (0..100).map(|_| {
            let kv = kv.clone();
            async move {
                let response = kv
                    .request(reqwest::Method::GET, &Client::value_path(&random_id(), "k"))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        });
        // A read of a known key meanwhile is answered as always.
        let (answers, known_read) =
            tokio::join!(futures_util::future::join_all(gets), kv.get(&known, "k"));
        assert_eq!(known_read, (200, b"v".to_vec()), "wave {wave}");
        for (status, body) in answers {
            assert_eq!(status, 404, "wave {wave}: {body}");
            assert_eq!(body["success"], false, "{body}");
            assert_eq!(body["errors"][0]["code"], 10013, "{body}");
            assert_eq!(
                body["errors"][0]["message"], "namespace not found",
                "{body}"
            );
        }
    }

    // The waves at 0, 250, 500 and 750 ms share the refresh the first request of
    // the first wave started (in flight, or less than the interval old); the wave
    // at 1000 ms, one interval later, starts the second. The brief's bound for a
    // flood of about a second on a real clock is 3 (one refresh per interval the
    // flood touches, plus one for timing slack); on the manual clock the flood
    // touches exactly two intervals, so at most 2.
    let refreshes = edge.edge().namespace_refreshes() - before;
    assert!(
        (1..=2).contains(&refreshes),
        "500 requests for unknown ids made {refreshes} origin refreshes"
    );
    // And /metrics says so.
    let metrics = reqwest::get(format!("{}/metrics", edge.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "edgekv_namespace_refreshes_total {}",
            before + refreshes
        )),
        "{metrics}"
    );
    // A repeated id, and any other id, still answers 404 without another call.
    for _ in 0..10 {
        assert_eq!(kv.get(&random_id(), "k").await.0, 404);
    }
    assert_eq!(edge.edge().namespace_refreshes() - before, refreshes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_created_elsewhere_is_found_within_the_interval() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000_000).await;
    let a = TestEdge::start_with(&origin.url, clock.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let b = edge_without_feed(dir.path(), &origin.url, clock.clone());

    // An unknown id: B asks the origin once, and answers 404.
    let stranger = random_id();
    let answer = b.namespace_mode(ACCOUNT, &stranger).await;
    assert!(
        matches!(answer, Err(Error::NamespaceNotFound)),
        "{answer:?}"
    );
    assert_eq!(b.namespace_refreshes(), 1);

    // A namespace created at A a moment later: B refreshed its account less than
    // the interval ago, so it answers 404 at once, without asking again.
    let created = a.client().create_namespace("elsewhere").await;
    let answer = b.namespace_mode(ACCOUNT, &created).await;
    assert!(
        matches!(answer, Err(Error::NamespaceNotFound)),
        "{answer:?}"
    );
    assert_eq!(b.namespace_refreshes(), 1);

    // One interval later, the next request refreshes and finds it.
    clock.advance(Duration::from_millis(1000));
    assert_eq!(
        b.namespace_mode(ACCOUNT, &created).await.unwrap(),
        Mode::Cache
    );
    assert_eq!(b.namespace_refreshes(), 2);
    // The stranger is still unknown, and answered from that same refresh.
    let answer = b.namespace_mode(ACCOUNT, &stranger).await;
    assert!(
        matches!(answer, Err(Error::NamespaceNotFound)),
        "{answer:?}"
    );
    assert_eq!(b.namespace_refreshes(), 2);

    // A namespace created through B itself is found at once, however recently
    // its account refreshed.
    let own = b
        .create_namespace(ACCOUNT, "own", Mode::Cache)
        .await
        .unwrap();
    assert_eq!(
        b.namespace_mode(ACCOUNT, &own.id).await.unwrap(),
        Mode::Cache
    );
    assert_eq!(b.namespace_refreshes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_waits_behind_another_accounts_refresh_or_for_a_known_namespace() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let origin = TestOrigin::start(clock.clone(), 1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let b = edge_without_feed(dir.path(), &origin.url, clock.clone());
    let known = b
        .create_namespace(ACCOUNT, "known", Mode::Cache)
        .await
        .unwrap();

    // From now on B's only build accepts connections and never answers: each
    // namespace refresh hangs for the whole upstream timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let table = RouteTable {
        version: 2,
        environment: ENVIRONMENT.into(),
        tenant: ENVIRONMENT.into(),
        issued_at: 0,
        known_good_build: "v1".into(),
        entries: vec![RouteEntry {
            build_id: "v1".into(),
            environment: ENVIRONMENT.into(),
            tenant: ENVIRONMENT.into(),
            artifact_digest: String::new(),
            weight_bp: 10_000,
            endpoints: vec![silent_url],
            data_set: String::new(),
        }],
    };
    let expected = Expected::new(ENVIRONMENT, ENVIRONMENT);
    let routes = Routes::from_table(table, CREDENTIAL, &expected, Duration::from_secs(4)).unwrap();
    b.set_routes(Arc::new(routes));

    let ask = |account: &'static str| {
        let b = b.clone();
        tokio::spawn(async move { b.namespace_mode(account, &random_id()).await })
    };
    let first = ask(ACCOUNT);
    eventually(
        Duration::from_secs(2),
        "the first refresh is in flight",
        || async { b.namespace_refreshes() == 1 },
    )
    .await;
    // Another unknown id of the same account joins the refresh in flight.
    let joined = ask(ACCOUNT);
    // A known namespace answers at once, refresh or not.
    let mode = tokio::time::timeout(
        Duration::from_millis(500),
        b.namespace_mode(ACCOUNT, &known.id),
    )
    .await
    .expect("a known namespace waited behind a refresh");
    assert_eq!(mode.unwrap(), Mode::Cache);
    // Another account starts its own refresh at once, not after the first.
    let other = ask("other-acct");
    eventually(
        Duration::from_secs(1),
        "another account's refresh starts while the first is in flight",
        || async { b.namespace_refreshes() == 2 },
    )
    .await;
    assert!(
        !first.is_finished(),
        "the first refresh ended too soon to tell"
    );
    assert!(
        !joined.is_finished(),
        "the joined request did not wait for its refresh"
    );

    // The silent build times out: B has no fresh view of its own (it follows no
    // feed), so it cannot tell, and every waiting request says so.
    for task in [first, joined, other] {
        let answer = task.await.unwrap();
        assert!(matches!(answer, Err(Error::Unavailable(_))), "{answer:?}");
    }
    assert_eq!(
        b.namespace_refreshes(),
        2,
        "the joined request refreshed too"
    );
    drop(silent);
}
