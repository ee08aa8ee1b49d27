//! Value routes: get, put, delete, metadata, and key listing.

use bytes::Bytes;
use edgekv_kv::limits::MAX_VALUE_BYTES;
use edgekv_kv::{cursor, validate};
use edgekv_store::ListQuery;
use http::Response;
use hyper::body::Body as HttpBody;
use serde_json::{Map, Value, json};

use super::query::Query;
use super::{Body, Incoming, Scope, body, respond};
use crate::service::Change;
use crate::{Error, Result};

/// Room for multipart framing and metadata around the largest value.
const UPLOAD_SLACK: usize = 64 * 1024;

pub(super) async fn get(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    key: &[u8],
) -> Result<Response<Body>> {
    let mode = request.enter(scope, false).await?;
    validate::key(key)?;
    let options = request.read_options(scope)?;
    let lookup = request
        .edge
        .get(&scope.namespace, mode, key, options)
        .await?;
    match lookup.record {
        Some(record) => Ok(respond::raw(record.value, &lookup.source)),
        None => {
            let mut response = respond::error(&Error::KeyNotFound);
            respond::mark(&mut response, &lookup.source);
            Ok(response)
        }
    }
}

pub(super) async fn metadata(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    key: &[u8],
) -> Result<Response<Body>> {
    let mode = request.enter(scope, false).await?;
    validate::key(key)?;
    let options = request.read_options(scope)?;
    let lookup = request
        .edge
        .get(&scope.namespace, mode, key, options)
        .await?;
    let record = lookup.record.ok_or(Error::KeyNotFound)?;
    let mut response = respond::ok(parse_metadata(record.metadata.as_ref()));
    respond::mark(&mut response, &lookup.source);
    Ok(response)
}

/// Stored metadata as JSON (it was validated when written).
pub(super) fn parse_metadata(stored: Option<&Bytes>) -> Value {
    stored
        .and_then(|m| serde_json::from_slice(m).ok())
        .unwrap_or(Value::Null)
}

pub(super) async fn put<B>(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    key: Bytes,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    request.enter(scope, true).await?;
    validate::key(&key)?;
    let query = Query::parse(request.query);
    let expiration = expiration(&query, request.edge.clock().now_s())?;
    let raw = body::read(request.headers, body, MAX_VALUE_BYTES + UPLOAD_SLACK).await?;
    let upload = match body::multipart_boundary(request.headers)? {
        Some(boundary) => body::multipart(raw, boundary).await?,
        None => body::Upload {
            value: raw,
            metadata: None,
        },
    };
    validate::value_len(upload.value.len())?;
    let metadata = upload
        .metadata
        .map(|m| validate::metadata_text(&m).map(Bytes::from))
        .transpose()?;
    let change = Change::Put {
        value: upload.value,
        metadata,
        expiration,
    };
    let version_key = request.version_key();
    let build = request.version_override(scope)?;
    let outcome = request
        .edge
        .write_keyed(
            &scope.namespace,
            vec![(key, change)],
            version_key.as_deref(),
            build.as_deref(),
        )
        .await?;
    Ok(respond::written(outcome, json!({})))
}

/// The absolute expiration asked for by `expiration` / `expiration_ttl`.
fn expiration(query: &Query<'_>, now_s: u64) -> Result<Option<u64>> {
    let at = query
        .get("expiration")
        .map(|t| validate::parse_seconds("expiration", t))
        .transpose()?;
    let ttl = query
        .get("expiration_ttl")
        .map(|t| validate::parse_seconds("expiration_ttl", t))
        .transpose()?;
    Ok(validate::expiration(at, ttl, now_s)?)
}

pub(super) async fn delete(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    key: Bytes,
) -> Result<Response<Body>> {
    request.enter(scope, true).await?;
    validate::key(&key)?;
    let version_key = request.version_key();
    let build = request.version_override(scope)?;
    let outcome = request
        .edge
        .write_keyed(
            &scope.namespace,
            vec![(key, Change::Delete)],
            version_key.as_deref(),
            build.as_deref(),
        )
        .await?;
    Ok(respond::written(outcome, json!({})))
}

pub(super) async fn list(request: Incoming<'_>, scope: &Scope<'_>) -> Result<Response<Body>> {
    let mode = request.enter(scope, false).await?;
    let options = request.read_options(scope)?;
    let query = Query::parse(request.query);
    let limit = validate::list_limit(query.get("limit"))?;
    let start_after = query.get("cursor").map(cursor::decode).transpose()?;
    let prefix = query.get("prefix").unwrap_or("").as_bytes().to_vec();
    let (page, source) = request
        .edge
        .list(
            &scope.namespace,
            mode,
            ListQuery {
                prefix,
                start_after,
                limit,
            },
            options,
        )
        .await?;
    let next = match (page.more, page.entries.last()) {
        (true, Some((last, _))) => cursor::encode(last),
        _ => String::new(),
    };
    let keys: Vec<Value> = page
        .entries
        .iter()
        .map(|(key, record)| {
            let mut entry = Map::new();
            entry.insert("name".into(), String::from_utf8_lossy(key).into());
            if let Some(at) = record.expiration {
                entry.insert("expiration".into(), at.into());
            }
            if record.metadata.is_some() {
                entry.insert("metadata".into(), parse_metadata(record.metadata.as_ref()));
            }
            Value::Object(entry)
        })
        .collect();
    let info = json!({ "count": keys.len(), "cursor": next });
    let mut response = respond::ok_with_info(keys, info);
    respond::mark(&mut response, &source);
    Ok(response)
}
