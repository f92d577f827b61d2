//! [`Spool`]: a file a commit places beside the Maildir links, in the same batch and all-or-none with
//! them — how the outbound queue gets a message durably in the same group commit as the local
//! mailboxes ([`crate::Incoming::commit_with`]).
//!
//! A spool entry is two names: the message, hard-linked as `<msg_dir>/<name>` (the same inode as the
//! Maildir copies), and a small sidecar file (the envelope) as `<sidecar_dir>/<name>`. The sidecar is
//! written to `<data-dir>/tmp/<unique>`[`SIDECAR_SUFFIX`] and fdatasynced by a syncer thread, then
//! renamed into place by the batch leader after every link of the message is made. Both directories
//! must be on the data directory's file system (a rename and a hard link cannot cross devices).

use std::path::{Component, Path, PathBuf};

use crate::error::StoreError;

/// Suffix of a sidecar's staging file in `<data-dir>/tmp/` (after the message's unique name), so that
/// start-up removes it with the message file when its process died.
pub const SIDECAR_SUFFIX: &str = ".sidecar";

/// A file the commit places beside the Maildir links, in the same batch, all-or-none with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    /// Directory the message is hard-linked into under `name` (e.g. `<data>/queue/msg`).
    pub msg_dir: PathBuf,
    /// Directory the sidecar is written into under `name` (e.g. `<data>/queue/env`).
    pub sidecar_dir: PathBuf,
    /// The file name in both directories (the queue uses the message's id).
    pub name: String,
    /// Content of the sidecar file (the envelope).
    pub sidecar: Vec<u8>,
}

/// Whether `s` is a single file name: no separators, not hidden, nothing a line-based record could
/// not hold.
pub(crate) fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0', '\t', '\n', '\r'])
}

/// Whether `p` can be written into an intent record and trusted when read back: absolute, UTF-8,
/// without `..`, tabs or line breaks.
pub(crate) fn is_safe_dir(p: &Path) -> bool {
    p.is_absolute()
        && p.to_str().is_some_and(|s| !s.contains(['\t', '\n', '\r', '\0']))
        && p.components().all(|c| !matches!(c, Component::ParentDir))
}

impl Spool {
    /// Checks the names and makes the directories absolute (the intent record must mean the same
    /// place to whichever process reads it back, whatever its working directory).
    pub(crate) fn validated(mut self) -> Result<Spool, StoreError> {
        let invalid = |why: &'static str| Err(StoreError::InvalidSpool(why));
        if !is_plain_name(&self.name) {
            return invalid("the spool name is not a plain file name");
        }
        for dir in [&mut self.msg_dir, &mut self.sidecar_dir] {
            if !is_safe_dir(dir) {
                // Relative or with `..` (e.g. `--data-dir ../data`): resolve it (the directories exist).
                if let Ok(real) = std::fs::canonicalize(&*dir) {
                    *dir = real;
                }
            }
            if !is_safe_dir(dir) {
                return invalid("a spool directory is not an absolute UTF-8 path without '..'");
            }
        }
        Ok(self)
    }

    pub(crate) fn msg_path(&self) -> PathBuf {
        self.msg_dir.join(&self.name)
    }

    pub(crate) fn sidecar_path(&self) -> PathBuf {
        self.sidecar_dir.join(&self.name)
    }
}

/// The staging file of a message's sidecar in `<data-dir>/tmp/`.
pub(crate) fn staged_sidecar(tmp: &Path, unique: &str) -> PathBuf {
    tmp.join(format!("{unique}{SIDECAR_SUFFIX}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(name: &str, dir: &str) -> Spool {
        Spool { msg_dir: dir.into(), sidecar_dir: "/q/env".into(), name: name.into(), sidecar: Vec::new() }
    }

    #[test]
    fn names_and_directories_are_checked() {
        assert!(spool("1.M1P2Q3.h", "/q/msg").validated().is_ok());
        assert!(spool("../x", "/q/msg").validated().is_err());
        assert!(spool(".x", "/q/msg").validated().is_err());
        assert!(spool("a\tb", "/q/msg").validated().is_err());
        assert!(spool("x", "/nonexistent/../msg").validated().is_err(), "cannot be resolved");
        assert!(spool("x", "/q/m\tsg").validated().is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("msg")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative: PathBuf =
            cwd.components().map(|_| "..").collect::<PathBuf>().join(dir.path().strip_prefix("/").unwrap());
        let resolved = spool("x", relative.join("msg").to_str().unwrap()).validated().unwrap();
        assert_eq!(resolved.msg_dir, std::fs::canonicalize(dir.path().join("msg")).unwrap(), "resolved: {resolved:?}");
        let with_dotdot = spool("x", dir.path().join("msg/../msg").to_str().unwrap()).validated().unwrap();
        assert!(is_safe_dir(&with_dotdot.msg_dir), "{with_dotdot:?}");
    }
}
