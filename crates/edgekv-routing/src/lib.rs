//! Route tables: which builds serve an environment's traffic, and in what shares.
//!
//! Pure logic, no IO: the edge validates every table it is sent (it does not trust
//! the control plane blindly — in 2023 the deploy tool itself was the faulty part)
//! and picks a build for each request from the table it holds; the control plane
//! builds tables with the same types. Everything here is tested exhaustively and
//! fast, apart from the network.
//!
//! # Layout
//! - [`RouteTable`], [`RouteEntry`]: the table and its content hash.
//! - [`validate`]: the checks an edge makes before it ACKs a table.
//! - [`pick`]: the weighted choice with affinity.

mod pick;
mod table;
mod validate;

pub use pick::{pick, slot};
pub use table::{RouteEntry, RouteTable, WEIGHT_TOTAL};
pub use validate::{Nack, Verdict, validate};
