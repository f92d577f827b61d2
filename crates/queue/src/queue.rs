//! [`Queue`]: the files backend of the outbound queue, on `<data-dir>/queue/`.
//!
//! Every envelope is read at [`Queue::open`] (unreadable ones are moved to `corrupt/`) and kept in
//! memory; the disk is written on every state change before the call returns. One process (the
//! server) owns a queue directory's entries; other processes (`mailroom queue`) read it and leave
//! requests ([`crate::request`]).
//!
//! Calls that change the disk ([`Queue::record`], [`Queue::mark_delay_warned`], [`Queue::delete`],
//! [`Queue::open`], [`Queue::reload`]) block on fsync: from async code, run them on a blocking thread
//! (`tokio::task::spawn_blocking`). The others only touch memory and are cheap.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use mailroom_store::fsync;
use mailroom_store::Spool;

use crate::dirsync::DirSyncer;
use crate::envelope::{unix_secs, Attempt, Envelope, State, MAX_HISTORY};
use crate::error::{io_err, QueueError};
use crate::request::{self, Request, ALL, MAX_REQUESTS_PER_POLL};

/// Name of the queue directory inside the data directory.
pub const QUEUE_DIR: &str = "queue";
/// An envelope rewrite's staging file or an orphaned message older than this is a leftover of a
/// crash and removed at open; younger ones may belong to a commit or a rewrite in progress.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// Suffix of an envelope being rewritten (`env/<id>.tmp`).
const TMP_SUFFIX: &str = ".tmp";

/// The result of one attempt for one recipient, as the relay reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx from a next hop that takes responsibility for DSNs (or none were asked for).
    Delivered { reply: String, remote_mta: String },
    /// 2xx from a next hop that does not offer DSN, while the sender asked for NOTIFY=SUCCESS: the
    /// relay sends the "relayed" DSN itself (RFC 3461 §4.4).
    Relayed { reply: String, remote_mta: String },
    /// Temporary failure: due again at `retry_at` (see [`crate::next_retry`]).
    Deferred { reply: String, status: String, remote_mta: Option<String>, retry_at: SystemTime },
    /// Permanent failure or expiry. The caller has built (and committed) the DSN before recording.
    Bounced { reply: String, status: String, remote_mta: Option<String> },
}

/// What the queue holds at one moment, counted (for the metrics gauges): recipients not final by where
/// they stand, entries, and the oldest entry's arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Not attempted yet, and not in flight.
    pub pending: usize,
    /// Waiting for their next attempt, and not in flight.
    pub deferred: usize,
    /// An attempt under way.
    pub in_flight: usize,
    /// Entries (messages).
    pub messages: usize,
    /// The arrival of the oldest entry; `None` when the queue is empty.
    pub oldest: Option<SystemTime>,
}

/// An entry with recipients due for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub envelope: Envelope,
    /// Indexes into `envelope.rcpts` that are due and not in flight.
    pub due: Vec<usize>,
}

/// Recipients of one entry marked "in flight" (in memory only): no one else can claim them until the
/// claim is passed to [`Queue::record`] or dropped (then they are due again as they were).
pub struct Claim {
    id: String,
    rcpts: Vec<usize>,
    envelope: Envelope,
    release: Option<Arc<dyn Release>>,
}

/// How a claim gives its recipients back (backend-neutral, so a [`Claim`] is one type for every
/// backend).
pub trait Release: Send + Sync {
    fn release(&self, id: &str, rcpts: &[usize]);
}

impl Claim {
    /// A claim for a backend: `release` is called when it is dropped.
    pub fn new(id: String, rcpts: Vec<usize>, envelope: Envelope, release: Arc<dyn Release>) -> Claim {
        Claim { id, rcpts, envelope, release: Some(release) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The claimed recipients (indexes into `envelope().rcpts`).
    pub fn rcpts(&self) -> &[usize] {
        &self.rcpts
    }

    /// The envelope as it was when claimed.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("id", &self.id).field("rcpts", &self.rcpts).finish()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(r) = self.release.take() {
            r.release(&self.id, &self.rcpts);
        }
    }
}

/// The outbound queue on `<data-dir>/queue/`. Cheap to clone (all clones share one state): a process
/// opens it once and hands clones to the server and the relay (two `open`s would be two independent
/// views, each unaware of the other's claims).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("dir", &self.inner.dirs.root).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    msg: PathBuf,
    env: PathBuf,
    corrupt: PathBuf,
    requests: PathBuf,
}

struct Inner {
    dirs: Dirs,
    /// `env/`'s fsyncs, shared by the removals and rewrites that happen at the same time.
    env_sync: DirSyncer,
    state: Mutex<Memory>,
}

/// What the queue holds in memory. Each entry has its own lock, held while its envelope is rewritten,
/// so that two results for one entry are written one after the other (never one lost), while other
/// entries go on. Lock order: an entry's lock may be held while taking the `Memory` lock, never the
/// other way round (with the `Memory` lock held, entries are only `try_lock`ed).
#[derive(Default)]
struct Memory {
    entries: BTreeMap<String, Arc<Mutex<Envelope>>>,
    /// Recipients in flight, by entry id.
    in_flight: HashMap<String, HashSet<usize>>,
}

impl Memory {
    fn is_in_flight(&self, id: &str, rcpt: usize) -> bool {
        self.in_flight.get(id).is_some_and(|set| set.contains(&rcpt))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Release for Inner {
    fn release(&self, id: &str, rcpts: &[usize]) {
        let mut mem = lock(&self.state);
        if let Some(set) = mem.in_flight.get_mut(id) {
            for r in rcpts {
                set.remove(r);
            }
            if set.is_empty() {
                mem.in_flight.remove(id);
            }
        }
    }
}

/// Whether `id` can be a file name in the queue (a store message id is).
fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with('.') && !id.ends_with(TMP_SUFFIX) && !id.contains(['/', '\\', '\0', '\n', '\t'])
}

impl Queue {
    /// Opens (creating, each directory fsynced into its parent) `<data_dir>/queue/` and reads every
    /// envelope. An envelope that cannot be read, or whose message is missing, is moved with its
    /// message to `corrupt/` and logged; the others are loaded. Entries whose recipients are all final
    /// (their removal was cut by a crash) are removed, and so are stale leftovers (see
    /// [`STALE_AFTER`]).
    pub fn open(data_dir: &Path) -> Result<Queue, QueueError> {
        fsync::create_dir_all_synced(data_dir).map_err(io_err("create", data_dir))?;
        // Absolute and without `..`: the store writes these paths into its intent records.
        let data_dir = fs::canonicalize(data_dir).map_err(io_err("resolve", data_dir))?;
        let root = data_dir.join(QUEUE_DIR);
        let dirs = Dirs {
            msg: root.join("msg"),
            env: root.join("env"),
            corrupt: root.join("corrupt"),
            requests: root.join("requests"),
            root,
        };
        fsync::create_dir_all_synced(&dirs.root).map_err(io_err("create", &dirs.root))?;
        for d in [&dirs.msg, &dirs.env, &dirs.corrupt, &dirs.requests] {
            fsync::create_dir_synced(d).map_err(io_err("create", d))?;
        }
        let env_sync = DirSyncer::new(dirs.env.clone());
        let queue = Queue { inner: Arc::new(Inner { dirs, env_sync, state: Mutex::new(Memory::default()) }) };
        queue.reload()?;
        queue.remove_orphans();
        Ok(queue)
    }

    fn dirs(&self) -> &Dirs {
        &self.inner.dirs
    }

    /// What `Incoming::commit_with` needs to put this entry into the queue in the same batch as the
    /// local mailboxes.
    pub fn spool_for(&self, envelope: &Envelope) -> Spool {
        Spool {
            msg_dir: self.dirs().msg.clone(),
            sidecar_dir: self.dirs().env.clone(),
            name: envelope.id.clone(),
            // An Envelope is plain strings and numbers: TOML can always encode it.
            sidecar: envelope.to_toml().unwrap_or_default(),
        }
    }

    /// After a `commit_with` carrying [`Queue::spool_for`] resolved `Ok`: the entry is on disk; make it
    /// known (and so due at once).
    pub fn add_committed(&self, envelope: Envelope) {
        let mut mem = lock(&self.inner.state);
        mem.entries.insert(envelope.id.clone(), Arc::new(Mutex::new(envelope)));
    }

    /// The entries with a recipient due at `now` (pending, or deferred with `next_attempt <= now`) that
    /// is not in flight, oldest first. An entry whose envelope is being rewritten is left for the next
    /// call (its result is being recorded right now).
    pub fn due(&self, now: SystemTime) -> Vec<Entry> {
        let mem = lock(&self.inner.state);
        let mut out = Vec::new();
        for (id, slot) in &mem.entries {
            let Ok(env) = slot.try_lock() else { continue };
            let due: Vec<usize> =
                (0..env.rcpts.len()).filter(|&i| env.rcpts[i].is_due(now) && !mem.is_in_flight(id, i)).collect();
            if !due.is_empty() {
                out.push(Entry { envelope: env.clone(), due });
            }
        }
        out.sort_by_key(|e| e.envelope.arrival);
        out
    }

    /// When the next recipient not in flight is due (the scheduler sleeps until then or a wake-up);
    /// `None` if nothing waits. A pending recipient is due at once (the epoch).
    pub fn next_due(&self) -> Option<SystemTime> {
        let mem = lock(&self.inner.state);
        let mut next: Option<SystemTime> = None;
        for (id, slot) in &mem.entries {
            // Busy: a result is being recorded, the scheduler looks again when it is.
            let Ok(env) = slot.try_lock() else { continue };
            for (i, r) in env.rcpts.iter().enumerate() {
                if mem.is_in_flight(id, i) {
                    continue;
                }
                if let Some(t) = r.due_at() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next
    }

    /// Marks recipients `rcpts` of entry `id` in flight. `None` if the entry is gone, a recipient is
    /// final, out of range or already in flight (one attempt per recipient at a time).
    pub fn claim(&self, id: &str, rcpts: &[usize]) -> Option<Claim> {
        let slot = lock(&self.inner.state).entries.get(id)?.clone();
        // The claimed recipients are not in flight, so no result can change them meanwhile.
        let env = lock(&slot).clone();
        let mut mem = lock(&self.inner.state);
        let mut wanted: Vec<usize> = rcpts.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let is_free = |i: &usize| env.rcpts.get(*i).is_some_and(|r| !r.state.is_final()) && !mem.is_in_flight(id, *i);
        if wanted.is_empty() || !wanted.iter().all(is_free) {
            return None;
        }
        mem.in_flight.entry(id.to_string()).or_default().extend(wanted.iter().copied());
        drop(mem);
        let release: Arc<dyn Release> = self.inner.clone();
        Some(Claim::new(id.to_string(), wanted, env, release))
    }

    /// Records the results of a claim's attempt: applies each outcome to its recipient, then makes it
    /// durable before returning: the envelope rewritten atomically, or, when every recipient is final,
    /// the entry removed (envelope first, then message). Results for recipients the claim does not hold
    /// are ignored (logged). An entry deleted meanwhile (`mailroom queue delete`) stays deleted. On
    /// `Err` nothing changed, in memory or on disk, and the claim is released: the recipients are due
    /// again.
    pub fn record(&self, claim: Claim, results: Vec<(usize, Outcome)>) -> Result<(), QueueError> {
        let slot = lock(&self.inner.state).entries.get(&claim.id).cloned();
        let Some(slot) = slot else {
            tracing::info!(id = %claim.id, "result for an entry that was deleted meanwhile; ignored");
            return Ok(());
        };
        let mut env = lock(&slot);
        if !self.is_current(&claim.id, &slot) {
            tracing::info!(id = %claim.id, "result for an entry that was deleted meanwhile; ignored");
            return Ok(());
        }
        let mut next = env.clone();
        let now = SystemTime::now();
        for (i, outcome) in results {
            if !claim.rcpts.contains(&i) || i >= next.rcpts.len() {
                tracing::warn!(id = %claim.id, rcpt = i, "result for a recipient not in the claim; ignored");
                continue;
            }
            apply(&mut next, i, outcome, now);
        }
        if next.is_done() {
            self.remove_files(&claim.id)?;
            lock(&self.inner.state).entries.remove(&claim.id);
        } else {
            if !self.dirs().env.join(&claim.id).exists() {
                // Removed behind our back (`mailroom queue delete` without a server): keep it removed.
                drop(env);
                lock(&self.inner.state).entries.remove(&claim.id);
                tracing::info!(id = %claim.id, "entry removed from disk meanwhile; dropped");
                return Ok(());
            }
            self.write_envelope(&next)?;
        }
        *env = next;
        Ok(())
    }

    /// Sets `delay_warned` of the claimed recipients (after the relay sent their "delayed" DSN, which
    /// is sent once), durably.
    pub fn mark_delay_warned(&self, claim: &Claim, rcpts: &[usize]) -> Result<(), QueueError> {
        let Some(slot) = lock(&self.inner.state).entries.get(&claim.id).cloned() else { return Ok(()) };
        let mut env = lock(&slot);
        if !self.is_current(&claim.id, &slot) {
            return Ok(());
        }
        let mut next = env.clone();
        for &i in rcpts.iter().filter(|i| claim.rcpts.contains(i)) {
            if let Some(r) = next.rcpts.get_mut(i) {
                r.delay_warned = true;
            }
        }
        self.write_envelope(&next)?;
        *env = next;
        Ok(())
    }

    /// The message file of entry `id` (`queue/msg/<id>`).
    pub fn message_path(&self, id: &str) -> PathBuf {
        self.dirs().msg.join(id)
    }

    /// Every entry, oldest first.
    pub fn list(&self) -> Result<Vec<Envelope>, QueueError> {
        let slots: Vec<_> = lock(&self.inner.state).entries.values().cloned().collect();
        let mut out: Vec<Envelope> = slots.iter().map(|s| lock(s).clone()).collect();
        out.sort_by(|a, b| (a.arrival, &a.id).cmp(&(b.arrival, &b.id)));
        Ok(out)
    }

    /// One entry.
    pub fn get(&self, id: &str) -> Result<Envelope, QueueError> {
        let slot = lock(&self.inner.state).entries.get(id).cloned();
        let slot = slot.ok_or_else(|| QueueError::NoSuchEntry(id.to_string()))?;
        let env = lock(&slot).clone();
        Ok(env)
    }

    /// Counts what the queue holds, in memory and without copying an envelope. An entry whose envelope is
    /// being rewritten at that moment counts as a message but not its recipients (never waited for).
    pub fn census(&self) -> Census {
        let mem = lock(&self.inner.state);
        let mut c = Census { messages: mem.entries.len(), ..Census::default() };
        for (id, slot) in &mem.entries {
            let Ok(env) = slot.try_lock() else { continue };
            let arrival = env.arrival_time();
            c.oldest = Some(c.oldest.map_or(arrival, |o| o.min(arrival)));
            for (i, r) in env.rcpts.iter().enumerate() {
                match r.state {
                    _ if r.state.is_final() => {}
                    _ if mem.is_in_flight(id, i) => c.in_flight += 1,
                    State::Deferred => c.deferred += 1,
                    _ => c.pending += 1,
                }
            }
        }
        c
    }

    /// Leaves a request for the server (`queue/requests/<id>.<what>`). `id` may be [`request::ALL`] for
    /// a flush of everything. The id must be a valid queue id; whether the entry exists is the
    /// caller's check.
    pub fn request(&self, id: &str, what: Request) -> Result<(), QueueError> {
        if !is_valid_id(id) {
            return Err(QueueError::InvalidId(id.to_string()));
        }
        let path = self.dirs().requests.join(format!("{id}.{what}"));
        File::create(&path).map_err(io_err("create", &path))?;
        Ok(())
    }

    /// The server's pick-up: every request file (at most [`MAX_REQUESTS_PER_POLL`]), removed as it is
    /// read. Unknown file names are removed and logged. The caller acts: [`Queue::flush`],
    /// [`Queue::delete`], or for a bounce: claim the recipients not final, build the DSN, record
    /// [`Outcome::Bounced`].
    pub fn take_requests(&self) -> Vec<(String, Request)> {
        let Ok(dir) = fs::read_dir(&self.dirs().requests) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in dir.flatten().take(MAX_REQUESTS_PER_POLL) {
            let name = entry.file_name();
            let parsed = name.to_str().and_then(request::parse_file_name);
            if let Err(error) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "cannot remove a queue request");
                continue;
            }
            match parsed {
                Some(req) => out.push(req),
                None => tracing::warn!(path = %entry.path().display(), "ignored an unknown queue request"),
            }
        }
        out
    }

    /// Makes the deferred recipients of `id` (or of every entry, for [`request::ALL`]) due now. In
    /// memory only: a restart would go back to the stored times, which is harmless.
    pub fn flush(&self, id: &str) -> Result<(), QueueError> {
        let mem = lock(&self.inner.state);
        let slots: Vec<_> = if id == ALL {
            mem.entries.values().cloned().collect()
        } else {
            vec![mem.entries.get(id).cloned().ok_or_else(|| QueueError::NoSuchEntry(id.to_string()))?]
        };
        drop(mem);
        for slot in slots {
            for r in lock(&slot).rcpts.iter_mut().filter(|r| r.state == State::Deferred) {
                r.next_attempt = 0;
            }
        }
        Ok(())
    }

    /// Removes entry `id` without a bounce (envelope first, then message). An attempt in flight for it
    /// finishes, and its result is dropped.
    pub fn delete(&self, id: &str) -> Result<(), QueueError> {
        if !is_valid_id(id) {
            return Err(QueueError::InvalidId(id.to_string()));
        }
        let slot = lock(&self.inner.state).entries.get(id).cloned();
        let Some(slot) = slot else {
            if !self.dirs().env.join(id).exists() {
                return Err(QueueError::NoSuchEntry(id.to_string()));
            }
            return self.remove_files(id);
        };
        // Held while removing, so that a result being recorded cannot write the envelope back.
        let _writing = lock(&slot);
        lock(&self.inner.state).entries.remove(id);
        self.remove_files(id)
    }

    /// Whether `slot` (whose lock the caller holds) is still the entry `id`, not deleted meanwhile.
    fn is_current(&self, id: &str, slot: &Arc<Mutex<Envelope>>) -> bool {
        lock(&self.inner.state).entries.get(id).is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Reads every envelope again (entries already known keep their in-memory state), quarantining
    /// unreadable ones.
    pub fn reload(&self) -> Result<(), QueueError> {
        let dirs = self.dirs();
        let listing = fs::read_dir(&dirs.env).map_err(io_err("read", &dirs.env))?;
        let mut found = Vec::new();
        for entry in listing.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                self.quarantine_name(&entry.file_name().to_string_lossy(), &entry.path(), "name is not UTF-8");
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                remove_if_stale(&entry.path());
                continue;
            }
            if lock(&self.inner.state).entries.contains_key(&name) {
                continue;
            }
            match self.read_envelope(&name) {
                Ok(env) if env.is_done() => {
                    // Its removal was cut short by a crash: finish it.
                    self.remove_files(&name)?;
                }
                Ok(env) => found.push(env),
                Err(reason) => self.quarantine(&name, &reason),
            }
        }
        let mut mem = lock(&self.inner.state);
        for env in found {
            mem.entries.entry(env.id.clone()).or_insert_with(|| Arc::new(Mutex::new(env)));
        }
        Ok(())
    }

    /// Reads and checks `env/<name>` and that its message exists.
    fn read_envelope(&self, name: &str) -> Result<Envelope, String> {
        let path = self.dirs().env.join(name);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read: {e}"))?;
        let env = Envelope::from_toml(&bytes)?;
        if env.id != name {
            return Err(format!("its id {:?} is not its file name", env.id));
        }
        if !self.message_path(name).is_file() {
            return Err("its message file is missing".into());
        }
        Ok(env)
    }

    /// Moves `env/<id>` and `msg/<id>` to `corrupt/<id>.env` and `corrupt/<id>.msg`, logged. The queue
    /// goes on without them; an operator can look at them.
    fn quarantine(&self, id: &str, reason: &str) {
        self.quarantine_name(id, &self.dirs().env.join(id), reason);
    }

    fn quarantine_name(&self, id: &str, env_path: &Path, reason: &str) {
        let dirs = self.dirs();
        let safe = id.replace(['/', '\\'], "_");
        tracing::error!(id = %safe, %reason, dir = %dirs.corrupt.display(), "unreadable queue entry moved aside");
        for (from, to) in [(env_path.to_path_buf(), format!("{safe}.env")), (dirs.msg.join(id), format!("{safe}.msg"))]
        {
            match fs::rename(&from, dirs.corrupt.join(&to)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::error!(path = %from.display(), error = %e, "cannot move a corrupt queue file aside")
                }
                _ => {}
            }
        }
        for d in [&dirs.corrupt, &dirs.env, &dirs.msg] {
            let _ = fsync::sync_dir(d);
        }
    }

    /// Messages without an envelope that are older than [`STALE_AFTER`]: the removal of a finished
    /// entry cut by a crash (the envelope goes first). Younger ones may be a commit in progress.
    fn remove_orphans(&self) {
        let Ok(listing) = fs::read_dir(&self.dirs().msg) else { return };
        for entry in listing.flatten() {
            if !self.dirs().env.join(entry.file_name()).exists() {
                remove_if_stale(&entry.path());
            }
        }
    }

    /// Writes `env/<id>.tmp`, fdatasyncs it, renames it over `env/<id>` and fsyncs `env/`: a crash at
    /// any point leaves the old or the new envelope, whole.
    fn write_envelope(&self, env: &Envelope) -> Result<(), QueueError> {
        let dir = &self.dirs().env;
        let path = dir.join(&env.id);
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", env.id));
        let bytes = env.to_toml()?;
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(&bytes).map_err(io_err("write", &tmp))?;
            fsync::sync_data(&f).map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
            self.inner.env_sync.sync().map_err(io_err("fsync", dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes an entry's files: the envelope first (so that an envelope never names a missing
    /// message), then the message; `env/` is fsynced so a finished entry does not come back.
    fn remove_files(&self, id: &str) -> Result<(), QueueError> {
        let dirs = self.dirs();
        let env = dirs.env.join(id);
        match fs::remove_file(&env) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(QueueError::io("remove", &env, e)),
            _ => {}
        }
        self.inner.env_sync.sync().map_err(io_err("fsync", &dirs.env))?;
        let msg = dirs.msg.join(id);
        match fs::remove_file(&msg) {
            // The envelope is gone: a leftover message is removed as an orphan at a later open.
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %msg.display(), error = %e, "cannot remove a finished message")
            }
            _ => {}
        }
        Ok(())
    }
}

/// Applies one outcome to recipient `i`, with a history line (the oldest dropped past
/// [`MAX_HISTORY`]).
fn apply(env: &mut Envelope, i: usize, outcome: Outcome, now: SystemTime) {
    let r = &mut env.rcpts[i];
    r.attempts = r.attempts.saturating_add(1);
    let (state, reply) = match outcome {
        Outcome::Delivered { reply, remote_mta } => {
            r.status = Some(status_of(&reply).unwrap_or("2.0.0").to_string());
            r.remote_mta = Some(remote_mta);
            (State::Delivered, reply)
        }
        Outcome::Relayed { reply, remote_mta } => {
            r.status = Some(status_of(&reply).unwrap_or("2.0.0").to_string());
            r.remote_mta = Some(remote_mta);
            (State::Relayed, reply)
        }
        Outcome::Deferred { reply, status, remote_mta, retry_at } => {
            r.status = Some(status);
            r.remote_mta = remote_mta.or(r.remote_mta.take());
            r.next_attempt = unix_secs(retry_at);
            (State::Deferred, reply)
        }
        Outcome::Bounced { reply, status, remote_mta } => {
            r.status = Some(status);
            r.remote_mta = remote_mta.or(r.remote_mta.take());
            (State::Bounced, reply)
        }
    };
    r.state = state;
    r.last_reply = Some(reply.clone());
    env.history.push(Attempt { rcpt: i, at: unix_secs(now), state, reply });
    if env.history.len() > MAX_HISTORY {
        let excess = env.history.len() - MAX_HISTORY;
        env.history.drain(..excess);
    }
}

/// The RFC 3463 status in a reply (`250 2.0.0 Ok` -> `2.0.0`), if any.
fn status_of(reply: &str) -> Option<&str> {
    let second = reply.split_whitespace().nth(1)?;
    let parts: Vec<&str> = second.split('.').collect();
    let is_status = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..].iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    is_status.then_some(second)
}

/// Removes `path` if it was last modified more than [`STALE_AFTER`] ago.
fn remove_if_stale(path: &Path) {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age > STALE_AFTER {
        match fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a stale queue leftover"),
            Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove a stale queue leftover"),
        }
    }
}
