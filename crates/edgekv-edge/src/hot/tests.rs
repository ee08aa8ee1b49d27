#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use edgekv_kv::Record;

use super::*;

const NS: &str = "0123456789abcdef0123456789abcdef";

fn rec(value: &'static [u8], revision: u64) -> Record {
    Record {
        revision,
        ..Record::value(Bytes::from_static(value), None, None)
    }
}

#[test]
fn a_hit_shares_the_value() {
    let hot = HotTier::new(1 << 20);
    let value = Bytes::from(vec![7u8; 1000]);
    let token = hot.fill_token(NS, b"k");
    hot.fill(NS, b"k", Record::value(value.clone(), None, None), token);
    let got = hot.get(NS, b"k").unwrap();
    assert_eq!(
        got.value.as_ptr(),
        value.as_ptr(),
        "the hit copied the value"
    );
    assert!(hot.get(NS, b"other").is_none());
    let stats = hot.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
}

#[test]
fn a_fill_after_a_racing_write_is_dropped() {
    let hot = HotTier::new(1 << 20);
    // A reader takes its token and reads the old value from the store...
    let token = hot.fill_token(NS, b"k");
    let old = rec(b"old", 1);
    // ...a writer stores and installs a tombstone...
    hot.update(
        NS,
        b"k",
        Record {
            revision: 2,
            ..Record::tombstone(None)
        },
    );
    // ...and the reader's late fill must not reinstall the old value.
    hot.fill(NS, b"k", old, token);
    assert!(hot.get(NS, b"k").unwrap().tombstone);
}

#[test]
fn a_fill_never_replaces_a_newer_revision() {
    let hot = HotTier::new(1 << 20);
    hot.update(NS, b"k", rec(b"new", 5));
    let token = hot.fill_token(NS, b"k");
    hot.fill(NS, b"k", rec(b"old", 4), token);
    assert_eq!(hot.get(NS, b"k").unwrap().value, "new");
}

#[test]
fn the_budget_holds() {
    let hot = HotTier::new(100_000);
    for i in 0..2_000u32 {
        let key = format!("key-{i}");
        let token = hot.fill_token(NS, key.as_bytes());
        hot.fill(
            NS,
            key.as_bytes(),
            Record::value(Bytes::from(vec![0; 100]), None, None),
            token,
        );
        assert!(hot.stats().bytes <= 100_000 + 300, "over budget at {i}");
    }
    let stats = hot.stats();
    assert!(stats.evictions > 0);
    assert!(
        stats.entries > 200,
        "eviction freed far too much: {stats:?}"
    );
}

#[test]
fn recently_read_entries_survive_eviction() {
    let hot = HotTier::new(50_000);
    let fill = |key: &str| {
        let token = hot.fill_token(NS, key.as_bytes());
        hot.fill(
            NS,
            key.as_bytes(),
            Record::value(Bytes::from(vec![0; 100]), None, None),
            token,
        );
    };
    fill("favourite");
    for i in 0..1_000 {
        assert!(
            hot.get(NS, b"favourite").is_some(),
            "evicted after {i} fills"
        );
        fill(&format!("key-{i}"));
    }
}

#[test]
fn large_values_are_not_held_and_drop_an_older_copy() {
    let hot = HotTier::new(8_000);
    hot.update(NS, b"k", rec(b"small", 1));
    hot.update(
        NS,
        b"k",
        Record {
            revision: 2,
            ..Record::value(Bytes::from(vec![0; 2000]), None, None)
        },
    );
    assert!(hot.get(NS, b"k").is_none());
    assert_eq!(hot.stats().bytes, 0);
}

#[test]
fn deleting_a_namespace_drops_its_entries() {
    let hot = HotTier::new(1 << 20);
    let other = "ffffffffffffffffffffffffffffffff";
    hot.update(NS, b"k", rec(b"v", 1));
    hot.update(other, b"k", rec(b"v", 1));
    hot.remove_namespace(NS);
    assert!(hot.get(NS, b"k").is_none());
    assert!(hot.get(other, b"k").is_some());
}

/// Writers and readers race on a few keys; after each write is installed, no
/// reader sees an older revision.
#[test]
fn concurrent_writes_are_never_undone() {
    let hot = Arc::new(HotTier::new(1 << 20));
    let store: Arc<parking_lot::Mutex<u64>> = Arc::default();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let hot = hot.clone();
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if t == 0 {
                        // Writer: commit to the "store", then install, then check.
                        let rev = {
                            let mut s = store.lock();
                            *s += 1;
                            *s
                        };
                        hot.update(NS, b"k", rec(b"w", rev));
                        let seen = hot.get(NS, b"k").map_or(0, |r| r.revision);
                        assert!(seen >= rev, "answered write {rev} but {seen} is served");
                    } else {
                        // Reader: miss path with a possibly stale store read.
                        let token = hot.fill_token(NS, b"k");
                        let rev = *store.lock();
                        std::thread::yield_now();
                        hot.fill(NS, b"k", rec(b"r", rev), token);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
