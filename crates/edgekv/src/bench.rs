//! `edgekv bench`: a load generator for the KV API of any edge.
//!
//! It fills N keys of S bytes, then runs a read/write mix over a key distribution
//! (uniform, or zipfian with θ) on C keep-alive connections, either as fast as it
//! can (closed loop, like wrk) or at a fixed rate (open loop: each request has an
//! intended start time, and its latency counts from then — a stalled server is
//! not hidden by the generator waiting for it, which is coordinated omission).
//! Latencies go into an HDR histogram; progress is printed each second.
//!
//! The client is a small HTTP/1.1 writer and reader over `TcpStream` rather than a
//! general client: requests are written into a reused buffer and responses are
//! parsed in place, so the generator spends its time on the wire, not on itself.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::cli::{BenchArgs, Distribution};

/// A fast, small pseudo-random generator (xorshift64*); the load needs speed and a
/// fixed seed per connection, not cryptographic quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed for a run that does not name one: different in each run.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// The seed of connection `c`'s key picks: distinct per connection and per run
/// seed, and never 0 (xorshift's fixed point).
fn connection_seed(seed: u64, c: usize) -> u64 {
    let mut rng = Rng((seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(c as u64 + 1)) | 1);
    rng.next() | 1
}

/// Picks key indexes: uniform, or zipfian (rank 0 hottest) after Gray et al.'s
/// method as YCSB uses it.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        n: u64,
    },
    /// Key `i` with probability ∝ 1 / (i+1)^θ.
    Zipfian {
        /// Number of keys.
        n: u64,
        /// θ.
        theta: f64,
        /// Precomputed terms.
        alpha: f64,
        /// Precomputed terms.
        eta: f64,
        /// ζ(n, θ).
        zetan: f64,
    },
}

impl Keys {
    /// The distribution over `n` keys.
    pub fn new(distribution: Distribution, n: u64, theta: f64) -> anyhow::Result<Self> {
        if n == 0 {
            bail!("--keys must be at least 1");
        }
        Ok(match distribution {
            Distribution::Uniform => Keys::Uniform { n },
            Distribution::Zipfian => {
                if !(0.0..1.0).contains(&theta) || theta == 0.0 {
                    bail!("--theta must be in (0, 1), e.g. 0.99; got {theta}");
                }
                let zeta = |m: u64| (1..=m).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
                let zetan = zeta(n);
                let zeta2 = zeta(2.min(n));
                let alpha = 1.0 / (1.0 - theta);
                let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
                Keys::Zipfian {
                    n,
                    theta,
                    alpha,
                    eta,
                    zetan,
                }
            }
        })
    }

    fn pick(&self, rng: &mut Rng) -> u64 {
        match *self {
            Keys::Uniform { n } => rng.next() % n,
            Keys::Zipfian {
                n,
                theta,
                alpha,
                eta,
                zetan,
            } => {
                let u = rng.unit();
                let uz = u * zetan;
                if uz < 1.0 {
                    return 0;
                }
                if uz < 1.0 + 0.5f64.powf(theta) {
                    return 1.min(n - 1);
                }
                let rank = (n as f64 * (eta * u - eta + 1.0).powf(alpha)) as u64;
                rank.min(n - 1)
            }
        }
    }
}

/// The name of key `i`.
fn key_name(i: u64) -> String {
    format!("bench-{i:08}")
}

/// What one connection measured.
struct Tally {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// Counters shared for the progress line.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    failed: AtomicU64,
}

/// What the run asks of each request.
struct Plan {
    /// Path of a bulk get.
    bulk_path: String,
    /// `host:` and `authorization:` lines, as every request sends them.
    headers: String,
    mix: Mix,
    /// The whole request of `--raw`, sent as it is every time.
    raw: Option<Vec<u8>>,
    /// A GET of a value up to its key's number (`GET /…/values/bench-`), and from
    /// there to its end.
    get: (Vec<u8>, Vec<u8>),
    /// The same of a PUT, whose end is its value.
    put: (Vec<u8>, Vec<u8>),
}

impl Plan {
    /// The plan of a run. The bytes every request of a kind shares are written
    /// here, once: a request is then two copies and its key's digits, so that
    /// the generator's time goes to the wire, not to the formatter.
    fn new(host: &str, values: &str, other: &str, token: &str, mix: Mix) -> Plan {
        let mut headers = format!("host: {host}\r\n");
        if !token.is_empty() {
            headers.push_str(&format!("authorization: Bearer {token}\r\n"));
        }
        let get = (
            format!("GET {values}bench-").into_bytes(),
            format!(" HTTP/1.1\r\n{headers}\r\n").into_bytes(),
        );
        let mut put_tail = format!(
            " HTTP/1.1\r\n{headers}content-length: {}\r\n\r\n",
            mix.value.len()
        )
        .into_bytes();
        put_tail.extend_from_slice(&mix.value);
        Plan {
            bulk_path: other.to_string(),
            raw: mix
                .raw
                .then(|| format!("GET {other} HTTP/1.1\r\n{headers}\r\n").into_bytes()),
            headers,
            mix,
            get,
            put: (format!("PUT {values}bench-").into_bytes(), put_tail),
        }
    }

    /// Writes the next request into `buf`.
    fn request(&self, rng: &mut Rng, buf: &mut Vec<u8>) {
        buf.clear();
        if let Some(raw) = &self.raw {
            buf.extend_from_slice(raw);
            return;
        }
        if self.mix.bulk > 0 {
            let mut body = String::from("{\"keys\":[");
            for i in 0..self.mix.bulk {
                if i > 0 {
                    body.push(',');
                }
                body.push('"');
                body.push_str(&key_name(self.mix.keys.pick(rng)));
                body.push('"');
            }
            body.push_str("]}");
            let _ = write!(
                buf,
                "POST {} HTTP/1.1\r\n{}content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                self.bulk_path,
                self.headers,
                body.len()
            );
            buf.extend_from_slice(body.as_bytes());
            return;
        }
        let key = self.mix.keys.pick(rng);
        let (head, tail) = if rng.unit() < self.mix.read_share {
            &self.get
        } else {
            &self.put
        };
        buf.extend_from_slice(head);
        push_key_number(buf, key);
        buf.extend_from_slice(tail);
    }
}

/// What a run's requests are made of, besides their paths.
struct Mix {
    keys: Keys,
    read_share: f64,
    bulk: usize,
    raw: bool,
    value: Vec<u8>,
}

/// Appends a key's number as [`key_name`] writes it: in decimal, zero-padded to
/// eight digits.
fn push_key_number(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits[at.min(digits.len() - 8)..]);
}

/// Reads one response from `stream` into `buf` (which may hold bytes of the next
/// one afterwards); returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buf)? {
            let status = response.code.unwrap_or(0);
            let mut length = None;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value)?.trim().parse::<usize>().ok();
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("the server sent a chunked body; this tool reads content-length bodies");
                }
            }
            let total = head + length.unwrap_or(0);
            while buf.len() < total {
                if stream.read_buf(buf).await? == 0 {
                    bail!("the server closed the connection mid-response");
                }
            }
            buf.drain(..total);
            return Ok(status);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the server closed the connection");
        }
    }
}

/// One connection's loop until `stop`, or until `budget` requests are taken.
async fn connection(
    addr: String,
    plan: Arc<Plan>,
    seed: u64,
    interval: Option<Duration>,
    stop: Arc<AtomicBool>,
    budget: Option<Arc<AtomicU64>>,
    live: Arc<Live>,
) -> anyhow::Result<Tally> {
    let mut stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut tally = Tally {
        latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        statuses: BTreeMap::new(),
        errors: 0,
    };
    let mut rng = Rng(seed | 1);
    let (mut out, mut input) = (Vec::with_capacity(4096), Vec::with_capacity(64 * 1024));
    let started = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(budget) = &budget
            && budget
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1))
                .is_err()
        {
            break;
        }
        // Open loop: the request was due at its slot, and its latency counts from
        // then even when the previous answer made it late.
        let start = match interval {
            Some(every) => {
                let due = started + every * (sent as u32);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                due
            }
            None => Instant::now(),
        };
        sent += 1;
        plan.request(&mut rng, &mut out);
        stream.write_all(&out).await?;
        let status = read_response(&mut stream, &mut input).await?;
        let elapsed = start.elapsed().as_nanos() as u64;
        tally.latency.saturating_record(elapsed.max(1));
        *tally.statuses.entry(status).or_default() += 1;
        live.done.fetch_add(1, Ordering::Relaxed);
        if !(200..300).contains(&status) {
            tally.errors += 1;
            live.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(tally)
}

/// The URL's `host:port` and its path prefix.
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url must be http://HOST:PORT[/PATH], got {url:?}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

/// Writes N keys of S bytes with bulk writes, showing progress.
async fn fill(args: &BenchArgs, base: &str, ns: &str, value: &[u8]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let value = String::from_utf8_lossy(value).into_owned();
    let started = Instant::now();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut written = 0u64;
    while written < args.keys {
        let batch = (args.keys - written).min(5_000);
        let items: Vec<serde_json::Value> = (written..written + batch)
            .map(|i| json!({"key": key_name(i), "value": value}))
            .collect();
        let response = client
            .put(format!("{base}/namespaces/{ns}/bulk"))
            .bearer_auth(&args.token)
            .json(&items)
            .send()
            .await
            .context("fill: the edge did not answer")?;
        if !response.status().is_success() {
            bail!(
                "fill: the edge answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let before = written;
        written += batch;
        // A line per tenth on a pipe or file; a live counter on a terminal.
        if terminal {
            eprint!("\rfilling: {written}/{} keys", args.keys);
        } else if written * 10 / args.keys != before * 10 / args.keys {
            eprintln!("filling: {written}/{} keys", args.keys);
        }
    }
    if terminal {
        eprintln!();
    }
    eprintln!(
        "filled {} keys in {:.1} s",
        args.keys,
        started.elapsed().as_secs_f64()
    );
    if args.prime {
        // One read of each key, so an edge holds them all in its hot tier.
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..16 {
            let (client, next, token, keys) =
                (client.clone(), next.clone(), args.token.clone(), args.keys);
            let url = format!("{base}/namespaces/{ns}/values/");
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        return Ok::<_, reqwest::Error>(());
                    }
                    client
                        .get(format!("{url}{}", key_name(i)))
                        .bearer_auth(&token)
                        .send()
                        .await?
                        .bytes()
                        .await?;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        eprintln!(
            "primed: read every key once in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Runs `edgekv bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (host, path) = split_url(&args.url)?;
    let raw = args.raw;
    if !raw && args.token.is_empty() {
        bail!("--token is needed (or EDGEKV_TOKEN), except with --raw");
    }
    if !(0.0..=100.0).contains(&args.reads) {
        bail!("--reads is a percentage: 0 to 100, not {}", args.reads);
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let value = vec![b'v'; args.value_size];
    let base = format!(
        "http://{host}{}/client/v4/accounts/{}/storage/kv",
        path.trim_end_matches('/'),
        args.account
    );
    let mut ns = args.namespace.clone().unwrap_or_default();
    if !raw {
        let client = reqwest::Client::new();
        if ns.is_empty() {
            let title = format!("bench-{}", std::process::id());
            let response = client
                .post(format!("{base}/namespaces"))
                .bearer_auth(&args.token)
                .json(&json!({ "title": title }))
                .send()
                .await
                .context("the edge did not answer")?;
            let body: serde_json::Value = response.json().await?;
            ns = body["result"]["id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("cannot create a namespace: {body}"))?
                .to_string();
        }
        if !args.no_fill {
            fill(&args, &base, &ns, &value).await?;
        }
    }
    let local = |p: &str| p.replacen(&format!("http://{host}"), "", 1);
    let other = if raw {
        path.clone()
    } else {
        local(&format!("{base}/namespaces/{ns}/bulk/get"))
    };
    let plan = Arc::new(Plan::new(
        &host,
        &local(&format!("{base}/namespaces/{ns}/values/")),
        &other,
        &args.token,
        Mix {
            keys: Keys::new(args.distribution, args.keys, args.theta)?,
            read_share: args.reads / 100.0,
            bulk: args.bulk_get,
            raw,
            value,
        },
    ));
    let duration = crate::ops::parse_duration_arg("--duration", &args.duration)?;
    let interval = match args.rate {
        0 => None,
        rate => Some(Duration::from_secs_f64(
            args.connections as f64 / rate as f64,
        )),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let budget = args.requests.map(|n| Arc::new(AtomicU64::new(n)));
    let live = Arc::new(Live::default());
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.connections {
        tasks.spawn(connection(
            host.clone(),
            plan.clone(),
            connection_seed(seed, c),
            interval,
            stop.clone(),
            budget.clone(),
            live.clone(),
        ));
    }
    if args.spin {
        // A task that only yields keeps its worker from parking: the worker polls
        // for IO without a timeout between turns, so it never sleeps in the kernel.
        for _ in 0..tokio::runtime::Handle::current().metrics().num_workers() {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
            });
        }
    }
    let started = Instant::now();
    let progress = {
        let (live, stop) = (live.clone(), stop.clone());
        let quiet = args.quiet;
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let done = live.done.load(Ordering::Relaxed);
                if !quiet {
                    eprintln!(
                        "{:>4.0} s  {:>10} req/s  errors {}",
                        started.elapsed().as_secs_f64(),
                        done - last,
                        live.failed.load(Ordering::Relaxed)
                    );
                }
                last = done;
            }
        })
    };
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done? {
            Ok(tally) => {
                latency.add(&tally.latency)?;
                for (s, n) in tally.statuses {
                    *statuses.entry(s).or_default() += n;
                }
                errors += tally.errors;
            }
            Err(err) => failures.push(err.to_string()),
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    timer.abort();
    progress.abort();
    if latency.is_empty() {
        bail!(
            "no request completed: {}",
            failures.first().map_or("", String::as_str)
        );
    }
    let requests = latency.len();
    let throughput = requests as f64 / elapsed.as_secs_f64();
    let per_request = if args.bulk_get > 0 { args.bulk_get } else { 1 };
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1e6;
    let report = json!({
        "url": args.url,
        "namespace": ns,
        "mode": if raw { "raw" } else if args.bulk_get > 0 { "bulk-get" } else { "kv" },
        "connections": args.connections,
        "rate": args.rate,
        "duration_s": elapsed.as_secs_f64(),
        "requests": requests,
        "throughput_rps": throughput,
        "keys_per_s": throughput * per_request as f64,
        "errors": errors,
        "connection_failures": failures,
        "statuses": statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99.9": ms(0.999),
            "max": latency.max() as f64 / 1e6,
            "mean": latency.mean() / 1e6,
        },
        "keys": args.keys, "value_size": args.value_size, "reads_percent": args.reads,
        "distribution": format!("{:?}", args.distribution).to_lowercase(), "theta": args.theta,
        "bulk_get": args.bulk_get,
        "seed": seed,
    });
    // A closed pipe (`| head -1`) is not an error of the run: write, ignore it.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{requests} requests in {:.2} s: {throughput:.0} req/s{}, {errors} errors {statuses:?}",
        elapsed.as_secs_f64(),
        if per_request > 1 {
            format!(" ({:.0} keys/s)", throughput * per_request as f64)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1e6
    );
    if !failures.is_empty() {
        eprintln!(
            "{} connections failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_prefers_low_ranks_and_stays_in_range() {
        let keys = Keys::new(Distribution::Zipfian, 1000, 0.99).unwrap();
        let mut rng = Rng(42);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[keys.pick(&mut rng) as usize] += 1;
        }
        // Rank 0 is the hottest by far; the top 10 ranks take a large share.
        assert!(counts[0] > counts[10] * 5, "{:?}", &counts[..12]);
        let top: u32 = counts[..10].iter().sum();
        assert!(top > 30_000, "top 10 took {top} of 100000");
        assert!(counts[999] < counts[0]);
    }

    #[test]
    fn uniform_spreads_evenly() {
        let keys = Keys::new(Distribution::Uniform, 10, 0.0).unwrap();
        let mut rng = Rng(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[keys.pick(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn runs_with_different_seeds_pick_different_keys() {
        let keys = Keys::new(Distribution::Uniform, 100_000, 0.0).unwrap();
        let picks = |seed: u64, c: usize| {
            let mut rng = Rng(connection_seed(seed, c));
            (0..50).map(|_| keys.pick(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(picks(1, 0), picks(1, 0), "a named seed repeats a run");
        assert_ne!(picks(1, 0), picks(2, 0));
        assert_ne!(picks(1, 0), picks(1, 1));
        let seeds: std::collections::HashSet<u64> =
            (0..64).map(|c| connection_seed(7, c)).collect();
        assert_eq!(seeds.len(), 64);
        assert!(
            seeds.iter().all(|s| s % 2 == 1),
            "xorshift needs a non-zero state"
        );
    }

    #[test]
    fn bad_distributions_are_refused() {
        assert!(Keys::new(Distribution::Zipfian, 10, 1.5).is_err());
        assert!(Keys::new(Distribution::Uniform, 0, 0.0).is_err());
    }

    #[test]
    fn requests_are_well_formed_http() {
        let plan = Plan::new(
            "127.0.0.1:1",
            "/v/",
            "/bulk",
            "t",
            Mix {
                keys: Keys::new(Distribution::Uniform, 5, 0.0).unwrap(),
                read_share: 0.5,
                bulk: 0,
                raw: false,
                value: b"12345".to_vec(),
            },
        );
        let mut rng = Rng(3);
        let mut buf = Vec::new();
        let (mut gets, mut puts) = (0, 0);
        for _ in 0..100 {
            plan.request(&mut rng, &mut buf);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut request = httparse::Request::new(&mut headers);
            let head = match request.parse(&buf).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("incomplete request"),
            };
            match request.method.unwrap() {
                "GET" => {
                    gets += 1;
                    assert_eq!(head, buf.len());
                }
                "PUT" => {
                    puts += 1;
                    assert_eq!(&buf[head..], b"12345");
                    let length = request.headers.iter().find(|h| h.name == "content-length");
                    assert_eq!(length.unwrap().value, b"5");
                }
                other => panic!("{other}"),
            }
            let path = request.path.unwrap();
            let key: u64 = path.strip_prefix("/v/bench-").unwrap().parse().unwrap();
            assert_eq!(path, format!("/v/{}", key_name(key)));
            assert!(key < 5, "{path}");
            assert_eq!(request.version, Some(1));
            let header = |name: &str| {
                let found = request.headers.iter().find(|h| h.name == name);
                found.map(|h| h.value.to_vec())
            };
            assert_eq!(header("host").unwrap(), b"127.0.0.1:1");
            assert_eq!(header("authorization").unwrap(), b"Bearer t");
        }
        assert!(gets > 20 && puts > 20, "{gets} gets, {puts} puts");
    }

    #[test]
    fn requests_are_exactly_the_bytes_expected_with_a_token_or_without() {
        // One key and all reads, then all writes: every request is the same.
        let request = |token: &str, read_share: f64| {
            let mix = Mix {
                keys: Keys::new(Distribution::Uniform, 1, 0.0).unwrap(),
                read_share,
                bulk: 0,
                raw: false,
                value: b"xyz".to_vec(),
            };
            let mut buf = Vec::new();
            Plan::new("h:1", "/v/", "/bulk", token, mix).request(&mut Rng(3), &mut buf);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            request("t", 1.0),
            "GET /v/bench-00000000 HTTP/1.1\r\nhost: h:1\r\nauthorization: Bearer t\r\n\r\n"
        );
        assert_eq!(
            request("", 1.0),
            "GET /v/bench-00000000 HTTP/1.1\r\nhost: h:1\r\n\r\n"
        );
        assert_eq!(
            request("t", 0.0),
            "PUT /v/bench-00000000 HTTP/1.1\r\nhost: h:1\r\nauthorization: Bearer t\r\n\
             content-length: 3\r\n\r\nxyz"
        );
        assert_eq!(
            request("", 0.0),
            "PUT /v/bench-00000000 HTTP/1.1\r\nhost: h:1\r\ncontent-length: 3\r\n\r\nxyz"
        );
    }

    #[test]
    fn key_numbers_are_written_as_key_names_write_them() {
        for n in [0, 7, 12_345_678, 99_999_999, 100_000_000, u64::MAX] {
            let mut buf = b"bench-".to_vec();
            push_key_number(&mut buf, n);
            assert_eq!(String::from_utf8(buf).unwrap(), key_name(n));
        }
    }

    #[test]
    fn raw_and_bulk_requests_are_well_formed_http() {
        let mix = |raw, bulk| Mix {
            keys: Keys::new(Distribution::Uniform, 5, 0.0).unwrap(),
            read_share: 1.0,
            bulk,
            raw,
            value: Vec::new(),
        };
        let mut buf = Vec::new();
        let raw = Plan::new("h:1", "/v/", "/fixed", "", mix(true, 0));
        raw.request(&mut Rng(3), &mut buf);
        assert_eq!(buf, b"GET /fixed HTTP/1.1\r\nhost: h:1\r\n\r\n");

        let bulk = Plan::new("h:1", "/v/", "/bulk", "t", mix(false, 3));
        bulk.request(&mut Rng(3), &mut buf);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head) = request.parse(&buf).unwrap() else {
            panic!("incomplete request");
        };
        assert_eq!(request.method, Some("POST"));
        assert_eq!(request.path, Some("/bulk"));
        let body: serde_json::Value = serde_json::from_slice(&buf[head..]).unwrap();
        assert_eq!(body["keys"].as_array().unwrap().len(), 3);
        let header = |name: &str| request.headers.iter().find(|h| h.name == name).unwrap();
        assert_eq!(header("authorization").value, b"Bearer t");
        let length = header("content-length").value;
        assert_eq!(length, (buf.len() - head).to_string().as_bytes());
    }
}
