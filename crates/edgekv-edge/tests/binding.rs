//! workerd's KV binding protocol against a real edge, from raw sockets: what a
//! hostile or careless client sends, and the tokens of the REST API. (The
//! protocol as workerd itself speaks it is tested with the real workerd in
//! crates/edgekv/tests/workerd.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use edgekv_test_support::{OTHER_ACCOUNT_TOKEN, READ_ONLY_TOKEN, TOKEN, TestEdge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer read off a connection: status line, headers, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// A keep-alive connection to the binding listener, as workerd holds one.
struct Conn {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.unwrap(),
            buffered: Vec::new(),
        }
    }

    /// Sends a request (`head` without the blank line) with `body`, as
    /// workerd does: the whole body, then the answer is read.
    async fn call(&mut self, head: &str, body: &[u8]) -> Answer {
        let head = format!(
            "{head}\r\nHost: fake-host\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await.unwrap();
        self.stream.write_all(body).await.unwrap();
        self.answer().await
    }

    async fn answer(&mut self) -> Answer {
        let end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
        self.buffered.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let _version = parts.next();
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let reason = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, Vec<u8>)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_string(), v.trim().as_bytes().to_vec())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| std::str::from_utf8(v).unwrap().parse().unwrap())
            .unwrap_or(0);
        while self.buffered.len() < len {
            self.fill().await;
        }
        let body = self.buffered.drain(..len).collect();
        Answer {
            status,
            reason,
            headers,
            body,
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the edge closed the connection");
        self.buffered.extend_from_slice(&chunk[..n]);
    }
}

fn auth(token: &str, ns: &str) -> String {
    format!("Authorization: Bearer {token}\r\nedgekv-namespace: {ns}")
}

#[tokio::test]
async fn raw_keys_metadata_bytes_and_an_oversized_body_on_one_connection() {
    let edge = TestEdge::start().await;
    let ns = edge.client().create_namespace("binding").await;
    let mut conn = Conn::open(edge.binding).await;
    let auth = auth(TOKEN, &ns);

    // A path with raw `[ ] ^ | ; =` and `+`, as workerd sends a GET/PUT key,
    // and metadata in raw UTF-8.
    let raw = "/raw%20!$&'()*+,-.:;=@[]^_|~?urlencoded=true";
    let put = conn
        .call(
            &format!("PUT {raw} HTTP/1.1\r\n{auth}\r\nCF-KV-Metadata: {{\"who\":\"ünï\"}}"),
            b"v1",
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let got = conn
        .call(&format!("GET {raw} HTTP/1.1\r\n{auth}"), b"")
        .await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"v1"[..]));
    assert_eq!(
        got.header("cf-kv-metadata").unwrap(),
        "{\"who\":\"ünï\"}".as_bytes()
    );
    // The same key as DELETE encodes it: everything but encodeURIComponent's set.
    let encoded = "/raw%20!%24%26'()*%2B%2C-.%3A%3B%3D%40%5B%5D%5E_%7C~?urlencoded=true";
    let deleted = conn
        .call(&format!("DELETE {encoded} HTTP/1.1\r\n{auth}"), b"")
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let gone = conn
        .call(&format!("GET {raw} HTTP/1.1\r\n{auth}"), b"")
        .await;
    assert_eq!(gone.status, 404);

    // A value past 25 MiB is refused with the reason, after its body was read:
    // the same connection then serves the next call.
    let big = vec![0u8; 25 * 1024 * 1024 + 1];
    let refused = conn
        .call(
            &format!("PUT /big?urlencoded=true HTTP/1.1\r\n{auth}"),
            &big,
        )
        .await;
    assert_eq!(refused.status, 413, "{refused:?}");
    assert!(refused.reason.contains("26214400"), "{}", refused.reason);
    // A refusal before the body (a TTL too short) reads it too.
    let refused = conn
        .call(
            &format!("PUT /k?urlencoded=true&expiration_ttl=10 HTTP/1.1\r\n{auth}"),
            &vec![7u8; 4 * 1024 * 1024],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.reason.contains("expiration_ttl"),
        "{}",
        refused.reason
    );
    let after = conn
        .call(&format!("GET /k?urlencoded=true HTTP/1.1\r\n{auth}"), b"")
        .await;
    assert_eq!(after.status, 404, "the connection still serves: {after:?}");

    // A body declared far past the limit is refused at once.
    let mut conn = Conn::open(edge.binding).await;
    conn.stream
        .write_all(
            format!(
                "PUT /k?urlencoded=true HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 1000000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let refused = conn.answer().await;
    assert_eq!(refused.status, 413);
}

#[tokio::test]
async fn tokens_scopes_and_read_only_rules_are_those_of_the_rest_api() {
    let edge = TestEdge::start().await;
    let ns = edge.client().create_namespace("binding").await;
    assert_eq!(edge.client().put(&ns, "k", "v").await, 200);
    let mut conn = Conn::open(edge.binding).await;
    let get = "GET /k?urlencoded=true HTTP/1.1";
    let put = "PUT /k?urlencoded=true HTTP/1.1";

    let read_only = auth(READ_ONLY_TOKEN, &ns);
    assert_eq!(
        conn.call(&format!("{get}\r\n{read_only}"), b"")
            .await
            .status,
        200
    );
    let refused = conn.call(&format!("{put}\r\n{read_only}"), b"x").await;
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (403, "the token is read-only")
    );
    let refused = conn
        .call(
            &format!("DELETE /k?urlencoded=true HTTP/1.1\r\n{read_only}"),
            b"",
        )
        .await;
    assert_eq!(refused.status, 403);

    // Another account's token finds no such namespace: a 400, never a 404
    // (a Worker would read that as an absent value).
    let other = auth(OTHER_ACCOUNT_TOKEN, &ns);
    let refused = conn.call(&format!("{get}\r\n{other}"), b"").await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.reason.starts_with("namespace not found"));

    // No token, an unknown one, no namespace, a malformed one.
    let refused = conn
        .call(&format!("{get}\r\nedgekv-namespace: {ns}"), b"")
        .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.reason.contains("missing bearer token"),
        "{}",
        refused.reason
    );
    let refused = conn
        .call(&format!("{get}\r\n{}", auth("nope", &ns)), b"")
        .await;
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (401, "invalid or revoked token")
    );
    let refused = conn
        .call(&format!("{get}\r\nAuthorization: Bearer {TOKEN}"), b"")
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.reason.contains("edgekv-namespace"));
    let refused = conn
        .call(&format!("{get}\r\n{}", auth(TOKEN, "../x")), b"")
        .await;
    assert_eq!(refused.status, 400);

    // A write without a valid token is refused before its body is kept, and
    // its body is read to the end: the connection goes on.
    let refused = conn
        .call(
            &format!("{put}\r\n{}", auth("nope", &ns)),
            &vec![1u8; 8 * 1024 * 1024],
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        conn.call(&format!("{get}\r\n{}", auth(TOKEN, &ns)), b"")
            .await
            .status,
        200
    );

    // What was refused wrote nothing.
    assert_eq!(edge.client().get(&ns, "k").await, (200, b"v".to_vec()));
}

#[tokio::test]
async fn a_bulk_get_answers_at_most_25_mib_of_values() {
    let edge = TestEdge::start().await;
    let ns = edge.client().create_namespace("binding").await;
    let value = vec![b'v'; 1024 * 1024];
    for i in 0..26 {
        assert_eq!(
            edge.client()
                .put(&ns, &format!("big-{i:02}"), value.clone())
                .await,
            200
        );
    }
    let mut conn = Conn::open(edge.binding).await;
    let auth = auth(TOKEN, &ns);
    let keys: Vec<String> = (0..26).map(|i| format!("big-{i:02}")).collect();
    let body = serde_json::json!({ "keys": keys }).to_string();
    let refused = conn
        .call(
            &format!("POST /bulk/get HTTP/1.1\r\n{auth}"),
            body.as_bytes(),
        )
        .await;
    assert_eq!(refused.status, 413, "{}", refused.reason);
    assert!(refused.reason.contains("fewer keys"), "{}", refused.reason);
    // 25 of them fit.
    let body = serde_json::json!({ "keys": &keys[..25] }).to_string();
    let answer = conn
        .call(
            &format!("POST /bulk/get HTTP/1.1\r\n{auth}"),
            body.as_bytes(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.reason);
    let values: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(values.as_object().unwrap().len(), 25);
}
