//! Break-glass orders: Ed25519-signed instructions an operator hands to edges when
//! everything else (the control plane, the deploy tool, the network between them) is
//! down.
//!
//! An operator holds a private key offline and signs an [`Order`] — pin every request
//! to one build, lift a pin, or roll back — with a short lifetime and a fresh nonce;
//! each edge holds only the public key and checks every order with a [`Verifier`]
//! before it acts. Pure logic and file IO only: this crate does no networking, and
//! knows nothing of route tables or of how an order reaches an edge, so the same
//! checks serve every transport.
//!
//! # Layout
//! - [`Order`], [`Action`], [`SignedOrder`]: what is signed and what travels.
//! - [`SigningKey`], [`VerifyingKey`], [`generate_key_files`], [`nonce`]: keys, their
//!   files, and signing.
//! - [`Verifier`]: the edge's checks, including replay protection; a node keeps
//!   [`Verifier::remembered`] on disk and seeds a new verifier with
//!   [`Verifier::remember`], so replays are refused across a restart too.
//! - [`KeyError`], [`Refusal`]: why a key could not be used, why an order was refused.

mod error;
mod key;
mod order;
mod verify;

pub use error::{KeyError, Refusal};
pub use key::{SigningKey, VerifyingKey, generate_key_files, nonce};
pub use order::{Action, Order, SignedOrder};
pub use verify::{CLOCK_SKEW_MS, Verifier};
