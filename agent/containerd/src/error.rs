//! The driver's typed errors and the mapping from gRPC statuses to them.

use std::path::PathBuf;

use containerd_client::tonic::{Code, Status};

/// Everything the driver can fail with. Messages are lowercase and say what
/// to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd cannot be reached (socket missing, not containerd, daemon
    /// restarting).
    #[error("cannot connect to containerd at {}: {reason} (is containerd running?)", socket.display())]
    Unavailable { socket: PathBuf, reason: String },
    /// The named object does not exist (image, blob, container, task,
    /// snapshot).
    #[error("{what} not found")]
    NotFound { what: String },
    /// The object already exists (e.g. a container with the same id).
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// A call or a wait did not finish in time.
    #[error("{op} timed out after {ms} ms")]
    Timeout { op: String, ms: u64 },
    /// containerd answered with an error.
    #[error("containerd {op} failed: {code}: {message}")]
    Rpc { op: String, code: String, message: String },
    /// The caller passed something unusable.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// `--user` names a user or group the image does not have (Docker's
    /// words: `unable to find user X: no matching entries in passwd file`).
    #[error("{0}")]
    User(String),
    /// A blob is larger than the caller allows.
    #[error("blob {digest} is {size_bytes} bytes, more than the limit of {max_bytes} bytes")]
    TooLarge { digest: String, size_bytes: u64, max_bytes: u64 },
    /// Content did not match its descriptor (size, digest or diff id).
    #[error("content mismatch for {what}: expected {expected}, got {actual}")]
    Mismatch { what: String, expected: String, actual: String },
    /// Reading from the image source failed.
    #[error("image source: {0}")]
    Source(#[from] shoal_image::Error),
    /// Local I/O failed (log file, blob source).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The driver's runtime thread is gone (a bug or a panic inside the driver).
    #[error("containerd driver runtime stopped: {0}")]
    Internal(String),
}

impl Error {
    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    /// Maps a gRPC status from call `op` to a typed error.
    pub(crate) fn from_status(op: &str, socket: &std::path::Path, st: Status) -> Error {
        let message = st.message().trim_end_matches('.').to_string();
        match st.code() {
            Code::NotFound => Error::NotFound { what: format!("{op}: {message}") },
            Code::AlreadyExists => Error::AlreadyExists { what: format!("{op}: {message}") },
            // "ref ... locked" is reported as Unavailable by the content
            // store; it is not a connectivity problem.
            Code::Unavailable if !message.contains("locked") => {
                Error::Unavailable { socket: socket.to_path_buf(), reason: format!("{op}: {message}") }
            }
            code => Error::Rpc { op: op.to_string(), code: format!("{code:?}").to_lowercase(), message },
        }
    }
}
