//! The KV rules of edgekv: what a key, a value, a namespace and a record are, and
//! the limits every node enforces.
//!
//! Edge and origin both depend on this crate, so a request that one of them refuses
//! is refused by the other for the same reason. It does no IO and knows nothing of
//! HTTP, gRPC or storage engines.
//!
//! # Layout
//! - [`limits`]: the numeric limits (key, value, metadata, bulk, list).
//! - [`validate`]: checks of keys, metadata, expirations, list limits and namespace ids.
//! - [`record`]: [`Record`], the stored form of one key, and its binary encoding.
//! - [`namespace`]: [`Namespace`], a named, account-scoped set of keys.
//! - [`cursor`]: opaque list cursors.
//! - [`clock`]: wall clocks (system and manual, for tests) and the hybrid logical clock.
//! - [`ordering`]: how the origin orders writes by their stamps.

pub mod clock;
pub mod cursor;
pub mod limits;
pub mod namespace;
pub mod ordering;
pub mod record;
pub mod validate;

mod error;

pub use clock::{Clock, Hlc, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use namespace::{Mode, Namespace};
pub use record::Record;
