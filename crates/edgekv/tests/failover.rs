//! Never a 401, end to end with real processes: the 2023 incident replayed against
//! two edges under load, break-glass with control dead, and the outbox across an
//! edge restart.
//!
//! Time assertions use generous deadlines; the figures each test measures are
//! printed (run with `--nocapture` to see them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{
    BIN, Control, Edge, Kv, Origin, admin_json, answered_by, builds_of, clean, eventually, fill,
    metric,
};

/// One response the load saw.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    kind: &'static str,
    status: u16,
    cache: String,
    /// How long the client waited for the answer.
    took: Duration,
}

/// What the load saw, and the writes it had acknowledged: key → value.
#[derive(Default)]
struct Load {
    seen: Mutex<Vec<Seen>>,
    acknowledged: Mutex<BTreeMap<String, String>>,
}

impl Load {
    fn record(&self, kind: &'static str, sent: Instant, response: &reqwest::Response) {
        let cache = response
            .headers()
            .get("edgekv-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            took: sent.elapsed(),
            kind,
            status: response.status().as_u16(),
            cache,
        });
    }
}

/// Runs reads of held keys (every other one `no-cache`), reads of keys no edge
/// holds, and writes of new keys against one edge until `stop`.
fn run_load(
    kv: Arc<Kv>,
    ns: String,
    name: &'static str,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for reader in 0..2u64 {
        let (kv, ns, load, stop) = (kv.clone(), ns.clone(), load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = reader;
            while !stop.load(Ordering::Relaxed) {
                n += 7;
                let key = format!("key-{:04}", (n * 37) % 1000);
                let mut request = kv.request(
                    reqwest::Method::GET,
                    &format!("/namespaces/{ns}/values/{key}"),
                );
                if n % 2 == 0 {
                    request = request.header("cache-control", "no-cache");
                }
                let sent = Instant::now();
                if let Ok(response) = request.send().await {
                    load.record("held", sent, &response);
                }
            }
        }));
    }
    {
        let (kv, ns, load, stop) = (kv.clone(), ns.clone(), load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let path = format!("/namespaces/{ns}/values/cold-{name}-{n}");
                let sent = Instant::now();
                if let Ok(response) = kv.request(reqwest::Method::GET, &path).send().await {
                    load.record("unheld", sent, &response);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let (key, value) = (format!("w-{name}-{n}"), format!("written {n} at {name}"));
            let sent = Instant::now();
            let response = kv
                .request(
                    reqwest::Method::PUT,
                    &format!("/namespaces/{ns}/values/{key}"),
                )
                .body(value.clone())
                .send()
                .await;
            if let Ok(response) = response {
                load.record("write", sent, &response);
                if matches!(response.status().as_u16(), 200 | 202) {
                    load.acknowledged.lock().unwrap().insert(key, value);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_2023_incident_replayed_never_reaches_a_client_as_a_401() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let switch = dirs[0].path().join("break-kv-v2");
    let v2 = format!("kv-v2,fault=unauthenticated;when={}", switch.display());
    let production = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", &v2],
        &[],
    );
    let staging = Origin::start(dirs[1].path(), "staging", "stg-cred", &["kv-v2-stg"], &[]);
    let control = Control::start(
        dirs[2].path(),
        &dirs[0].path().join("credentials"),
        &dirs[1].path().join("credentials"),
    );
    for (id, environment, url) in [
        ("kv-v1", "production", production.url("kv-v1")),
        ("kv-v2", "production", production.url("kv-v2")),
        ("kv-v2-stg", "staging", staging.url("kv-v2-stg")),
    ] {
        control.register(id, environment, &url);
    }
    control.bootstrap("kv-v1", "production");
    let edges: Vec<Edge> = ["edge-a", "edge-b"]
        .iter()
        .zip(&dirs[3..])
        .map(|(node, dir)| {
            Edge::start_with_control(
                dir.path(),
                &control.url,
                "production",
                "prod-cred",
                &["--node-id", node],
            )
        })
        .collect();
    for edge in &edges {
        edge.ready().await;
    }
    let kvs: Vec<Arc<Kv>> = edges.iter().map(|e| Arc::new(Kv::of(e))).collect();
    let ns = kvs[0].create_namespace("config", "cache").await;
    fill(&kvs[0], &ns, 1000).await;
    // Clients read every key at both edges: each edge now holds all 1,000.
    for kv in &kvs {
        for i in 0..1000 {
            let (status, body) = kv.get(&ns, &format!("key-{i:04}")).await;
            assert_eq!((status, body), (200, format!("value-{i}")));
        }
    }

    // (a) The 2023 deploy: a staging build sent to production is refused.
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v2-stg",
        "--environment",
        "production",
        "--steps",
        "100:0s",
    ]);
    assert!(why.contains("staging"), "{why}");

    // (b) A production build passes the pre-check and rolls out under load.
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (kv, name) in kvs.iter().zip(["a", "b"]) {
        tasks.extend(run_load(
            kv.clone(),
            ns.clone(),
            name,
            load.clone(),
            stop.clone(),
        ));
    }
    // This test is about authentication faults, not latency.
    control.start_rollout_judged_on_faults("kv-v2", "production", 5, "10:1s,50:1s,100:600s");
    control.wait_for_step("production-2", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // kv-v2 starts answering UNAUTHENTICATED to everyone.
    std::fs::write(&switch, b"").unwrap();
    let fault_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "control rolls back to kv-v1",
        || async { control.status("production-2")["phase"] == "rolled_back" },
    )
    .await;
    let rolled_back = fault_at.elapsed();
    let status = control.status("production-2");
    let reason = status["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("kv-v2"), "{reason}");
    // Every edge installs the rolled-back table, then the load goes on a while.
    eventually(Duration::from_secs(10), "edges drop kv-v2", || async {
        let mut all = true;
        for kv in &kvs {
            all &= answered_by(kv, &ns, "key-0001").await == "kv-v1"
                && answered_by(kv, &ns, "key-0002").await == "kv-v1";
        }
        all
    })
    .await;
    let settled = fault_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    for edge in &edges {
        eventually(Duration::from_secs(20), "the outbox drains", || async {
            admin_json(edge, "/outbox").await["depth"] == 0
        })
        .await;
    }

    let seen = load.seen.lock().unwrap().clone();
    let denied: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.status == 401 || s.status == 403)
        .collect();
    assert!(denied.is_empty(), "clients saw 401/403: {denied:?}");
    let held_5xx = seen
        .iter()
        .filter(|s| s.kind == "held" && s.status >= 500)
        .count();
    assert_eq!(held_5xx, 0, "held keys answered 5xx");
    let unheld: BTreeMap<u16, usize> =
        seen.iter()
            .filter(|s| s.kind == "unheld")
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.status).or_default() += 1;
                m
            });
    assert!(
        unheld.keys().all(|s| *s == 404 || *s == 503),
        "keys no edge held: answered by known-good (404: absent) or 503, got {unheld:?}"
    );
    let writes: BTreeMap<u16, usize> =
        seen.iter()
            .filter(|s| s.kind == "write")
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.status).or_default() += 1;
                m
            });
    // Every acknowledged write is there afterwards (each key written once, so
    // none can have been superseded).
    let acknowledged = load.acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 50, "the load wrote too little");
    for (key, value) in &acknowledged {
        let (status, body, _) = kvs[1].get_with(&ns, key, true).await;
        assert_eq!((status, &body), (200, value), "acknowledged write {key}");
    }
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.kind == "held" && s.at >= fault_at && s.at <= fault_at + settled)
        .collect();
    let stale = during.iter().filter(|s| s.cache == "STALE").count();
    println!(
        "incident replay: fault → rollback {rolled_back:?} (edges on kv-v1 after {settled:?}); \
         {} responses, 0 × 401/403; held-key reads during the fault: {} of {} STALE ({:.1}%); \
         unheld reads {unheld:?}; writes {writes:?}, {} acknowledged and all present; reason: {reason}",
        seen.len(),
        stale,
        during.len(),
        100.0 * stale as f64 / during.len().max(1) as f64,
        acknowledged.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_control_dead_edges_serve_and_a_break_glass_pin_takes_effect() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let keys = dirs[3].path();
    let (private, public) = (keys.join("glass.key"), keys.join("glass.pub"));
    let keygen = |private: &std::path::Path, public: &std::path::Path| {
        let out = clean(Command::new(BIN))
            .args(["break-glass", "keygen", "--private"])
            .arg(private)
            .arg("--public")
            .arg(public)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    keygen(&private, &public);
    keygen(&keys.join("other.key"), &keys.join("other.pub"));

    let production = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", "kv-v2"],
        &[],
    );
    let mut control = Control::start_with(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &dirs[0].path().join("credentials"),
        &["--break-glass-key", public.to_str().unwrap()],
    );
    for id in ["kv-v1", "kv-v2"] {
        control.register(id, "production", &production.url(id));
    }
    control.bootstrap("kv-v1", "production");
    let edge = Edge::start_with_control(
        dirs[2].path(),
        &control.url,
        "production",
        "prod-cred",
        &[
            "--node-id",
            "edge-a",
            "--break-glass-key",
            public.to_str().unwrap(),
        ],
    );
    edge.ready().await;
    let kv = Kv::of(&edge);
    let ns = kv.create_namespace("config", "cache").await;
    fill(&kv, &ns, 200).await;
    control.ok(&[
        "deploy",
        "start",
        "kv-v2",
        "--environment",
        "production",
        "--min-requests",
        "0",
        "--steps",
        "50:600s,100:600s",
    ]);
    let sample: Vec<String> = (0..40).map(|i| format!("key-{i:04}")).collect();
    eventually(
        Duration::from_secs(20),
        "the edge splits reads between kv-v1 and kv-v2",
        || async { builds_of(&kv, &ns, &sample).await.len() == 2 },
    )
    .await;

    // Control dies mid-rollout: the edge keeps serving with its last good table.
    control.proc.kill9();
    for key in &sample {
        assert_eq!(kv.get(&ns, key).await.0, 200);
    }
    assert_eq!(builds_of(&kv, &ns, &sample).await.len(), 2);

    let glass = |admin: &str, key: &std::path::Path, environment: &str, action: &str| {
        let mut command = clean(Command::new(BIN));
        command
            .args(["break-glass", action, "--key-file"])
            .arg(key)
            .args(["--edge", admin, "--environment", environment]);
        if action == "pin" {
            command.args(["--build", "kv-v1", "--ttl", "10m"]);
        }
        command.output().unwrap()
    };
    // Orders the edge must refuse: another key, another environment.
    let forged = glass(&edge.admin, &keys.join("other.key"), "production", "pin");
    assert!(!forged.status.success());
    assert!(
        String::from_utf8_lossy(&forged.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&forged.stderr)
    );
    let elsewhere = glass(&edge.admin, &private, "staging", "pin");
    assert!(!elsewhere.status.success());
    assert_eq!(
        builds_of(&kv, &ns, &sample).await.len(),
        2,
        "refused orders change nothing"
    );

    let ordered = Instant::now();
    let pinned = glass(&edge.admin, &private, "production", "pin");
    assert!(
        pinned.status.success(),
        "{}",
        String::from_utf8_lossy(&pinned.stderr)
    );
    let mut effect = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if builds_of(&kv, &ns, &sample).await == ["kv-v1".to_string()].into() {
            effect = Some(ordered.elapsed());
            break;
        }
    }
    let effect = effect.expect("every read goes to the pinned build");
    assert_eq!(edge.status().await["pinned"]["build"], "kv-v1");
    assert_eq!(metric(&edge, "edgekv_pinned").await, 1.0);

    // The pin survives an edge restart, control still down.
    let mut before = edge;
    before.proc.terminate();
    let edge = before.start_again();
    edge.ready().await;
    let kv = Kv::of(&edge);
    assert_eq!(
        builds_of(&kv, &ns, &sample).await,
        ["kv-v1".to_string()].into()
    );

    // Control comes back: it shows the pin and holds the rollout at its step.
    control = Control::run(control.args.clone());
    eventually(Duration::from_secs(20), "control shows the pin", || async {
        control.status("production-2")["pins"]["edge-a"]
            .as_str()
            .is_some_and(|p| p.starts_with("kv-v1"))
    })
    .await;
    assert!(
        control.status("production-2")["health"]
            .as_str()
            .unwrap()
            .contains("pinned"),
        "promotions are held while the pin lasts"
    );

    // With admin auth down (no token), control's Rollback takes a break-glass key.
    let rollback = |key: &std::path::Path| {
        clean(Command::new(BIN))
            .args([
                "deploy",
                "rollback",
                "--environment",
                "production",
                "--control",
                &control.url,
                "--break-glass-key-file",
            ])
            .arg(key)
            .output()
            .unwrap()
    };
    let forged = rollback(&keys.join("other.key"));
    assert!(!forged.status.success());
    assert_eq!(control.status("production-2")["phase"], "running");
    let out = rollback(&private);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(control.status("production-2")["phase"], "rolled_back");

    // An unpin naming another pin than the one in force is refused, and the
    // refusal names both; the pin stays. (The unpin below names none: the CLI
    // reads the pin in force from the edge's `/status`.)
    let in_force = edge.status().await["pinned"]["nonce"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(in_force.len(), 32, "{in_force}");
    let other = "0".repeat(32);
    let wrong = clean(Command::new(BIN))
        .args(["break-glass", "unpin", "--key-file"])
        .arg(&private)
        .args([
            "--edge",
            edge.admin.as_str(),
            "--environment",
            "production",
            "--pin",
            other.as_str(),
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains(&in_force) && stderr.contains(&other),
        "{stderr}"
    );
    assert_eq!(edge.status().await["pinned"]["build"], "kv-v1");

    // Unpinned, the route table decides again.
    let unpinned = glass(&edge.admin, &private, "production", "unpin");
    assert!(
        unpinned.status.success(),
        "{}",
        String::from_utf8_lossy(&unpinned.stderr)
    );
    assert!(edge.status().await["pinned"].is_null());
    println!("break-glass: pin → every read on the pinned build in {effect:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_survive_an_edge_restart_and_replay_in_order() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut origin = Origin::start(dirs[0].path(), "production", "cred", &["kv"], &[]);
    let url = origin.url("kv");
    let a = Edge::start(
        dirs[1].path(),
        &url,
        "production",
        "cred",
        &["--node-id", "a"],
    );
    let b = Edge::start(
        dirs[2].path(),
        &url,
        "production",
        "cred",
        &["--node-id", "b"],
    );
    a.ready().await;
    b.ready().await;
    let (kva, kvb) = (Kv::of(&a), Kv::of(&b));
    let ns = kva.create_namespace("keep", "cache").await;
    let doomed = kva.create_namespace("doomed", "cache").await;
    assert_eq!(kva.put(&ns, "contested", "before").await, 200);
    assert_eq!(kva.put(&ns, "del-me", "x").await, 200);

    // The origin goes away: A queues what it is given, answering 202.
    origin.proc.terminate();
    let queued = |response: &reqwest::Response| {
        response.status() == 202
            && response
                .headers()
                .get("edgekv-write")
                .is_some_and(|v| v == "queued")
    };
    for i in 0..20 {
        let response = kva
            .request(
                reqwest::Method::PUT,
                &format!("/namespaces/{ns}/values/q-{i:02}"),
            )
            .body(format!("queued {i}"))
            .send()
            .await
            .unwrap();
        assert!(queued(&response), "write {i}: {}", response.status());
    }
    for (namespace, key, value) in [
        (&ns, "contested", "older, from A"),
        (&doomed, "poison", "p"),
    ] {
        let response = kva
            .request(
                reqwest::Method::PUT,
                &format!("/namespaces/{namespace}/values/{key}"),
            )
            .body(value)
            .send()
            .await
            .unwrap();
        assert!(queued(&response), "{key}: {}", response.status());
    }
    assert_eq!(kva.delete(&ns, "del-me").await, 202);
    // Visible at A at once.
    assert_eq!(kva.get(&ns, "q-07").await, (200, "queued 7".to_string()));
    assert_eq!(kva.get(&ns, "del-me").await.0, 404);
    assert_eq!(metric(&a, "edgekv_outbox_depth").await, 23.0);

    // A stops with 23 writes queued; the origin comes back; meanwhile B writes the
    // contested key (newer) and deletes the namespace of the poison write.
    let mut a = a;
    a.proc.terminate();
    origin.restart();
    eventually(
        Duration::from_secs(20),
        "B reaches the origin again",
        || async { kvb.put(&ns, "contested", "newer, from B").await == 200 },
    )
    .await;
    let response = kvb
        .request(reqwest::Method::DELETE, &format!("/namespaces/{doomed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A starts again and replays.
    let a = a.start_again();
    a.ready().await;
    eventually(Duration::from_secs(20), "A's outbox drains", || async {
        admin_json(&a, "/outbox").await["depth"] == 0
    })
    .await;
    let outbox = admin_json(&a, "/outbox").await;
    assert_eq!(outbox["dead_letter_count"], 1, "{outbox}");
    assert_eq!(outbox["dead_letters"][0]["keys"][0], "poison", "{outbox}");
    assert_eq!(outbox["superseded"], 1, "{outbox}");
    assert_eq!(metric(&a, "edgekv_outbox_dead_letters").await, 1.0);
    assert_eq!(metric(&a, "edgekv_outbox_superseded_total").await, 1.0);

    let kva = Kv::of(&a);
    for i in 0..20 {
        let (status, body, _) = kvb.get_with(&ns, &format!("q-{i:02}"), true).await;
        assert_eq!((status, body), (200, format!("queued {i}")));
    }
    assert_eq!(kvb.get_with(&ns, "del-me", true).await.0, 404);
    // The older queued write did not overwrite the newer one, here or at A.
    assert_eq!(
        kvb.get_with(&ns, "contested", true).await.1,
        "newer, from B"
    );
    eventually(
        Duration::from_secs(5),
        "A serves the newer value",
        || async { kva.get(&ns, "contested").await.1 == "newer, from B" },
    )
    .await;
}

/// A metric's labelled value from an edge's `/metrics`, e.g. the data set in
/// `edgekv_data_set_info{data_set="..."} 1`.
async fn data_set_of(edge: &Edge) -> String {
    let text = reqwest::get(format!("{}/metrics", edge.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("edgekv_data_set_info{data_set=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string()
}

/// The data set a build is registered with, as `build list` shows it.
fn registered_data_set(control: &Control, build: &str) -> String {
    let text = control.ok(&["build", "list", "--environment", "production", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["build_id"] == build)
        .map(|b| b["data_set"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Production as the data-set tests start it: build kv-v1 over the store in
/// `dirs[0]`, control in `dirs[1]` with kv-v1 known-good, and two edges (in
/// `dirs[2]`, `dirs[3]`) following it, ready.
async fn production(dirs: &[tempfile::TempDir]) -> (Origin, Control, Vec<Edge>) {
    let v1 = Origin::start(dirs[0].path(), "production", "prod-cred", &["kv-v1"], &[]);
    let control = Control::start(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &dirs[0].path().join("credentials"),
    );
    control.register("kv-v1", "production", &v1.url("kv-v1"));
    control.bootstrap("kv-v1", "production");
    let edges: Vec<Edge> = ["edge-a", "edge-b"]
        .iter()
        .zip(&dirs[2..4])
        .map(|(node, dir)| {
            Edge::start_with_control(
                dir.path(),
                &control.url,
                "production",
                "prod-cred",
                &["--node-id", node],
            )
        })
        .collect();
    for edge in &edges {
        edge.ready().await;
    }
    (v1, control, edges)
}

/// The 2023 outage with 404 in place of 401: a correctly stamped production build
/// over the wrong store. An empty store is refused at the pre-check, naming both
/// data sets; a build that passed its pre-check and then came back over an empty
/// volume at 10% under load never costs a client a read of an existing key, is
/// rolled back within seconds with the reason, and no edge follows its data set.
///
/// Before data-set ids, the empty store passed every pre-check and its NOT_FOUND
/// answers went to clients as 404s (about a third of the reads of existing keys
/// in a 10% → 50% → 100% rollout), and the rollout completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_over_the_wrong_data_never_answers_for_existing_keys() {
    let dirs: Vec<tempfile::TempDir> = (0..7).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut v1, control, edges) = production(&dirs).await;
    let kvs: Vec<Arc<Kv>> = edges.iter().map(|e| Arc::new(Kv::of(e))).collect();
    let ns = kvs[0].create_namespace("config", "cache").await;
    fill(&kvs[0], &ns, 1000).await;
    for kv in &kvs {
        for i in 0..1000 {
            assert_eq!(kv.get(&ns, &format!("key-{i:04}")).await.0, 200);
        }
    }
    let production = registered_data_set(&control, "kv-v1");
    assert_eq!(production.len(), 32, "control learnt kv-v1's data set");
    for edge in &edges {
        assert_eq!(
            data_set_of(edge).await,
            production,
            "edges follow kv-v1's data set"
        );
    }

    // (a) A build over an empty store is refused at the pre-check, naming both ids.
    let empty = Origin::start(dirs[4].path(), "production", "prod-cred", &["kv-v3"], &[]);
    control.register("kv-v3", "production", &empty.url("kv-v3"));
    let other = registered_data_set(&control, "kv-v3");
    assert!(other.len() == 32 && other != production, "{other}");
    let why = control.refused(&[
        "deploy",
        "start",
        "kv-v3",
        "--environment",
        "production",
        "--steps",
        "100:0s",
    ]);
    assert!(
        why.contains(&production) && why.contains(&other) && why.contains("--new-data-set"),
        "{why}"
    );

    // (b) kv-v2 runs over a restored copy of the store (the same data set): it
    // passes its pre-check and is deployed at 10%.
    v1.proc.terminate();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(dirs[0].path().join("data"))
        .arg(dirs[5].path().join("data"))
        .status()
        .unwrap();
    assert!(copy.success());
    v1.restart();
    let mut v2 = Origin::start(dirs[5].path(), "production", "prod-cred", &["kv-v2"], &[]);
    control.register("kv-v2", "production", &v2.url("kv-v2"));
    assert_eq!(registered_data_set(&control, "kv-v2"), production);
    control.start_rollout_judged_on_faults("kv-v2", "production", 5, "10:600s,100:600s");
    let sample: Vec<String> = (0..60).map(|i| format!("key-{i:04}")).collect();
    for kv in &kvs {
        eventually(
            Duration::from_secs(20),
            "the edge sends some reads to kv-v2",
            || async { builds_of(kv, &ns, &sample).await.contains("kv-v2") },
        )
        .await;
    }

    // (c) kv-v2 dies and comes back over an empty volume; then the load runs. (The
    // load starts once it is back: requests during the restart would fail as
    // "unavailable" and could roll it back for that first, which is not what
    // this test is about.)
    v2.proc.kill9();
    std::fs::write(dirs[6].path().join("credentials"), "prod-cred\n").unwrap();
    v2.dir = dirs[6].path().to_path_buf();
    v2.restart();
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (kv, name) in kvs.iter().zip(["a", "b"]) {
        tasks.extend(run_load(
            kv.clone(),
            ns.clone(),
            name,
            load.clone(),
            stop.clone(),
        ));
    }
    let fault_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "control rolls kv-v2 back",
        || async { control.status("production-2")["phase"] == "rolled_back" },
    )
    .await;
    let rolled_back = fault_at.elapsed();
    let status = control.status("production-2");
    let reason = status["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("kv-v2") && reason.contains("data set"),
        "{reason}"
    );
    assert_eq!(status["current_known_good"], "kv-v1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let seen = load.seen.lock().unwrap().clone();
    let held: BTreeMap<u16, usize> =
        seen.iter()
            .filter(|s| s.kind == "held")
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.status).or_default() += 1;
                m
            });
    assert!(
        held.keys().all(|s| *s == 200) && !held.is_empty(),
        "reads of existing keys: {held:?}"
    );
    let writes: BTreeMap<u16, usize> =
        seen.iter()
            .filter(|s| s.kind == "write")
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s.status).or_default() += 1;
                m
            });
    assert!(
        writes.keys().all(|s| *s == 200 || *s == 202),
        "writes: {writes:?}"
    );
    for edge in &edges {
        eventually(Duration::from_secs(20), "the outbox drains", || async {
            admin_json(edge, "/outbox").await["depth"] == 0
        })
        .await;
    }
    let acknowledged = load.acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 20, "the load wrote too little");
    for (key, value) in &acknowledged {
        let (status, body, _) = kvs[1].get_with(&ns, key, true).await;
        assert_eq!((status, &body), (200, value), "acknowledged write {key}");
    }
    for edge in &edges {
        assert_eq!(
            data_set_of(edge).await,
            production,
            "no edge follows the empty store"
        );
    }
    assert!(
        rolled_back < Duration::from_secs(5),
        "rolled back {rolled_back:?} after the fault"
    );
    println!(
        "wrong data set: fault → rollback {rolled_back:?}; held reads {held:?}; writes {writes:?}, \
         {} acknowledged and all present; reason: {reason}",
        acknowledged.len()
    );
}

/// A build that turns slow (3 s an answer) at 100% under load: reads that reach
/// it are hedged to known-good after a delay derived from known-good's latency
/// (at most 250 ms), so no client read waits for the slow build; the late answers
/// make it an outlier the edges eject, and control rolls it back at once.
///
/// Before hedging, the rollback came ~10 s after the fault (when the 3 s answers
/// finally counted against the p99 ceiling) and every read that reached the build
/// waited for the 2 s deadline first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_build_is_hedged_around_and_rolled_back_within_seconds() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let switch = dirs[0].path().join("slow-kv-v2");
    let v2 = format!("kv-v2,fault=latency=3s;when={}", switch.display());
    let production = Origin::start(
        dirs[0].path(),
        "production",
        "prod-cred",
        &["kv-v1", &v2],
        &[],
    );
    let control = Control::start(
        dirs[1].path(),
        &dirs[0].path().join("credentials"),
        &dirs[0].path().join("credentials"),
    );
    for id in ["kv-v1", "kv-v2"] {
        control.register(id, "production", &production.url(id));
    }
    control.bootstrap("kv-v1", "production");
    let edges: Vec<Edge> = ["edge-a", "edge-b"]
        .iter()
        .zip(&dirs[2..])
        .map(|(node, dir)| {
            Edge::start_with_control(
                dir.path(),
                &control.url,
                "production",
                "prod-cred",
                &["--node-id", node],
            )
        })
        .collect();
    for edge in &edges {
        edge.ready().await;
    }
    let kvs: Vec<Arc<Kv>> = edges.iter().map(|e| Arc::new(Kv::of(e))).collect();
    let ns = kvs[0].create_namespace("config", "cache").await;
    fill(&kvs[0], &ns, 1000).await;
    for kv in &kvs {
        for i in 0..1000 {
            assert_eq!(kv.get(&ns, &format!("key-{i:04}")).await.0, 200);
        }
    }
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (kv, name) in kvs.iter().zip(["a", "b"]) {
        tasks.extend(run_load(
            kv.clone(),
            ns.clone(),
            name,
            load.clone(),
            stop.clone(),
        ));
    }
    control.ok(&[
        "deploy",
        "start",
        "kv-v2",
        "--environment",
        "production",
        "--min-requests",
        "5",
        "--steps",
        "10:1s,50:1s,100:600s",
    ]);
    control.wait_for_step("production-2", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // kv-v2 turns slow: every answer 3 s late.
    std::fs::write(&switch, b"").unwrap();
    let fault_at = Instant::now();
    eventually(
        Duration::from_secs(30),
        "control rolls kv-v2 back",
        || async { control.status("production-2")["phase"] == "rolled_back" },
    )
    .await;
    let rolled_back = fault_at.elapsed();
    let reason = control.status("production-2")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let seen = load.seen.lock().unwrap().clone();
    let reads: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.kind != "write" && s.at >= fault_at)
        .collect();
    let failed: Vec<&&Seen> = reads
        .iter()
        .filter(|s| !(s.status == 200 || (s.kind == "unheld" && s.status == 404)))
        .collect();
    assert!(
        failed.is_empty(),
        "reads failed during the slow build: {failed:?}"
    );
    let slowest = reads.iter().map(|s| s.took).max().unwrap_or_default();
    let mut took: Vec<Duration> = reads.iter().map(|s| s.took).collect();
    took.sort();
    let p99 = took
        .get(took.len().saturating_mul(99) / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "slow build: fault → rollback {rolled_back:?}; {} reads after the fault, p99 {p99:?}, \
         slowest {slowest:?}; reason: {reason}",
        reads.len()
    );
    assert!(
        reason.contains("kv-v2") && (reason.contains("hedge") || reason.contains("slow")),
        "{reason}"
    );
    assert!(
        rolled_back < Duration::from_secs(5),
        "rolled back {rolled_back:?} after the fault"
    );
    // Hedge delay (≤ 250 ms) plus known-good's answer, with room for a loaded
    // machine; the slow build's answers take 3 s.
    assert!(
        slowest < Duration::from_millis(1500),
        "a read waited {slowest:?}"
    );
}

/// A real migration, through control, to a build over another store: named with
/// `--new-data-set`, it passes its pre-check, goes to 100% and completes. Every
/// edge then follows the new data set, holds nothing of the old one (a full
/// namespace of it is gone, not served from what the edge kept), and reads and
/// writes the new one's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_to_another_data_set_moves_every_edge() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let (_v1, control, edges) = production(&dirs).await;
    let kvs: Vec<Kv> = edges.iter().map(Kv::of).collect();
    let old = kvs[0].create_namespace("settings", "full").await;
    fill(&kvs[0], &old, 50).await;
    for kv in &kvs {
        eventually(
            Duration::from_secs(20),
            "the edge holds the old keys",
            || async { kv.get(&old, "key-0049").await == (200, "value-49".to_string()) },
        )
        .await;
    }
    let production = registered_data_set(&control, "kv-v1");

    // The new store: another origin's, its own data set.
    let v2 = Origin::start(dirs[4].path(), "production", "prod-cred", &["kv-v2"], &[]);
    control.register("kv-v2", "production", &v2.url("kv-v2"));
    let new = registered_data_set(&control, "kv-v2");
    assert!(new.len() == 32 && new != production, "{new}");
    let started = Instant::now();
    control.deploy_at_once("kv-v2", "production", &["--new-data-set", &new]);
    for edge in &edges {
        eventually(
            Duration::from_secs(30),
            "the edge follows the new data set",
            || async { data_set_of(edge).await == new },
        )
        .await;
    }
    let migrated_in = started.elapsed();
    // Nothing of the old data set is served: its namespace is not the new one's.
    let mut answers = Vec::new();
    for kv in &kvs {
        let (status, body) = kv.get(&old, "key-0001").await;
        assert_ne!(
            (status, body.as_str()),
            (200, "value-1"),
            "an edge served the old data set's key"
        );
        answers.push(status);
    }
    // The new data set is read and written at every edge.
    let fresh = kvs[1].create_namespace("settings", "full").await;
    assert_eq!(kvs[1].put(&fresh, "k", "new-value").await, 200);
    for kv in &kvs {
        eventually(
            Duration::from_secs(20),
            "the edge serves the new data set's key",
            || async { kv.get(&fresh, "k").await == (200, "new-value".to_string()) },
        )
        .await;
    }
    println!(
        "migration {production} -> {new} in {:?}; the old namespace's key now answers {answers:?}",
        migrated_in
    );
}
