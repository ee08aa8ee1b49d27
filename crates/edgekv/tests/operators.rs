//! What operators' tools read, checked with those tools: the edge's `/metrics`
//! with `promtool check metrics` (Debian's prometheus package) and against the
//! queries of the Grafana dashboard in `deploy/grafana/`, and the systemd
//! units under `deploy/` with `systemd-analyze verify`. `make test` installs both
//! (scripts/test-deps.sh); a missing tool fails the test with that command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{BIN, Edge, Kv, Origin};

/// The path of a tool, or a failure that says how to install it.
fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: run ./scripts/test-deps.sh (make test does)"
    );
    String::from_utf8(found.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_metrics_pass_promtool() {
    let promtool = tool("promtool");
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(dirs[0].path(), "production", "cred", &["kv"], &[]);
    let edge = Edge::start(dirs[1].path(), &origin.url("kv"), "production", "cred", &[]);
    edge.ready().await;
    // Traffic of several kinds, so every family has samples.
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("m", "cache").await;
    assert_eq!(kv.put(&ns, "k", "v").await, 200);
    assert_eq!(kv.get(&ns, "k").await.0, 200);
    assert_eq!(kv.get(&ns, "absent").await.0, 404);
    let text = reqwest::get(format!("{}/metrics", edge.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("edgekv_http_requests_total"), "{text}");
    // Every metric the Grafana dashboard queries is one the edge exports.
    let dashboard =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/edgekv-edges.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("edgekv_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        assert!(
            exported.contains(name.as_str()),
            "the dashboard queries {name}, which the edge does not export"
        );
    }
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_units_verify() {
    let analyze = tool("systemd-analyze");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        // The units name the installed binary; verify them against this build's.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/local/bin/edgekv", BIN);
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "no units under {}", units.display());
}
