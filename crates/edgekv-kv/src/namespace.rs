//! Namespaces: named, account-scoped sets of keys.

use serde::{Deserialize, Serialize};

/// One namespace. Its id is 32 lowercase hex digits, unique across the store; its
/// title is unique within its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// The namespace id, as used in URLs.
    pub id: String,
    /// The human-readable name.
    pub title: String,
    /// The account that owns it.
    pub account: String,
}
