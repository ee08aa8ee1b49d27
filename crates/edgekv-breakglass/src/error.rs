//! Why a key could not be used, and why an order was refused.

use std::path::PathBuf;

/// Why a break-glass key could not be generated, read or parsed.
///
/// `origin` fields name where the key came from: a file path, or "the given hex".
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("break-glass key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Generation would overwrite an existing private key file.
    #[error(
        "{} already exists; refusing to overwrite a break-glass private key (move it away first)",
        path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw random bytes for a new key: {0}")]
    Random(String),
    /// The key text is not laid out as a key file: no key line, or more than one.
    #[error("{origin}: {reason}")]
    Format {
        /// Where the key came from.
        origin: String,
        /// What is wrong with the layout.
        reason: String,
    },
    /// The key line is not hex.
    #[error("{origin}: the key is not hex: {source}")]
    BadHex {
        /// Where the key came from.
        origin: String,
        /// The decoding error.
        #[source]
        source: hex::FromHexError,
    },
    /// The key has the wrong number of bytes.
    #[error("{origin}: the key is {len} bytes; an Ed25519 key is 32 bytes (64 hex characters)")]
    WrongLength {
        /// Where the key came from.
        origin: String,
        /// The number of bytes found.
        len: usize,
    },
    /// The 32 bytes are not an Ed25519 public key (not a point on the curve).
    #[error("{origin}: the 32 bytes are not a valid Ed25519 public key")]
    NotAPublicKey {
        /// Where the key came from.
        origin: String,
    },
}

/// Why an edge refused a break-glass order.
///
/// Each message says what is wrong and, through its wording, whose fault it is: a
/// forged or damaged order, an order made for somewhere else, or one that is stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signature field is not 64 bytes of hex (damaged in transit or hand-edited).
    #[error("the signature is not 64 bytes of hex ({0}); the order was damaged or hand-edited")]
    MalformedSignature(String),
    /// The signature does not verify: another key signed it, or the text was altered.
    #[error(
        "the signature does not match this edge's break-glass public key \
         (signed with another key, or the order text was altered after signing)"
    )]
    BadSignature,
    /// The signed text does not parse as an order: the signing tool is at fault.
    #[error("the order is not valid JSON: {0}")]
    NotJson(String),
    /// The order is for another environment.
    #[error("the order is for environment {order:?}; this node is {node:?}")]
    WrongEnvironment {
        /// The order's environment.
        order: String,
        /// This node's environment.
        node: String,
    },
    /// The order is for another node.
    #[error("the order is for node {order:?}; this node is {node:?}")]
    WrongNode {
        /// The node the order names.
        order: String,
        /// This node's id.
        node: String,
    },
    /// The order's lifetime has ended.
    #[error("the order expired at {not_after_ms} (now {now_ms}); sign a new one")]
    Expired {
        /// When it expired, unix ms.
        not_after_ms: u64,
        /// The verifier's clock, unix ms.
        now_ms: u64,
    },
    /// The order stays valid for longer than this edge allows.
    #[error(
        "the order asks for {asked_ms} ms, more than the maximum of {max_ms} ms; \
         sign one with a shorter not_after_ms"
    )]
    TooLong {
        /// How long from now the order would remain valid.
        asked_ms: u64,
        /// The most this verifier allows.
        max_ms: u64,
    },
    /// The order was issued further in the future than clock skew explains.
    #[error(
        "the order was issued at {issued_ms}, more than {skew_ms} ms after now ({now_ms}); \
         the signer's or this node's clock is wrong"
    )]
    IssuedInFuture {
        /// When the order says it was made, unix ms.
        issued_ms: u64,
        /// The verifier's clock, unix ms.
        now_ms: u64,
        /// The skew allowed.
        skew_ms: u64,
    },
    /// A pin that names no build.
    #[error("the order is a pin but names no build to pin to")]
    PinWithoutBuild,
    /// An unpin that does not name the pin it lifts by its nonce.
    #[error(
        "the order is an unpin but names no pin to lift (lifts {0:?} is not the 32 hex \
         characters of a pin's nonce); sign one naming the pin in force"
    )]
    UnpinWithoutPin(String),
    /// An order other than an unpin that names a pin to lift.
    #[error("the order is a {0} but names a pin to lift; only an unpin lifts a pin")]
    LiftsOutsideUnpin(&'static str),
    /// The nonce is not 128 bits of hex.
    #[error("the order's nonce {0:?} is not 32 hex characters (128 random bits)")]
    MalformedNonce(String),
    /// The nonce was accepted before: the order is being replayed.
    #[error("the order's nonce was already used; an order is accepted once (sign a new one)")]
    Replayed,
}
