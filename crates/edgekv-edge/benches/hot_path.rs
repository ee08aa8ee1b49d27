//! Micro-costs of the hot read path: a hot-tier hit, a token lookup, and a whole
//! hot GET through the HTTP handler (routing, auth, lookup, response), in process.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edgekv_edge::hot::HotTier;
use edgekv_edge::service::Change;
use edgekv_edge::tokens::{self, Grant, TokenTable};
use edgekv_edge::{Edge, EdgeConfig};
use edgekv_kv::{Namespace, Record, SystemClock};
use edgekv_store::{MemoryStore, Store};
use http_body_util::Empty;

const NS: &str = "0123456789abcdef0123456789abcdef";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

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

fn hot_get_through_http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    store
        .create_namespace(&Namespace {
            id: NS.into(),
            title: "t".into(),
            account: "acct".into(),
        })
        .unwrap();
    let table = TokenTable::new(1, [(tokens::hash(TOKEN), Grant::full("t", "acct"))]);
    let edge = Arc::new(
        Edge::new(
            EdgeConfig::default(),
            Arc::new(store),
            Arc::new(SystemClock),
            table,
        )
        .unwrap(),
    );
    rt.block_on(async {
        let change = Change::Put {
            value: Bytes::from(vec![1u8; 100]),
            metadata: None,
            expiration: None,
        };
        edge.write(NS, Bytes::from_static(b"hot-key"), change)
            .await
            .unwrap();
    });
    let uri = format!("/client/v4/accounts/acct/storage/kv/namespaces/{NS}/values/hot-key");
    let auth = format!("Bearer {TOKEN}");
    c.bench_function("hot_get_http_handler_100B", |b| {
        b.iter(|| {
            let request = http::Request::get(uri.as_str())
                .header("authorization", auth.as_str())
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = rt.block_on(edgekv_edge::http::handle(&edge, request));
            assert_eq!(response.status(), 200);
            black_box(response)
        })
    });
}

criterion_group!(benches, hot_tier, token_lookup, hot_get_through_http);
criterion_main!(benches);
