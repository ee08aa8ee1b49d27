//! The bulk routes' body parsers (`http/bulk.rs`, `http/bulk/bounded.rs`),
//! through the handler: the first byte of the input picks the route and
//! namespace, the rest is the body, sent in two frames.
//!
//! - `W`: `PUT .../bulk` (a write: `[{"key", "value", ...}]`)
//! - `D`: `DELETE .../bulk` and `P`: `POST .../bulk/delete` (`["key", ...]`)
//! - `G`: `POST .../bulk/get` (`{"keys": [...], "type", "withMetadata"}`)
//!
//! in the `full` namespace; the same letters in lower case, in the `cache` one.
//!
//! Checked: what `edgekv_fuzz_edge::send` checks, and a body that is not JSON
//! at all is a 400.
#![no_main]

use bytes::Bytes;
use edgekv_fuzz_edge::{ACCOUNT, CACHE_NS, FULL_NS, Parts, TOKEN, bearer, namespace_path, send};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&op, body)) = data.split_first() else {
        return;
    };
    let namespace = if op.is_ascii_lowercase() {
        CACHE_NS
    } else {
        FULL_NS
    };
    let (method, rest) = match op.to_ascii_uppercase() {
        b'W' => (http::Method::PUT, "/bulk"),
        b'D' => (http::Method::DELETE, "/bulk"),
        b'P' => (http::Method::POST, "/bulk/delete"),
        b'G' => (http::Method::POST, "/bulk/get"),
        _ => return,
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, bearer(TOKEN));
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let body = Bytes::copy_from_slice(body);
    let half = body.len() / 2;
    let parts = Parts {
        method,
        uri: namespace_path(ACCOUNT, namespace, rest).parse().unwrap(),
        headers,
        frames: vec![body.slice(..half), body.slice(half..)],
    };
    let status = send(&parts);
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        assert_eq!(status, 400, "a body that is not JSON answered {status}");
    }
});
