//! The test suite every storage engine passes.
//!
//! Each function takes a fresh, empty store and panics on the first broken
//! expectation. [`store_suite!`](crate::store_suite) turns them into one `#[test]`
//! each for an engine, given an expression that makes `(store, guard)`, where the
//! guard keeps what the store needs alive (a temporary directory):
//!
//! ```ignore
//! edgekv_store::store_suite!(open_in_temporary_dir());
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;

use bytes::Bytes;
use edgekv_kv::{Namespace, Record, cursor};

use crate::{Commit, Error, ListQuery, LogRead, NamespaceOp, ReadSet, SnapshotItem, Store, Write};

/// Generates one `#[test]` per suite function, each on a `(store, guard)` made by `$make`.
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@tests $make;
            namespaces, namespaces_are_isolated, write_and_read, tombstones,
            revisions_follow_commit_order, listing, listing_hides_dead_keys,
            cursor_survives_writes, purge, purge_spares_rewritten_keys,
            delete_namespace_drops_its_keys, meta, binary_keys_and_values,
            keep_newer_keeps_only_newer_revisions, change_log, write_ids_outlive_the_log_until_their_time,
            snapshot_is_consistent, queues, queue_batches_points_and_pages,
            transact_reads_then_commits_in_order, large_values, init_meta_keeps_the_first,
            log_reads_are_bounded_in_bytes);
    };
    (@tests $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (store, _guard) = $make;
                $crate::suite::$name(&store);
            }
        )*
    };
}

const NS_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NS_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn ns(id: &str, title: &str) -> Namespace {
    Namespace {
        id: id.into(),
        title: title.into(),
        account: "acct".into(),
        mode: edgekv_kv::Mode::Cache,
    }
}

fn put(store: &dyn Store, namespace: &str, key: &str, value: &str) -> u64 {
    put_record(
        store,
        namespace,
        key.as_bytes(),
        Record::value(Bytes::copy_from_slice(value.as_bytes()), None, None),
    )
}

fn put_record(store: &dyn Store, namespace: &str, key: &[u8], record: Record) -> u64 {
    store
        .write(vec![Write {
            namespace: namespace.into(),
            key: Bytes::copy_from_slice(key),
            record,
        }])
        .unwrap()
}

fn value(store: &dyn Store, namespace: &str, key: &str) -> Option<Bytes> {
    store
        .get(namespace, key.as_bytes())
        .unwrap()
        .filter(|r| !r.tombstone)
        .map(|r| r.value)
}

fn list_all(store: &dyn Store, namespace: &str, prefix: &str, now_s: u64) -> Vec<String> {
    let query = ListQuery {
        prefix: prefix.as_bytes().to_vec(),
        start_after: None,
        limit: usize::MAX,
    };
    let page = store.list(namespace, &query, now_s).unwrap();
    assert!(!page.more);
    page.entries
        .into_iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

pub fn namespaces(store: &dyn Store) {
    assert!(store.namespaces().unwrap().is_empty());
    store.create_namespace(&ns(NS_B, "b")).unwrap();
    store.create_namespace(&ns(NS_A, "a")).unwrap();
    assert!(matches!(
        store.create_namespace(&ns(NS_A, "again")),
        Err(Error::NamespaceExists(_))
    ));
    let ids: Vec<String> = store
        .namespaces()
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, [NS_A, NS_B]);
    store.update_namespace(&ns(NS_A, "renamed")).unwrap();
    assert_eq!(store.namespace(NS_A).unwrap().unwrap().title, "renamed");
    assert!(matches!(
        store.update_namespace(&ns("cccccccccccccccccccccccccccccccc", "c")),
        Err(Error::NoSuchNamespace(_))
    ));
    assert!(store.delete_namespace(NS_B).unwrap());
    assert!(!store.delete_namespace(NS_B).unwrap());
    assert!(store.namespace(NS_B).unwrap().is_none());
}

pub fn namespaces_are_isolated(store: &dyn Store) {
    put(store, NS_A, "k", "in a");
    put(store, NS_B, "k", "in b");
    put(store, NS_B, "only-b", "x");
    assert_eq!(value(store, NS_A, "k").unwrap(), "in a");
    assert_eq!(value(store, NS_B, "k").unwrap(), "in b");
    assert!(value(store, NS_A, "only-b").is_none());
    assert_eq!(list_all(store, NS_A, "", 0), ["k"]);
}

pub fn write_and_read(store: &dyn Store) {
    assert!(store.get(NS_A, b"k").unwrap().is_none());
    let meta = Bytes::from_static(br#"{"a":1}"#);
    let record = Record {
        hlc: 77,
        ..Record::value(Bytes::from_static(b"v1"), Some(meta.clone()), Some(5000))
    };
    let rev = put_record(store, NS_A, b"k", record);
    let held = store.get(NS_A, b"k").unwrap().unwrap();
    assert_eq!(held.value, "v1");
    assert_eq!(held.metadata, Some(meta));
    assert_eq!(held.expiration, Some(5000));
    assert_eq!(held.hlc, 77);
    assert_eq!(held.revision, rev);
    put(store, NS_A, "k", "v2");
    let held = store.get(NS_A, b"k").unwrap().unwrap();
    assert_eq!(held.value, "v2");
    assert_eq!(held.metadata, None);
    assert_eq!(held.expiration, None);
}

pub fn tombstones(store: &dyn Store) {
    put(store, NS_A, "k", "v");
    put_record(store, NS_A, b"k", Record::tombstone(Some(10_000)));
    let held = store.get(NS_A, b"k").unwrap().unwrap();
    assert!(held.tombstone);
    assert!(held.value.is_empty());
    assert!(list_all(store, NS_A, "", 0).is_empty());
}

pub fn revisions_follow_commit_order(store: &dyn Store) {
    let base = store.revision();
    let r1 = put(store, NS_A, "a", "1");
    let r2 = store
        .write(vec![
            Write {
                namespace: NS_A.into(),
                key: Bytes::from_static(b"b"),
                record: Record::value(Bytes::from_static(b"2"), None, None),
            },
            Write {
                namespace: NS_B.into(),
                key: Bytes::from_static(b"c"),
                record: Record::value(Bytes::from_static(b"3"), None, None),
            },
        ])
        .unwrap();
    assert_eq!((r1, r2), (base + 1, base + 2));
    assert_eq!(store.revision(), r2);
    assert_eq!(store.get(NS_B, b"c").unwrap().unwrap().revision, r2);
}

pub fn listing(store: &dyn Store) {
    for key in ["b", "a", "ab", "c/1", "c/2", "c0", "d"] {
        put(store, NS_A, key, key);
    }
    put(store, NS_B, "a-other", "x");
    assert_eq!(
        list_all(store, NS_A, "", 0),
        ["a", "ab", "b", "c/1", "c/2", "c0", "d"]
    );
    assert_eq!(list_all(store, NS_A, "c/", 0), ["c/1", "c/2"]);
    assert_eq!(list_all(store, NS_A, "a", 0), ["a", "ab"]);
    assert!(list_all(store, NS_A, "zz", 0).is_empty());

    let first = store
        .list(
            NS_A,
            &ListQuery {
                limit: 3,
                ..ListQuery::default()
            },
            0,
        )
        .unwrap();
    assert!(first.more);
    assert_eq!(first.entries.len(), 3);
    assert_eq!(first.entries[2].0, "b");
    assert!(
        first.entries[2].1.value.is_empty(),
        "a listing holds no value"
    );
    let rest = store
        .list(
            NS_A,
            &ListQuery {
                start_after: Some(b"b".to_vec()),
                limit: 4,
                ..ListQuery::default()
            },
            0,
        )
        .unwrap();
    assert!(!rest.more, "exactly four keys remain");
    assert_eq!(rest.entries.len(), 4);
}

pub fn listing_hides_dead_keys(store: &dyn Store) {
    put(store, NS_A, "live", "v");
    put_record(store, NS_A, b"dead", Record::tombstone(None));
    put_record(
        store,
        NS_A,
        b"expired",
        Record::value(Bytes::from_static(b"v"), None, Some(100)),
    );
    put_record(
        store,
        NS_A,
        b"later",
        Record::value(Bytes::from_static(b"v"), None, Some(200)),
    );
    assert_eq!(list_all(store, NS_A, "", 150), ["later", "live"]);
    assert_eq!(list_all(store, NS_A, "", 50), ["expired", "later", "live"]);
    // A page that ends right before only dead keys says there is no more.
    let page = store
        .list(
            NS_A,
            &ListQuery {
                limit: 2,
                ..ListQuery::default()
            },
            150,
        )
        .unwrap();
    assert!(!page.more);
}

pub fn cursor_survives_writes(store: &dyn Store) {
    for i in 0..10 {
        put(store, NS_A, &format!("k{i}"), "v");
    }
    let page = store
        .list(
            NS_A,
            &ListQuery {
                limit: 4,
                ..ListQuery::default()
            },
            0,
        )
        .unwrap();
    let token = cursor::encode(&page.entries.last().unwrap().0);
    // Writes and deletes on both sides of the cursor.
    put_record(store, NS_A, b"k5", Record::tombstone(None));
    put(store, NS_A, "k0a", "behind the cursor");
    put(store, NS_A, "k7a", "ahead of the cursor");
    put_record(store, NS_A, b"k3", Record::tombstone(None));
    let after = cursor::decode(&token).unwrap();
    let rest = store
        .list(
            NS_A,
            &ListQuery {
                start_after: Some(after),
                limit: 100,
                ..ListQuery::default()
            },
            0,
        )
        .unwrap();
    let keys: Vec<&[u8]> = rest.entries.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, [&b"k4"[..], b"k6", b"k7", b"k7a", b"k8", b"k9"]);
}

pub fn purge(store: &dyn Store) {
    put_record(
        store,
        NS_A,
        b"e1",
        Record::value(Bytes::from_static(b"v"), None, Some(100)),
    );
    put_record(
        store,
        NS_A,
        b"e2",
        Record::value(Bytes::from_static(b"v"), None, Some(300)),
    );
    put_record(store, NS_A, b"t", Record::tombstone(Some(100)));
    put(store, NS_A, "forever", "v");
    assert_eq!(store.purge_expired(99, 100).unwrap(), 0);
    assert_eq!(store.purge_expired(100, 100).unwrap(), 2);
    assert!(store.get(NS_A, b"e1").unwrap().is_none());
    assert!(store.get(NS_A, b"t").unwrap().is_none());
    assert!(store.get(NS_A, b"e2").unwrap().is_some());
    assert_eq!(store.purge_expired(1000, 100).unwrap(), 1);
    assert!(store.get(NS_A, b"forever").unwrap().is_some());
}

pub fn purge_spares_rewritten_keys(store: &dyn Store) {
    put_record(
        store,
        NS_A,
        b"k",
        Record::value(Bytes::from_static(b"old"), None, Some(100)),
    );
    put(store, NS_A, "k", "new, no expiry");
    put_record(
        store,
        NS_A,
        b"j",
        Record::value(Bytes::from_static(b"old"), None, Some(100)),
    );
    put_record(
        store,
        NS_A,
        b"j",
        Record::value(Bytes::from_static(b"new"), None, Some(500)),
    );
    store.purge_expired(200, 100).unwrap();
    assert_eq!(value(store, NS_A, "k").unwrap(), "new, no expiry");
    assert_eq!(value(store, NS_A, "j").unwrap(), "new");
    assert_eq!(store.purge_expired(500, 100).unwrap(), 1);
    assert!(store.get(NS_A, b"j").unwrap().is_none());
}

pub fn delete_namespace_drops_its_keys(store: &dyn Store) {
    store.create_namespace(&ns(NS_A, "a")).unwrap();
    put(store, NS_A, "k", "v");
    put(store, NS_B, "k", "v");
    assert!(store.delete_namespace(NS_A).unwrap());
    assert!(store.get(NS_A, b"k").unwrap().is_none());
    assert!(list_all(store, NS_A, "", 0).is_empty());
    assert_eq!(value(store, NS_B, "k").unwrap(), "v");
}

pub fn meta(store: &dyn Store) {
    assert!(store.meta("token").unwrap().is_none());
    store.set_meta("token", b"secret").unwrap();
    store.set_meta("token", b"secret2").unwrap();
    assert_eq!(store.meta("token").unwrap().unwrap(), b"secret2");
}

pub fn queues(store: &dyn Store) {
    assert_eq!(store.queue_len("outbox").unwrap(), 0);
    assert!(store.queue_read("outbox", 10).unwrap().is_empty());
    let first = store.queue_push("outbox", b"one").unwrap();
    let second = store.queue_push("outbox", b"two").unwrap();
    let third = store.queue_push("outbox", b"three").unwrap();
    assert!(first < second && second < third, "sequences grow");
    store.queue_push("other", b"elsewhere").unwrap();
    assert_eq!(store.queue_len("outbox").unwrap(), 3);
    let read = store.queue_read("outbox", 2).unwrap();
    assert_eq!(
        read,
        vec![(first, b"one".to_vec()), (second, b"two".to_vec())]
    );
    // Moving an entry is atomic: it leaves one queue and joins the end of another.
    store
        .queue_remove("outbox", second, Some(("dead", b"two: why")))
        .unwrap();
    // An absent entry moves nowhere.
    store
        .queue_remove("outbox", second, Some(("dead", b"again")))
        .unwrap();
    store.queue_remove("outbox", first, None).unwrap();
    store.queue_remove("outbox", first, None).unwrap();
    assert_eq!(
        store.queue_read("outbox", 10).unwrap(),
        vec![(third, b"three".to_vec())]
    );
    let dead = store.queue_read("dead", 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, b"two: why");
    assert_eq!(store.queue_read("other", 10).unwrap()[0].1, b"elsewhere");
    // A sequence is never handed out twice, even after the queue emptied.
    store.queue_remove("outbox", third, None).unwrap();
    assert_eq!(store.queue_len("outbox").unwrap(), 0);
    let fourth = store.queue_push("outbox", b"four").unwrap();
    assert!(fourth > third);
}

/// A batch of entries joins the end of a queue in order; an entry is read back by
/// its sequence number until it is removed; a queue is read page by page.
pub fn queue_batches_points_and_pages(store: &dyn Store) {
    assert!(store.queue_push_many("outbox", &[]).unwrap().is_empty());
    assert_eq!(store.queue_len("outbox").unwrap(), 0);
    let first = store.queue_push("outbox", b"zero").unwrap();
    let batch: Vec<Vec<u8>> = ["one", "two", "three", "four"]
        .iter()
        .map(|e| e.as_bytes().to_vec())
        .collect();
    let sequences = store.queue_push_many("outbox", &batch).unwrap();
    assert_eq!(sequences.len(), 4);
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]) && sequences[0] > first,
        "a batch's sequences grow, in its order, after the earlier ones: {sequences:?}"
    );
    // Another queue, and one whose name begins like this one's, stay apart.
    store.queue_push("outboxes", b"elsewhere").unwrap();
    store.queue_push_many("other", &[b"x".to_vec()]).unwrap();
    assert_eq!(store.queue_len("outbox").unwrap(), 5);
    let after = store.queue_push("outbox", b"five").unwrap();
    assert!(after > sequences[3], "a push after a batch comes after it");

    // Point reads.
    assert_eq!(
        store.queue_get("outbox", sequences[1]).unwrap().as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(store.queue_get("outbox", after + 100).unwrap(), None);
    assert_eq!(store.queue_get("nowhere", sequences[1]).unwrap(), None);

    // Pages: entries above `after`, oldest first, at most `max`.
    let everything: Vec<(u64, Vec<u8>)> = std::iter::once(first)
        .chain(sequences.iter().copied())
        .chain([after])
        .zip(["zero", "one", "two", "three", "four", "five"])
        .map(|(s, e)| (s, e.as_bytes().to_vec()))
        .collect();
    assert_eq!(store.queue_scan("outbox", 0, 100).unwrap(), everything);
    assert_eq!(store.queue_read("outbox", 100).unwrap(), everything);
    assert_eq!(
        store.queue_scan("outbox", 0, 2).unwrap(),
        everything[..2].to_vec()
    );
    assert_eq!(
        store.queue_scan("outbox", sequences[0], 3).unwrap(),
        everything[2..5].to_vec()
    );
    assert!(store.queue_scan("outbox", after, 10).unwrap().is_empty());
    assert!(store.queue_scan("outbox", u64::MAX, 10).unwrap().is_empty());
    assert!(store.queue_scan("outbox", 0, 0).unwrap().is_empty());
    let mut paged = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.queue_scan("outbox", cursor, 2).unwrap();
        let Some(&(last, _)) = page.last() else { break };
        cursor = last;
        paged.extend(page);
    }
    assert_eq!(paged, everything, "paging returns every entry once");

    // A removed entry is gone from point reads and pages.
    store.queue_remove("outbox", sequences[1], None).unwrap();
    assert_eq!(store.queue_get("outbox", sequences[1]).unwrap(), None);
    let rest = store.queue_scan("outbox", sequences[0], 10).unwrap();
    assert_eq!(rest.first().map(|(s, _)| *s), Some(sequences[2]));
    assert_eq!(rest.len(), 3);
}

pub fn binary_keys_and_values(store: &dyn Store) {
    let value: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let keys: BTreeSet<Vec<u8>> = [
        &b"\x00"[..],
        b"\x00\x01",
        b"\xff\xfe",
        "ключ/with space%?#".as_bytes(),
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    for key in &keys {
        put_record(
            store,
            NS_A,
            key,
            Record::value(value.clone().into(), None, None),
        );
    }
    for key in &keys {
        assert_eq!(store.get(NS_A, key).unwrap().unwrap().value, value);
    }
    let page = store
        .list(
            NS_A,
            &ListQuery {
                limit: 100,
                ..ListQuery::default()
            },
            0,
        )
        .unwrap();
    let listed: Vec<Vec<u8>> = page.entries.into_iter().map(|(k, _)| k.to_vec()).collect();
    assert_eq!(listed, keys.into_iter().collect::<Vec<_>>());
}

pub fn keep_newer_keeps_only_newer_revisions(store: &dyn Store) {
    let at = |revision: u64, value: &'static str| Write {
        namespace: NS_A.into(),
        key: Bytes::from_static(b"k"),
        record: Record {
            revision,
            ..Record::value(Bytes::from_static(value.as_bytes()), None, None)
        },
    };
    let kept = store
        .keep_newer(vec![at(5, "five")], vec![("feed".into(), b"5".to_vec())])
        .unwrap();
    assert_eq!(kept, [true]);
    assert_eq!(store.meta("feed").unwrap().unwrap(), b"5");
    assert_eq!(
        store.keep_newer(vec![at(4, "four")], vec![]).unwrap(),
        [false]
    );
    assert_eq!(
        store.keep_newer(vec![at(5, "again")], vec![]).unwrap(),
        [false]
    );
    let held = store.get(NS_A, b"k").unwrap().unwrap();
    assert_eq!(
        (held.revision, held.value),
        (5, Bytes::from_static(b"five"))
    );
    let tombstone = Write {
        record: Record {
            revision: 9,
            ..Record::tombstone(None)
        },
        ..at(0, "")
    };
    assert_eq!(store.keep_newer(vec![tombstone], vec![]).unwrap(), [true]);
    assert!(store.get(NS_A, b"k").unwrap().unwrap().tombstone);
}

pub fn change_log(store: &dyn Store) {
    let namespace = ns(NS_A, "a");
    let r1 = store
        .commit(Commit {
            namespaces: vec![NamespaceOp::Put(namespace.clone())],
            ..Commit::default()
        })
        .unwrap();
    let r2 = store
        .commit(Commit {
            writes: vec![Write {
                namespace: NS_A.into(),
                key: Bytes::from_static(b"k"),
                record: Record::value(Bytes::from_static(b"v"), None, None),
            }],
            write_id: Some(b"node-1:7".to_vec()),
            ..Commit::default()
        })
        .unwrap();
    let r3 = store
        .commit(Commit {
            namespaces: vec![NamespaceOp::Delete(NS_B.into())],
            ..Commit::default()
        })
        .unwrap();
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    let LogRead::Entries(entries) = store.log(r1, 100).unwrap() else {
        panic!("the log was trimmed");
    };
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].namespaces, [NamespaceOp::Put(namespace)]);
    assert_eq!(entries[1].revision, r2);
    assert_eq!(entries[1].writes[0].record.revision, r2);
    assert_eq!(entries[1].writes[0].record.value, "v");
    assert_eq!(entries[1].write_id.as_deref(), Some(&b"node-1:7"[..]));
    assert_eq!(entries[2].namespaces, [NamespaceOp::Delete(NS_B.into())]);
    let LogRead::Entries(tail) = store.log(r3, 100).unwrap() else {
        panic!("the log was trimmed");
    };
    assert_eq!(tail.len(), 1);
    let LogRead::Entries(none) = store.log(r3 + 1, 100).unwrap() else {
        panic!("reading past the end is not a trim");
    };
    assert!(none.is_empty());
    let LogRead::Entries(limited) = store.log(r1, 2).unwrap() else {
        panic!("the log was trimmed");
    };
    assert_eq!(limited.len(), 2);
    assert_eq!(
        store.written(b"node-1:7").unwrap().map(|w| w.revision),
        Some(r2)
    );
    assert_eq!(store.written(b"node-1:8").unwrap(), None);
}

pub fn transact_reads_then_commits_in_order(store: &dyn Store) {
    store.create_namespace(&ns(NS_A, "a")).unwrap();
    let first = put(store, NS_A, "k", "v1");
    store
        .commit(Commit {
            write_id: Some(b"w-1".to_vec()),
            write_digest: Some([7; 32]),
            ..Commit::default()
        })
        .unwrap();
    let reads = ReadSet {
        keys: vec![
            (NS_A.into(), Bytes::from_static(b"k")),
            (NS_A.into(), Bytes::from_static(b"absent")),
        ],
        write_ids: vec![b"w-1".to_vec(), b"w-2".to_vec()],
        namespaces: vec![NS_A.into(), NS_B.into()],
        all_namespaces: false,
    };
    let mut seen = None;
    let revisions = store
        .transact(&reads, &mut |view| {
            seen = Some(view);
            let write = |value: &'static str| Commit {
                writes: vec![Write {
                    namespace: NS_A.into(),
                    key: Bytes::from_static(b"k"),
                    record: Record::value(Bytes::from_static(value.as_bytes()), None, None),
                }],
                ..Commit::default()
            };
            Ok(vec![
                write("v2"),
                Commit {
                    write_id: Some(b"w-2".to_vec()),
                    ..write("v3")
                },
            ])
        })
        .unwrap();
    let view = seen.expect("decide was called");
    let held = &view.records[&(NS_A.to_string(), Bytes::from_static(b"k"))];
    assert_eq!((held.value.as_ref(), held.revision), (&b"v1"[..], first));
    assert_eq!(view.records.len(), 1, "an absent key reads as absent");
    assert_eq!(
        view.written[&b"w-1".to_vec()].digest,
        Some([7; 32]),
        "a known write id reads with its digest"
    );
    assert!(!view.written.contains_key(b"w-2".as_slice()));
    assert_eq!(view.namespaces.keys().collect::<Vec<_>>(), [NS_A]);
    // Consecutive revisions, in the order decided, right after the last commit.
    assert_eq!(revisions, [first + 2, first + 3]);
    assert_eq!(store.revision(), first + 3);
    assert_eq!(value(store, NS_A, "k").unwrap(), "v3");
    assert_eq!(
        store.written(b"w-2").unwrap().map(|w| w.revision),
        Some(first + 3)
    );
    let LogRead::Entries(entries) = store.log(first + 2, 10).unwrap() else {
        panic!("the log was trimmed");
    };
    let logged: Vec<(u64, Bytes)> = entries
        .iter()
        .map(|e| (e.revision, e.writes[0].record.value.clone()))
        .collect();
    assert_eq!(
        logged,
        [
            (first + 2, Bytes::from_static(b"v2")),
            (first + 3, Bytes::from_static(b"v3"))
        ]
    );

    // Every namespace, when asked; a failing decision commits nothing.
    store.create_namespace(&ns(NS_B, "b")).unwrap();
    let head = store.revision();
    let all = ReadSet {
        all_namespaces: true,
        ..ReadSet::default()
    };
    let refused = store.transact(&all, &mut |view| {
        assert_eq!(view.namespaces.len(), 2);
        Err(Error::Engine("refused by the decision".into()))
    });
    assert!(matches!(refused, Err(Error::Engine(_))));
    assert_eq!(store.revision(), head);
    let nothing: Vec<u64> = store.transact(&all, &mut |_| Ok(Vec::new())).unwrap();
    assert!(nothing.is_empty());
    assert_eq!(store.revision(), head);
}

/// A value at the largest size a client may write (25 MiB) is stored, read, logged
/// and snapshotted whole.
pub fn large_values(store: &dyn Store) {
    store.create_namespace(&ns(NS_A, "a")).unwrap();
    let big: Vec<u8> = (0..25 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let big = Bytes::from(big);
    let revision = put_record(
        store,
        NS_A,
        b"big",
        Record::value(big.clone(), Some(Bytes::from_static(b"{\"m\":1}")), None),
    );
    let held = store.get(NS_A, b"big").unwrap().unwrap();
    assert_eq!(held.value.len(), big.len());
    assert!(held.value == big, "the value reads back byte for byte");
    assert_eq!(held.metadata.as_deref(), Some(&b"{\"m\":1}"[..]));
    let LogRead::Entries(entries) = store.log(revision, 1).unwrap() else {
        panic!("the log was trimmed");
    };
    assert!(entries[0].writes[0].record.value == big);
    let mut seen = 0;
    store
        .snapshot(&[NS_A.into()], &mut |item| {
            if let SnapshotItem::Key(write) = item {
                assert!(write.record.value == big);
                seen += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 1);
    // A listing shows the key and its metadata, never the value.
    let query = ListQuery {
        prefix: Vec::new(),
        start_after: None,
        limit: 10,
    };
    let page = store.list(NS_A, &query, 0).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(
        page.entries[0].1.value.is_empty(),
        "a listing held the value"
    );
    assert_eq!(
        page.entries[0].1.metadata.as_deref(),
        Some(&b"{\"m\":1}"[..])
    );
    // Overwritten by a small value: nothing of the big one is left behind.
    put(store, NS_A, "big", "small");
    assert_eq!(value(store, NS_A, "big").unwrap(), "small");
}

/// A read of the log stops at [`crate::LOG_READ_BYTES`]: the entries that
/// begin within it, whole, and always at least one; the next read goes on.
/// (Before, 256 entries of 25 MiB values were read at once: 6.4 GB.)
pub fn log_reads_are_bounded_in_bytes(store: &dyn Store) {
    store.create_namespace(&ns(NS_A, "a")).unwrap();
    let big = Bytes::from(vec![7u8; 20 * 1024 * 1024]);
    let first = put_record(store, NS_A, b"a", Record::value(big.clone(), None, None));
    for key in [b"b", b"c", b"d", b"e"] {
        put_record(store, NS_A, key, Record::value(big.clone(), None, None));
    }
    let read = |from| {
        let LogRead::Entries(entries) = store.log(from, 256).unwrap() else {
            panic!("the log was trimmed");
        };
        entries.iter().map(|e| e.revision).collect::<Vec<_>>()
    };
    // 20 MiB begins within 32: two entries, 40 MiB.
    assert_eq!(read(first), vec![first, first + 1]);
    assert_eq!(read(first + 2), vec![first + 2, first + 3]);
    assert_eq!(read(first + 3), vec![first + 3, first + 4]);
    assert_eq!(read(first + 4), vec![first + 4]);
    assert!(crate::LOG_READ_BYTES < 2 * big.len() + 1024);
}

pub fn init_meta_keeps_the_first(store: &dyn Store) {
    assert_eq!(store.init_meta("id", b"first").unwrap(), b"first");
    assert_eq!(store.init_meta("id", b"second").unwrap(), b"first");
    assert_eq!(store.meta("id").unwrap().as_deref(), Some(&b"first"[..]));
}

pub fn write_ids_outlive_the_log_until_their_time(store: &dyn Store) {
    let mut revisions = Vec::new();
    for i in 0..5u8 {
        revisions.push(
            store
                .commit(Commit {
                    writes: vec![Write {
                        namespace: NS_A.into(),
                        key: Bytes::from(vec![b'k', i]),
                        record: Record::value(Bytes::from_static(b"v"), None, None),
                    }],
                    write_id: Some(vec![b'w', i]),
                    write_id_until_s: 100 + u64::from(i),
                    // Every other commit with a digest: both forms are kept.
                    write_digest: (i % 2 == 0).then_some([i; 32]),
                    ..Commit::default()
                })
                .unwrap(),
        );
    }
    assert_eq!(store.trim_log(2).unwrap(), 3);
    assert_eq!(
        store.log(revisions[0], 10).unwrap(),
        LogRead::Trimmed {
            first: revisions[3]
        }
    );
    assert_eq!(
        store.log(revisions[2], 10).unwrap(),
        LogRead::Trimmed {
            first: revisions[3]
        }
    );
    let LogRead::Entries(kept) = store.log(revisions[3], 10).unwrap() else {
        panic!("kept entries were trimmed");
    };
    assert_eq!(kept.len(), 2);
    // A trim of the log leaves the ids: they are kept for a time.
    assert_eq!(
        store.written(&[b'w', 0]).unwrap(),
        Some(crate::WrittenId {
            revision: revisions[0],
            digest: Some([0; 32]),
        }),
        "an id is kept past its commit's log entry, with its digest"
    );
    assert_eq!(
        store.written(&[b'w', 3]).unwrap().map(|w| w.digest),
        Some(None),
        "an id committed without a digest has none"
    );
    // Before any id's time, none is forgotten; then those whose time came, at
    // most `max` a call.
    assert_eq!(store.forget_write_ids(99, 10).unwrap(), 0);
    assert_eq!(store.forget_write_ids(102, 2).unwrap(), 2);
    assert_eq!(store.forget_write_ids(102, 10).unwrap(), 1);
    for i in 0..3u8 {
        assert_eq!(store.written(&[b'w', i]).unwrap(), None, "id {i} forgotten");
    }
    assert_eq!(
        store.written(&[b'w', 4]).unwrap(),
        Some(crate::WrittenId {
            revision: revisions[4],
            digest: Some([4; 32]),
        }),
        "an id whose time has not come is kept with the digest it was committed with"
    );
    // An id committed again later is kept for its new time, not its old one.
    let again = store
        .commit(Commit {
            write_id: Some(vec![b'w', 3]),
            write_id_until_s: 500,
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.forget_write_ids(200, 10).unwrap(), 1);
    assert_eq!(
        store.written(&[b'w', 3]).unwrap().map(|w| w.revision),
        Some(again)
    );
    assert_eq!(store.written(&[b'w', 4]).unwrap(), None);
    // Data is untouched by a trim or a forget.
    assert!(store.get(NS_A, &[b'k', 0]).unwrap().is_some());
    assert_eq!(store.trim_log(2).unwrap(), 1);
    assert_eq!(
        store.written(&[b'w', 3]).unwrap().map(|w| w.revision),
        Some(again)
    );
}

pub fn snapshot_is_consistent(store: &dyn Store) {
    store.create_namespace(&ns(NS_A, "a")).unwrap();
    store.create_namespace(&ns(NS_B, "b")).unwrap();
    put(store, NS_A, "a1", "v");
    put_record(store, NS_A, b"gone", Record::tombstone(None));
    put(store, NS_B, "b1", "v");
    let mut namespaces = Vec::new();
    let mut keys = Vec::new();
    let revision = store
        .snapshot(&[NS_A.to_string()], &mut |item| {
            match item {
                SnapshotItem::Namespace(ns) => namespaces.push(ns.id),
                SnapshotItem::Key(write) => {
                    keys.push((write.namespace, write.key, write.record.tombstone))
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(revision, store.revision());
    assert_eq!(namespaces, [NS_A, NS_B]);
    assert_eq!(
        keys,
        [
            (NS_A.to_string(), Bytes::from_static(b"a1"), false),
            (NS_A.to_string(), Bytes::from_static(b"gone"), true),
        ]
    );
}

/// Pages through a namespace with cursors and returns the keys in the order seen;
/// used by the engines' property tests of paging.
pub fn page_through(
    store: &dyn Store,
    namespace: &str,
    page_size: usize,
    now_s: u64,
) -> Vec<Bytes> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = ListQuery {
            prefix: Vec::new(),
            start_after: cursor.as_deref().map(|c| cursor::decode(c).unwrap()),
            limit: page_size,
        };
        let page = store.list(namespace, &query, now_s).unwrap();
        assert!(page.entries.len() <= page_size);
        seen.extend(page.entries.iter().map(|(k, _)| k.clone()));
        if !page.more {
            return seen;
        }
        cursor = Some(cursor::encode(&page.entries.last().unwrap().0));
    }
}
