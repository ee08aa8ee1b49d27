//! Errors of storage engines.

/// A storage failure. Apart from [`Error::NamespaceExists`] and
/// [`Error::NoSuchNamespace`], these are the node's fault, never the client's.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace with this id already exists.
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    /// The namespace does not exist.
    #[error("namespace {0} does not exist")]
    NoSuchNamespace(String),
    /// The engine failed (disk full, IO error, lock held by another process).
    #[error("storage engine: {0}")]
    Engine(String),
    /// Stored bytes could not be decoded.
    #[error(transparent)]
    Corrupt(#[from] edgekv_kv::record::DecodeError),
    /// A stored namespace description could not be decoded.
    #[error("stored namespace is corrupt: {0}")]
    CorruptNamespace(String),
}

/// The result of a storage call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
