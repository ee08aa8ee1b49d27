//! Building responses: the v4 JSON envelope, raw values and errors.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Error;

/// The body type of every response.
pub type Body = Full<Bytes>;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static OCTETS: HeaderValue = HeaderValue::from_static("application/octet-stream");
/// Where an answer came from.
pub static CACHE_HIT: HeaderValue = HeaderValue::from_static("HIT");
/// The name of the header saying where an answer came from.
pub const CACHE_HEADER: &str = "edgekv-cache";

/// A successful v4 envelope around `result`.
pub fn ok(result: impl Serialize) -> Response<Body> {
    envelope(
        StatusCode::OK,
        json!({
            "success": true,
            "errors": [],
            "messages": [],
            "result": result,
        }),
    )
}

/// A successful v4 envelope with `result_info`.
pub fn ok_with_info(result: impl Serialize, info: Value) -> Response<Body> {
    envelope(
        StatusCode::OK,
        json!({
            "success": true,
            "errors": [],
            "messages": [],
            "result": result,
            "result_info": info,
        }),
    )
}

/// A raw value.
pub fn raw(value: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(value));
    response.headers_mut().insert(CONTENT_TYPE, OCTETS.clone());
    response
        .headers_mut()
        .insert(CACHE_HEADER, CACHE_HIT.clone());
    response
}

/// The v4 error envelope of an error.
pub fn error(err: &Error) -> Response<Body> {
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
    }
    let mut response = envelope(
        status,
        json!({
            "success": false,
            "errors": [{ "code": err.code(), "message": err.client_message() }],
            "messages": [],
            "result": null,
        }),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn envelope(status: StatusCode, body: Value) -> Response<Body> {
    // A `Value` always serialises.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    response
}
