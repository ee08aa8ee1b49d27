//! The errors of the edge, and the one place they become HTTP statuses.

use http::StatusCode;

/// Why a request was not served.
///
/// Every variant knows whose fault it is: the client's (4xx; nothing was written)
/// or the node's (5xx). [`Error::status`] is the only mapping to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request broke a KV rule (key, value, metadata, expiration, limit, cursor).
    #[error(transparent)]
    Kv(#[from] edgekv_kv::Error),
    /// The request is malformed in a way the KV rules do not cover.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than this route accepts.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit of this route.
        limit: usize,
    },
    /// No usable bearer token was presented.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The token is valid but does not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The namespace does not exist (or belongs to another account).
    #[error("namespace not found")]
    NamespaceNotFound,
    /// The key does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// No such route.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The route exists but not with this method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The account already has a namespace of this title (the origin's message).
    #[error("{0}")]
    TitleTaken(String),
    /// The origin refused the request as invalid (the client's fault).
    #[error("{message}")]
    Refused {
        /// Whether it was refused for its size.
        too_large: bool,
        /// The origin's reason.
        message: String,
    },
    /// The node cannot serve this now; the client should retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The node's configuration is invalid; says which value and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node failed (storage, a bug). Logged; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result of an edge operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<edgekv_store::Error> for Error {
    fn from(err: edgekv_store::Error) -> Self {
        match err {
            edgekv_store::Error::NoSuchNamespace(_) => Error::NamespaceNotFound,
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<crate::upstream::UpstreamError> for Error {
    fn from(err: crate::upstream::UpstreamError) -> Self {
        use crate::upstream::UpstreamError;
        match err {
            UpstreamError::Build(why) => Error::Unavailable(format!("origin unavailable: {why}")),
            UpstreamError::Client {
                code: tonic::Code::NotFound,
                ..
            } => Error::NamespaceNotFound,
            UpstreamError::TitleTaken(message) => Error::TitleTaken(message),
            UpstreamError::NodeFault(message) => {
                tracing::error!(%message, "the origin refused a write of this node as a reused write id");
                Error::Internal(message)
            }
            UpstreamError::Client { code, message } => Error::Refused {
                too_large: code == tonic::Code::ResourceExhausted,
                message,
            },
        }
    }
}

impl Error {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use edgekv_kv::Error as Kv;
        match self {
            Error::Kv(Kv::KeyTooLong { .. }) => StatusCode::URI_TOO_LONG,
            Error::Kv(Kv::ValueTooLarge { .. }) | Error::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::Kv(Kv::MetadataTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Kv(_) | Error::BadRequest(_) | Error::TitleTaken(_) => StatusCode::BAD_REQUEST,
            Error::Refused {
                too_large: true, ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Refused { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NamespaceNotFound | Error::KeyNotFound | Error::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) | Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The numeric error code of the v4 envelope (Workers KV's codes where one
    /// exists).
    pub fn code(&self) -> u32 {
        use edgekv_kv::Error as Kv;
        match self {
            Error::Unauthorized(_) => 10000,
            Error::Forbidden(_) => 10000,
            Error::KeyNotFound => 10009,
            Error::NamespaceNotFound => 10013,
            Error::TitleTaken(_) => 10014,
            Error::Kv(Kv::KeyTooLong { .. }) => 10033,
            Error::Kv(Kv::ValueTooLarge { .. }) | Error::BodyTooLarge { .. } => 10011,
            Error::Kv(Kv::MetadataTooLarge { .. } | Kv::MetadataNotJson(_)) => 10012,
            Error::Kv(Kv::InvalidExpiration(_)) => 10015,
            Error::Kv(Kv::InvalidCursor | Kv::InvalidLimit(_)) => 10017,
            Error::Kv(_) | Error::BadRequest(_) | Error::Refused { .. } => 10001,
            Error::NoRoute(_) | Error::MethodNotAllowed(_) => 7000,
            Error::Unavailable(_) => 10043,
            Error::Internal(_) | Error::Config(_) => 10002,
        }
    }

    /// The message the client sees. Internal details stay in the log.
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal(_) | Error::Config(_) => {
                "internal error; the edge logged the cause".into()
            }
            other => other.to_string(),
        }
    }
}
