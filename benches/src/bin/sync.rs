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
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgekv_benches::writes::{edge, load, origin, report};
use edgekv_edge::Edge;
use edgekv_edge::service::Change;
use edgekv_kv::Mode;
use hdrhistogram::Histogram;

async fn propagation(writes: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = origin(dirs[0].path(), true, None).await;
    let url = origin.url("v1").unwrap();
    let a = edge(dirs[1].path(), &url).await;
    let b = edge(dirs[2].path(), &url).await;
    let (ea, eb): (&Arc<Edge>, &Arc<Edge>) = (a.edge(), b.edge());
    let ns = ea
        .create_namespace("acct", "bench", Mode::Full)
        .await
        .unwrap();
    let mut ack = Histogram::<u64>::new(3).unwrap();
    let mut propagate = Histogram::<u64>::new(3).unwrap();
    let mut total = Histogram::<u64>::new(3).unwrap();
    let value = Bytes::from(vec![7u8; 100]);
    for i in 0..writes {
        let change = Change::Put {
            value: value.clone(),
            metadata: None,
            expiration: None,
        };
        let start = Instant::now();
        let revision = ea
            .write(&ns.id, vec![(Bytes::from(format!("key-{i}")), change)])
            .await
            .unwrap()
            .revision()
            .expect("the origin is up: the write is applied, not queued");
        let acknowledged = Instant::now();
        assert!(
            eb.wait_for_revision(revision, Duration::from_secs(10))
                .await,
            "B never applied {revision}"
        );
        let applied = Instant::now();
        ack.record((acknowledged - start).as_micros() as u64)
            .unwrap();
        propagate
            .record((applied - acknowledged).as_micros() as u64)
            .unwrap();
        total.record((applied - start).as_micros() as u64).unwrap();
    }
    report("write acknowledged at A", &ack);
    report("A acknowledged -> applied at B", &propagate);
    report("write sent to A -> applied at B", &total);
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
