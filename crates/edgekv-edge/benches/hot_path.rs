//! Micro-costs of the hot read path: a hot-tier hit, a token lookup, a route pick,
//! building a response, and a whole hot GET through the HTTP handler (routing,
//! auth, freshness, lookup, response) — both the synchronous held-read path the
//! server takes first and the full async handler — in process, on an edge synced
//! with a real origin build.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use edgekv_edge::hot::HotTier;
use edgekv_edge::http::respond::CACHE_HEADER;
use edgekv_edge::service::Change;
use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_kv::Record;
use edgekv_test_support::{TOKEN, TestEdge};
use http_body_util::Empty;

const NS: &str = "0123456789abcdef0123456789abcdef";

fn hot_tier(c: &mut Criterion) {
    let hot = HotTier::new(256 << 20);
    for i in 0..10_000 {
        let key = format!("key-{i}");
        let token = hot.fill_token(NS, key.as_bytes());
        hot.fill(
            key.as_bytes(),
            Record::value(Bytes::from(vec![1u8; 100]), None, None),
            token,
        );
    }
    // As the hot path reads: by the namespace's index, which a connection keeps,
    // taking the live value in place.
    let ns = hot.intern(NS).unwrap();
    c.bench_function("hot_tier_hit_100B", |b| {
        b.iter(|| black_box(hot.read_in(ns, black_box(b"key-4242"), |held| held.value())))
    });
}

fn token_lookup(c: &mut Criterion) {
    let table = TokenTable::new(
        2,
        [(tokens::hash(TOKEN), Grant::full("t", "acct"))]
            .into_iter()
            .chain(
                (0..1000).map(|i| (tokens::hash(format!("token-{i}")), Grant::full("t", "acct"))),
            ),
    );
    c.bench_function("token_lookup", |b| {
        b.iter(|| black_box(table.lookup(black_box(TOKEN))))
    });
}

fn route_pick(c: &mut Criterion) {
    let entry = |id: &str, weight_bp: u32| edgekv_routing::RouteEntry {
        build_id: id.into(),
        environment: "production".into(),
        tenant: "production".into(),
        artifact_digest: String::new(),
        weight_bp,
        endpoints: vec!["http://127.0.0.1:7001".into()],
        data_set: String::new(),
    };
    let table = edgekv_routing::RouteTable {
        version: 7,
        environment: "production".into(),
        tenant: "production".into(),
        issued_at: 0,
        known_good_build: "v1".into(),
        entries: vec![entry("v1", 9_000), entry("v2", 1_000)],
    };
    c.bench_function("route_pick_two_builds", |b| {
        b.iter(|| black_box(edgekv_routing::pick(&table, black_box(b"config/flags"))))
    });
}

fn response_building(c: &mut Criterion) {
    let value = Bytes::from(vec![1u8; 100]);
    let version = http::HeaderValue::from_static("7");
    // Into the header map of the last answer, as the hot path does on a connection.
    c.bench_function("response_raw_100B_hit", |b| {
        let mut headers = http::HeaderMap::new();
        b.iter(|| {
            let map = std::mem::take(&mut headers);
            let response = edgekv_edge::http::respond::hit_in(
                value.clone().into(),
                Some(version.clone()),
                map,
            );
            headers = black_box(response).into_parts().0.headers;
        })
    });
    // As the hot path answers: the value sent in place from its entry, read by
    // the namespace's index. The hit is in the figure (`hot_tier_hit_100B` alone).
    let hot = HotTier::new(1 << 20);
    let token = hot.fill_token(NS, b"key");
    hot.fill(b"key", Record::value(value.clone(), None, None), token);
    let ns = hot.intern(NS).unwrap();
    c.bench_function("hot_tier_hit_and_response_100B_held", |b| {
        let mut headers = http::HeaderMap::new();
        b.iter(|| {
            let map = std::mem::take(&mut headers);
            let value = hot.read_in(ns, black_box(b"key"), |held| held.value());
            let response = edgekv_edge::http::respond::hit_in(
                edgekv_edge::hot::ValueBuf::Held(value.unwrap()),
                Some(version.clone()),
                map,
            );
            headers = black_box(response).into_parts().0.headers;
        })
    });
}

/// What a hyper connection does between two requests: the answer's header map,
/// cleared, takes the next request's headers.
fn reuse_headers<B>(
    request: &mut http::Request<B>,
    response: http::Response<edgekv_edge::http::Body>,
    auth: &http::HeaderValue,
) {
    let mut headers = response.into_parts().0.headers;
    headers.clear();
    headers.insert(http::header::AUTHORIZATION, auth.clone());
    *request.headers_mut() = headers;
}

/// An edge synced with a real origin build, holding `hot-key` (100 B) hot; its
/// runtime, and the namespace.
fn hot_edge() -> (tokio::runtime::Runtime, TestEdge, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (test, ns) = rt.block_on(async {
        let test = TestEdge::start().await;
        let ns = test.client().create_namespace("bench").await;
        let change = Change::Put {
            value: Bytes::from(vec![1u8; 100]),
            metadata: None,
            expiration: None,
        };
        test.edge()
            .write(&ns, vec![(Bytes::from_static(b"hot-key"), change)])
            .await
            .unwrap();
        (test, ns)
    });
    (rt, test, ns)
}

/// The request of a hot GET of `key`.
fn hot_request(ns: &str, key: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!(
        "/client/v4/accounts/acct/storage/kv/namespaces/{ns}/values/{key}"
    ))
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(Empty::<Bytes>::new())
    .unwrap()
}

/// `n` hot GETs of one key on one connection, as the server answers them. Kept
/// out of line: `make bench-instructions` counts the instructions run inside it.
#[inline(never)]
fn held_requests(edge: &edgekv_edge::Edge, ns: &str, n: u64) {
    let auth = http::HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap();
    let mut request = hot_request(ns, "hot-key");
    let memo = edgekv_edge::tokens::TokenMemo::default();
    for _ in 0..n {
        let response = edgekv_edge::http::try_hot(edge, &mut request, &memo).unwrap();
        assert_eq!(response.status(), 200);
        reuse_headers(&mut request, black_box(response), &auth);
    }
}

fn hot_get_through_http(c: &mut Criterion) {
    let (rt, test, ns) = hot_edge();
    let edge = test.edge().clone();
    let uri = format!("/client/v4/accounts/acct/storage/kv/namespaces/{ns}/values/hot-key");
    let auth = format!("Bearer {TOKEN}");
    let auth_value = http::HeaderValue::from_str(&auth).unwrap();
    c.bench_function("hot_get_held_path_100B", |b| {
        let mut request = hot_request(&ns, "hot-key");
        let memo = edgekv_edge::tokens::TokenMemo::default();
        b.iter(|| {
            let response =
                edgekv_edge::http::try_hot(&edge, black_box(&mut request), &memo).unwrap();
            // By the static name: parsing a name from text here would be counted too.
            assert_eq!(response.headers()[&CACHE_HEADER], "HIT");
            reuse_headers(&mut request, response, &auth_value);
        })
    });
    // The same over 10,000 keys in a shuffled order: each hit's map slot and value
    // are then seldom in the CPU's caches, as under real load.
    let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i:05}")).collect();
    rt.block_on(async {
        for chunk in keys.chunks(1000) {
            let writes = chunk
                .iter()
                .map(|key| {
                    let change = Change::Put {
                        value: Bytes::from(vec![2u8; 100]),
                        metadata: None,
                        expiration: None,
                    };
                    (Bytes::from(key.clone()), change)
                })
                .collect();
            edge.write(&ns, writes).await.unwrap();
        }
    });
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // A fixed shuffle (multiplicative hashing of the index), the same every run.
    order.sort_by_key(|&i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut requests: Vec<_> = order.iter().map(|&i| hot_request(&ns, &keys[i])).collect();
    c.bench_function("hot_get_held_path_10k_keys", |b| {
        let memo = edgekv_edge::tokens::TokenMemo::default();
        let mut next = 0;
        b.iter(|| {
            next = (next + 1) % requests.len();
            let request = &mut requests[next];
            let response = edgekv_edge::http::try_hot(&edge, request, &memo).unwrap();
            assert_eq!(response.headers()[&CACHE_HEADER], "HIT");
            reuse_headers(request, response, &auth_value);
        })
    });
    c.bench_function("hot_get_http_handler_100B", |b| {
        b.iter(|| {
            let request = http::Request::get(uri.as_str())
                .header("authorization", auth.as_str())
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = rt.block_on(edgekv_edge::http::handle(&edge, request));
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()[&CACHE_HEADER], "HIT");
            black_box(response)
        })
    });
    drop(test);
}

criterion_group!(
    benches,
    hot_tier,
    token_lookup,
    route_pick,
    response_building,
    hot_get_through_http
);

/// Criterion's benches; or, with `EDGEKV_HELD_REQUESTS=N`, only N held-path
/// requests (for an instruction count under callgrind: `make bench-instructions`).
fn main() {
    if let Ok(n) = std::env::var("EDGEKV_HELD_REQUESTS") {
        let n = n
            .parse()
            .expect("EDGEKV_HELD_REQUESTS is a number of requests");
        let (_rt, test, ns) = hot_edge();
        held_requests(test.edge(), &ns, n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
