//! Bulk routes: write, delete and get many keys in one request.
//!
//! A bulk write or delete is checked whole before anything is written: one bad
//! item refuses the request, naming the item, and writes nothing.
//!
//! A body costs a small multiple of its own size at most: its size is checked
//! as it is read ([`body::read`]), its item count as it is parsed
//! ([`bounded`]: the item past the limit is refused before it is read), and
//! keys and values are borrowed from the body — a value without escapes is
//! handed to the store as a slice of it, never copied.

mod bounded;

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use edgekv_kv::limits::{
    MAX_BULK_BODY_BYTES, MAX_BULK_GET_KEYS, MAX_BULK_ITEMS, MAX_METADATA_BYTES,
    MAX_SMALL_BODY_BYTES,
};
use edgekv_kv::validate;
use http::Response;
use hyper::body::Body as HttpBody;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use self::bounded::{AtMost, GetBody, GetBodySeed, Key, Overflow};
use super::{Body, Incoming, Scope, body, json as json_text, respond};
use crate::service::{Change, ReadOptions, WriteOutcome};
use crate::{Error, Result};

/// An item of a bulk write, borrowed from the body: the key and value unless
/// they have escapes, the metadata as its JSON text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
    #[serde(default)]
    base64: bool,
    #[serde(default)]
    expiration: Option<u64>,
    #[serde(default)]
    expiration_ttl: Option<u64>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
}

/// The longest metadata text a bulk item may send, whitespace included: its
/// compact form must fit [`MAX_METADATA_BYTES`], and a text many times longer
/// is refused before it is parsed into a tree of values.
const MAX_METADATA_TEXT_BYTES: usize = 64 * MAX_METADATA_BYTES;

fn item_error(index: usize, key: &str, err: impl std::fmt::Display) -> Error {
    let shown: String = key.chars().take(64).collect();
    Error::BadRequest(format!("item {index} (key {shown:?}): {err}"))
}

/// `part` of `body` as a slice of it, sharing its buffer; a copy when `part`
/// lies elsewhere (an unescaped string that serde had to build).
fn share(body: &Bytes, part: &[u8]) -> Bytes {
    let whole = body.as_ptr_range();
    let inner = part.as_ptr_range();
    if part.is_empty() {
        Bytes::new()
    } else if whole.start <= inner.start && inner.end <= whole.end {
        body.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// A string of the body as bytes: a slice of the body when it was borrowed
/// from it, else the string serde built (moved, not copied).
fn text_bytes(body: &Bytes, text: Cow<'_, str>) -> Bytes {
    match text {
        Cow::Borrowed(text) => share(body, text.as_bytes()),
        Cow::Owned(text) => Bytes::from(text),
    }
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
    let overflow = Overflow::default();
    let items: Vec<Item<'_>> = bounded::parse(
        serde_json::Deserializer::from_slice(&raw),
        AtMost::new(MAX_BULK_ITEMS, &overflow),
    )
    .map_err(|e| {
        overflow.refusal(&e, |e| {
            Error::BadRequest(format!(
                "body must be a JSON array of {{key, value, ...}}: {e}"
            ))
        })
    })?;
    let now_s = request.edge.clock().now_s();
    let mut batch = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let fail = |e: &dyn std::fmt::Display| item_error(index, &item.key, e);
        validate::key_text(&item.key).map_err(|e| fail(&e))?;
        let value = if item.base64 {
            STANDARD
                .decode(item.value.as_bytes())
                .map(Bytes::from)
                .map_err(|e| fail(&format!("value is not valid base64: {e}")))?
        } else {
            // Checked before it is made: a value that is too large is not kept.
            validate::value_len(item.value.len()).map_err(|e| fail(&e))?;
            text_bytes(&raw, item.value)
        };
        validate::value_len(value.len()).map_err(|e| fail(&e))?;
        let metadata = match item.metadata {
            None => None,
            Some(text) if text.get().len() > MAX_METADATA_TEXT_BYTES => {
                let err = edgekv_kv::Error::MetadataTooLarge {
                    len: text.get().len(),
                    max: MAX_METADATA_BYTES,
                };
                return Err(fail(&err));
            }
            Some(text) => Some(
                validate::metadata_text(text.get().as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| fail(&e))?,
            ),
        };
        let expiration = validate::expiration(item.expiration, item.expiration_ttl, now_s)
            .map_err(|e| fail(&e))?;
        let change = Change::Put {
            value,
            metadata,
            expiration,
        };
        batch.push((text_bytes(&raw, item.key), change));
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
    let overflow = Overflow::default();
    let keys: Vec<Key<'_>> = bounded::parse(
        serde_json::Deserializer::from_slice(&raw),
        AtMost::new(MAX_BULK_ITEMS, &overflow),
    )
    .map_err(|e| {
        overflow.refusal(&e, |e| {
            Error::BadRequest(format!("body must be a JSON array of keys: {e}"))
        })
    })?;
    let mut batch = Vec::with_capacity(keys.len());
    for (index, Key(key)) in keys.into_iter().enumerate() {
        validate::key_text(&key).map_err(|e| item_error(index, &key, e))?;
        // Keys are short: copied, so the body is freed before the write.
        let key = match key {
            Cow::Borrowed(key) => Bytes::copy_from_slice(key.as_bytes()),
            Cow::Owned(key) => Bytes::from(key),
        };
        batch.push((key, Change::Delete));
    }
    drop(raw);
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
    let asked = Asked::parse(&raw)?;
    let mut out = Vec::with_capacity(96 + asked.capacity());
    out.extend_from_slice(br#"{"success":true,"errors":[],"messages":[],"result":{"values":"#);
    asked
        .write_values(request.edge, &scope.namespace, mode, options, &mut out)
        .await?;
    out.extend_from_slice(b"}}");
    Ok(respond::ok_json_bytes(out))
}

/// The most value bytes one bulk get answers with, in all (as one value).
const MAX_BULK_GET_ANSWER_BYTES: usize = edgekv_kv::limits::MAX_VALUE_BYTES;

/// A bulk get as asked, checked: its keys (each by the key rules), whether
/// values are sent as parsed JSON (`type: "json"`), whether each comes with its
/// metadata. Shared by the REST API and workerd's KV binding
/// ([`crate::binding`]), which differ only around the values object.
pub(crate) struct Asked<'a> {
    body: GetBody<'a>,
    as_json: bool,
}

impl<'a> Asked<'a> {
    /// Parses and checks the JSON body of a bulk get: at most
    /// [`MAX_BULK_GET_KEYS`] keys, type `text` or `json`.
    pub(crate) fn parse(raw: &'a [u8]) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::BadRequest(format!(
                "body must be JSON like {{\"keys\": [...], \"type\": \"text\", \"withMetadata\": false}}: {e}"
            ))
        };
        // UTF-8 checked once for the whole body, not again for each key.
        let text = std::str::from_utf8(raw).map_err(|e| bad(&e))?;
        let overflow = Overflow::default();
        let body = bounded::parse(
            serde_json::Deserializer::from_str(text),
            GetBodySeed {
                max: MAX_BULK_GET_KEYS,
                overflow: &overflow,
            },
        )
        .map_err(|e| overflow.refusal(&e, bad))?;
        let as_json = match body.kind.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "type must be `text` or `json`, got {other:?}"
                )));
            }
        };
        for (index, Key(key)) in body.keys.iter().enumerate() {
            validate::key_text(key).map_err(|e| item_error(index, key, e))?;
        }
        Ok(Asked { body, as_json })
    }

    /// How many keys were asked for.
    pub(crate) fn len(&self) -> usize {
        self.body.keys.len()
    }

    /// `cacheTtl` of the body, as sent.
    pub(crate) fn cache_ttl(&self) -> Option<&str> {
        self.body.cache_ttl.as_deref()
    }

    /// A first guess at the size of the answer.
    fn capacity(&self) -> usize {
        self.len() * (48 + 128)
    }

    /// Writes the values object, `{"key": value-or-null, ...}`, into `out`.
    ///
    /// The answer is written straight into one buffer in request order (a key
    /// asked twice is answered once): no JSON tree per key. Keys the edge holds
    /// are answered without awaiting, as a single held GET is.
    pub(crate) async fn write_values(
        &self,
        edge: &std::sync::Arc<crate::Edge>,
        namespace: &str,
        mode: edgekv_kv::Mode,
        options: ReadOptions,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let plain = !options.no_cache && options.build.is_none() && options.cache_ttl_s.is_none();
        out.reserve(self.capacity());
        out.push(b'{');
        let mut seen = HashSet::with_capacity_and_hasher(
            self.body.keys.len(),
            foldhash::fast::RandomState::default(),
        );
        let index = edge.hot().intern(namespace);
        // The values answered, in all: bounded as one value is, so that a
        // hundred large values cannot make one answer of gigabytes.
        let mut total = 0usize;
        for Key(key) in &self.body.keys {
            let key: &str = key.as_ref();
            if !seen.insert(key) {
                continue;
            }
            let hot = if plain {
                edge.get_held(namespace, index, mode, key.as_bytes())
            } else {
                None
            };
            let lookup = match hot {
                Some(lookup) => lookup,
                None => {
                    edge.get(namespace, mode, key.as_bytes(), options.clone())
                        .await?
                }
            };
            if seen.len() > 1 {
                out.push(b',');
            }
            json_text::write_str(out, key);
            out.push(b':');
            let Some(record) = lookup.record else {
                out.extend_from_slice(b"null");
                continue;
            };
            total = total.saturating_add(record.value.len());
            if total > MAX_BULK_GET_ANSWER_BYTES {
                return Err(Error::Refused {
                    too_large: true,
                    message: format!(
                        "the values asked for total more than {MAX_BULK_GET_ANSWER_BYTES} bytes: ask for fewer keys at a time"
                    ),
                });
            }
            if self.body.with_metadata {
                out.extend_from_slice(br#"{"value":"#);
            }
            if self.as_json {
                serde_json::from_slice::<serde::de::IgnoredAny>(&record.value).map_err(|e| {
                    Error::BadRequest(format!("the value of key {key:?} is not JSON: {e}"))
                })?;
                out.extend_from_slice(&record.value);
            } else {
                json_text::write_text(out, &record.value);
            }
            if self.body.with_metadata {
                out.extend_from_slice(br#","metadata":"#);
                // Metadata is stored as compact JSON, checked when it was written.
                match &record.metadata {
                    Some(metadata) => out.extend_from_slice(metadata),
                    None => out.extend_from_slice(b"null"),
                }
                out.push(b'}');
            }
        }
        out.push(b'}');
        Ok(())
    }
}
