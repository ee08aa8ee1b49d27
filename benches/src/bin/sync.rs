//! Sync benchmark: propagation latency (a write accepted at edge A → applied at
//! edge B) and origin write throughput, on one machine, in one process.
//!
//! One origin (RocksDB, fsync on every write, as in production) and two edges
//! (RocksDB), wired over loopback gRPC exactly as separate processes are. Writes
//! enter edge A through its KV operations (the HTTP layer is measured by the hot
//! path benchmarks), so the figures are the sync path itself.
//!
//! Usage: `sync [WRITES] [SECONDS]` (defaults 2000 writes, 5 s of throughput).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use edgekv_benches::writes::{edge, load, origin, propagate, report};
use edgekv_edge::Edge;

async fn propagation(writes: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = origin(dirs[0].path(), true, None).await;
    let url = origin.url("v1").unwrap();
    let a = edge(dirs[1].path(), &url).await;
    let b = edge(dirs[2].path(), &url).await;
    let (ea, eb): (&Arc<Edge>, &Arc<Edge>) = (a.edge(), b.edge());
    let done = propagate(ea, eb, writes).await;
    report("write acknowledged at A", &done.ack);
    report("A acknowledged -> applied at B", &done.propagate);
    report("write sent to A -> applied at B", &done.total);
    a.shutdown().await;
    b.shutdown().await;
    origin.shutdown().await;
}

async fn throughput(seconds: u64, sync_writes: bool, clients: usize, keys_per_write: usize) {
    let dir = tempfile::tempdir().unwrap();
    let origin = origin(dir.path(), sync_writes, None).await;
    let url = origin.url("v1").unwrap();
    let done = load(&url, seconds, clients, keys_per_write).await;
    let label = format!(
        "origin writes, fsync={sync_writes}, {clients} clients, {keys_per_write} key(s)/write"
    );
    println!(
        "{label:<60} {:>9.0} writes/s  {:>9.0} keys/s",
        done.writes_per_s,
        done.writes_per_s * keys_per_write as f64
    );
    report("  write latency", &done.latency);
    origin.shutdown().await;
}

fn main() {
    let mut args = std::env::args().skip(1);
    let writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("# propagation over {writes} sequential writes of 100 B (full namespace)");
        propagation(writes).await;
        println!("\n# origin write throughput, {seconds} s each");
        for (sync, clients, keys) in [(true, 1, 1), (true, 16, 1), (false, 16, 1), (true, 16, 100)]
        {
            throughput(seconds, sync, clients, keys).await;
        }
    });
}
