//! The store and durable Maildir delivery.
//!
//! Owns `<data-dir>/tmp/` (messages being received), the layout
//! `<data-dir>/mailboxes/<domain>/<local>/{tmp,new,cur}`, the cached user snapshot, and the
//! threads that make messages durable.
//!
//! Delivery (DESIGN.md "Durability"): [`Store::begin`] creates a uniquely named file under
//! `<data-dir>/tmp/`; [`Incoming::write`] streams chunks into it; [`Incoming::commit`] hands it on
//! and returns a [`Commit`] future. Two stages that overlap, so one batch's directory syncs run while
//! the next messages' files sync:
//! 1. a few syncer threads flush and fsync each file as it arrives (fdatasyncs issued in parallel
//!    share the file system's journal commits);
//! 2. the syncer that finds no batch running drains every synced message into one (group commit, see
//!    [`Stage2`]) and, for the batch,
//!    hard-links each file into `new/<unique>,S=<size>` of every recipient (copying only across
//!    devices), creating missing Maildirs and fsyncing their parents; fsyncs each distinct `new/`
//!    directory once; unlinks the tmp files and answers every waiter.
//!
//! A message is delivered to all its recipients or to none: any failure removes the links already
//! made for that message and its tmp file, and resolves to `Err`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::fsync::{self, sync_dir};
use crate::users::{validate_domain, UserDirectory, UserError, Users, USERS_FILE};

/// Size of the write buffer in front of an incoming message file: large enough that a message
/// costs few write(2) calls, small enough that nothing holds a whole message.
pub const WRITE_BUFFER: usize = 64 * 1024;
/// How often [`Store::users`] looks at `users.toml` for changes by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Most commits answered by one batch (bounds the latency of the first in the batch).
pub const MAX_BATCH: usize = 256;
/// Threads fsyncing message files in parallel (stage one, before the committer links them).
pub const SYNC_THREADS: usize = 4;
/// Files in tmp/ older than this are removed at open whatever their origin: the Maildir
/// convention (qmail's maildir(5)) for abandoned tmp files.
pub const TMP_ABANDONED_AFTER: Duration = Duration::from_secs(36 * 3600);

/// Linux errno values we act on (std has no portable names for all of them).
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;
const EXDEV: i32 = 18;

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
    #[error("no such mailbox: {0}")]
    NoSuchMailbox(String),
    #[error("no such message: {0}")]
    NoSuchMessage(String),
    #[error("message has no recipients")]
    NoRecipients,
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

    fn io(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io { op, path: path.to_path_buf(), source }
    }

    /// A copy for each message that shares one failure (io::Error is not Clone).
    fn duplicate(&self) -> StoreError {
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

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::io(op, path, source)
}

/// Identifies one mailbox directory. Only the store makes these, from validated addresses (the
/// user directory, [`Store::postmaster`]) or from existing directory entries, so its path can be
/// trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId {
    local: String,
    domain: String,
}

impl MailboxId {
    /// Callers guarantee both parts passed `users::validate_*`.
    pub(crate) fn new_validated(local: String, domain: String) -> MailboxId {
        MailboxId { local, domain }
    }

    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `<mailboxes>/<domain>/<local>`.
    pub(crate) fn dir(&self, mailboxes: &Path) -> PathBuf {
        mailboxes.join(&self.domain).join(&self.local)
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The Maildir unique name (the file is `new/<id>,S=<size>` in each mailbox).
    pub id: String,
    pub size: u64,
    /// Distinct mailboxes the message is now in.
    pub mailboxes: usize,
}

/// The mailroom store. Cheap to clone; all clones share one committer and one user cache.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    mailboxes: PathBuf,
    tmp: PathBuf,
    directory: UserDirectory,
    cache: Mutex<UsersCache>,
    reload_interval_ms: AtomicU64,
    hostname: String,
    counter: AtomicU64,
    committer: mpsc::Sender<Job>,
}

struct UsersCache {
    users: Arc<Users>,
    stamp: Option<FileStamp>,
    checked: Instant,
}

/// What we compare to notice that `users.toml` changed (a rename gives a new inode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    mtime: (i64, i64),
    len: u64,
    ino: u64,
    dev: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = fs::metadata(path).ok()?;
        Some(FileStamp { mtime: (m.mtime(), m.mtime_nsec()), len: m.len(), ino: m.ino(), dev: m.dev() })
    }
}

/// When the first store of this process was opened: tmp files carrying our pid but older than this
/// were left by an earlier process that had the same pid (common in containers, where it is 1).
static PROCESS_OPENED: OnceLock<SystemTime> = OnceLock::new();

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("data_dir", &self.inner.data_dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and removes tmp files abandoned by a
    /// crashed process (they were never acknowledged, so the sender still has them).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        PROCESS_OPENED.get_or_init(SystemTime::now);
        fsync::warn_if_unsafe();
        let mailboxes = data_dir.join("mailboxes");
        let tmp = data_dir.join("tmp");
        for dir in [data_dir, &mailboxes, &tmp] {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let hostname = hostname();
        clean_tmp(&tmp, &hostname);

        let directory = UserDirectory::new(data_dir);
        let stamp = FileStamp::of(directory.path());
        let users = directory.load()?;

        // Two stages, so that they overlap: SYNC_THREADS syncers fsync message files as they come
        // (parallel fdatasyncs share the file system's journal commits), and one committer links the
        // synced ones into new/ a batch at a time with one fsync per directory.
        let (tx, sync_rx) = mpsc::channel::<Job>();
        let sync_rx = Arc::new(Mutex::new(sync_rx));
        let stage2 = Arc::new(Stage2 {
            committer: Committer { mailboxes: mailboxes.clone() },
            pending: Mutex::new(Vec::new()),
            leader: Mutex::new(()),
        });
        for i in 0..SYNC_THREADS {
            let rx = sync_rx.clone();
            let stage2 = stage2.clone();
            std::thread::Builder::new()
                .name(format!("mailroom-sync-{i}"))
                .spawn(move || sync_loop(&rx, &stage2))
                .map_err(io_err("spawn syncer for", data_dir))?;
        }

        Ok(Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                mailboxes,
                tmp,
                directory,
                cache: Mutex::new(UsersCache { users: Arc::new(users), stamp, checked: Instant::now() }),
                reload_interval_ms: AtomicU64::new(DEFAULT_RELOAD_INTERVAL.as_millis() as u64),
                hostname,
                counter: AtomicU64::new(0),
                committer: tx,
            }),
        })
    }

    /// Changes how often [`Store::users`] checks `users.toml` (tests use a short interval).
    pub fn with_reload_interval(self, interval: Duration) -> Store {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.inner.reload_interval_ms.store(ms, Ordering::Relaxed);
        self
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub(crate) fn mailboxes_dir(&self) -> &Path {
        &self.inner.mailboxes
    }

    /// The user directory behind this store (for writes; reads should use [`Store::users`]).
    pub fn directory(&self) -> &UserDirectory {
        &self.inner.directory
    }

    /// The current user snapshot. At most once per reload interval this stats `users.toml` and
    /// rereads it if it changed, so `mailroom user add` reaches a running server within ~1-2 s.
    /// A file that fails to parse is logged and the previous snapshot kept.
    pub fn users(&self) -> Arc<Users> {
        let interval = Duration::from_millis(self.inner.reload_interval_ms.load(Ordering::Relaxed));
        let mut cache = self.inner.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.checked.elapsed() >= interval {
            cache.checked = Instant::now();
            // Stat before reading: if the file changes in between we reload once more next time.
            let stamp = FileStamp::of(self.inner.directory.path());
            if stamp != cache.stamp {
                cache.stamp = stamp;
                match self.inner.directory.load() {
                    Ok(users) => {
                        tracing::info!(users = users.len(), "reloaded {USERS_FILE}");
                        cache.users = Arc::new(users);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "keeping the previous user directory");
                    }
                }
            }
        }
        cache.users.clone()
    }

    /// The postmaster mailbox of `domain` (RFC 5321 §4.5.1). The domain is validated like a user's;
    /// whether it is served is the server's decision.
    pub fn postmaster(&self, domain: &str) -> Result<MailboxId, StoreError> {
        Ok(MailboxId::new_validated("postmaster".into(), validate_domain(domain)?))
    }

    /// Starts receiving a message into a new file under `<data-dir>/tmp/`.
    pub fn begin(&self) -> Result<Incoming, StoreError> {
        let unique = self.unique_name();
        let path = self.inner.tmp.join(&unique);
        // create_new: a unique name is never reused, so nothing is ever overwritten.
        let file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io_err("create", &path))?;
        Ok(Incoming {
            store: self.clone(),
            unique,
            path,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            len: 0,
            failed: false,
        })
    }

    /// A Maildir unique name: `<secs>.M<usecs>P<pid>Q<counter>.<hostname>` (maildir(5) and the
    /// Courier/Dovecot extensions: M = microseconds, P = pid, Q = per-process counter).
    fn unique_name(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.M{}P{}Q{}.{}", now.as_secs(), now.subsec_micros(), std::process::id(), n, self.inner.hostname)
    }
}

/// The host name for unique names, sanitized as maildir(5) says (`/` -> `\057`, `:` -> `\072`);
/// we also escape `,` (it starts the `,S=` field) and drop anything unprintable.
fn hostname() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string());
    sanitize_hostname(&raw)
}

fn sanitize_hostname(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_control() || c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() || out.starts_with('.') {
        out.insert_str(0, "localhost");
    }
    out
}

/// Removes files under `<data-dir>/tmp/` that no live process is writing: ones from this host whose
/// process is gone (or that carry our pid but predate us), and anything older than 36 hours.
/// Removing *every* file would be wrong: `mailroom mailbox list` opens the store while a server
/// may be receiving into tmp/.
fn clean_tmp(tmp: &Path, hostname: &str) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let proc_mounted = Path::new("/proc/self").exists();
    let our_pid = std::process::id();
    let opened = PROCESS_OPENED.get().copied().unwrap_or_else(SystemTime::now);
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name();
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
        let stale = age > TMP_ABANDONED_AFTER
            || match name.to_str().and_then(parse_unique) {
                Some((pid, host)) if host == hostname => {
                    if pid == our_pid {
                        mtime < opened
                    } else {
                        proc_mounted && !Path::new(&format!("/proc/{pid}")).exists()
                    }
                }
                _ => false,
            };
        if stale {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed unacknowledged message from tmp/")
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove stale tmp file")
                }
            }
        }
    }
}

/// `(pid, hostname)` of a unique name we made.
fn parse_unique(name: &str) -> Option<(u32, &str)> {
    let (_secs, rest) = name.split_once('.')?;
    let (mpq, host) = rest.split_once('.')?;
    let (_, pq) = mpq.strip_prefix('M')?.split_once('P')?;
    let (pid, _) = pq.split_once('Q')?;
    Some((pid.parse().ok()?, host))
}

/// A message being received. Dropping it without [`Incoming::commit`] removes its file.
pub struct Incoming {
    store: Store,
    unique: String,
    path: PathBuf,
    /// None once handed to the committer.
    file: Option<BufWriter<File>>,
    len: u64,
    failed: bool,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").field("id", &self.unique).field("len", &self.len).finish()
    }
}

impl Incoming {
    /// Appends a chunk. Goes through a 64 KiB buffer; nothing else is kept in memory.
    /// After an error the message can only be dropped (commit would fail).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::WriteFailed);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::WriteFailed);
        };
        match file.write_all(chunk) {
            Ok(()) => {
                self.len += chunk.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(StoreError::io("write", &self.path, e))
            }
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The Maildir unique name this message will have.
    pub fn id(&self) -> &str {
        &self.unique
    }

    /// Makes the message durable in every recipient's mailbox (duplicates count once). The
    /// returned future resolves after the data and the `new/` directories are fsynced; on `Err`
    /// no copy is left anywhere. Dropping the future does not cancel the delivery.
    pub fn commit(mut self, recipients: &[MailboxId]) -> Commit {
        if self.failed {
            return Commit::ready(Err(StoreError::WriteFailed));
        }
        let mut seen = HashSet::new();
        let recipients: Vec<MailboxId> = recipients.iter().filter(|r| seen.insert(*r)).cloned().collect();
        if recipients.is_empty() {
            return Commit::ready(Err(StoreError::NoRecipients));
        }
        let Some(file) = self.file.take() else {
            return Commit::ready(Err(StoreError::WriteFailed));
        };
        let (reply, rx) = oneshot::channel();
        let job = Job {
            file: Some(file),
            tmp_path: self.path.clone(),
            unique: self.unique.clone(),
            size: self.len,
            recipients,
            reply,
        };
        match self.store.inner.committer.send(job) {
            Ok(()) => {
                // The committer owns the tmp file now; our Drop must leave it alone.
                self.path = PathBuf::new();
                Commit { state: CommitState::Waiting(rx) }
            }
            // `self` still owns the path, so its Drop removes the file.
            Err(_) => Commit::ready(Err(StoreError::CommitterGone)),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            drop(self.file.take());
            if let Err(error) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove abandoned message");
            }
        }
    }
}

/// Resolves when a commit is durable (or failed and cleaned up). Needs no particular runtime.
pub struct Commit {
    state: CommitState,
}

enum CommitState {
    Ready(Option<Result<Delivered, StoreError>>),
    Waiting(oneshot::Receiver<Result<Delivered, StoreError>>),
}

impl Commit {
    fn ready(result: Result<Delivered, StoreError>) -> Commit {
        Commit { state: CommitState::Ready(Some(result)) }
    }

    /// Blocks the calling thread until the commit resolves, for synchronous callers (the CLI).
    /// Must not be called from inside an async runtime.
    pub fn wait(self) -> Result<Delivered, StoreError> {
        match self.state {
            CommitState::Ready(result) => result.unwrap_or(Err(StoreError::CommitterGone)),
            CommitState::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::CommitterGone)),
        }
    }
}

impl Future for Commit {
    type Output = Result<Delivered, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            CommitState::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(StoreError::CommitterGone))),
            CommitState::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(StoreError::CommitterGone))),
        }
    }
}

impl fmt::Debug for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Commit")
    }
}

/// One message handed to the committer.
struct Job {
    file: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    unique: String,
    size: u64,
    recipients: Vec<MailboxId>,
    reply: oneshot::Sender<Result<Delivered, StoreError>>,
}

/// A job's progress through a batch.
struct InFlight {
    job: Job,
    /// Links made into recipients' new/ directories (removed again if the message fails).
    links: Vec<PathBuf>,
    error: Option<StoreError>,
}

/// Links synced messages into their mailboxes, a batch at a time.
struct Committer {
    mailboxes: PathBuf,
}

impl Committer {
    fn commit_batch(&self, batch: Vec<Job>) {
        let mut jobs: Vec<InFlight> =
            batch.into_iter().map(|job| InFlight { job, links: Vec::new(), error: None }).collect();

        // 1. The files' data is already on disk: the syncers did it before handing them over.
        // 2. Link into every recipient's new/ (metadata only: cheap, done in order).
        for j in jobs.iter_mut().filter(|j| j.error.is_none()) {
            let final_name = format!("{},S={}", j.job.unique, j.job.size);
            for rcpt in &j.job.recipients {
                match self.deliver_one(&j.job.tmp_path, &rcpt.dir(&self.mailboxes), &j.job.unique, &final_name) {
                    Ok(link) => j.links.push(link),
                    Err(e) => {
                        j.error = Some(e);
                        break;
                    }
                }
            }
            if j.error.is_some() {
                unlink_all(&j.links);
                j.links.clear();
            }
        }

        // 3. Each distinct new/ directory fsynced once for the whole batch.
        let mut dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (i, j) in jobs.iter().enumerate() {
            for link in &j.links {
                if let Some(dir) = link.parent() {
                    dirs.entry(dir.to_path_buf()).or_default().push(i);
                }
            }
        }
        let mut dir_syncs: Vec<(PathBuf, Option<StoreError>)> = dirs.keys().map(|d| (d.clone(), None)).collect();
        parallel(&mut dir_syncs, |(dir, error)| {
            if let Err(e) = sync_dir(dir) {
                *error = Some(StoreError::io("fsync", dir, e));
            }
        });
        for (dir, error) in dir_syncs {
            let Some(error) = error else { continue };
            for &i in &dirs[&dir] {
                if jobs[i].error.is_none() {
                    jobs[i].error = Some(error.duplicate());
                }
            }
        }

        // 4. Clean up and answer.
        for mut j in jobs {
            if j.error.is_some() {
                unlink_all(&j.links);
            }
            drop(j.job.file.take());
            if let Err(error) = fs::remove_file(&j.job.tmp_path) {
                // The message is safe (or refused) either way; a leftover is removed at next open.
                tracing::warn!(path = %j.job.tmp_path.display(), %error, "cannot remove tmp file");
            }
            let result = match j.error {
                Some(e) => {
                    tracing::warn!(id = %j.job.unique, error = %e, "delivery failed");
                    Err(e)
                }
                None => Ok(Delivered { id: j.job.unique, size: j.job.size, mailboxes: j.job.recipients.len() }),
            };
            // The receiver may be gone (client disconnected); the outcome stands regardless.
            let _ = j.job.reply.send(result);
        }
    }

    /// Puts the message into `<mbox>/new/<final_name>`; returns the new path.
    fn deliver_one(&self, tmp: &Path, mbox: &Path, unique: &str, final_name: &str) -> Result<PathBuf, StoreError> {
        let dest = mbox.join("new").join(final_name);
        let linked = match fs::hard_link(tmp, &dest) {
            // Usually the first message for this mailbox: make the Maildir and retry.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_maildir(mbox)?;
                fs::hard_link(tmp, &dest)
            }
            other => other,
        };
        match linked {
            Ok(()) => Ok(dest),
            Err(e) if e.raw_os_error() == Some(EXDEV) || e.kind() == io::ErrorKind::CrossesDevices => {
                copy_into(tmp, mbox, unique, &dest)?;
                Ok(dest)
            }
            Err(e) => Err(StoreError::io("link", &dest, e)),
        }
    }

    /// Creates `<mailboxes>/<domain>/<local>/{tmp,new,cur}` as needed, fsyncing each parent whose
    /// entries changed so the new directories survive a crash.
    fn ensure_maildir(&self, mbox: &Path) -> Result<(), StoreError> {
        let domain_dir = mbox.parent().unwrap_or(&self.mailboxes);
        create_dir_synced(domain_dir, &self.mailboxes)?;
        create_dir_synced(mbox, domain_dir)?;
        let mut created = false;
        for sub in ["tmp", "new", "cur"] {
            let dir = mbox.join(sub);
            match fs::create_dir(&dir) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("create", &dir, e)),
            }
        }
        if created {
            sync_dir(mbox).map_err(io_err("fsync", mbox))?;
        }
        Ok(())
    }
}

fn create_dir_synced(dir: &Path, parent: &Path) -> Result<(), StoreError> {
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent).map_err(io_err("fsync", parent)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io("create", dir, e)),
    }
}

/// Stage one: fsync each message file as it arrives, then hand it to the committer. Ends when the
/// store (every sender) is gone.
fn sync_loop(rx: &Mutex<mpsc::Receiver<Job>>, stage2: &Stage2) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(mut job) = next else { return };
        match sync_file(&mut job) {
            Ok(()) => stage2.submit(job),
            Err(e) => fail_job(job, e),
        }
    }
}

/// Stage two without a thread of its own: synced messages wait in `pending`, and whichever syncer
/// finds no batch running becomes the leader and commits everything pending, batch after batch, until
/// nothing is left. No hand-off to another thread, so a lone message is not delayed by a wake-up, and
/// messages that finish syncing while a batch runs still share the next batch's directory fsyncs.
struct Stage2 {
    committer: Committer,
    pending: Mutex<Vec<Job>>,
    leader: Mutex<()>,
}

impl Stage2 {
    fn submit(&self, job: Job) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(job);
        loop {
            let guard = match self.leader.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                // The leader re-checks `pending` after its last batch, so our job is seen.
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            loop {
                let batch: Vec<Job> = {
                    let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                    let n = p.len().min(MAX_BATCH);
                    p.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                self.committer.commit_batch(batch);
            }
            drop(guard);
            // A job pushed after our last look, whose syncer saw the lock still held, is ours to run.
            if self.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return;
            }
        }
    }
}

/// Answers a job that failed before any link was made, removing its tmp file.
fn fail_job(mut job: Job, error: StoreError) {
    drop(job.file.take());
    let _ = fs::remove_file(&job.tmp_path);
    tracing::warn!(id = %job.unique, %error, "delivery failed");
    let _ = job.reply.send(Err(error));
}

/// Flush the buffer and fsync the data (fdatasync also persists the size, which reading needs).
fn sync_file(job: &mut Job) -> Result<(), StoreError> {
    let path = &job.tmp_path;
    let Some(file) = job.file.as_mut() else {
        return Ok(());
    };
    file.flush().map_err(io_err("write", path))?;
    file.get_ref().sync_data().map_err(io_err("fsync", path))
}

/// The cross-device fallback: copy into the mailbox's own tmp/, fsync, then link into new/ (link,
/// not rename, so an existing name is never replaced) and drop the tmp name.
fn copy_into(tmp: &Path, mbox: &Path, unique: &str, dest: &Path) -> Result<(), StoreError> {
    let staged = mbox.join("tmp").join(unique);
    let result = (|| {
        let mut src = File::open(tmp).map_err(io_err("open", tmp))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
            .map_err(io_err("create", &staged))?;
        io::copy(&mut src, &mut dst).map_err(io_err("copy to", &staged))?;
        dst.sync_data().map_err(io_err("fsync", &staged))?;
        fs::hard_link(&staged, dest).map_err(io_err("link", dest))
    })();
    let _ = fs::remove_file(&staged);
    result
}

fn unlink_all(links: &[PathBuf]) {
    for link in links {
        if let Err(error) = fs::remove_file(link) {
            tracing::error!(path = %link.display(), %error, "cannot roll back a partial delivery");
        }
    }
}

/// Runs `f` over `items` on up to [`SYNC_THREADS`] threads (fsyncs of different files proceed in
/// parallel in the kernel and the device queue). Threads pull items from a shared queue, so if a
/// thread cannot be spawned the others, including the caller, still do every item.
fn parallel<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    let n = items.len();
    if n <= 1 {
        items.iter_mut().for_each(&f);
        return;
    }
    let queue = Mutex::new(items.iter_mut());
    let work = || loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        match next {
            Some(item) => f(item),
            None => break,
        }
    };
    std::thread::scope(|s| {
        for _ in 1..SYNC_THREADS.min(n) {
            if let Err(error) = std::thread::Builder::new().spawn_scoped(s, work) {
                tracing::warn!(%error, "cannot spawn fsync thread; continuing with fewer");
            }
        }
        work();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_sanitized_as_maildir_says() {
        assert_eq!(sanitize_hostname("mail.example"), "mail.example");
        assert_eq!(sanitize_hostname("a/b:c,d"), "a\\057b\\072c\\054d");
        assert_eq!(sanitize_hostname(" \n"), "localhost");
        assert_eq!(sanitize_hostname(".hidden"), "localhost.hidden");
    }

    #[test]
    fn unique_names_parse_back() {
        assert_eq!(parse_unique("1700000000.M123456P42Q7.host.example"), Some((42, "host.example")));
        assert_eq!(parse_unique("1700000000.M1P42Q7.h,S=12"), Some((42, "h,S=12")));
        assert_eq!(parse_unique("garbage"), None);
        assert_eq!(parse_unique("1.Mx.h"), None);
    }

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

    #[test]
    fn store_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        fn send<T: Send + Unpin>() {}
        check::<Store>();
        send::<Commit>();
        send::<Incoming>();
    }
}
