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
    /// How edges hold it; chosen at creation.
    #[serde(default)]
    pub mode: Mode,
}

/// How edges hold a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// An edge holds the keys it has read; the change feed updates or invalidates
    /// them. Lists go to the origin.
    #[default]
    Cache,
    /// Every edge holds every key and answers gets and lists locally, even with the
    /// origin down.
    Full,
}

impl Mode {
    /// The name used in the API (`cache` or `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cache => "cache",
            Mode::Full => "full",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "cache" => Some(Mode::Cache),
            "full" => Some(Mode::Full),
            _ => None,
        }
    }
}
