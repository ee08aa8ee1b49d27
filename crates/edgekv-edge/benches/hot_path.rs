//! Micro-costs of the hot read path: a hot-tier hit, a token lookup, a route pick,
//! building a response, and a whole hot GET through the HTTP handler (routing,
//! auth, freshness, lookup, response) — both the synchronous held-read path the
//! server takes first and the full async handler — in process, on an edge synced
//! with a real origin build.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
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
            NS,
            key.as_bytes(),
            Record::value(Bytes::from(vec![1u8; 100]), None, None),
            token,
        );
    }
    c.bench_function("hot_tier_hit_100B", |b| {
        b.iter(|| black_box(hot.get(NS, black_box(b"key-4242"))))
    });
}

fn token_lookup(c: &mut Criterion) {
    let table = TokenTable::new(
        2,
        [(tokens::hash(TOKEN), Grant::full("t", "acct"))]
            .into_iter()
            .chain((0..1000).map(|i| {
                (
                    tokens::hash(&format!("token-{i}")),
                    Grant::full("t", "acct"),
                )
            })),
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
    let source = edgekv_edge::service::Source::Hit;
    c.bench_function("response_raw_100B_hit", |b| {
        b.iter(|| black_box(edgekv_edge::http::respond::raw(value.clone(), &source)))
    });
}

fn hot_get_through_http(c: &mut Criterion) {
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
    let edge = test.edge().clone();
    let uri = format!("/client/v4/accounts/acct/storage/kv/namespaces/{ns}/values/hot-key");
    let auth = format!("Bearer {TOKEN}");
    c.bench_function("hot_get_held_path_100B", |b| {
        let request = http::Request::get(uri.as_str())
            .header("authorization", auth.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let memo = edgekv_edge::tokens::TokenMemo::default();
        b.iter(|| {
            let response = edgekv_edge::http::try_hot(&edge, black_box(&request), &memo).unwrap();
            // By the static name: parsing a name from text here would be counted too.
            assert_eq!(response.headers()[&CACHE_HEADER], "HIT");
            black_box(response)
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
    let requests: Vec<_> = order
        .iter()
        .map(|&i| {
            http::Request::get(format!(
                "/client/v4/accounts/acct/storage/kv/namespaces/{ns}/values/{}",
                keys[i]
            ))
            .header("authorization", auth.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap()
        })
        .collect();
    c.bench_function("hot_get_held_path_10k_keys", |b| {
        let memo = edgekv_edge::tokens::TokenMemo::default();
        let mut next = 0;
        b.iter(|| {
            next = (next + 1) % requests.len();
            let response = edgekv_edge::http::try_hot(&edge, &requests[next], &memo).unwrap();
            assert_eq!(response.headers()[&CACHE_HEADER], "HIT");
            black_box(response)
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
criterion_main!(benches);
