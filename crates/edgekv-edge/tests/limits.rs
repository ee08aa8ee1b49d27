//! Hostile and careless input is bounded: a connection that sends half a header
//! or nothing, or stays idle, is closed; past `max_connections` accepting
//! pauses; requests with a body beyond `max_body_requests` get a 503; and an
//! over-limit bulk body is refused with the 4xx that names the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edgekv_edge::{EdgeConfig, RunningEdge};
use edgekv_kv::{Clock, ManualClock};
use edgekv_test_support::{
    ACCOUNT, CREDENTIAL, Client, ENVIRONMENT, TOKEN, TestEdge, TestOrigin, token_table,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// An origin and an edge of it, the edge's config changed by `tweak`.
struct Served {
    running: RunningEdge,
    _origin: TestOrigin,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(tweak: impl FnOnce(&mut EdgeConfig)) -> Served {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let origin = TestOrigin::start(clock.clone(), 1_000).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = EdgeConfig {
            http: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            hot_tier_bytes: 16 * 1024 * 1024,
            shutdown_grace_s: 1,
            origin: origin.url.clone(),
            environment: ENVIRONMENT.into(),
            tenant: ENVIRONMENT.into(),
            ..EdgeConfig::default()
        };
        tweak(&mut config);
        let edge =
            edgekv_edge::open(config, clock as Arc<dyn Clock>, token_table(), CREDENTIAL).unwrap();
        Served {
            running: RunningEdge::start(edge).await.unwrap(),
            _origin: origin,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.running.http_addr
    }

    fn client(&self) -> Client {
        Client::new(&base(self.addr()), TOKEN)
    }
}

fn base(addr: SocketAddr) -> String {
    format!("http://{addr}{}", api_path(""))
}

/// The path of the KV API's `rest` for the test account.
fn api_path(rest: &str) -> String {
    format!("/client/v4/accounts/{ACCOUNT}/storage/kv{rest}")
}

/// A request for a route that does not exist: answered 404 at once.
const NO_ROUTE: &[u8] = b"GET /nope HTTP/1.1\r\nhost: edge\r\n\r\n";

/// Reads until the server closes the connection or `within` passes; returns how
/// long that took, or `None` if the connection was still open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + within, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one HTTP/1.1 answer (its head and a `content-length` body) within
/// `within`: its status and body, or `None` if it did not come in time.
async fn answer_within(stream: &mut TcpStream, within: Duration) -> Option<(u16, Vec<u8>)> {
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(Some(0), |len| len.trim().parse().ok())?;
            let body_start = end + 4;
            if read.len() >= body_start + length {
                return Some((status, read[body_start..body_start + length].to_vec()));
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// A connection that has been served one request (so it was accepted).
async fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(NO_ROUTE).await.unwrap();
    let (status, _) = answer_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(status, 404);
    stream
}

#[tokio::test]
async fn half_a_request_header_is_closed_after_the_header_timeout() {
    let served = Served::start(|c| c.header_read_timeout_ms = 1000).await;
    let mut stream = TcpStream::connect(served.addr()).await.unwrap();
    stream
        .write_all(b"GET /nope HTTP/1.1\r\nhost: edge\r\nx-half: ")
        .await
        .unwrap();
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the edge closes a connection that sent half a header");
    assert!(
        closed >= Duration::from_millis(800),
        "closed after {closed:?}"
    );

    // One that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(served.addr()).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("the edge closes a connection that sent nothing");
    assert!(
        closed >= Duration::from_millis(800),
        "closed after {closed:?}"
    );
    served.running.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let served = Served::start(|c| c.idle_timeout_ms = 1000).await;
    let mut stream = served_connection(served.addr()).await;
    // Still usable at once: keep-alive holds.
    stream.write_all(NO_ROUTE).await.unwrap();
    let (status, _) = answer_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let closed = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the edge closes an idle connection");
    assert!(
        closed >= Duration::from_millis(800),
        "closed after {closed:?}"
    );
    served.running.shutdown().await;
}

#[tokio::test]
async fn past_max_connections_accepting_pauses_until_one_closes() {
    let served = Served::start(|c| c.max_connections = 2).await;
    let first = served_connection(served.addr()).await;
    let _second = served_connection(served.addr()).await;
    // The third is let in by the kernel, but the edge does not take it up.
    let mut third = TcpStream::connect(served.addr()).await.unwrap();
    third.write_all(NO_ROUTE).await.unwrap();
    assert_eq!(
        answer_within(&mut third, Duration::from_millis(700)).await,
        None,
        "a third connection is served while two are open"
    );
    // One closes: the third is served.
    drop(first);
    let (status, _) = answer_within(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection is served once one closed");
    assert_eq!(status, 404);
    served.running.shutdown().await;
}

#[tokio::test]
async fn requests_with_a_body_past_the_limit_wait_then_get_503() {
    let served = Served::start(|c| {
        c.max_body_requests = 1;
        c.body_wait_ms = 100;
    })
    .await;
    let kv = served.client();
    let ns = kv.create_namespace("gate").await;
    // A write whose body comes slowly holds the one place while it is read.
    let mut slow = TcpStream::connect(served.addr()).await.unwrap();
    let path = api_path(&Client::value_path(&ns, "slow"));
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 10\r\n\r\nhalf-"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // (A probe that came before the slow write took the place is simply served.)
    edgekv_test_support::eventually(
        Duration::from_secs(5),
        "a second write is refused while the first holds the place",
        || {
            let kv = kv.clone();
            let ns = ns.clone();
            async move {
                let response = kv
                    .request(reqwest::Method::PUT, &Client::value_path(&ns, "probe"))
                    .body("probe")
                    .send()
                    .await
                    .unwrap();
                if response.status() != 503 {
                    return false;
                }
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                let message = body["errors"][0]["message"].as_str().unwrap().to_string();
                assert!(message.contains("max_body_requests"), "{message}");
                true
            }
        },
    )
    .await;
    // Reads are not held back by the gate.
    assert_eq!(kv.get(&ns, "quick").await.0, 404);
    assert_eq!(
        kv.request(reqwest::Method::GET, "/namespaces")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The slow body ends: its write is served, and the place is free again.
    slow.write_all(b"body!").await.unwrap();
    let (status, _) = answer_within(&mut slow, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(kv.put(&ns, "quick", "quick").await, 200);
    assert_eq!(kv.get(&ns, "slow").await, (200, b"half-body!".to_vec()));
    served.running.shutdown().await;
}

#[tokio::test]
async fn over_limit_bulk_bodies_are_refused_naming_the_limit() {
    let edge = TestEdge::start().await;
    let kv = edge.client();
    let ns = kv.create_namespace("bulk-limits").await;
    let delete_path = format!("/namespaces/{ns}/bulk/delete");

    // 100,000 empty keys: refused at the 10,001st, naming the limit.
    let mut keys = String::from("[\"\"");
    for _ in 1..100_000 {
        keys.push_str(",\"\"");
    }
    keys.push(']');
    let response = kv
        .request(reqwest::Method::POST, &delete_path)
        .header("content-type", "application/json")
        .body(keys)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["message"], "bulk request has at least 10001 items; the limit is 10000",
        "{body}"
    );

    // The same for a bulk write and a bulk get.
    let items: Vec<Value> = (0..10_001)
        .map(|_| serde_json::json!({"key": "", "value": ""}))
        .collect();
    let response = kv
        .request(reqwest::Method::PUT, &format!("/namespaces/{ns}/bulk"))
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("the limit is 10000"), "{message}");
    let asked = serde_json::json!({ "keys": vec!["k"; 101] });
    let response = kv
        .request(reqwest::Method::POST, &format!("/namespaces/{ns}/bulk/get"))
        .json(&asked)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("the limit is 100"), "{message}");

    // A body declared past 100 MiB: 413 before a byte of it is read.
    let addr = edge.running.as_ref().unwrap().http_addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n[",
        api_path(&delete_path),
        100 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = answer_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("an answer before the body");
    assert_eq!(status, 413);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("limit of 104857600 bytes"), "{message}");
}
