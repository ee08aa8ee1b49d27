//! The database is not the new single point of failure: an origin over a Patroni
//! cluster of two PostgreSQL nodes in synchronous replication (with etcd), given
//! the multi-host URL, keeps taking writes after the primary is killed with
//! SIGKILL under a write load, and loses none it acknowledged.
//!
//! The cluster comes from `scripts/ha-postgres.sh` (Debian's `patroni` and
//! `etcd-server`, installed by `scripts/test-deps.sh`); `make test-ha` runs this
//! test alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgekv_store_postgres::testing::query_i64;
use support::{Edge, Kv, Origin, eventually};

const ENV: &str = "production";
const CRED: &str = "production-credential";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ha-postgres.sh")
}

/// The cluster, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
}

impl Cluster {
    fn start() -> Cluster {
        // Under /tmp: the postgres user must reach it.
        let dir = tempfile::Builder::new()
            .prefix("edgekv-ha-")
            .tempdir_in("/tmp")
            .unwrap();
        let output = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "the Patroni cluster did not start (install its packages with \
             scripts/test-deps.sh: patroni, etcd-server):\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let url = stdout
            .lines()
            .find_map(|l| l.strip_prefix("url "))
            .expect("the script prints the cluster's URL")
            .to_string();
        Cluster { dir, url }
    }

    fn run(&self, verb: &str) -> String {
        let output = Command::new(script())
            .arg(verb)
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ha-postgres.sh {verb} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_the_primary_fails_over_and_none_acknowledged_is_lost() {
    let cluster = Cluster::start();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(
        dirs[0].path(),
        ENV,
        CRED,
        &["kv-v1"],
        &["--store", cluster.url.as_str()],
    );
    let edge = Edge::start(dirs[1].path(), &origin.url("kv-v1"), ENV, CRED, &[]);
    edge.ready().await;
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("ha", "cache").await;

    // Two writers of new keys, each acknowledged write remembered with when it
    // was acknowledged and whether it was applied (200) or queued (202).
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let kv = Kv::of(&edge);
            let (ns, stop) = (ns.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                let mut failed = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let status = kv.put(&ns, &key, &format!("v{i}")).await;
                    match status {
                        200 | 202 => {
                            acked.insert(key, (started.elapsed(), status));
                        }
                        other => failed.push((key, other)),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = cluster.run("kill-leader");
    let killed_at = started.elapsed();
    let leader = cluster.run("wait-leader");
    eprintln!("killed {killed} at {killed_at:?}; new leader: {leader}");
    // Writes go on well past the failover.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    let mut failed = Vec::new();
    for writer in writers {
        let (a, f) = writer.await.unwrap();
        acked.extend(a);
        failed.extend(f);
    }
    assert!(failed.is_empty(), "writes were refused: {failed:?}");
    // Writes were applied again (200, not only queued) after the failover.
    let applied_after = acked
        .values()
        .filter(|(at, status)| *status == 200 && *at > killed_at + Duration::from_secs(12))
        .count();
    assert!(applied_after > 0, "no write was applied after the failover");

    // Every acknowledged write is in the new primary: applied, or replayed from
    // the edge's outbox.
    let live =
        format!("SELECT count(*) FROM edgekv_records WHERE namespace = '{ns}' AND NOT tombstone");
    eventually(
        Duration::from_secs(30),
        "every acknowledged write is in the database",
        || async { query_i64(&cluster.url, &live)[0] as usize == acked.len() },
    )
    .await;
    for (key, _) in acked.iter().step_by(11) {
        let (status, _) = kv.get(&ns, key).await;
        assert_eq!(status, 200, "{key}");
    }
    let revisions = query_i64(
        &cluster.url,
        "SELECT revision FROM edgekv_log WHERE part = 0 ORDER BY revision",
    );
    let head = query_i64(&cluster.url, "SELECT revision FROM edgekv_head")[0];
    assert_eq!(
        revisions,
        (1..=head).collect::<Vec<i64>>(),
        "gap-free revisions"
    );
    drop(origin);
}
