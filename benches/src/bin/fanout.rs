//! Control's fan-out: how long a route change takes to reach every edge, what it
//! costs control, and what a reconnect storm does (issue #20, item 3).
//!
//! One process holds a real control (its `Control` gRPC service on loopback, its
//! state file, its driver), one origin with builds `v1` and `v2` (the
//! deployments' health probes need real builds) and N simulated edges. Each
//! simulated edge is a `StreamRoutes` stream, as an edge opens it (a first
//! `RouteAck` naming the node and the version it holds, the environment's
//! credential), that records when each table arrives and ACKs it. The streams
//! share a few HTTP/2 connections (at most 125 streams each), so that a
//! thousand edges do not need a thousand sockets; a real edge has a connection
//! of its own.
//!
//! A push is a change of the route version: a deployment of `v2` (two steps,
//! each baking ten minutes, thresholds that hold it inconclusive without
//! traffic) is paused and resumed in turn, and each of those issues a new
//! version. For each push the benchmark notes the instant before the call and
//! waits until every edge holds that version (or a timeout).
//!
//! Figures:
//! - push → last edge: per push, the time until the slowest edge had it.
//! - push → an edge: over every (edge, push) delivery.
//! - control CPU per push: control runs on its own tokio runtime, whose
//!   threads are named `control`; their CPU time (`/proc/self/task/*/stat`)
//!   over the pushes, less control's idle rate with the streams open, per push.
//!   The whole process's CPU per delivery is printed beside it: it includes the
//!   simulated edges' own work, so it is an upper bound.
//! - resident memory before the streams and with them, per edge (both ends of
//!   each stream live in this process: an upper bound for control's share).
//! - a reconnect storm: 100 streams closed and reopened, each saying it holds
//!   the current version. Control must not issue a new version for it (it used
//!   to, and pushed that version to the whole fleet).
//!
//! `fanout [EDGES] [PUSHES] [TICK_MS]` (defaults 1000 edges, 20 pushes, control's
//! production tick of 500 ms). Prints a markdown section for
//! `benches/RESULTS.md`. Run with `make bench-fanout` (it builds the `bench`
//! profile first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use edgekv_control::health::Thresholds;
use edgekv_control::model::{Build, Step};
use edgekv_control::{ControlConfig, RunningControl};
use edgekv_proto::v1::{self, control_client::ControlClient};
use hdrhistogram::Histogram;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

const ENV: &str = "production";
const TENANT: &str = "production";
const CREDENTIAL: &str = "bench-credential";
/// Streams per HTTP/2 connection, at most (hyper's servers default to 200
/// concurrent streams per connection; tonic's lifts the limit).
const STREAMS_PER_CONNECTION: usize = 125;
/// Streams closed and reopened in the reconnect storm.
const RECONNECTS: usize = 100;
/// How long a push may take to reach every edge before the run stops pushing.
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A pause between pushes, so that one push's ACKs are in before the next.
const GAP: Duration = Duration::from_millis(50);
/// The prefix of the names of control's threads.
const CONTROL_THREADS: &str = "control";

type Authorization = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// What one simulated edge saw.
struct Slot {
    /// The highest route version it received.
    latest: AtomicU64,
    /// How many tables it received, over all its streams.
    tables: AtomicU64,
    /// Each table's version and when it arrived, in order.
    received: Mutex<Vec<(u64, Instant)>>,
    /// Why its last stream failed, if it did.
    failed: Mutex<Option<String>>,
}

impl Slot {
    fn new(capacity: usize) -> Self {
        Slot {
            latest: AtomicU64::new(0),
            tables: AtomicU64::new(0),
            received: Mutex::new(Vec::with_capacity(capacity)),
            failed: Mutex::new(None),
        }
    }
}

fn node_id(node: usize) -> String {
    format!("sim-{node}")
}

/// The edge's first message (the version it holds) and its ACKs.
fn ack(node: usize, version: u64) -> v1::RouteAck {
    v1::RouteAck {
        node_id: node_id(node),
        environment: ENV.into(),
        tenant: TENANT.into(),
        version,
        ..Default::default()
    }
}

/// One simulated edge: opens its route stream holding `holds`, then records and
/// ACKs every table until the stream ends or the task is aborted.
async fn edge(
    channel: Channel,
    node: usize,
    authorization: Authorization,
    holds: u64,
    slot: Arc<Slot>,
) {
    if let Err(err) = follow(channel, node, authorization, holds, &slot).await {
        *slot.failed.lock().unwrap() = Some(format!("{err:#}"));
    }
}

async fn follow(
    channel: Channel,
    node: usize,
    authorization: Authorization,
    holds: u64,
    slot: &Slot,
) -> anyhow::Result<()> {
    let (acks, rx) = tokio::sync::mpsc::channel(16);
    acks.send(ack(node, holds)).await?;
    let mut request = Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", authorization);
    let mut client = ControlClient::new(channel);
    let mut tables = client.stream_routes(request).await?.into_inner();
    while let Some(table) = tables.message().await? {
        let at = Instant::now();
        slot.received.lock().unwrap().push((table.version, at));
        slot.latest.fetch_max(table.version, Ordering::AcqRel);
        slot.tables.fetch_add(1, Ordering::AcqRel);
        acks.send(ack(node, table.version)).await?;
    }
    Ok(())
}

/// Waits until `done` holds, checking every millisecond; false at the timeout.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How many streams failed, and the first reason.
fn failures(slots: &[Arc<Slot>]) -> String {
    let failed: Vec<String> = slots
        .iter()
        .filter_map(|s| s.failed.lock().unwrap().clone())
        .collect();
    match failed.first() {
        Some(first) => format!("{} streams failed, the first with: {first}", failed.len()),
        None => "no stream failed".into(),
    }
}

/// User and system CPU seconds so far: of control's threads and of the whole
/// process.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    control: f64,
    process: f64,
}

impl Cpu {
    fn now() -> anyhow::Result<Cpu> {
        Ok(Cpu {
            control: threads_cpu(CONTROL_THREADS)?,
            process: stat_seconds(&std::fs::read_to_string("/proc/self/stat")?)?,
        })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            control: self.control - before.control,
            process: self.process - before.process,
        }
    }
}

/// utime + stime of a `/proc` stat file, in seconds.
fn stat_seconds(stat: &str) -> anyhow::Result<f64> {
    // Fields after the command name (which may hold spaces) start at ") ";
    // utime is the 12th of them, stime the 13th.
    let rest = stat.rsplit_once(") ").context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // In ticks; CLK_TCK is 100 on every Linux this runs on.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The CPU seconds of this process's live threads whose name starts with
/// `prefix` (a runtime's threads do not exit while it runs).
fn threads_cpu(prefix: &str) -> anyhow::Result<f64> {
    let mut seconds = 0.0;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once(" (")
            .and_then(|(_, rest)| rest.rsplit_once(") "))
            .map_or("", |(name, _)| name);
        if name.starts_with(prefix) {
            seconds += stat_seconds(&stat)?;
        }
    }
    Ok(seconds)
}

/// This process's resident memory, bytes.
fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

fn shell(command: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The machine, as RESULTS.md names it.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown memory".to_string(),
            |kb| format!("{} GiB", kb / (1024 * 1024)),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} × {model}, {memory}, kernel {}; {}; edgekv {}; `bench` profile",
        kernel.trim(),
        shell("rustc -V"),
        env!("CARGO_PKG_VERSION"),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// p50 / p99 / max of a histogram of µs, in ms.
fn quantiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "none".into();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    )
}

struct Setup {
    edges: usize,
    pushes: usize,
    tick_ms: u64,
}

async fn run(control_runtime: tokio::runtime::Handle, setup: Setup) -> anyhow::Result<String> {
    let Setup {
        edges,
        pushes,
        tick_ms,
    } = setup;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("admin"), "admin\n")?;
    std::fs::write(dir.path().join("credential"), format!("{CREDENTIAL}\n"))?;

    // Control on its own runtime: its listener, streams and driver run on the
    // threads named `control`.
    let config = ControlConfig {
        grpc: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("control"),
        admin_token_file: dir.path().join("admin"),
        credentials: vec![(ENV.into(), dir.path().join("credential"))],
        tick_ms,
        break_glass_key: None,
        tls: None,
        tls_ca: None,
        state: None,
        http: None,
        http_any_port_if_taken: false,
    };
    let running = control_runtime
        .spawn(async move { RunningControl::start(config).await })
        .await?
        .map_err(anyhow::Error::msg)?;
    let origin = edgekv_origin::RunningOrigin::start(
        edgekv_origin::OriginConfig {
            data_dir: dir.path().join("origin"),
            environment: ENV.into(),
            tenant: TENANT.into(),
            credential_file: dir.path().join("credential"),
            builds: vec![
                "v1=127.0.0.1:0".parse().unwrap(),
                "v2=127.0.0.1:0".parse().unwrap(),
            ],
            sync_writes: false,
            ..edgekv_origin::OriginConfig::default()
        },
        Arc::new(edgekv_kv::SystemClock),
    )
    .await?;
    let controller = running.controller().clone();
    for id in ["v1", "v2"] {
        controller.register_build(Build {
            build_id: id.into(),
            version: id.into(),
            environment: ENV.into(),
            tenant: TENANT.into(),
            artifact_digest: String::new(),
            endpoints: vec![origin.url(id).context("the origin has no such build")?],
            data_set: String::new(),
        })?;
    }
    // Bootstrap v1, promoted on bake time alone (no edge reports traffic here).
    controller
        .create_deployment_with(
            ENV,
            TENANT,
            "v1",
            vec![Step {
                weight_bp: 10_000,
                bake_ms: 0,
            }],
            Thresholds {
                min_requests: 0,
                ..Default::default()
            },
            None,
        )
        .await?;
    let bootstrapped = wait_until(Duration::from_secs(10), || {
        controller.known_good(ENV).as_deref() == Some("v1")
            && controller
                .deployments(Some(ENV))
                .iter()
                .all(|d| !d.phase.is_active())
    })
    .await;
    if !bootstrapped {
        bail!("the bootstrap deployment of v1 did not complete in 10 s");
    }
    // The deployment the pushes pause and resume: long bakes, and the default
    // thresholds keep it inconclusive (no traffic), so it never moves by itself.
    let deployment = controller
        .create_deployment_with(
            ENV,
            TENANT,
            "v2",
            vec![
                Step {
                    weight_bp: 1_000,
                    bake_ms: 600_000,
                },
                Step {
                    weight_bp: 10_000,
                    bake_ms: 600_000,
                },
            ],
            Thresholds::default(),
            None,
        )
        .await?;

    // Open the streams.
    let slots: Vec<Arc<Slot>> = (0..edges)
        .map(|_| Arc::new(Slot::new(pushes + 8)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss()?;
    let connections = edges.div_ceil(STREAMS_PER_CONNECTION);
    let endpoint = Endpoint::from_shared(format!("http://{}", running.addr))?.tcp_nodelay(true);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(endpoint.connect().await?);
    }
    let authorization: Authorization = format!("Bearer {CREDENTIAL}").parse()?;
    let opening = Instant::now();
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..edges)
        .map(|i| {
            tokio::spawn(edge(
                channels[i % connections].clone(),
                i,
                authorization.clone(),
                0,
                slots[i].clone(),
            ))
        })
        .collect();
    let opened = wait_until(Duration::from_secs(20), || {
        slots.iter().all(|s| s.tables.load(Ordering::Acquire) > 0)
    })
    .await;
    let open_took = opening.elapsed();
    if !opened {
        let have = slots
            .iter()
            .filter(|s| s.tables.load(Ordering::Acquire) > 0)
            .count();
        bail!(
            "only {have} of {edges} streams had their first table after 20 s; {}",
            failures(&slots)
        );
    }
    eprintln!(
        "{edges} streams open over {connections} connections in {:.0} ms",
        ms(open_took)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_with = rss()?;

    // Control at rest with the streams open: each tick of an active deployment
    // wakes every stream.
    let idle_for = Duration::from_millis(tick_ms.saturating_mul(6).clamp(2_000, 10_000));
    let idle_from = Cpu::now()?;
    let idle_started = Instant::now();
    tokio::time::sleep(idle_for).await;
    let idle = Cpu::now()?.since(idle_from);
    let idle_secs = idle_started.elapsed().as_secs_f64();

    // The pushes.
    let mut issued: Vec<(u64, Instant)> = Vec::with_capacity(pushes);
    let mut calls = Histogram::<u64>::new(3).unwrap();
    let mut stopped = None;
    let push_from = Cpu::now()?;
    let pushing = Instant::now();
    for k in 0..pushes {
        let (c, id) = (controller.clone(), deployment.id.clone());
        let pause = k % 2 == 0;
        let at = Instant::now();
        // On control's runtime, as the `PauseDeployment` and `ResumeDeployment`
        // calls run: the state file is written and every stream woken.
        let (result, took) = control_runtime
            .spawn(async move {
                let started = Instant::now();
                let result = if pause { c.pause(&id) } else { c.resume(&id) };
                (result.map(|_| ()), started.elapsed())
            })
            .await?;
        result?;
        calls.record(micros(took)).unwrap();
        let version = controller
            .route_table(ENV)
            .context("no route table")?
            .version;
        issued.push((version, at));
        let reached = wait_until(PUSH_TIMEOUT, || {
            slots
                .iter()
                .all(|s| s.latest.load(Ordering::Acquire) >= version)
        })
        .await;
        if !reached {
            let have = slots
                .iter()
                .filter(|s| s.latest.load(Ordering::Acquire) >= version)
                .count();
            stopped = Some(format!(
                "push {} (version {version}) reached {have} of {edges} edges in {PUSH_TIMEOUT:?}; the run stopped pushing there ({})",
                k + 1,
                failures(&slots)
            ));
            break;
        }
        tokio::time::sleep(GAP).await;
    }
    let pushed = Cpu::now()?.since(push_from);
    let push_secs = pushing.elapsed().as_secs_f64();
    eprintln!("{} pushes in {push_secs:.1} s", issued.len());

    // Control's own record of the edges' ACKs of the last push.
    let last_version = issued.last().map_or(0, |i| i.0);
    let acked = || {
        running.acks().lock().get(ENV).map_or(0, |nodes| {
            nodes
                .values()
                .filter(|a| a.left_ms.is_none() && a.version >= last_version)
                .count()
        })
    };
    wait_until(Duration::from_secs(5), || acked() >= edges).await;
    let acked_last = acked();

    // Deliveries.
    let mut last_edge = Histogram::<u64>::new(3).unwrap();
    let mut deliveries = Histogram::<u64>::new(3).unwrap();
    let mut missing = 0;
    for (version, at) in &issued {
        let mut slowest = Duration::ZERO;
        let mut all = true;
        for slot in &slots {
            let received = slot.received.lock().unwrap();
            match received.iter().find(|(v, _)| v >= version) {
                Some((_, got)) => {
                    let took = got.saturating_duration_since(*at);
                    deliveries.record(micros(took)).unwrap();
                    slowest = slowest.max(took);
                }
                None => {
                    missing += 1;
                    all = false;
                }
            }
        }
        if all {
            last_edge.record(micros(slowest)).unwrap();
        }
    }

    // The reconnect storm: close streams, reopen them holding the current version.
    let storm = RECONNECTS.min(edges);
    let current = controller
        .route_table(ENV)
        .context("no route table")?
        .version;
    let others_before: u64 = slots[storm..]
        .iter()
        .map(|s| s.tables.load(Ordering::Acquire))
        .sum();
    for task in &tasks[..storm] {
        task.abort();
    }
    let left = || {
        running.acks().lock().get(ENV).map_or(0, |nodes| {
            (0..storm)
                .filter(|i| {
                    nodes
                        .get(node_id(*i).as_str())
                        .is_some_and(|a| a.left_ms.is_some())
                })
                .count()
        })
    };
    wait_until(Duration::from_secs(5), || left() == storm).await;
    let noticed = left();
    let tables_before: Vec<u64> = slots[..storm]
        .iter()
        .map(|s| s.tables.load(Ordering::Acquire))
        .collect();
    let reopening = Instant::now();
    for (i, task) in tasks.iter_mut().enumerate().take(storm) {
        *task = tokio::spawn(edge(
            channels[i % connections].clone(),
            i,
            authorization.clone(),
            current,
            slots[i].clone(),
        ));
    }
    let back = wait_until(Duration::from_secs(10), || {
        slots[..storm]
            .iter()
            .zip(&tables_before)
            .all(|(s, before)| s.tables.load(Ordering::Acquire) > *before)
    })
    .await;
    let reopen_took = reopening.elapsed();
    // Two ticks more: a version issued for the storm would be out by then.
    tokio::time::sleep(Duration::from_millis(tick_ms.clamp(100, 5_000) * 2)).await;
    let after = controller
        .route_table(ENV)
        .context("no route table")?
        .version;
    let new_versions = after.saturating_sub(current);
    let others_after: u64 = slots[storm..]
        .iter()
        .map(|s| s.tables.load(Ordering::Acquire))
        .sum();
    let reopened_current = slots[..storm]
        .iter()
        .filter(|s| {
            s.received
                .lock()
                .unwrap()
                .last()
                .is_some_and(|(v, _)| *v == current)
        })
        .count();
    eprintln!("reconnects issued {new_versions} new versions");

    for task in &tasks {
        task.abort();
    }
    drop(channels);
    control_runtime.spawn(running.shutdown()).await?;
    origin.shutdown().await;

    // The section.
    let n = issued.len();
    let deliveries_n = (n * edges).max(1) as f64;
    let idle_rate = idle.control / idle_secs;
    let control_net = (pushed.control - idle_rate * push_secs).max(0.0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per_edge_kib = rss_with.saturating_sub(rss_before) as f64 / 1024.0 / edges as f64;
    let arena = std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into());
    let per_connection = edges.div_ceil(connections);
    let mut t = String::new();
    t.push_str(&format!(
        "## {} — control fan-out to simulated edges (`make bench-fanout`)\n\n",
        shell("date -u +%Y-%m-%d")
    ));
    t.push_str(&format!(
        "Machine: {}. {edges} simulated edges, each a `StreamRoutes` stream that ACKs every \
         table, multiplexed over {connections} HTTP/2 connections (≤ {per_connection} streams each; \
         a real edge has its own). Control (its own tokio runtime, threads `control`), one origin \
         (builds v1 and v2, for the deployments' health probes) and the simulated edges (runtime \
         `sim-edges`) share the machine's cores in one process. Control's tick {tick_ms} ms. \
         {pushes} pushes: pause and resume, in turn, of a deployment of v2 (each issues a new \
         route version); {} ms between pushes. MALLOC_ARENA_MAX {arena}.\n\n",
        machine(),
        GAP.as_millis(),
    ));
    t.push_str("| what | figure |\n|---|---|\n");
    t.push_str(&format!(
        "| open {edges} streams, until each holds its first table | {:.0} ms |\n",
        ms(open_took)
    ));
    t.push_str(&format!(
        "| push → the last edge has it, over {} pushes | {} |\n",
        last_edge.len(),
        quantiles(&last_edge)
    ));
    t.push_str(&format!(
        "| push → an edge has it, over {} deliveries ({missing} missing) | {} |\n",
        deliveries.len(),
        quantiles(&deliveries)
    ));
    t.push_str(&format!(
        "| the pause or resume call itself (state file written and fsynced, streams woken) | {} |\n",
        quantiles(&calls)
    ));
    t.push_str(&format!(
        "| control CPU per push (its threads, less its idle rate) | {:.2} ms ({:.2} ms before the idle is taken off): {:.1} µs per edge |\n",
        control_net * 1e3 / n.max(1) as f64,
        pushed.control * 1e3 / n.max(1) as f64,
        control_net * 1e6 / deliveries_n,
    ));
    t.push_str(&format!(
        "| control CPU at rest with {edges} streams open and a deployment active (each tick wakes every stream) | {:.1} ms per s |\n",
        idle_rate * 1e3
    ));
    t.push_str(&format!(
        "| whole process CPU per delivery (includes the simulated edges' own work and control's idle: an upper bound) | {:.1} µs |\n",
        pushed.process * 1e6 / deliveries_n
    ));
    t.push_str(&format!(
        "| resident memory of the process, before the streams → with {edges} streams | {:.1} MiB → {:.1} MiB |\n",
        mib(rss_before),
        mib(rss_with)
    ));
    t.push_str(&format!(
        "| resident memory per edge (both ends of each stream: an upper bound for control's share) | {per_edge_kib:.1} KiB |\n"
    ));
    t.push_str(&format!(
        "| control's record of ACKs after the last push | {acked_last} of {edges} edges at version {last_version} |\n"
    ));
    t.push_str(&format!(
        "| reconnect storm: {storm} streams closed (control saw {noticed} end) and reopened, each holding the current version {current} | reconnects issued {new_versions} new versions; {reopened_current} of {storm} had version {current} again {}; tables sent to the other {} edges meanwhile: {} |\n",
        if back {
            format!("after {:.1} ms", ms(reopen_took))
        } else {
            "(not all within 10 s)".to_string()
        },
        edges - storm,
        others_after.saturating_sub(others_before),
    ));
    if let Some(why) = &stopped {
        t.push_str(&format!("\n**Incomplete:** {why}.\n"));
    }
    let slowest_ms = last_edge.max() as f64 / 1000.0;
    let reach = if stopped.is_some() || last_edge.is_empty() {
        "not met: a push did not reach every edge".to_string()
    } else if edges < 1_000 {
        format!("slowest push {slowest_ms:.1} ms to {edges} edges (run with 1,000 edges to judge)")
    } else if slowest_ms <= 100.0 {
        format!("met: the slowest of {n} pushes reached every edge in {slowest_ms:.1} ms")
    } else {
        format!("not met: the slowest of {n} pushes took {slowest_ms:.1} ms")
    };
    let memory = if mib(rss_with) <= 64.0 {
        format!(
            "met: the whole process (control, origin and edges) holds {:.1} MiB",
            mib(rss_with)
        )
    } else {
        format!(
            "not told apart here: the whole process holds {:.1} MiB (control, the origin and its RocksDB, the simulated edges); the streams add {:.1} MiB",
            mib(rss_with),
            mib(rss_with.saturating_sub(rss_before))
        )
    };
    t.push_str(&format!(
        "\nTargets (issue #20): a push reaches 1,000 edges in ≤ 100 ms — {reach}; control within 64 MiB — {memory}. Reconnects must issue no version — {}.\n",
        if new_versions == 0 {
            "met"
        } else {
            "not met"
        }
    ));
    Ok(t)
}

fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: fanout [EDGES] [PUSHES] [TICK_MS]";
    let mut args = std::env::args().skip(1);
    let edges: usize = match args.next() {
        Some(a) => a.parse().context(USAGE)?,
        None => 1_000,
    };
    let pushes: usize = match args.next() {
        Some(a) => a.parse().context(USAGE)?,
        None => 20,
    };
    let tick_ms: u64 = match args.next() {
        Some(a) => a.parse().context(USAGE)?,
        None => 500,
    };
    if edges == 0 || pushes == 0 {
        bail!("{USAGE}: at least one edge and one push");
    }
    let control = tokio::runtime::Builder::new_multi_thread()
        .thread_name(CONTROL_THREADS)
        .enable_all()
        .build()?;
    let sims = tokio::runtime::Builder::new_multi_thread()
        .thread_name("sim-edges")
        .enable_all()
        .build()?;
    let section = sims.block_on(run(
        control.handle().clone(),
        Setup {
            edges,
            pushes,
            tick_ms,
        },
    ));
    sims.shutdown_timeout(Duration::from_secs(2));
    control.shutdown_timeout(Duration::from_secs(2));
    print!("{}", section?);
    Ok(())
}
