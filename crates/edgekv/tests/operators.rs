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
    tool("promtool");
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
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let queried = dashboard_metrics("edgekv-edges.json");
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        assert!(
            exported.contains(name.as_str()),
            "the dashboard queries {name}, which the edge does not export"
        );
    }
    promtool_check(&text);
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

/// Metric names a Grafana dashboard's queries name.
fn dashboard_metrics(file: &str) -> std::collections::BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana")
        .join(file);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let mut rest = target["expr"].as_str().unwrap();
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
    queried
}

/// `promtool check metrics` on `text`; fails the test with what it said.
fn promtool_check(text: &str) {
    let mut check = Command::new(tool("promtool"))
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
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Control's `/metrics` (`--http`): deployments by phase, the active one's weight
/// and step, rollbacks by reason, edges connected, table versions; it passes
/// promtool, and every metric of the control dashboard is one it exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_metrics_pass_promtool_and_feed_the_dashboard() {
    use support::{Control, eventually};
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let secrets = dirs[3].path();
    let (production, staging) = (secrets.join("production"), secrets.join("staging"));
    std::fs::write(&production, "cred\n").unwrap();
    std::fs::write(&staging, "staging-cred\n").unwrap();
    let origin = Origin::start(
        dirs[0].path(),
        "production",
        "cred",
        &["kv-v1", "kv-v2"],
        &[],
    );
    let control = Control::start_with(
        dirs[1].path(),
        &production,
        &staging,
        &["--http", "127.0.0.1:0"],
    );
    let metrics_url = control
        .proc
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("control metrics on "))
        .expect("control prints its metrics URL")
        .to_string();
    control.register("kv-v1", "production", &origin.url("kv-v1"));
    control.register("kv-v2", "production", &origin.url("kv-v2"));
    control.bootstrap("kv-v1", "production");
    let edge = Edge::start_with_control(dirs[2].path(), &control.url, "production", "cred", &[]);
    edge.ready().await;
    control.ok(&[
        "deploy",
        "start",
        "kv-v2",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "10:60m,100:60m",
    ]);
    let fetch = || async {
        reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    eventually(
        std::time::Duration::from_secs(10),
        "the edge holds the deployment's table",
        || async {
            fetch()
                .await
                .contains(r#"edgekv_control_edges_behind{environment="production"} 0"#)
        },
    )
    .await;
    let active = fetch().await;
    let text = active.clone();
    for expected in [
        r#"edgekv_control_deployments{environment="production",phase="completed"} 1"#,
        r#"edgekv_control_deployments{environment="production",phase="running"} 1"#,
        r#"edgekv_control_edges_connected{environment="production"} 1"#,
        "edgekv_control_deployment_weight_ratio{",
        r#"build="kv-v2"} 0.1"#,
        "edgekv_control_deployment_verdict{",
    ] {
        assert!(text.contains(expected), "no {expected} in\n{text}");
    }
    promtool_check(&text);
    // A rollback is counted with a bounded class of its reason.
    control.ok(&[
        "deploy",
        "rollback",
        "--environment",
        "production",
        "--reason",
        "operator test",
    ]);
    let text = fetch().await;
    assert!(
        text.contains(
            r#"edgekv_control_rollbacks_total{environment="production",reason="operator"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"phase="rolled_back"} 1"#), "{text}");
    promtool_check(&text);
    // Samples while a deployment was active, and after the rollback.
    let exported: std::collections::BTreeSet<&str> = (active.lines().chain(text.lines()))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let queried = dashboard_metrics("edgekv-control.json");
    assert!(queried.len() >= 8, "{queried:?}");
    for name in &queried {
        assert!(
            exported.contains(name.as_str()),
            "the control dashboard queries {name}, which control does not export"
        );
    }
    // The listener answers only what it serves.
    let base = metrics_url.trim_end_matches("/metrics");
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/nothing"))
            .await
            .unwrap()
            .status(),
        404
    );
}
