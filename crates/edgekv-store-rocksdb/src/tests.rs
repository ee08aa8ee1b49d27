#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use edgekv_kv::Record;
use edgekv_store::{LogRead, Store, Write};
use proptest::prelude::*;

use super::*;

/// A store in a temporary directory, and the directory.
fn temp_store() -> (RocksStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    // Syncing each write is covered by the durability test; the suite runs faster
    // without it and checks the same logic.
    let options = RocksOptions {
        sync_writes: false,
        change_log: true,
        ..RocksOptions::default()
    };
    (
        RocksStore::open(dir.path().join("db"), &options).unwrap(),
        dir,
    )
}

edgekv_store::store_suite!(temp_store());

const NS: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = RocksOptions {
        change_log: true,
        ..RocksOptions::default()
    };
    {
        let store = RocksStore::open(&path, &options).unwrap();
        store
            .create_namespace(&Namespace {
                id: NS.into(),
                title: "t".into(),
                account: "a".into(),
                mode: edgekv_kv::Mode::Cache,
            })
            .unwrap();
        for i in 0..3 {
            store
                .write(vec![Write {
                    namespace: NS.into(),
                    key: Bytes::from(format!("k{i}")),
                    record: Record::value(Bytes::from(format!("v{i}")), None, Some(10_000)),
                }])
                .unwrap();
        }
        store.set_meta("token", b"t").unwrap();
    }
    let store = RocksStore::open(&path, &options).unwrap();
    assert_eq!(store.revision(), 4, "the namespace and three writes");
    assert!(matches!(store.log(1, 10).unwrap(), LogRead::Entries(e) if e.len() == 4));
    assert_eq!(store.get(NS, b"k2").unwrap().unwrap().value, "v2");
    assert_eq!(store.namespace(NS).unwrap().unwrap().title, "t");
    assert_eq!(store.meta("token").unwrap().unwrap(), b"t");
    // The expiry index survived too.
    assert_eq!(store.purge_expired(10_000, 100).unwrap(), 3);
    // The next revision follows on.
    let next = store
        .write(vec![Write {
            namespace: NS.into(),
            key: Bytes::from_static(b"k"),
            record: Record::value(Bytes::new(), None, None),
        }])
        .unwrap();
    assert_eq!(next, 5);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let (store, _dir) = temp_store();
    let err = RocksStore::open(store.path(), &RocksOptions::default()).unwrap_err();
    assert!(err.to_string().contains("lock"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Paging with cursors returns every live key exactly once, in order, whatever
    /// the key set, the page size and the dead keys among them.
    #[test]
    fn paging_returns_every_live_key_once(
        keys in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..20), any::<bool>(), 0..200),
        page_size in 1usize..50,
    ) {
        let (store, _dir) = temp_store();
        let mut live = BTreeSet::new();
        for (key, alive) in &keys {
            let record = if *alive {
                live.insert(key.clone());
                Record::value(Bytes::from_static(b"v"), None, None)
            } else {
                Record::tombstone(None)
            };
            store.write(vec![Write { namespace: NS.into(), key: key.clone().into(), record }]).unwrap();
        }
        let seen = edgekv_store::suite::page_through(&store, NS, page_size, 0);
        let seen: Vec<Vec<u8>> = seen.into_iter().map(|k| k.to_vec()).collect();
        prop_assert_eq!(seen, live.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn queues_survive_reopen_and_never_reuse_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // Cache writes unsynced, as on an edge: queue entries are fsynced regardless.
    let options = RocksOptions {
        sync_writes: false,
        ..RocksOptions::default()
    };
    let (last, kept) = {
        let store = RocksStore::open(&path, &options).unwrap();
        let a = store.queue_push("outbox", b"a").unwrap();
        let b = store.queue_push("outbox", b"b").unwrap();
        store
            .queue_remove("outbox", a, Some(("dead", b"a")))
            .unwrap();
        (b, b)
    };
    let store = RocksStore::open(&path, &options).unwrap();
    assert_eq!(
        store.queue_read("outbox", 10).unwrap(),
        vec![(kept, b"b".to_vec())]
    );
    assert_eq!(store.queue_read("dead", 10).unwrap()[0].1, b"a");
    store.queue_remove("outbox", kept, None).unwrap();
    let next = store.queue_push("outbox", b"c").unwrap();
    assert!(next > last, "a sequence is never reused across restarts");
}

/// A batch of queue entries (an outbox's group commit) is on disk as a whole,
/// and the sequences after it continue from its last, across a restart.
#[test]
fn queue_batches_survive_reopen_and_sequences_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = RocksOptions {
        sync_writes: false,
        ..RocksOptions::default()
    };
    let batch: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let sequences = {
        let store = RocksStore::open(&path, &options).unwrap();
        store.queue_push_many("outbox", &batch).unwrap()
    };
    let store = RocksStore::open(&path, &options).unwrap();
    let read = store.queue_scan("outbox", 0, 1000).unwrap();
    assert_eq!(
        read,
        sequences
            .iter()
            .copied()
            .zip(batch.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store.queue_get("outbox", sequences[42]).unwrap(),
        Some(batch[42].clone())
    );
    let next = store.queue_push("outbox", b"after").unwrap();
    assert_eq!(next, sequences[99] + 1);
}

/// Entries (of any kind, range tombstones included) in the data family's memtable.
fn data_memtable_entries(store: &RocksStore) -> u64 {
    store
        .db
        .property_int_value_cf(store.cf(CF_DATA), "rocksdb.num-entries-active-mem-table")
        .unwrap()
        .unwrap()
}

fn namespace(id: &str) -> Namespace {
    Namespace {
        id: id.into(),
        title: id.into(),
        account: "a".into(),
        mode: edgekv_kv::Mode::Cache,
    }
}

fn write(namespace: &str, key: &str) -> Write {
    Write {
        namespace: namespace.into(),
        key: Bytes::from(key.to_string()),
        record: Record::value(Bytes::from_static(b"v"), None, None),
    }
}

/// A resync's batch for one cache namespace: deleted and put back, with `writes`.
fn resync(store: &RocksStore, id: &str, writes: Vec<Write>) {
    store
        .commit(Commit {
            writes,
            namespaces: vec![
                NamespaceOp::Delete(id.into()),
                NamespaceOp::Put(namespace(id)),
            ],
            ..Commit::default()
        })
        .unwrap();
}

#[test]
fn no_range_tombstone_over_a_namespace_without_keys() {
    let (store, _dir) = temp_store();
    const OTHER: &str = "ffffffffffffffffffffffffffffffff";
    store.create_namespace(&namespace(NS)).unwrap();
    store.create_namespace(&namespace(OTHER)).unwrap();
    store.write(vec![write(OTHER, "kept")]).unwrap();
    let before = data_memtable_entries(&store);
    // A resync's delete-and-put-back of an empty namespace, then its deletion.
    resync(&store, NS, vec![]);
    assert!(store.delete_namespace(NS).unwrap());
    assert_eq!(
        data_memtable_entries(&store),
        before,
        "a tombstone was written"
    );
    assert!(store.get(OTHER, b"kept").unwrap().is_some());

    // With a key, the deletion covers it.
    store.create_namespace(&namespace(NS)).unwrap();
    store.write(vec![write(NS, "k")]).unwrap();
    let before = data_memtable_entries(&store);
    assert!(store.delete_namespace(NS).unwrap());
    assert_eq!(data_memtable_entries(&store), before + 1);
    assert!(store.get(NS, b"k").unwrap().is_none());
    assert!(store.get(OTHER, b"kept").unwrap().is_some());
}

#[test]
fn a_deletion_covers_keys_written_in_its_own_batch() {
    let (store, _dir) = temp_store();
    store.create_namespace(&namespace(NS)).unwrap();
    resync(&store, NS, vec![write(NS, "k")]);
    assert!(store.get(NS, b"k").unwrap().is_none());
    assert!(store.namespace(NS).unwrap().is_some());
}

#[test]
fn a_resync_empties_a_namespace_that_holds_keys() {
    let (store, _dir) = temp_store();
    store.create_namespace(&namespace(NS)).unwrap();
    store.write(vec![write(NS, "a"), write(NS, "b")]).unwrap();
    resync(&store, NS, vec![]);
    assert!(store.get(NS, b"a").unwrap().is_none());
    assert!(store.get(NS, b"b").unwrap().is_none());
    assert!(store.namespace(NS).unwrap().is_some());
}

#[test]
fn keys_around_the_stack_buffer_of_a_point_read() {
    let (store, _dir) = temp_store();
    store.create_namespace(&namespace(NS)).unwrap();
    let lengths = [1, 127, 128, 129, 512];
    let keys: Vec<String> = lengths.iter().map(|&n| "k".repeat(n)).collect();
    for key in &keys {
        store.write(vec![write(NS, key)]).unwrap();
    }
    for key in &keys {
        assert!(
            store.get(NS, key.as_bytes()).unwrap().is_some(),
            "{}",
            key.len()
        );
        let longer = format!("{key}x");
        assert!(
            store.get(NS, longer.as_bytes()).unwrap().is_none(),
            "{}",
            key.len()
        );
    }
}

#[test]
fn the_next_namespace_up_is_not_part_of_a_deletion() {
    let (store, _dir) = temp_store();
    const LOW: &str = "00000000000000000000000000000000";
    // The first id past LOW's range: keys::namespace_end(LOW).
    const NEXT: &str = "00000000000000000000000000000001";
    store.create_namespace(&namespace(LOW)).unwrap();
    store.create_namespace(&namespace(NEXT)).unwrap();
    store.write(vec![write(NEXT, "kept")]).unwrap();
    let before = data_memtable_entries(&store);
    assert!(store.delete_namespace(LOW).unwrap());
    assert_eq!(
        data_memtable_entries(&store),
        before,
        "a tombstone was written"
    );
    store.create_namespace(&namespace(LOW)).unwrap();
    store.write(vec![write(LOW, "gone")]).unwrap();
    assert!(store.delete_namespace(LOW).unwrap());
    assert!(store.get(LOW, b"gone").unwrap().is_none());
    assert!(store.get(NEXT, b"kept").unwrap().is_some());
}

#[test]
fn a_long_run_of_deleted_entries_gets_a_tombstone_rather_than_a_long_look() {
    let (store, _dir) = temp_store();
    // Expired and purged: each key leaves a put and a point delete to skip.
    let purged = |count: usize| {
        store.create_namespace(&namespace(NS)).unwrap();
        let writes = (0..count)
            .map(|i| Write {
                namespace: NS.into(),
                key: Bytes::from(format!("k{i:05}")),
                record: Record::value(Bytes::from_static(b"v"), None, Some(100)),
            })
            .collect();
        store.write(writes).unwrap();
        assert_eq!(store.purge_expired(200, usize::MAX).unwrap(), count);
        let before = data_memtable_entries(&store);
        assert!(store.delete_namespace(NS).unwrap());
        data_memtable_entries(&store) - before
    };
    assert_eq!(purged(10), 0, "a few deleted entries are looked past");
    assert_eq!(
        purged(HOLDS_KEYS_SKIP_LIMIT as usize),
        1,
        "a long run is not"
    );
}

/// A store first opened by a release that kept write ids only while their
/// commit was in the log: those ids go with their log entry, as they did; the
/// ids committed since stay until their time.
#[test]
fn ids_kept_before_ids_had_a_time_go_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = RocksOptions {
        sync_writes: false,
        change_log: true,
        ..RocksOptions::default()
    };
    let commit = |store: &RocksStore, id: &[u8]| {
        store
            .commit(Commit {
                write_id: Some(id.to_vec()),
                write_id_until_s: 1_000,
                ..Commit::default()
            })
            .unwrap()
    };
    {
        // What the earlier release left: the id, and neither its time entry nor
        // the mark of the first open by a later release.
        let store = RocksStore::open(&path, &options).unwrap();
        commit(&store, b"old");
        store
            .db
            .delete_cf(store.cf(CF_WRITES), write_time_key(1_000, b"old"))
            .unwrap();
        store
            .db
            .delete_cf(store.cf(CF_META), TIMED_IDS_FROM_KEY)
            .unwrap();
    }
    let store = RocksStore::open(&path, &options).unwrap();
    commit(&store, b"new");
    assert!(store.written(b"old").unwrap().is_some());
    assert_eq!(store.trim_log(0).unwrap(), 2);
    assert_eq!(store.written(b"old").unwrap(), None);
    assert!(store.written(b"new").unwrap().is_some());
    assert_eq!(store.forget_write_ids(1_000, 10).unwrap(), 1);
    assert_eq!(store.written(b"new").unwrap(), None);
}

/// An earlier release opens the store by naming its seven column families, and
/// fails on any other: a store opened by this one must hold no other (a rolled
/// back binary must still open its data). Nor can an id be mistaken for one of
/// the keys that index ids by time.
#[test]
fn an_earlier_release_finds_only_the_column_families_it_knows() {
    let (store, dir) = temp_store();
    store
        .commit(Commit {
            write_id: Some(b"w".to_vec()),
            write_id_until_s: 1_000,
            ..Commit::default()
        })
        .unwrap();
    drop(store);
    let mut found = DB::list_cf(&Options::default(), dir.path().join("db")).unwrap();
    found.sort();
    assert_eq!(
        found,
        [
            "data",
            "default",
            "expiry",
            "log",
            "meta",
            "namespaces",
            "queues",
            "writes"
        ]
    );
    let options = RocksOptions {
        change_log: true,
        ..RocksOptions::default()
    };
    let store = RocksStore::open(dir.path().join("db"), &options).unwrap();
    let time_key = write_time_key(1_000, b"w");
    assert_eq!(store.written(&time_key).unwrap(), None);
    assert!(
        store
            .commit(Commit {
                write_id: Some(time_key),
                ..Commit::default()
            })
            .is_err()
    );
}
