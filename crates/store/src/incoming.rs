//! A message being received: [`Incoming`] streams it into a file under `<data-dir>/tmp/`, and
//! [`Incoming::commit`] (or [`Incoming::commit_with`], with a queue entry) hands it to the committer ([`crate::commit`]) and returns the [`Commit`]
//! future, which resolves once the message is durable in the commit journal for every recipient's
//! mailbox (or failed and left nowhere).

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::address::MailboxId;
use crate::commit::{Delivered, Job};
use crate::error::{io_err, StoreError};
use crate::spool::Spool;
use crate::unique::UniqueNames;

/// Size of the write buffer in front of an incoming message file: large enough that a message
/// costs few write(2) calls, small enough that nothing holds a whole message.
pub const WRITE_BUFFER: usize = 64 * 1024;

/// Largest piece of a message's tail that [`Incoming::insert`] moves at a time (and keeps in memory).
pub const SHIFT_CHUNK: u64 = 64 * 1024;

/// Where messages are received: `<data-dir>/tmp/`, the names, and the way to the committer.
pub(crate) struct Intake {
    pub(crate) tmp: PathBuf,
    pub(crate) names: Arc<UniqueNames>,
    pub(crate) committer: mpsc::Sender<Job>,
    /// Message files are created with `modes.message_mode()` (0600, or 0640 with a store group).
    pub(crate) modes: crate::modes::Modes,
    /// The commit threads, joined when the last `Intake` goes: declared after `committer`, so that
    /// the sender is dropped first and the threads see the end.
    pub(crate) _workers: crate::commit::Workers,
    pub(crate) progress: Arc<crate::commit::Progress>,
}

impl Intake {
    /// Starts receiving a message into a new file under `<data-dir>/tmp/`.
    pub(crate) fn begin(self: &Arc<Intake>) -> Result<Incoming, StoreError> {
        let unique = self.names.next();
        let path = self.tmp.join(&unique);
        // create_new: a unique name is never reused, so nothing is ever overwritten.
        let mode = self.modes.message_mode();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(Incoming {
            intake: self.clone(),
            unique,
            path,
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            len: 0,
            failed: false,
        })
    }
}

/// A message being received. Dropping it without [`Incoming::commit`] removes its file.
pub struct Incoming {
    intake: Arc<Intake>,
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

    /// Inserts `bytes` at offset `at` of what was written so far (`at <= len()`): headers known only
    /// once the body is on disk (Authentication-Results, DKIM-Signature) go in after the trace headers
    /// this way. The tail of the file after `at` is moved up in place, [`SHIFT_CHUNK`] at a time from the
    /// end, so the message is never held in memory and no second file is created (a file creation costs
    /// more than moving a small message's few KiB). The file is under `tmp/`, not yet acknowledged: a
    /// crash in the middle leaves a file the next start removes. After an error the message can only be
    /// dropped.
    pub fn insert(&mut self, at: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let result = if at > self.len { Err(StoreError::WriteFailed) } else { self.rewrite_with(at, bytes) };
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn rewrite_with(&mut self, at: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(writer) = self.file.as_mut() else {
            return Err(StoreError::WriteFailed);
        };
        let path = &self.path;
        writer.flush().map_err(|e| StoreError::io("write", path, e))?;
        let file = writer.get_mut();
        let shift = bytes.len() as u64;
        let tail = self.len - at;
        let mut piece = vec![0; tail.min(SHIFT_CHUNK) as usize];
        // From the end backwards: each piece moves to a place past what is still to be read.
        let mut end = self.len;
        while end > at {
            let start = end.saturating_sub(piece.len() as u64).max(at);
            let piece = &mut piece[..(end - start) as usize];
            file.read_exact_at(piece, start).map_err(|e| StoreError::io("read", path, e))?;
            file.write_all_at(piece, start + shift).map_err(|e| StoreError::io("write", path, e))?;
            end = start;
        }
        file.write_all_at(bytes, at).map_err(|e| StoreError::io("write", path, e))?;
        // pread/pwrite leave the offset alone: later writes go after the new end.
        file.seek(SeekFrom::End(0)).map_err(|e| StoreError::io("seek", path, e))?;
        self.len += shift;
        Ok(())
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

    /// Makes the message durable for every recipient's mailbox (duplicates count once). The
    /// returned future resolves once the message and its mailboxes are in the commit journal and the
    /// journal is fdatasynced ([`crate::journal`]): it survives a crash from then on, and its file
    /// reaches each `new/` a few milliseconds later, once its data is durable
    /// ([`crate::Store::settle`] waits for that). On `Err` no copy is left anywhere. Dropping the
    /// future does not cancel the delivery.
    /// Same as [`Incoming::commit_with`] without a spool.
    pub fn commit(self, recipients: &[MailboxId]) -> Commit {
        self.commit_with(recipients, None)
    }

    /// Like [`Incoming::commit`], and also places `spool` (a queue entry: the message hard-linked
    /// into its msg directory and its sidecar file) in the same group-commit batch, all-or-none with
    /// the mailboxes, also across a crash (the intent record covers both). The future resolves once
    /// the spool entry is in place and durable (journaled, files fdatasynced, every directory
    /// fsynced: the queue reads it at once).
    /// `recipients` may be empty when there is a spool (a message only for remote recipients).
    pub fn commit_with(mut self, recipients: &[MailboxId], spool: Option<Spool>) -> Commit {
        if self.failed {
            return Commit::ready(Err(StoreError::WriteFailed));
        }
        let mut seen = HashSet::new();
        let recipients: Vec<MailboxId> = recipients.iter().filter(|r| seen.insert(*r)).cloned().collect();
        if recipients.is_empty() && spool.is_none() {
            return Commit::ready(Err(StoreError::NoRecipients));
        }
        let spool = match spool.map(Spool::validated).transpose() {
            Ok(spool) => spool,
            Err(e) => return Commit::ready(Err(e)),
        };
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
            spool,
            reply: Some(reply),
        };
        match self.intake.committer.send(job) {
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
