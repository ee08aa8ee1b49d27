//! The end-to-end benchmark of the read path, beside the physical limit of the
//! HTTP stack, in one run on one machine with one load tool (`edgekv bench`):
//!
//! - (a) `baseline`: a bare hyper server answering a fixed body of the same size,
//!   sent the same request (path and `authorization` header) as the edge;
//! - (a′) the same server also sending the two headers of every hot answer of the
//!   edge (`baseline_headers`): what the edge's contract costs in HTTP
//!   work alone, so that the rest of the edge's cost is its own;
//! - (b) hot GET: every key fresh in the edge's hot tier; and the same over one
//!   key, which leaves out the cost of cache misses over many keys and so shows
//!   the request path's own work;
//! - (c) warm GET: keys in the edge's RocksDB, the hot tier at its 1 MiB minimum;
//! - (d) a 90/10 read/write mix over the hot keys (writes go through the origin),
//!   alternating with (a) in [`MIX_PAIRS`] pairs and judged by req/s (the target:
//!   0.5× the bare server);
//! - (e) bulk gets of 100 hot keys of 100 bytes, in keys per second (three runs,
//!   the median reported);
//! - and (a) and (b) again at one fixed rate, to compare p99 where neither server
//!   is saturated ([`RATE_PAIRS`] alternating pairs of `--rate-duration`, 10 s);
//! - and (a) and (b) again with a load generator that busy-polls (`--spin`): on
//!   one machine, an answer to a sleeping client costs the server's core a
//!   cross-core wake-up, which a client across a network never costs it, and the
//!   slower server finds the client asleep more often.
//!
//! - and a check that the load tool is not the bottleneck: `wrk` and `edgekv
//!   bench` alternating against the bare server, by requests per second and by
//!   each tool's own CPU time per request ([`wrk_check`]).
//!
//! Servers run on core 0 and the load tool (and the origin) on core 1 when the
//! machine has two cores and `taskset` exists. For each run it reports throughput,
//! latency percentiles, and the server's CPU time per request (from
//! `/proc/PID/stat`), which does not depend on the load generator. Hot and warm
//! runs alternate with the bare server, and each back-to-back pair gives a ratio;
//! the table of targets judges the median ratio by its bootstrap interval
//! ([`stats`]), so a target is called met or missed only beyond the run's noise.
//! More pairs narrow the interval for a given spread (`--pairs 31 --duration 3s`);
//! still, pairs within one run are not independent (a phase of the machine can
//! move a ratio for minutes), so a second run is the check of a verdict. The table,
//! with the machine and versions, replaces the section between the
//! `<!-- e2e:begin -->` and `<!-- e2e:end -->` markers of `benches/RESULTS.md`.
//!
//! Run with `make bench-e2e` (it builds the `bench` profile first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use edgekv_benches::refs;

mod stats;

use stats::{Interval, Verdict};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const ACCOUNT: &str = "bench";

/// A process that is killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    bin: PathBuf,
    pin: bool,
    dir: tempfile::TempDir,
    duration: String,
    /// The duration of each run at the fixed rate: longer than the saturated
    /// runs, so that one stall of the machine (tens of milliseconds, every half
    /// minute or so here) is a smaller part of the run than its 1% tail.
    rate_duration: String,
    connections: usize,
    /// The origin's store: rocksdb or postgres.
    store: String,
}

impl Setup {
    fn command(&self, core: u8, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.pin {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Starts a server on `core` and waits for the line that names its URL.
    fn start(
        &self,
        core: u8,
        program: &str,
        args: &[&str],
        marker: &str,
    ) -> anyhow::Result<Server> {
        let mut child = self
            .command(core, program)
            .args(args)
            .env("EDGEKV_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .with_context(|| format!("{program} exited before it was ready"))??;
            if line.contains(marker) {
                let url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .context("no URL in the ready line")?;
                break url.trim_end_matches(')').to_string();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, url })
    }

    /// Runs `edgekv bench` on the load core for the run's duration; returns its
    /// JSON report.
    fn bench(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        self.bench_for(&self.duration, args)
    }

    /// [`Setup::bench`] for `duration`.
    fn bench_for(&self, duration: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let json = self.dir.path().join("run.json");
        let status = self
            .command(1, "edgekv")
            .arg("bench")
            .args(["--threads", "1", "--quiet", "--json"])
            .arg(&json)
            .args(["-c", &self.connections.to_string(), "-d", duration])
            .args(args)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("edgekv bench {args:?} failed");
        }
        Ok(serde_json::from_slice(&std::fs::read(&json)?)?)
    }
}

/// The user and system CPU time of a process so far, in seconds.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    user: f64,
    system: f64,
}

/// The CPU time a process has used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<Cpu> {
    stat_cpu(&format!("/proc/{pid}/stat"), 11)
}

/// The CPU time of this process's children that have been waited for (the load
/// tools: under `taskset` each is exec'd in place, so its time is the child's).
/// The difference around one run of a tool is that run's CPU time.
fn children_cpu() -> anyhow::Result<Cpu> {
    stat_cpu("/proc/self/stat", 13)
}

/// The user and system times at fields `at` and `at + 1` of a `/proc` stat file,
/// counted from the field after the command name (utime is 11, cutime 13).
fn stat_cpu(path: &str, at: usize) -> anyhow::Result<Cpu> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // In ticks; CLK_TCK is 100 on every Linux this runs on.
    let seconds = |i: usize| -> anyhow::Result<f64> {
        let field = fields.get(i).context("short /proc stat")?;
        Ok(field.parse::<f64>()? / 100.0)
    };
    Ok(Cpu {
        user: seconds(at)?,
        system: seconds(at + 1)?,
    })
}

impl Cpu {
    /// The CPU time, user and system, from `before` to `self`.
    fn since(self, before: Cpu) -> f64 {
        self.user - before.user + self.system - before.system
    }
}

/// The pid of the server itself (under `taskset`, the child is exec'd in place).
fn pid(server: &Server) -> u32 {
    server.child.id()
}

/// One measured run.
struct Row {
    name: String,
    report: serde_json::Value,
    cpu_us_per_request: f64,
    /// The user-space part of `cpu_us_per_request`: the server's own work, where
    /// the rest is the kernel's (sockets, wake-ups).
    user_us_per_request: f64,
    /// The load tool's CPU time per request, user and system.
    tool_us_per_request: f64,
    saturation: f64,
    per_request: f64,
}

fn measure(setup: &Setup, name: &str, server: &Server, args: &[&str]) -> anyhow::Result<Row> {
    measure_for(setup, &setup.duration, name, server, args)
}

/// [`measure`] for `duration`.
fn measure_for(
    setup: &Setup,
    duration: &str,
    name: &str,
    server: &Server,
    args: &[&str],
) -> anyhow::Result<Row> {
    let before = cpu_seconds(pid(server))?;
    let tool_before = children_cpu()?;
    let report = setup.bench_for(duration, args)?;
    let tool = children_cpu()?.since(tool_before);
    let after = cpu_seconds(pid(server))?;
    let user = after.user - before.user;
    let cpu = after.since(before);
    let requests = report["requests"].as_f64().unwrap_or(0.0).max(1.0);
    let wall = report["duration_s"].as_f64().unwrap_or(1.0);
    let row = Row {
        name: name.to_string(),
        cpu_us_per_request: cpu * 1e6 / requests,
        user_us_per_request: user * 1e6 / requests,
        tool_us_per_request: tool * 1e6 / requests,
        saturation: cpu / wall,
        per_request: report["keys_per_s"].as_f64().unwrap_or(0.0)
            / report["throughput_rps"].as_f64().unwrap_or(1.0).max(1e-9),
        report,
    };
    eprintln!(
        "{name}: {:.0} req/s, p99 {:.3} ms, {:.2} µs CPU/request ({:.2} user), server core {:.0}% busy",
        row.report["throughput_rps"].as_f64().unwrap_or(0.0),
        p99_of(&row),
        row.cpu_us_per_request,
        row.user_us_per_request,
        row.saturation * 100.0
    );
    Ok(row)
}

/// How many times `wrk` and `edgekv bench` alternate in [`wrk_check`].
const WRK_PAIRS: usize = 7;

/// What [`wrk_check`] found, pair by pair: `edgekv bench`'s requests per second
/// over `wrk`'s, and its CPU time per request over `wrk`'s.
struct GeneratorCheck {
    text: String,
    throughput: Summary,
    cpu: Summary,
}

/// Checks that the load tool is not the bottleneck (it should reach at least what
/// `wrk` does): `wrk` and `edgekv bench` against the bare server with the same
/// connections, duration, core and request bytes (the `authorization` header
/// too), alternating [`WRK_PAIRS`] times — one run of each is at the machine's
/// mercy, as back-to-back runs of one tool differ by a fifth here.
///
/// Two ratios: the requests per second, which against a saturated server
/// measure mostly the server (ratios near 1 whichever tool is faster); and each
/// tool's own CPU time per request, which does not depend on the server: a tool
/// that spends no more of its core per request than `wrk` does reaches at least
/// `wrk`'s rate wherever `wrk` is not itself the limit. `None` when `wrk` is not
/// installed or fails.
fn wrk_check(
    setup: &Setup,
    url: &str,
    ours: &dyn Fn() -> anyhow::Result<Row>,
) -> Option<GeneratorCheck> {
    let mut runs = Vec::new();
    for _ in 0..WRK_PAIRS {
        let wrk = wrk_once(setup, url)?;
        let row = ours().ok()?;
        let edgekv = Generated {
            rate: row.report["throughput_rps"].as_f64()?,
            cpu_us_per_request: row.tool_us_per_request,
        };
        eprintln!(
            "against the bare server: wrk {:.0} req/s, {:.2} µs CPU/request; edgekv bench {:.0} req/s, {:.2} µs CPU/request",
            wrk.rate, wrk.cpu_us_per_request, edgekv.rate, edgekv.cpu_us_per_request
        );
        runs.push((wrk, edgekv));
    }
    let list = |f: fn(&(Generated, Generated)) -> String| {
        runs.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let ratios = |f: fn(&Generated) -> f64| {
        summarize(
            runs.iter()
                .map(|(wrk, ours)| f(ours) / f(wrk).max(1e-9))
                .collect(),
        )
    };
    let throughput = ratios(|g| g.rate);
    let cpu = ratios(|g| g.cpu_us_per_request);
    let text = format!(
        "Load generator check, against the bare hyper server from the same core, the two tools alternating: \
         `wrk -t1 -c{c}` {} req/s, `edgekv bench --threads 1 -c {c}` {} req/s; pair by pair {}, \
         median **{:.2}×**{}. The tools' own CPU µs/request: `wrk` {}, `edgekv bench` {}; \
         `edgekv bench` ÷ `wrk` pair by pair {}, median **{:.2}×**{}.",
        list(|r| format!("{:.0}", r.0.rate)),
        list(|r| format!("{:.0}", r.1.rate)),
        throughput.list,
        throughput.median,
        interval_text(throughput.interval, " (", ")"),
        list(|r| format!("{:.2}", r.0.cpu_us_per_request)),
        list(|r| format!("{:.2}", r.1.cpu_us_per_request)),
        cpu.list,
        cpu.median,
        interval_text(cpu.interval, " (", ")"),
        c = setup.connections,
    );
    Some(GeneratorCheck {
        text,
        throughput,
        cpu,
    })
}

/// One load tool's run: its requests per second and its CPU time per request.
struct Generated {
    rate: f64,
    cpu_us_per_request: f64,
}

/// One `wrk` run against `url`.
fn wrk_once(setup: &Setup, url: &str) -> Option<Generated> {
    let mut command = if setup.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    let before = children_cpu().ok()?;
    let out = command
        .args([
            "-t1",
            &format!("-c{}", setup.connections),
            &format!("-d{}", setup.duration),
            "-H",
            &format!("authorization: Bearer {TOKEN}"),
            url,
        ])
        .output()
        .ok()?;
    let cpu = children_cpu().ok()?.since(before);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rate = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    // "  622264 requests in 4.10s, 128.78MB read"
    let requests: f64 = stdout
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))?
        .0
        .parse()
        .ok()?;
    Some(Generated {
        rate,
        cpu_us_per_request: cpu * 1e6 / requests.max(1.0),
    })
}

/// Runs each of `runs` once per round, in order, for `rounds` rounds: back to
/// back, so that the machine's drift hits every side of a comparison alike.
/// Returns the runs of each.
fn alternate<const N: usize>(
    rounds: usize,
    runs: [&dyn Fn() -> anyhow::Result<Row>; N],
) -> anyhow::Result<[Vec<Row>; N]> {
    let mut rows: [Vec<Row>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for _ in 0..rounds {
        for (run, rows) in runs.iter().zip(rows.iter_mut()) {
            rows.push(run()?);
        }
    }
    Ok(rows)
}

/// The run with the median CPU per request.
fn median(mut runs: Vec<Row>) -> Row {
    runs.sort_by(|a, b| a.cpu_us_per_request.total_cmp(&b.cpu_us_per_request));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// What the back-to-back pairs of two servers say: the CPU-per-request ratio of
/// each pair, their median and its bootstrap interval, in words and in figures.
struct Paired {
    text: String,
    median: f64,
    /// `None` with fewer pairs than [`stats::MIN_VALUES`].
    interval: Option<Interval>,
}

fn p99_of(row: &Row) -> f64 {
    row.report["latency_ms"]["p99"].as_f64().unwrap_or(0.0)
}

/// How many times the bare server and the hot GET alternate at the fixed rate.
const RATE_PAIRS: usize = 5;

/// How many times the bare server and the 90/10 mix alternate.
const MIX_PAIRS: usize = 7;

fn throughput(row: &Row) -> f64 {
    row.report["throughput_rps"].as_f64().unwrap_or(0.0)
}

/// The 90/10 mix ÷ the bare server, req/s, pair by pair: their median and its
/// interval.
fn paired_throughput(base: &[Row], mix: &[Row]) -> Paired {
    let ratios = summarize(
        base.iter()
            .zip(mix)
            .map(|(a, b)| throughput(b) / throughput(a).max(1e-9))
            .collect(),
    );
    let rps = |runs: &[Row]| {
        runs.iter()
            .map(|r| format!("{:.0}", throughput(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "The 90/10 mix and the bare server, alternating, req/s: bare hyper {}; mix {}. \
         Mix ÷ bare hyper, req/s, pair by pair: {}; median **{:.2}×**{}.",
        rps(base),
        rps(mix),
        ratios.list,
        ratios.median,
        ratios
            .interval
            .map(|i| format!(" (95% bootstrap interval {:.2}–{:.2}×)", i.low, i.high))
            .unwrap_or_default(),
    );
    Paired {
        text,
        median: ratios.median,
        interval: ratios.interval,
    }
}

/// The run of median throughput.
fn median_throughput(mut runs: Vec<Row>) -> anyhow::Result<Row> {
    runs.sort_by(|a, b| throughput(a).total_cmp(&throughput(b)));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle).context("no mix run")
}

/// The p99 ratio of each back-to-back pair at the fixed rate.
fn paired_p99(base: &[Row], ours: &[Row]) -> Paired {
    let ratios = summarize(base.iter().zip(ours).map(p99_ratio).collect());
    let ms = |runs: &[Row]| {
        runs.iter()
            .map(|r| format!("{:.3}", p99_of(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "At the fixed rate, p99 ms of the {} alternating rounds: bare hyper {}; hot GET {}. \
         Hot GET ÷ bare hyper, p99, pair by pair: {}; median **{:.2}×**{}.",
        base.len(),
        ms(base),
        ms(ours),
        ratios.list,
        ratios.median,
        interval_text(ratios.interval, " (", ")"),
    );
    Paired {
        text,
        median: ratios.median,
        interval: ratios.interval,
    }
}

/// The p99 of the second run of a pair over the first's.
fn p99_ratio((base, ours): (&Row, &Row)) -> f64 {
    p99_of(ours) / p99_of(base).max(1e-9)
}

/// The pair of runs whose p99 ratio is the median (the upper middle of an even
/// count, as [`stats::median`] takes it): the table's rows then show the ratio
/// the targets judge.
fn median_pair([base, ours]: [Vec<Row>; 2]) -> anyhow::Result<[Row; 2]> {
    let mut pairs: Vec<(Row, Row)> = base.into_iter().zip(ours).collect();
    pairs.sort_by(|a, b| p99_ratio((&a.0, &a.1)).total_cmp(&p99_ratio((&b.0, &b.1))));
    let middle = pairs.len() / 2;
    let (base, ours) = pairs
        .into_iter()
        .nth(middle)
        .context("no fixed-rate pair")?;
    Ok([base, ours])
}

/// The bootstrap interval of the median of `ratios`, with a fixed seed: the same
/// runs always give the same interval.
fn interval_of(ratios: &[f64]) -> Option<Interval> {
    stats::median_interval(ratios, stats::RESAMPLES, 0x5eed)
}

/// "95% bootstrap interval A–B×" between `before` and `after`, or nothing without
/// an interval.
fn interval_text(interval: Option<Interval>, before: &str, after: &str) -> String {
    interval.map_or(String::new(), |i| {
        format!(
            "{before}95% bootstrap interval {:.2}–{:.2}×{after}",
            i.low, i.high
        )
    })
}

/// The CPU-per-request ratio of each back-to-back pair against the bare server.
fn paired(what: &str, base: &[Row], ours: &[Row]) -> Paired {
    paired_with(what, "bare hyper", base, ours)
}

/// The list, median and interval of pairs' ratios.
fn summarize(ratios: Vec<f64>) -> Summary {
    let list = ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    Summary {
        list,
        median: stats::median(&ratios).unwrap_or(0.0),
        interval: interval_of(&ratios),
    }
}

/// Ratios of back-to-back pairs: listed in order (two decimals), their median
/// and its bootstrap interval.
struct Summary {
    list: String,
    median: f64,
    /// `None` with fewer pairs than [`stats::MIN_VALUES`].
    interval: Option<Interval>,
}

/// [`paired`] against the runs of `base_name`.
fn paired_with(what: &str, base_name: &str, base: &[Row], ours: &[Row]) -> Paired {
    let ratios = |part: fn(&Row) -> f64| -> Vec<f64> {
        base.iter()
            .zip(ours)
            .map(|(a, b)| part(b) / part(a).max(1e-9))
            .collect()
    };
    let cpu = summarize(ratios(|row| row.cpu_us_per_request));
    let user = summarize(ratios(|row| row.user_us_per_request));
    let text = format!(
        "{what} ÷ {base_name}, CPU per request, pair by pair: {}; median **{:.2}×** \
         ({}on a saturated core that is an estimated {:.2}× the throughput). \
         User-space CPU alone: {}; median {:.2}×.",
        cpu.list,
        cpu.median,
        interval_text(cpu.interval, "", "; "),
        1.0 / cpu.median.max(1e-9),
        user.list,
        user.median,
    );
    Paired {
        text,
        median: cpu.median,
        interval: cpu.interval,
    }
}

/// A target on a paired CPU ratio, as a line of the targets table: `ceiling` is
/// the most CPU per request the target allows, against the bare server.
fn target_line(target: &str, paired: &Paired, ceiling: f64) -> String {
    format!(
        "| {target} | ≤ {ceiling:.3}× CPU/req | {:.2}× (median of the pairs; {:.2}× the throughput) | {} |\n",
        paired.median,
        1.0 / paired.median.max(1e-9),
        judged(paired.interval, |i| Verdict::at_most(i, ceiling)),
    )
}

/// An interval and its verdict, as the last two cells of a targets line. Three
/// decimals, so that an interval does not look inside a bound it is past.
fn judged(interval: Option<Interval>, verdict: impl Fn(Interval) -> Verdict) -> String {
    match interval {
        Some(i) => format!("{:.3}–{:.3}× | {}", i.low, i.high, verdict(i).text()),
        None => format!("— | not decided: fewer than {} pairs", stats::MIN_VALUES),
    }
}

fn cpu_list(runs: &[Row]) -> String {
    runs.iter()
        .map(|r| format!("{:.2} ({:.2})", r.cpu_us_per_request, r.user_us_per_request))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shell(command: &str) -> String {
    Command::new("sh")
        .args(["-c", command])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let mut duration = "4s".to_string();
    let mut rate_duration = "10s".to_string();
    let mut keys = 10_000u64;
    let mut connections = 64usize;
    let mut pair_count = 15usize;
    let mut store = String::from("rocksdb");
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"));
    const USAGE: &str = "--duration D --rate-duration D --keys N --connections C --pairs P \
         --store rocksdb|postgres --out FILE";
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("usage: e2e {USAGE}");
            return Ok(());
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration" => duration = value,
            "--rate-duration" => rate_duration = value,
            "--keys" => keys = value.parse()?,
            "--connections" => connections = value.parse()?,
            "--pairs" => pair_count = value.parse::<usize>()?.max(1),
            // The origin's store: RocksDB, or a throwaway PostgreSQL server.
            "--store" if value == "rocksdb" || value == "postgres" => store = value,
            "--out" => out = value.into(),
            other => bail!("unknown flag {other}: {USAGE}"),
        }
    }
    let bin = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .to_path_buf();
    for program in ["edgekv", "baseline", "baseline_headers"] {
        if !bin.join(program).exists() {
            bail!(
                "{} is missing: build with `cargo build --profile bench -p edgekv -p edgekv-benches` (make bench-e2e does)",
                bin.join(program).display()
            );
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cores >= 2 && Command::new("taskset").arg("-V").output().is_ok();
    let setup = Setup {
        bin,
        pin,
        dir: tempfile::tempdir()?,
        duration,
        rate_duration,
        connections,
        store: store.clone(),
    };
    let dir = setup.dir.path();
    std::fs::write(dir.join("credential"), "bench-credential\n")?;
    let credential = dir.join("credential");
    let credential = credential.to_str().context("path")?;

    // (a) the bare hyper server, with a body the size of a value.
    let baseline = setup.start(
        0,
        "baseline",
        &["--listen", "127.0.0.1:0", "--body-size", "100"],
        "listening",
    )?;
    let headed = setup.start(
        0,
        "baseline_headers",
        &["--listen", "127.0.0.1:0", "--body-size", "100"],
        "listening",
    )?;
    // The origin (on the load core: it only matters for the fill and the writes),
    // over RocksDB or over a PostgreSQL server of its own.
    let origin_data = dir.join("origin");
    let mut origin_args =
        edgekv_benches::origin_args(origin_data.to_str().context("path")?, credential);
    let postgres = (store == "postgres")
        .then(edgekv_store_postgres::testing::TestPostgres::try_start)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--store postgres: {e}"))?;
    if let Some(server) = &postgres {
        origin_args.extend(["--store".to_string(), server.database()]);
    }
    let origin = setup.start(1, "edgekv", &refs(&origin_args), "listening")?;
    let edge = |name: &str, hot_bytes: &str| -> anyhow::Result<Server> {
        let data = dir.join(name);
        let args = edgekv_benches::edge_args(
            &origin.url,
            credential,
            data.to_str().context("path")?,
            ACCOUNT,
            TOKEN,
            hot_bytes,
        );
        setup.start(0, "edgekv", &refs(&args), "listening on")
    };
    let hot_edge = edge("edge-hot", "1073741824")?;
    let hot_url = hot_edge.url.clone();
    let keys_text = keys.to_string();
    let kv = |url: &str| {
        vec![
            "--url".to_string(),
            url.to_string(),
            "--token".into(),
            TOKEN.into(),
            "--account".into(),
            ACCOUNT.into(),
        ]
    };
    // Fill and prime the hot edge; learn the namespace from the report's URL.
    let namespace = {
        let mut args = kv(&hot_url);
        args.extend([
            "--keys".into(),
            keys_text.clone(),
            "--prime".into(),
            "--requests".into(),
            "1".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = setup.bench(&args)?;
        report["namespace"]
            .as_str()
            .context("the report names no namespace")?
            .to_string()
    };
    // Reads of the first `keys` of the filled hot namespace.
    let hot_over = |keys: &str, extra: &[&str]| -> Vec<String> {
        let mut args = kv(&hot_url);
        args.extend([
            "--namespace".into(),
            namespace.clone(),
            "--no-fill".into(),
            "--keys".into(),
            keys.into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let hot = |extra: &[&str]| hot_over(&keys_text, extra);
    let value_path = format!(
        "{}/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{namespace}/values/bench-00000001",
        baseline.url
    );
    // (a) and (b) alternate and each reports its median run (by CPU per request);
    // the ratio of each back-to-back pair is reported too: the machine's drift
    // then hits both sides of a ratio alike.
    let bare = || {
        measure(
            &setup,
            "(a) bare hyper, 100 B body",
            &baseline,
            &["--raw", "--token", TOKEN, "--url", &value_path],
        )
    };
    let one_key = hot_over("1", &[]);
    let pairs = alternate(
        pair_count,
        [
            &bare,
            &|| {
                let args = hot(&[]);
                measure(&setup, "(b) edgekv hot GET, 100 B", &hot_edge, &refs(&args))
            },
            &|| {
                let name = "(b) edgekv hot GET, one key, 100 B";
                measure(&setup, name, &hot_edge, &refs(&one_key))
            },
            &|| {
                let name = "(a′) bare hyper + the edge's two headers, 100 B body";
                let url = value_path.replacen(&baseline.url, &headed.url, 1);
                measure(
                    &setup,
                    name,
                    &headed,
                    &["--raw", "--token", TOKEN, "--url", &url],
                )
            },
        ],
    )?;
    let hot_paired = paired("hot GET", &pairs[0], &pairs[1]);
    let mut spread = format!(
        "CPU µs/request (user-space part in brackets) of the {pair_count} alternating rounds: bare hyper {}; hot GET {}; \
         hot GET of one key {}; bare hyper + the edge's two headers {}. {} {} {} {}",
        cpu_list(&pairs[0]),
        cpu_list(&pairs[1]),
        cpu_list(&pairs[2]),
        cpu_list(&pairs[3]),
        hot_paired.text,
        paired("hot GET of one key", &pairs[0], &pairs[2]).text,
        paired("Bare hyper + the edge's two headers", &pairs[0], &pairs[3]).text,
        paired_with(
            "Hot GET",
            "bare hyper + the edge's two headers",
            &pairs[3],
            &pairs[1]
        )
        .text,
    );
    // The same comparison with a load generator that never sleeps.
    let spinning = alternate(
        pair_count,
        [
            &|| {
                let name = "(a) bare hyper, spinning load generator";
                let args = ["--raw", "--token", TOKEN, "--url", &value_path, "--spin"];
                measure(&setup, name, &baseline, &args)
            },
            &|| {
                let args = hot(&["--spin"]);
                let name = "(b) edgekv hot GET, spinning load generator";
                measure(&setup, name, &hot_edge, &refs(&args))
            },
        ],
    )?;
    spread.push_str(&format!(
        "\n\nWith a spinning load generator (`edgekv bench --spin`), CPU µs/request: bare hyper {}; hot GET {}. {}",
        cpu_list(&spinning[0]),
        cpu_list(&spinning[1]),
        paired("hot GET, spinning load generator,", &spinning[0], &spinning[1]).text,
    ));
    let mut rows = Vec::from(pairs.map(median));
    let generator = wrk_check(&setup, &value_path, &bare);
    // Bulk gets have an absolute target (keys per second on one core), which the
    // machine's drift moves as a whole: three runs, the median reported.
    let mut bulk = Vec::new();
    for _ in 0..3 {
        bulk.push(measure(
            &setup,
            "(e) edgekv bulk get, 100 hot keys",
            &hot_edge,
            &refs(&hot(&["--bulk-get", "100"])),
        )?);
    }
    spread.push_str(&format!(
        "\n\nBulk get, keys/s of the three runs: {}.",
        bulk.iter()
            .map(|r| format!("{:.0}", r.report["keys_per_s"].as_f64().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    rows.push(median(bulk));
    // Fixed rate: half of what the baseline reached, so neither server saturates.
    let rate = ((rows[0].report["throughput_rps"]
        .as_f64()
        .unwrap_or(20_000.0)
        .min(
            rows[1].report["throughput_rps"]
                .as_f64()
                .unwrap_or(20_000.0),
        ))
        / 2.0) as u64;
    let rate_text = rate.to_string();
    // Alternating, as the saturated runs do, and longer: a p99 is the tail of one
    // run, which a stall of the machine moves on its own (4 s runs read 3.3× and
    // 17× where the others read 0.6–1.2×; the bare server's runs stall too), so
    // the ratio is judged over pairs.
    let bare_args = [
        "--raw",
        "--token",
        TOKEN,
        "--url",
        &value_path,
        "--rate",
        &rate_text,
    ];
    let hot_args = hot(&["--rate", &rate_text]);
    let at_rate = alternate(
        RATE_PAIRS,
        [
            &|| {
                let name = format!("(a) bare hyper at {rate} req/s");
                measure_for(&setup, &setup.rate_duration, &name, &baseline, &bare_args)
            },
            &|| {
                let name = format!("(b) edgekv hot GET at {rate} req/s");
                let args = refs(&hot_args);
                measure_for(&setup, &setup.rate_duration, &name, &hot_edge, &args)
            },
        ],
    )?;
    let p99_paired = paired_p99(&at_rate[0], &at_rate[1]);
    spread.push_str(&format!("\n\n{}", p99_paired.text));
    rows.extend(median_pair(at_rate)?);
    // The mix last: its writes land in the edge's RocksDB too, and the flushes and
    // compactions that follow would be counted against the runs after it.
    // Alternating with the bare server, judged by throughput: the mix is another
    // workload than a GET, so its CPU per request is no measure of the target.
    let mix_args = hot(&["--reads", "90"]);
    let [mix_base, mix_runs] = alternate(
        MIX_PAIRS,
        [&bare, &|| {
            let name = "(d) edgekv 90/10 read/write, hot keys";
            measure(&setup, name, &hot_edge, &refs(&mix_args))
        }],
    )?;
    let mix = paired_throughput(&mix_base, &mix_runs);
    spread.push_str(&format!("\n\n{}", mix.text));
    rows.push(median_throughput(mix_runs)?);
    rows.extend(spinning.map(median));
    drop(hot_edge);

    // (c) warm: the keys in RocksDB, the hot tier at its minimum.
    let warm_keys = (keys * 10).to_string();
    let warm_edge = edge("edge-warm", "1048576")?;
    let warm_namespace = {
        let mut args = kv(&warm_edge.url);
        args.extend([
            "--keys".into(),
            warm_keys.clone(),
            "--requests".into(),
            "1".into(),
        ]);
        let report = setup.bench(&refs(&args))?;
        report["namespace"]
            .as_str()
            .context("no namespace")?
            .to_string()
    };
    let mut warm_args = kv(&warm_edge.url);
    warm_args.extend([
        "--namespace".into(),
        warm_namespace,
        "--no-fill".into(),
        "--keys".into(),
        warm_keys.clone(),
    ]);
    // Warm runs alternate with the bare server too.
    let warm_pairs = alternate(
        pair_count,
        [&bare, &|| {
            let name = "(c) edgekv warm GET (RocksDB), 100 B";
            measure(&setup, name, &warm_edge, &refs(&warm_args))
        }],
    )?;
    let warm_paired = paired("warm GET", &warm_pairs[0], &warm_pairs[1]);
    spread.push_str(&format!(
        "\n\nCPU µs/request (user-space part in brackets) of the warm runs: bare hyper {}; warm GET {}. {}",
        cpu_list(&warm_pairs[0]),
        cpu_list(&warm_pairs[1]),
        warm_paired.text,
    ));
    let [_, warm_runs] = warm_pairs;
    rows.insert(3, median(warm_runs));
    // (a′) beside (a) in the table.
    if let Some(at) = rows.iter().position(|row| row.name.starts_with("(a′)")) {
        let headed_row = rows.remove(at);
        rows.insert(1, headed_row);
    }
    drop(warm_edge);
    drop(origin);
    drop(baseline);
    drop(headed);

    let mut table = render(&rows, keys, &warm_keys, pin, cores, &setup)?;
    table.push_str(&targets(
        &rows,
        &hot_paired,
        &warm_paired,
        &p99_paired,
        &mix,
        generator.as_ref(),
    ));
    table.push_str(&format!("\n{spread}\n"));
    if let Some(check) = &generator {
        table.push_str(&format!("\n{}\n", check.text));
    }
    println!("{table}");
    write_results(&out, &table)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn render(
    rows: &[Row],
    keys: u64,
    warm_keys: &str,
    pin: bool,
    cores: usize,
    setup: &Setup,
) -> anyhow::Result<String> {
    // Each row against the bare server's run with the same load generator.
    let base_of = |row: &Row| {
        let spinning = row.name.contains("spinning");
        rows.iter()
            .find(|x| {
                x.name.starts_with("(a)")
                    && !x.name.contains(" at ")
                    && x.name.contains("spinning") == spinning
            })
            .unwrap_or(&rows[0])
    };
    let mut t = String::new();
    let machine = shell("lscpu | sed -n 's/^Model name: *//p' | head -1");
    t.push_str(&format!(
        "## {} — read path beside a bare hyper server (`make bench-e2e`)\n\n",
        shell("date -u +%Y-%m-%d")
    ));
    t.push_str(&format!(
        "Machine: {cores} × {machine}, {}, kernel {}; {}; edgekv {}; `bench` profile. \
         {} connections, {} per run ({} at the fixed rate), 100 B values, {keys} hot keys (warm: {warm_keys} keys). \
         Servers {}; the origin shares the load generator's core; the origin's store: {}.\n\n",
        shell("free -g | awk '/Mem:/ {print $2\" GiB\"}'"),
        shell("uname -r"),
        shell("rustc -V"),
        env!("CARGO_PKG_VERSION"),
        setup.connections,
        setup.duration,
        setup.rate_duration,
        if pin {
            "on core 0, `edgekv bench` on core 1 (taskset)"
        } else {
            "and load generator unpinned (one core, or no taskset)"
        },
        setup.store,
    ));
    t.push_str("| run | req/s | keys/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU µs/req (user) | server core busy | vs bare hyper |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        let r = &row.report;
        let l = &r["latency_ms"];
        let tput = r["throughput_rps"].as_f64().unwrap_or(0.0);
        let versus = if row.name.starts_with("(a)") {
            "baseline".to_string()
        } else if row.name.contains(" at ") {
            let base = rows
                .iter()
                .find(|x| x.name.starts_with("(a)") && x.name.contains(" at "));
            format!(
                "p99 {:.2}×",
                base.map_or(0.0, |base| p99_ratio((base, row)))
            )
        } else if row.per_request > 1.5 {
            format!(
                "{:.0} keys/s per busy server core",
                r["keys_per_s"].as_f64().unwrap_or(0.0) / row.saturation.max(1e-9)
            )
        } else {
            let base = base_of(row);
            let base_tput = base.report["throughput_rps"].as_f64().unwrap_or(1.0);
            format!(
                "{:.2}× req/s; {:.2}× CPU/req",
                tput / base_tput.max(1e-9),
                row.cpu_us_per_request / base.cpu_us_per_request.max(1e-9)
            )
        };
        t.push_str(&format!(
            "| {} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} ({:.2}) | {:.0}% | {} |\n",
            row.name,
            tput,
            if row.per_request > 1.5 {
                format!("{:.0}", r["keys_per_s"].as_f64().unwrap_or(0.0))
            } else {
                "".into()
            },
            l["p50"].as_f64().unwrap_or(0.0),
            l["p90"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["p99.9"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0),
            row.cpu_us_per_request,
            row.user_us_per_request,
            row.saturation * 100.0,
            versus
        ));
    }
    t.push_str("\nA throughput ratio means something only where the server core was saturated (busy ≈ 100%); otherwise compare the CPU per request, or p99 at the fixed rate.\n");
    Ok(t)
}

/// The issue's targets against this run. The paired CPU ratios and the load-tool
/// check are judged by their bootstrap intervals: met or missed only beyond the
/// run's noise, and so is the p99 at the fixed rate (pairs of its own). The bulk
/// target is a single figure (a median of three runs), judged as it is.
fn targets(
    rows: &[Row],
    hot: &Paired,
    warm: &Paired,
    p99: &Paired,
    mix: &Paired,
    generator: Option<&GeneratorCheck>,
) -> String {
    let mut t = String::from(
        "\n| target | bound | this run | 95% interval | verdict |\n|---|---|---|---|---|\n",
    );
    // 0.9× the throughput on a saturated core is 1/0.9 the CPU per request.
    t.push_str(&target_line("hot GET ≥ 0.9× bare", hot, 1.0 / 0.9));
    t.push_str(&target_line("warm GET ≥ 0.6× bare", warm, 1.0 / 0.6));
    t.push_str(&format!(
        "| hot GET p99 at the same rate | ≤ 1.5× bare | {:.2}× (median of {RATE_PAIRS} pairs) | {} |\n",
        p99.median,
        judged(p99.interval, |i| Verdict::at_most(i, 1.5))
    ));
    t.push_str(&format!(
        "| 90/10 read/write mix | ≥ 0.5× bare, req/s | {:.2}× (median of {MIX_PAIRS} pairs) | {} |\n",
        mix.median,
        judged(mix.interval, |i| Verdict::at_least(i, 0.5))
    ));
    if let Some(bulk) = rows.iter().find(|row| row.name.starts_with("(e)")) {
        let per_core =
            bulk.report["keys_per_s"].as_f64().unwrap_or(0.0) / bulk.saturation.max(1e-9);
        t.push_str(&format!(
            "| bulk get | ≥ 1,000,000 keys/s per server core | {:.2} M (median of three runs) | — | {} |\n",
            per_core / 1e6,
            if per_core >= 1_000_000.0 { "met" } else { "missed" }
        ));
    }
    if generator.is_none() {
        t.push_str(
            "| load tool not the bottleneck | ≥ `wrk` | — | — | not run: `wrk` is not installed, or failed |\n",
        );
    }
    if let Some(check) = generator {
        t.push_str(&format!(
            "| load tool not the bottleneck | ≥ 1.00× wrk's req/s | {:.2}× (median of {WRK_PAIRS} pairs) | {} |\n",
            check.throughput.median,
            judged(check.throughput.interval, |i| Verdict::at_least(i, 1.0))
        ));
        t.push_str(&format!(
            "| load tool not the bottleneck | ≤ 1.00× wrk's own CPU/req | {:.2}× (median of {WRK_PAIRS} pairs) | {} |\n",
            check.cpu.median,
            judged(check.cpu.interval, |i| Verdict::at_most(i, 1.0))
        ));
    }
    t
}

/// Replaces the section between the markers (or appends it).
fn write_results(path: &Path, table: &str) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- e2e:begin -->";
    const END: &str = "<!-- e2e:end -->";
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{BEGIN}\n{table}{END}");
    let next = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{}\n\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, next)?;
    Ok(())
}
