//! Once a write is answered, that edge never serves the value it replaced — even
//! with readers racing it through the store and a hot tier small enough to evict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use edgekv_edge::service::Change;
use edgekv_edge::{Edge, EdgeConfig};
use edgekv_kv::{Namespace, SystemClock};
use edgekv_store::Store;
use edgekv_store_rocksdb::{RocksOptions, RocksStore};

const NS: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answered_writes_are_never_undone() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksOptions {
        sync_writes: false,
        ..RocksOptions::default()
    };
    let store = RocksStore::open(dir.path(), &options).unwrap();
    store
        .create_namespace(&Namespace {
            id: NS.into(),
            title: "t".into(),
            account: "a".into(),
        })
        .unwrap();
    let config = EdgeConfig {
        hot_tier_bytes: 1024 * 1024,
        ..EdgeConfig::default()
    };
    let edge = Arc::new(
        Edge::new(
            config,
            Arc::new(store),
            Arc::new(SystemClock),
            Default::default(),
        )
        .unwrap(),
    );
    // Filler keys of 8 KiB keep the 1 MiB tier evicting.
    let filler = Bytes::from(vec![0u8; 8 * 1024]);
    for i in 0..300 {
        let change = Change::Put {
            value: filler.clone(),
            metadata: None,
            expiration: None,
        };
        edge.write(NS, Bytes::from(format!("filler-{i}")), change)
            .await
            .unwrap();
    }

    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (edge, answered, done) = (edge.clone(), answered.clone(), done.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            let mut i = 0usize;
            while !done.load(Ordering::Acquire) {
                let floor = answered.load(Ordering::Acquire);
                let seen = edge.get(NS, b"contended").unwrap().map_or(0, |r| {
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
                // Touch filler keys so the tier keeps churning.
                i = (i + 7) % 300;
                edge.get(NS, format!("filler-{i}").as_bytes()).unwrap();
                reads += 1;
            }
            reads
        }));
    }
    for n in 1..=2000u64 {
        let change = if n % 10 == 0 {
            Change::Delete
        } else {
            Change::Put {
                value: Bytes::from(n.to_string()),
                metadata: None,
                expiration: None,
            }
        };
        edge.write(NS, Bytes::from_static(b"contended"), change)
            .await
            .unwrap();
        answered.store(n, Ordering::Release);
        if n % 10 == 0 {
            assert!(
                edge.get(NS, b"contended").unwrap().is_none(),
                "deleted key served after delete {n}"
            );
        }
    }
    done.store(true, Ordering::Release);
    let mut total = 0;
    for reader in readers {
        total += reader.await.unwrap();
    }
    assert!(total > 1000, "readers barely ran: {total}");
    assert!(edge.hot().stats().evictions > 0, "the tier never evicted");
}
