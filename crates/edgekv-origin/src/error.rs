//! The errors of the origin, and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// Why an origin call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke a KV rule: the caller's fault.
    #[error(transparent)]
    Kv(#[from] edgekv_kv::Error),
    /// The namespace does not exist (or belongs to another account).
    #[error("namespace {0} not found")]
    NamespaceNotFound(String),
    /// The account already has a namespace of this title.
    #[error("a namespace titled {0:?} already exists in this account")]
    TitleTaken(String),
    /// The write's clock stamp is too far ahead of the origin's clock.
    #[error("write stamp is {ahead_ms} ms ahead of the origin's clock; the limit is 5000 ms")]
    ClockSkew {
        /// How far ahead it was.
        ahead_ms: u64,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The change log no longer holds the asked revision.
    #[error("revision {asked} is older than the retained log, which starts at {first}")]
    Trimmed {
        /// The revision asked for.
        asked: u64,
        /// The oldest retained revision.
        first: u64,
    },
    /// The asked revision is beyond this origin's head (it was restored or wiped).
    #[error("revision {asked} is beyond this origin's head {head}; resync from a snapshot")]
    Ahead {
        /// The revision asked for.
        asked: u64,
        /// The origin's last revision.
        head: u64,
    },
    /// A write id already applied arrived with other content: the calling node
    /// reused its ids (its fault, never its client's; never a success).
    #[error(
        "write id {write_id} was applied at revision {revision} to another write; the node reuses write ids"
    )]
    WriteIdReused {
        /// The id.
        write_id: String,
        /// Where the first write with it was applied.
        revision: u64,
    },
    /// An outbox replay older than the origin's replay horizon (its tombstone
    /// retention): applying it could resurrect a delete whose tombstone is gone.
    #[error(
        "the replayed write was stamped {age_s} s ago, past the origin's replay horizon of {horizon_s} s: refused"
    )]
    ReplayTooOld {
        /// How old the write's stamp is.
        age_s: u64,
        /// The horizon.
        horizon_s: u64,
    },
    /// The store failed: the origin's fault.
    #[error(transparent)]
    Store(#[from] edgekv_store::Error),
    /// The origin's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener, file or task failed.
    #[error("{0}")]
    Io(String),
}

/// The status metadata key carrying a machine-readable reason.
pub const REASON_KEY: &str = "edgekv-reason";
/// Reason: the caller must resync from a snapshot.
pub const RESYNC: &str = "resync";
/// Reason: the namespace title is taken in the account.
pub const TITLE_TAKEN: &str = "title-taken";
/// Reason: the calling node reused a write id for another write.
pub const WRITE_ID_REUSED: &str = "write-id-reused";

/// The result of an origin call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        use edgekv_kv::Error as Kv;
        let code = match &err {
            Error::Kv(
                Kv::ValueTooLarge { .. } | Kv::MetadataTooLarge { .. } | Kv::TooManyItems { .. },
            ) => Code::ResourceExhausted,
            Error::Kv(_) | Error::BadRequest(_) => Code::InvalidArgument,
            Error::NamespaceNotFound(_) => Code::NotFound,
            Error::TitleTaken(_) => Code::FailedPrecondition,
            // A skewed stamp is the calling node's clock, not its client's request.
            Error::ClockSkew { .. } => Code::Unavailable,
            Error::Trimmed { .. } | Error::Ahead { .. } => Code::OutOfRange,
            Error::WriteIdReused { .. } | Error::ReplayTooOld { .. } => Code::FailedPrecondition,
            Error::Store(_) | Error::Config(_) | Error::Io(_) => {
                tracing::error!(error = %err, "origin call failed");
                Code::Internal
            }
        };
        let mut status = Status::new(code, err.to_string());
        // Machine-readable reasons the edge acts on, beside the human message.
        let reason = match &err {
            Error::Trimmed { .. } | Error::Ahead { .. } => Some(RESYNC),
            Error::TitleTaken(_) => Some(TITLE_TAKEN),
            Error::WriteIdReused { .. } => Some(WRITE_ID_REUSED),
            _ => None,
        };
        if let Some(reason) = reason {
            status.metadata_mut().insert(
                REASON_KEY,
                tonic::metadata::MetadataValue::from_static(reason),
            );
        }
        status
    }
}
