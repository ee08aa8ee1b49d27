//! What the edge's fuzz targets share: an edge over the in-memory store, and one
//! request sent through its HTTP handler in process, checked.
//!
//! Each input gets a fresh edge (a store with three namespaces and a few keys, a
//! token table with a token of each kind, no route table), so a crash replays from
//! its input alone. With no build to call, a request that passes every check of
//! the edge ends in `503` (no build reachable) — an honest answer, and the sign
//! that the input got past the parsers.
//!
//! The check on every answer: no panic, no 5xx other than 503 (a client's input
//! is never the server's fault), an error answer in the JSON envelope, and the
//! synchronous hot path (which the server tries first) answering as the full
//! handler does whenever it answers at all.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use edgekv_edge::http as api;
use edgekv_edge::routes::Routes;
use edgekv_edge::tokens::{self, Grant, TokenMemo, TokenTable};
use edgekv_edge::{Edge, EdgeConfig};
use edgekv_kv::{ManualClock, Mode, Namespace, Record};
use edgekv_store::{MemoryStore, Store, Write};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

/// The account of every namespace but one.
pub const ACCOUNT: &str = "acct";
/// A namespace every edge holds whole (`full`), with keys.
pub const FULL_NS: &str = "0123456789abcdef0123456789abcdef";
/// A namespace the edge caches (`cache`).
pub const CACHE_NS: &str = "fedcba9876543210fedcba9876543210";
/// A namespace of another account.
pub const OTHER_NS: &str = "00000000000000000000000000000000";
/// A token with every right on [`ACCOUNT`] (admin too).
pub const TOKEN: &str = "00000000000000000000000000000001";
/// A read-only token on [`ACCOUNT`].
pub const READ_ONLY_TOKEN: &str = "00000000000000000000000000000002";
/// A token scoped to [`FULL_NS`].
pub const SCOPED_TOKEN: &str = "00000000000000000000000000000003";
/// A token of another account.
pub const OTHER_TOKEN: &str = "00000000000000000000000000000004";
/// The edge's clock, Unix ms.
pub const NOW_MS: u64 = 1_800_000_000_000;

/// The keys [`FULL_NS`] holds.
pub const KEYS: [&str; 4] = ["config/flags", "json", "expiring", "k"];

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
});

/// A fresh edge: three namespaces, a few keys, a token of each kind, no builds.
pub fn edge() -> Arc<Edge> {
    let store = MemoryStore::new();
    for (id, account, mode) in [
        (FULL_NS, ACCOUNT, Mode::Full),
        (CACHE_NS, ACCOUNT, Mode::Cache),
        (OTHER_NS, "other", Mode::Full),
    ] {
        store
            .create_namespace(&Namespace {
                id: id.into(),
                title: format!("ns-{id}"),
                account: account.into(),
                mode,
            })
            .unwrap();
    }
    let now_s = NOW_MS / 1000;
    let record = |value: &'static [u8], metadata: Option<&'static [u8]>, expiration| Record {
        revision: 1,
        ..Record::value(
            Bytes::from_static(value),
            metadata.map(Bytes::from_static),
            expiration,
        )
    };
    let writes = [
        (KEYS[0], record(b"on", Some(br#"{"owner":"ops"}"#), None)),
        (KEYS[1], record(br#"{"a":[1,2]}"#, None, None)),
        (KEYS[2], record(b"soon", None, Some(now_s + 60))),
        (KEYS[3], record(b"\xff\x00v", None, None)),
    ];
    store
        .keep_newer(
            writes
                .into_iter()
                .map(|(key, record)| Write {
                    namespace: FULL_NS.into(),
                    key: Bytes::from_static(key.as_bytes()),
                    record,
                })
                .collect(),
            // The edge's "first snapshot loaded" mark (`service::SYNCED`).
            vec![("synced".into(), vec![1])],
        )
        .unwrap();

    let grants = [
        (TOKEN, Grant::full("full", ACCOUNT)),
        (
            READ_ONLY_TOKEN,
            Grant {
                read_only: true,
                admin: false,
                ..Grant::full("read-only", ACCOUNT)
            },
        ),
        (
            SCOPED_TOKEN,
            Grant {
                namespaces: Some(vec![FULL_NS.into()]),
                admin: false,
                ..Grant::full("scoped", ACCOUNT)
            },
        ),
        (OTHER_TOKEN, Grant::full("other", "other")),
    ];
    let tokens = TokenTable::new(
        1,
        grants
            .into_iter()
            .map(|(token, grant)| (tokens::hash(token), grant)),
    );
    let config = EdgeConfig {
        hot_tier_bytes: 1 << 20,
        node_id: Some("fuzz-edge".into()),
        max_body_requests: 4,
        body_wait_ms: 10,
        ..EdgeConfig::default()
    };
    let edge = Edge::new(
        config,
        Arc::new(store),
        Arc::new(ManualClock::new(NOW_MS)),
        tokens,
        Routes::empty(),
        "credential".into(),
    )
    .unwrap();
    Arc::new(edge)
}

/// A request body sent as the given frames.
pub type FuzzBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A body of `frames`, one data frame each.
pub fn body(frames: Vec<Bytes>) -> FuzzBody {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        frames.into_iter().map(|f| Ok(Frame::data(f))).collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

/// What a request is made of, kept to build it twice (hot path and handler).
#[derive(Debug, Clone)]
pub struct Parts {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub frames: Vec<Bytes>,
}

impl Parts {
    fn request(&self) -> http::Request<FuzzBody> {
        let mut request = http::Request::new(body(self.frames.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Sends `parts` to a fresh edge as the server would (the hot path first, then
/// the handler), checks the answer, and returns its status.
pub fn send(parts: &Parts) -> u16 {
    let edge = edge();
    let memo = TokenMemo::default();
    let mut hot_request = parts.request();
    let hot = api::try_hot(&edge, &mut hot_request, &memo).map(|r| r.status().as_u16());
    let status = RUNTIME.block_on(async {
        let response = api::handle(&edge, parts.request()).await;
        let status = response.status();
        let is_json = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if status.is_client_error() || status.is_server_error() {
            assert!(is_json, "an error answer ({status}) is not JSON");
            let envelope: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("an error answer ({status}) is not JSON: {e}"));
            assert_eq!(envelope["success"], false, "{envelope}");
        }
        status.as_u16()
    });
    assert!(
        status < 500 || status == 503,
        "a 5xx other than 503 for a client's request: {status} for {parts:?}"
    );
    if let Some(hot) = hot {
        assert_eq!(
            hot, status,
            "the hot path and the handler disagree on {parts:?}"
        );
    }
    status
}

/// The `Authorization` header for one of the tokens, or none.
pub fn bearer(token: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

/// The path of a namespace route: `/client/v4/accounts/{account}/storage/kv/namespaces/{ns}{rest}`.
pub fn namespace_path(account: &str, namespace: &str, rest: &str) -> String {
    format!("/client/v4/accounts/{account}/storage/kv/namespaces/{namespace}{rest}")
}
