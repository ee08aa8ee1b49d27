//! The fault matrix (issue #21, item 4): real processes under a read+write load,
//! one fault per test, each judged from outside by what its clients saw.
//!
//! Every test starts an origin (build `kv-v1`) and an edge — through a TCP proxy
//! in this file where the link between them is the subject, under control where
//! control is — fills a `cache` namespace with 200 keys and reads them all at the
//! edge (held). Then a load runs through the fault and the recovery: two readers
//! of held keys (every other read `cache-control: no-cache`), a reader of keys no
//! one wrote, and a writer of new keys that records every write answered `200` or
//! `202` (acknowledged). The faults:
//!
//! | test | fault |
//! |---|---|
//! | `f1` | `kill -9` of the edge while its outbox holds writes (the origin link cut first), then the edge started again over its data dir |
//! | `f2` | `kill -9` of the origin, started again on its addresses 2 s later |
//! | `f3` | `kill -9` of control, started again 3 s later (the load uses a token control issued) |
//! | `f4` | `kill -9` of the edge and the origin together; the edge started again 1 s later with the origin still down, the origin 2 s after that |
//! | `f5` | a network cut between edge and origin: the proxy closes every connection and refuses new ones for 3 s |
//! | `f6` | a 2 s stall between edge and origin: the proxy forwards nothing, closes nothing, then resumes on the same connections |
//! | `f7` | the edge's disk fills up (a 32 MiB tmpfs, filled with a file), for 2 s with its origin link up, then 2 s with it cut too |
//!
//! Each test prints one row of this table (and a line of details):
//!
//! - **client 401/403**: answers 401 or 403 the load saw (must be 0);
//! - **acknowledged writes lost**: writes answered 200/202 that a `no-cache` read
//!   at the edge, answered by the build (`MISS`), does not return after recovery
//!   and once the edge's outbox has drained (must be 0);
//! - **held reads answered**: reads of held keys answered 200 with the right value,
//!   over those that reached the edge, from the fault until recovery (every held
//!   read that reached the edge must be a 200; a read that found no edge — `f1`,
//!   `f4` — is counted apart as "found no edge");
//! - **recovery**: from the moment the fault was lifted (the killed processes
//!   started again, the link restored, the space freed) until the edge serves
//!   normally again — a held read answered 200 and a write applied at once (200,
//!   not queued: the outbox has drained) among requests sent after that moment. For
//!   control (`f3`): until a token issued by the restarted control works at the
//!   edge.
//!
//! Print the table with
//!
//! ```sh
//! cargo test -p edgekv --test fault_matrix -- --nocapture --test-threads 1 | grep '^|'
//! ```
//!
//! `f7` mounts a tmpfs for the edge's data dir, so it needs root (or
//! `CAP_SYS_ADMIN`) on Linux; without it, it fails and says so — it is never
//! skipped. Time assertions use generous deadlines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use support::{ACCOUNT, Control, Edge, Kv, Origin, TOKEN, eventually, low_port_addr};

const ENVIRONMENT: &str = "production";
const CREDENTIAL: &str = "prod-cred";
const BUILD: &str = "kv-v1";
/// Keys filled and read at the edge before the fault: `key-NNNN` = `value-N`.
const HELD: usize = 200;
/// How long the load runs before the fault.
const BASELINE: Duration = Duration::from_secs(1);
/// The longest a client waits for one answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a recovery may take.
const RECOVERY_LIMIT: Duration = Duration::from_secs(25);
/// Margin after a fault begins before no build can answer any more (the proxy
/// closes its connections a moment after it is told to).
const SETTLE: Duration = Duration::from_millis(200);

const HELD_READ: &str = "held read";
const UNHELD_READ: &str = "unheld read";
const WRITE: &str = "write";

// ---------------------------------------------------------------------------
// The load

/// One request of the load and what came of it.
#[derive(Debug, Clone)]
struct Seen {
    kind: &'static str,
    sent: Instant,
    /// When the answer (its body too) was in.
    at: Instant,
    /// 0: no HTTP answer (no edge listening, the connection dropped, a timeout).
    status: u16,
    /// `edgekv-cache`.
    cache: String,
    /// A 200 of a held key with another value than the one written.
    wrong: bool,
    /// The body of an error answer, or why there was no answer.
    note: String,
}

/// What the load saw, and the writes it had acknowledged: key → value.
#[derive(Default)]
struct Load {
    seen: Mutex<Vec<Seen>>,
    acknowledged: Mutex<BTreeMap<String, String>>,
}

impl Load {
    /// Records an answer (or its absence); returns its status (0: none).
    async fn record(
        &self,
        kind: &'static str,
        sent: Instant,
        outcome: reqwest::Result<reqwest::Response>,
        expected: Option<&str>,
    ) -> u16 {
        let (status, cache, wrong, note) = match outcome {
            Err(err) if err.is_timeout() => (0, String::new(), false, format!("timed out: {err}")),
            Err(err) => (0, String::new(), false, err.to_string()),
            Ok(response) => {
                let status = response.status().as_u16();
                let cache = response
                    .headers()
                    .get("edgekv-cache")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                match response.text().await {
                    Ok(body) => {
                        let wrong = status == 200 && expected.is_some_and(|e| body != e);
                        let note = if status >= 300 || wrong {
                            body.chars().take(2000).collect()
                        } else {
                            String::new()
                        };
                        (status, cache, wrong, note)
                    }
                    // A write keeps the status its client saw: a 2xx counts as
                    // acknowledged even if the rest of the answer was cut.
                    Err(err) if kind == WRITE => {
                        (status, cache, false, format!("the body was cut: {err}"))
                    }
                    Err(err) => (0, cache, false, format!("the body was cut: {err}")),
                }
            }
        };
        self.seen.lock().unwrap().push(Seen {
            kind,
            sent,
            at: Instant::now(),
            status,
            cache,
            wrong,
            note,
        });
        status
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A KV client of an edge that may move: an edge started again listens on new
/// ports.
struct Api {
    base: Mutex<String>,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(edge: &Edge, token: &str) -> Arc<Api> {
        Arc::new(Api {
            base: Mutex::new(edge.base.clone()),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .unwrap(),
        })
    }

    fn point_at(&self, edge: &Edge) {
        *self.base.lock().unwrap() = edge.base.clone();
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let base = self.base.lock().unwrap().clone();
        self.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token)
    }
}

/// A load running against the rig's edge.
struct Running {
    api: Arc<Api>,
    load: Arc<Load>,
    halt: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Two readers of held keys (every other read `no-cache`), a reader of keys
    /// no one wrote (every 50 ms) and a writer of new keys (every 10 ms), with
    /// `token`.
    fn start(rig: &Rig, token: &str) -> Running {
        let api = Api::new(&rig.edge, token);
        let load = Arc::new(Load::default());
        let halt = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for reader in 0..2u64 {
            let (api, ns, load, halt) = (api.clone(), rig.ns.clone(), load.clone(), halt.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = reader;
                while !halt.load(Ordering::Relaxed) {
                    n += 1;
                    let i = (n * 37) % HELD as u64;
                    let mut request = api.request(
                        reqwest::Method::GET,
                        &format!("/namespaces/{ns}/values/key-{i:04}"),
                    );
                    if n % 2 == 0 {
                        request = request.header("cache-control", "no-cache");
                    }
                    let sent = Instant::now();
                    let outcome = request.send().await;
                    let expected = format!("value-{i}");
                    let status = load
                        .record(HELD_READ, sent, outcome, Some(expected.as_str()))
                        .await;
                    pause(status, 2).await;
                }
            }));
        }
        {
            let (api, ns, load, halt) = (api.clone(), rig.ns.clone(), load.clone(), halt.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !halt.load(Ordering::Relaxed) {
                    n += 1;
                    let path = format!("/namespaces/{ns}/values/cold-{n:05}");
                    let sent = Instant::now();
                    let outcome = api.request(reqwest::Method::GET, &path).send().await;
                    let status = load.record(UNHELD_READ, sent, outcome, None).await;
                    pause(status, 50).await;
                }
            }));
        }
        {
            let (api, ns, load, halt) = (api.clone(), rig.ns.clone(), load.clone(), halt.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !halt.load(Ordering::Relaxed) {
                    n += 1;
                    let (key, value) = (format!("w-{n:05}"), format!("written {n}"));
                    let sent = Instant::now();
                    let outcome = api
                        .request(
                            reqwest::Method::PUT,
                            &format!("/namespaces/{ns}/values/{key}"),
                        )
                        .body(value.clone())
                        .send()
                        .await;
                    let status = load.record(WRITE, sent, outcome, None).await;
                    if matches!(status, 200 | 202) {
                        load.acknowledged.lock().unwrap().insert(key, value);
                    }
                    pause(status, 10).await;
                }
            }));
        }
        Running {
            api,
            load,
            halt,
            tasks,
        }
    }

    /// Lets the load run a moment longer, then stops it.
    async fn finish(self) -> Arc<Load> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.halt.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.load
    }
}

/// A pause between requests; longer after one that found no edge, so a reader
/// does not spin while the edge is down.
async fn pause(status: u16, ms: u64) {
    let ms = if status == 0 { ms.max(20) } else { ms };
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Counts of statuses of one kind of request.
fn statuses<'a>(seen: impl IntoIterator<Item = &'a Seen>, kind: &str) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for s in seen.into_iter().filter(|s| s.kind == kind) {
        *counts.entry(s.status).or_default() += 1;
    }
    counts
}

/// Writes sent since `since` and answered 202 (queued).
fn queued_since(load: &Load, since: Instant) -> usize {
    load.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.kind == WRITE && s.sent >= since && s.status == 202)
        .count()
}

/// How long after `since` the first request of `kind` sent since then was
/// answered 200.
fn first_200(load: &Load, kind: &str, since: Instant) -> Option<Duration> {
    load.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.kind == kind && s.sent >= since && s.status == 200 && !s.wrong)
        .map(|s| s.at.duration_since(since))
        .min()
}

/// When the edge served normally again among requests sent since `since`: the
/// later of the first held read answered 200 and the first write applied at once
/// (200 — a write is queued while earlier ones wait, so this also says the
/// outbox had drained).
fn normal_since(seen: &[Seen], since: Instant) -> Option<Instant> {
    let first = |kind: &str| {
        seen.iter()
            .filter(|s| s.kind == kind && s.sent >= since && s.status == 200 && !s.wrong)
            .map(|s| s.at)
            .min()
    };
    Some(first(HELD_READ)?.max(first(WRITE)?))
}

/// Waits up to `limit` for [`normal_since`].
async fn back_to_normal(load: &Load, since: Instant, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let normal = {
            let seen = load.seen.lock().unwrap();
            normal_since(&seen, since)
        };
        if normal.is_some() {
            return normal;
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`back_to_normal`] within [`RECOVERY_LIMIT`], or a failure that says what the
/// load saw meanwhile.
async fn expect_normal(load: &Load, since: Instant, what: &str) -> Instant {
    if let Some(at) = back_to_normal(load, since, RECOVERY_LIMIT).await {
        return at;
    }
    let seen = load.seen();
    let after: Vec<&Seen> = seen.iter().filter(|s| s.sent >= since).collect();
    panic!(
        "{what}: the edge did not serve normally again within {RECOVERY_LIMIT:?} (a held read \
         answered 200 and a write applied at once, 200); since then held reads {:?}, writes {:?}; \
         the last write: {:?}",
        statuses(after.iter().copied(), HELD_READ),
        statuses(after.iter().copied(), WRITE),
        after.iter().rev().find(|s| s.kind == WRITE),
    );
}

// ---------------------------------------------------------------------------
// The rig: origin, optional proxy or control, one edge

enum Link {
    /// The edge calls the origin directly (`--origin`).
    Direct,
    /// The edge calls the origin through a [`Proxy`] (`--origin PROXY`).
    Proxied,
    /// The edge follows control (`--control`), which routes to the origin.
    Control,
}

/// Field order is drop order: the edge dies before its tmpfs is unmounted, and
/// that before the directories go.
struct Rig {
    edge: Edge,
    proxy: Option<Proxy>,
    control: Option<Control>,
    origin: Origin,
    ns: String,
    tmpfs: Option<Tmpfs>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Rig {
    /// Starts the rig, the edge's data dir on a tmpfs of `tmpfs` bytes if given;
    /// fills a `cache` namespace with [`HELD`] keys and reads each at the edge.
    async fn start(link: Link, tmpfs: Option<&str>) -> Rig {
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let origin = Origin::start(dirs[0].path(), ENVIRONMENT, CREDENTIAL, &[BUILD], &[]);
        let tmpfs = tmpfs.map(|size| Tmpfs::mount(&dirs[2].path().join("data"), size));
        let node = ["--node-id", "edge-a"];
        let (edge, proxy, control) = match link {
            Link::Direct => {
                let edge = Edge::start(
                    dirs[2].path(),
                    &origin.url(BUILD),
                    ENVIRONMENT,
                    CREDENTIAL,
                    &node,
                );
                (edge, None, None)
            }
            Link::Proxied => {
                let proxy = Proxy::start(origin.url(BUILD).trim_start_matches("http://")).await;
                let edge =
                    Edge::start(dirs[2].path(), &proxy.url(), ENVIRONMENT, CREDENTIAL, &node);
                (edge, Some(proxy), None)
            }
            Link::Control => {
                let credentials = dirs[0].path().join("credentials");
                let control = Control::start(dirs[1].path(), &credentials, &credentials);
                control.register(BUILD, ENVIRONMENT, &origin.url(BUILD));
                control.bootstrap(BUILD, ENVIRONMENT);
                let edge = Edge::start_with_control(
                    dirs[2].path(),
                    &control.url,
                    ENVIRONMENT,
                    CREDENTIAL,
                    &node,
                );
                (edge, None, Some(control))
            }
        };
        edge.ready().await;
        let kv = Kv::of(&edge);
        let ns = kv.create_namespace("matrix", "cache").await;
        let items: Vec<serde_json::Value> = (0..HELD)
            .map(|i| serde_json::json!({"key": format!("key-{i:04}"), "value": format!("value-{i}")}))
            .collect();
        let response = kv
            .request(reqwest::Method::PUT, &format!("/namespaces/{ns}/bulk"))
            .json(&items)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the bulk fill");
        for i in 0..HELD {
            let (status, body) = kv.get(&ns, &format!("key-{i:04}")).await;
            assert_eq!((status, body), (200, format!("value-{i}")), "key-{i:04}");
        }
        Rig {
            edge,
            proxy,
            control,
            origin,
            ns,
            tmpfs,
            _dirs: dirs,
        }
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("a rig with a proxy")
    }
}

async fn admin_json(edge: &Edge, path: &str) -> serde_json::Value {
    reqwest::get(format!("{}{path}", edge.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The status of a read of `key` made with `token`.
async fn read_with(edge: &Edge, ns: &str, key: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/namespaces/{ns}/values/{key}", edge.base))
        .bearer_auth(token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Creates a token of the account on control; returns the secret.
fn create_token(control: &Control, name: &str) -> String {
    control
        .ok(&[
            "token",
            "create",
            name,
            "--account",
            ACCOUNT,
            "--environment",
            ENVIRONMENT,
        ])
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------
// Judging a run

/// What a test did, for [`conclude`].
struct Fault {
    /// The row's name.
    name: &'static str,
    /// When the fault began.
    started: Instant,
    /// When it was lifted: the processes started again, the link restored, the
    /// space freed.
    lifted: Instant,
    /// When the edge served normally again.
    recovered: Instant,
    /// A span in which no build could answer: no read answered in it (and sent
    /// in it) may be a `MISS`.
    outage: Option<(Instant, Instant)>,
    /// Whether requests may find no edge (the edge itself was down).
    edge_down: bool,
    /// The statuses a write may get.
    writes: &'static [u16],
    /// Whether a write may also get a 5xx (one the edge could not keep).
    writes_5xx: bool,
    /// After the recovery figure in the table.
    suffix: &'static str,
    /// The test's own figures, for the details line.
    detail: String,
}

/// Waits for the edge's outbox to drain, reads back every acknowledged write,
/// prints the table row and the details, and asserts the matrix's rules. Returns
/// the edge's `/outbox`.
async fn conclude(rig: &Rig, load: &Load, fault: Fault) -> serde_json::Value {
    let edge = &rig.edge;
    eventually(
        Duration::from_secs(30),
        "the edge's outbox drains",
        || async { admin_json(edge, "/outbox").await["depth"] == 0 },
    )
    .await;
    let outbox = admin_json(edge, "/outbox").await;
    let acknowledged = load.acknowledged.lock().unwrap().clone();
    let lost = lost_writes(edge, &rig.ns, &acknowledged).await;
    let seen = load.seen();

    let denied: Vec<&Seen> = seen
        .iter()
        .filter(|s| matches!(s.status, 401 | 403))
        .collect();
    let reached: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.kind == HELD_READ && s.status != 0)
        .filter(|s| s.at >= fault.started && s.at <= fault.recovered)
        .collect();
    let answered = reached
        .iter()
        .filter(|s| s.status == 200 && !s.wrong)
        .count();
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &reached {
        let source = if s.cache.is_empty() {
            "-"
        } else {
            s.cache.as_str()
        };
        *sources.entry(source).or_default() += 1;
    }
    let slowest = reached
        .iter()
        .map(|s| s.at.duration_since(s.sent))
        .max()
        .unwrap_or_default();
    let held_failed: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.kind == HELD_READ && s.status != 0 && (s.status != 200 || s.wrong))
        .collect();
    let no_edge: Vec<&Seen> = seen.iter().filter(|s| s.status == 0).collect();
    let unheld = statuses(&seen, UNHELD_READ);
    let writes = statuses(&seen, WRITE);
    let bad_writes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.kind == WRITE && s.status != 0)
        .filter(|s| {
            !(fault.writes.contains(&s.status)
                || (fault.writes_5xx && (500u16..600).contains(&s.status)))
        })
        .collect();
    let answered_in_outage: Vec<&Seen> = match fault.outage {
        Some((from, to)) => seen
            .iter()
            .filter(|s| s.kind != WRITE && s.sent >= from && s.at <= to && s.cache == "MISS")
            .collect(),
        None => Vec::new(),
    };
    let recovery = fault.recovered.duration_since(fault.lifted);

    print_row(&Row {
        fault: fault.name,
        denied: denied.len(),
        lost: lost.len(),
        answered,
        reached: reached.len(),
        recovery,
        suffix: fault.suffix,
    });
    println!(
        "fault matrix, {}: {}; held reads from the fault to recovery by source {sources:?}, the \
         slowest {slowest:?}; requests that found no edge {}; unheld reads {unheld:?}; writes \
         {writes:?}, {} acknowledged; outbox replayed {}, superseded {}, duplicates {}, dead \
         letters {}; recovered {recovery:?} after the fault was lifted",
        fault.name,
        fault.detail,
        no_edge.len(),
        acknowledged.len(),
        outbox["replayed"],
        outbox["superseded"],
        outbox["duplicates"],
        outbox["dead_letter_count"],
    );

    assert!(
        denied.is_empty(),
        "{}: clients saw 401/403: {:?}",
        fault.name,
        &denied[..denied.len().min(5)]
    );
    assert!(
        lost.is_empty(),
        "{}: {} acknowledged writes lost: {:?}",
        fault.name,
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(
        outbox["dead_letter_count"], 0,
        "{}: dead letters: {outbox}",
        fault.name
    );
    assert!(
        answered > 0,
        "{}: no held read was answered from the fault to recovery",
        fault.name
    );
    assert!(
        held_failed.is_empty(),
        "{}: {} reads of held keys were not answered 200 with their value: {:?}",
        fault.name,
        held_failed.len(),
        &held_failed[..held_failed.len().min(5)]
    );
    assert!(
        unheld.keys().all(|s| matches!(*s, 0 | 404 | 503)),
        "{}: keys no one wrote are answered by a build (404) or 503, got {unheld:?}",
        fault.name
    );
    assert!(
        bad_writes.is_empty(),
        "{}: writes answered other than {:?}{}: {:?}",
        fault.name,
        fault.writes,
        if fault.writes_5xx { " or 5xx" } else { "" },
        &bad_writes[..bad_writes.len().min(5)]
    );
    assert!(
        fault.edge_down || no_edge.is_empty(),
        "{}: {} requests got no answer from an edge that was up: {:?}",
        fault.name,
        no_edge.len(),
        &no_edge[..no_edge.len().min(5)]
    );
    assert!(
        answered_in_outage.is_empty(),
        "{}: reads answered by a build while no build could answer (the fault was not real): \
         {:?}",
        fault.name,
        &answered_in_outage[..answered_in_outage.len().min(5)]
    );
    assert!(
        acknowledged.len() >= 20,
        "{}: the load wrote too little ({} acknowledged)",
        fault.name,
        acknowledged.len()
    );
    outbox
}

/// The acknowledged writes a `no-cache` read at the edge does not return as a
/// build's answer (`MISS`: the origin has it, not only this edge), four readers
/// at a time.
async fn lost_writes(
    edge: &Edge,
    ns: &str,
    acknowledged: &BTreeMap<String, String>,
) -> Vec<String> {
    let items: Vec<(String, String)> = acknowledged
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let per_task = items.len().div_ceil(4).max(1);
    let mut tasks = Vec::new();
    for chunk in items.chunks(per_task) {
        let (kv, ns, chunk) = (Kv::of(edge), ns.to_string(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut lost = Vec::new();
            for (key, value) in chunk {
                let (status, body, cache) = kv.get_with(&ns, &key, true).await;
                if status != 200 || body != value || cache != "MISS" {
                    lost.push(format!(
                        "{key}: {status} {cache} {body:?}, acknowledged {value:?}"
                    ));
                }
            }
            lost
        }));
    }
    let mut lost = Vec::new();
    for task in tasks {
        lost.extend(task.await.unwrap());
    }
    lost
}

/// One row of the table.
struct Row {
    fault: &'static str,
    denied: usize,
    lost: usize,
    answered: usize,
    reached: usize,
    recovery: Duration,
    suffix: &'static str,
}

/// Prints a row, after the table's header if no row was printed yet. Each starts
/// on a line of its own (libtest may have written `test NAME ... ` before).
fn print_row(row: &Row) {
    static HEADED: Mutex<bool> = Mutex::new(false);
    let mut headed = HEADED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = String::new();
    if !*headed {
        out.push_str(
            "\n| fault | client 401/403 | acknowledged writes lost | held reads answered (200 / reached the edge) | recovery |\
             \n|---|---|---|---|---|",
        );
        *headed = true;
    }
    out.push_str(&format!(
        "\n| {} | {} | {} | {}/{} | {:.1} s{} |",
        row.fault,
        row.denied,
        row.lost,
        row.answered,
        row.reached,
        row.recovery.as_secs_f64(),
        row.suffix
    ));
    println!("{out}");
}

// ---------------------------------------------------------------------------
// A TCP proxy between edge and origin that can cut, stall and resume

/// What the proxy lets through.
#[derive(Debug, Clone, Copy, Default)]
struct Gate {
    /// Bumped by each cut: connections accepted before it are closed.
    cuts: u64,
    /// While set the proxy's port is closed: connecting is refused.
    refusing: bool,
    /// While set no byte is forwarded on any connection, either way, and no
    /// socket is closed.
    stalled: bool,
}

/// A TCP proxy on a loopback port below the ephemeral range (it closes and opens
/// again on the same port; see [`low_port_addr`]) in front of one upstream.
struct Proxy {
    addr: String,
    gate: watch::Sender<Gate>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let addr = low_port_addr();
        let listener =
            listen(&addr).unwrap_or_else(|err| panic!("the proxy cannot listen on {addr}: {err}"));
        let (gate, watching) = watch::channel(Gate::default());
        let task = tokio::spawn(accept_loop(
            listener,
            addr.clone(),
            upstream.to_string(),
            watching,
        ));
        Proxy { addr, gate, task }
    }

    /// `http://ADDR` of the proxy.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A network cut: every connection is closed and new ones are refused until
    /// [`Proxy::restore`].
    fn cut(&self) {
        self.gate.send_modify(|g| {
            g.refusing = true;
            g.cuts += 1;
        });
    }

    /// Accepts connections again, on the same port.
    fn restore(&self) {
        self.gate.send_modify(|g| g.refusing = false);
    }

    /// Stops forwarding, on every connection and on those accepted meanwhile,
    /// without closing any.
    fn stall(&self) {
        self.gate.send_modify(|g| g.stalled = true);
    }

    /// Forwards again, on the same connections.
    fn unstall(&self) {
        self.gate.send_modify(|g| g.stalled = false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener that can be opened again on its port at once.
fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.parse().expect("a socket address"))?;
    socket.listen(1024)
}

/// Accepts connections while the gate lets it; closes the port while refusing.
async fn accept_loop(
    first: TcpListener,
    addr: String,
    upstream: String,
    mut gate: watch::Receiver<Gate>,
) {
    let mut listener = Some(first);
    loop {
        let now = *gate.borrow_and_update();
        if now.refusing {
            // The port closes: connecting is refused, and connections waiting in
            // the backlog are reset.
            listener = None;
            if gate.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            match listen(&addr) {
                Ok(open) => listener = Some(open),
                Err(err) => {
                    eprintln!("the proxy cannot listen on {addr} again yet: {err}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some(open) = listener.as_ref() else {
            continue;
        };
        tokio::select! {
            accepted = open.accept() => {
                let Ok((inbound, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let now = *gate.borrow();
                if now.refusing {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(relay(inbound, upstream.clone(), now.cuts, gate.clone()));
            }
            changed = gate.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits until `wanted` holds of the gate; false when the proxy is gone.
async fn until(gate: &mut watch::Receiver<Gate>, wanted: impl Fn(&Gate) -> bool) -> bool {
    loop {
        let now = *gate.borrow_and_update();
        if wanted(&now) {
            return true;
        }
        if gate.changed().await.is_err() {
            return false;
        }
    }
}

/// One proxied connection, accepted before cut number `epoch + 1`: two copy
/// loops, until the connection ends or a cut closes it (dropping both sockets).
async fn relay(inbound: TcpStream, upstream: String, epoch: u64, gate: watch::Receiver<Gate>) {
    let cut = move |g: &Gate| g.cuts > epoch;
    let mut closing = gate.clone();
    let outbound = tokio::select! {
        connected = TcpStream::connect(&upstream) => match connected {
            Ok(outbound) => outbound,
            // The upstream is down: the client sees its connection closed.
            Err(_) => return,
        },
        _ = until(&mut closing, cut) => return,
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (from_client, to_client) = inbound.into_split();
    let (from_upstream, to_upstream) = outbound.into_split();
    tokio::select! {
        _ = async {
            tokio::join!(
                pump(from_client, to_upstream, gate.clone()),
                pump(from_upstream, to_client, gate),
            )
        } => {}
        _ = until(&mut closing, cut) => {}
    }
}

/// Copies one direction while the proxy is not stalled. While it is, nothing is
/// read (so nothing is forwarded) and the sockets stay open; a chunk read just
/// before a stall is held until it ends, never dropped.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut gate: watch::Receiver<Gate>) {
    let flows = |g: &Gate| !g.stalled;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !until(&mut gate, flows).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = until(&mut gate, |g: &Gate| g.stalled) => continue,
        };
        let len = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(len) => len,
        };
        if !until(&mut gate, flows).await {
            return;
        }
        if to.write_all(&buf[..len]).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// A small file system for the edge's data dir, to fill up

const NEEDS_MOUNT: &str = "the disk-full test puts the edge's data dir on a small tmpfs and \
     fills it up: it must run as root (or with CAP_SYS_ADMIN; in a container --privileged or \
     --cap-add SYS_ADMIN), on Linux, with `mount` and `umount` on the PATH";

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size}");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options.as_str(), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Tmpfs {
                dir: dir.to_path_buf(),
            },
            Ok(out) => panic!(
                "{NEEDS_MOUNT}: `mount -t tmpfs -o {options} tmpfs {}` failed ({}): {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => panic!("{NEEDS_MOUNT}: cannot run `mount`: {err}"),
        }
    }

    /// Grows (or shrinks) the file system in place, its files kept.
    fn resize(&self, size: &str) {
        let options = format!("remount,size={size}");
        let out = Command::new("mount")
            .args(["-o", options.as_str()])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{NEEDS_MOUNT}: `mount -o {options} {}` failed: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy: detach it now; it goes when its last user does.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Writes zeros to `path` until the file system has no space left, in smaller
/// and smaller writes so the last pages go too; returns the bytes written.
fn fill_up(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        loop {
            match file.write(&zeros[..chunk]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err)
                    if err.kind() == std::io::ErrorKind::StorageFull
                        || err.raw_os_error() == Some(28) =>
                {
                    break;
                }
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
    }
    written
}

// ---------------------------------------------------------------------------
// The faults

/// `kill -9` of an edge whose outbox holds writes: the origin link is cut until
/// the edge has queued some (202), the edge is killed, the link restored, and
/// 1 s later the edge starts again over its data dir (on new ports, which the
/// load follows). Reads while it is down find no edge (counted apart, not as
/// errors); it replays the writes it had queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_an_edge_killed_with_queued_writes_starts_again_and_replays_them() {
    let mut rig = Rig::start(Link::Proxied, None).await;
    let run = Running::start(&rig, TOKEN);
    tokio::time::sleep(BASELINE).await;

    let started = Instant::now();
    rig.proxy().cut();
    eventually(
        Duration::from_secs(10),
        "the edge queues writes while its origin link is cut",
        || async { queued_since(&run.load, started) >= 5 },
    )
    .await;
    rig.edge.proc.kill9();
    let killed = Instant::now();
    // Every one of them was answered by the edge just killed: the new one
    // does not exist yet.
    let queued = queued_since(&run.load, started);
    rig.proxy().restore();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let lifted = Instant::now();
    rig.edge = rig.edge.start_again();
    run.api.point_at(&rig.edge);
    let recovered = expect_normal(&run.load, lifted, "the edge started again").await;
    let first_read = first_200(&run.load, HELD_READ, lifted);
    let down_for = lifted.duration_since(killed);
    let load = run.finish().await;
    let outbox = conclude(
        &rig,
        &load,
        Fault {
            name: "kill -9 edge (writes queued)",
            started,
            lifted,
            recovered,
            outage: Some((started + SETTLE, killed)),
            edge_down: true,
            writes: &[200, 202],
            writes_5xx: false,
            suffix: "",
            detail: format!(
                "{queued} writes queued when the edge was killed; down {down_for:?}; the first \
                 held read answered 200 {first_read:?} after the restart began"
            ),
        },
    )
    .await;
    let replayed = outbox["replayed"].as_u64().unwrap_or_default();
    assert!(
        replayed >= queued as u64,
        "the edge started again replayed {replayed} writes; {queued} were queued when it was \
         killed: {outbox}"
    );
}

/// `kill -9` of the origin, started again on the same addresses and store 2 s
/// later: held reads keep answering 200 (HIT or STALE), writes are queued (202),
/// and every acknowledged write is at the origin once the outbox has drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_the_origin_killed_costs_no_held_read_and_no_acknowledged_write() {
    let mut rig = Rig::start(Link::Direct, None).await;
    let run = Running::start(&rig, TOKEN);
    tokio::time::sleep(BASELINE).await;

    let started = Instant::now();
    rig.origin.proc.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let lifted = Instant::now();
    rig.origin.restart();
    let recovered = expect_normal(&run.load, lifted, "the origin started again").await;
    let queued = queued_since(&run.load, killed);
    let load = run.finish().await;
    let seen = load.seen();
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.sent >= killed && s.at <= lifted)
        .collect();
    let held_during = statuses(during.iter().copied(), HELD_READ);
    conclude(
        &rig,
        &load,
        Fault {
            name: "kill -9 origin",
            started,
            lifted,
            recovered,
            outage: Some((killed, lifted)),
            edge_down: false,
            writes: &[200, 202],
            writes_5xx: false,
            suffix: "",
            detail: format!(
                "with the origin down: held reads {held_during:?}, writes {:?}; {queued} writes \
                 queued in all",
                statuses(during.iter().copied(), WRITE)
            ),
        },
    )
    .await;
    assert!(
        during.iter().any(|s| s.kind == WRITE && s.status == 202),
        "no write was queued (202) while the origin was down"
    );
}

/// `kill -9` of control, started again on its address and state 3 s later: the
/// edge keeps serving with the tables it holds — the load's token was issued by
/// control — and takes a token issued by control after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_control_killed_leaves_the_edge_serving_with_its_last_tables() {
    let mut rig = Rig::start(Link::Control, None).await;
    let control = rig.control.as_ref().unwrap();
    let token = create_token(control, "matrix-app");
    {
        let (edge, ns) = (&rig.edge, rig.ns.as_str());
        eventually(
            Duration::from_secs(10),
            "the edge takes the token control issued",
            || async { read_with(edge, ns, "key-0000", &token).await == 200 },
        )
        .await;
    }
    let run = Running::start(&rig, &token);
    tokio::time::sleep(BASELINE).await;
    let held_version = rig.edge.status().await["route_version"].clone();

    let started = Instant::now();
    rig.control.as_mut().unwrap().proc.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let version_while_down = rig.edge.status().await["route_version"].clone();

    let lifted = Instant::now();
    let args = rig.control.as_ref().unwrap().args.clone();
    rig.control = Some(Control::run(args));
    let fresh = create_token(rig.control.as_ref().unwrap(), "after-restart");
    {
        let (edge, ns) = (&rig.edge, rig.ns.as_str());
        eventually(
            RECOVERY_LIMIT,
            "a token issued by control after its restart works at the edge",
            || async { read_with(edge, ns, "key-0000", &fresh).await == 200 },
        )
        .await;
    }
    let recovered = Instant::now();
    let load = run.finish().await;
    conclude(
        &rig,
        &load,
        Fault {
            name: "kill -9 control",
            started,
            lifted,
            recovered,
            outage: None,
            edge_down: false,
            writes: &[200],
            writes_5xx: false,
            suffix: "",
            detail: format!(
                "route table version {held_version} before, {version_while_down} with control \
                 down; recovery: until a token issued by the restarted control works at the edge"
            ),
        },
    )
    .await;
    assert_eq!(
        version_while_down, held_version,
        "the edge kept the route table it held while control was down"
    );
}

/// `kill -9` of the edge and the origin together; the edge starts again 1 s later
/// with the origin still down (it answers held keys from its disk, STALE, and
/// queues writes), the origin 2 s after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_edge_and_origin_killed_together_come_back_with_nothing_lost() {
    let mut rig = Rig::start(Link::Direct, None).await;
    let run = Running::start(&rig, TOKEN);
    tokio::time::sleep(BASELINE).await;

    let started = Instant::now();
    rig.edge.proc.kill9();
    rig.origin.proc.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let edge_back = Instant::now();
    rig.edge = rig.edge.start_again();
    run.api.point_at(&rig.edge);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first_alone = first_200(&run.load, HELD_READ, edge_back);

    let lifted = Instant::now();
    rig.origin.restart();
    let recovered = expect_normal(&run.load, lifted, "the edge and the origin started again").await;
    let load = run.finish().await;
    let seen = load.seen();
    let alone: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.sent >= edge_back && s.at <= lifted)
        .collect();
    let held_alone = statuses(alone.iter().copied(), HELD_READ);
    let writes_alone = statuses(alone.iter().copied(), WRITE);
    conclude(
        &rig,
        &load,
        Fault {
            name: "kill -9 edge + origin",
            started,
            lifted,
            recovered,
            outage: Some((killed, lifted)),
            edge_down: true,
            writes: &[200, 202],
            writes_5xx: false,
            suffix: "",
            detail: format!(
                "the edge, started again with the origin down, answered a held read 200 \
                 {first_alone:?} after its restart began; with the origin down: held reads \
                 {held_alone:?}, writes {writes_alone:?}; recovery counted from the origin's \
                 restart"
            ),
        },
    )
    .await;
    assert!(
        held_alone.get(&200).is_some_and(|n| *n > 0),
        "the edge started again with the origin down answered no held read: {held_alone:?}"
    );
    assert!(
        writes_alone.get(&202).is_some_and(|n| *n > 0),
        "the edge started again with the origin down queued no write: {writes_alone:?}"
    );
}

/// A network cut between edge and origin: the proxy closes every connection and
/// refuses new ones for 3 s, then accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f5_a_network_cut_between_edge_and_origin() {
    let rig = Rig::start(Link::Proxied, None).await;
    let run = Running::start(&rig, TOKEN);
    tokio::time::sleep(BASELINE).await;

    let started = Instant::now();
    rig.proxy().cut();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let lifted = Instant::now();
    rig.proxy().restore();
    let recovered = expect_normal(&run.load, lifted, "the link came back").await;
    let queued = queued_since(&run.load, started);
    let load = run.finish().await;
    conclude(
        &rig,
        &load,
        Fault {
            name: "network cut edge–origin (3 s)",
            started,
            lifted,
            recovered,
            outage: Some((started + SETTLE, lifted)),
            edge_down: false,
            writes: &[200, 202],
            writes_5xx: false,
            suffix: "",
            detail: format!("{queued} writes queued"),
        },
    )
    .await;
    assert!(
        queued > 0,
        "no write was queued (202) while the link was cut"
    );
}

/// A 2 s stall between edge and origin: the proxy forwards nothing either way and
/// closes nothing, then resumes on the same connections (what was sent meanwhile
/// arrives late: a write the edge gave up on may reach the origin too, and its
/// replay must then count once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f6_a_stall_between_edge_and_origin() {
    let rig = Rig::start(Link::Proxied, None).await;
    let run = Running::start(&rig, TOKEN);
    tokio::time::sleep(BASELINE).await;

    let started = Instant::now();
    rig.proxy().stall();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let lifted = Instant::now();
    rig.proxy().unstall();
    let recovered = expect_normal(&run.load, lifted, "the link resumed").await;
    let queued = queued_since(&run.load, started);
    let load = run.finish().await;
    conclude(
        &rig,
        &load,
        Fault {
            name: "stall edge–origin (2 s)",
            started,
            lifted,
            recovered,
            outage: Some((started + SETTLE, lifted)),
            edge_down: false,
            writes: &[200, 202],
            writes_5xx: false,
            suffix: "",
            detail: format!("{queued} writes queued"),
        },
    )
    .await;
}

/// The edge's disk fills up. Its data dir is a 32 MiB tmpfs (smaller than the 64
/// MiB × 1.1 that RocksDB preallocates for a write-ahead log, so no preallocated
/// log hides the full disk), filled with a file until ENOSPC: 2 s with the origin
/// link up, 2 s with it cut too (no build: a write can only be kept on the full
/// disk). Held reads keep answering 200; a write the edge cannot keep is refused
/// with a 5xx and a reason, never acknowledged and lost. Then the space is freed —
/// the file deleted and the volume grown to 256 MiB, as RocksDB resumes writes on
/// its own only once a write buffer's worth (64 MiB) is free — and the edge must
/// take writes again without a restart. Finally it is killed and started again,
/// and every write it acknowledged must be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f7_an_edge_whose_disk_fills_up() {
    let mut rig = Rig::start(Link::Proxied, Some("32m")).await;
    let run = Running::start(&rig, TOKEN);
    tokio::time::sleep(BASELINE).await;

    let filler = rig.edge.dir.join("data").join("filler");
    let started = Instant::now();
    let filled = fill_up(&filler);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    rig.proxy().cut();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let lifted = Instant::now();
    rig.proxy().restore();
    std::fs::remove_file(&filler).unwrap();
    rig.tmpfs.as_ref().unwrap().resize("256m");
    let in_place = back_to_normal(&run.load, lifted, Duration::from_secs(20)).await;
    let recovered = match in_place {
        Some(at) => at,
        None => {
            // Not in place: what a restart does, so the row still has its figures.
            rig.edge.proc.kill9();
            rig.edge = rig.edge.start_again();
            run.api.point_at(&rig.edge);
            expect_normal(
                &run.load,
                lifted,
                "the edge started again after its disk was freed",
            )
            .await
        }
    };
    let load = run.finish().await;
    // Every write it acknowledged must survive a kill -9 and a restart too.
    rig.edge.proc.kill9();
    rig.edge = rig.edge.start_again();
    rig.edge.ready().await;

    let seen = load.seen();
    let full: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.sent >= started && s.sent < lifted)
        .collect();
    let up = statuses(full.iter().copied().filter(|s| s.sent < cut), WRITE);
    let down = statuses(full.iter().copied().filter(|s| s.sent >= cut), WRITE);
    let refused: Vec<&Seen> = full
        .iter()
        .copied()
        .filter(|s| s.kind == WRITE && s.status >= 500)
        .collect();
    let reasons: BTreeMap<String, usize> = refused.iter().fold(BTreeMap::new(), |mut m, s| {
        let body: serde_json::Value = serde_json::from_str(&s.note).unwrap_or_default();
        let message = body["errors"][0]["message"]
            .as_str()
            .unwrap_or("(no message)")
            .to_string();
        *m.entry(format!("{} {message}", s.status)).or_default() += 1;
        m
    });
    conclude(
        &rig,
        &load,
        Fault {
            name: "edge disk full",
            started,
            lifted,
            recovered,
            outage: Some((cut + SETTLE, lifted)),
            // Only when it did not recover in place and was started again under load.
            edge_down: in_place.is_none(),
            writes: &[200, 202],
            writes_5xx: true,
            suffix: if in_place.is_some() { "" } else { " (restart)" },
            detail: format!(
                "{filled} bytes filled the disk; writes with the origin link up {up:?}, with it \
                 cut {down:?}; refusals {reasons:?}; recovered {}",
                if in_place.is_some() {
                    "in place"
                } else {
                    "only with a restart"
                }
            ),
        },
    )
    .await;
    assert!(
        !refused.is_empty(),
        "no write failed while the edge's disk was full ({filled} bytes filled; writes with the \
         link up {up:?}, cut {down:?}): the disk was not full"
    );
    for s in &refused {
        let body: serde_json::Value = serde_json::from_str(&s.note).unwrap_or_default();
        assert!(
            body["success"] == false
                && body["errors"][0]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
            "a write refused with a full disk came without a reason: {s:?}"
        );
    }
    assert!(
        in_place.is_some(),
        "the edge did not take writes again within 20 s of its disk being freed (the filler \
         deleted, the volume grown to 256 MiB) without a restart; with one it recovered {:?} \
         after the space was freed",
        recovered.duration_since(lifted)
    );
}
