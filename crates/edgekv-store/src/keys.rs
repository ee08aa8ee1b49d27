//! How `(namespace, key)` pairs map onto one ordered byte space.
//!
//! A namespace id is always 32 bytes, so `id ++ key` sorts first by namespace and
//! then by key bytes, and every key of a namespace shares the 32-byte prefix.

/// The length of every namespace id.
pub const NAMESPACE_ID_LEN: usize = 32;

/// The stored key of `key` in `namespace`.
pub fn data_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + key.len());
    out.extend_from_slice(namespace.as_bytes());
    out.extend_from_slice(key);
    out
}

/// The first stored key a page can return: after `start_after` if given, else at
/// the prefix.
pub fn list_start(namespace: &str, prefix: &[u8], start_after: Option<&[u8]>) -> Vec<u8> {
    let at_prefix = data_key(namespace, prefix);
    match start_after {
        Some(after) => {
            // The smallest key strictly greater than `after` is `after ++ [0]`.
            let mut next = data_key(namespace, after);
            next.push(0);
            next.max(at_prefix)
        }
        None => at_prefix,
    }
}

/// The entry of the expiry index for a record that expires at `at`.
pub fn expiry_key(at: u64, data_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data_key.len());
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(data_key);
    out
}

/// Splits an expiry index entry into its time and stored key.
pub fn split_expiry_key(entry: &[u8]) -> Option<(u64, &[u8])> {
    let (at, key) = entry.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), key))
}

/// The smallest stored key after every key of `namespace`.
pub fn namespace_end(namespace: &str) -> Vec<u8> {
    let mut end = namespace.as_bytes().to_vec();
    // Namespace ids are hex digits, so the last byte never overflows.
    if let Some(last) = end.last_mut() {
        *last = last.saturating_add(1);
    }
    end
}

/// Encodes a namespace description for storage.
pub fn encode_namespace(namespace: &edgekv_kv::Namespace) -> Vec<u8> {
    // Serialising a struct of strings cannot fail.
    serde_json::to_vec(namespace).unwrap_or_default()
}

/// Decodes a stored namespace description.
pub fn decode_namespace(raw: &[u8]) -> Result<edgekv_kv::Namespace, String> {
    serde_json::from_slice(raw).map_err(|e| e.to_string())
}
