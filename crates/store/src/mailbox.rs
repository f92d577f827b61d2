//! Reading a Maildir back: listing messages with their Date/From/Subject and fetching one
//! (`mailroom mailbox list/show`).
//!
//! Message files are found by scanning `new/` and `cur/`; an id given by a user is only ever
//! compared with directory entries, never joined into a path.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mail_parser::{HeaderName, MessageParser};

use crate::address::{validate_address, MailboxId};
use crate::error::StoreError;
use crate::store::Store;

/// How much of a file is read to find its header: headers beyond 64 KiB are unusual enough that
/// a summary may miss them.
pub const HEADER_READ_LIMIT: u64 = 64 * 1024;

/// One message in a mailbox listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// The unique part of the file name (before the first `,` or `:`).
    pub id: String,
    /// The Date header as written.
    pub date: Option<String>,
    /// The first From address, `Name <addr>` with the name RFC 2047-decoded.
    pub from: Option<String>,
    /// The Subject, RFC 2047-decoded.
    pub subject: Option<String>,
    pub size: u64,
    pub path: PathBuf,
    /// In `new/` (not yet seen by a mail reader) rather than `cur/`.
    pub is_new: bool,
}

/// A mailbox opened for reading.
#[derive(Debug, Clone)]
pub struct Mailbox {
    id: MailboxId,
    dir: PathBuf,
}

impl Store {
    /// The mailbox of `address`: a user in the directory, or any mailbox that already exists on
    /// disk (e.g. postmaster@ of a served domain, or a removed user whose mail is still there).
    pub fn mailbox(&self, address: &str) -> Result<Mailbox, StoreError> {
        let (local, domain) = validate_address(address)?;
        let id = match self.users().lookup(&local, &domain) {
            Some(id) => id,
            None => self
                .existing_mailbox(&local, &domain)
                .ok_or_else(|| StoreError::NoSuchMailbox(format!("{local}@{domain}")))?,
        };
        let dir = id.dir(self.mailboxes_dir());
        Ok(Mailbox { id, dir })
    }

    /// A mailbox directory that exists under `mailboxes/`, found by comparing directory entries.
    fn existing_mailbox(&self, local: &str, domain: &str) -> Option<MailboxId> {
        let domain_dir = find_entry(self.mailboxes_dir(), domain)?;
        find_entry(&domain_dir, local)?;
        Some(MailboxId::new_validated(local.to_string(), domain.to_string()))
    }
}

/// The directory entry of `dir` named exactly `name`, if it is a directory.
fn find_entry(dir: &Path, name: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_str() == Some(name) && e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
}

/// The unique part of a Maildir file name: before the size/info fields (`,S=...`, `:2,...`).
fn id_of(name: &str) -> &str {
    name.split([',', ':']).next().unwrap_or(name)
}

impl Mailbox {
    pub fn id(&self) -> &MailboxId {
        &self.id
    }

    /// The Maildir directory (containing tmp/, new/, cur/).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Every message in `new/` and `cur/`, oldest first (by modification time, then name, which
    /// starts with the delivery time).
    pub fn list(&self) -> Result<Vec<MessageSummary>, StoreError> {
        let mut found = Vec::new();
        for (path, name, is_new) in self.files()? {
            let meta = fs::metadata(&path).map_err(|e| StoreError::Io { op: "stat", path: path.clone(), source: e })?;
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            let (date, from, subject) = read_summary_headers(&path)?;
            let summary =
                MessageSummary { id: id_of(&name).to_string(), date, from, subject, size: meta.len(), path, is_new };
            found.push((mtime, name, summary));
        }
        found.sort_by(|a: &(SystemTime, String, _), b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(found.into_iter().map(|(_, _, s)| s).collect())
    }

    /// The raw bytes of message `id` (its unique part, or its whole file name).
    pub fn get(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(id)?;
        fs::read(&path).map_err(|source| StoreError::Io { op: "read", path, source })
    }

    /// The file of message `id`, found by comparing `id` with the names in `new/` and `cur/`.
    pub fn path_of(&self, id: &str) -> Result<PathBuf, StoreError> {
        self.files()?
            .into_iter()
            .find(|(_, name, _)| name == id || id_of(name) == id)
            .map(|(path, _, _)| path)
            .ok_or_else(|| StoreError::NoSuchMessage(id.to_string()))
    }

    /// `(path, file name, is_new)` of every message file; a Maildir not created yet is empty.
    fn files(&self) -> Result<Vec<(PathBuf, String, bool)>, StoreError> {
        let mut files = Vec::new();
        for (sub, is_new) in [("new", true), ("cur", false)] {
            let dir = self.dir.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StoreError::Io { op: "read", path: dir, source }),
            };
            for entry in entries {
                let entry = entry.map_err(|source| StoreError::Io { op: "read", path: dir.clone(), source })?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                // Dot files are not messages in Maildir (readers' own state files).
                if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                files.push((entry.path(), name, is_new));
            }
        }
        Ok(files)
    }
}

type Headers = (Option<String>, Option<String>, Option<String>);

fn read_summary_headers(path: &Path) -> Result<Headers, StoreError> {
    let io = |source| StoreError::Io { op: "read", path: path.to_path_buf(), source };
    let mut head = Vec::new();
    File::open(path).map_err(io)?.take(HEADER_READ_LIMIT).read_to_end(&mut head).map_err(io)?;
    let Some(message) = MessageParser::default().parse_headers(&head) else {
        return Ok((None, None, None));
    };
    let date = message.header_raw(HeaderName::Date).map(unfold).filter(|s| !s.is_empty());
    let from = message.from().and_then(|a| a.first()).and_then(|addr| match (addr.name(), addr.address()) {
        (Some(name), Some(address)) => Some(format!("{name} <{address}>")),
        (None, Some(address)) => Some(address.to_string()),
        (Some(name), None) => Some(name.to_string()),
        (None, None) => None,
    });
    let subject = message.subject().map(str::to_string);
    Ok((date, from, subject))
}

/// A header value on one line (RFC 5322 §2.2.3 unfolding, whitespace collapsed).
fn unfold(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}
