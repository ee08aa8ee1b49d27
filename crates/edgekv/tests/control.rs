//! The control plane end to end with real processes: `edgekv control`, origin
//! builds of two environments, and the operator commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::{Control, Edge, Kv, Origin, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_pre_checks_and_a_progressive_rollout() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let production = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", "kv-v2"],
        &[],
    );
    let staging = Origin::start(dirs[1].path(), "staging", "stg-cred", &["kv-v2-stg"], &[]);
    let mut control = Control::start(
        dirs[2].path(),
        &dirs[0].path().join("credentials"),
        &dirs[1].path().join("credentials"),
    );

    // Look-alike ids in two environments.
    for (id, environment, url) in [
        ("kv-v1", "production", production.url("kv-v1")),
        ("kv-v2", "production", production.url("kv-v2")),
        ("kv-v2-stg", "staging", staging.url("kv-v2-stg")),
    ] {
        control.ok(&[
            "build",
            "register",
            id,
            "--environment",
            environment,
            "--endpoint",
            &url,
        ]);
    }
    let listed = control.ok(&["build", "list", "--environment", "production", "--json"]);
    let ids: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&listed)
        .unwrap()
        .iter()
        .map(|b| b["build_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["kv-v1", "kv-v2"],
        "a production listing shows no staging build"
    );

    // The 2023 failure, refused before any traffic moves.
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v2-stg",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "100",
    ]);
    assert!(
        why.contains("staging") && why.contains("production"),
        "{why}"
    );
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v9",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "100",
    ]);
    assert!(why.contains("not registered"), "{why}");
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v1",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "10,50",
    ]);
    assert!(why.contains("last step"), "{why}");

    // A build of another tenant, and a build whose endpoint is really the staging
    // build: the probe made with the production credential is refused.
    control.ok(&[
        "build",
        "register",
        "kv-acme",
        "--environment",
        "production",
        "--tenant",
        "acme",
        "--endpoint",
        &production.url("kv-v1"),
    ]);
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-acme",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "100",
    ]);
    assert!(why.contains("tenant \"acme\""), "{why}");
    control.ok(&[
        "build",
        "register",
        "kv-v3",
        "--environment",
        "production",
        "--endpoint",
        &staging.url("kv-v2-stg"),
    ]);
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v3",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "100",
    ]);
    assert!(
        why.contains("health probe") && why.contains("Unauthenticated"),
        "{why}"
    );

    // Bootstrap, then a rollout 10% → 50% → 100%.
    control.bootstrap("kv-v1", "production");
    let started = control.ok(&[
        "deploy",
        "start",
        "kv-v2",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "10:1s,50:1s,100:1s",
    ]);
    assert!(
        started.contains("step 1 of 3 (10% of traffic)"),
        "{started}"
    );
    assert!(started.contains("known-good now: kv-v1"), "{started}");
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v1",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "100",
    ]);
    assert!(why.contains("still active"), "{why}");

    // Control restarted mid-rollout resumes it from its state.
    eventually(
        Duration::from_secs(10),
        "the rollout reaches 50%",
        || async { control.status("production-2")["step"] == 1 },
    )
    .await;
    control.proc.terminate();
    control = Control::run(control.args.clone());
    let status = control.status("production-2");
    assert!(status["step"].as_u64().unwrap() >= 1, "{status}");
    eventually(
        Duration::from_secs(15),
        "the rollout completes after the restart",
        || async { control.status("production-2")["phase"] == "completed" },
    )
    .await;
    let history = control.ok(&["deploy", "status", "production-2"]);
    assert!(
        history.contains("completed: kv-v2 is known-good")
            && history.contains("known-good now: kv-v2 (when this deployment started: kv-v1)"),
        "{history}"
    );
    // Wall-clock times, not epoch milliseconds.
    let year = history
        .lines()
        .find(|l| l.contains("completed:"))
        .and_then(|l| l.trim().get(..4))
        .unwrap_or_default()
        .to_string();
    assert!(year.starts_with("20") && year.len() == 4, "{history}");

    // Rollback twice in an incident: with nothing active a plain rollback has
    // nothing to roll back from and says so; the operator names the earlier
    // known-good build; pressing rollback again does not redeploy kv-v2 (before,
    // the second rollback went back to the build the first one left).
    let why = control.refused(&["deploy", "rollback", "--environment", "production"]);
    assert!(
        why.contains("nothing to roll back") && why.contains("kv-v1"),
        "{why}"
    );
    let back = control.ok(&[
        "deploy",
        "rollback",
        "--environment",
        "production",
        "--to",
        "kv-v1",
    ]);
    assert!(back.contains("known-good is kv-v1"), "{back}");
    let again = control.ok(&[
        "deploy",
        "rollback",
        "--environment",
        "production",
        "--to",
        "kv-v1",
    ]);
    assert!(again.contains("known-good is kv-v1"), "{again}");
    let why = control.refused(&["deploy", "rollback", "--environment", "production"]);
    assert!(why.contains("nothing to roll back"), "{why}");
    assert_eq!(
        control.status("production-2")["current_known_good"],
        "kv-v1"
    );
    let history = control.ok(&["deploy", "status", "production-2"]);
    assert!(
        history.contains("rolled back from kv-v2 to kv-v1 by an operator"),
        "{history}"
    );
    drop(staging);
    drop(production);
}

/// The share of reads that went to each build, on one edge, over `keys`; `None`
/// when the route version changed during the measurement.
async fn shares(kv: &Kv, ns: &str, keys: &[String]) -> Option<(f64, String)> {
    let mut v2 = 0;
    let mut versions = std::collections::BTreeSet::new();
    for key in keys {
        let response = kv
            .request(
                reqwest::Method::GET,
                &format!("/namespaces/{ns}/values/{key}"),
            )
            .header("cache-control", "no-cache")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{key}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        versions.insert(header("edgekv-route-version"));
        v2 += usize::from(header("edgekv-build") == "kv-v2");
    }
    (versions.len() == 1).then(|| {
        (
            v2 as f64 / keys.len() as f64,
            versions.into_iter().next().unwrap(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_follow_a_rollout_in_the_shares_of_its_steps() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let production = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", "kv-v2"],
        &[],
    );
    let staging = Origin::start(dirs[1].path(), "staging", "stg-cred", &["kv-stg"], &[]);
    let mut control = Control::start(
        dirs[2].path(),
        &dirs[0].path().join("credentials"),
        &dirs[1].path().join("credentials"),
    );
    for id in ["kv-v1", "kv-v2"] {
        control.register(id, "production", &production.url(id));
    }
    control.bootstrap("kv-v1", "production");
    let edges = [
        Edge::start_with_control(
            dirs[3].path(),
            &control.url,
            "production",
            "prod-cred",
            &["--node-id", "edge-a"],
        ),
        Edge::start_with_control(
            dirs[4].path(),
            &control.url,
            "production",
            "prod-cred",
            &["--node-id", "edge-b"],
        ),
    ];
    for edge in &edges {
        edge.ready().await;
    }
    let kvs: Vec<Kv> = edges.iter().map(Kv::of).collect();
    let ns = kvs[0].create_namespace("rollout", "cache").await;
    let keys: Vec<String> = (0..400).map(|i| format!("k{i:03}")).collect();
    let items: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({"key": k, "value": "v"}))
        .collect();
    let response = kvs[0]
        .request(reqwest::Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    control.ok(&[
        "deploy",
        "start",
        "kv-v2",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "10:5s,50:5s,100:5s",
    ]);
    let mut measured = Vec::new();
    for (step, weight) in [(0u64, 0.10), (1, 0.50), (2, 1.00)] {
        eventually(
            Duration::from_secs(20),
            "the rollout reaches the step",
            || async { control.status("production-2")["step"] == step },
        )
        .await;
        // Hold every step but the last while the edges are measured: on a loaded
        // machine 400 reads per edge can outlast a 5 s step, and a measurement
        // would then count the next step's shares against this one's weight.
        let hold = step < 2;
        if hold {
            control.ok(&["deploy", "pause", "production-2"]);
            let status = control.status("production-2");
            assert_eq!(
                (status["phase"].as_str(), status["step"].as_u64()),
                (Some("paused"), Some(step)),
                "paused at the step measured"
            );
        }
        for kv in &kvs {
            let mut share = None;
            for _ in 0..5 {
                // Give the edges a moment to install the step's table.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if let Some(s) = shares(kv, &ns, &keys).await {
                    share = Some(s);
                    break;
                }
            }
            let (share, version) = share.expect("a measurement within one route version");
            if step == 1 {
                // One client's version key pins every one of its reads to one build.
                let mut builds = std::collections::BTreeSet::new();
                for key in keys.iter().take(100) {
                    let response = kv
                        .request(
                            reqwest::Method::GET,
                            &format!("/namespaces/{ns}/values/{key}"),
                        )
                        .header("cache-control", "no-cache")
                        .header("edgekv-version-key", "client-42")
                        .send()
                        .await
                        .unwrap();
                    builds.insert(
                        response.headers()["edgekv-build"]
                            .to_str()
                            .unwrap()
                            .to_string(),
                    );
                }
                assert_eq!(builds.len(), 1, "a version key spread over {builds:?}");
            }
            assert!(
                (share - weight).abs() < 0.08,
                "step {step}: kv-v2 got {share:.3}, weight {weight}"
            );
            // Control has this edge's ACK of the version it served.
            let wanted: u64 = version.parse().unwrap();
            eventually(
                Duration::from_secs(5),
                "both edges ACK the step's table",
                || async {
                    let status = control.status("production-2");
                    ["edge-a", "edge-b"]
                        .iter()
                        .all(|n| status["acked"][n].as_u64() >= Some(wanted))
                },
            )
            .await;
            measured.push((step, share, version));
        }
        if hold {
            control.ok(&["deploy", "resume", "production-2"]);
        }
    }
    eventually(Duration::from_secs(20), "the rollout completes", || async {
        control.status("production-2")["phase"] == "completed"
    })
    .await;
    // Both edges ACK the final version.
    eventually(
        Duration::from_secs(10),
        "both edges ACK the final table",
        || async {
            let status = control.status("production-2");
            let acked = &status["acked"];
            let a = acked["edge-a"].as_u64();
            a.is_some() && a == acked["edge-b"].as_u64() && a.unwrap() >= 4
        },
    )
    .await;
    eprintln!("measured shares of kv-v2 (step, share, route version): {measured:?}");

    // Tokens: created on control, usable at every edge; revoked, refused at every
    // edge within a second.
    let token = control
        .ok(&[
            "token",
            "create",
            "app",
            "--account",
            "acct",
            "--environment",
            "production",
        ])
        .trim()
        .to_string();
    let listed = control.ok(&["token", "list"]);
    assert!(
        listed.contains("app\tacct") && !listed.contains(&token),
        "{listed}"
    );
    let get_with = |edge: &Edge, token: String| {
        let url = format!("{}/namespaces/{ns}/values/k000", edge.base);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for edge in &edges {
        eventually(
            Duration::from_secs(5),
            "the new token works at the edge",
            || async { get_with(edge, token.clone()).await == 200 },
        )
        .await;
    }
    control.ok(&["token", "revoke", "app"]);
    let revoked = std::time::Instant::now();
    for edge in &edges {
        eventually(
            Duration::from_secs(1),
            "the revoked token is refused within a second",
            || async { get_with(edge, token.clone()).await == 401 },
        )
        .await;
    }
    eprintln!(
        "revocation refused at both edges after {:?}",
        revoked.elapsed()
    );

    // Control goes down; an edge restarted meanwhile serves with the tables it kept.
    let held: u64 = route_version_of(&kvs[0], &ns).await;
    control.proc.terminate();
    let mut edges = edges;
    edges[0].proc.terminate();
    edges[0] = edges[0].start_again();
    edges[0].ready().await;
    let kvs: Vec<Kv> = edges.iter().map(Kv::of).collect();
    assert_eq!(route_version_of(&kvs[0], &ns).await, held);
    assert_eq!(kvs[0].get(&ns, "k000").await, (200, "v".to_string()));

    // Control loses its store: the versions it issues still never go below what
    // the edges hold, because the edges report theirs when they reconnect.
    std::fs::remove_dir_all(dirs[2].path().join("state")).unwrap();
    // Same address (its args carry it): the edges reconnect to it.
    control = Control::run(control.args.clone());
    for id in ["kv-v1", "kv-v2"] {
        control.register(id, "production", &production.url(id));
    }
    control.bootstrap("kv-v1", "production");
    for kv in &kvs {
        eventually(
            Duration::from_secs(15),
            "the edge installs a newer table from the new control",
            || async { route_version_of(kv, &ns).await > held },
        )
        .await;
    }
    drop(staging);
}

/// The route version an edge answers with now.
async fn route_version_of(kv: &Kv, ns: &str) -> u64 {
    let response = kv
        .request(reqwest::Method::GET, &format!("/namespaces/{ns}/keys"))
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get("edgekv-route-version")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// `deploy status --watch` follows a deployment to its end: a line per change when
/// stdout is not a terminal, and an exit code that says how it ended (0
/// completed, 10 rolled back).
#[test]
fn deploy_status_watch_follows_a_rollout_to_its_end() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", "kv-v2", "kv-v3"],
        &[],
    );
    let control = Control::start(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &dirs[0].path().join("credentials"),
    );
    for id in ["kv-v1", "kv-v2", "kv-v3"] {
        control.register(id, "production", &origin.url(id));
    }
    control.bootstrap("kv-v1", "production");
    let start = |build: &str, steps: &str| {
        control.ok(&[
            "deploy",
            "start",
            build,
            "--environment",
            "production",
            "--min-requests",
            "0",
            "--steps",
            steps,
        ]);
    };
    start("kv-v2", "50:1s,100:1s");
    let out = control.cli(&["deploy", "status", "--watch", "--environment", "production"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("running step 1/2"), "{text}");
    assert!(text.contains("completed"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no terminal codes off a terminal: {text}"
    );

    start("kv-v3", "10:600s,100:600s");
    let watcher = support::clean(std::process::Command::new(support::BIN))
        .args(["deploy", "status", "production-3", "--watch"])
        .args(["--control", &control.url, "--admin-token", support::ADMIN])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    control.ok(&["deploy", "rollback", "--environment", "production"]);
    let out = watcher.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
