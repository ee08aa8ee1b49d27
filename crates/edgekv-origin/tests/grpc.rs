//! The Origin service over real gRPC: builds on 127.0.0.1:0 over RocksDB in a
//! temporary directory, called with tonic clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgekv_kv::SystemClock;
use edgekv_origin::{OriginConfig, RunningOrigin};
use edgekv_proto::v1::{self, origin_client::OriginClient};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Code, Request};

struct Origin {
    running: RunningOrigin,
    _dir: tempfile::TempDir,
}

async fn origin(environment: &str, credentials: &str, builds: &[&str], log_retain: u64) -> Origin {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("credentials"), credentials).unwrap();
    let config = OriginConfig {
        data_dir: dir.path().to_path_buf(),
        environment: environment.into(),
        tenant: environment.into(),
        credential_file: dir.path().join("credentials"),
        builds: builds
            .iter()
            .map(|b| format!("{b}=127.0.0.1:0").parse().unwrap())
            .collect(),
        log_retain,
        progress_interval_ms: 50,
        maintenance_interval_ms: 20,
        sync_writes: false,
        ..OriginConfig::default()
    };
    Origin {
        running: RunningOrigin::start(config, Arc::new(SystemClock))
            .await
            .unwrap(),
        _dir: dir,
    }
}

async fn client(origin: &Origin, build: &str) -> OriginClient<Channel> {
    OriginClient::connect(origin.running.url(build).unwrap())
        .await
        .unwrap()
}

fn authed<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    request
}

fn now_stamp() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms << 16
}

async fn namespace(client: &mut OriginClient<Channel>, credential: &str, mode: i32) -> String {
    let request = v1::CreateNamespaceRequest {
        account: "acct".into(),
        title: "t".into(),
        mode,
    };
    let answer = client
        .create_namespace(authed(request, credential))
        .await
        .unwrap()
        .into_inner();
    answer.namespace.unwrap().id
}

fn put(ns: &str, key: &str, value: &str, sequence: u64) -> v1::PutRequest {
    v1::PutRequest {
        header: Some(v1::WriteHeader {
            namespace: ns.into(),
            write_id: Some(v1::WriteId {
                node_id: "edge-a".into(),
                sequence,
                incarnation: String::new(),
            }),
            hlc: now_stamp(),
            replay: false,
        }),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Some(v1::Value {
            value: Bytes::copy_from_slice(value.as_bytes()),
            metadata: None,
            expiration: None,
        }),
    }
}

/// The 2023 failure on the wire: a production caller reaching a staging build.
#[tokio::test]
async fn a_production_caller_gets_unauthenticated_from_a_staging_build() {
    let staging = origin("staging", "staging-secret\n", &["kv-v2"], 1000).await;
    let mut client = client(&staging, "kv-v2").await;
    let status = client
        .health(authed(v1::HealthRequest {}, "production-secret"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("staging"), "{}", status.message());
    let status = client
        .get(authed(
            v1::GetRequest {
                namespace: "n".into(),
                key: Bytes::from_static(b"k"),
            },
            "production-secret",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // No credential at all is refused the same way.
    let status = client
        .health(Request::new(v1::HealthRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Its own environment's credential is accepted, and the answer says who it is.
    let health = client
        .health(authed(v1::HealthRequest {}, "staging-secret"))
        .await
        .unwrap()
        .into_inner();
    let stamp = health.stamp.unwrap();
    assert_eq!(
        (stamp.build_id.as_str(), stamp.environment.as_str()),
        ("kv-v2", "staging")
    );
}

#[tokio::test]
async fn a_retried_write_is_applied_once() {
    let origin = origin("production", "p\n", &["v1"], 1000).await;
    let mut client = client(&origin, "v1").await;
    let ns = namespace(&mut client, "p", 0).await;
    let first = client
        .put(authed(put(&ns, "k", "v", 7), "p"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    let retry = client
        .put(authed(put(&ns, "k", "v", 7), "p"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(retry.revision, first.revision);
    let mut events = client
        .watch(authed(v1::WatchRequest { from_revision: 1 }, "p"))
        .await
        .unwrap()
        .into_inner();
    let mut writes = 0;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
    {
        let event = event.unwrap();
        if event.progress {
            break;
        }
        writes += event.keys.len();
    }
    assert_eq!(writes, 1, "the retry reached the log");
}

#[tokio::test]
async fn several_builds_share_one_store_and_stamp_their_answers() {
    let origin = origin("production", "p\n", &["v1", "v2"], 1000).await;
    let mut v1c = client(&origin, "v1").await;
    let mut v2c = client(&origin, "v2").await;
    let ns = namespace(&mut v1c, "p", 0).await;
    v1c.put(authed(put(&ns, "k", "from v1", 1), "p"))
        .await
        .unwrap();
    let answer = v2c
        .get(authed(
            v1::GetRequest {
                namespace: ns.clone(),
                key: Bytes::from_static(b"k"),
            },
            "p",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.record.unwrap().value, "from v1");
    assert_eq!(answer.stamp.unwrap().build_id, "v2");
}

#[tokio::test]
async fn watch_and_snapshot() {
    let origin = origin("production", "p\n", &["v1"], 5).await;
    let mut client = client(&origin, "v1").await;
    let ns = namespace(&mut client, "p", 1).await;
    for i in 0..20 {
        client
            .put(authed(put(&ns, &format!("k{i:02}"), "v", 100 + i), "p"))
            .await
            .unwrap();
    }
    // The log keeps five revisions: a watch from the start is out of range.
    let mut trimmed = false;
    for _ in 0..100 {
        match client
            .watch(authed(v1::WatchRequest { from_revision: 1 }, "p"))
            .await
        {
            Err(status) if status.code() == Code::OutOfRange => {
                trimmed = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(trimmed, "a watch from a trimmed revision was not refused");
    // A snapshot holds every key, at one revision, and a watch after it follows on.
    let mut chunks = client
        .snapshot(authed(
            v1::SnapshotRequest {
                namespaces: vec![ns.clone()],
            },
            "p",
        ))
        .await
        .unwrap()
        .into_inner();
    let (mut keys, mut revision) = (0, 0);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        keys += chunk.keys.len();
        if chunk.last {
            revision = chunk.revision;
        }
    }
    assert_eq!(keys, 20);
    assert_eq!(revision, 21, "one namespace and twenty writes");
    client
        .put(authed(put(&ns, "after", "v", 999), "p"))
        .await
        .unwrap();
    let mut events = client
        .watch(authed(
            v1::WatchRequest {
                from_revision: revision + 1,
            },
            "p",
        ))
        .await
        .unwrap()
        .into_inner();
    let event = events.next().await.unwrap().unwrap();
    assert_eq!(event.revision, revision + 1);
    assert_eq!(event.keys[0].key, "after");
}

/// A snapshot chunk is sent before a record would take it past its byte budget:
/// a 7.9 MiB value followed by a 25 MiB one used to share one 33 MiB message,
/// over the 32 MiB gRPC limit, so a new edge of a `full` namespace holding them
/// could never sync.
#[tokio::test]
async fn a_snapshot_of_large_values_stays_under_the_message_limit() {
    let origin = origin("production", "p\n", &["v1"], 1_000).await;
    let mut client = client(&origin, "v1")
        .await
        .max_decoding_message_size(edgekv_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(edgekv_proto::MAX_MESSAGE_BYTES);
    let ns = namespace(&mut client, "p", 1).await;
    let sizes = [("a-7.9MiB", 7_900 * 1024), ("b-25MiB", 25 * 1024 * 1024)];
    for (i, (key, size)) in sizes.iter().enumerate() {
        let mut request = put(&ns, key, "", 500 + i as u64);
        request.value = Some(v1::Value {
            value: Bytes::from(vec![b'x'; *size]),
            metadata: None,
            expiration: None,
        });
        client.put(authed(request, "p")).await.unwrap();
    }
    let mut chunks = client
        .snapshot(authed(
            v1::SnapshotRequest {
                namespaces: vec![ns.clone()],
            },
            "p",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut last = false;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("every chunk under the message limit");
        got.extend(
            chunk
                .keys
                .iter()
                .map(|k| (k.key.clone(), k.record.as_ref().unwrap().value.len())),
        );
        last |= chunk.last;
    }
    assert!(last, "the snapshot ended with its last chunk");
    assert_eq!(
        got,
        sizes
            .iter()
            .map(|(k, s)| (Bytes::copy_from_slice(k.as_bytes()), *s))
            .collect::<Vec<_>>()
    );
}

/// WriteMany answers each write as its own call would (a write of too many keys
/// is refused alone, stamped), commits the others, and refuses a call of more
/// writes than one group takes, before applying any.
#[tokio::test]
async fn write_many_answers_each_write_and_bounds_the_call() {
    let origin = origin("production", "cred\n", &["kv"], 1000).await;
    let mut client = client(&origin, "kv").await;
    let ns = namespace(&mut client, "cred", v1::NamespaceMode::Cache as i32).await;
    let write = |key: &str, sequence: u64, keys: usize| {
        let one = put(&ns, key, key, sequence);
        let mutation = v1::Mutation {
            key: one.key,
            put: one.value,
        };
        v1::BulkWriteRequest {
            header: one.header,
            mutations: vec![mutation; keys],
        }
    };
    let too_many = edgekv_kv::limits::MAX_BULK_ITEMS + 1;
    let writes = vec![write("a", 1, 1), write("b", 2, too_many), write("c", 3, 1)];
    let answer = client
        .write_many(authed(v1::WriteManyRequest { writes }, "cred"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.stamp.unwrap().build_id, "kv");
    let results: Vec<_> = answer.results.into_iter().map(|r| r.result).collect();
    assert_eq!(results.len(), 3);
    let Some(v1::write_result::Result::Written(a)) = &results[0] else {
        panic!("{:?}", results[0]);
    };
    let Some(v1::write_result::Result::Error(b)) = &results[1] else {
        panic!("{:?}", results[1]);
    };
    let Some(v1::write_result::Result::Written(c)) = &results[2] else {
        panic!("{:?}", results[2]);
    };
    assert_eq!(b.code, Code::ResourceExhausted as i32, "{b:?}");
    assert_ne!(a.revision, c.revision);
    assert_eq!(a.records[0].value, "a");

    let max = edgekv_origin::service::MAX_WRITES_PER_CALL;
    let writes = (0..=max as u64)
        .map(|i| write(&format!("k{i}"), 10 + i, 1))
        .collect();
    let status = client
        .write_many(authed(v1::WriteManyRequest { writes }, "cred"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(edgekv_proto::stamp::read(status.metadata()).is_some());
    let held = client
        .get(authed(
            v1::GetRequest {
                namespace: ns.clone(),
                key: Bytes::from_static(b"k0"),
            },
            "cred",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(held.record.is_none(), "nothing of a refused call applied");
}

/// A WriteMany answer holds the records each key now holds: three deletes
/// superseded by 12 MiB values would answer 36 MiB, past the largest message.
/// The results past the answer's budget say so (the writes applied as usual),
/// and the answer arrives.
#[tokio::test]
async fn a_write_many_answer_stays_within_its_budget() {
    let origin = origin("production", "cred\n", &["kv"], 1000).await;
    let channel = Channel::from_shared(origin.running.url("kv").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = OriginClient::new(channel)
        .max_decoding_message_size(edgekv_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(edgekv_proto::MAX_MESSAGE_BYTES);
    let ns = namespace(&mut client, "cred", v1::NamespaceMode::Cache as i32).await;
    let big = "v".repeat(12 << 20);
    for i in 0..3 {
        client
            .put(authed(put(&ns, &format!("k{i}"), &big, 10 + i), "cred"))
            .await
            .unwrap();
    }
    let writes = (0..3u64)
        .map(|i| {
            let mut header = put(&ns, "x", "x", 20 + i).header.unwrap();
            header.replay = true;
            header.hlc -= 60_000 << 16;
            v1::BulkWriteRequest {
                header: Some(header),
                mutations: vec![v1::Mutation {
                    key: Bytes::from(format!("k{i}")),
                    put: None,
                }],
            }
        })
        .collect();
    let answer = client
        .write_many(authed(v1::WriteManyRequest { writes }, "cred"))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::write_result::Result::Written(first)) = &answer.results[0].result else {
        panic!("{:?}", answer.results[0].result);
    };
    assert!(first.superseded);
    assert_eq!(first.records[0].value.len(), big.len());
    for result in &answer.results[1..] {
        let Some(v1::write_result::Result::Error(error)) = &result.result else {
            panic!("a result past the budget: {result:?}");
        };
        assert_eq!(error.reason, edgekv_proto::ANSWER_TOO_LARGE);
    }
}
