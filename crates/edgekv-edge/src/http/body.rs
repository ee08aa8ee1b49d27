//! Reading request bodies within limits, and multipart value uploads.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;

use crate::{Error, Result};

/// Reads a whole body, refusing one larger than `limit` bytes (before reading it,
/// when `content-length` already says so).
pub async fn read<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            Err(Error::BodyTooLarge { limit })
        }
        Err(err) => Err(Error::BadRequest(format!(
            "could not read the request body: {err}"
        ))),
    }
}

/// A value upload: the value and optional metadata (JSON text).
#[derive(Debug, Default)]
pub struct Upload {
    /// The value bytes.
    pub value: Bytes,
    /// The metadata as sent.
    pub metadata: Option<Bytes>,
}

/// Returns the multipart boundary if the body is `multipart/form-data`.
pub fn multipart_boundary(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Ok(None);
    }
    multer::parse_boundary(content_type)
        .map(Some)
        .map_err(|e| Error::BadRequest(format!("bad multipart content-type: {e}")))
}

/// Parses a multipart body with a `value` part and an optional `metadata` part.
pub async fn multipart(body: Bytes, boundary: String) -> Result<Upload> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut upload = Upload::default();
    let mut has_value = false;
    let bad = |e: multer::Error| Error::BadRequest(format!("malformed multipart body: {e}"));
    while let Some(field) = parts.next_field().await.map_err(bad)? {
        match field.name() {
            Some("value") => {
                upload.value = field.bytes().await.map_err(bad)?;
                has_value = true;
            }
            Some("metadata") => upload.metadata = Some(field.bytes().await.map_err(bad)?),
            // Unknown parts are ignored, as Workers KV does.
            _ => {}
        }
    }
    if !has_value {
        return Err(Error::BadRequest(
            "multipart body has no `value` part".into(),
        ));
    }
    Ok(upload)
}
