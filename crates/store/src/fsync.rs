//! Every fsync the store makes, in one place: files, directories, and directories created and made
//! durable in their parent.
//!
//! A new directory entry survives a power cut only once its parent directory is fsynced, so every
//! directory the store creates goes through [`create_dir_synced`] (or [`create_dir_all_synced`]), and
//! nothing under it is acknowledged before that fsync returned.
//!
//! TEST-ONLY switch: with `MAILROOM_TEST_UNSAFE_SKIP_DIR_FSYNC=1` in the environment every directory
//! fsync is skipped (a loud warning is logged once). It exists so that a power-cut test can show that
//! it notices missing directory fsyncs; never set it anywhere else.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::OnceLock;

/// The environment variable of the test-only switch that skips every directory fsync.
pub const SKIP_DIR_FSYNC_ENV: &str = "MAILROOM_TEST_UNSAFE_SKIP_DIR_FSYNC";

/// Whether directory fsyncs are skipped (read once per process).
pub fn is_dir_fsync_skipped() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var(SKIP_DIR_FSYNC_ENV).is_ok_and(|v| v == "1"))
}

/// Logs the warning about the test-only switch (called when a store opens; the flag is per process).
pub fn warn_if_unsafe() {
    if is_dir_fsync_skipped() {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| {
            tracing::error!(
                "{SKIP_DIR_FSYNC_ENV}=1: directory fsyncs are SKIPPED; acknowledged mail can be lost in a \
                 power cut. This switch is for tests only."
            );
        });
    }
}

/// fsyncs a directory, so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if is_dir_fsync_skipped() {
        return Ok(());
    }
    File::open(dir)?.sync_all()
}

/// Creates `dir` (whose parent exists), private (0700, [`crate::modes`]), and fsyncs its parent. Ok if
/// it already exists: a directory that exists was either made durable by whoever made it, or by this
/// function on an earlier run.
pub fn create_dir_synced(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(crate::modes::PRIVATE_DIR).create(dir) {
        Ok(()) => sync_dir(dir.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `dir` (whose parent exists) with the mode and group of `kind` under `modes`, and fsyncs its
/// parent when it was created.
pub fn create_dir_synced_with(dir: &Path, modes: &crate::modes::Modes, kind: crate::modes::DirKind) -> io::Result<()> {
    if modes.create_dir(dir, kind)? {
        sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Like `fs::create_dir_all`, but every directory it creates is fsynced into its parent.
pub fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_synced(parent)?;
    }
    create_dir_synced(dir)
}

/// fdatasync: the data and the size (which reading needs), not the timestamps.
pub fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// fsync: data and metadata of a file (a file that is about to be renamed or linked into place).
pub fn sync_all(file: &File) -> io::Result<()> {
    file.sync_all()
}
