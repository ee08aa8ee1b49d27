//! Resident memory per key of the edge's hot tier.
//!
//! Two edges of one origin take the same fill of N keys of 100 bytes (default
//! 1,000,000): one with a hot tier large enough for all of them, one with the
//! hot tier at its 1 MiB minimum. Both grow by what the fill costs outside the hot
//! tier (RocksDB memtables and block cache, allocator slack); the difference of
//! their growth is what holding the keys in memory costs. It reports that per
//! key, and beside it the payload (key + value) and what the hot tier counts
//! against its budget.
//!
//! Both edges run with one malloc arena (`MALLOC_ARENA_MAX=1`). With glibc's
//! default of an arena per thread (up to 8 per core), which thread allocates an
//! entry varies from run to run, and so does the slack each arena keeps: two
//! identical fills of the hot edge ended 40 MB apart (40 B per key). With one
//! arena they repeat within about 1 MB, so the figure is the tier's, not the
//! arenas' luck.
//!
//! Run with `make bench-memory` (it builds the `bench` profile first).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use edgekv_benches::refs;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Server {
    child: Child,
    url: String,
    admin: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &std::path::Path, args: &[&str], marker: &str) -> anyhow::Result<Server> {
    let mut child = Command::new(bin.join("edgekv"))
        .args(args)
        .env("EDGEKV_LOG", "warn")
        .env("MALLOC_ARENA_MAX", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let line = loop {
        let line = lines.next().context("exited before it was ready")??;
        if line.contains(marker) {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let mut urls = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches(')').to_string());
    Ok(Server {
        child,
        url: urls.next().context("no URL")?,
        admin: urls.next(),
    })
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
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

fn metric(admin: &str, name: &str) -> anyhow::Result<f64> {
    let out = Command::new("curl")
        .args(["-s", &format!("{admin}/metrics")])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .context("no such metric")?
        .parse()
        .map_err(Into::into)
}

fn main() -> anyhow::Result<()> {
    let keys: u64 = std::env::args()
        .nth(1)
        .map(|k| k.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let bin = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .to_path_buf();
    if !bin.join("edgekv").exists() {
        bail!(
            "build with `cargo build --profile bench -p edgekv -p edgekv-benches` first (make bench-memory does)"
        );
    }
    let dir = tempfile::tempdir()?;
    let path = |p: &str| dir.path().join(p).display().to_string();
    std::fs::write(dir.path().join("credential"), "bench\n")?;
    let origin = start(
        &bin,
        &refs(&edgekv_benches::origin_args(
            &path("origin"),
            &path("credential"),
        )),
        "listening",
    )?;
    let edge = |name: &str, hot: &str| {
        let args = edgekv_benches::edge_args(
            &origin.url,
            &path("credential"),
            &path(name),
            "bench",
            TOKEN,
            hot,
        );
        start(&bin, &refs(&args), "listening on")
    };
    let mut grown = Vec::new();
    for (name, hot) in [("hot", "4294967296"), ("cold", "1048576")] {
        let server = edge(name, hot)?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let before = rss(server.child.id())?;
        let status = Command::new(bin.join("edgekv"))
            .args([
                "bench",
                "--url",
                &server.url,
                "--token",
                TOKEN,
                "--account",
                "bench",
                "--keys",
                &keys.to_string(),
                "--requests",
                "1",
                "--quiet",
            ])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("the fill failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let after = rss(server.child.id())?;
        let admin = server.admin.clone().context("no admin URL")?;
        let entries = metric(&admin, "edgekv_hot_entries")?;
        let counted = metric(&admin, "edgekv_hot_bytes")?;
        eprintln!(
            "{name} edge: RSS {:.1} MiB → {:.1} MiB; hot tier {entries} entries, {:.1} MiB counted",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            counted / 1048576.0
        );
        grown.push((after.saturating_sub(before), entries, counted));
    }
    let (hot_growth, entries, counted) = grown[0];
    let cold_growth = grown[1].0;
    let per_key = (hot_growth as f64 - cold_growth as f64) / keys as f64;
    let payload = 100.0 + "bench-00000000".len() as f64;
    println!(
        "{keys} keys of 100 B: the hot tier costs {per_key:.0} B of resident memory per key \
         (payload {payload:.0} B: overhead {:.0} B per key); it counts {:.0} B per key against its budget; \
         {entries} entries held",
        per_key - payload,
        counted / entries.max(1.0)
    );
    Ok(())
}
