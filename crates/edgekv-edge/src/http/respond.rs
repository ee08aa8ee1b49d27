//! Building responses: the v4 JSON envelope, raw values and errors.

use bytes::Bytes;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Error;
use crate::hot::ValueBuf;
use crate::service::{Source, WriteOutcome};

/// The body type of every response: one chunk, a value sent in place from the
/// hot tier or any bytes.
pub type Body = Full<ValueBuf>;

// The texts of the headers a hot answer carries, made into headers at compile
// time both here and in place on the hot path ([`hit_in`]).
const OCTET_STREAM: &str = "application/octet-stream";
const CACHE: &str = "edgekv-cache";
const HIT_TEXT: &str = "HIT";
const ROUTE_VERSION: &str = "edgekv-route-version";

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static OCTETS: HeaderValue = HeaderValue::from_static(OCTET_STREAM);
static HIT: HeaderValue = HeaderValue::from_static(HIT_TEXT);
static MISS: HeaderValue = HeaderValue::from_static("MISS");
static STALE: HeaderValue = HeaderValue::from_static("STALE");
/// Says where an answer came from: HIT, MISS or STALE.
pub static CACHE_HEADER: HeaderName = HeaderName::from_static(CACHE);
/// The version of the route table the edge used.
pub static ROUTE_VERSION_HEADER: HeaderName = HeaderName::from_static(ROUTE_VERSION);
/// Names the build that answered.
pub static BUILD_HEADER: HeaderName = HeaderName::from_static("edgekv-build");

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

/// Says a write waits in the outbox: `edgekv-write: queued`.
pub static WRITE_HEADER: HeaderName = HeaderName::from_static("edgekv-write");
static QUEUED: HeaderValue = HeaderValue::from_static("queued");

/// The answer to a write: 200 when a build applied it; `202 Accepted` with
/// `edgekv-write: queued` when it waits in the outbox.
pub fn written(outcome: WriteOutcome, result: impl Serialize) -> Response<Body> {
    match outcome {
        WriteOutcome::Applied(_) => ok(result),
        WriteOutcome::Queued => {
            let mut response = envelope(
                StatusCode::ACCEPTED,
                json!({
                    "success": true,
                    "errors": [],
                    "messages": [{
                        "code": 10202,
                        "message": "no origin build can take the write now: it is queued at this edge, visible here at once, and replayed in order when a build answers",
                    }],
                    "result": result,
                }),
            );
            response
                .headers_mut()
                .insert(WRITE_HEADER.clone(), QUEUED.clone());
            response
        }
    }
}

/// A successful answer whose v4 envelope the caller wrote itself.
pub fn ok_json_bytes(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body).into()));
    response.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    response
}

/// A JSON document compiled into the binary (no envelope), sent without a copy.
pub fn json_static(body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes()).into()));
    response.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    response
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
pub fn raw(value: Bytes, source: &Source) -> Response<Body> {
    let mut response = Response::new(Full::new(value.into()));
    response.headers_mut().insert(CONTENT_TYPE, OCTETS.clone());
    mark(&mut response, source);
    response
}

/// A held value (`edgekv-cache: HIT`, and `edgekv-route-version` when there is a
/// table), its headers written into `headers` after clearing it: a map that has
/// room for them (a request's, say) then allocates nothing.
pub fn hit_in(
    value: ValueBuf,
    route_version: Option<HeaderValue>,
    mut headers: HeaderMap,
) -> Response<Body> {
    headers.clear();
    // Appended: the map is empty, so there is nothing an insert would replace.
    // Names and values made at compile time, in place: cloning a static's bytes
    // costs a call through their vtable each (60 instructions a request in all,
    // `make bench-instructions`).
    headers.append(
        CONTENT_TYPE,
        const { HeaderValue::from_static(OCTET_STREAM) },
    );
    headers.append(
        const { HeaderName::from_static(CACHE) },
        const { HeaderValue::from_static(HIT_TEXT) },
    );
    if let Some(version) = route_version {
        headers.append(const { HeaderName::from_static(ROUTE_VERSION) }, version);
    }
    let mut response = Response::new(Full::new(value));
    *response.headers_mut() = headers;
    response
}

/// Adds the headers that say where an answer came from.
pub fn mark(response: &mut Response<Body>, source: &Source) {
    let headers = response.headers_mut();
    match source {
        Source::Hit => {
            headers.insert(CACHE_HEADER.clone(), HIT.clone());
        }
        Source::Stale => {
            headers.insert(CACHE_HEADER.clone(), STALE.clone());
        }
        Source::Miss { build } => {
            headers.insert(CACHE_HEADER.clone(), MISS.clone());
            if let Ok(value) = HeaderValue::from_str(build) {
                headers.insert(BUILD_HEADER.clone(), value);
            }
        }
    }
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
    let mut response = Response::new(Full::new(Bytes::from(bytes).into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    response
}
