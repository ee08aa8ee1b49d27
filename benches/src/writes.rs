//! Load against an origin, shared by the benchmarks: in-process origins (RocksDB
//! in a directory, or a PostgreSQL database) and edges wired over loopback gRPC,
//! and a gRPC write load with its latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgekv_edge::tokens::TokenTable;
use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::SystemClock;
use edgekv_origin::{OriginConfig, RunningOrigin};
use edgekv_proto::v1::{self, origin_client::OriginClient};
use hdrhistogram::Histogram;

/// The credential of the `bench` environment.
pub const CREDENTIAL: &str = "bench-credential";

/// An origin of the `bench` environment with one build `v1`, over RocksDB in `dir`
/// or, with `store`, over that PostgreSQL database.
pub async fn origin(
    dir: &std::path::Path,
    sync_writes: bool,
    store: Option<&str>,
) -> RunningOrigin {
    std::fs::write(dir.join("credentials"), CREDENTIAL).unwrap();
    let config = OriginConfig {
        data_dir: dir.to_path_buf(),
        store: store.map(str::to_string),
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

/// An edge of `origin_url`, once its feed has synced.
pub async fn edge(dir: &std::path::Path, origin_url: &str) -> RunningEdge {
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

/// Prints a latency histogram (microseconds) in milliseconds.
pub fn report(name: &str, h: &Histogram<u64>) {
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

/// The outcome of [`throughput`].
pub struct Throughput {
    /// Writes acknowledged per second.
    pub writes_per_s: f64,
    /// Their latency, in microseconds.
    pub latency: Histogram<u64>,
}

/// `clients` gRPC clients writing `keys_per_write` keys of 100 B per write to
/// `url` for `seconds`, each as fast as it is answered.
pub async fn load(url: &str, seconds: u64, clients: usize, keys_per_write: usize) -> Throughput {
    let credential: tonic_metadata::Value = format!("Bearer {CREDENTIAL}").parse().unwrap();
    let mut client = OriginClient::connect(url.to_string()).await.unwrap();
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
        let (url, ns, credential) = (url.to_string(), ns.clone(), credential.clone());
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
    Throughput {
        writes_per_s: writes as f64 / seconds as f64,
        latency,
    }
}

mod tonic_metadata {
    pub type Value = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;
}

/// Latencies of writes through one edge until another edge applied them, in
/// microseconds.
pub struct Propagation {
    /// Sent to the first edge → acknowledged.
    pub ack: Histogram<u64>,
    /// Acknowledged → applied at the second edge.
    pub propagate: Histogram<u64>,
    /// Sent → applied at the second edge.
    pub total: Histogram<u64>,
}

/// `writes` sequential writes of 100 B to a new full namespace through `from`,
/// each waited for until `to` has applied it.
pub async fn propagate(
    from: &edgekv_edge::Edge,
    to: &edgekv_edge::Edge,
    writes: usize,
) -> Propagation {
    use edgekv_edge::service::Change;
    let ns = from
        .create_namespace("acct", "bench", edgekv_kv::Mode::Full)
        .await
        .unwrap();
    let mut out = Propagation {
        ack: Histogram::new(3).unwrap(),
        propagate: Histogram::new(3).unwrap(),
        total: Histogram::new(3).unwrap(),
    };
    let value = Bytes::from(vec![7u8; 100]);
    for i in 0..writes {
        let change = Change::Put {
            value: value.clone(),
            metadata: None,
            expiration: None,
        };
        let start = Instant::now();
        let revision = from
            .write(&ns.id, vec![(Bytes::from(format!("key-{i}")), change)])
            .await
            .unwrap()
            .revision()
            .expect("the origin is up: the write is applied, not queued");
        let acknowledged = Instant::now();
        assert!(
            to.wait_for_revision(revision, Duration::from_secs(10))
                .await,
            "the second edge never applied {revision}"
        );
        let applied = Instant::now();
        let micros = |d: Duration| d.as_micros() as u64;
        out.ack.record(micros(acknowledged - start)).unwrap();
        out.propagate
            .record(micros(applied - acknowledged))
            .unwrap();
        out.total.record(micros(applied - start)).unwrap();
    }
    out
}
