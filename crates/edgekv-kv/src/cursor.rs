//! Opaque list cursors.
//!
//! A cursor names the last key a page returned; the next page starts strictly after
//! it. It therefore stays valid while keys are written and deleted: a key written
//! behind the cursor is not returned, one written ahead of it is, and no key is
//! returned twice.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Error, Result};

/// The prefix that marks a cursor of this format, so a foreign string is refused
/// rather than read as a key.
const TAG: &[u8] = b"k1:";

/// Encodes the cursor that continues after `last_key`.
pub fn encode(last_key: &[u8]) -> String {
    let mut raw = Vec::with_capacity(TAG.len() + last_key.len());
    raw.extend_from_slice(TAG);
    raw.extend_from_slice(last_key);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor into the key that the next page starts after.
pub fn decode(cursor: &str) -> Result<Vec<u8>> {
    let raw = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| Error::InvalidCursor)?;
    match raw.strip_prefix(TAG) {
        Some(key) if !key.is_empty() => Ok(key.to_vec()),
        _ => Err(Error::InvalidCursor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(key in proptest::collection::vec(any::<u8>(), 1..600)) {
            prop_assert_eq!(decode(&encode(&key)), Ok(key));
        }
    }

    #[test]
    fn foreign_cursors_are_refused() {
        assert_eq!(decode("not a cursor!"), Err(Error::InvalidCursor));
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode(b"other")),
            Err(Error::InvalidCursor)
        );
        assert_eq!(decode(""), Err(Error::InvalidCursor));
    }
}
