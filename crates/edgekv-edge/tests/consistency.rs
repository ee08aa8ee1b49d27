//! Once a write is answered, that edge never serves the value it replaced — even
//! with readers racing it through the store and a hot tier small enough to evict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use edgekv_edge::service::{Change, ReadOptions};
use edgekv_kv::Mode;
use edgekv_test_support::TestEdge;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answered_writes_are_never_undone() {
    let test = TestEdge::start().await;
    let ns = test.client().create_namespace("contended").await;
    let edge = test.edge().clone();
    // Filler keys of 8 KiB: far more than the tier holds, so it keeps evicting.
    let filler = Bytes::from(vec![0u8; 8 * 1024]);
    let fillers: Vec<(Bytes, Change)> = (0..300)
        .map(|i| {
            let change = Change::Put {
                value: filler.clone(),
                metadata: None,
                expiration: None,
            };
            (Bytes::from(format!("filler-{i}")), change)
        })
        .collect();
    edge.write_many(&ns, fillers, None, None).await.unwrap();
    let hot_budget = edge.hot().stats().capacity;
    assert!(
        300 * 8 * 1024 > hot_budget / 100,
        "fillers are a real load on the tier"
    );

    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (edge, answered, done, ns) = (edge.clone(), answered.clone(), done.clone(), ns.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            let mut i = 0usize;
            while !done.load(Ordering::Acquire) {
                let floor = answered.load(Ordering::Acquire);
                // Every other read skips what the edge holds and races the writer
                // through the origin.
                let options = ReadOptions {
                    no_cache: reads.is_multiple_of(2),
                    ..ReadOptions::default()
                };
                let seen = edge
                    .get(&ns, Mode::Cache, b"contended", options)
                    .await
                    .unwrap()
                    .record
                    .map_or(0, |r| {
                        std::str::from_utf8(&r.value)
                            .unwrap()
                            .parse::<u64>()
                            .unwrap()
                    });
                // Every tenth write is a delete, which reads as 0. A value or a
                // delete newer than the floor may show (it may even be in flight,
                // one past what was answered); nothing older may.
                let ceiling = answered.load(Ordering::Acquire) + 1;
                if seen == 0 {
                    let next_delete = floor.div_ceil(10) * 10;
                    assert!(
                        next_delete <= ceiling,
                        "reader {r} saw the key deleted after write {floor} was answered"
                    );
                } else {
                    assert!(
                        (floor..=ceiling).contains(&seen),
                        "reader {r} saw {seen} after write {floor} was answered"
                    );
                }
                i = (i + 7) % 300;
                let filler = format!("filler-{i}");
                edge.get(&ns, Mode::Cache, filler.as_bytes(), ReadOptions::default())
                    .await
                    .unwrap();
                reads += 1;
            }
            reads
        }));
    }
    for n in 1..=500u64 {
        let change = if n.is_multiple_of(10) {
            Change::Delete
        } else {
            Change::Put {
                value: Bytes::from(n.to_string()),
                metadata: None,
                expiration: None,
            }
        };
        edge.write(&ns, vec![(Bytes::from_static(b"contended"), change)])
            .await
            .unwrap();
        answered.store(n, Ordering::Release);
        let now = edge
            .get(&ns, Mode::Cache, b"contended", ReadOptions::default())
            .await
            .unwrap();
        if n.is_multiple_of(10) {
            assert!(now.record.is_none(), "deleted key served after delete {n}");
        } else {
            assert_eq!(
                now.record.unwrap().value,
                n.to_string(),
                "read-your-writes after write {n}"
            );
        }
    }
    done.store(true, Ordering::Release);
    let mut total = 0;
    for reader in readers {
        total += reader.await.unwrap();
    }
    assert!(total > 300, "readers barely ran: {total}");
}
