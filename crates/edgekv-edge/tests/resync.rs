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
