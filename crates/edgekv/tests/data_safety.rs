//! No acknowledged write is dropped, end to end with real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Edge, Kv, Origin};

/// An edge restarted with the same `--node-id` over a new data dir (a replaced
/// disk) restarts its write sequence. Before write ids carried an incarnation,
/// the origin took each of its writes for a duplicate of an old one: five PUTs
/// answered 200 and none applied.
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

/// An edge's data dir restored from a backup holds the state of the start the
/// backup was taken in. Before a write id's incarnation was made at every start
/// (it was kept in the data dir), the restored edge handed out again the ids its
/// original had used after the backup, for other writes: the origin refused
/// every one of them as a reused id, and each PUT answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restored_from_a_backup_never_reuses_the_ids_of_its_original() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(dirs[0].path(), "production", "cred", &["kv"], &[]);
    let url = origin.url("kv");
    let args = ["--node-id", "edge-a"];
    let mut edge = Edge::start(dirs[1].path(), &url, "production", "cred", &args);
    edge.ready().await;
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("config", "cache").await;
    assert_eq!(kv.put(&ns, "before", "backed up").await, 200);
    edge.proc.terminate();

    // The backup, taken while the edge is stopped.
    let data = dirs[1].path().join("data");
    let backup = dirs[2].path().join("backup");
    copy_dir(&data, &backup);

    // The original goes on writing after the backup.
    let mut original = edge.start_again();
    original.ready().await;
    let kv = Kv::of(&original);
    for i in 0..5 {
        assert_eq!(
            kv.put(&ns, &format!("k{i}"), &format!("original {i}"))
                .await,
            200
        );
    }
    original.proc.terminate();

    // The disk is lost; the backup is restored over it.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    let restored = original.start_again();
    restored.ready().await;
    let kv = Kv::of(&restored);
    for i in 0..5 {
        assert_eq!(
            kv.put(&ns, &format!("k{i}"), &format!("restored {i}"))
                .await,
            200,
            "write {i} of the restored edge was taken"
        );
    }
    for i in 0..5 {
        let (status, body, _) = kv.get_with(&ns, &format!("k{i}"), true).await;
        assert_eq!((status, body), (200, format!("restored {i}")));
    }
}

/// Copies a directory tree (a data dir's backup).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
