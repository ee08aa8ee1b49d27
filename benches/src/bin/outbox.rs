//! Whether queuing writes stalls cached reads: the p99 of hot GETs at a fixed rate
//! while writers fill the outbox of an edge whose origin is down, beside the same
//! reads with the origin up.
//!
//! One origin (RocksDB, fsync on every write) and one edge (RocksDB; its outbox is
//! fsynced whatever its write policy), in one process over loopback, the servers
//! on a runtime of their own and the load on another. One key of 100 B is written
//! through the edge, then read through the HTTP API at a fixed rate over
//! keep-alive connections, open loop: each GET has a due time and its latency
//! counts from then, so a stalled edge is not hidden by the generator waiting for
//! it. The reads run three times:
//!
//! - (a) the origin up, nothing written;
//! - (a') the origin stopped, the outbox empty;
//! - (b) the origin stopped, and W writers each PUTting 100 B values to keys of
//!   their own as fast as the edge answers: every write is queued (202).
//!
//! It prints p50/p99/max of each run side by side, and the writes queued per
//! second. Usage: `outbox [RATE] [SECONDS] [WRITERS]` (defaults 2000 req/s, 5 s,
//! 64 writers); `make bench-outbox ARGS="..."` builds the `bench` profile first.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use edgekv_edge::service::Change;
use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::{Mode, SystemClock};
use edgekv_origin::{BuildSpec, OriginConfig, RunningOrigin};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const CREDENTIAL: &str = "bench-credential";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const ACCOUNT: &str = "acct";
const HOT_KEY: &str = "hot";
/// Connections the fixed-rate reads are spread over.
const READERS: u64 = 8;
/// How long the writers run before the reads start, so the outbox is busy.
const WRITERS_LEAD: Duration = Duration::from_millis(300);

async fn origin(dir: &Path) -> anyhow::Result<RunningOrigin> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("credentials"), CREDENTIAL)?;
    let config = OriginConfig {
        data_dir: dir.to_path_buf(),
        environment: "bench".into(),
        tenant: "bench".into(),
        credential_file: dir.join("credentials"),
        builds: vec![
            "v1=127.0.0.1:0"
                .parse::<BuildSpec>()
                .map_err(|e| anyhow!("{e}"))?,
        ],
        sync_writes: true,
        ..OriginConfig::default()
    };
    RunningOrigin::start(config, Arc::new(SystemClock))
        .await
        .map_err(|e| anyhow!("starting the origin: {e}"))
}

/// An edge of `origin_url` that admits [`TOKEN`] to [`ACCOUNT`], synced; and the
/// namespace holding the hot key.
async fn edge(dir: &Path, origin_url: &str) -> anyhow::Result<(RunningEdge, String)> {
    let config = EdgeConfig {
        http: "127.0.0.1:0".parse()?,
        admin: "127.0.0.1:0".parse()?,
        data_dir: dir.to_path_buf(),
        origin: origin_url.to_string(),
        environment: "bench".into(),
        tenant: "bench".into(),
        // The writers must be queued, not refused, for the whole run.
        outbox_max_writes: 100_000_000,
        ..EdgeConfig::default()
    };
    let table = TokenTable::new(1, [(tokens::hash(TOKEN), Grant::full("bench", ACCOUNT))]);
    let edge = edgekv_edge::open(config, Arc::new(SystemClock), table, CREDENTIAL)
        .map_err(|e| anyhow!("opening the edge: {e}"))?;
    let running = RunningEdge::start(edge)
        .await
        .map_err(|e| anyhow!("starting the edge: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(running.edge().feed().synced() && running.edge().feed().connected()) {
        if Instant::now() > deadline {
            bail!("the edge did not sync with its origin within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let edge = running.edge();
    let ns = edge
        .create_namespace(ACCOUNT, "outbox-bench", Mode::Cache)
        .await
        .map_err(|e| anyhow!("creating the namespace: {e}"))?
        .id;
    let hot = Change::Put {
        value: Bytes::from(vec![b'v'; 100]),
        metadata: None,
        expiration: None,
    };
    let written = edge
        .write(&ns, vec![(Bytes::from_static(HOT_KEY.as_bytes()), hot)])
        .await
        .map_err(|e| anyhow!("writing the hot key: {e}"))?;
    if written.revision().is_none() {
        bail!("the hot key was queued, not written: is the origin up?");
    }
    Ok((running, ns))
}

fn value_path(ns: &str, key: &str) -> String {
    format!("/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{ns}/values/{key}")
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\n\r\n")
        .into_bytes()
}

fn put_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Reads one response from `stream` into `buf` (which may hold bytes of the next
/// one afterwards); returns its status. A small reader of `content-length`
/// bodies, which is what the edge sends.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|line| line.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .context("a response without a status line")?;
            let mut length = 0usize;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("the edge sent a chunked body; this tool reads content-length bodies");
                }
            }
            let total = end + 4 + length;
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    bail!("the edge closed the connection mid-response");
                }
            }
            buf.drain(..total);
            return Ok(status);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the edge closed the connection");
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What a run of fixed-rate GETs measured.
struct Reads {
    /// Latency from each GET's due time, µs.
    latency: Histogram<u64>,
    /// Answers other than 200.
    errors: u64,
}

/// GETs of `path` at `rate` per second for `seconds`, open loop, over
/// [`READERS`] connections.
async fn reads(addr: SocketAddr, path: &str, rate: u64, seconds: u64) -> anyhow::Result<Reads> {
    let every = Duration::from_nanos(1_000_000_000 * READERS / rate.max(1));
    let per_connection = rate * seconds / READERS;
    let request = Arc::new(get_request(path));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..READERS {
        let request = request.clone();
        // Connections take their turns spread over one interval.
        let first = started + every * (c as u32) / (READERS as u32);
        tasks.push(tokio::spawn(async move {
            let mut stream = connect(addr).await?;
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            let mut input = Vec::with_capacity(4096);
            for n in 0..per_connection {
                let due = first + every * (n as u32);
                tokio::time::sleep_until(due.into()).await;
                stream.write_all(&request).await?;
                if read_response(&mut stream, &mut input).await? != 200 {
                    errors += 1;
                }
                latency.saturating_record((due.elapsed().as_micros() as u64).max(1));
            }
            anyhow::Ok((latency, errors))
        }));
    }
    let mut all = Reads {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        errors: 0,
    };
    for task in tasks {
        let (latency, errors) = task.await??;
        all.latency.add(latency)?;
        all.errors += errors;
    }
    Ok(all)
}

/// What the writers did.
#[derive(Default)]
struct Writes {
    /// Answered 202 (queued).
    queued: u64,
    /// Answered 503 (a bound of the outbox).
    refused: u64,
    /// Any other answer.
    other: u64,
    /// Each write's latency, µs.
    latency: Option<Histogram<u64>>,
}

/// One writer: PUTs of 100 B to keys of its own, one after another, until `stop`.
async fn writer(
    addr: SocketAddr,
    ns: String,
    w: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Writes> {
    let mut stream = connect(addr).await?;
    let body = [b'w'; 100];
    let mut input = Vec::with_capacity(4096);
    let mut done = Writes {
        latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        ..Writes::default()
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let request = put_request(&value_path(&ns, &format!("w{w}-{n}")), &body);
        n += 1;
        let start = Instant::now();
        stream.write_all(&request).await?;
        let status = read_response(&mut stream, &mut input).await?;
        if let Some(latency) = &mut done.latency {
            latency.saturating_record((start.elapsed().as_micros() as u64).max(1));
        }
        match status {
            202 => done.queued += 1,
            503 => done.refused += 1,
            _ => done.other += 1,
        }
    }
    Ok(done)
}

/// The reads of run (b), with `writers` writers queuing meanwhile; the writers'
/// tally and how long they ran.
async fn reads_while_queuing(
    addr: SocketAddr,
    ns: &str,
    path: &str,
    rate: u64,
    seconds: u64,
    writers: usize,
) -> anyhow::Result<(Reads, Writes, Duration)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(writer(addr, ns.to_string(), w, stop.clone())))
        .collect();
    tokio::time::sleep(WRITERS_LEAD).await;
    let read = reads(addr, path, rate, seconds).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Writes {
        latency: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        ..Writes::default()
    };
    for task in tasks {
        let done = task.await??;
        all.queued += done.queued;
        all.refused += done.refused;
        all.other += done.other;
        if let (Some(into), Some(from)) = (&mut all.latency, &done.latency) {
            into.add(from)?;
        }
    }
    Ok((read?, all, started.elapsed()))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn row(name: &str, reads: &Reads) {
    let h = &reads.latency;
    println!(
        "{name:<48} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8}",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        reads.errors,
    );
}

fn arg(value: Option<String>, default: u64, what: &str) -> anyhow::Result<u64> {
    match value {
        Some(v) => v
            .parse()
            .with_context(|| format!("usage: outbox [RATE] [SECONDS] [WRITERS]; bad {what}")),
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate = arg(args.next(), 2000, "RATE")?.max(READERS);
    let seconds = arg(args.next(), 5, "SECONDS")?.max(1);
    let writers = arg(args.next(), 64, "WRITERS")? as usize;
    let servers = tokio::runtime::Builder::new_multi_thread()
        .thread_name("servers")
        .enable_all()
        .build()?;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (origin, running, ns) = servers.block_on(async {
        let origin = origin(&dir.path().join("origin")).await?;
        let url = origin.url("v1").context("the origin serves no build v1")?;
        let (running, ns) = edge(&dir.path().join("edge"), &url).await?;
        anyhow::Ok((origin, running, ns))
    })?;
    let addr = running.http_addr;
    let path = value_path(&ns, HOT_KEY);

    println!(
        "# hot GET of one 100 B key at {rate} req/s for {seconds} s over {READERS} connections \
         (open loop: latency from each GET's due time); {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // A second of warm-up: connections, the hot tier, the allocator.
    load.block_on(reads(addr, &path, rate, 1))?;
    let up = load.block_on(reads(addr, &path, rate, seconds))?;
    servers.block_on(origin.shutdown());
    let down = load.block_on(reads(addr, &path, rate, seconds))?;
    let (queuing, writes, took) = load.block_on(reads_while_queuing(
        addr, &ns, &path, rate, seconds, writers,
    ))?;

    println!(
        "{:<48} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "run", "GETs", "p50 ms", "p99 ms", "max ms", "not 200"
    );
    row("(a)  origin up, no writers", &up);
    row("(a') origin stopped, outbox empty", &down);
    row(
        &format!("(b)  origin stopped, {writers} writers queuing PUTs"),
        &queuing,
    );
    println!(
        "p99 (b) ÷ (a): {:.2}×",
        queuing.latency.value_at_quantile(0.99) as f64
            / up.latency.value_at_quantile(0.99).max(1) as f64
    );
    let stats = running.edge().outbox().stats(0);
    println!(
        "queued {} writes of 100 B in {:.1} s: {:.0} writes/s ({} refused 503, {} other); \
         the outbox holds {} writes, {} bytes",
        writes.queued,
        took.as_secs_f64(),
        writes.queued as f64 / took.as_secs_f64(),
        writes.refused,
        writes.other,
        stats.depth,
        stats.bytes,
    );
    if let Some(h) = &writes.latency {
        println!(
            "write latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        );
    }
    servers.block_on(running.shutdown());
    Ok(())
}
