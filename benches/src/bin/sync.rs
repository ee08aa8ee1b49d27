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
use edgekv_edge::service::Change;
use edgekv_edge::tokens::TokenTable;
use edgekv_edge::{Edge, EdgeConfig, RunningEdge};
use edgekv_kv::{Mode, SystemClock};
use edgekv_origin::{OriginConfig, RunningOrigin};
use edgekv_proto::v1::{self, origin_client::OriginClient};
use hdrhistogram::Histogram;

const CREDENTIAL: &str = "bench-credential";

async fn origin(dir: &std::path::Path, sync_writes: bool) -> RunningOrigin {
    std::fs::write(dir.join("credentials"), CREDENTIAL).unwrap();
    let config = OriginConfig {
        data_dir: dir.to_path_buf(),
        environment: "bench".into(),
        tenant: "bench".into(),
        credential_file: dir.join("credentials"),
        builds: vec!["v1=127.0.0.1:0".parse().unwrap()],
        sync_writes,
        ..OriginConfig::default()
    };
    RunningOrigin::start(config, Arc::new(SystemClock))
        .await
        .unwrap()
}

async fn edge(dir: &std::path::Path, origin_url: &str) -> RunningEdge {
    let config = EdgeConfig {
        http: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        origin: origin_url.to_string(),
        environment: "bench".into(),
        tenant: "bench".into(),
        ..EdgeConfig::default()
    };
    let edge = edgekv_edge::open(
        config,
        Arc::new(SystemClock),
        TokenTable::default(),
        CREDENTIAL,
    )
    .unwrap();
    let running = RunningEdge::start(edge).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(running.edge().feed().synced() && running.edge().feed().connected()) {
        assert!(Instant::now() < deadline, "edge did not sync");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running
}

fn report(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<34} n={:<6} p50={:>7.3} ms  p90={:>7.3} ms  p99={:>7.3} ms  p99.9={:>7.3} ms  max={:>7.3} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
}

async fn propagation(writes: usize) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let origin = origin(dirs[0].path(), true).await;
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
    let origin = origin(dir.path(), sync_writes).await;
    let url = origin.url("v1").unwrap();
    let credential: tonic_metadata::Value = format!("Bearer {CREDENTIAL}").parse().unwrap();
    let mut client = OriginClient::connect(url.clone()).await.unwrap();
    let mut create = tonic::Request::new(v1::CreateNamespaceRequest {
        account: "a".into(),
        title: "t".into(),
        mode: 0,
    });
    create
        .metadata_mut()
        .insert("authorization", credential.clone());
    let ns = client
        .create_namespace(create)
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap()
        .id;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, ns, credential) = (url.clone(), ns.clone(), credential.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = OriginClient::connect(url).await.unwrap();
            let mut done = 0u64;
            let mut latency = Histogram::<u64>::new(3).unwrap();
            while Instant::now() < deadline {
                let mutations = (0..keys_per_write)
                    .map(|k| v1::Mutation {
                        key: Bytes::from(format!(
                            "c{c}-k{}",
                            (done as usize * keys_per_write + k) % 10_000
                        )),
                        put: Some(v1::Value {
                            value: Bytes::from(vec![1u8; 100]),
                            metadata: None,
                            expiration: None,
                        }),
                    })
                    .collect();
                let stamp = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64)
                    << 16;
                let mut request = tonic::Request::new(v1::BulkWriteRequest {
                    header: Some(v1::WriteHeader {
                        namespace: ns.clone(),
                        write_id: Some(v1::WriteId {
                            node_id: format!("bench-{c}"),
                            sequence: done,
                            incarnation: String::new(),
                        }),
                        hlc: stamp,
                        replay: false,
                    }),
                    mutations,
                });
                request
                    .metadata_mut()
                    .insert("authorization", credential.clone());
                let start = Instant::now();
                client.bulk_write(request).await.unwrap();
                latency.record(start.elapsed().as_micros() as u64).unwrap();
                done += 1;
            }
            (done, latency)
        }));
    }
    let mut writes = 0;
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        let (done, h) = task.await.unwrap();
        writes += done;
        latency.add(h).unwrap();
    }
    let label = format!(
        "origin writes, fsync={sync_writes}, {clients} clients, {keys_per_write} key(s)/write"
    );
    println!(
        "{label:<60} {:>9.0} writes/s  {:>9.0} keys/s",
        writes as f64 / seconds as f64,
        (writes as usize * keys_per_write) as f64 / seconds as f64
    );
    report("  write latency", &latency);
    origin.shutdown().await;
}

mod tonic_metadata {
    pub type Value = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;
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
