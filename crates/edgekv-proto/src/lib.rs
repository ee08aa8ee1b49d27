//! edgekv's wire types and gRPC services, generated from the `.proto` files under
//! `proto/` — their only source.
//!
//! Besides the generated code, [`convert`] maps wire records and namespaces to the
//! KV rules' own types, for edge and origin alike, and [`stamp`] carries a build's
//! stamp on its error answers.

/// Version 1 of the wire types.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("edgekv.v1");
}

pub mod convert;
pub mod stamp;
pub mod tls;

/// Upper bounds of the latency buckets of `BuildHealth.latency_buckets`, in ms;
/// one more bucket holds everything slower. Edges count by them, control reads by
/// them.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000];

/// The encoded `FileDescriptorSet` of every edgekv proto file: what gRPC server
/// reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/edgekv_descriptor.bin"));

/// The largest gRPC message edgekv sends or accepts: a 25 MiB value and framing.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// The most writes one `WriteMany` call may carry (as many as one of the
/// origin's groups commits).
pub const MAX_WRITES_PER_CALL: usize = 512;

/// The reason (`edgekv-reason`) of a `WriteMany` result whose answer did not fit
/// in the call's: the write was applied or refused as usual, and the caller asks
/// for it alone (its id makes the second asking a duplicate).
pub const ANSWER_TOO_LARGE: &str = "answer-too-large";
