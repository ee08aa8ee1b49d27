//! The errors of the KV rules: every one is the caller's fault.

/// A request that breaks one of the KV rules. Each variant is a client fault: the
/// request must be refused with a 4xx and nothing written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The key is empty.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than [`crate::limits::MAX_KEY_BYTES`].
    #[error("key is {len} bytes long; the limit is {max} bytes")]
    KeyTooLong {
        /// The length of the key that was sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key is not valid (not UTF-8, or one of the reserved names).
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The value is larger than [`crate::limits::MAX_VALUE_BYTES`].
    #[error("value is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge {
        /// The size of the value that was sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The metadata is larger than [`crate::limits::MAX_METADATA_BYTES`] once serialised.
    #[error("metadata is {len} bytes of JSON; the limit is {max} bytes")]
    MetadataTooLarge {
        /// The serialised size of the metadata that was sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The metadata is not valid JSON.
    #[error("metadata is not valid JSON: {0}")]
    MetadataNotJson(String),
    /// An expiration or expiration TTL is malformed or too soon.
    #[error("invalid expiration: {0}")]
    InvalidExpiration(String),
    /// A list limit outside `1..=1000`, or not a number.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// A list cursor that this node did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A namespace id that is not 32 lowercase hex digits.
    #[error("invalid namespace id: {0:?}")]
    InvalidNamespaceId(String),
    /// A namespace title that is empty or too long.
    #[error("invalid namespace title: {0}")]
    InvalidTitle(&'static str),
    /// A bulk request with more items than its limit.
    #[error("bulk request has {len} items; the limit is {max}")]
    TooManyItems {
        /// The number of items sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A bulk request with more items than its limit, refused as it was read:
    /// reading stopped at the first item past the limit, so the items after it
    /// were neither kept nor counted.
    #[error("bulk request has at least {seen} items; the limit is {max}")]
    TooManyItemsRead {
        /// The items come to when reading stopped (the limit plus one).
        seen: usize,
        /// The limit.
        max: usize,
    },
}

/// The result of a KV rule check.
pub type Result<T, E = Error> = std::result::Result<T, E>;
