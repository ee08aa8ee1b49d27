//! Reading request bodies within limits, the bound on requests reading bodies at
//! once, and multipart value uploads.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::{Error, Result};

/// Reads a whole body, refusing one larger than `limit` bytes: before reading it
/// when `content-length` already says so, else as soon as the bytes read pass
/// the limit.
pub async fn read<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = declared_len(headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    gather(&mut body, declared, limit).await
}

/// [`read`], for clients that send a whole body before they read the answer:
/// a body past `limit` is refused only once it has been read (and thrown
/// away) to its end, up to `drain_max` bytes (see [`drain`]); one declared
/// longer than that is refused at once.
pub async fn read_whole<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    drain_max: usize,
) -> Result<Bytes>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = declared_len(headers);
    if declared.is_some_and(|len| len > drain_max as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    match gather(&mut body, declared, limit).await {
        Err(Error::BodyTooLarge { limit }) => {
            // What was read is gone already; the rest is read and dropped.
            drain_pinned(&mut body, drain_max.saturating_sub(limit)).await;
            Err(Error::BodyTooLarge { limit })
        }
        other => other,
    }
}

/// Reads the rest of a body and throws it away, up to `max` bytes in all (a
/// body longer than that is left: the connection closes under it). For
/// clients that send a whole body before they read the answer, as workerd
/// does: answered before its body was read, such a client is cut off when the
/// connection closes and never sees why.
pub async fn drain<B>(body: B, max: usize)
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut body = std::pin::pin!(body);
    drain_pinned(&mut body, max).await;
}

/// `content-length`, when sent and a number.
fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a body to its end, or until the bytes read pass `limit`
/// (`BodyTooLarge`, the rest left unread).
///
/// A body that came in one frame is returned as it came; a longer one is
/// gathered into one buffer (sized once from `declared`, the content-length),
/// so a body costs its own size, not twice it.
async fn gather<B>(
    body: &mut std::pin::Pin<&mut B>,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // Never more than the limit, whatever the client declared.
    let declared = declared.map_or(0, |len| usize::try_from(len).unwrap_or(limit).min(limit));
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|err| Error::BadRequest(format!("could not read the request body: {err}")))?;
        // Trailers carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(Error::BodyTooLarge { limit });
        }
        match first.take() {
            None if gathered.is_empty() => first = Some(data),
            None => gathered.extend_from_slice(&data),
            Some(earlier) => {
                // The second frame: from here on, one buffer.
                gathered.reserve(declared.max(len));
                gathered.extend_from_slice(&earlier);
                gathered.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| gathered.freeze()))
}

/// [`drain`] of a pinned body.
async fn drain_pinned<B>(body: &mut std::pin::Pin<&mut B>, max: usize)
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut len = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            len = len.saturating_add(data.len());
            if len > max {
                return;
            }
        }
    }
}

/// Bounds the requests with a body that the edge serves at once: each holds a
/// place from before its body is read until it is answered, so the memory that
/// bodies (and what is parsed from them) take is bounded by the places times the
/// largest body.
///
/// A request that finds every place taken waits up to a short time for one, then
/// is answered `503` with `Retry-After`: a client that retries costs the edge
/// nothing meanwhile, where a queue of waiting requests would hold their
/// connections and the bodies in their sockets' buffers.
#[derive(Debug)]
pub struct Gate {
    places: Semaphore,
    max: usize,
    wait: Duration,
}

impl Gate {
    /// A gate of `max` places (at least one) that waits up to `wait` for a place.
    pub fn new(max: usize, wait: Duration) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Gate {
            places: Semaphore::new(max),
            max,
            wait,
        }
    }

    /// Takes a place for one request with a body, held until the permit is
    /// dropped; `Unavailable` (503 with `Retry-After`) when none is free within
    /// the wait.
    pub async fn admit(&self) -> Result<SemaphorePermit<'_>> {
        if let Ok(permit) = self.places.try_acquire() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.wait, self.places.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The gate's semaphore is never closed.
            Ok(Err(closed)) => Err(Error::Internal(format!("the body gate failed: {closed}"))),
            Err(_) => Err(Error::Unavailable(format!(
                "this edge is serving its limit of {} requests with a body (max_body_requests); retry shortly",
                self.max
            ))),
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    use super::*;

    fn headers(content_length: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(len) = content_length {
            headers.insert(CONTENT_LENGTH, len.parse().unwrap());
        }
        headers
    }

    /// One frame of a test body.
    type TestFrame = Result<Frame<Bytes>, std::io::Error>;

    /// A body of `chunks`, sent as separate frames.
    fn chunked(
        chunks: &[&'static [u8]],
    ) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<TestFrame>>> {
        let frames: Vec<TestFrame> = chunks
            .iter()
            .map(|&chunk| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_within_the_limit() {
        let one = read(&headers(None), Full::new(Bytes::from_static(b"abc")), 3)
            .await
            .unwrap();
        assert_eq!(one, "abc");
        let many = read(&headers(Some("6")), chunked(&[b"ab", b"", b"cd", b"ef"]), 6)
            .await
            .unwrap();
        assert_eq!(many, "abcdef");
        let none = read(&headers(None), chunked(&[]), 6).await.unwrap();
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_as_it_is_read() {
        // Declared too large: refused before a byte is read.
        let err = read(&headers(Some("7")), chunked(&[b"abc"]), 6)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BodyTooLarge { limit: 6 }), "{err}");
        assert!(err.to_string().contains("limit of 6 bytes"));
        // Declared small (or not at all) but longer: refused when it passes.
        for declared in [Some("3"), None] {
            let err = read(&headers(declared), chunked(&[b"abcd", b"efg"]), 6)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::BodyTooLarge { limit: 6 }), "{err}");
        }
    }

    #[tokio::test]
    async fn the_gate_answers_503_when_no_place_frees_in_time() {
        let gate = Gate::new(1, Duration::from_millis(20));
        let held = gate.admit().await.unwrap();
        let err = gate.admit().await.unwrap_err();
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("limit of 1 requests"), "{err}");
        drop(held);
        assert!(gate.admit().await.is_ok());
    }
}
