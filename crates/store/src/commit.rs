//! Making received messages durable in their mailboxes: the group commit.
//!
//! Two stages that overlap, so one batch's directory syncs run while the next messages' files sync:
//! 1. a few syncer threads flush and fdatasync each message file as it arrives (fdatasyncs issued in
//!    parallel share the file system's journal commits);
//! 2. the syncer that finds no batch running becomes the leader ([`Stage2`]) and commits every synced
//!    message, a batch at a time: if the batch holds a message for more than one mailbox it first
//!    writes the batch's intent record and makes it durable ([`crate::intent`]); then it hard-links
//!    each file into `new/<unique>,S=<size>` of every recipient (copying only across devices),
//!    creating missing Maildirs and fsyncing their parents; fsyncs each distinct `new/` directory
//!    once; unlinks the tmp files, retires the record and answers every waiter.
//!
//! A commit may carry a [`Spool`] (a queue entry: the message linked into the queue's msg/ directory
//! and an envelope sidecar). The syncer writes and fdatasyncs the sidecar into `<data-dir>/tmp/`
//! beside the message; the leader links the message into the spool's msg directory after the
//! mailboxes and the sidecar into place last, both covered by the intent record; the spool's two
//! directories join the batch's shared directory fsyncs. A message with a spool always gets a record.
//!
//! A message is delivered to all its recipients or to none: a failure removes the links already made
//! for that message and its tmp file and resolves to `Err`; a crash mid-batch is completed or rolled
//! back at the next open from the intent record ([`Committer::recover`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::address::MailboxId;
use crate::error::{io_err, StoreError, EXDEV};
use crate::fsync::{self, sync_dir};
use crate::intent::{IntentEntry, IntentLog, SpoolIntent};
use crate::spool::{staged_sidecar, Spool};

/// Most commits answered by one batch (bounds the latency of the first in the batch).
pub const MAX_BATCH: usize = 256;
/// Threads fsyncing message files in parallel (stage one, before the committer links them).
pub const SYNC_THREADS: usize = 4;

/// What a successful commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The Maildir unique name (the file is `new/<id>,S=<size>` in each mailbox).
    pub id: String,
    pub size: u64,
    /// Distinct mailboxes the message is now in.
    pub mailboxes: usize,
}

/// One message handed to the committer.
pub(crate) struct Job {
    pub(crate) file: Option<BufWriter<File>>,
    pub(crate) tmp_path: PathBuf,
    pub(crate) unique: String,
    pub(crate) size: u64,
    pub(crate) recipients: Vec<MailboxId>,
    /// The queue entry to make in the same batch (already validated).
    pub(crate) spool: Option<Spool>,
    pub(crate) reply: oneshot::Sender<Result<Delivered, StoreError>>,
}

/// A job's progress through a batch.
struct InFlight {
    job: Job,
    /// Links made into recipients' new/ directories (removed again if the message fails).
    links: Vec<PathBuf>,
    error: Option<StoreError>,
}

impl Job {
    /// Whether a crash between its links could leave it half done: more than one mailbox, or a
    /// spool (the message link and the sidecar are two operations).
    fn is_multi(&self) -> bool {
        self.recipients.len() > 1 || self.spool.is_some()
    }

    /// Where the syncer stages the sidecar (beside the message file).
    fn staged_sidecar(&self) -> PathBuf {
        staged_sidecar(self.tmp_path.parent().unwrap_or(Path::new(".")), &self.unique)
    }
}

impl InFlight {
    fn final_name(&self) -> String {
        format!("{},S={}", self.job.unique, self.job.size)
    }

    /// Its line in the batch's intent record.
    fn intent(&self) -> IntentEntry {
        IntentEntry {
            tmp_name: self.job.unique.clone(),
            final_name: self.final_name(),
            mailboxes: self.job.recipients.clone(),
            spool: self.job.spool.as_ref().map(|sp| SpoolIntent {
                name: sp.name.clone(),
                msg_dir: sp.msg_dir.clone(),
                sidecar_dir: sp.sidecar_dir.clone(),
            }),
        }
    }
}

/// Links synced messages into their mailboxes, a batch at a time.
pub(crate) struct Committer {
    pub(crate) mailboxes: PathBuf,
    /// `<data-dir>/tmp/`, where the message files are (for recovery).
    pub(crate) tmp: PathBuf,
    /// Modes and group of the directories it creates ([`crate::modes`]).
    pub(crate) modes: crate::modes::Modes,
}

impl Committer {
    fn commit_batch(&self, batch: Vec<Job>, log: &mut IntentLog) {
        let mut jobs: Vec<InFlight> =
            batch.into_iter().map(|job| InFlight { job, links: Vec::new(), error: None }).collect();

        // 1. The files' data is already on disk: the syncers did it before handing them over.
        // 2. One durable intent record for every message that goes to more than one mailbox.
        self.arm_intent(&mut jobs, log);
        // 3. Link into every recipient's new/ (metadata only: cheap, done in order).
        for j in jobs.iter_mut().filter(|j| j.error.is_none()) {
            let final_name = j.final_name();
            for rcpt in &j.job.recipients {
                match self.deliver_one(&j.job.tmp_path, &rcpt.dir(&self.mailboxes), &j.job.unique, &final_name) {
                    Ok(link) => j.links.push(link),
                    Err(e) => {
                        j.error = Some(e);
                        break;
                    }
                }
            }
            if j.error.is_none() {
                if let Some(spool) = &j.job.spool {
                    // Last, so that a sidecar in place means every link of the message was made.
                    match link_spool(&j.job.tmp_path, &j.job.staged_sidecar(), spool, &mut j.links) {
                        Ok(()) => {}
                        Err(e) => j.error = Some(e),
                    }
                }
            }
            if j.error.is_some() {
                unlink_all(&j.links);
                j.links.clear();
            }
        }
        // 4. Each distinct new/ directory fsynced once for the whole batch.
        self.sync_new_dirs(&mut jobs);
        // 5. Clean up, retire the record, answer.
        let mut replies = Vec::with_capacity(jobs.len());
        for mut j in jobs {
            if j.error.is_some() {
                unlink_all(&j.links);
            }
            drop(j.job.file.take());
            if j.job.spool.is_some() {
                let _ = fs::remove_file(j.job.staged_sidecar());
            }
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
            replies.push((j.job.reply, result));
        }
        if let Err(error) = log.retire() {
            tracing::warn!(path = %log.path().display(), %error, "cannot retire the commit intent record");
        }
        for (reply, result) in replies {
            // The receiver may be gone (client disconnected); the outcome stands regardless.
            let _ = reply.send(result);
        }
    }

    /// Writes and syncs the batch's intent record when a message in it has several mailboxes or a
    /// spool (one link is atomic by itself). If that fails, those messages fail: without the record a
    /// crash could leave them in some places only. With spools, `<data-dir>/tmp/` is fsynced first, so
    /// that the staged sidecars the record relies on cannot vanish in a power cut while it survives.
    fn arm_intent(&self, jobs: &mut [InFlight], log: &mut IntentLog) {
        let entries: Vec<IntentEntry> =
            jobs.iter().filter(|j| j.error.is_none() && j.job.is_multi()).map(InFlight::intent).collect();
        if entries.is_empty() {
            return;
        }
        let armed = if entries.iter().any(|e| e.spool.is_some()) {
            sync_dir(&self.tmp).map_err(|e| StoreError::io("fsync", &self.tmp, e))
        } else {
            Ok(())
        }
        .and_then(|()| log.arm(&entries).map_err(|e| StoreError::io("write the intent record", log.path(), e)));
        if let Err(error) = armed {
            for j in jobs.iter_mut().filter(|j| j.error.is_none() && j.job.is_multi()) {
                j.error = Some(error.duplicate());
            }
        }
    }

    /// fsyncs each distinct new/ directory that got a link, in parallel; a failure fails every message
    /// linked there.
    fn sync_new_dirs(&self, jobs: &mut [InFlight]) {
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
    }

    /// Finishes the batches a crashed process left half done (the entries of its intent records):
    /// each message is linked into every mailbox still missing it, from its tmp file or, if that is
    /// gone, from a link that exists; if that fails for any mailbox, every link of the message is
    /// removed instead. Either way the message ends in all of its mailboxes or in none. Never
    /// acknowledged, so at worst the sender's retry makes a duplicate (never a partial delivery).
    ///
    /// With a spool: a sidecar in place was the last step of the batch, so the commit may have been
    /// acknowledged and the queue may since have worked on it: it is completed where possible and
    /// never rolled back. Neither the sidecar nor its staged copy: the batch finished (acknowledged
    /// and the entry since delivered and removed, or failed and cleaned up): nothing is touched.
    /// Only the staged copy: never acknowledged; completed, or rolled back on failure.
    pub(crate) fn recover(&self, entries: &[IntentEntry]) {
        for e in entries {
            self.recover_one(e);
        }
    }

    fn recover_one(&self, e: &IntentEntry) {
        let tmp = self.tmp.join(&e.tmp_name);
        let staged = staged_sidecar(&self.tmp, &e.tmp_name);
        let spool = e.spool.as_ref().map(|sp| (sp.msg_dir.join(&sp.name), sp.sidecar_dir.join(&sp.name)));
        let had_sidecar = spool.as_ref().is_some_and(|(_, sidecar)| sidecar.exists());
        if spool.is_some() && !had_sidecar && !staged.exists() {
            tracing::info!(id = %e.tmp_name, "an interrupted batch had finished this message");
            let _ = fs::remove_file(&tmp);
            return;
        }
        let mut dests: Vec<PathBuf> =
            e.mailboxes.iter().map(|m| m.dir(&self.mailboxes).join("new").join(&e.final_name)).collect();
        dests.extend(spool.iter().map(|(msg, _)| msg.clone()));
        let source = if tmp.exists() { Some(tmp.clone()) } else { dests.iter().find(|d| d.exists()).cloned() };
        let result = match &source {
            // never linked anywhere, or already rolled back
            None if spool.is_none() => return,
            None => Err(StoreError::NoSuchMessage(e.tmp_name.clone())),
            Some(source) => self.complete(e, source, &staged),
        };
        if let Some((_, sidecar)) = &spool {
            dests.push(sidecar.clone());
        }
        match &result {
            Ok(()) => tracing::info!(id = %e.tmp_name, places = dests.len(), "completed an interrupted delivery"),
            Err(err) if had_sidecar => {
                tracing::error!(id = %e.tmp_name, error = %err, "cannot complete an interrupted delivery that may have been acknowledged; left as it is")
            }
            Err(err) => {
                tracing::warn!(id = %e.tmp_name, error = %err, "rolled back an interrupted delivery");
                for d in &dests {
                    match fs::remove_file(d) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            tracing::error!(path = %d.display(), error = %e, "cannot roll back")
                        }
                        _ => {}
                    }
                }
            }
        }
        let dirs: BTreeSet<&Path> = dests.iter().filter_map(|d| d.parent()).collect();
        for dir in dirs {
            if let Err(error) = sync_dir(dir) {
                tracing::warn!(dir = %dir.display(), %error, "cannot fsync after recovery");
            }
        }
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&staged);
    }

    /// Makes every link of an intent entry that is missing, from `source`; the sidecar last.
    fn complete(&self, e: &IntentEntry, source: &Path, staged: &Path) -> Result<(), StoreError> {
        for m in &e.mailboxes {
            if !m.dir(&self.mailboxes).join("new").join(&e.final_name).exists() {
                self.deliver_one(source, &m.dir(&self.mailboxes), &e.tmp_name, &e.final_name)?;
            }
        }
        let Some(sp) = &e.spool else { return Ok(()) };
        let msg = sp.msg_dir.join(&sp.name);
        if !msg.exists() {
            fs::hard_link(source, &msg).map_err(io_err("link", &msg))?;
        }
        let sidecar = sp.sidecar_dir.join(&sp.name);
        if !sidecar.exists() {
            fs::hard_link(staged, &sidecar).map_err(io_err("link", &sidecar))?;
        }
        Ok(())
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
    /// entries changed so the new directories survive a crash before anything is linked into them.
    /// A Maildir++ folder (`<mbox>/.<name>`: local parts never start with a dot) gets its inbox's
    /// Maildir first, and the empty `maildirfolder` file Maildir++ readers (Dovecot's quota) expect.
    fn ensure_maildir(&self, mbox: &Path) -> Result<(), StoreError> {
        use crate::modes::DirKind;
        let modes = &self.modes;
        let parent = mbox.parent().unwrap_or(&self.mailboxes);
        let is_folder = mbox.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        if is_folder {
            self.ensure_maildir(parent)?;
        } else {
            fsync::create_dir_synced_with(parent, modes, DirKind::Traverse).map_err(io_err("create", parent))?;
        }
        fsync::create_dir_synced_with(mbox, modes, DirKind::Mailbox).map_err(io_err("create", mbox))?;
        let mut created = false;
        if is_folder {
            let marker = mbox.join("maildirfolder");
            match OpenOptions::new().write(true).create_new(true).mode(modes.message_mode()).open(&marker) {
                Ok(_) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("create", &marker, e)),
            }
        }
        for sub in ["tmp", "new", "cur"] {
            let dir = mbox.join(sub);
            created |= modes.create_dir(&dir, DirKind::Mailbox).map_err(io_err("create", &dir))?;
        }
        if created {
            sync_dir(mbox).map_err(io_err("fsync", mbox))?;
        }
        Ok(())
    }
}

/// Starts the syncer threads; the returned sender is how messages reach them. They end when every
/// sender is gone, and the last one drops the intent log (removing its file: nothing to recover).
pub(crate) fn start(committer: Committer, log: IntentLog) -> io::Result<mpsc::Sender<Job>> {
    let (tx, sync_rx) = mpsc::channel::<Job>();
    let sync_rx = Arc::new(Mutex::new(sync_rx));
    let stage2 = Arc::new(Stage2 { committer, pending: Mutex::new(Vec::new()), leader: Mutex::new(log) });
    for i in 0..SYNC_THREADS {
        let rx = sync_rx.clone();
        let stage2 = stage2.clone();
        std::thread::Builder::new().name(format!("mailroom-sync-{i}")).spawn(move || sync_loop(&rx, &stage2))?;
    }
    Ok(tx)
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
    /// Held by the leader; the intent log is the leader's alone.
    leader: Mutex<IntentLog>,
}

impl Stage2 {
    fn submit(&self, job: Job) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push(job);
        loop {
            let mut guard = match self.leader.try_lock() {
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
                self.committer.commit_batch(batch, &mut guard);
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
    if job.spool.is_some() {
        let _ = fs::remove_file(job.staged_sidecar());
    }
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
    fsync::sync_data(file.get_ref()).map_err(io_err("fsync", path))?;
    if let Some(spool) = &job.spool {
        write_synced(&job.staged_sidecar(), &spool.sidecar)?;
    }
    Ok(())
}

/// Creates `path` (never replacing anything) with `bytes` and fdatasyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    fsync::sync_data(&file).map_err(io_err("fsync", path))
}

/// Links the message into the spool's msg directory, then the staged sidecar into place (a link, not
/// a rename: an existing name is never replaced). Both go into `links`, so a failure removes them
/// with the mailbox links and the batch fsyncs their directories.
fn link_spool(tmp: &Path, staged: &Path, spool: &Spool, links: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    let msg = spool.msg_path();
    fs::hard_link(tmp, &msg).map_err(io_err("link", &msg))?;
    links.push(msg);
    let sidecar = spool.sidecar_path();
    fs::hard_link(staged, &sidecar).map_err(io_err("link", &sidecar))?;
    links.push(sidecar);
    Ok(())
}

/// The cross-device fallback: copy into the mailbox's own tmp/, fsync, then link into new/ (link,
/// not rename, so an existing name is never replaced) and drop the tmp name.
fn copy_into(tmp: &Path, mbox: &Path, unique: &str, dest: &Path) -> Result<(), StoreError> {
    let staged = mbox.join("tmp").join(unique);
    let result = (|| {
        let mut src = File::open(tmp).map_err(io_err("open", tmp))?;
        // The copy keeps the original's mode (0600, or 0640 with a store group); its group comes from
        // the Maildir's tmp/ (set-group-ID with a store group).
        let mode = src.metadata().map_err(io_err("stat", tmp))?.permissions().mode() & 0o777;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&staged)
            .map_err(io_err("create", &staged))?;
        io::copy(&mut src, &mut dst).map_err(io_err("copy to", &staged))?;
        fsync::sync_data(&dst).map_err(io_err("fsync", &staged))?;
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
