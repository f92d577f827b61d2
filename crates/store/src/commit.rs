//! Making received messages durable: the group commit through the journal ([`crate::journal`]).
//!
//! Two stages, each on its own thread:
//! 1. the leader takes every commit waiting (up to [`MAX_BATCH`]), checks that each recipient's
//!    Maildir can take it (made when missing; `new/` writable; room on its file system when that is
//!    another one), appends one journal record per message (the message bytes read from the write
//!    buffer, or back from the tmp file, which is in the page cache), fdatasyncs the journal segment
//!    ONCE; then it writes each file out (page cache), hard-links it into `new/<unique>,S=<size>` of
//!    every recipient (and the queue entry into place) and answers every waiter: that is the 250, and
//!    a reader sees the message in `new/` from then on, whole (it was complete before its first name);
//! 2. the background stage then fdatasyncs the message files (in parallel: the syncs share the file
//!    system's journal commits), fsyncs each distinct directory that got a name once, removes the tmp
//!    files and only then retires the records (and syncs the retire marks). The leader makes names
//!    only under [`Shared::gate`], which stage 2 holds while it syncs what was named since its round
//!    began and fsyncs the directories: so no directory fsync makes a name durable before its data,
//!    and after a power cut no `new/` holds a partial file (a name that a cut lost is made again by the
//!    replay at the next open).
//!
//! All or none across recipients: the record names every mailbox and nothing is linked before it is
//! durable; a crash after the 250 is completed from the journal at the next open
//! (`crate::journal_replay`). A failure before the journal sync answers `Err` and leaves nothing (its
//! record is retired, its tmp file removed). A failure of stage 2 after the 250 is logged and retried
//! (the record stays live, so a restart replays it). Intent records of an older version are still
//! completed or rolled back at open ([`Committer::recover`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::address::MailboxId;
use crate::error::{io_err, StoreError, EXDEV};
use crate::fsync::{self, sync_dir};
use crate::intent::IntentEntry;
use crate::journal::{self, Appender, Journal, Place, RecordMeta, HEADER_LEN, SEGMENT_SIZE, WRITE_CHUNK};
use crate::spool::{staged_sidecar, Spool};
use crate::sync_pool::SyncPool;

/// Most commits answered by one batch (bounds the latency of the first in the batch).
pub const MAX_BATCH: usize = 256;
/// Threads fsyncing message files and directories in parallel (stage 2).
pub const SYNC_THREADS: usize = 4;
/// How soon stage 2 tries again a message it could not place after its 250 (the record stays live).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Free bytes a Maildir on another file system must have beyond the message (its directory entry,
/// the copy's blocks rounding up) for the leader to accept the message for it.
pub const CROSS_DEVICE_MARGIN: u64 = 64 * 1024;

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
    /// Taken when answered (a queue entry's answer waits for stage 2).
    pub(crate) reply: Option<oneshot::Sender<Result<Delivered, StoreError>>>,
}

impl Job {
    /// Where stage 2 writes a queue entry's sidecar before linking it into place.
    fn staged_sidecar(&self) -> PathBuf {
        staged_sidecar(self.tmp_path.parent().unwrap_or(Path::new(".")), &self.unique)
    }
}

/// Links synced messages into their mailboxes; recovers old intent records; shared by the leader
/// (checks before a record), the background stage and replay.
pub(crate) struct Committer {
    pub(crate) mailboxes: PathBuf,
    /// `<data-dir>/tmp/`, where the message files are (for recovery).
    pub(crate) tmp: PathBuf,
    /// Modes and group of the directories it creates ([`crate::modes`]).
    pub(crate) modes: crate::modes::Modes,
}

impl Committer {
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
    pub(crate) fn deliver_one(
        &self,
        tmp: &Path,
        mbox: &Path,
        unique: &str,
        final_name: &str,
    ) -> Result<PathBuf, StoreError> {
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
            // From an earlier try of the same message (unique names are never reused).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dest),
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
    pub(crate) fn ensure_maildir(&self, mbox: &Path) -> Result<(), StoreError> {
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

/// One message whose record is durable in the journal, on its way through stage 2.
struct Journaled {
    job: Job,
    place: Place,
    /// Stage 2 progress, kept when the message is retried.
    is_synced: bool,
    /// Its names are made (every mailbox, and the queue entry): by the leader before the answer, or
    /// by stage 2 when that failed.
    is_linked: bool,
    /// The staged sidecar of its queue entry is written (not yet synced).
    is_staged: bool,
    /// Directories that got a name of it (fsynced once per round).
    dirs: Vec<PathBuf>,
    error: Option<StoreError>,
}

impl Journaled {
    fn delivered(&self) -> Delivered {
        Delivered { id: self.job.unique.clone(), size: self.job.size, mailboxes: self.job.recipients.len() }
    }
}

/// The running pipeline. Dropped with the last sender (the store gone): waits for both stages to
/// finish, so that a short-lived process (the CLI) has placed what it committed before it exits.
pub(crate) struct Workers(Vec<JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for handle in self.0.drain(..) {
            let _ = handle.join();
        }
    }
}

/// How far the pipeline got: commits answered after the journal sync, and those since placed.
#[derive(Default)]
pub(crate) struct Progress {
    counts: Mutex<(u64, u64)>,
    placed: std::sync::Condvar,
}

impl Progress {
    fn add_journaled(&self, n: usize) {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).0 += n as u64;
    }

    fn add_placed(&self, n: usize) {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).1 += n as u64;
        self.placed.notify_all();
    }

    /// Waits until every commit journaled before the call is placed, at most `limit`.
    pub(crate) fn wait_placed(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let target = counts.0;
        while counts.1 < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            counts = self.placed.wait_timeout(counts, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

/// What both stages share.
struct Shared {
    progress: Arc<Progress>,
    committer: Committer,
    journal: Journal,
    /// Device of `<data-dir>/tmp/`, and per Maildir whether it is on another one (cached: a Maildir
    /// moved to another file system while the server runs is still handled, by stage 2's copy).
    tmp_dev: u64,
    cross_device: Mutex<HashMap<PathBuf, bool>>,
    /// Held by the leader while it makes a batch's names and by stage 2 while it fsyncs directories
    /// (see [`Shared::settle`]): a name reaches a durable directory only after its file's data.
    gate: Mutex<()>,
}

/// Maildirs whose device [`Shared`] remembers at most (then it starts over).
const DEVICE_CACHE: usize = 10_000;

/// Starts the leader and stage 2; the returned sender is how commits reach them.
pub(crate) fn start(
    committer: Committer,
    journal: Journal,
    progress: Arc<Progress>,
) -> io::Result<(mpsc::Sender<Job>, Workers)> {
    let tmp_dev = fs::metadata(&committer.tmp)?.dev();
    let shared = Arc::new(Shared {
        progress,
        committer,
        journal,
        tmp_dev,
        cross_device: Mutex::new(HashMap::new()),
        gate: Mutex::new(()),
    });
    let (tx, rx) = mpsc::channel::<Job>();
    let (settle_tx, settle_rx) = mpsc::channel::<Vec<Journaled>>();
    let s = shared.clone();
    let settle =
        std::thread::Builder::new().name("mailroom-settle".into()).spawn(move || settle_loop(&settle_rx, &s))?;
    let leader = std::thread::Builder::new()
        .name("mailroom-journal".into())
        .spawn(move || leader_loop(&rx, &shared, &settle_tx))?;
    Ok((tx, Workers(vec![leader, settle])))
}

/// Stage 1: batches of waiting commits into the journal, one sync each. Ends when every sender is gone.
fn leader_loop(rx: &mpsc::Receiver<Job>, shared: &Shared, settle: &mpsc::Sender<Vec<Journaled>>) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        while waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        let mut journaled = shared.write_batch(&mut waiting);
        if journaled.is_empty() {
            continue;
        }
        let replies = {
            // Names made and handed to stage 2 under the gate: stage 2 sees every name made before
            // it fsyncs a directory, and syncs its file first.
            let _gate = shared.lock_gate();
            shared.place_early(&mut journaled);
            let replies: Vec<_> = journaled
                .iter_mut()
                .filter(|j| j.is_linked)
                .filter_map(|j| j.job.reply.take().map(|reply| (reply, j.delivered())))
                .collect();
            if let Err(mpsc::SendError(lost)) = settle.send(journaled) {
                // Stage 2 is gone (it cannot end before us): the records stay live for the next open.
                for mut j in lost {
                    if let Some(reply) = j.job.reply.take() {
                        let _ = reply.send(Err(StoreError::CommitterGone));
                    }
                }
            }
            replies
        };
        for (reply, delivered) in replies {
            let _ = reply.send(Ok(delivered));
        }
    }
}

/// Stage 2: makes journaled messages durable in their places, then retires their records.
fn settle_loop(rx: &mpsc::Receiver<Vec<Journaled>>, shared: &Shared) {
    let hold = journal::test_delay(journal::HOLD_ENV);
    let pool = SyncPool::new(SYNC_THREADS, "mailroom-fsync");
    let mut retry: Vec<Journaled> = Vec::new();
    loop {
        let next = if retry.is_empty() {
            rx.recv().ok()
        } else {
            match rx.recv_timeout(RETRY_AFTER) {
                Ok(work) => Some(work),
                Err(mpsc::RecvTimeoutError::Timeout) => Some(Vec::new()),
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        };
        let Some(mut work) = next else {
            // The store is gone: one last try; what still fails stays in the journal for the next open.
            let left = shared.settle(std::mem::take(&mut retry), rx, &pool);
            if !left.is_empty() {
                tracing::error!(messages = left.len(), "acknowledged messages left in the journal for the next start");
            }
            return;
        };
        while let Ok(more) = rx.try_recv() {
            work.extend(more);
        }
        if let Some(hold) = hold.filter(|_| !work.is_empty()) {
            std::thread::sleep(hold);
        }
        work.append(&mut retry);
        retry = shared.settle(work, rx, &pool);
    }
}

impl Shared {
    /// Appends records for the commits at the front of `waiting` (up to a segment's worth of bytes,
    /// or until the journal has no room: then what is written is synced and answered first), syncs the
    /// journal once and answers them. Returns the journaled messages for stage 2.
    fn write_batch(&self, waiting: &mut VecDeque<Job>) -> Vec<Journaled> {
        let mut batch: Vec<Journaled> = Vec::new();
        let mut out: Option<Appender> = None;
        let mut files: Vec<Arc<File>> = Vec::new();
        let mut bytes = 0u64;
        let mut failure = None;
        while let Some(mut job) = waiting.pop_front() {
            if bytes >= SEGMENT_SIZE {
                waiting.push_front(job);
                break;
            }
            if let Err(e) = self.check_places(&job) {
                fail_job(job, e);
                continue;
            }
            match self.append(&mut job, &mut out, &mut files, batch.is_empty()) {
                Ok(Some((place, span))) => {
                    bytes += span;
                    batch.push(Journaled {
                        job,
                        place,
                        is_synced: false,
                        is_linked: false,
                        is_staged: false,
                        dirs: Vec::new(),
                        error: None,
                    });
                }
                Ok(None) => {
                    waiting.push_front(job);
                    break;
                }
                Err(e) => {
                    failure = Some(e.duplicate());
                    fail_job(job, e);
                    break;
                }
            }
        }
        let synced = match failure {
            Some(e) => Err(e),
            None => self.sync_journal(out, &files),
        };
        if let Err(e) = synced {
            let places: Vec<Place> = batch.iter().map(|j| j.place).collect();
            self.journal.abandon(&places);
            for j in batch {
                fail_job(j.job, e.duplicate());
            }
            return Vec::new();
        }
        self.progress.add_journaled(batch.len());
        batch
    }

    /// Makes the names of a journaled batch before its answer, so that a 250 means the message is in
    /// every `new/` (and the queue) for readers at once: the file's bytes are written out (page
    /// cache; their durability is the journal's), the queue entry's sidecar staged, and each name
    /// linked. No name is fsynced here: stage 2 makes every file durable before it fsyncs a
    /// directory holding its name (under [`Shared::gate`]). A failure leaves the message to stage 2,
    /// which answers it.
    fn place_early(&self, batch: &mut [Journaled]) {
        for j in batch.iter_mut() {
            let early = (|| {
                if let Some(file) = j.job.file.as_mut() {
                    file.flush().map_err(io_err("write", &j.job.tmp_path))?;
                }
                if let Some(spool) = &j.job.spool {
                    write_new_file(&j.job.staged_sidecar(), &spool.sidecar)?;
                    j.is_staged = true;
                }
                self.link(j)
            })();
            match early {
                Ok(()) => j.is_linked = true,
                Err(error) => {
                    tracing::warn!(id = %j.job.unique, %error, "cannot place a journaled message yet; the background stage tries again")
                }
            }
        }
    }

    /// The lock that keeps the leader from making names while stage 2 fsyncs directories.
    fn lock_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn journal_err(&self) -> impl Fn(io::Error) -> StoreError + '_ {
        |e| StoreError::io("write the journal in", &self.journal.dir, e)
    }

    /// The one write and the one fdatasync of a batch (per segment it touched: usually one).
    fn sync_journal(&self, out: Option<Appender>, files: &[Arc<File>]) -> Result<(), StoreError> {
        if let Some(mut out) = out {
            out.flush().map_err(self.journal_err())?;
        }
        for file in files {
            fsync::sync_data(file).map_err(self.journal_err())?;
        }
        Ok(())
    }

    /// Reserves room and writes the record of `job`; returns where and how long, or `None` when the
    /// journal is full and `may_wait` is false.
    fn append(
        &self,
        job: &mut Job,
        out: &mut Option<Appender>,
        files: &mut Vec<Arc<File>>,
        may_wait: bool,
    ) -> Result<Option<(Place, u64)>, StoreError> {
        let meta =
            RecordMeta { unique: job.unique.clone(), mailboxes: job.recipients.clone(), spool: job.spool.clone() };
        let body_meta = journal::encode_meta(&meta, job.size);
        let body_len = body_meta.len() as u64 + job.size;
        let span = journal::record_span(body_len);
        let Some(r) = self.journal.reserve(span, may_wait).map_err(self.journal_err())? else {
            return Ok(None);
        };
        let contiguous = out
            .as_ref()
            .is_some_and(|o| Arc::ptr_eq(&o.file, &r.file) && o.start + o.buf.len() as u64 == r.place.offset);
        let written = (|| {
            if !contiguous {
                if let Some(o) = out.as_mut() {
                    o.flush().map_err(self.journal_err())?;
                }
                *out = Some(Appender { file: r.file.clone(), start: r.place.offset, buf: Vec::new() });
                if !files.iter().any(|f| Arc::ptr_eq(f, &r.file)) {
                    files.push(r.file.clone());
                }
            }
            match out.as_mut() {
                Some(o) => self.write_record(job, o, &r, &body_meta, span),
                None => Err(StoreError::WriteFailed),
            }
        })();
        match written {
            Ok(()) => Ok(Some((r.place, span))),
            Err(e) => {
                self.journal.abandon(&[r.place]);
                Err(e)
            }
        }
    }

    /// The record's bytes: from the write buffer when the whole message is still in it (no read at
    /// all), else read back from the tmp file (page cache), a large one streamed a piece at a time.
    fn write_record(
        &self,
        job: &mut Job,
        o: &mut Appender,
        r: &journal::Reserved,
        body_meta: &[u8],
        span: u64,
    ) -> Result<(), StoreError> {
        let body_len = body_meta.len() as u64 + job.size;
        let tmp = &job.tmp_path;
        let writer = job.file.as_mut().ok_or(StoreError::WriteFailed)?;
        let mut crc = journal::start_crc(r.generation, body_len);
        crc.update(body_meta);
        let start = o.buf.len();
        if writer.buffer().len() as u64 == job.size {
            crc.update(writer.buffer());
            o.buf.extend_from_slice(&journal::encode_header(r.generation, body_len, crc.finalize()));
            o.buf.extend_from_slice(body_meta);
            o.buf.extend_from_slice(writer.buffer());
        } else if job.size <= WRITE_CHUNK as u64 {
            writer.flush().map_err(io_err("write", tmp))?;
            let mut data = vec![0; job.size as usize];
            writer.get_ref().read_exact_at(&mut data, 0).map_err(io_err("read", tmp))?;
            crc.update(&data);
            o.buf.extend_from_slice(&journal::encode_header(r.generation, body_len, crc.finalize()));
            o.buf.extend_from_slice(body_meta);
            o.buf.extend_from_slice(&data);
        } else {
            // Streamed: the header last, since its checksum covers everything.
            writer.flush().map_err(io_err("write", tmp))?;
            o.flush().map_err(self.journal_err())?;
            let base = r.place.offset;
            let data_at = base + (HEADER_LEN + body_meta.len()) as u64;
            r.file.write_all_at(body_meta, base + HEADER_LEN as u64).map_err(self.journal_err())?;
            let mut piece = vec![0; WRITE_CHUNK];
            let mut done = 0u64;
            while done < job.size {
                let n = (job.size - done).min(WRITE_CHUNK as u64) as usize;
                writer.get_ref().read_exact_at(&mut piece[..n], done).map_err(io_err("read", tmp))?;
                crc.update(&piece[..n]);
                r.file.write_all_at(&piece[..n], data_at + done).map_err(self.journal_err())?;
                done += n as u64;
            }
            let header = journal::encode_header(r.generation, body_len, crc.finalize());
            r.file.write_all_at(&header, base).map_err(self.journal_err())?;
            o.start = base + span;
            return Ok(());
        }
        o.buf.resize(start + span as usize, 0);
        if o.buf.len() >= WRITE_CHUNK {
            o.flush().map_err(self.journal_err())?;
        }
        Ok(())
    }

    /// Before a record: every recipient's Maildir exists (made now when missing) with a writable
    /// `new/`, a Maildir on another file system has room for the copy, and the spool's directories
    /// are writable — so that the common failures still answer 451/452 rather than fail after the 250.
    fn check_places(&self, job: &Job) -> Result<(), StoreError> {
        use rustix::fs::{access, Access};
        for m in &job.recipients {
            let mbox = m.dir(&self.committer.mailboxes);
            // `new/.`: ENOTDIR when new is not a directory.
            let probe = mbox.join("new").join(".");
            match access(&probe, Access::WRITE_OK) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::NOENT => self.committer.ensure_maildir(&mbox)?,
                Err(e) => return Err(StoreError::io("write into", &mbox.join("new"), e.into())),
            }
            self.check_room(&mbox, job.size)?;
        }
        if let Some(sp) = &job.spool {
            for dir in [&sp.msg_dir, &sp.sidecar_dir] {
                access(dir, Access::WRITE_OK).map_err(|e| StoreError::io("write into", dir, e.into()))?;
            }
        }
        Ok(())
    }

    fn check_room(&self, mbox: &Path, size: u64) -> Result<(), StoreError> {
        let known = self.cross_device.lock().unwrap_or_else(PoisonError::into_inner).get(mbox).copied();
        let is_cross = match known {
            Some(c) => c,
            None => {
                let c = fs::metadata(mbox).map_err(io_err("stat", mbox))?.dev() != self.tmp_dev;
                let mut cache = self.cross_device.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= DEVICE_CACHE {
                    cache.clear();
                }
                cache.insert(mbox.to_path_buf(), c);
                c
            }
        };
        if !is_cross {
            return Ok(());
        }
        let st = rustix::fs::statvfs(mbox).map_err(|e| StoreError::io("statvfs", mbox, e.into()))?;
        if st.f_bavail.saturating_mul(st.f_frsize) < size.saturating_add(CROSS_DEVICE_MARGIN) {
            return Err(StoreError::io("copy into", mbox, rustix::io::Errno::NOSPC.into()));
        }
        Ok(())
    }

    /// One round of stage 2 over journaled messages; returns those to try again. `more` is the
    /// leader's channel: what it placed meanwhile is taken in before any directory is fsynced.
    fn settle(&self, work: Vec<Journaled>, more: &mpsc::Receiver<Vec<Journaled>>, pool: &SyncPool) -> Vec<Journaled> {
        if work.is_empty() {
            return work;
        }
        // 1. The data of every file durable (the syncs in parallel share journal commits).
        let mut work = pool.map(work, sync_journaled);
        // 2. With the leader kept from making names, the names it made since are synced too: no
        //    directory fsync below makes a name durable before its data.
        let gate = self.lock_gate();
        let mut late: Vec<Journaled> = Vec::new();
        while let Ok(batch) = more.try_recv() {
            late.extend(batch);
        }
        if !late.is_empty() {
            work.append(&mut pool.map(late, sync_journaled));
        }
        // 3. The names not made yet (the leader failed them): every mailbox, the queue's message, its
        //    sidecar last.
        for j in work.iter_mut().filter(|j| j.error.is_none() && !j.is_linked) {
            match self.link(j) {
                Ok(()) => j.is_linked = true,
                Err(e) => j.error = Some(e),
            }
        }
        // 4. Each directory that got a name fsynced once.
        self.sync_dirs(&mut work, pool);
        drop(gate);
        // 4. Clean up, answer the queue entries, retire.
        let mut places = Vec::with_capacity(work.len());
        let mut retry = Vec::new();
        for mut j in work {
            match j.error.take() {
                None => {
                    drop(j.job.file.take());
                    if let Err(error) = fs::remove_file(&j.job.tmp_path) {
                        tracing::warn!(path = %j.job.tmp_path.display(), %error, "cannot remove tmp file");
                    }
                    if j.job.spool.is_some() {
                        let _ = fs::remove_file(j.job.staged_sidecar());
                    }
                    places.push(j.place);
                    if let Some(reply) = j.job.reply.take() {
                        let _ = reply.send(Ok(j.delivered()));
                    }
                }
                Some(e) => {
                    tracing::error!(id = %j.job.unique, error = %e, "cannot place an acknowledged message yet; it stays in the journal and is retried");
                    if let Some(reply) = j.job.reply.take() {
                        let _ = reply.send(Err(e));
                    }
                    retry.push(j);
                }
            }
        }
        self.progress.add_placed(places.len());
        for file in self.journal.retire(&places) {
            if let Err(error) = fsync::sync_data(&file) {
                tracing::warn!(%error, "cannot sync journal retire marks (replayed harmlessly at the next open)");
            }
        }
        retry
    }

    /// Links a synced message into every place it goes (a name that is already there is from an
    /// earlier try).
    fn link(&self, j: &mut Journaled) -> Result<(), StoreError> {
        let job = &j.job;
        let final_name = format!("{},S={}", job.unique, job.size);
        for rcpt in &job.recipients {
            let dest = self.committer.deliver_one(
                &job.tmp_path,
                &rcpt.dir(&self.committer.mailboxes),
                &job.unique,
                &final_name,
            )?;
            j.dirs.extend(dest.parent().map(Path::to_path_buf));
        }
        if let Some(spool) = &job.spool {
            for (from, to) in [(job.tmp_path.clone(), spool.msg_path()), (job.staged_sidecar(), spool.sidecar_path())] {
                match fs::hard_link(&from, &to) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(StoreError::io("link", &to, e)),
                    _ => j.dirs.extend(to.parent().map(Path::to_path_buf)),
                }
            }
        }
        Ok(())
    }

    /// fsyncs each distinct directory that got a name, in parallel; a failure fails (for a retry)
    /// every message named there.
    fn sync_dirs(&self, work: &mut [Journaled], pool: &SyncPool) {
        let mut dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (i, j) in work.iter().enumerate().filter(|(_, j)| j.error.is_none()) {
            for dir in &j.dirs {
                dirs.entry(dir.clone()).or_default().push(i);
            }
        }
        let syncs: Vec<(PathBuf, Option<StoreError>)> = dirs.keys().map(|d| (d.clone(), None)).collect();
        let syncs = pool.map(syncs, |(dir, error)| {
            if let Err(e) = sync_dir(dir) {
                *error = Some(StoreError::io("fsync", dir, e));
            }
        });
        for (dir, error) in syncs {
            let Some(error) = error else { continue };
            for &i in &dirs[&dir] {
                if work[i].error.is_none() {
                    work[i].error = Some(error.duplicate());
                }
            }
        }
    }
}

/// Answers a commit that failed before its 250, removing its tmp file (and staged sidecar).
fn fail_job(mut job: Job, error: StoreError) {
    drop(job.file.take());
    let _ = fs::remove_file(&job.tmp_path);
    if job.spool.is_some() {
        let _ = fs::remove_file(job.staged_sidecar());
    }
    tracing::warn!(id = %job.unique, %error, "delivery failed");
    if let Some(reply) = job.reply.take() {
        let _ = reply.send(Err(error));
    }
}

/// Stage 2's first step for one message: its data durable (kept across retries).
fn sync_journaled(j: &mut Journaled) {
    if j.is_synced {
        return;
    }
    match sync_message(&mut j.job, j.is_staged) {
        Ok(()) => {
            j.is_synced = true;
            j.is_staged = j.job.spool.is_some();
        }
        Err(e) => j.error = Some(e),
    }
}

/// Flushes the write buffer into the tmp file and fdatasyncs it (fdatasync also persists the size,
/// which reading needs); syncs the staged sidecar of a queue entry, writing it first unless the
/// leader did (it may be linked into the queue already: never truncated then).
fn sync_message(job: &mut Job, is_staged: bool) -> Result<(), StoreError> {
    if let Some(file) = job.file.as_mut() {
        file.flush().map_err(io_err("write", &job.tmp_path))?;
        fsync::sync_data(file.get_ref()).map_err(io_err("fsync", &job.tmp_path))?;
    }
    if let Some(spool) = &job.spool {
        let path = job.staged_sidecar();
        let file = if is_staged {
            File::open(&path).map_err(io_err("open", &path))?
        } else {
            write_new_file(&path, &spool.sidecar)?
        };
        fsync::sync_data(&file).map_err(io_err("fsync", &path))?;
    }
    Ok(())
}

/// Creates (or replaces the content of) `path` with `bytes`, mode 0600, not synced.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    Ok(file)
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

/// Runs `f` over `items` on up to [`SYNC_THREADS`] threads started for the call (fsyncs of different
/// files proceed in parallel in the kernel and the device queue). Threads pull items from a shared
/// queue, so if a thread cannot be spawned the others, including the caller, still do every item.
/// For the replay at open; the running store's background stage uses its own lasting threads
/// (`sync_pool`).
pub(crate) fn parallel<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
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
