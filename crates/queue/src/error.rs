//! [`QueueError`], the errors of the queue.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An envelope file that does not parse (it is quarantined when met at open).
    #[error("unreadable envelope {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no such queue entry: {0}")]
    NoSuchEntry(String),
    /// Not a queue id (ids are plain file names: no separators, not hidden).
    #[error("invalid queue id {0:?}")]
    InvalidId(String),
    #[error("cannot encode the envelope of {id}: {reason}")]
    Encode { id: String, reason: String },
}

impl QueueError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> QueueError {
        QueueError::Io { op, path: path.to_path_buf(), source }
    }
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> QueueError + 'a {
    move |source| QueueError::io(op, path, source)
}
