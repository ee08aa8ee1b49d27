//! The origin's stores side by side, in one run, durability on (fsync for RocksDB,
//! synchronous_commit on for PostgreSQL):
//! - pgbench's simple-update TPS (`-N`) against the same PostgreSQL server, the
//!   anchor of what the server does with 1 and 16 clients;
//! - origin writes/s over gRPC with 1 and 16 clients, RocksDB store, then
//!   PostgreSQL store;
//! - propagation: a write accepted at an edge of origin 1 → applied at an edge
//!   following origin 2, both origins over one PostgreSQL database.
//!
//! The PostgreSQL server is a throwaway one (Debian's postgresql package, as the
//! tests start it). Usage: `stores [SECONDS] [WRITES]` (defaults 10 s, 2000 writes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgekv_benches::writes::{edge, load, origin, propagate, report};
use edgekv_store_postgres::testing::{self, TestPostgres};
use std::process::Command;

/// pgbench's TPS (without connection time) for `clients` over `seconds`.
fn pgbench(url: &str, clients: usize, seconds: u64) -> f64 {
    let bin = testing::bin_dir().unwrap().join("pgbench");
    let output = Command::new(&bin)
        .args([
            "-n",
            "-N",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|tps| tps.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
}

async fn origin_writes(label: &str, store: Option<&str>, seconds: u64, clients: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin(dir.path(), true, store).await;
    let done = load(&origin.url("v1").unwrap(), seconds, clients, 1).await;
    println!(
        "{label:<44} {clients:>2} clients {:>9.0} writes/s",
        done.writes_per_s
    );
    report("  write latency", &done.latency);
    origin.shutdown().await;
    done.writes_per_s
}

async fn propagation(url: &str, writes: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let one = origin(dirs[0].path(), true, Some(url)).await;
    let two = origin(dirs[1].path(), true, Some(url)).await;
    let a = edge(dirs[2].path(), &one.url("v1").unwrap()).await;
    let b = edge(dirs[3].path(), &two.url("v1").unwrap()).await;
    let (ea, eb) = (a.edge(), b.edge());
    let done = propagate(ea, eb, writes).await;
    report(
        "acked at origin 1 -> applied at edge of origin 2",
        &done.propagate,
    );
    a.shutdown().await;
    b.shutdown().await;
    one.shutdown().await;
    two.shutdown().await;
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let server = TestPostgres::start();
    let anchor = server.database();
    let init = testing::bin_dir().unwrap().join("pgbench");
    let status = Command::new(init)
        .args(["-i", "-q", "-s", "16", &anchor])
        .output()
        .unwrap();
    assert!(status.status.success(), "pgbench -i failed");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("# durability on; {seconds} s per figure; one throwaway PostgreSQL server");
    let mut pg_tps = Vec::new();
    for clients in [1, 16] {
        let tps = pgbench(&anchor, clients, seconds);
        println!(
            "{:<44} {clients:>2} clients {tps:>9.0} TPS",
            "pgbench -N (simple update), same server"
        );
        pg_tps.push(tps);
    }
    runtime.block_on(async {
        let mut rocks = Vec::new();
        let mut postgres = Vec::new();
        for clients in [1, 16] {
            rocks.push(origin_writes("origin, RocksDB store", None, seconds, clients).await);
        }
        for clients in [1, 16] {
            let url = server.database();
            postgres.push(
                origin_writes("origin, PostgreSQL store", Some(&url), seconds, clients).await,
            );
        }
        println!("\n# ratios, measured side by side above");
        println!(
            "RocksDB store, 16 clients / 1 client:        {:.2}x",
            rocks[1] / rocks[0]
        );
        println!(
            "PostgreSQL store, 16 clients / 1 client:     {:.2}x",
            postgres[1] / postgres[0]
        );
        println!(
            "PostgreSQL store / pgbench -N, 16 clients:   {:.2}x",
            postgres[1] / pg_tps[1]
        );
        println!("\n# propagation over {writes} sequential writes of 100 B (full namespace)");
        propagation(&server.database(), writes).await;
    });
}
