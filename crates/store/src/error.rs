//! The store's errors: [`StoreError`] for delivery and reading, [`UserError`] for the user directory
//! and address validation, [`AliasError`] for the alias directory. Here, not with their users, so that
//! no module needs another only for its error type.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Linux errno values we act on (std has no portable names for all of them).
pub(crate) const ENOSPC: i32 = 28;
pub(crate) const EDQUOT: i32 = 122;
pub(crate) const EXDEV: i32 = 18;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Users(#[from] UserError),
    #[error(transparent)]
    Aliases(Box<AliasError>),
    #[error("no such mailbox: {0}")]
    NoSuchMailbox(String),
    #[error("no such message: {0}")]
    NoSuchMessage(String),
    #[error("message has no recipients")]
    NoRecipients,
    #[error("invalid spool: {0}")]
    InvalidSpool(&'static str),
    #[error("an earlier write to this message failed")]
    WriteFailed,
    #[error("the store's committer thread is gone")]
    CommitterGone,
}

impl StoreError {
    /// Out of disk space or quota (ENOSPC, EDQUOT): the server answers 452 4.3.1 rather than
    /// 451 4.3.0 (RFC 3463 §3.4).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(ENOSPC | EDQUOT))
                    || matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
            }
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io { op, path: path.to_path_buf(), source }
    }

    /// A copy for each message that shares one failure (io::Error is not Clone).
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Io { op, path, source } => StoreError::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            other => StoreError::Io { op: "commit", path: PathBuf::new(), source: io::Error::other(other.to_string()) },
        }
    }
}

pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::io(op, path, source)
}

/// Errors of the user directory.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: &'static str },
    #[error("invalid domain {domain:?}: {reason}")]
    InvalidDomain { domain: String, reason: &'static str },
    #[error("user {0} already exists")]
    Exists(String),
    #[error("no such user: {0}")]
    NotFound(String),
    #[error("{path}: user {address} is listed twice (addresses are case-insensitive)")]
    Duplicate { path: PathBuf, address: String },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot serialize the user directory: {0}")]
    Serialize(#[from] toml::ser::Error),
    #[error("{path}: still locked after {waited:?} (remove the lock file if no `user` command is running)")]
    Locked { path: PathBuf, waited: Duration },
    /// The directory file is missing or empty. That is what an editor saving it, or a rename, looks
    /// like for a moment, so it is not taken as "no users": the server keeps the directory it had, and
    /// with none it cannot say whether a user exists (451 4.3.0, not 550 5.1.1).
    #[error("{path} is missing or empty: the user directory is unavailable")]
    Unavailable { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Errors of the alias directory.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("invalid alias address {0:?}: {1}")]
    InvalidAddress(String, String),
    #[error("invalid target {0:?}: {1}")]
    InvalidTarget(String, String),
    #[error("alias {0} has no targets")]
    NoTargets(String),
    #[error("alias {0} has more than {1} targets")]
    TooManyTargets(String, usize),
    #[error("no such alias: {0}")]
    NotFound(String),
    #[error("alias {0} has no target {1}")]
    NoSuchTarget(String, String),
    #[error("{path}: alias {address} is listed twice (addresses are case-insensitive)")]
    Duplicate { path: PathBuf, address: String },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Lock(#[from] UserError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn user_io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UserError + 'a {
    move |source| UserError::Io { op, path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_recognized() {
        let e = StoreError::io("write", Path::new("x"), io::Error::from_raw_os_error(ENOSPC));
        assert!(e.is_no_space());
        assert!(e.duplicate().is_no_space());
        let e = StoreError::io("write", Path::new("x"), io::Error::from_raw_os_error(EDQUOT));
        assert!(e.is_no_space());
        let e = StoreError::io("write", Path::new("x"), io::Error::from_raw_os_error(13));
        assert!(!e.is_no_space());
        assert!(!StoreError::NoRecipients.is_no_space());
    }
}
