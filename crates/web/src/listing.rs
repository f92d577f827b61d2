//! The listing cache: each folder's sorted listing (`mail::Folder::entries`), kept while its `new/`
//! and `cur/` directories are unchanged, so that an inbox page or a poll costs two `stat`s instead of
//! one per message.
//!
//! A listing is reused only when both directories' stamps (modification and change times to the
//! nanosecond, size, inode) are what they were when it was made. Any entry added, removed or renamed
//! (delivery, a flag change by an IMAP server, a move) changes the directory's times. Two changes in the
//! same clock tick could leave the modification time unchanged, so a listing whose directories changed
//! less than [`SETTLE`] before it was made is not kept at all (as git treats a "racily clean" index
//! entry), and the change time (which also moves when someone sets the modification time back) is
//! compared too. The web's own changes forget the folder's listing at once ([`forget`]).
//!
//! Bounded: at most [`MAX_CACHED_FOLDERS`] folders and [`MAX_CACHED_ENTRIES`] entries over all of them;
//! the least recently used folder makes room. Generic over the entry type, so that it needs nothing from
//! `crate::mail`, which keeps the one cache of the process.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Folders whose listing is kept at most.
pub const MAX_CACHED_FOLDERS: usize = 64;
/// Entries kept over all cached folders at most (about 200 bytes each); a folder larger than this is
/// never cached.
pub const MAX_CACHED_ENTRIES: usize = 500_000;
/// A directory changed less than this before its listing was made may change again within the same
/// timestamp tick (coarse file system clocks): such a listing is not kept.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What identifies one state of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
    ino: u64,
}

/// The stamp of a folder: its `new/` and `cur/` (None: the directory is missing).
type FolderStamp = [Option<Stamp>; 2];

struct Cached<T> {
    stamp: FolderStamp,
    entries: Arc<Vec<T>>,
    /// For least-recently-used eviction.
    used: u64,
}

struct Cache<T> {
    folders: HashMap<PathBuf, Cached<T>>,
    entries: usize,
    clock: u64,
}

impl<T> Cache<T> {
    fn remove(&mut self, dir: &Path) {
        if let Some(old) = self.folders.remove(dir) {
            self.entries -= old.entries.len();
        }
    }
}

/// Cached listings, keyed by folder directory (so one cache serves every user safely).
pub struct Listings<T> {
    cache: Mutex<Cache<T>>,
}

impl<T> Default for Listings<T> {
    fn default() -> Listings<T> {
        Listings { cache: Mutex::new(Cache { folders: HashMap::new(), entries: 0, clock: 0 }) }
    }
}

fn stamp_of(dir: &Path) -> Option<Stamp> {
    let m = fs::metadata(dir).ok()?;
    Some(Stamp { mtime: (m.mtime(), m.mtime_nsec()), ctime: (m.ctime(), m.ctime_nsec()), size: m.size(), ino: m.ino() })
}

/// The stamp of a folder directory (its `new/` and `cur/`).
fn folder_stamp(dir: &Path) -> FolderStamp {
    [stamp_of(&dir.join("new")), stamp_of(&dir.join("cur"))]
}

/// True when every directory of the stamp last changed at least [`SETTLE`] before `now`.
fn is_settled(stamp: &FolderStamp, now: SystemTime) -> bool {
    let Some(limit) = now.checked_sub(SETTLE) else { return false };
    stamp.iter().flatten().all(|s| {
        [s.mtime, s.ctime].iter().all(|&(secs, nanos)| {
            let t = u64::try_from(secs).ok().map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, nanos as u32));
            t.is_some_and(|t| t <= limit)
        })
    })
}

impl<T> Listings<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache<T>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The listing of the folder at `dir`: the cached one while its directories are unchanged, else
    /// `list()` (whose result is kept when the directories have settled).
    pub fn entries(&self, dir: &Path, list: impl FnOnce() -> std::io::Result<Vec<T>>) -> std::io::Result<Arc<Vec<T>>> {
        let before = folder_stamp(dir);
        {
            let mut c = self.lock();
            c.clock += 1;
            let clock = c.clock;
            if let Some(hit) = c.folders.get_mut(dir).filter(|h| h.stamp == before) {
                hit.used = clock;
                return Ok(hit.entries.clone());
            }
        }
        let now = SystemTime::now();
        let entries = Arc::new(list()?);
        // Kept only when nothing changed while listing, and not too recently before.
        if folder_stamp(dir) == before && is_settled(&before, now) {
            self.insert(dir, before, entries.clone());
        } else {
            self.forget(dir);
        }
        Ok(entries)
    }

    fn insert(&self, dir: &Path, stamp: FolderStamp, entries: Arc<Vec<T>>) {
        if entries.len() > MAX_CACHED_ENTRIES {
            return;
        }
        let mut c = self.lock();
        c.remove(dir);
        while !c.folders.is_empty()
            && (c.folders.len() >= MAX_CACHED_FOLDERS || c.entries + entries.len() > MAX_CACHED_ENTRIES)
        {
            let Some(oldest) = c.folders.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| k.clone()) else { break };
            c.remove(&oldest);
        }
        c.clock += 1;
        let used = c.clock;
        c.entries += entries.len();
        c.folders.insert(dir.to_path_buf(), Cached { stamp, entries, used });
    }

    /// Drops the folder's listing (the web itself changed the folder).
    pub fn forget(&self, dir: &Path) {
        self.lock().remove(dir);
    }

    /// Whether a listing of the folder at `dir` is kept (for tests).
    #[cfg(test)]
    pub fn is_cached(&self, dir: &Path) -> bool {
        self.lock().folders.contains_key(dir)
    }

    /// Folders and entries kept now (for tests).
    #[cfg(test)]
    pub fn usage(&self) -> (usize, usize) {
        let c = self.lock();
        (c.folders.len(), c.entries)
    }
}
