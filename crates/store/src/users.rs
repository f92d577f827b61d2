//! The user directory: who has a mailbox here.
//!
//! Owns `<data-dir>/users.toml` (reading, validating, atomically rewriting it under a lock file),
//! [`Users`], the immutable snapshot the server consults for RCPT and AUTH, and [`UsersCache`], which
//! keeps the current snapshot and reloads it off the hot path.
//!
//! Lookups match local parts case-insensitively (see [`crate::address`]) and domains by their
//! canonical form ([`crate::domain::canonical_domain`]), so `bücher.example` and
//! `xn--bcher-kva.example` are one domain; the mailbox path stays the form the directory holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::address::MailboxId;
use crate::domain::canonical_domain;
use crate::error::{user_io_err as io_err, UserError};
use crate::fsync::sync_dir;
use crate::quota::Quota;

pub use crate::address::{validate_address, validate_domain, MAX_DOMAIN, MAX_LABEL, MAX_LOCAL_PART};

/// File name of the user directory inside the data directory.
pub const USERS_FILE: &str = "users.toml";
/// How long a writer waits for another writer's lock before giving up (a rewrite takes milliseconds).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// One user: an address with a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `local@domain`, normalized (lowercase).
    pub address: String,
    pub local: String,
    pub domain: String,
    /// An argon2 PHC string, for SMTP AUTH later.
    pub password_hash: Option<String>,
    /// May see the queue, the users and the server status in the web interface and API (never other
    /// users' mail). `admin = true` in the user's entry.
    pub admin: bool,
    /// Limits of the mailbox (`quota`, `quota_messages` in users.toml; absent: none).
    pub quota: Quota,
}

impl User {
    /// Validates and normalizes `address` (see [`validate_address`]).
    pub fn parse(address: &str, password_hash: Option<String>) -> Result<User, UserError> {
        let (local, domain) = validate_address(address)?;
        Ok(User {
            address: format!("{local}@{domain}"),
            local,
            domain,
            password_hash,
            admin: false,
            quota: Quota::default(),
        })
    }

    /// The mailbox of this user.
    pub fn mailbox(&self) -> MailboxId {
        // Both parts were validated by `User::parse`, the only constructor reading outside input.
        MailboxId::new_validated(self.local.clone(), self.domain.clone())
    }
}

/// An immutable snapshot of the user directory.
#[derive(Debug, Clone, Default)]
pub struct Users {
    /// Keyed by `local@<canonical domain>`; a BTreeMap so `list` is sorted and stable.
    by_address: BTreeMap<String, User>,
    domains: BTreeSet<String>,
    /// Set on the snapshot a store starts with when users.toml is missing or empty: there is no
    /// directory, so no lookup may conclude that a user does not exist.
    unavailable: Option<PathBuf>,
}

/// The lookup key of a user: lowercase local part, canonical domain.
fn key(local: &str, domain: &str) -> Option<String> {
    Some(format!("{}@{}", local.to_lowercase(), canonical_domain(domain).ok()?))
}

impl Users {
    fn from_users(path: &Path, users: Vec<User>) -> Result<Users, UserError> {
        let mut snapshot = Users::default();
        for user in users {
            snapshot.domains.insert(user.domain.clone());
            // Validated users always have a canonical domain; the address is a fallback key.
            let k = key(&user.local, &user.domain).unwrap_or_else(|| user.address.clone());
            if snapshot.by_address.contains_key(&k) {
                return Err(UserError::Duplicate { path: path.to_path_buf(), address: user.address });
            }
            snapshot.by_address.insert(k, user);
        }
        Ok(snapshot)
    }

    /// The snapshot of "no directory": every lookup says so.
    pub(crate) fn unavailable(path: &Path) -> Users {
        Users { unavailable: Some(path.to_path_buf()), ..Users::default() }
    }

    /// The mailbox for `local@domain`, if that user exists (case-insensitive local part, domain in any
    /// form, see the module doc). `None` also when the directory is unavailable: use
    /// [`Users::resolve`] to tell the two apart.
    pub fn lookup(&self, local: &str, domain: &str) -> Option<MailboxId> {
        self.by_address.get(&key(local, domain)?).map(User::mailbox)
    }

    /// Like [`Users::lookup`], but `Err(UserError::Unavailable)` when there is no directory to look
    /// in (users.toml missing or empty since start-up): the server answers 451 4.3.0, not 550 5.1.1.
    pub fn resolve(&self, local: &str, domain: &str) -> Result<Option<MailboxId>, UserError> {
        if let Some(path) = &self.unavailable {
            return Err(UserError::Unavailable { path: path.clone() });
        }
        Ok(self.lookup(local, domain))
    }

    /// False when this snapshot stands for a missing or empty users.toml (see [`Users::resolve`]).
    pub fn is_available(&self) -> bool {
        self.unavailable.is_none()
    }

    /// The user with this address (any case, domain in any form), if any.
    pub fn get(&self, address: &str) -> Option<&User> {
        let (local, domain) = validate_address(address).ok()?;
        self.by_address.get(&key(&local, &domain)?)
    }

    /// The quota of the user whose mailbox this is (none for mailboxes without a user: postmaster@).
    pub fn quota_of(&self, mailbox: &MailboxId) -> Quota {
        key(mailbox.local(), mailbox.domain())
            .and_then(|k| self.by_address.get(&k))
            .map_or_else(Quota::default, |u| u.quota)
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
    #[serde(default, skip_serializing_if = "is_false")]
    admin: bool,
    /// Octets; absent or 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    quota: u64,
    /// Messages; absent or 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    quota_messages: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

const FILE_HEADER: &str = "\
# mailroom user directory. Managed by `mailroom user add/remove`; safe to edit by hand
# (the server rereads it within seconds). One [[user]] table per mailbox:
#   address  = \"alice@example.test\"   (matched case-insensitively, stored lowercase)
#   password = \"$argon2id$...\"        (optional PHC string)
#   admin    = true                     (optional: web/API admin)
#   quota = 104857600                  (optional: octets; `mailroom user quota`)
#   quota_messages = 10000             (optional: messages)
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

    /// Like [`UserDirectory::load`], for a running server: a missing or empty (whitespace-only) file is
    /// `Err(UserError::Unavailable)`, not "no users" (an editor mid-save, a rename). A file that holds
    /// no users on purpose still has the header comment `user` commands write.
    pub fn load_checked(&self) -> Result<Users, UserError> {
        let unavailable = || UserError::Unavailable { path: self.path.clone() };
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unavailable()),
            Err(e) => return Err(io_err("read", &self.path)(e)),
        };
        if text.trim().is_empty() {
            return Err(unavailable());
        }
        Users::from_users(&self.path, self.parse(&text)?)
    }

    /// Writes an empty directory (the header comment, no users) if there is no users.toml yet, so a
    /// fresh data directory has a directory and a missing file later means something is wrong.
    pub fn create_if_missing(&self) -> Result<(), UserError> {
        if self.path.exists() {
            return Ok(());
        }
        self.modify(|_| Ok(()))
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

    /// Grants or takes away a user's admin rights (web interface and API).
    pub fn set_admin(&self, address: &str, admin: bool) -> Result<(), UserError> {
        let target = User::parse(address, None)?.address;
        self.modify(|users| {
            let user =
                users.iter_mut().find(|u| u.address == target).ok_or_else(|| UserError::NotFound(target.clone()))?;
            user.admin = admin;
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

    /// Sets a user's quota (0 for either limit: none).
    pub fn set_quota(&self, address: &str, quota: Quota) -> Result<(), UserError> {
        let target = User::parse(address, None)?.address;
        self.modify(|users| {
            let user =
                users.iter_mut().find(|u| u.address == target).ok_or_else(|| UserError::NotFound(target.clone()))?;
            user.quota = quota;
            Ok(())
        })
    }

    fn read(&self) -> Result<Vec<User>, UserError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.path)(e)),
        };
        self.parse(&text)
    }

    fn parse(&self, text: &str) -> Result<Vec<User>, UserError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|source| UserError::Parse { path: self.path.clone(), source })?;
        let user = |e: UserEntry| {
            let quota = Quota { bytes: e.quota, messages: e.quota_messages };
            User::parse(&e.address, e.password).map(|u| User { quota, admin: e.admin, ..u })
        };
        file.users.into_iter().map(user).collect()
    }

    /// Read-modify-write under the lock file, so concurrent `user add`s do not lose each other.
    fn modify(&self, change: impl FnOnce(&mut Vec<User>) -> Result<(), UserError>) -> Result<(), UserError> {
        crate::fsync::create_dir_all_synced(&self.data_dir).map_err(io_err("create", &self.data_dir))?;
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
                .map(|u| UserEntry {
                    address: u.address.clone(),
                    password: u.password_hash.clone(),
                    quota: u.quota.bytes,
                    quota_messages: u.quota.messages,
                    admin: u.admin,
                })
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
            crate::fsync::sync_all(&f).map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, &self.path).map_err(io_err("rename", &tmp))?;
            sync_dir(&self.data_dir).map_err(io_err("fsync", &self.data_dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// How often the store looks at `users.toml` for changes by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// The reload thread wakes at least this often to notice a changed interval or a dropped store.
const RELOAD_TICK: Duration = Duration::from_millis(100);

/// What we compare to notice that `users.toml` changed (a rename gives a new inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    mtime: (i64, i64),
    len: u64,
    ino: u64,
    dev: u64,
}

impl FileStamp {
    pub(crate) fn of(path: &Path) -> Option<FileStamp> {
        let m = fs::metadata(path).ok()?;
        Some(FileStamp { mtime: (m.mtime(), m.mtime_nsec()), len: m.len(), ino: m.ino(), dev: m.dev() })
    }
}

/// The current user snapshot of a running store, and the thread that reloads it.
///
/// Readers ([`UsersCache::current`], at every RCPT and AUTH, on the async worker threads) only take a
/// short lock to clone an `Arc`; they never read or parse the file. A background thread stats
/// `users.toml` once per interval and, when it changed, reads and parses it with no lock held, then
/// swaps the new snapshot in. A reload that is slow or stuck (a FIFO, a hung network file system)
/// delays only itself. A file that fails to parse, or is missing or empty, is logged and the previous
/// snapshot kept.
pub(crate) struct UsersCache {
    current: Mutex<Arc<Users>>,
    interval_ms: AtomicU64,
}

impl UsersCache {
    /// Loads the directory and starts the reload thread, which ends once the cache is dropped. In a
    /// new data directory (`is_new`) a missing users.toml is first created empty; elsewhere a missing
    /// or empty file gives the "unavailable" snapshot (RCPT to users: 451) until it is back. A file
    /// that does not parse is an error: a server should not start on a directory it cannot read.
    pub(crate) fn start(directory: UserDirectory, is_new: bool) -> Result<Arc<UsersCache>, UserError> {
        if is_new {
            directory.create_if_missing()?;
        }
        // Stat before reading: if the file changes in between, the thread reloads it once more.
        let stamp = FileStamp::of(directory.path());
        let users = match directory.load_checked() {
            Ok(users) => users,
            Err(UserError::Unavailable { path }) => {
                tracing::warn!(
                    path = %path.display(),
                    "user directory missing or empty: RCPT to users gets 451 until it is back \
                     (`mailroom user add` writes it)"
                );
                Users::unavailable(&path)
            }
            Err(e) => return Err(e),
        };
        let cache = Arc::new(UsersCache {
            current: Mutex::new(Arc::new(users)),
            interval_ms: AtomicU64::new(DEFAULT_RELOAD_INTERVAL.as_millis() as u64),
        });
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("mailroom-users".into())
            .spawn(move || reload_loop(&weak, &directory, stamp))
            .map_err(io_err("spawn the reload thread for", Path::new(USERS_FILE)))?;
        Ok(cache)
    }

    /// The current snapshot: a short lock and an `Arc` clone, never a file read.
    pub(crate) fn current(&self) -> Arc<Users> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    fn swap(&self, users: Users) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
    }
}

/// The reload thread: stat once per interval, reload on change, swap. Holds the cache only weakly
/// between checks, so dropping the store ends it.
fn reload_loop(cache: &Weak<UsersCache>, directory: &UserDirectory, mut stamp: Option<FileStamp>) {
    let mut checked = Instant::now();
    loop {
        let Some(interval) = cache.upgrade().map(|c| c.interval()) else { return };
        std::thread::sleep(interval.min(RELOAD_TICK));
        // Read again: the interval may have been changed while we slept.
        let Some(interval) = cache.upgrade().map(|c| c.interval()) else { return };
        if checked.elapsed() < interval {
            continue;
        }
        checked = Instant::now();
        let now = FileStamp::of(directory.path());
        if now == stamp {
            continue;
        }
        stamp = now;
        // The read and parse happen here, with no lock held.
        let loaded = directory.load_checked();
        let Some(cache) = cache.upgrade() else { return };
        match loaded {
            Ok(users) => {
                tracing::info!(users = users.len(), "reloaded {USERS_FILE}");
                cache.swap(users);
            }
            Err(error) => tracing::warn!(%error, "keeping the previous user directory"),
        }
    }
}

/// An exclusive `flock` on `users.toml.lock`, held while the directory file is rewritten. The kernel drops it
/// when the holder exits, however it exits: a crash or a power cut leaves a file behind but no lock, so the
/// next writer never waits for a dead one. (The file stays; only the lock counts.)
pub(crate) struct LockFile {
    _file: File,
}

impl LockFile {
    pub(crate) fn acquire(path: PathBuf) -> Result<LockFile, UserError> {
        let start = Instant::now();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("create", &path))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(LockFile { _file: file }),
                Err(TryLockError::WouldBlock) if start.elapsed() > LOCK_TIMEOUT => {
                    return Err(UserError::Locked { path, waited: start.elapsed() });
                }
                // Another writer holds it for milliseconds.
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
                Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn admin_flag_is_written_read_back_and_optional() {
        let dir = tempfile::tempdir().unwrap();
        let users = UserDirectory::new(dir.path());
        users.add("a@example.test", None).unwrap();
        users.add("b@example.test", None).unwrap();
        users.set_admin("A@example.test", true).unwrap();
        let text = fs::read_to_string(users.path()).unwrap();
        assert_eq!(text.matches("admin = true").count(), 1, "only a's entry says admin: {text}");
        let loaded = users.load().unwrap();
        assert!(loaded.get("a@example.test").unwrap().admin);
        assert!(!loaded.get("b@example.test").unwrap().admin);
        users.set_admin("a@example.test", false).unwrap();
        assert!(!users.load().unwrap().get("a@example.test").unwrap().admin);
        assert!(matches!(users.set_admin("c@example.test", true), Err(UserError::NotFound(_))));
    }
}
