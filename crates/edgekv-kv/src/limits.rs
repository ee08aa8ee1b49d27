//! The limits of the KV API. They follow Workers KV, so existing clients never meet a
//! limit they do not expect.

/// The longest key, in bytes of its UTF-8 encoding.
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// The largest metadata, in bytes of serialised JSON.
pub const MAX_METADATA_BYTES: usize = 1024;
/// The most items in one bulk write or bulk delete.
pub const MAX_BULK_ITEMS: usize = 10_000;
/// The largest body of a bulk write, in bytes.
pub const MAX_BULK_BODY_BYTES: usize = 100 * 1024 * 1024;
/// The most keys in one bulk get.
pub const MAX_BULK_GET_KEYS: usize = 100;
/// The default and largest page of a key listing.
pub const MAX_LIST_LIMIT: usize = 1000;
/// The smallest page of a key listing a client may ask for.
pub const MIN_LIST_LIMIT: usize = 1;
/// The shortest time to live, in seconds, of an expiring key.
pub const MIN_EXPIRATION_TTL_S: u64 = 60;
/// The longest namespace title, in bytes.
pub const MAX_TITLE_BYTES: usize = 512;
/// The largest body of a request other than a value or a bulk write (namespace and
/// bulk get/delete bodies), in bytes.
pub const MAX_SMALL_BODY_BYTES: usize = 1024 * 1024;
