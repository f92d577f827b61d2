//! A user's Maildir as the API sees it: folders (the inbox and its Maildir++ `.NAME/` folders),
//! messages newest first, flags, move and delete.
//!
//! Path safety: a folder is found by comparing the requested name with the entries of the user's own
//! mailbox directory, a message by comparing the requested id with the entries of that folder's `new/`
//! and `cur/`; the paths used are the ones those listings return. Nothing from a request is ever joined
//! into a path, so no id or folder name can reach another user's files.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use mail_parser::{HeaderName, MessageParser};
use mailroom_store::Mailbox;
use serde::Serialize;

use crate::listing::Listings;

/// The process's listing cache (`crate::listing`): each folder's sorted entries while it is unchanged.
fn listings() -> &'static Listings<Entry> {
    static LISTINGS: OnceLock<Listings<Entry>> = OnceLock::new();
    LISTINGS.get_or_init(Listings::default)
}

/// The name the API and UI give the mailbox's own Maildir (new/ + cur/), as IMAP does.
pub const INBOX: &str = "INBOX";
/// Messages per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: usize = 200;
/// Messages a search looks at, newest first: a search costs at most this many header reads.
pub const MAX_SEARCH_SCAN: usize = 10_000;
/// Bytes of each message a text search reads (the body beyond is not searched).
pub const MAX_SEARCH_TEXT: u64 = 256 * 1024;
/// Header bytes read for a summary (as `mailroom mailbox list`).
pub const HEADER_READ_LIMIT: u64 = 64 * 1024;
/// Longest message id taken from a request (a Maildir file name is at most 255 bytes).
pub const MAX_ID_LEN: usize = 255;

/// One folder of the caller's mailbox, found in its own directory listing.
#[derive(Debug, Clone)]
pub struct Folder {
    pub name: String,
    dir: PathBuf,
}

/// One message file, as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The unique part of the file name (before `,` or `:`): the id in URLs.
    pub id: String,
    file: String,
    path: PathBuf,
    pub is_new: bool,
    pub mtime: SystemTime,
    pub size: u64,
}

impl Entry {
    /// The Maildir info flags (after `:2,`), e.g. `RS`.
    pub fn flags(&self) -> &str {
        self.file.split_once(":2,").map_or("", |(_, f)| f)
    }

    /// Seen (`S`), as Dovecot marks read mail.
    pub fn is_seen(&self) -> bool {
        self.flags().contains('S')
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every folder of the mailbox: the inbox first, then Maildir++ folders by name.
pub fn folders(mailbox: &Mailbox) -> Vec<String> {
    let mut names: Vec<String> = folder_dirs(mailbox.path()).into_iter().map(|(n, _)| n).collect();
    names.sort();
    names.insert(0, INBOX.to_owned());
    names
}

/// `(name, dir)` of each `.NAME/` directory of a mailbox (Maildir++), names as listed.
fn folder_dirs(mailbox_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(mailbox_dir) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let folder = name.strip_prefix('.')?.to_owned();
            mailroom_store::address::is_folder_name(&folder).then(|| (folder, e.path()))
        })
        .collect()
}

/// The folder called `name` in this mailbox, if its listing has it.
pub fn open_folder(mailbox: &Mailbox, name: &str) -> Option<Folder> {
    if name == INBOX {
        return Some(Folder { name: INBOX.to_owned(), dir: mailbox.path().to_path_buf() });
    }
    folder_dirs(mailbox.path()).into_iter().find(|(n, _)| n == name).map(|(name, dir)| Folder { name, dir })
}

/// The unique part of a Maildir file name: before the size/info fields (`,S=...`, `:2,...`).
fn id_of(name: &str) -> &str {
    name.split([',', ':']).next().unwrap_or(name)
}

/// Could be a message id at all (checked before any listing is compared with it).
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-=".contains(&b))
}

impl Folder {
    /// A folder at `dir` (unit tests of the listing cache).
    #[cfg(test)]
    pub fn for_test(dir: &Path) -> Folder {
        Folder { name: INBOX.to_owned(), dir: dir.to_path_buf() }
    }

    /// Every message in `new/` and `cur/`, newest first (modification time, then name); from the
    /// listing cache (`crate::listing`) while the two directories are unchanged.
    pub fn entries(&self) -> io::Result<Arc<Vec<Entry>>> {
        listings().entries(&self.dir, || self.scan())
    }

    /// Lists `new/` and `cur/` (one `stat` per message), newest first.
    fn scan(&self) -> io::Result<Vec<Entry>> {
        let mut found = Vec::new();
        for (sub, is_new) in [("new", true), ("cur", false)] {
            let entries = match fs::read_dir(self.dir.join(sub)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                let Ok(file) = entry.file_name().into_string() else { continue };
                let Ok(meta) = entry.metadata() else { continue };
                if file.starts_with('.') || !meta.is_file() {
                    continue;
                }
                let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
                let id = id_of(&file).to_owned();
                found.push(Entry { id, file, path: entry.path(), is_new, mtime, size: meta.len() });
            }
        }
        found.sort_by(|a, b| (b.mtime, &b.file).cmp(&(a.mtime, &a.file)));
        Ok(found)
    }

    /// Its `new/` and `cur/` directories.
    pub fn subdirs(&self) -> [PathBuf; 2] {
        [self.dir.join("new"), self.dir.join("cur")]
    }

    /// The message with this id, matched against the listing.
    pub fn find(&self, id: &str) -> io::Result<Option<Entry>> {
        if !is_id(id) {
            return Ok(None);
        }
        Ok(self.entries()?.iter().find(|e| e.id == id).cloned())
    }

    /// Sets or clears the Seen flag: the file moves to `cur/` with `:2,<flags>` (flags sorted, as the
    /// Maildir spec asks), as Dovecot does when a message is read.
    pub fn set_seen(&self, entry: &Entry, seen: bool) -> io::Result<()> {
        let base = entry.file.split_once(':').map_or(entry.file.as_str(), |(b, _)| b);
        let mut flags: Vec<char> = entry.flags().chars().filter(|c| *c != 'S' && c.is_ascii_alphabetic()).collect();
        if seen {
            flags.push('S');
        }
        flags.sort_unstable();
        flags.dedup();
        let name = format!("{base}:2,{}", flags.into_iter().collect::<String>());
        let cur = self.dir.join("cur");
        fs::create_dir_all(&cur)?;
        listings().forget(&self.dir);
        fs::rename(&entry.path, cur.join(name))?;
        sync_parents(&entry.path, &cur)
    }

    /// Moves the message into `dest` (same file name; `new/` stays `new/`).
    pub fn move_to(&self, entry: &Entry, dest: &Folder) -> io::Result<()> {
        let sub = if entry.is_new { "new" } else { "cur" };
        for s in ["tmp", "new", "cur"] {
            fs::create_dir_all(dest.dir.join(s))?;
        }
        let target = dest.dir.join(sub);
        if target.join(&entry.file).exists() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a message with that name is there"));
        }
        listings().forget(&self.dir);
        listings().forget(&dest.dir);
        fs::rename(&entry.path, target.join(&entry.file))?;
        sync_parents(&entry.path, &target)
    }

    /// Removes the message for good (an IMAP expunge).
    pub fn delete(&self, entry: &Entry) -> io::Result<()> {
        listings().forget(&self.dir);
        fs::remove_file(&entry.path)?;
        match entry.path.parent() {
            Some(dir) => mailroom_store::fsync::sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// fsyncs the directory a file left and the one it went to, so the change survives a power cut.
fn sync_parents(old: &Path, new_dir: &Path) -> io::Result<()> {
    if let Some(dir) = old.parent() {
        mailroom_store::fsync::sync_dir(dir)?;
    }
    mailroom_store::fsync::sync_dir(new_dir)
}

/// One message in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub folder: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub date: String,
    /// Unix seconds of the file's modification time (delivery or last flag change).
    pub received: u64,
    pub size: u64,
    pub seen: bool,
}

/// The summary of one listed message (headers read up to [`HEADER_READ_LIMIT`]).
pub fn summary(folder: &Folder, entry: &Entry) -> Summary {
    let head = read_prefix(&entry.path, HEADER_READ_LIMIT).unwrap_or_default();
    let parsed = MessageParser::default().parse_headers(&head);
    let text = |name: HeaderName| parsed.as_ref().and_then(|m| m.header(name)).map(header_text).unwrap_or_default();
    Summary {
        id: entry.id.clone(),
        folder: folder.name.clone(),
        from: text(HeaderName::From),
        to: text(HeaderName::To),
        subject: text(HeaderName::Subject),
        date: parsed.as_ref().and_then(|m| m.date()).map(|d| d.to_rfc3339()).unwrap_or_default(),
        received: entry.mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        size: entry.size,
        seen: entry.is_seen(),
    }
}

/// A header value as one line of text (addresses as `Name <addr>, ...`).
pub fn header_text(value: &mail_parser::HeaderValue<'_>) -> String {
    use mail_parser::HeaderValue;
    match value {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(", "),
        HeaderValue::Address(a) => a
            .iter()
            .map(|addr| match (addr.name(), addr.address()) {
                (Some(n), Some(a)) => format!("{n} <{a}>"),
                (None, Some(a)) => a.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::DateTime(d) => d.to_rfc3339(),
        _ => String::new(),
    }
}

/// The first `limit` bytes of a file.
pub fn read_prefix(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    fs::File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// What a search looks for; every given field must match (case-insensitive substring).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Search {
    pub from: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
}

impl Search {
    pub fn is_empty(&self) -> bool {
        [&self.from, &self.to, &self.subject, &self.text].iter().all(|f| f.as_deref().is_none_or(str::is_empty))
    }

    /// True when `summary` (and, for `text`, the start of the message) matches.
    pub fn matches(&self, summary: &Summary, entry: &Entry) -> bool {
        let has = |field: &Option<String>, hay: &str| {
            field.as_deref().is_none_or(|f| f.is_empty() || hay.to_lowercase().contains(&f.to_lowercase()))
        };
        if !(has(&self.from, &summary.from) && has(&self.to, &summary.to) && has(&self.subject, &summary.subject)) {
            return false;
        }
        let Some(text) = self.text.as_deref().filter(|t| !t.is_empty()) else { return true };
        let raw = read_prefix(&entry.path, MAX_SEARCH_TEXT).unwrap_or_default();
        let Some(message) = MessageParser::default().parse(&raw) else { return false };
        let needle = text.to_lowercase();
        let body = message.body_text(0).unwrap_or_default().to_lowercase();
        body.contains(&needle) || summary.subject.to_lowercase().contains(&needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{MAX_CACHED_FOLDERS, SETTLE};
    use std::time::Duration;

    fn is_cached(dir: &Path) -> bool {
        listings().is_cached(dir)
    }

    fn usage() -> (usize, usize) {
        listings().usage()
    }

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
