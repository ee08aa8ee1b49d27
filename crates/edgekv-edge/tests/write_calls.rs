//! The writes an edge holds at once go to the origin in one call (WriteMany), and
//! each still gets the answer its own call would have had; an origin of an
//! earlier release, without WriteMany, gets them one by one. In process, against
//! a real origin over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use edgekv_edge::upstream::{Expected, Upstream, UpstreamError, WriteCalls, write_calls};
use edgekv_kv::{ManualClock, Mode};
use edgekv_proto::v1;
use edgekv_test_support::{ACCOUNT, CREDENTIAL, ENVIRONMENT, TestOrigin};
use http_body_util::BodyExt as _;
use tonic::Code;
use tonic::codegen::Service as _;

/// The tests count the process's write calls: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A real origin on loopback.
async fn origin() -> TestOrigin {
    TestOrigin::start(Arc::new(ManualClock::new(1_700_000_000_000)), 1_000).await
}

/// A client of build `v1` at `url`, calling with `credential`.
fn client(url: &str, credential: &str, expected: Expected) -> Upstream {
    Upstream::for_build(
        &[url.to_string()],
        credential,
        expected,
        Duration::from_secs(5),
        "v1",
    )
    .unwrap()
}

/// A client of build `v1` at `url`, with the environment's credential.
fn upstream(url: &str) -> Upstream {
    client(url, CREDENTIAL, Expected::new(ENVIRONMENT, ENVIRONMENT))
}

/// Creates a namespace through `upstream`; its id.
async fn namespace(upstream: &Upstream, title: &str) -> String {
    let (ns, _) = upstream
        .create_namespace(ACCOUNT, title, Mode::Cache)
        .await
        .unwrap();
    ns.id
}

fn header(namespace: &str, sequence: u64) -> v1::WriteHeader {
    v1::WriteHeader {
        namespace: namespace.to_string(),
        write_id: Some(v1::WriteId {
            node_id: "edge-t".into(),
            sequence,
            incarnation: "i".into(),
        }),
        hlc: 1_700_000_000_000 << 16,
        replay: false,
    }
}

fn put(key: &str, value: &str) -> Vec<v1::Mutation> {
    vec![v1::Mutation {
        key: Bytes::copy_from_slice(key.as_bytes()),
        put: Some(v1::Value {
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..v1::Value::default()
        }),
    }]
}

/// Twenty writes at once: seventeen apply, one names no namespace (the client's
/// fault, NOT_FOUND), one a malformed one (INVALID_ARGUMENT, refused before the
/// writer), one reuses an id for other content (the node's fault). Each
/// is answered as its own call would have been, and they took fewer calls than
/// writes.
#[tokio::test]
async fn writes_waiting_at_once_share_a_call_and_each_gets_its_own_answer() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let origin = origin().await;
    let upstream = upstream(&origin.url);
    let ns = namespace(&upstream, "calls").await;
    upstream
        .write(header(&ns, 1), put("reused", "first"))
        .await
        .unwrap();
    let (calls_before, writes_before) = write_calls();
    let mut writes = Vec::new();
    for i in 0..17 {
        let key = format!("k{i}");
        writes.push((header(&ns, 100 + i), put(&key, &key)));
    }
    let absent = "0123456789abcdef0123456789abcdef";
    writes.push((header(absent, 200), put("x", "x")));
    writes.push((header("not an id", 201), put("x", "x")));
    writes.push((header(&ns, 1), put("reused", "other content")));
    let answers = futures_util::future::join_all(
        (writes.into_iter()).map(|(header, mutations)| upstream.write(header, mutations)),
    )
    .await;
    let (calls, sent) = write_calls();
    let (calls, sent) = (calls - calls_before, sent - writes_before);
    assert_eq!(sent, 20, "each write sent once");
    assert!(calls < sent, "{calls} calls for {sent} writes");

    let mut revisions = std::collections::BTreeSet::new();
    for (i, answer) in answers[..17].iter().enumerate() {
        let written = answer.as_ref().unwrap();
        assert_eq!(written.records.len(), 1);
        assert_eq!(written.records[0].value, format!("k{i}").as_bytes());
        assert!(!written.duplicate);
        revisions.insert(written.revision);
    }
    assert_eq!(revisions.len(), 17, "each write its own commit");
    assert!(
        matches!(
            &answers[17],
            Err(UpstreamError::Client {
                code: Code::NotFound,
                ..
            })
        ),
        "{:?}",
        answers[17]
    );
    assert!(
        matches!(
            &answers[18],
            Err(UpstreamError::Client {
                code: Code::InvalidArgument,
                ..
            })
        ),
        "{:?}",
        answers[18]
    );
    assert!(
        matches!(&answers[19], Err(UpstreamError::NodeFault(_))),
        "{:?}",
        answers[19]
    );
    // The client's and the node's faults are no fault of the build.
    let delta = upstream.stats().take();
    assert_eq!(delta.faults, [0; 4], "{delta:?}");
}

/// A call refused as a whole — here the build refuses the edge's credential —
/// is no write's fault: each write goes again on a call of its own and is a
/// build fault (never a client's), counted once.
#[tokio::test]
async fn a_call_refused_as_a_whole_is_each_writes_build_fault() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let origin = origin().await;
    let ns = namespace(&upstream(&origin.url), "refused").await;
    let stranger = client(
        &origin.url,
        "another-environment's-credential",
        Expected::new(ENVIRONMENT, ENVIRONMENT),
    );
    let (calls_before, _) = write_calls();
    let answers = futures_util::future::join_all((0..10u64).map(|i| {
        let key = format!("k{i}");
        stranger.write(header(&ns, 300 + i), put(&key, &key))
    }))
    .await;
    for answer in &answers {
        assert!(
            matches!(answer, Err(UpstreamError::Build(why)) if why.contains("Unauthenticated")),
            "{answer:?}"
        );
    }
    let (calls, _) = write_calls();
    assert!(
        calls - calls_before > 10,
        "a call of several, then each alone: {} calls",
        calls - calls_before
    );
    let delta = stranger.stats().take();
    assert_eq!(delta.faults[0], 10, "one auth fault per write: {delta:?}");
    assert_eq!(delta.client_errors, 0);
}

/// A write's answer holds the records its keys hold now: four small deletes,
/// replayed and superseded by 12 MiB values, answer 48 MiB. The origin answers
/// what fits in one call; the edge asks for the rest alone, and each write gets
/// its answer.
#[tokio::test]
async fn answers_too_large_for_one_call_are_asked_for_alone() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let origin = origin().await;
    let upstream = upstream(&origin.url);
    let ns = namespace(&upstream, "large").await;
    let big = "v".repeat(12 << 20);
    for i in 0..4u64 {
        upstream
            .write(header(&ns, 400 + i), put(&format!("k{i}"), &big))
            .await
            .unwrap();
    }
    let (_, sent_before) = write_calls();
    let answers = futures_util::future::join_all((0..4u64).map(|i| {
        let mut replay = header(&ns, 500 + i);
        replay.replay = true;
        replay.hlc -= 1 << 16;
        let delete = vec![v1::Mutation {
            key: Bytes::from(format!("k{i}")),
            put: None,
        }];
        upstream.write(replay, delete)
    }))
    .await;
    for answer in answers {
        let written = answer.unwrap();
        // Superseded, or — asked for again — a duplicate of the superseded write.
        assert!(
            written.superseded || written.duplicate,
            "{}",
            written.revision
        );
        assert_eq!(written.records[0].value.len(), big.len());
    }
    let (_, sent) = write_calls();
    assert!(sent - sent_before > 4, "some asked for again");
}

/// An origin of an earlier release answers WriteMany with UNIMPLEMENTED: the
/// writes of that call go one by one and apply, and the next writes do not ask
/// again.
#[tokio::test]
async fn an_origin_without_write_many_gets_the_writes_one_by_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let origin = origin().await;
    let refused = Arc::new(AtomicUsize::new(0));
    let old = without_write_many(&origin.url, refused.clone()).await;
    let upstream = upstream(&old);
    let ns = namespace(&upstream, "old").await;
    for round in 0..2u64 {
        let answers = futures_util::future::join_all((0..10u64).map(|i| {
            let key = format!("k{round}-{i}");
            upstream.write(header(&ns, round * 100 + i), put(&key, &key))
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let written = answer.unwrap();
            assert!(!written.duplicate);
            let key = format!("k{round}-{i}");
            assert_eq!(written.records[0].value, key.as_bytes(), "its own answer");
        }
    }
    assert_eq!(
        refused.load(Ordering::Relaxed),
        1,
        "asked once, then one by one"
    );
    let delta = upstream.stats().take();
    assert_eq!(delta.faults, [0; 4], "no build fault: {delta:?}");
}

/// A proxy to `origin` that answers WriteMany as an origin without it would
/// (UNIMPLEMENTED), counting those answers; its URL.
async fn without_write_many(origin: &str, refused: Arc<AtomicUsize>) -> String {
    let channel = tonic::transport::Channel::from_shared(origin.to_string())
        .unwrap()
        .connect_lazy();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (channel, refused) = (channel.clone(), refused.clone());
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let (mut channel, refused) = (channel.clone(), refused.clone());
                async move {
                    if request.uri().path() == "/edgekv.v1.Origin/WriteMany" {
                        refused.fetch_add(1, Ordering::Relaxed);
                        let status = tonic::Status::unimplemented("WriteMany");
                        return Ok::<_, Infallible>(status.into_http());
                    }
                    let (parts, body) = request.into_parts();
                    let body: hyper::body::Incoming = body;
                    let body = tonic::body::boxed(
                        body.map_err(|e| tonic::Status::internal(e.to_string())),
                    );
                    std::future::poll_fn(|cx| channel.poll_ready(cx))
                        .await
                        .unwrap();
                    Ok(channel
                        .call(http::Request::from_parts(parts, body))
                        .await
                        .unwrap_or_else(|e| tonic::Status::unavailable(e.to_string()).into_http()))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    url
}

/// `origin_write_call_max_writes = 1` sends each write alone, as before writes
/// shared calls; settings past what an origin takes are refused.
#[tokio::test]
async fn one_write_a_call_when_so_set() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let origin = origin().await;
    let mut expected = Expected::new(ENVIRONMENT, ENVIRONMENT);
    expected.write_calls.max_writes = 1;
    let alone = client(&origin.url, CREDENTIAL, expected);
    let ns = namespace(&alone, "alone").await;
    let (calls_before, sent_before) = write_calls();
    let answers = futures_util::future::join_all((0..10u64).map(|i| {
        let key = format!("k{i}");
        alone.write(header(&ns, 600 + i), put(&key, &key))
    }))
    .await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let (calls, sent) = write_calls();
    assert_eq!((calls - calls_before, sent - sent_before), (10, 10));

    let too_many = WriteCalls {
        max_writes: edgekv_proto::MAX_WRITES_PER_CALL + 1,
        ..WriteCalls::default()
    };
    assert!(too_many.validate().is_err());
    let none_in_flight = WriteCalls {
        in_flight: 0,
        ..WriteCalls::default()
    };
    assert!(none_in_flight.validate().is_err());
    assert!(WriteCalls::default().validate().is_ok());
}
