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
            Error::TitleTaken(_) | Error::ClockSkew { .. } => Code::FailedPrecondition,
            Error::Trimmed { .. } => Code::OutOfRange,
            Error::Store(_) | Error::Config(_) | Error::Io(_) => {
                tracing::error!(error = %err, "origin call failed");
                Code::Internal
            }
        };
        Status::new(code, err.to_string())
    }
}
