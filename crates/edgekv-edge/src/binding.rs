//! workerd's KV binding protocol: what a Worker's `env.KV.get/put/delete/list`
//! and bulk `get([...])` send to the service behind a `kvNamespace` binding,
//! served from the same read path as the REST API (hot reads answered without
//! awaiting, read-through, fail-stale, routing by weight and affinity, the
//! outbox for writes). The protocol is written down in docs/workerd-binding.md;
//! [`wire`] parses it apart from any IO.
//!
//! workerd sends no credentials and no namespace: the operator has the binding's
//! external service add `Authorization: Bearer TOKEN` and `edgekv-namespace: ID`
//! (`injectRequestHeaders`). The token names the account; tokens, scopes and
//! read-only rules are those of the REST API.
//!
//! workerd hands the Worker only the status line of a failed call
//! (`KV GET failed: 400 <reason>`), so every refusal carries its message in the
//! reason phrase. A missing key is a 404 only for a get (workerd reads it as
//! `null`); a missing or unknown namespace is a 400, never a 404 that a Worker
//! would read as an absent value.

pub mod wire;

use std::sync::Arc;

use bytes::Bytes;
use edgekv_kv::limits::{MAX_SMALL_BODY_BYTES, MAX_VALUE_BYTES};
use edgekv_kv::{cursor, validate};
use edgekv_store::ListQuery;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Body as HttpBody;

use self::wire::Call;
use crate::http::respond::{self, Body};
use crate::http::{body, bulk::Asked};
use crate::metrics::{RouteLabel, Started};
use crate::service::{Change, Lookup, ReadOptions, Source, WriteOutcome};
use crate::tokens::{self, TokenMemo};
use crate::{Edge, Error, Result};

/// The header that names the namespace of a binding's requests.
pub static NAMESPACE_HEADER: HeaderName = HeaderName::from_static("edgekv-namespace");
/// The metadata of a value, as JSON text in raw UTF-8, both ways.
static METADATA_HEADER: HeaderName = HeaderName::from_static("cf-kv-metadata");
/// Where an answer came from, as workerd hands it to the Worker (`cacheStatus`).
static CACHE_STATUS_HEADER: HeaderName = HeaderName::from_static("cf-cache-status");
static JSON: HeaderValue = HeaderValue::from_static("application/json");
static TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Answers one request of the binding protocol. Never panics on input and
/// never answers a client fault with a 5xx.
pub async fn handle<B>(edge: &Arc<Edge>, request: Request<B>) -> Response<Body>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let start = Started::now();
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let call = Call::parse(&parts.method, parts.uri.path(), query);
    let label = call.as_ref().map_or(RouteLabel::Other, label);
    let response = match call {
        Ok(call) => answer(edge, &parts.headers, call, body).await,
        Err(err) => {
            body::drain(body, DRAIN_MAX).await;
            Err(err)
        }
    }
    .unwrap_or_else(|err| refusal(&err));
    let mut response = response;
    if let Some(version) = &edge.routes().version_header {
        response
            .headers_mut()
            .insert(respond::ROUTE_VERSION_HEADER.clone(), version.clone());
    }
    edge.metrics()
        .record(label, response.status().as_u16(), start.elapsed());
    response
}

/// The hot read path of the binding, as [`crate::http::try_hot`] is the REST
/// API's: a plain `GET /<key>?urlencoded=true` of a value the edge holds while
/// held entries may be served, with a valid token for the namespace named.
/// Anything else — including every error — is `None`, for [`handle`].
pub fn try_hot<B>(edge: &Edge, request: &Request<B>, memo: &TokenMemo) -> Option<Response<Body>> {
    if request.method() != http::Method::GET
        || !matches!(request.uri().query(), None | Some("urlencoded=true"))
    {
        return None;
    }
    let encoded = request.uri().path().strip_prefix('/')?;
    if encoded.is_empty() {
        return None;
    }
    let start = Started::now();
    let mut authorization = None;
    let mut namespace = None;
    for (name, value) in request.headers() {
        if name == http::header::AUTHORIZATION {
            authorization.get_or_insert(value);
        } else if name == NAMESPACE_HEADER {
            namespace.get_or_insert(value);
        }
    }
    let namespace = namespace?.to_str().ok()?;
    let token = memo.hash(crate::http::bearer_bytes(authorization?)?);
    let mode = edge
        .with_binding_account(Some(token), namespace, false, |account| {
            edge.known_mode(account, namespace)
        })
        .ok()??
        .ok()?;
    let key = wire::key(encoded);
    let lookup = edge.get_held(namespace, edge.hot().intern(namespace), mode, &key)?;
    // A held record's key was checked when it was written; only an absent one
    // is checked here, so that a bad key is a 400, not a 404.
    if lookup.record.is_none() {
        validate::key(&key).ok()?;
    }
    let mut response = value(lookup);
    if let Some(version) = &edge.routes().version_header {
        response
            .headers_mut()
            .insert(respond::ROUTE_VERSION_HEADER.clone(), version.clone());
    }
    edge.metrics().record(
        RouteLabel::Value,
        response.status().as_u16(),
        start.elapsed(),
    );
    Some(response)
}

/// The label a call is counted under in `/metrics` (those of the REST API's
/// routes that do the same).
fn label(call: &Call<'_>) -> RouteLabel {
    match call {
        Call::Get { .. } | Call::Put { .. } | Call::Delete { .. } => RouteLabel::Value,
        Call::List { .. } => RouteLabel::Keys,
        Call::BulkGet => RouteLabel::BulkGet,
    }
}

/// The most bytes of a body read and thrown away so that a refusal reaches
/// the client ([`body::drain`]).
const DRAIN_MAX: usize = 64 * 1024 * 1024;

/// Answers a call, its body read first: workerd sends a whole body before it
/// reads the answer, and a call answered before its body was read would reach
/// the Worker as a lost connection (or never), not as the refusal.
///
/// The token and namespace are checked before a body is read, as on the REST
/// API: a refused call's body is drained — read and thrown away, never kept
/// (up to [`DRAIN_MAX`]) — and takes no place of the body gate. An admitted
/// call's body is read whole while it holds a place of the gate; one past its
/// limit is drained, then refused.
async fn answer<B>(
    edge: &Arc<Edge>,
    headers: &HeaderMap,
    call: Call<'_>,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limit = match call {
        Call::Put { .. } => Some(MAX_VALUE_BYTES),
        Call::BulkGet => Some(MAX_SMALL_BODY_BYTES),
        Call::Get { .. } | Call::Delete { .. } | Call::List { .. } => None,
    };
    let scope = match enter(edge, headers, call.writes()).await {
        Ok(scope) => scope,
        Err(err) => {
            body::drain(body, DRAIN_MAX).await;
            return Err(err);
        }
    };
    let Some(limit) = limit else {
        body::drain(body, DRAIN_MAX).await;
        return serve(edge, headers, &scope, call, Bytes::new()).await;
    };
    let place = match edge.body_gate.admit().await {
        Ok(place) => place,
        Err(err) => {
            body::drain(body, DRAIN_MAX).await;
            return Err(err);
        }
    };
    let raw = body::read_whole(headers, body, limit, DRAIN_MAX).await?;
    let response = serve(edge, headers, &scope, call, raw).await;
    drop(place);
    response
}

/// The namespace a call acts on, checked for its token: the namespace id and
/// its mode.
struct Scope<'h> {
    namespace: &'h str,
    mode: edgekv_kv::Mode,
}

/// Checks the token and namespace of a call (`write` for one that changes data).
async fn enter<'h>(edge: &Arc<Edge>, headers: &'h HeaderMap, write: bool) -> Result<Scope<'h>> {
    let namespace = namespace(headers)?;
    let token = crate::http::bearer(headers).map(tokens::hash);
    let account = edge.with_binding_account(token, namespace, write, str::to_owned)?;
    let mode = edge.namespace_mode(&account, namespace).await?;
    Ok(Scope { namespace, mode })
}

/// Answers an admitted call whose body (if it has one) is `raw`.
async fn serve(
    edge: &Arc<Edge>,
    headers: &HeaderMap,
    scope: &Scope<'_>,
    call: Call<'_>,
    raw: Bytes,
) -> Result<Response<Body>> {
    let Scope { namespace, mode } = *scope;
    match call {
        Call::Get { key, cache_ttl_s } => {
            validate::key(&key)?;
            let options = ReadOptions {
                cache_ttl_s,
                ..ReadOptions::default()
            };
            Ok(value(edge.get(namespace, mode, &key, options).await?))
        }
        Call::Put { key, expiry } => {
            validate::key(&key)?;
            let expiration = expiry.resolve(edge.clock().now_s())?;
            // Kept as sent: a Worker reads back the very JSON text it wrote
            // (its key order included), in a get's header and in a list.
            let metadata = match headers.get(&METADATA_HEADER) {
                Some(text) if !text.is_empty() => {
                    validate::metadata_verbatim(text.as_bytes())?;
                    Some(Bytes::copy_from_slice(text.as_bytes()))
                }
                _ => None,
            };
            let change = Change::Put {
                value: raw,
                metadata,
                expiration,
            };
            let key = Bytes::copy_from_slice(&key);
            let outcome = edge
                .write_keyed(namespace, vec![(key, change)], None, None)
                .await?;
            Ok(written(outcome))
        }
        Call::Delete { key } => {
            validate::key(&key)?;
            let key = Bytes::copy_from_slice(&key);
            let outcome = edge
                .write_keyed(namespace, vec![(key, Change::Delete)], None, None)
                .await?;
            Ok(written(outcome))
        }
        Call::List {
            limit,
            prefix,
            cursor,
        } => {
            let start_after = cursor
                .as_deref()
                .map(cursor::decode)
                .transpose()
                .map_err(|_| Error::BadRequest("Invalid cursor.".into()))?;
            let query = ListQuery {
                prefix,
                start_after,
                limit,
            };
            let (page, source) = edge
                .list(namespace, mode, query, ReadOptions::default())
                .await?;
            let mut response = json(list_body(&page));
            mark(&mut response, &source);
            Ok(response)
        }
        Call::BulkGet => {
            let asked = Asked::parse(&raw)?;
            if asked.len() == 0 {
                return Err(Error::BadRequest(
                    "a bulk get must ask for at least one key".into(),
                ));
            }
            let options = ReadOptions {
                // Routed as one request, by its namespace, as on the REST API.
                version_key: Some(Bytes::copy_from_slice(namespace.as_bytes())),
                cache_ttl_s: asked.cache_ttl().map(wire::cache_ttl).transpose()?,
                ..ReadOptions::default()
            };
            let mut out = Vec::new();
            asked
                .write_values(edge, namespace, mode, options, &mut out)
                .await?;
            Ok(json(out))
        }
    }
}

/// The namespace a binding's request names (`edgekv-namespace`).
fn namespace(headers: &HeaderMap) -> Result<&str> {
    let value = headers.get(&NAMESPACE_HEADER).ok_or_else(|| {
        Error::BadRequest(
            "missing edgekv-namespace header: add it to the binding's service (injectRequestHeaders)"
                .into(),
        )
    })?;
    let id = value
        .to_str()
        .map_err(|_| Error::BadRequest("edgekv-namespace is not a namespace id".into()))?
        .trim();
    validate::namespace_id(id)
        .map_err(|_| Error::BadRequest(format!("edgekv-namespace {id:?} is not a namespace id")))?;
    Ok(id)
}

/// The answer to a get: the value and its metadata, or a 404 (`null`).
fn value(lookup: Lookup) -> Response<Body> {
    let mut response = match lookup.record {
        Some(record) => {
            let mut response = Response::new(Body::new(record.value.into()));
            if let Some(metadata) = record.metadata.as_deref()
                && let Some(header) = metadata_header(metadata)
            {
                response
                    .headers_mut()
                    .insert(METADATA_HEADER.clone(), header);
            }
            response
        }
        None => {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    mark(&mut response, &lookup.source);
    response
}

/// Stored metadata (compact JSON) as a header value, in raw UTF-8 as workerd
/// reads it. A DEL, which JSON leaves raw in strings but a header may not
/// carry, is escaped.
fn metadata_header(metadata: &[u8]) -> Option<HeaderValue> {
    if !metadata.contains(&0x7f) {
        return HeaderValue::from_bytes(metadata).ok();
    }
    let mut escaped = Vec::with_capacity(metadata.len() + 8);
    for &byte in metadata {
        if byte == 0x7f {
            escaped.extend_from_slice(b"\\u007f");
        } else {
            escaped.push(byte);
        }
    }
    HeaderValue::from_bytes(&escaped).ok()
}

/// Says where an answer came from: `CF-Cache-Status` (the Worker's
/// `cacheStatus`) and the REST API's `edgekv-cache`.
fn mark(response: &mut Response<Body>, source: &Source) {
    respond::mark(response, source);
    let status = match source {
        Source::Hit => "HIT",
        Source::Miss { .. } => "MISS",
        Source::Stale => "STALE",
    };
    response.headers_mut().insert(
        CACHE_STATUS_HEADER.clone(),
        HeaderValue::from_static(status),
    );
}

/// The answer to a write: 200, or 202 with `edgekv-write: queued` when it waits
/// in the outbox (any 2xx is success to workerd).
fn written(outcome: WriteOutcome) -> Response<Body> {
    let mut response = Response::new(Body::default());
    if outcome == WriteOutcome::Queued {
        *response.status_mut() = StatusCode::ACCEPTED;
        response.headers_mut().insert(
            respond::WRITE_HEADER.clone(),
            HeaderValue::from_static("queued"),
        );
    }
    response
}

fn json(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from(body).into()));
    response.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    response
}

/// A list page as workerd reads it: `{"keys": [{"name", "expiration"?,
/// "metadata"?}], "list_complete", "cursor"?}`, the metadata as JSON *text* (a
/// string workerd parses; a string sent parsed would not survive it).
fn list_body(page: &edgekv_store::ListPage) -> Vec<u8> {
    use serde_json::{Map, Value};
    let keys: Vec<Value> = page
        .entries
        .iter()
        .map(|(key, record)| {
            let mut entry = Map::new();
            entry.insert("name".into(), String::from_utf8_lossy(key).into());
            if let Some(at) = record.expiration {
                entry.insert("expiration".into(), at.into());
            }
            if let Some(metadata) = &record.metadata {
                entry.insert(
                    "metadata".into(),
                    String::from_utf8_lossy(metadata).into_owned().into(),
                );
            }
            Value::Object(entry)
        })
        .collect();
    let mut body = Map::new();
    body.insert("keys".into(), keys.into());
    let next = match (page.more, page.entries.last()) {
        (true, Some((last, _))) => Some(cursor::encode(last)),
        _ => None,
    };
    body.insert("list_complete".into(), next.is_none().into());
    if let Some(next) = next {
        body.insert("cursor".into(), next.into());
    }
    // A map of strings and numbers always serialises.
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

/// A refused or failed call: the status, and the message in the reason phrase
/// (all workerd shows the Worker) and in a plain-text body (for people with
/// curl). A namespace that is not found is the binding's configuration fault,
/// a 400: a 404 would read as an absent value.
fn refusal(err: &Error) -> Response<Body> {
    let status = match err {
        Error::NamespaceNotFound | Error::NoRoute(_) => StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    let message = match err {
        Error::NamespaceNotFound => {
            "namespace not found: check edgekv-namespace in the binding's injectRequestHeaders, \
             and that the token's account has it"
                .to_string()
        }
        other => other.client_message(),
    };
    if status.is_server_error() {
        tracing::error!(error = %err, "binding request failed");
    }
    let phrase = wire::reason(&message);
    let mut response = Response::new(Body::new(Bytes::from(message).into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT.clone());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
        response.extensions_mut().insert(phrase);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_goes_out_as_raw_utf8_with_del_escaped() {
        let header = metadata_header("{\"n\":\"é\"}".as_bytes()).unwrap();
        assert_eq!(header.as_bytes(), "{\"n\":\"é\"}".as_bytes());
        let header = metadata_header(b"{\"n\":\"\x7f\"}").unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(header.as_bytes()).unwrap();
        assert_eq!(parsed["n"], "\u{7f}");
    }

    #[test]
    fn a_refusal_says_why_in_its_reason_phrase_and_an_unknown_namespace_is_no_404() {
        let response = refusal(&Error::NamespaceNotFound);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let phrase = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert!(phrase.as_bytes().starts_with(b"namespace not found"));
        let response = refusal(&Error::Kv(edgekv_kv::Error::MetadataTooLarge {
            len: 1102,
            max: 1024,
        }));
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let phrase = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert!(
            std::str::from_utf8(phrase.as_bytes())
                .unwrap()
                .contains("1102")
        );
    }

    #[test]
    fn a_list_page_sends_metadata_as_json_text_and_a_cursor_only_when_more() {
        let record = |metadata: Option<&str>, expiration| edgekv_kv::Record {
            metadata: metadata.map(|m| Bytes::copy_from_slice(m.as_bytes())),
            expiration,
            ..edgekv_kv::Record::value(Bytes::from_static(b"v"), None, None)
        };
        let page = edgekv_store::ListPage {
            entries: vec![
                (
                    Bytes::from_static(b"a"),
                    record(Some("\"just text\""), None),
                ),
                (
                    Bytes::from_static(b"b"),
                    record(Some("{\"i\":1}"), Some(2_000_000_000)),
                ),
                (Bytes::from_static(b"c"), record(None, None)),
            ],
            more: true,
        };
        let body: serde_json::Value = serde_json::from_slice(&list_body(&page)).unwrap();
        assert_eq!(body["keys"][0]["metadata"], "\"just text\"");
        assert_eq!(body["keys"][1]["metadata"], "{\"i\":1}");
        assert_eq!(body["keys"][1]["expiration"], 2_000_000_000u64);
        assert!(body["keys"][2].get("metadata").is_none());
        assert!(body["keys"][0].get("expiration").is_none());
        assert_eq!(body["list_complete"], false);
        assert_eq!(
            cursor::decode(body["cursor"].as_str().unwrap()).unwrap(),
            b"c"
        );
        let last = edgekv_store::ListPage {
            more: false,
            ..page
        };
        let body: serde_json::Value = serde_json::from_slice(&list_body(&last)).unwrap();
        assert_eq!(body["list_complete"], true);
        assert!(body.get("cursor").is_none());
    }
}
