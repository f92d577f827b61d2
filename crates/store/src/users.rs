//! The user directory: who has a mailbox here.
//!
//! Owns `<data-dir>/users.toml` (reading, validating, atomically rewriting it under a lock file),
//! address validation for anything that may become part of a path, and [`Users`], the immutable
//! snapshot the server consults for RCPT.
//!
//! Case policy: the domain is case-insensitive (RFC 5321 §2.4, DNS). The local part *may* be
//! case-sensitive by RFC 5321 §2.4, but a receiving host is free to treat it insensitively; like
//! Postfix and Gmail in practice we match it case-insensitively and store it lowercase, so
//! `Alice@` and `alice@` are one mailbox (and one directory on disk, even on case-sensitive
//! file systems).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsync::sync_dir;
use crate::maildir::MailboxId;

/// RFC 5321 §4.5.3.1.1: the local part is at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: the domain is at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 1035 §2.3.4: a DNS label is at most 63 octets (applied to ASCII labels; for IDN U-labels the
/// limit belongs to the punycode A-label, which we do not compute here).
pub const MAX_LABEL: usize = 63;

/// File name of the user directory inside the data directory.
pub const USERS_FILE: &str = "users.toml";
/// How long a writer waits for the lock file before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// A lock file older than this was left by a crashed writer (a rewrite takes milliseconds).
pub const LOCK_STALE_AFTER: Duration = Duration::from_secs(30);

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
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UserError + 'a {
    move |source| UserError::Io { op, path: path.to_path_buf(), source }
}

/// One user: an address with a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `local@domain`, normalized (lowercase).
    pub address: String,
    pub local: String,
    pub domain: String,
    /// An argon2 PHC string, for SMTP AUTH later.
    pub password_hash: Option<String>,
}

impl User {
    /// Validates and normalizes `address` (see [`validate_address`]).
    pub fn parse(address: &str, password_hash: Option<String>) -> Result<User, UserError> {
        let (local, domain) = validate_address(address)?;
        Ok(User { address: format!("{local}@{domain}"), local, domain, password_hash })
    }

    /// The mailbox of this user.
    pub fn mailbox(&self) -> MailboxId {
        // Both parts were validated by `User::parse`, the only constructor reading outside input.
        MailboxId::new_validated(self.local.clone(), self.domain.clone())
    }
}

/// Validates an address for the user directory and returns the normalized `(local, domain)`.
///
/// Stricter than RFC 5321 on purpose, because both parts become directory names under
/// `mailboxes/`: the local part is a dot-atom (RFC 5322 §3.2.3 atext, plus UTF-8 as RFC 6531
/// allows) of 1..=64 octets, and additionally refuses `/`, `\`, `..`, leading or trailing dots,
/// control bytes and whitespace; quoted local parts are refused. The domain is 1..=255 octets of
/// dot-separated labels (letters, digits, hyphen; UTF-8 letters for IDN), no label empty or
/// starting/ending with a hyphen; address literals (`[1.2.3.4]`) are refused for users.
///
/// Both parts are lowercased (local part: see the module doc for why).
pub fn validate_address(address: &str) -> Result<(String, String), UserError> {
    let bad = |reason| UserError::InvalidAddress { address: address.to_string(), reason };
    let mut parts = address.split('@');
    let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
        (Some(l), Some(d), None) => (l, d),
        (_, None, _) => return Err(bad("no @")),
        _ => return Err(bad("more than one @")),
    };
    let local = validate_local(local).map_err(bad)?;
    let domain = validate_domain(domain).map_err(|e| match e {
        UserError::InvalidDomain { reason, .. } => bad(reason),
        other => other,
    })?;
    Ok((local, domain))
}

/// RFC 5322 §3.2.3 atext, minus `/` (a path separator; refused for our own safety).
fn is_atext_ascii(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-=?^_`{|}~".contains(&b)
}

fn validate_local(local: &str) -> Result<String, &'static str> {
    // Lowercase first, then check the result: that is the form that becomes a path.
    let local = local.to_lowercase();
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > MAX_LOCAL_PART {
        return Err("local part longer than 64 octets (RFC 5321 §4.5.3.1.1)");
    }
    if local.starts_with('.') || local.ends_with('.') {
        return Err("local part starts or ends with a dot");
    }
    if local.contains("..") {
        return Err("local part contains \"..\"");
    }
    for c in local.chars() {
        if c == '/' || c == '\\' {
            return Err("local part contains a path separator");
        }
        if c == '.' {
            continue;
        }
        if c.is_ascii() {
            if (c as u32) < 0x20 || c == '\x7f' {
                return Err("local part contains a control character");
            }
            if c == ' ' {
                return Err("local part contains whitespace");
            }
            if !is_atext_ascii(c as u8) {
                return Err("local part contains a character outside dot-atom (quoted local parts are not accepted)");
            }
        } else if c.is_control() || c.is_whitespace() {
            return Err("local part contains a control or whitespace character");
        }
    }
    Ok(local)
}

/// Validates a domain the way [`validate_address`] does and returns it lowercased.
pub fn validate_domain(domain: &str) -> Result<String, UserError> {
    let bad = |reason| UserError::InvalidDomain { domain: domain.to_string(), reason };
    if domain.starts_with('[') {
        return Err(bad("address literals are not accepted for users"));
    }
    let lower = domain.to_lowercase();
    if lower.is_empty() {
        return Err(bad("empty domain"));
    }
    if lower.len() > MAX_DOMAIN {
        return Err(bad("domain longer than 255 octets (RFC 5321 §4.5.3.1.2)"));
    }
    for label in lower.split('.') {
        if label.is_empty() {
            return Err(bad("empty label in domain"));
        }
        if label.is_ascii() && label.len() > MAX_LABEL {
            return Err(bad("label longer than 63 octets (RFC 1035 §2.3.4)"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("label starts or ends with a hyphen"));
        }
        let ok = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()));
        if !ok {
            return Err(bad("domain contains a character other than letters, digits, hyphen and dot"));
        }
    }
    Ok(lower)
}

/// An immutable snapshot of the user directory.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// Keyed by normalized address; a BTreeMap so `list` is sorted and stable.
    by_address: BTreeMap<String, User>,
    domains: BTreeSet<String>,
}

impl Users {
    fn from_users(path: &Path, users: Vec<User>) -> Result<Users, UserError> {
        let mut snapshot = Users::default();
        for user in users {
            snapshot.domains.insert(user.domain.clone());
            if snapshot.by_address.contains_key(&user.address) {
                return Err(UserError::Duplicate { path: path.to_path_buf(), address: user.address });
            }
            snapshot.by_address.insert(user.address.clone(), user);
        }
        Ok(snapshot)
    }

    /// The mailbox for `local@domain`, if that user exists (case-insensitive, see the module doc).
    pub fn lookup(&self, local: &str, domain: &str) -> Option<MailboxId> {
        let key = format!("{}@{}", local.to_lowercase(), domain.to_lowercase());
        self.by_address.get(&key).map(User::mailbox)
    }

    /// The user with this address (any case), if any.
    pub fn get(&self, address: &str) -> Option<&User> {
        let (local, domain) = validate_address(address).ok()?;
        self.by_address.get(&format!("{local}@{domain}"))
    }

    /// Every domain that has at least one user, sorted.
    pub fn domains(&self) -> impl Iterator<Item = &str> + '_ {
        self.domains.iter().map(String::as_str)
    }

    /// All users, sorted by address.
    pub fn iter(&self) -> impl Iterator<Item = &User> + '_ {
        self.by_address.values()
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

/// The on-disk form of `users.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

const FILE_HEADER: &str = "\
# mailroom user directory. Managed by `mailroom user add/remove`; safe to edit by hand
# (the server rereads it within seconds). One [[user]] table per mailbox:
#   address  = \"alice@example.test\"   (matched case-insensitively, stored lowercase)
#   password = \"$argon2id$...\"        (optional PHC string)
";

/// Reads and writes `<data-dir>/users.toml`.
#[derive(Debug, Clone)]
pub struct UserDirectory {
    data_dir: PathBuf,
    path: PathBuf,
}

impl UserDirectory {
    pub fn new(data_dir: &Path) -> UserDirectory {
        UserDirectory { data_dir: data_dir.to_path_buf(), path: data_dir.join(USERS_FILE) }
    }

    /// Path of `users.toml`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the directory as it is on disk now. A missing file means no users.
    pub fn load(&self) -> Result<Users, UserError> {
        Users::from_users(&self.path, self.read()?)
    }

    /// All users, sorted by address.
    pub fn list(&self) -> Result<Vec<User>, UserError> {
        Ok(self.load()?.iter().cloned().collect())
    }

    /// Adds a user; an error if the address (in any case) already exists.
    pub fn add(&self, address: &str, password_hash: Option<String>) -> Result<User, UserError> {
        let user = User::parse(address, password_hash)?;
        self.modify(|users| {
            if users.iter().any(|u| u.address == user.address) {
                return Err(UserError::Exists(user.address.clone()));
            }
            users.push(user.clone());
            Ok(())
        })?;
        Ok(user)
    }

    /// Removes a user; an error if there is none. The mailbox on disk is kept (mail is not
    /// deleted by an admin typo).
    pub fn remove(&self, address: &str) -> Result<(), UserError> {
        let target = User::parse(address, None)?.address;
        self.modify(|users| {
            let before = users.len();
            users.retain(|u| u.address != target);
            if users.len() == before {
                return Err(UserError::NotFound(target.clone()));
            }
            Ok(())
        })
    }

    /// Sets or clears a user's password hash.
    pub fn set_password(&self, address: &str, password_hash: Option<String>) -> Result<(), UserError> {
        let target = User::parse(address, None)?.address;
        self.modify(|users| {
            let user =
                users.iter_mut().find(|u| u.address == target).ok_or_else(|| UserError::NotFound(target.clone()))?;
            user.password_hash = password_hash;
            Ok(())
        })
    }

    fn read(&self) -> Result<Vec<User>, UserError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.path)(e)),
        };
        let file: UsersFile =
            toml::from_str(&text).map_err(|source| UserError::Parse { path: self.path.clone(), source })?;
        file.users.into_iter().map(|e| User::parse(&e.address, e.password)).collect()
    }

    /// Read-modify-write under the lock file, so concurrent `user add`s do not lose each other.
    fn modify(&self, change: impl FnOnce(&mut Vec<User>) -> Result<(), UserError>) -> Result<(), UserError> {
        fs::create_dir_all(&self.data_dir).map_err(io_err("create", &self.data_dir))?;
        let _lock = LockFile::acquire(self.data_dir.join(format!("{USERS_FILE}.lock")))?;
        let mut users = self.read()?;
        change(&mut users)?;
        // Validate the result (e.g. duplicates) before it replaces the old file.
        Users::from_users(&self.path, users.clone())?;
        self.write(&users)
    }

    /// Atomic replace: write a temporary file, fsync it, rename it over, fsync the directory.
    fn write(&self, users: &[User]) -> Result<(), UserError> {
        let file = UsersFile {
            users: users
                .iter()
                .map(|u| UserEntry { address: u.address.clone(), password: u.password_hash.clone() })
                .collect(),
        };
        let mut text = String::from(FILE_HEADER);
        if !file.users.is_empty() {
            text.push('\n');
            text.push_str(&toml::to_string(&file)?);
        }
        let tmp = self.data_dir.join(format!("{USERS_FILE}.tmp.{}", std::process::id()));
        let result = (|| {
            // 0600: the file holds password hashes.
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, &self.path).map_err(io_err("rename", &tmp))?;
            sync_dir(&self.data_dir).map_err(io_err("fsync", &self.data_dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// An exclusive lock held by the existence of a file (created with `create_new`, which is atomic
/// on local file systems), so neither `flock` nor any `unsafe` block is needed.
struct LockFile {
    path: PathBuf,
}

impl LockFile {
    fn acquire(path: PathBuf) -> Result<LockFile, UserError> {
        let start = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    // The pid is for a human wondering who holds it.
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(LockFile { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A writer holds the lock for milliseconds; an old lock file was left by a
                    // crash. (Two waiters may both judge it stale; the window is tiny and the
                    // worst case is the pre-lock behaviour, not corruption: writes stay atomic.)
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| SystemTime::now().duration_since(m).ok())
                        .is_some_and(|age| age > LOCK_STALE_AFTER);
                    if stale {
                        tracing::warn!(path = %path.display(), "removing stale lock file");
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if start.elapsed() > LOCK_TIMEOUT {
                        return Err(UserError::Locked { path, waited: start.elapsed() });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io_err("create", &path)(e)),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses() {
        let table: &[(&str, &str, &str)] = &[
            ("alice@example.test", "alice", "example.test"),
            ("Alice@Example.TEST", "alice", "example.test"),
            ("a.b@d", "a.b", "d"),
            ("first+tag@sub.example-host.org", "first+tag", "sub.example-host.org"),
            ("o'brien@d", "o'brien", "d"),
            ("x!#$%&*=?^_`{|}~-@d", "x!#$%&*=?^_`{|}~-", "d"),
            ("jörg@bücher.example", "jörg", "bücher.example"),
            ("ÆRØ@DØMÆNE.test", "ærø", "dømæne.test"),
            ("用户@例子.测试", "用户", "例子.测试"),
            ("localhost@localhost", "localhost", "localhost"),
        ];
        for &(addr, local, domain) in table {
            assert_eq!(validate_address(addr).unwrap(), (local.to_string(), domain.to_string()), "{addr}");
        }
        let max = format!("{}@d", "a".repeat(64));
        assert!(validate_address(&max).is_ok());
    }

    #[test]
    fn bad_addresses() {
        let long_local = format!("{}@d", "a".repeat(65));
        let long_domain = format!("a@{}", ["abcdefghi"; 26].join("."));
        assert!(long_domain.len() - 2 > 255);
        let long_label = format!("a@{}.test", "x".repeat(64));
        let table: Vec<&str> = vec![
            "",
            "@",
            "alice",
            "alice@",
            "@example.test",
            "a@b@c",
            "../x@d",
            "..@d",
            ".@d",
            "a/b@d",
            "a\\b@d",
            ".a@d",
            "a.@d",
            "a..b@d",
            "a\0b@d",
            "a\x01b@d",
            "a\x1fb@d",
            "a\x7fb@d",
            "a\nb@d",
            "a b@d",
            "a\tb@d",
            "a\u{00a0}b@d",
            "a\u{2028}b@d",
            "\"quoted\"@d",
            "a:b@d",
            "a(b)@d",
            "a,b@d",
            "a@[1.2.3.4]",
            "a@[IPv6:::1]",
            "a@.d",
            "a@d.",
            "a@d..e",
            "a@-d.test",
            "a@d-.test",
            "a@d_e.test",
            "a@d/e",
            "a@..",
            "a@d e",
            &long_local,
            &long_domain,
            &long_label,
        ];
        for addr in table {
            assert!(validate_address(addr).is_err(), "{addr:?} should be refused");
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let users = Users::from_users(Path::new("x"), vec![User::parse("Alice@Example.test", None).unwrap()]).unwrap();
        let id = users.lookup("ALICE", "EXAMPLE.TEST").unwrap();
        assert_eq!(id.address(), "alice@example.test");
        assert!(users.lookup("bob", "example.test").is_none());
        assert!(users.get("aLiCe@example.TEST").is_some());
        assert_eq!(users.domains().collect::<Vec<_>>(), vec!["example.test"]);
        assert_eq!(users.len(), 1);
    }
}
