//! No acknowledged write is dropped, end to end with real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Edge, Kv, Origin};

/// An edge restarted with the same `--node-id` over a new data dir (a replaced
/// disk, a restored backup) restarts its write sequence. Before write ids carried
/// the data dir's incarnation, the origin took each of its writes for a duplicate
/// of an old one: five PUTs answered 200 and none applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_over_a_new_data_dir_never_has_its_writes_taken_for_old_ones() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(dirs[0].path(), "production", "cred", &["kv"], &[]);
    let url = origin.url("kv");
    let mut first = Edge::start(
        dirs[1].path(),
        &url,
        "production",
        "cred",
        &["--node-id", "edge-a"],
    );
    first.ready().await;
    let kv = Kv::of(&first);
    let ns = kv.create_namespace("config", "cache").await;
    for i in 0..5 {
        assert_eq!(
            kv.put(&ns, &format!("k{i}"), &format!("old {i}")).await,
            200
        );
    }
    first.proc.terminate();

    // The same node id over an empty data dir.
    let second = Edge::start(
        dirs[2].path(),
        &url,
        "production",
        "cred",
        &["--node-id", "edge-a"],
    );
    second.ready().await;
    let kv = Kv::of(&second);
    for i in 0..5 {
        assert_eq!(
            kv.put(&ns, &format!("k{i}"), &format!("new {i}")).await,
            200
        );
    }
    for i in 0..5 {
        let (status, body, _) = kv.get_with(&ns, &format!("k{i}"), true).await;
        assert_eq!(
            (status, body),
            (200, format!("new {i}")),
            "write {i} of the new data dir was applied"
        );
    }
}
