//! Bulk routes: write, delete and get many keys in one request.
//!
//! A bulk write or delete is checked whole before anything is written: one bad
//! item refuses the request, naming the item, and writes nothing.

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use edgekv_kv::limits::{
    MAX_BULK_BODY_BYTES, MAX_BULK_GET_KEYS, MAX_BULK_ITEMS, MAX_SMALL_BODY_BYTES,
};
use edgekv_kv::validate;
use http::Response;
use hyper::body::Body as HttpBody;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Body, Incoming, Scope, body, json as json_text, respond};
use crate::service::{Change, WriteOutcome};
use crate::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    key: String,
    value: String,
    #[serde(default)]
    base64: bool,
    #[serde(default)]
    expiration: Option<u64>,
    #[serde(default)]
    expiration_ttl: Option<u64>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
struct GetBody<'a> {
    #[serde(borrow)]
    keys: Vec<Key<'a>>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, rename = "withMetadata")]
    with_metadata: bool,
}

/// A key of a bulk get: borrowed from the body unless it has escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

fn item_error(index: usize, key: &str, err: impl std::fmt::Display) -> Error {
    let shown: String = key.chars().take(64).collect();
    Error::BadRequest(format!("item {index} (key {shown:?}): {err}"))
}

fn check_count(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(edgekv_kv::Error::TooManyItems { len, max }.into());
    }
    Ok(())
}

fn bulk_result(outcome: WriteOutcome, count: usize) -> Response<Body> {
    respond::written(
        outcome,
        json!({ "successful_key_count": count, "unsuccessful_keys": [] }),
    )
}

pub(super) async fn write<B>(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    request.enter(scope, true).await?;
    let raw = body::read(request.headers, body, MAX_BULK_BODY_BYTES).await?;
    let items: Vec<Item> = serde_json::from_slice(&raw).map_err(|e| {
        Error::BadRequest(format!(
            "body must be a JSON array of {{key, value, ...}}: {e}"
        ))
    })?;
    check_count(items.len(), MAX_BULK_ITEMS)?;
    let now_s = request.edge.clock().now_s();
    let mut batch = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let fail = |e: &dyn std::fmt::Display| item_error(index, &item.key, e);
        validate::key_text(&item.key).map_err(|e| fail(&e))?;
        let value = if item.base64 {
            STANDARD
                .decode(item.value.as_bytes())
                .map_err(|e| fail(&format!("value is not valid base64: {e}")))?
        } else {
            item.value.clone().into_bytes()
        };
        validate::value_len(value.len()).map_err(|e| fail(&e))?;
        let metadata = item
            .metadata
            .as_ref()
            .map(validate::metadata)
            .transpose()
            .map_err(|e| fail(&e))?;
        let expiration = validate::expiration(item.expiration, item.expiration_ttl, now_s)
            .map_err(|e| fail(&e))?;
        let change = Change::Put {
            value: value.into(),
            metadata: metadata.map(Bytes::from),
            expiration,
        };
        batch.push((Bytes::from(item.key), change));
    }
    let count = batch.len();
    let version_key = request.version_key();
    let build = request.version_override(scope)?;
    let outcome = request
        .edge
        .write_many(
            &scope.namespace,
            batch,
            version_key.as_deref(),
            build.as_deref(),
        )
        .await?;
    Ok(bulk_result(outcome, count))
}

pub(super) async fn delete<B>(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    request.enter(scope, true).await?;
    let raw = body::read(request.headers, body, MAX_BULK_BODY_BYTES).await?;
    let keys: Vec<String> = serde_json::from_slice(&raw)
        .map_err(|e| Error::BadRequest(format!("body must be a JSON array of keys: {e}")))?;
    check_count(keys.len(), MAX_BULK_ITEMS)?;
    let mut batch = Vec::with_capacity(keys.len());
    for (index, key) in keys.into_iter().enumerate() {
        validate::key_text(&key).map_err(|e| item_error(index, &key, e))?;
        batch.push((Bytes::from(key), Change::Delete));
    }
    let count = batch.len();
    let version_key = request.version_key();
    let build = request.version_override(scope)?;
    let outcome = request
        .edge
        .write_many(
            &scope.namespace,
            batch,
            version_key.as_deref(),
            build.as_deref(),
        )
        .await?;
    Ok(bulk_result(outcome, count))
}

pub(super) async fn get<B>(
    request: Incoming<'_>,
    scope: &Scope<'_>,
    body: B,
) -> Result<Response<Body>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mode = request.enter(scope, false).await?;
    let mut options = request.read_options(scope)?;
    // A bulk get is routed as one request: by its namespace, unless a version key says.
    if options.version_key.is_none() {
        options.version_key = Some(Bytes::copy_from_slice(scope.namespace.as_bytes()));
    }
    let raw = body::read(request.headers, body, MAX_SMALL_BODY_BYTES).await?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::BadRequest(format!(
            "body must be JSON like {{\"keys\": [...], \"type\": \"text\", \"withMetadata\": false}}: {e}"
        ))
    };
    // UTF-8 checked once for the whole body, not again for each key.
    let text = std::str::from_utf8(&raw).map_err(|e| bad(&e))?;
    let asked: GetBody = serde_json::from_str(text).map_err(|e| bad(&e))?;
    check_count(asked.keys.len(), MAX_BULK_GET_KEYS)?;
    let as_json = match asked.kind.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "type must be `text` or `json`, got {other:?}"
            )));
        }
    };
    for (index, Key(key)) in asked.keys.iter().enumerate() {
        validate::key_text(key).map_err(|e| item_error(index, key, e))?;
    }
    // The answer is written straight into one buffer in request order (a key asked
    // twice is answered once): no JSON tree per key. Keys the edge holds are
    // answered without awaiting, as a single held GET is.
    let plain = !options.no_cache && options.build.is_none() && options.cache_ttl_s.is_none();
    let mut out = Vec::with_capacity(96 + asked.keys.len() * (48 + 128));
    out.extend_from_slice(br#"{"success":true,"errors":[],"messages":[],"result":{"values":{"#);
    let mut seen =
        HashSet::with_capacity_and_hasher(asked.keys.len(), foldhash::fast::RandomState::default());
    let index = request.edge.hot().intern(&scope.namespace);
    for Key(key) in &asked.keys {
        let key: &str = key;
        if !seen.insert(key) {
            continue;
        }
        let hot = if plain {
            request
                .edge
                .get_held(&scope.namespace, index, mode, key.as_bytes())
        } else {
            None
        };
        let lookup = match hot {
            Some(lookup) => lookup,
            None => {
                request
                    .edge
                    .get(&scope.namespace, mode, key.as_bytes(), options.clone())
                    .await?
            }
        };
        if seen.len() > 1 {
            out.push(b',');
        }
        json_text::write_str(&mut out, key);
        out.push(b':');
        let Some(record) = lookup.record else {
            out.extend_from_slice(b"null");
            continue;
        };
        if asked.with_metadata {
            out.extend_from_slice(br#"{"value":"#);
        }
        if as_json {
            serde_json::from_slice::<serde::de::IgnoredAny>(&record.value).map_err(|e| {
                Error::BadRequest(format!("the value of key {key:?} is not JSON: {e}"))
            })?;
            out.extend_from_slice(&record.value);
        } else {
            json_text::write_text(&mut out, &record.value);
        }
        if asked.with_metadata {
            out.extend_from_slice(br#","metadata":"#);
            // Metadata is stored as compact JSON, checked when it was written.
            match &record.metadata {
                Some(metadata) => out.extend_from_slice(metadata),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}}}");
    Ok(respond::ok_json_bytes(out))
}
