//! What a break-glass order says, and the form in which it travels.

use serde::{Deserialize, Serialize};

/// What a signed order asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Routes every request to one build until the order expires.
    Pin,
    /// Lifts a pin before it expires: the one whose nonce the order names
    /// ([`Order::lifts`]).
    Unpin,
    /// Rolls back to a named build, or to the previous known-good one.
    Rollback,
}

/// The signed content.
///
/// Unknown fields are refused when an order is read: a field this edge does not
/// understand may be a restriction the signer meant, and ignoring it would widen
/// what the order allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// What the order asks.
    pub action: Action,
    /// The environment the order is for; other environments' edges refuse it.
    pub environment: String,
    /// A node id, or "all".
    pub node: String,
    /// Pin: the build to route everything to. Unpin: empty (see `lifts`). Rollback:
    /// the build to roll back to, or empty for the previous known-good.
    pub build: String,
    /// Unix ms when it was made.
    pub issued_ms: u64,
    /// Unix ms after which it is void (for a pin: when the pin ends).
    pub not_after_ms: u64,
    /// 128 random bits, hex: an order is accepted once.
    pub nonce: String,
    /// Unpin: the nonce of the pin it lifts. An edge refuses an unpin naming
    /// another pin than the one in force, so an unpin made for one pin cannot lift
    /// a newer pin. Empty on other orders, and then left out of the signed text:
    /// pins and rollbacks read exactly as before the field existed, while an edge
    /// that predates it refuses an unpin carrying it (an unknown field) rather
    /// than lift whatever pin it holds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lifts: String,
}

/// An order as it travels: the exact JSON text that was signed, and the signature
/// (hex).
///
/// The text is carried as signed rather than re-serialised, so the verifier checks
/// the very bytes the operator signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedOrder {
    /// The order, as the JSON text that was signed.
    pub order: String,
    /// The Ed25519 signature over `order`, 128 hex characters.
    pub signature: String,
}
