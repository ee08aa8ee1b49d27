//! edgekv's wire types and gRPC services, generated from the `.proto` files under
//! `proto/` — their only source.
//!
//! Besides the generated code, [`convert`] maps wire records and namespaces to the
//! KV rules' own types, for edge and origin alike.

/// Version 1 of the wire types.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("edgekv.v1");
}

pub mod convert;

/// The largest gRPC message edgekv sends or accepts: a 25 MiB value and framing.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
