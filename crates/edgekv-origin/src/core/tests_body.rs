// The origin core's tests, over whichever engine `store()` of the including
// module opens (see tests.rs).

use std::time::Duration;

use bytes::Bytes;
use edgekv_kv::{ManualClock, Mode};

use super::super::*;

const NOW_MS: u64 = 1_700_000_000_000;

fn core() -> (OriginCore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let core = OriginCore::new(store(), clock.clone(), 3600).unwrap();
    (core, clock)
}

fn put(
    ns: &str,
    key: &str,
    value: &str,
    hlc: u64,
    write_id: Option<&str>,
    replay: bool,
) -> WriteRequest {
    WriteRequest {
        namespace: ns.into(),
        mutations: vec![Mutation {
            key: Bytes::copy_from_slice(key.as_bytes()),
            put: Some((Bytes::copy_from_slice(value.as_bytes()), None, None)),
        }],
        write_id: write_id.map(str::to_string),
        hlc,
        replay,
    }
}

fn stamp(ms: u64) -> u64 {
    ms << 16
}

#[test]
fn a_retried_write_is_applied_once() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let first = core
        .write(put(
            &ns.id,
            "k",
            "v1",
            stamp(NOW_MS),
            Some("edge-a:1"),
            false,
        ))
        .unwrap();
    assert!(!first.duplicate);
    let again = core
        .write(put(
            &ns.id,
            "k",
            "v1",
            stamp(NOW_MS),
            Some("edge-a:1"),
            false,
        ))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.revision, first.revision);
    assert_eq!(
        core.revision(),
        first.revision,
        "the retry committed nothing"
    );
    // A retry after a newer write does not undo it.
    core.write(put(
        &ns.id,
        "k",
        "v2",
        stamp(NOW_MS),
        Some("edge-a:2"),
        false,
    ))
    .unwrap();
    let late = core
        .write(put(
            &ns.id,
            "k",
            "v1",
            stamp(NOW_MS),
            Some("edge-a:1"),
            false,
        ))
        .unwrap();
    assert!(late.duplicate);
    assert_eq!(late.records[0].value, "v2");
}

#[test]
fn synchronous_writes_win_and_replays_compete() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let newer = core
        .write(put(&ns.id, "k", "new", stamp(NOW_MS), None, false))
        .unwrap();
    // A synchronous write with an older stamp (a slow clock) still wins.
    let slow = core
        .write(put(&ns.id, "k", "slow", stamp(NOW_MS - 1000), None, false))
        .unwrap();
    assert!(slow.records[0].hlc > newer.records[0].hlc);
    assert_eq!(slow.records[0].value, "slow");
    // A replay with an older stamp is superseded and changes nothing.
    let replay = core
        .write(put(
            &ns.id,
            "k",
            "replayed",
            stamp(NOW_MS - 2000),
            None,
            true,
        ))
        .unwrap();
    assert!(replay.superseded);
    assert_eq!(replay.records[0].value, "slow");
    // A replay newer than the key applies.
    let fresh = core
        .write(put(
            &ns.id,
            "k",
            "fresh",
            slow.records[0].hlc + 1,
            None,
            true,
        ))
        .unwrap();
    assert!(!fresh.superseded);
    assert_eq!(fresh.records[0].value, "fresh");
}

#[test]
fn stamps_from_the_future_are_refused() {
    let (core, clock) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let ahead = stamp(NOW_MS + 6000);
    let err = core
        .write(put(&ns.id, "k", "v", ahead, None, false))
        .unwrap_err();
    assert!(matches!(err, Error::ClockSkew { .. }));
    // The calling node's clock is wrong, not its client's request: a node fault.
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    clock.advance(Duration::from_secs(2));
    assert!(
        core.write(put(&ns.id, "k", "v", ahead, None, false))
            .is_ok()
    );
}

#[test]
fn namespaces_and_their_rules() {
    let (core, _) = core();
    let (a, r1) = core.create_namespace("acct", "alpha", Mode::Full).unwrap();
    assert!(matches!(
        core.create_namespace("acct", "alpha", Mode::Cache),
        Err(Error::TitleTaken(_))
    ));
    core.create_namespace("other", "alpha", Mode::Cache)
        .unwrap();
    let (renamed, r2) = core.rename_namespace("acct", &a.id, "beta").unwrap();
    assert!(r2 > r1);
    assert_eq!((renamed.title.as_str(), renamed.mode), ("beta", Mode::Full));
    assert!(matches!(
        core.rename_namespace("other", &a.id, "x"),
        Err(Error::NamespaceNotFound(_))
    ));
    assert!(matches!(
        core.write(put(
            "ffffffffffffffffffffffffffffffff",
            "k",
            "v",
            stamp(NOW_MS),
            None,
            false
        )),
        Err(Error::NamespaceNotFound(_))
    ));
    core.delete_namespace("acct", &a.id).unwrap();
    assert!(matches!(
        core.get(&a.id, b"k"),
        Err(Error::NamespaceNotFound(_))
    ));
    let entries = core.log(1, 100).unwrap();
    assert_eq!(entries.len(), 4, "create, create, rename, delete");
}

#[test]
fn the_log_is_trimmed_to_its_window() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    for i in 0..10 {
        core.write(put(
            &ns.id,
            &format!("k{i}"),
            "v",
            stamp(NOW_MS),
            None,
            false,
        ))
        .unwrap();
    }
    core.maintain(3).unwrap();
    assert!(matches!(
        core.log(1, 100),
        Err(Error::Trimmed { first: 9, .. })
    ));
    assert_eq!(core.log(9, 100).unwrap().len(), 3);
    let (record, read_revision) = core.get(&ns.id, b"k0").unwrap();
    assert!(record.is_some());
    assert_eq!(read_revision, 11);
}

#[test]
fn invalid_writes_are_client_faults() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let mut request = put(&ns.id, "k", "v", stamp(NOW_MS), None, false);
    request.mutations[0].key = Bytes::from(vec![b'k'; 600]);
    assert!(matches!(core.write(request), Err(Error::Kv(_))));
    let status = tonic::Status::from(core.get(&ns.id, b"").unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[test]
fn a_key_given_twice_in_one_write_counts_once_with_its_last_change() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let mut request = put(&ns.id, "k", "first", stamp(NOW_MS), None, false);
    request.mutations.push(Mutation {
        key: Bytes::from_static(b"k"),
        put: Some((Bytes::from_static(b"last"), None, None)),
    });
    let outcome = core.write(request).unwrap();
    assert_eq!(outcome.records.len(), 1);
    assert_eq!(outcome.records[0].value, "last");
    let entries = core.log(outcome.revision, 10).unwrap();
    assert_eq!(
        entries[0].writes.len(),
        1,
        "the log carries one change of the key"
    );
    assert_eq!(entries[0].writes[0].record.value, "last");
}

#[test]
fn a_watch_from_beyond_the_head_must_resync() {
    let (core, _) = core();
    core.create_namespace("a", "t", Mode::Cache).unwrap();
    assert!(
        core.log(2, 10).unwrap().is_empty(),
        "the next revision is not ahead"
    );
    let err = core.log(50, 10).unwrap_err();
    assert!(matches!(err, Error::Ahead { asked: 50, head: 1 }));
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert_eq!(
        status.metadata().get(crate::REASON_KEY).unwrap(),
        crate::RESYNC
    );
}

/// A store gets its data-set id once: reopening it keeps the id, another store
/// has another, and a corrupt id is refused rather than replaced.
#[test]
fn a_store_keeps_its_data_set_id() {
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let store: Arc<dyn Store> = store();
    let first = OriginCore::new(store.clone(), clock.clone(), 3600).unwrap();
    let id = first.data_set().to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let again = OriginCore::new(store.clone(), clock.clone(), 3600).unwrap();
    assert_eq!(again.data_set(), id, "the same store, the same data set");
    let other = OriginCore::new(self::store(), clock.clone(), 3600).unwrap();
    assert_ne!(other.data_set(), id, "a new store, a new data set");
    store.set_meta_synced(DATA_SET_META, b"not an id").unwrap();
    assert!(OriginCore::new(store, clock, 3600).is_err());
}

/// A write id that arrives again with other content is a node reusing its ids
/// (before incarnations, an edge restarted over a new data dir did): refused as
/// the node's fault, nothing applied — never answered as a duplicate's success.
/// The same content again, as a replay with a later stamp, is still a duplicate.
#[test]
fn a_reused_write_id_with_other_content_is_refused() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let first = core
        .write(put(
            &ns.id,
            "k",
            "v1",
            stamp(NOW_MS),
            Some("edge-a:1"),
            false,
        ))
        .unwrap();
    let replayed = core
        .write(put(
            &ns.id,
            "k",
            "v1",
            stamp(NOW_MS + 10),
            Some("edge-a:1"),
            true,
        ))
        .unwrap();
    assert!(replayed.duplicate, "the same write, replayed");
    let reused = core
        .write(put(
            &ns.id,
            "k",
            "other",
            stamp(NOW_MS + 20),
            Some("edge-a:1"),
            false,
        ))
        .unwrap_err();
    assert!(
        matches!(reused, Error::WriteIdReused { revision, .. } if revision == first.revision),
        "{reused}"
    );
    let status = tonic::Status::from(reused);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.metadata().get(crate::REASON_KEY).unwrap(),
        crate::WRITE_ID_REUSED
    );
    assert_eq!(core.get(&ns.id, b"k").unwrap().0.unwrap().value, "v1");
    assert_eq!(core.revision(), first.revision, "nothing applied");
}

/// A replay stamped longer ago than the tombstones are kept is refused: its key's
/// tombstone may be gone, and applying it would resurrect a delete.
#[test]
fn a_replay_older_than_the_tombstone_horizon_is_refused() {
    let (core, clock) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let stamped = stamp(NOW_MS);
    clock.advance(Duration::from_secs(3600 + 1));
    let late = core
        .write(put(&ns.id, "k", "v", stamped, Some("edge-a:x:1"), true))
        .unwrap_err();
    assert!(
        matches!(
            late,
            Error::ReplayTooOld {
                horizon_s: 3600,
                ..
            }
        ),
        "{late}"
    );
    assert_eq!(
        tonic::Status::from(late).code(),
        tonic::Code::FailedPrecondition,
        "a client-class fault: the edge buries it as a dead letter"
    );
    assert!(core.get(&ns.id, b"k").unwrap().0.is_none());
    // Within the horizon a replay competes as before.
    let fresh = stamp(NOW_MS + 3_600_000);
    assert!(
        core.write(put(&ns.id, "k", "v", fresh, Some("edge-a:x:2"), true))
            .is_ok()
    );
}

/// A write id is known for as long as a replay of it is accepted, however far
/// the log was trimmed meanwhile: a replay is a duplicate, and the id with other
/// content is refused, until the replay horizon. Before ids had a time, they went
/// with their commit's log entry, and both were decided by the stamp alone.
#[test]
fn a_write_id_is_known_while_replays_of_it_are_accepted() {
    let (core, clock) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    // Stamped by a clock as far ahead of the origin's as is let through.
    let stamped = stamp(NOW_MS + edgekv_kv::ordering::MAX_CLOCK_SKEW_MS);
    let first = core
        .write(put(&ns.id, "k", "v1", stamped, Some("edge-a:x:1"), false))
        .unwrap();
    for i in 0..5 {
        let other = stamp(NOW_MS + 1 + i);
        core.write(put(&ns.id, &format!("o{i}"), "v", other, None, false))
            .unwrap();
    }
    // The last second a replay of it is let through: the log keeps one commit,
    // and maintenance ran.
    clock.advance(Duration::from_secs(3600 + 5));
    core.maintain(1).unwrap();
    assert!(matches!(core.log(1, 10), Err(Error::Trimmed { .. })));
    let replayed = core
        .write(put(&ns.id, "k", "v1", stamped, Some("edge-a:x:1"), true))
        .unwrap();
    assert!(replayed.duplicate, "the replay is known for the write it is");
    assert_eq!(replayed.revision, first.revision);
    let reused = core
        .write(put(&ns.id, "k", "other", stamped, Some("edge-a:x:1"), true))
        .unwrap_err();
    assert!(matches!(reused, Error::WriteIdReused { .. }), "{reused}");
    // A second later the replay is refused, and then the id is forgotten.
    assert!(core.store.written(b"edge-a:x:1").unwrap().is_some());
    clock.advance(Duration::from_secs(1));
    let late = core
        .write(put(&ns.id, "k", "v1", stamped, Some("edge-a:x:1"), true))
        .unwrap_err();
    assert!(matches!(late, Error::ReplayTooOld { .. }), "{late}");
    core.maintain(1).unwrap();
    assert_eq!(core.store.written(b"edge-a:x:1").unwrap(), None);
}

/// Writes from many threads at once are committed in groups: every write gets its
/// own revision, with no gap and no repeat; a write and its retry racing each other
/// commit once; each key ends with the value of its last commit.
#[test]
fn concurrent_writes_commit_in_groups_with_gap_free_revisions() {
    let (core, _) = core();
    let core = Arc::new(core);
    let (ns, created) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let core = core.clone();
            let ns = ns.id.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..40u64 {
                    let id = format!("edge-{t}:1:{i}");
                    let key = format!("k{}", i % 5);
                    let hlc = stamp(NOW_MS) + t * 1000 + i;
                    let value = format!("{t}-{i}");
                    let request = put(&ns, &key, &value, hlc, Some(&id), false);
                    let first = core.write(request.clone()).unwrap();
                    // The retry of a write whose answer was lost.
                    let retry = core.write(request).unwrap();
                    assert!(retry.duplicate && !first.duplicate);
                    assert_eq!(retry.revision, first.revision);
                    got.push((first.revision, key, value));
                }
                got
            })
        })
        .collect();
    let mut writes: Vec<(u64, String, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    writes.sort_unstable();
    let revisions: Vec<u64> = writes.iter().map(|w| w.0).collect();
    let expected: Vec<u64> = (created + 1..=created + 16 * 40).collect();
    assert_eq!(revisions, expected, "one revision per write, gap-free");
    assert_eq!(core.revision(), created + 16 * 40);
    let last_k0 = writes.iter().rev().find(|w| w.1 == "k0").unwrap();
    let (held, _) = core.get(&ns.id, b"k0").unwrap();
    let held = held.unwrap();
    assert_eq!(held.value, last_k0.2.as_bytes());
    assert_eq!(held.revision, last_k0.0);
}

/// Writes awaited on a runtime of one thread, three times as many at once as
/// the writer's queue holds (the rest wait for a place, on the runtime, never
/// blocking its thread): every write commits once, at its own revision,
/// gap-free.
#[test]
fn awaited_writes_past_the_queue_all_commit_once_gap_free() {
    let (core, _) = core();
    let core = Arc::new(core);
    let (ns, created) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let writes = 3 * super::super::QUEUE_MAX_WRITES as u64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut revisions = runtime.block_on(async {
        let tasks: Vec<_> = (0..writes)
            .map(|i| {
                let (core, ns) = (core.clone(), ns.id.clone());
                tokio::spawn(async move {
                    let id = format!("edge-a:1:{i}");
                    let request = put(&ns, &format!("k{i}"), "v", stamp(NOW_MS) + i, Some(&id), false);
                    core.write_async(request).await.unwrap().revision
                })
            })
            .collect();
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.push(task.await.unwrap());
        }
        revisions
    });
    revisions.sort_unstable();
    let expected: Vec<u64> = (created + 1..=created + writes).collect();
    assert_eq!(revisions, expected, "one revision per write, gap-free");
}

/// Within one group, a key written twice is ordered as two commits, a write id
/// seen twice is a duplicate, and a reused id is refused.
#[test]
fn a_group_decides_each_write_against_the_ones_before_it() {
    use edgekv_store::ReadView;
    let ns = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let pending = |value: &str, hlc: u64, id: &str| {
        let request = put(ns, "k", value, hlc, Some(id), false);
        decide::Pending {
            digest: Some(digest(&request)),
            write_id: Some(id.as_bytes().to_vec()),
            request,
        }
    };
    let group = [
        pending("new", stamp(NOW_MS) + 2, "e:1:1"),
        pending("old", stamp(NOW_MS) + 1, "e:1:2"),
        pending("new", stamp(NOW_MS) + 2, "e:1:1"),
        pending("other", stamp(NOW_MS) + 3, "e:1:1"),
        put_pending_elsewhere(),
    ];
    let mut view = ReadView::default();
    view.namespaces.insert(
        ns.into(),
        Namespace {
            id: ns.into(),
            title: "t".into(),
            account: "a".into(),
            mode: Mode::Cache,
        },
    );
    let horizon = decide::Horizon {
        now_ms: NOW_MS,
        tombstone_ttl_s: 3600,
    };
    let (commits, verdicts) = decide::group(&group, view, horizon);
    assert_eq!(
        commits.len(),
        2,
        "the duplicate and the refusals commit nothing"
    );
    let revisions = [10, 11];
    let outcomes: Vec<String> = verdicts
        .iter()
        .map(|v| match v {
            Verdict::Refused(err) => format!("refused: {err}"),
            Verdict::Done {
                at,
                duplicate,
                records,
                ..
            } => format!(
                "rev {} dup {duplicate} holds {:?}@{}",
                at.resolve(&revisions),
                records[0].0.value,
                records[0].1.resolve(&revisions)
            ),
        })
        .collect();
    assert_eq!(outcomes[0], "rev 10 dup false holds b\"new\"@10");
    // A normal write older than the held stamp still applies, stamped after it.
    assert_eq!(outcomes[1], "rev 11 dup false holds b\"old\"@11");
    assert_eq!(outcomes[2], "rev 10 dup true holds b\"old\"@11");
    assert!(
        outcomes[3].starts_with("refused: write id e:1:1"),
        "{}",
        outcomes[3]
    );
    assert!(
        outcomes[4].starts_with("refused: namespace"),
        "{}",
        outcomes[4]
    );
    assert!(commits[1].writes[0].record.hlc > commits[0].writes[0].record.hlc);
}

fn put_pending_elsewhere() -> decide::Pending {
    decide::Pending {
        request: put("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "k", "v", 1, None, false),
        write_id: None,
        digest: None,
    }
}

/// A malformed namespace id is refused before the write joins a group: it fails
/// alone (in a database, a NUL in a text parameter would fail the group's whole
/// transaction), and the writes around it commit.
#[test]
fn a_malformed_namespace_id_fails_alone() {
    let (core, _) = core();
    let (ns, _) = core.create_namespace("a", "t", Mode::Cache).unwrap();
    let bad = put("bad\0namespace", "k", "v", stamp(NOW_MS), None, false);
    assert!(matches!(
        core.write(bad),
        Err(Error::Kv(edgekv_kv::Error::InvalidNamespaceId(_)))
    ));
    let good = core
        .write(put(&ns.id, "k", "v", stamp(NOW_MS), None, false))
        .unwrap();
    assert!(!good.duplicate);
}
