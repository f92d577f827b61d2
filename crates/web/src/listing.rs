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
//! the least recently used folder makes room.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use crate::mail::Entry;

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

struct Cached {
    stamp: FolderStamp,
    entries: Arc<Vec<Entry>>,
    /// For least-recently-used eviction.
    used: u64,
}

#[derive(Default)]
struct Cache {
    folders: HashMap<PathBuf, Cached>,
    entries: usize,
    clock: u64,
}

/// One cache for the process: listings are keyed by directory, so every server and user shares it
/// safely.
fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
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

/// The listing of the folder at `dir`: the cached one while its directories are unchanged, else
/// `list()` (whose result is kept when the directories have settled).
pub fn entries(dir: &Path, list: impl FnOnce() -> std::io::Result<Vec<Entry>>) -> std::io::Result<Arc<Vec<Entry>>> {
    let before = folder_stamp(dir);
    {
        let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
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
        insert(dir, before, entries.clone());
    } else {
        forget(dir);
    }
    Ok(entries)
}

fn insert(dir: &Path, stamp: FolderStamp, entries: Arc<Vec<Entry>>) {
    if entries.len() > MAX_CACHED_ENTRIES {
        return;
    }
    let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(old) = c.folders.remove(dir) {
        c.entries -= old.entries.len();
    }
    while !c.folders.is_empty()
        && (c.folders.len() >= MAX_CACHED_FOLDERS || c.entries + entries.len() > MAX_CACHED_ENTRIES)
    {
        let Some(oldest) = c.folders.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| k.clone()) else { break };
        if let Some(old) = c.folders.remove(&oldest) {
            c.entries -= old.entries.len();
        }
    }
    c.clock += 1;
    let used = c.clock;
    c.entries += entries.len();
    c.folders.insert(dir.to_path_buf(), Cached { stamp, entries, used });
}

/// Drops the folder's listing (the web itself changed the folder).
pub fn forget(dir: &Path) {
    let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(old) = c.folders.remove(dir) {
        c.entries -= old.entries.len();
    }
}

/// Whether a listing of the folder at `dir` is kept (for tests).
#[cfg(test)]
pub fn is_cached(dir: &Path) -> bool {
    cache().lock().unwrap_or_else(PoisonError::into_inner).folders.contains_key(dir)
}

/// Folders and entries kept now (for tests).
#[cfg(test)]
pub fn usage() -> (usize, usize) {
    let c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    (c.folders.len(), c.entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::Folder;

    /// Sets the times of `new/` and `cur/` back by `ago` (their change times stay now).
    fn age(dir: &Path, ago: Duration) {
        for sub in ["new", "cur"] {
            let t = SystemTime::now() - ago;
            fs::File::open(dir.join(sub)).unwrap().set_modified(t).unwrap();
        }
    }

    fn maildir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("box");
        for sub in ["tmp", "new", "cur"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for i in 0..3 {
            fs::write(dir.join("new").join(format!("100{i}.M1P1.host,S=10")), "Subject: x\n\nbody\n").unwrap();
        }
        (tmp, dir)
    }

    /// Waits until the directories' change times (which cannot be set back) are older than SETTLE.
    fn settle() {
        std::thread::sleep(SETTLE + Duration::from_millis(100));
    }

    #[test]
    fn changes_made_outside_the_web_are_seen_on_the_next_listing() {
        let (_tmp, dir) = maildir();
        let folder = Folder::for_test(&dir);
        assert_eq!(folder.entries().unwrap().len(), 3);
        assert!(!is_cached(&dir), "a folder that just changed is not cached");
        age(&dir, Duration::from_secs(10));
        settle();
        assert_eq!(folder.entries().unwrap().len(), 3);
        assert!(is_cached(&dir), "a settled folder is cached");
        let cached = folder.entries().unwrap();
        assert!(Arc::ptr_eq(&cached, &folder.entries().unwrap()), "unchanged: the same listing");

        // A delivery by someone else: a new file in new/.
        fs::write(dir.join("new/2000.M2P2.host,S=10"), "Subject: y\n\nbody\n").unwrap();
        let listed = folder.entries().unwrap();
        assert_eq!(listed.len(), 4, "the new message is listed");

        // A flag change by an IMAP server: new/ -> cur/ with :2,S, on a cached listing.
        age(&dir, Duration::from_secs(10));
        settle();
        assert_eq!(folder.entries().unwrap().len(), 4);
        assert!(is_cached(&dir));
        fs::rename(dir.join("new/1001.M1P1.host,S=10"), dir.join("cur/1001.M1P1.host,S=10:2,S")).unwrap();
        let listed = folder.entries().unwrap();
        let e = listed.iter().find(|e| e.id == "1001.M1P1.host").unwrap();
        assert!(e.is_seen() && !e.is_new, "the flag change is seen: {e:?}");
    }

    #[test]
    fn a_change_that_keeps_the_modification_time_is_still_seen() {
        let (_tmp, dir) = maildir();
        let folder = Folder::for_test(&dir);
        age(&dir, Duration::from_secs(10));
        settle();
        assert_eq!(folder.entries().unwrap().len(), 3);
        assert!(is_cached(&dir));
        // Two changes in one tick look like this: the modification time as it was.
        let before = fs::metadata(dir.join("new")).unwrap().modified().unwrap();
        fs::remove_file(dir.join("new/1000.M1P1.host,S=10")).unwrap();
        fs::File::open(dir.join("new")).unwrap().set_modified(before).unwrap();
        assert_eq!(fs::metadata(dir.join("new")).unwrap().modified().unwrap(), before);
        assert_eq!(folder.entries().unwrap().len(), 2, "the change time told");
    }

    #[test]
    fn the_web_s_own_changes_forget_the_listing_and_the_cache_is_bounded() {
        let (_tmp, dir) = maildir();
        let folder = Folder::for_test(&dir);
        age(&dir, Duration::from_secs(10));
        settle();
        let entries = folder.entries().unwrap();
        assert!(is_cached(&dir));
        folder.set_seen(&entries[0], true).unwrap();
        assert!(!is_cached(&dir), "set_seen forgets");

        let tmp = tempfile::tempdir().unwrap();
        for i in 0..MAX_CACHED_FOLDERS + 5 {
            let d = tmp.path().join(format!("f{i}"));
            fs::create_dir_all(d.join("new")).unwrap();
            fs::create_dir_all(d.join("cur")).unwrap();
            age(&d, Duration::from_secs(10));
        }
        settle();
        for i in 0..MAX_CACHED_FOLDERS + 5 {
            Folder::for_test(&tmp.path().join(format!("f{i}"))).entries().unwrap();
        }
        assert!(usage().0 <= MAX_CACHED_FOLDERS, "{:?}", usage());
        assert!(is_cached(&tmp.path().join(format!("f{}", MAX_CACHED_FOLDERS + 4))), "the newest is kept");
    }
}
