//! Multipart value uploads (`http/body.rs`: the boundary from `content-type`,
//! then the `value` and `metadata` parts), through the handler: the input's
//! first line is what follows `multipart/form-data; ` in `content-type` (the
//! boundary parameter), the rest is the body of a `PUT .../values/{key}`, sent in
//! two frames.
//!
//! Checked: what `edgekv_fuzz_edge::send` checks.
#![no_main]

use bytes::Bytes;
use edgekv_fuzz_edge::{ACCOUNT, FULL_NS, Parts, TOKEN, bearer, namespace_path, send};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (params, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut content_type = b"multipart/form-data; ".to_vec();
    content_type.extend_from_slice(params);
    let Ok(content_type) = http::HeaderValue::from_bytes(&content_type) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, bearer(TOKEN));
    headers.insert(http::header::CONTENT_TYPE, content_type);
    let body = Bytes::copy_from_slice(body);
    let half = body.len() / 2;
    let parts = Parts {
        method: http::Method::PUT,
        uri: namespace_path(ACCOUNT, FULL_NS, "/values/upload")
            .parse()
            .unwrap(),
        headers,
        frames: vec![body.slice(..half), body.slice(half..)],
    };
    send(&parts);
});
