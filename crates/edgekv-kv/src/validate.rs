//! Checks of client input against the KV rules. Each returns the first rule broken.

use crate::limits::{
    MAX_KEY_BYTES, MAX_LIST_LIMIT, MAX_METADATA_BYTES, MAX_TITLE_BYTES, MAX_VALUE_BYTES,
    MIN_EXPIRATION_TTL_S, MIN_LIST_LIMIT,
};
use crate::{Error, Result};

/// Checks a key: 1 to 512 bytes of UTF-8, and neither `.` nor `..`.
pub fn key(key: &[u8]) -> Result<&str> {
    key_len(key.len())?;
    let text = std::str::from_utf8(key).map_err(|_| Error::InvalidKey("not valid UTF-8"))?;
    key_not_reserved(text)?;
    Ok(text)
}

/// Checks a key that is already text (as in a JSON body) by the rules of [`key`],
/// without checking its UTF-8 again.
pub fn key_text(key: &str) -> Result<()> {
    key_len(key.len())?;
    key_not_reserved(key)
}

fn key_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::EmptyKey);
    }
    if len > MAX_KEY_BYTES {
        return Err(Error::KeyTooLong {
            len,
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

fn key_not_reserved(key: &str) -> Result<()> {
    if key == "." || key == ".." {
        return Err(Error::InvalidKey("`.` and `..` are reserved"));
    }
    Ok(())
}

/// Checks the size of a value.
pub fn value_len(len: usize) -> Result<()> {
    if len > MAX_VALUE_BYTES {
        return Err(Error::ValueTooLarge {
            len,
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Checks metadata given as JSON text and returns it in compact form, the form that
/// is stored and counted against the limit.
pub fn metadata_text(text: &[u8]) -> Result<Vec<u8>> {
    let parsed: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| Error::MetadataNotJson(e.to_string()))?;
    metadata(&parsed)
}

/// Checks metadata that is to be kept as sent (workerd's KV binding, whose
/// Workers read back the JSON text they wrote): valid JSON of at most
/// [`MAX_METADATA_BYTES`] bytes as sent.
pub fn metadata_verbatim(text: &[u8]) -> Result<()> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(Error::MetadataTooLarge {
            len: text.len(),
            max: MAX_METADATA_BYTES,
        });
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(text)
        .map_err(|e| Error::MetadataNotJson(e.to_string()))?;
    Ok(())
}

/// Checks metadata given as a parsed JSON value and returns its compact serialisation.
pub fn metadata(value: &serde_json::Value) -> Result<Vec<u8>> {
    let compact = serde_json::to_vec(value).map_err(|e| Error::MetadataNotJson(e.to_string()))?;
    if compact.len() > MAX_METADATA_BYTES {
        return Err(Error::MetadataTooLarge {
            len: compact.len(),
            max: MAX_METADATA_BYTES,
        });
    }
    Ok(compact)
}

/// Resolves the `expiration` (absolute, Unix seconds) and `expiration_ttl` (seconds
/// from now) of a write into one absolute expiration, or none.
///
/// Both are refused together (the intent is ambiguous); either must lie at least
/// [`MIN_EXPIRATION_TTL_S`] seconds in the future, as in Workers KV.
pub fn expiration(expiration: Option<u64>, ttl: Option<u64>, now_s: u64) -> Result<Option<u64>> {
    match (expiration, ttl) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Error::InvalidExpiration(
            "give either expiration or expiration_ttl, not both".into(),
        )),
        (None, Some(ttl)) => {
            if ttl < MIN_EXPIRATION_TTL_S {
                return Err(Error::InvalidExpiration(format!(
                    "expiration_ttl is {ttl} s; it must be at least {MIN_EXPIRATION_TTL_S} s"
                )));
            }
            now_s
                .checked_add(ttl)
                .map(Some)
                .ok_or_else(|| Error::InvalidExpiration("expiration_ttl is too large".into()))
        }
        (Some(at), None) => {
            if at < now_s.saturating_add(MIN_EXPIRATION_TTL_S) {
                return Err(Error::InvalidExpiration(format!(
                    "expiration {at} is less than {MIN_EXPIRATION_TTL_S} s in the future (now is {now_s})"
                )));
            }
            Ok(Some(at))
        }
    }
}

/// Parses an expiration given as text (a query parameter).
pub fn parse_seconds(name: &str, text: &str) -> Result<u64> {
    text.trim().parse::<u64>().map_err(|_| {
        Error::InvalidExpiration(format!(
            "{name} must be a whole number of seconds, got {text:?}"
        ))
    })
}

/// Parses a list limit; none means the largest page.
pub fn list_limit(text: Option<&str>) -> Result<usize> {
    let Some(text) = text else {
        return Ok(MAX_LIST_LIMIT);
    };
    let limit: usize = text
        .trim()
        .parse()
        .map_err(|_| Error::InvalidLimit(format!("limit must be a number, got {text:?}")))?;
    if !(MIN_LIST_LIMIT..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(Error::InvalidLimit(format!(
            "limit is {limit}; it must be between {MIN_LIST_LIMIT} and {MAX_LIST_LIMIT}"
        )));
    }
    Ok(limit)
}

/// Checks a namespace id: 32 lowercase hex digits.
pub fn namespace_id(id: &str) -> Result<()> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::InvalidNamespaceId(id.chars().take(64).collect()))
    }
}

/// Checks a namespace title: not blank, at most 512 bytes.
pub fn title(title: &str) -> Result<()> {
    if title.trim().is_empty() {
        return Err(Error::InvalidTitle("title is empty"));
    }
    if title.len() > MAX_TITLE_BYTES {
        return Err(Error::InvalidTitle("title is longer than 512 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key(b"a/b c%?#\xc3\xa9").ok(), Some("a/b c%?#é"));
        assert_eq!(key(b""), Err(Error::EmptyKey));
        assert!(matches!(
            key(&[b'k'; 513]),
            Err(Error::KeyTooLong { len: 513, .. })
        ));
        assert!(key(&[b'k'; 512]).is_ok());
        assert!(key(b"\xff").is_err());
        assert!(key(b"..").is_err());
        // Too long and not UTF-8: the length is the first rule broken.
        assert!(matches!(
            key(&[0xff; 513]),
            Err(Error::KeyTooLong { len: 513, .. })
        ));
    }

    #[test]
    fn keys_that_are_text_follow_the_same_rules() {
        for candidate in [
            "k",
            "a/b c%?#é",
            "",
            ".",
            "..",
            "...",
            &"k".repeat(512),
            &"k".repeat(513),
        ] {
            assert_eq!(
                key_text(candidate),
                key(candidate.as_bytes()).map(|_| ()),
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn expirations() {
        assert_eq!(expiration(None, Some(60), 1000), Ok(Some(1060)));
        assert!(expiration(None, Some(59), 1000).is_err());
        assert_eq!(expiration(Some(1060), None, 1000), Ok(Some(1060)));
        assert!(expiration(Some(1059), None, 1000).is_err());
        assert!(expiration(Some(2000), Some(60), 1000).is_err());
        assert!(expiration(None, Some(u64::MAX), 1).is_err());
    }

    #[test]
    fn metadata_limit() {
        let ok = serde_json::json!({ "a": "x".repeat(1000) });
        assert!(metadata(&ok).is_ok());
        let big = serde_json::json!({ "a": "x".repeat(1100) });
        assert!(matches!(
            metadata(&big),
            Err(Error::MetadataTooLarge { .. })
        ));
        assert!(metadata_text(b"{not json").is_err());
        assert_eq!(
            metadata_text(b" { \"a\" : 1 } ").ok(),
            Some(b"{\"a\":1}".to_vec())
        );
    }

    #[test]
    fn limits() {
        assert_eq!(list_limit(None), Ok(1000));
        assert_eq!(list_limit(Some("10")), Ok(10));
        assert!(list_limit(Some("0")).is_err());
        assert!(list_limit(Some("1001")).is_err());
        assert!(list_limit(Some("x")).is_err());
    }

    #[test]
    fn namespace_ids() {
        assert!(namespace_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(namespace_id("0123456789ABCDEF0123456789abcdef").is_err());
        assert!(namespace_id("abc").is_err());
    }
}
