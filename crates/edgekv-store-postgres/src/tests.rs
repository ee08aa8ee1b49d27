#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgekv_kv::{Mode, Namespace, Record};
use edgekv_store::{Commit, LogRead, ReadSet, Store, Write};

use crate::testing::TestPostgres;
use crate::{PgOptions, PgStore};

/// A store over a fresh database of the process's shared test server.
fn fresh() -> (PgStore, Arc<TestPostgres>) {
    let server = TestPostgres::shared();
    let store = PgStore::open(&server.database(), &PgOptions::default()).unwrap();
    (store, server)
}

edgekv_store::store_suite!(fresh());

const NS: &str = "0123456789abcdef0123456789abcdef";

fn namespace() -> Namespace {
    Namespace {
        id: NS.into(),
        title: "t".into(),
        account: "a".into(),
        mode: Mode::Cache,
    }
}

fn write(key: &str, value: &str) -> Write {
    Write {
        namespace: NS.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: Record::value(Bytes::copy_from_slice(value.as_bytes()), None, None),
    }
}

/// Two stores over one database — two origin processes — committing at once from
/// several threads each: every commit gets its own revision, with no gap; each
/// store hears of the other's commits.
#[test]
fn two_processes_share_one_gap_free_order() {
    let server = TestPostgres::shared();
    let url = server.database();
    let one = Arc::new(PgStore::open(&url, &PgOptions::default()).unwrap());
    let two = Arc::new(PgStore::open(&url, &PgOptions::default()).unwrap());
    one.create_namespace(&namespace()).unwrap();
    let heard = Arc::new(AtomicU64::new(0));
    let told = heard.clone();
    two.on_foreign_commit(Box::new(move |head| {
        told.fetch_max(head, Ordering::SeqCst);
    }));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = if t % 2 == 0 { one.clone() } else { two.clone() };
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        // A read-decide-commit: the value counts the key's writes.
                        let key = Bytes::from(format!("k{}", i % 3));
                        let reads = ReadSet {
                            keys: vec![(NS.into(), key.clone())],
                            ..ReadSet::default()
                        };
                        store
                            .transact(&reads, &mut |view| {
                                let held = view.records.get(&(NS.to_string(), key.clone()));
                                let count: u64 = held
                                    .map(|r| {
                                        std::str::from_utf8(&r.value).unwrap().parse().unwrap()
                                    })
                                    .unwrap_or(0);
                                Ok(vec![Commit {
                                    writes: vec![write(
                                        std::str::from_utf8(&key).unwrap(),
                                        &(count + 1).to_string(),
                                    )],
                                    write_id: Some(format!("t{t}:{i}").into_bytes()),
                                    ..Commit::default()
                                }])
                            })
                            .unwrap()[0]
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut revisions: Vec<u64> = per_thread.into_iter().flatten().collect();
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (2..=201).collect::<Vec<u64>>(),
        "gap-free, no repeat"
    );
    // No lost update: the three counters add up to every write.
    let total: u64 = (0..3)
        .map(|k| {
            let held = one.get(NS, format!("k{k}").as_bytes()).unwrap().unwrap();
            std::str::from_utf8(&held.value)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 200);
    // A commit of store one that no commit of store two follows: two hears of
    // it. (One that two's own commit followed, two may learn in that commit's
    // transaction instead, and need not be told: its streams, woken by its own
    // commit, read both.)
    let last = one.write(vec![write("k0", "last")]).unwrap();
    assert_eq!(last, 202);
    let deadline = Instant::now() + Duration::from_secs(5);
    while heard.load(Ordering::SeqCst) < last || two.revision() < last {
        assert!(
            Instant::now() < deadline,
            "store two never heard of commit {last}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(one.refresh_revision().unwrap(), last);
    let edgekv_store::LogRead::Entries(entries) = two.log(1, 1000).unwrap() else {
        panic!("trimmed");
    };
    let logged: Vec<u64> = entries.iter().map(|e| e.revision).collect();
    assert_eq!(logged, (1..=last).collect::<Vec<u64>>());
}

/// A foreign commit is heard through NOTIFY, well before the slow poll.
#[test]
fn a_commit_of_another_process_is_heard_at_once() {
    let server = TestPostgres::shared();
    let url = server.database();
    let slow_poll = PgOptions {
        poll_interval: Duration::from_secs(60),
        ..PgOptions::default()
    };
    let one = PgStore::open(&url, &slow_poll).unwrap();
    let two = PgStore::open(&url, &slow_poll).unwrap();
    let (heard, hear) = std::sync::mpsc::channel();
    two.on_foreign_commit(Box::new(move |head| {
        let _ = heard.send(head);
    }));
    // The follower's LISTEN may land just after open: wait for it to be active.
    std::thread::sleep(Duration::from_millis(300));
    let revision = one
        .create_namespace(&namespace())
        .map(|()| one.revision())
        .unwrap();
    let got = hear.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got, revision);
}

/// A database whose schema is newer than this binary's is refused, naming both
/// versions; an older schema is migrated; a migration is applied once.
#[test]
fn the_schema_is_versioned() {
    let server = TestPostgres::shared();
    let url = server.database();
    drop(PgStore::open(&url, &PgOptions::default()).unwrap());
    // Opening again applies nothing and keeps the data.
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    store.create_namespace(&namespace()).unwrap();
    drop(store);
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    assert!(store.namespace(NS).unwrap().is_some());
    drop(store);
    crate::testing::execute(&url, "UPDATE edgekv_schema SET version = 99");
    let err = PgStore::open(&url, &PgOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 99") && err.contains(&format!("binary's {}", crate::schema::VERSION)),
        "{err}"
    );
}

/// A database of schema version 2 (write ids without a time) is migrated: the
/// ids it kept stay known and go with the log, as they did; new ids get a time
/// and outlive the log until it. The migration only adds: a binary of version 2
/// (the previous release, a rollback's target) may still use the database, and
/// the ids it keeps meanwhile go with the log too.
#[test]
fn write_ids_kept_by_schema_2_go_with_the_log() {
    let server = TestPostgres::shared();
    let url = server.database();
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    let old = store
        .commit(Commit {
            write_id: Some(b"old".to_vec()),
            write_id_until_s: 1_000,
            ..Commit::default()
        })
        .unwrap();
    drop(store);
    // Back to what version 2 had.
    crate::testing::execute(
        &url,
        "DROP INDEX edgekv_written_until; ALTER TABLE edgekv_written DROP COLUMN until_s; \
         ALTER TABLE edgekv_schema DROP COLUMN applied; UPDATE edgekv_schema SET version = 2",
    );
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    assert_eq!(
        store.written(b"old").unwrap().map(|w| w.revision),
        Some(old)
    );
    // What a binary of version 2 reads at its open, and an id it keeps.
    assert_eq!(
        crate::testing::query_i64(&url, "SELECT version::int8 FROM edgekv_schema"),
        vec![2],
        "a binary of version 2 may still open the database"
    );
    crate::testing::execute(
        &url,
        &format!("INSERT INTO edgekv_written (id, revision, digest) VALUES ('v2', {old}, NULL)"),
    );
    store
        .commit(Commit {
            write_id: Some(b"new".to_vec()),
            write_id_until_s: 1_000,
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(store.trim_log(0).unwrap(), 2);
    assert_eq!(store.written(b"old").unwrap(), None);
    assert_eq!(store.written(b"v2").unwrap(), None);
    assert!(store.written(b"new").unwrap().is_some());
    assert_eq!(store.forget_write_ids(1_000, 10).unwrap(), 1);
    assert_eq!(store.written(b"new").unwrap(), None);
    drop(store);
    // A later release's additive migration does not lock this binary out.
    crate::testing::execute(&url, "UPDATE edgekv_schema SET applied = 9");
    drop(PgStore::open(&url, &PgOptions::default()).unwrap());
}

/// A multi-host URL: the first host is down, the second serves.
#[test]
fn a_multi_host_url_finds_the_host_that_answers() {
    let server = TestPostgres::shared();
    let url = server.database();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let name = url.rsplit('/').next().unwrap();
    let multi = format!(
        "postgres://postgres@127.0.0.1:{dead_port},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        server.port()
    );
    let store = PgStore::open(&multi, &PgOptions::default()).unwrap();
    store.create_namespace(&namespace()).unwrap();
    assert!(store.target().contains(&format!("127.0.0.1:{dead_port},")));
    assert!(
        !store.target().contains("postgres@"),
        "no credentials in messages"
    );
}

/// Values are cut into 1 MiB chunks: a value of 2.5 MiB is three rows, and an
/// overwrite by a small value leaves no chunk behind.
#[test]
fn large_values_are_chunked() {
    let (store, _server) = fresh();
    store.create_namespace(&namespace()).unwrap();
    let big = "x".repeat((5 << 20) / 2);
    store.write(vec![write("big", &big)]).unwrap();
    let parts = count_parts(&store);
    assert_eq!(parts, 2, "head + 2 parts for 2.5 MiB");
    store.write(vec![write("big", "small")]).unwrap();
    assert_eq!(count_parts(&store), 0);
    assert_eq!(store.get(NS, b"big").unwrap().unwrap().value, "small");
}

/// A transaction that read a key drops its old parts exactly when it had some,
/// also when one group writes the key twice around a namespace change (two
/// batches of records in one transaction): big → small → big → small, each
/// overwrite leaving the right parts and the right value.
#[test]
fn overwrites_decided_on_a_read_keep_exactly_the_parts_of_the_last_value() {
    let (store, _server) = fresh();
    store.create_namespace(&namespace()).unwrap();
    let big = "b".repeat((5 << 20) / 2);
    let bigger = "c".repeat(7 << 20 >> 1);
    let reads = ReadSet {
        keys: vec![(NS.to_string(), Bytes::from_static(b"k"))],
        ..ReadSet::default()
    };
    let group = |commits: Vec<Commit>| {
        store
            .transact(&reads, &mut |_| Ok(commits.clone()))
            .unwrap()
    };
    let put = |value: &str| Commit {
        writes: vec![write("k", value)],
        ..Commit::default()
    };
    let other_namespace = Commit {
        namespaces: vec![edgekv_store::NamespaceOp::Put(Namespace {
            id: "fedcba9876543210fedcba9876543210".into(),
            ..namespace()
        })],
        ..Commit::default()
    };
    group(vec![put(&big)]);
    assert_eq!(count_parts(&store), 2, "2.5 MiB: head + 2 parts");
    group(vec![put("small")]);
    assert_eq!(count_parts(&store), 0, "a small overwrite drops the parts");
    group(vec![put(&big), other_namespace.clone(), put("small")]);
    assert_eq!(count_parts(&store), 0, "big then small in one transaction");
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().value, "small");
    group(vec![put("small"), other_namespace.clone(), put(&big)]);
    assert_eq!(count_parts(&store), 2, "small then big in one transaction");
    group(vec![put(&bigger), other_namespace, put(&big)]);
    assert_eq!(
        count_parts(&store),
        2,
        "bigger then big: the big one's parts"
    );
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().value, big.as_str());
}

/// A write group reads its keys' records and write ids by index, one probe per
/// key, even with a plan made while the tables were empty and never analysed
/// (a new database: a pooled connection keeps that plan until the statistics
/// catch up). The old joins were planned as hash joins over a scan of the whole
/// table: every write group read every record.
#[test]
fn a_group_reads_by_index_whatever_the_statistics_say() {
    let (store, _server) = fresh();
    let plans: Vec<String> = store
        .simple("planning on empty tables", |client| async move {
            client
                .batch_execute("SET plan_cache_mode = force_generic_plan")
                .await?;
            let (records_args, written_args) = (
                format!("(ARRAY['{NS}', '{NS}']::text[], ARRAY['\\x6b31', '\\x6b32']::bytea[])"),
                "(ARRAY['\\x6b31', '\\x6b32']::bytea[])".to_string(),
            );
            // The plans are made now, on empty tables; then the tables fill.
            client
                .batch_execute(&format!(
                    "PREPARE records AS {}; PREPARE written AS {}; \
                     EXECUTE records{records_args}; EXECUTE written{written_args}",
                    crate::READ_RECORDS,
                    crate::READ_WRITTEN
                ))
                .await?;
            client
                .batch_execute(&format!(
                    "INSERT INTO edgekv_records (namespace, key, head, revision, tombstone, parts) \
                     SELECT '{NS}', convert_to('k' || g, 'UTF8'), '\\x00', g, false, 1 \
                     FROM generate_series(1, 20000) g; \
                     INSERT INTO edgekv_written (id, revision) \
                     SELECT convert_to('k' || g, 'UTF8'), g FROM generate_series(1, 20000) g"
                ))
                .await?;
            let mut plans = Vec::new();
            for explain in [
                format!("EXPLAIN EXECUTE records{records_args}"),
                format!("EXPLAIN EXECUTE written{written_args}"),
            ] {
                let mut plan = String::new();
                for message in client.simple_query(&explain).await? {
                    if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                        plan.push_str(row.get(0).unwrap_or_default());
                        plan.push('\n');
                    }
                }
                plans.push(plan);
            }
            Ok(plans)
        })
        .unwrap();
    for plan in plans {
        assert!(
            !plan.contains("Seq Scan on edgekv_records")
                && !plan.contains("Seq Scan on edgekv_written"),
            "a write group's read scans a whole table:\n{plan}"
        );
        assert!(plan.contains("Index Scan"), "no index probe:\n{plan}");
    }
}

fn count_parts(store: &PgStore) -> i64 {
    store
        .simple("counting parts", |client| async move {
            Ok(client
                .query_one("SELECT count(*) FROM edgekv_record_parts", &[])
                .await?
                .get::<_, i64>(0))
        })
        .unwrap()
}

/// One process holds the lease; another waits, and takes it the moment the first
/// lets go, reading the document the first saved. A holder whose connection is
/// cut is told, and can no longer save.
#[test]
fn a_lease_passes_to_the_waiting_process_with_its_document() {
    use crate::lease::PgLease;
    let server = TestPostgres::shared();
    let url = server.database();
    let first = PgLease::acquire(&url, "control", &mut || panic!("nothing holds it yet")).unwrap();
    assert_eq!(first.load().unwrap(), None);
    first.save(b"version 1").unwrap();
    let (taken, took) = std::sync::mpsc::channel();
    let waiter_url = url.clone();
    let waiter = std::thread::spawn(move || {
        let mut waited = false;
        let lease = PgLease::acquire(&waiter_url, "control", &mut || waited = true).unwrap();
        taken.send(Instant::now()).unwrap();
        (lease, waited)
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(took.try_recv().is_err(), "the lease was taken while held");
    first.save(b"version 2").unwrap();
    let released = Instant::now();
    drop(first);
    let at = took.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(at.duration_since(released) < Duration::from_secs(2));
    let (second, waited) = waiter.join().unwrap();
    assert!(waited);
    assert_eq!(second.load().unwrap().as_deref(), Some(&b"version 2"[..]));

    // The holder's connection is cut (its database session ended): it is told,
    // and its saves fail.
    let (lost, told) = std::sync::mpsc::channel();
    second.on_lost(Box::new(move |why| {
        let _ = lost.send(why);
    }));
    let database = url.rsplit('/').next().unwrap();
    crate::testing::execute(
        &server.admin_url(),
        &format!(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND a.datname = '{database}'"
        ),
    );
    told.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(second.save(b"version 3").is_err());
}

/// Every session carries the guards that bound what a vanished peer costs the
/// others: an idle transaction (a head lock held by a dead origin) ends after
/// 10 s, a lock is waited for 20 s at most, and the server probes idle
/// connections (a dead holder's lease is freed in seconds, not hours).
#[test]
fn sessions_carry_their_guards() {
    let (store, _server) = fresh();
    let shown = store
        .simple("showing settings", |client| async move {
            let mut shown = Vec::new();
            for setting in [
                "idle_in_transaction_session_timeout",
                "lock_timeout",
                "tcp_keepalives_idle",
                "tcp_user_timeout",
            ] {
                let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
                shown.push(row.get::<_, String>(0));
            }
            Ok(shown)
        })
        .unwrap();
    assert_eq!(shown, ["10s", "20s", "5", "10000"]);
}

/// This end too ends a connection whose sent data stays unacknowledged: a
/// primary that vanished without a reset mid-query fails the call in seconds,
/// not after the kernel's 15 minutes of retransmissions.
#[test]
fn this_end_gives_up_on_a_silent_server() {
    let (mut config, _) = crate::parse_url("postgres://u@h1,h2/db").unwrap();
    crate::guard_sessions(&mut config);
    assert_eq!(
        config.get_tcp_user_timeout(),
        Some(&crate::TCP_USER_TIMEOUT)
    );
    assert!(config.get_keepalives());
}

/// Snapshots take at most a quarter of the pool: while slow ones are read, one
/// more waits (and gives up after `snapshot_wait`), and reads and writes still get
/// connections.
#[test]
fn snapshots_never_take_the_whole_pool() {
    let server = TestPostgres::shared();
    let options = PgOptions {
        pool_size: 4,
        snapshot_wait: Duration::from_millis(200),
        ..PgOptions::default()
    };
    let store = Arc::new(PgStore::open(&server.database(), &options).unwrap());
    store.create_namespace(&namespace()).unwrap();
    store.write(vec![write("k", "v")]).unwrap();
    let (reading, started) = std::sync::mpsc::channel();
    let (finish, finished) = std::sync::mpsc::channel::<()>();
    let slow = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut told = false;
            store
                .snapshot(&[NS.into()], &mut |_| {
                    if !told {
                        told = true;
                        reading.send(()).unwrap();
                        // An edge that reads slowly: the snapshot holds its place.
                        finished.recv().unwrap();
                    }
                    Ok(())
                })
                .unwrap()
        })
    };
    started.recv_timeout(Duration::from_secs(5)).unwrap();
    let refused = store.snapshot(&[NS.into()], &mut |_| Ok(())).unwrap_err();
    assert!(refused.to_string().contains("try again later"), "{refused}");
    // The pool still serves reads and writes meanwhile.
    store.write(vec![write("k2", "v2")]).unwrap();
    assert_eq!(store.get(NS, b"k2").unwrap().unwrap().value, "v2");
    finish.send(()).unwrap();
    slow.join().unwrap();
    // The place is free again.
    store.snapshot(&[NS.into()], &mut |_| Ok(())).unwrap();
}

/// A database whose head went back (failed over to a replica that had not
/// received the last commits, or restored): the head known here goes back to
/// the database's, so that an edge past it is told to resync, where it would
/// otherwise be fed the new commits at revisions it applied from the lost
/// history.
#[test]
fn a_database_head_that_went_back_is_believed() {
    let server = TestPostgres::shared();
    let url = server.database();
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    store.create_namespace(&namespace()).unwrap();
    for i in 0..4 {
        store
            .commit(Commit {
                writes: vec![write(&format!("k{i}"), "v")],
                ..Commit::default()
            })
            .unwrap();
    }
    let known = store.revision();
    assert_eq!(store.refresh_revision().unwrap(), known);
    // What a failover to a replica two commits behind leaves.
    crate::testing::execute(
        &url,
        &format!(
            "DELETE FROM edgekv_log WHERE revision > {back}; UPDATE edgekv_head SET revision = {back}",
            back = known - 2
        ),
    );
    assert_eq!(store.refresh_revision().unwrap(), known - 2);
    assert_eq!(store.revision(), known - 2);
    // The next commit takes the database's next revision, and the head follows.
    let next = store
        .commit(Commit {
            writes: vec![write("after", "v")],
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(next, known - 1);
    assert_eq!(store.revision(), known - 1);
    // The log as the database holds it now, none of the lost history.
    let LogRead::Entries(entries) = store.log(known - 2, 10).unwrap() else {
        panic!("the log was trimmed");
    };
    let keys: Vec<&[u8]> = (entries.iter())
        .flat_map(|e| e.writes.iter().map(|w| w.key.as_ref()))
        .collect();
    assert_eq!(keys, vec![b"k1".as_slice(), b"after".as_slice()]);
}

/// The same, found by the process itself: its next commit locks a head behind
/// the one it knew, and a process that only follows reads it on its own. No
/// caller has to ask from beyond the head first.
///
/// Before, the known head only ever rose: the writer committed the new history
/// under the old head's number, over the kept entries of the lost one, and a
/// follower kept the lost head until the new history passed it — an edge
/// connected there was then fed the new commits after revisions it had applied
/// from the lost history, and never resynced.
#[test]
fn a_database_head_that_went_back_is_noticed_without_being_asked() {
    let server = TestPostgres::shared();
    let url = server.database();
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    let quick_poll = PgOptions {
        poll_interval: Duration::from_millis(50),
        ..PgOptions::default()
    };
    let follower = PgStore::open(&url, &quick_poll).unwrap();
    store.create_namespace(&namespace()).unwrap();
    for i in 0..4 {
        store
            .commit(Commit {
                writes: vec![write(&format!("k{i}"), "v")],
                ..Commit::default()
            })
            .unwrap();
    }
    let known = store.revision();
    let deadline = Instant::now() + Duration::from_secs(10);
    while follower.revision() < known {
        assert!(
            Instant::now() < deadline,
            "the follower never heard of the commits"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::testing::execute(
        &url,
        &format!(
            "DELETE FROM edgekv_log WHERE revision > {back}; UPDATE edgekv_head SET revision = {back}",
            back = known - 2
        ),
    );
    while follower.revision() != known - 2 {
        assert!(
            Instant::now() < deadline,
            "the follower kept the lost head {}",
            follower.revision()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let next = store
        .commit(Commit {
            writes: vec![write("after", "v")],
            ..Commit::default()
        })
        .unwrap();
    assert_eq!(next, known - 1);
    assert_eq!(store.revision(), known - 1, "the writer kept the lost head");
    // Nothing of the lost history past the new commit is served from memory.
    match store.log(known, 10).unwrap() {
        LogRead::Entries(entries) => assert!(
            entries.is_empty(),
            "lost entries served: {:?}",
            entries.iter().map(|e| e.revision).collect::<Vec<_>>()
        ),
        LogRead::Trimmed { .. } => panic!("the log was trimmed"),
    }
}

/// A read of the log from the database (another process's commits, nothing of
/// them in memory) stops at `LOG_READ_BYTES` too, and reads only the data of
/// what it returns.
#[test]
fn a_log_read_from_the_database_is_bounded_in_bytes() {
    let server = TestPostgres::shared();
    let url = server.database();
    let one = PgStore::open(&url, &PgOptions::default()).unwrap();
    one.create_namespace(&namespace()).unwrap();
    let big = Bytes::from(vec![7u8; 20 * 1024 * 1024]);
    let mut revisions = Vec::new();
    for key in ["a", "b", "c"] {
        let mut w = write(key, "");
        w.record = Record::value(big.clone(), None, None);
        revisions.push(
            one.commit(Commit {
                writes: vec![w],
                ..Commit::default()
            })
            .unwrap(),
        );
    }
    let two = PgStore::open(&url, &PgOptions::default()).unwrap();
    let LogRead::Entries(entries) = two.log(revisions[0], 256).unwrap() else {
        panic!("the log was trimmed");
    };
    let read: Vec<u64> = entries.iter().map(|e| e.revision).collect();
    assert_eq!(read, revisions[..2]);
    assert!(entries[1].writes[0].record.value == big, "returned whole");
    assert_eq!(two.log_queries(), 1);
}

/// A snapshot's pages end at their bytes as well as their count: big records
/// and many small ones are all visited, once each, in key order.
#[test]
fn a_snapshot_pages_through_big_and_many_records() {
    let (store, _server) = fresh();
    store.create_namespace(&namespace()).unwrap();
    let big = Bytes::from(vec![3u8; 20 * 1024 * 1024]);
    let mut writes: Vec<Write> = ["big-a", "big-b", "big-c"]
        .iter()
        .map(|key| {
            let mut w = write(key, "");
            w.record = Record::value(big.clone(), None, None);
            w
        })
        .collect();
    writes.extend((0..300).map(|i| write(&format!("small-{i:03}"), "v")));
    for chunk in writes.chunks(50) {
        store.write(chunk.to_vec()).unwrap();
    }
    let mut seen = Vec::new();
    store
        .snapshot(&[NS.into()], &mut |item| {
            if let edgekv_store::SnapshotItem::Key(w) = item {
                let size = w.record.value.len();
                seen.push((String::from_utf8(w.key.to_vec()).unwrap(), size));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(seen.len(), 303);
    assert!(
        seen.windows(2).all(|p| p[0].0 < p[1].0),
        "in key order, once each"
    );
    assert!(seen[..3].iter().all(|(_, size)| *size == big.len()));
}

/// Watch streams read the log after every commit, one stream per edge: the
/// reads come from memory, and streams that miss it share one query. A
/// process's own commits are never read back; another process's are read once
/// for all streams; a stream that is caught up costs nothing.
#[test]
fn watch_streams_share_the_reads_of_the_log() {
    let server = TestPostgres::shared();
    let url = server.database();
    let one = Arc::new(PgStore::open(&url, &PgOptions::default()).unwrap());
    let two = Arc::new(PgStore::open(&url, &PgOptions::default()).unwrap());
    one.create_namespace(&namespace()).unwrap();
    let from = one.revision() + 1;
    for i in 0..20 {
        one.write(vec![write(&format!("k{i}"), "v")]).unwrap();
    }
    let head = one.revision();
    let read = |store: &Arc<PgStore>| {
        let streams: Vec<_> = (0..10)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || match store.log(from, 1000).unwrap() {
                    LogRead::Entries(entries) => entries,
                    LogRead::Trimmed { .. } => panic!("trimmed"),
                })
            })
            .collect();
        streams
            .into_iter()
            .map(|s| s.join().unwrap())
            .collect::<Vec<_>>()
    };
    let own = read(&one);
    assert_eq!(
        one.log_queries(),
        0,
        "a process's own commits come from memory"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while two.revision() < head {
        assert!(Instant::now() < deadline, "the other process never heard");
        std::thread::sleep(Duration::from_millis(10));
    }
    let other = read(&two);
    assert_eq!(
        two.log_queries(),
        1,
        "ten streams of the other process, one query"
    );
    for entries in own.iter().chain(&other) {
        assert_eq!(entries, &own[0]);
        assert_eq!(entries.len(), 20);
        assert_eq!(entries.last().unwrap().revision, head);
    }
    match two.log(head + 1, 1000).unwrap() {
        LogRead::Entries(entries) => assert!(entries.is_empty()),
        LogRead::Trimmed { .. } => panic!("trimmed"),
    }
    assert_eq!(two.log_queries(), 1, "a caught-up stream asks nothing");
}

/// A CA, and a server certificate it signed, for the names given.
fn certificates(names: &[&str]) -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "edgekv test database CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let server = rcgen::CertificateParams::new(names).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Whether the store's connections are encrypted, as the server sees them.
fn encrypted(store: &PgStore) -> bool {
    store
        .simple("asking pg_stat_ssl", |client| async move {
            Ok(client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await?
                .get::<_, bool>(0))
        })
        .unwrap()
}

/// `sslmode` as libpq means it, against a server that takes TLS connections
/// only, with a certificate for `localhost` signed by a CA of the test's own:
/// verify-full trusts that CA and that name and no other; verify-ca ignores the
/// name; require and prefer (the default) encrypt without a CA; disable is
/// refused by the server. A store over TLS writes and reads.
#[test]
fn tls_to_the_database_follows_sslmode() {
    let (ca, cert, key) = certificates(&["localhost"]);
    let (other_ca, _, _) = certificates(&["localhost"]);
    let server = TestPostgres::start_with_tls(&cert, &key, true);
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, other_file) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&other_file, &other_ca).unwrap();
    let database = server.database();
    let name = database.rsplit('/').next().unwrap().to_string();
    let url = |host: &str, query: String| {
        format!(
            "postgres://postgres@{host}:{}/{name}?{query}",
            server.port()
        )
    };
    let root = |file: &std::path::Path| format!("sslrootcert={}", file.display());
    let open = |url: String| PgStore::open(&url, &PgOptions::default());

    let store = open(url(
        "localhost",
        format!("sslmode=verify-full&{}", root(&ca_file)),
    ))
    .unwrap();
    assert!(encrypted(&store));
    store.create_namespace(&namespace()).unwrap();
    store.write(vec![write("k", "over TLS")]).unwrap();
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().value, "over TLS");
    drop(store);

    let wrong_name = open(url(
        "127.0.0.1",
        format!("sslmode=verify-full&{}", root(&ca_file)),
    ));
    let err = wrong_name.unwrap_err().to_string();
    assert!(
        err.contains("certificate"),
        "verify-full, a name not in the certificate: {err}"
    );
    let wrong_ca = open(url(
        "localhost",
        format!("sslmode=verify-full&{}", root(&other_file)),
    ));
    let err = wrong_ca.unwrap_err().to_string();
    assert!(
        err.contains("certificate"),
        "verify-full, another CA: {err}"
    );
    let wrong_ca = open(url(
        "127.0.0.1",
        format!("sslmode=verify-ca&{}", root(&other_file)),
    ));
    assert!(wrong_ca.is_err(), "verify-ca, another CA");

    let store = open(url(
        "127.0.0.1",
        format!("sslmode=verify-ca&{}", root(&ca_file)),
    ))
    .unwrap();
    assert!(encrypted(&store), "verify-ca ignores the name, not the CA");
    let store = open(url("127.0.0.1", "sslmode=require".into())).unwrap();
    assert!(encrypted(&store), "require: encrypted, no CA asked");
    let store = open(url("127.0.0.1", String::new())).unwrap();
    assert!(
        encrypted(&store),
        "prefer, the default, takes the TLS offered"
    );
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().value, "over TLS");

    let clear = open(url("127.0.0.1", "sslmode=disable".into()));
    let err = clear.unwrap_err().to_string();
    assert!(
        err.contains("pg_hba.conf"),
        "disable, against a TLS-only server: {err}"
    );
}

/// A write group whose decision panics (a bug) leaves no transaction open: the
/// connection it ran on is closed at once, the head's lock is free, and the next
/// group commits only its own writes.
#[test]
fn a_panicking_group_leaves_no_transaction_open() {
    let server = TestPostgres::shared();
    let url = server.database();
    let name = url.rsplit('/').next().unwrap().to_string();
    let store = PgStore::open(&url, &PgOptions::default()).unwrap();
    store.create_namespace(&namespace()).unwrap();
    let head = store.revision();
    let reads = ReadSet {
        keys: vec![(NS.to_string(), Bytes::from_static(b"k"))],
        ..ReadSet::default()
    };
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.transact(&reads, &mut |_| panic!("a bug in a decision"))
    }));
    assert!(panicked.is_err());
    let open = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = '{name}' AND state LIKE 'idle in transaction%'"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::testing::query_i64(&server.admin_url(), &open) != vec![0] {
        assert!(
            Instant::now() < deadline,
            "a transaction is still open after the panic (it would hold the head's lock)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    store.write(vec![write("k", "after")]).unwrap();
    assert_eq!(store.revision(), head + 1);
    assert_eq!(store.get(NS, b"k").unwrap().unwrap().value, "after");
}
