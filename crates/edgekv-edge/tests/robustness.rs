//! No request, however malformed, makes the edge panic or answer a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use edgekv_edge::Edge;
use edgekv_test_support::{TOKEN, TestEdge};
use http_body_util::Full;
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const PATHS: &[&str] = &[
    "",
    "/namespaces",
    "/namespaces/NS",
    "/namespaces/NS/values/",
    "/namespaces/NS/values/k",
    "/namespaces/NS/values/%ff%fe",
    "/namespaces/NS/values/%",
    "/namespaces/NS/values/..",
    "/namespaces/NS/metadata/k",
    "/namespaces/NS/keys",
    "/namespaces/NS/bulk",
    "/namespaces/NS/bulk/get",
    "/namespaces/NS/bulk/delete",
    "/namespaces/%zz",
    "/namespaces/NS/keys?limit=&cursor=%%&prefix=%ff",
    "/namespaces/NS/values/k?expiration=99999999999999999999999&expiration_ttl=-5",
];

const BODIES: &[&[u8]] = &[
    b"",
    b"value",
    b"{\"title\": \"t\"}",
    b"[{\"key\": \"k\", \"value\": \"v\"}]",
    b"[\"k\"]",
    b"{\"keys\": [\"k\"]}",
    b"{}",
    b"[]",
    b"null",
    b"{\"title\": 5}",
    b"[{\"key\": \"\", \"value\": \"v\"}]",
    b"[{\"key\": \"k\", \"value\": \"v\", \"expiration\": 1}]",
    b"[{\"key\": \"k\", \"value\": 5}]",
    b"{\"keys\": [\"\"], \"type\": \"json\"}",
    b"{\"keys\": \"k\"}",
    b"--boundary\r\nContent-Disposition: form-data; name=\"value\"\r\n\r\nv",
    b"\xff\xfe\x00",
];

async fn send(
    edge: &Arc<Edge>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<u16> {
    let mut builder = http::Request::builder().method(method).uri(path);
    builder = builder.header("authorization", format!("Bearer {TOKEN}"));
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    let request = builder.body(Full::new(Bytes::copy_from_slice(body))).ok()?;
    Some(
        edgekv_edge::http::handle(edge, request)
            .await
            .status()
            .as_u16(),
    )
}

/// One edge, many random requests built from hostile parts.
#[test]
fn malformed_requests_are_client_errors() {
    let rt = runtime();
    let test = rt.block_on(TestEdge::start());
    let kv = test.client();
    let ns = std::cell::RefCell::new(rt.block_on(kv.create_namespace("fuzz")));
    let served = std::cell::Cell::new(0u32);
    let edge = test.running.as_ref().unwrap().edge().clone();
    let strategy = (
        prop::sample::select(vec![
            "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS",
        ]),
        prop::sample::select(PATHS.to_vec()),
        prop_oneof![Just(String::new()), "[a-z%/?&=.#\\x00-\\x7f]{0,12}"],
        prop::sample::select(BODIES.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        any::<bool>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(4000));
    runner
        .run(
            &strategy,
            |(method, path, suffix, body, noise, multipart, noisy)| {
                let full = format!(
                    "/client/v4/accounts/acct/storage/kv{}{suffix}",
                    path.replace("NS", &ns.borrow())
                );
                let body = if noisy { noise.as_slice() } else { body };
                let content_type = multipart.then_some("multipart/form-data; boundary=boundary");
                if let Some(status) = rt.block_on(send(&edge, method, &full, content_type, body)) {
                    prop_assert!(status < 500, "{method} {full} answered {status}");
                    served.set(served.get() + u32::from(status < 300));
                }
                // A case that deleted the namespace leaves the next one a fresh one.
                if edge.namespaces("acct").iter().all(|n| n.id != *ns.borrow()) {
                    let title = format!("fuzz-{}", rand_title(&full));
                    *ns.borrow_mut() = rt.block_on(kv.create_namespace(&title));
                }
                Ok(())
            },
        )
        .unwrap();
    let served = served.get();
    assert!(
        served > 50,
        "too few requests got past validation to test much: {served}"
    );
    // The edge still serves after all that.
    rt.block_on(async {
        let ns = kv.create_namespace("after").await;
        assert_eq!(kv.put(&ns, "after", "ok").await, 200);
        assert_eq!(kv.get(&ns, "after").await, (200, b"ok".to_vec()));
    });
}

/// A title unlikely to collide with one a fuzz case set.
fn rand_title(seed: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:016x}", RandomState::new().hash_one(seed))
}
