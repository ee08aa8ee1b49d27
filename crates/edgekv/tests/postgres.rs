//! The origin on PostgreSQL, end to end with real processes: two origin processes
//! over one database, an edge on each (each edge knows both as endpoints of the
//! one build), writes at both; then one origin is killed with SIGKILL under load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use edgekv_store_postgres::testing::{TestPostgres, query_i64};
use support::{Edge, Kv, Origin, eventually};

const ENV: &str = "production";
const CRED: &str = "production-credential";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_on_one_database_survive_the_loss_of_one() {
    let server = TestPostgres::shared();
    let url = server.database();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let store = ["--store", url.as_str()];
    let mut one = Origin::start(dirs[0].path(), ENV, CRED, &["kv-v1"], &store);
    let two = Origin::start(dirs[1].path(), ENV, CRED, &["kv-v1"], &store);
    let (url_one, url_two) = (one.url("kv-v1"), two.url("kv-v1"));
    // Edge A prefers origin one, edge B origin two; each fails over to the other.
    let a = Edge::start(
        dirs[2].path(),
        &format!("{url_one},{url_two}"),
        ENV,
        CRED,
        &["--cache-ttl-s", "86400"],
    );
    let b = Edge::start(
        dirs[3].path(),
        &format!("{url_two},{url_one}"),
        ENV,
        CRED,
        &["--cache-ttl-s", "86400"],
    );
    a.ready().await;
    b.ready().await;
    let (ka, kb) = (Kv::of(&a), Kv::of(&b));

    // Writes at both converge on both: the feed of each origin carries the other's.
    let ns = ka.create_namespace("shared", "full").await;
    for i in 0..20 {
        assert_eq!(
            ka.put(&ns, &format!("a{i}"), &format!("from a {i}")).await,
            200
        );
        assert_eq!(
            kb.put(&ns, &format!("b{i}"), &format!("from b {i}")).await,
            200
        );
    }
    for kv in [&ka, &kb] {
        eventually(
            Duration::from_secs(10),
            "both edges hold all 40 keys",
            || async { kv.list(&ns).await.1.len() == 40 },
        )
        .await;
    }
    let (status, body, cache) = kb.get_with(&ns, "a7", false).await;
    assert_eq!(
        (status, body.as_str(), cache.as_str()),
        (200, "from a 7", "HIT")
    );
    let (status, body, cache) = ka.get_with(&ns, "b7", false).await;
    assert_eq!(
        (status, body.as_str(), cache.as_str()),
        (200, "from b 7", "HIT")
    );

    // Load at both edges: writers of new keys, readers of held keys.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let read_failures = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for (name, edge) in [("a", &a), ("b", &b)] {
        for w in 0..2 {
            let kv = Kv::of(edge);
            let (ns, stop, killed) = (ns.clone(), stop.clone(), killed.clone());
            writers.push(tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let (mut refused, mut after_kill) = (0, 0);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("load-{name}{w}-{i}");
                    let value = format!("v{i}");
                    match kv.put(&ns, &key, &value).await {
                        200 => {
                            after_kill += usize::from(killed.load(Ordering::Relaxed));
                            acked.insert(key, value);
                        }
                        _ => refused += 1,
                    }
                    i += 1;
                }
                (acked, refused, (name, after_kill))
            }));
        }
        let kv = Kv::of(edge);
        let (ns, stop, failures) = (ns.clone(), stop.clone(), read_failures.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{}{}", if i % 2 == 0 { "a" } else { "b" }, i % 20);
                if kv.get(&ns, &key).await.0 != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            (BTreeMap::new(), 0, ("reader", 0))
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    one.proc.kill9();
    killed.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    let mut refused = 0;
    let mut after_kill: BTreeMap<&str, usize> = BTreeMap::new();
    for writer in writers {
        let (keys, r, (name, k)) = writer.await.unwrap();
        acked.extend(keys);
        refused += r;
        *after_kill.entry(name).or_default() += k;
    }
    assert_eq!(
        read_failures.load(Ordering::Relaxed),
        0,
        "a read of a held key failed"
    );
    assert_eq!(refused, 0, "a write was refused");
    // Edge A's writes after the kill went to origin two, not to its outbox: at
    // most the writes in flight at the kill were queued.
    let after_kill_a = after_kill["a"];
    assert!(
        after_kill_a > 20,
        "A acknowledged {after_kill_a} writes after the kill"
    );
    let queued_a = support::metric(&a, "edgekv_outbox_queued_total").await;
    assert!(
        queued_a <= 4.0,
        "A queued {queued_a} of {after_kill_a} writes instead of failing over"
    );
    assert!(
        acked.len() > 20,
        "too little load to mean anything: {}",
        acked.len()
    );

    // Every acknowledged write is in the database, and on both edges.
    let live =
        format!("SELECT count(*) FROM edgekv_records WHERE namespace = '{ns}' AND NOT tombstone");
    eventually(
        Duration::from_secs(15),
        "every acknowledged write is in the database",
        || async { query_i64(&url, &live)[0] as usize == 40 + acked.len() },
    )
    .await;
    for (key, value) in acked.iter().step_by(7) {
        let (status, body, _) = kb.get_with(&ns, key, true).await;
        assert_eq!((status, body.as_str()), (200, value.as_str()), "{key} at B");
    }
    for kv in [&ka, &kb] {
        eventually(
            Duration::from_secs(15),
            "both edges hold every acknowledged key",
            || async { kv.list(&ns).await.1.len() == 40 + acked.len() },
        )
        .await;
    }
    // The revision order of both origins' commits has no gap and no repeat.
    let revisions = query_i64(
        &url,
        "SELECT revision FROM edgekv_log WHERE part = 0 ORDER BY revision",
    );
    let head = query_i64(&url, "SELECT revision FROM edgekv_head")[0];
    assert_eq!(revisions, (1..=head).collect::<Vec<i64>>());
    assert!(head as usize >= 41 + acked.len(), "head {head}");
    drop(two);
}

/// Two control processes over one database: the one holding the lease serves, the
/// other waits without listening. Killed with SIGKILL, the active one is replaced
/// within 5 s by the standby, which carries on from the same state: the edge
/// (knowing both) follows it, and its route version never goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_control_takes_over_and_route_versions_never_go_back() {
    use std::process::Command;
    use std::time::Instant;
    use support::{BIN, Control, Proc, clean, low_port_addr};

    let server = TestPostgres::shared();
    let url = server.database();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let secrets = dirs[4].path();
    let (production, staging) = (secrets.join("production"), secrets.join("staging"));
    std::fs::write(&production, format!("{CRED}\n")).unwrap();
    std::fs::write(&staging, "staging-credential\n").unwrap();
    let origin = Origin::start(dirs[0].path(), ENV, CRED, &["kv-v1", "kv-v2"], &[]);
    let active = Control::start_with(dirs[1].path(), &production, &staging, &["--store", &url]);
    // The standby: the same control, on its own address, over the same database.
    let standby_addr = low_port_addr();
    let mut standby_args = active.args.clone();
    standby_args[2] = standby_addr.clone();
    standby_args[4] = dirs[2].path().join("state").display().to_string();
    let mut command = clean(Command::new(BIN));
    command.args(&standby_args);
    let standby = Proc::spawn(command, "control standby", 1);
    let standby_url = format!("http://{standby_addr}");

    active.register("kv-v1", ENV, &origin.url("kv-v1"));
    active.register("kv-v2", ENV, &origin.url("kv-v2"));
    active.bootstrap("kv-v1", ENV);
    let edge = Edge::start_with_control(
        dirs[3].path(),
        &format!("{},{standby_url}", active.url),
        ENV,
        CRED,
        &[],
    );
    edge.ready().await;
    let before = edge.status().await["route_version"].as_u64().unwrap();
    assert!(before > 0, "the edge follows the active control's table");

    // The active control dies; the standby takes the lease and serves.
    let mut active = active;
    active.proc.kill9();
    let killed = Instant::now();
    let takeover = loop {
        let status = clean(Command::new(BIN))
            .args(["build", "list", "--environment", ENV])
            .args(["--control", &standby_url, "--admin-token", support::ADMIN])
            .output()
            .unwrap();
        if status.status.success() {
            let listed = String::from_utf8_lossy(&status.stdout).to_string();
            assert!(
                listed.contains("kv-v1") && listed.contains("kv-v2"),
                "the standby lost the state: {listed}"
            );
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no takeover in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );

    // A rollout at the new active control reaches the edge; its route version
    // only ever goes up, from where the old active left it.
    let successor = Control {
        proc: standby,
        url: standby_url.clone(),
        args: standby_args,
    };
    successor.ok(&[
        "deploy",
        "start",
        "kv-v2",
        "--environment",
        ENV,
        "--min-requests",
        "0",
        "--steps",
        "100:0s",
    ]);
    let mut seen = before;
    let deadline = Instant::now() + Duration::from_secs(15);
    let v2 = origin.url("kv-v2");
    loop {
        let status = edge.status().await;
        let now = status["route_version"].as_u64().unwrap();
        assert!(
            now >= seen,
            "the route version went back from {seen} to {now}"
        );
        seen = now;
        if now > before && status["known_good"] == v2.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge never got kv-v2 as known-good from the standby: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("takeover after {takeover:?}; route version {before} -> {seen}");
}

/// A CA, and a server certificate it signed for `localhost`: (CA, cert, key) PEM.
fn database_certificates() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// An origin process whose database takes TLS connections only, reached with
/// `sslmode=verify-full`: an edge writes through it and reads back. The same
/// URL with a CA file that is not there is refused by `--check-config`, naming
/// the file, and so is `sslmode=allow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_reaches_a_tls_only_database_with_verify_full() {
    let (ca, cert, key) = database_certificates();
    let server = TestPostgres::start_with_tls(&cert, &key, true);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ca_file = dirs[2].path().join("db-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let database = server.database();
    let name = database.rsplit('/').next().unwrap();
    let url = |query: &str| {
        format!(
            "postgres://postgres@localhost:{}/{name}?{query}",
            server.port()
        )
    };
    let verified = url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));
    let origin = Origin::start(
        dirs[0].path(),
        ENV,
        CRED,
        &["kv-v1"],
        &["--store", &verified],
    );
    let edge = Edge::start(dirs[1].path(), &origin.url("kv-v1"), ENV, CRED, &[]);
    edge.ready().await;
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("over-tls", "full").await;
    assert_eq!(kv.put(&ns, "k", "written over TLS").await, 200);
    let (status, body, _) = kv.get_with(&ns, "k", false).await;
    assert_eq!((status, body.as_str()), (200, "written over TLS"));
    let held = query_i64(
        &server.admin_url(),
        &format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{name}' AND NOT s.ssl"
        ),
    );
    assert_eq!(
        held,
        vec![0],
        "every connection to the database is encrypted"
    );

    let check = |store: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgekv"))
            .args([
                "origin",
                "--environment",
                ENV,
                "--build",
                "kv-v1=127.0.0.1:0",
            ])
            .arg("--credential-file")
            .arg(dirs[0].path().join("credentials"))
            .args(["--store", store, "--check-config"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = url("sslmode=verify-full&sslrootcert=/nonexistent/db-ca.pem");
    let (ok, stderr) = check(&missing);
    assert!(!ok && stderr.contains("/nonexistent/db-ca.pem"), "{stderr}");
    let (ok, stderr) = check(&url("sslmode=allow"));
    assert!(!ok && stderr.contains("sslmode=allow"), "{stderr}");
    let (ok, stderr) = check(&verified);
    assert!(ok, "{stderr}");
}
