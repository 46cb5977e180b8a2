//! Runtime errors.

/// What a runtime operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend does not implement this operation.
    #[error("{0} is not supported by this runtime")]
    Unsupported(&'static str),
    /// No sandbox, container or image with this id.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// "sandbox", "container" or "image".
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The operation does not fit the object's state (start twice, remove while running).
    #[error("{0}")]
    InvalidState(String),
    /// An image reference could not be fetched.
    #[error("cannot pull image {image:?}: {reason}")]
    Pull {
        /// The reference.
        image: String,
        /// Why.
        reason: String,
    },
    /// A module is not valid WebAssembly, or does not fit this runtime.
    #[error("invalid module {image:?}: {reason}")]
    InvalidModule {
        /// The reference.
        image: String,
        /// Why.
        reason: String,
    },
    /// The container could not be set up (volumes, logs, limits).
    #[error("cannot create container {name:?}: {reason}")]
    Create {
        /// The container name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A request to a container's HTTP handler failed.
    #[error("container {container:?} failed to answer: {reason}")]
    Http {
        /// The container name.
        container: String,
        /// Why.
        reason: String,
    },
    /// A host I/O failure.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for runtime operations.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
