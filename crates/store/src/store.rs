//! The [`Store`]: one data directory, opened durably and made consistent before anything is served.
//!
//! [`Store::open`] creates `<data-dir>/{mailboxes,tmp,journal}/` (each fsynced into its parent, the
//! data directory included), finishes the intent records of an older version ([`crate::intent`]),
//! replays the commit journal of dead processes ([`crate::journal`]), removes what dead processes left
//! in tmp/ directories, loads the user directory and starts the committer. Only then does the server
//! open its listeners.
//!
//! On disk: `<data-dir>/mailboxes/<domain>/<local>/{tmp,new,cur}` is a standard Maildir.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::address::{is_folder_name, validate_domain, MailboxId};
use crate::aliases::{AliasDirectory, Aliases, AliasesCache};
use crate::commit::{self, Committer};
use crate::error::{io_err, StoreError};
use crate::fsync;
use crate::incoming::{Incoming, Intake};
use crate::intent::{self, INTENT_DIR};
use crate::journal::JOURNAL_DIR;
use crate::journal_replay;
use crate::modes::Modes;
use crate::unique::{self, UniqueNames};
use crate::users::{UserDirectory, Users, UsersCache};

pub use crate::users::DEFAULT_RELOAD_INTERVAL;

/// The mailroom store. Cheap to clone; all clones share one committer and one user cache.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    mailboxes: PathBuf,
    directory: UserDirectory,
    users: Arc<UsersCache>,
    aliases: Arc<AliasesCache>,
    intake: Arc<Intake>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("data_dir", &self.inner.data_dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`. In this order: creates its directories,
    /// each fsynced into its parent; completes or rolls back every multi-recipient commit a dead
    /// process of an older version left in an intent record; replays every unretired record of the
    /// commit journal that no live process holds (`journal replayed records=N`), so every
    /// acknowledged message is in all of its mailboxes;
    /// removes tmp files of dead processes (store-wide and in each Maildir's tmp/: never acknowledged,
    /// so the sender still has them); loads the user directory (a new data directory gets an empty
    /// one); starts the committer.
    ///
    /// Directories it creates are private (0700) and existing ones are left as they are; the server
    /// opens with [`Store::open_with`] and its configured [`Modes`].
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_impl(data_dir, Modes::private(), false)
    }

    /// [`Store::open`] with file modes: new directories and message files get `modes`, and the data
    /// directory's existing directories are brought to them ([`Modes::apply_at_open`]).
    pub fn open_with(data_dir: &Path, modes: Modes) -> Result<Store, StoreError> {
        Self::open_impl(data_dir, modes, true)
    }

    fn open_impl(data_dir: &Path, modes: Modes, apply: bool) -> Result<Store, StoreError> {
        unique::mark_process_opened();
        fsync::warn_if_unsafe();
        let mailboxes = data_dir.join("mailboxes");
        let tmp = data_dir.join("tmp");
        let journal_dir = data_dir.join(JOURNAL_DIR);
        // Only a data directory of an older version has intent records to finish.
        let intents = data_dir.join(INTENT_DIR);
        // A data directory that never had mailboxes/ is new: it gets an empty users.toml. In one that
        // has, a missing users.toml is suspicious (see `UsersCache::start`).
        let is_new = !mailboxes.exists();
        fsync::create_dir_all_synced(data_dir).map_err(io_err("create", data_dir))?;
        for dir in [&mailboxes, &tmp, &journal_dir] {
            fsync::create_dir_synced(dir).map_err(io_err("create", dir))?;
        }
        if apply {
            modes.apply_at_open(data_dir).map_err(io_err("set the modes of", data_dir))?;
            modes
                .set_dir(&journal_dir, crate::modes::DirKind::Private)
                .map_err(io_err("set the mode of", &journal_dir))?;
        }
        let names = Arc::new(UniqueNames::new());
        let committer = Committer { mailboxes: mailboxes.clone(), tmp: tmp.clone(), modes };

        // Copies staged in a Maildir's tmp/ are never needed to recover: clean them first. The
        // store-wide tmp/ holds the data files that old intent records link from: clean it after.
        unique::clean_mailbox_tmps(&mailboxes, names.hostname());
        if intents.is_dir() {
            for (path, entries) in intent::abandoned(&intents, names.hostname()) {
                committer.recover(&entries);
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a recovered intent record");
                }
            }
        }
        let journal = journal_replay::open(&journal_dir, &committer, &tmp)?;
        unique::clean_tmp_dir(&tmp, names.hostname());

        let directory = UserDirectory::new(data_dir);
        let users = UsersCache::start(directory.clone(), is_new)?;
        let aliases =
            AliasesCache::start(AliasDirectory::new(data_dir)).map_err(|e| StoreError::Aliases(Box::new(e)))?;
        let progress = Arc::new(commit::Progress::default());
        let (sender, workers) =
            commit::start(committer, journal, progress.clone()).map_err(io_err("start the committer for", data_dir))?;
        Ok(Store {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                mailboxes,
                directory,
                users,
                aliases,
                intake: Arc::new(Intake { tmp, names, committer: sender, modes, _workers: workers, progress }),
            }),
        })
    }

    /// Changes how often the store checks `users.toml` for changes (tests use a short interval).
    pub fn with_reload_interval(self, interval: Duration) -> Store {
        self.inner.users.set_interval(interval);
        self.inner.aliases.set_interval(interval);
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

    /// The current user snapshot. Never reads the file: a background thread stats `users.toml`
    /// once per reload interval (1 s by default) and swaps in a new snapshot when it changed, so
    /// `mailroom user add` reaches a running server within ~1-2 s. A file that fails to parse, or is
    /// missing or empty (an editor mid-save), is logged and the previous snapshot kept.
    pub fn users(&self) -> Arc<Users> {
        self.inner.users.current()
    }

    /// The current alias snapshot (`aliases.toml`), reloaded like [`Store::users`]: never a file read.
    pub fn aliases(&self) -> Arc<Aliases> {
        self.inner.aliases.current()
    }

    /// The postmaster mailbox of `domain` (RFC 5321 §4.5.1). The domain is validated like a user's;
    /// whether it is served is the server's decision. Pass the served domain as configured, so that
    /// every form of it reaches one Maildir.
    pub fn postmaster(&self, domain: &str) -> Result<MailboxId, StoreError> {
        Ok(MailboxId::new_validated("postmaster".into(), validate_domain(domain)?))
    }

    /// Starts receiving a message into a new file under `<data-dir>/tmp/`.
    pub fn begin(&self) -> Result<Incoming, StoreError> {
        self.inner.intake.begin()
    }

    /// Waits (at most `limit`) until every commit answered so far is also in its mailboxes and queue
    /// (stage 2 of the commit: files synced, linked, directories synced); false if that took longer
    /// (a failing mailbox is retried meanwhile). A commit's answer means it is durable in the
    /// journal and named in every `new/`; its file is durable there, its tmp name gone and its record
    /// retired a few milliseconds later. For callers that check those (tests, a one-shot CLI command).
    pub fn settle(&self, limit: Duration) -> bool {
        self.inner.intake.progress.wait_placed(limit)
    }

    /// The same mailbox delivering into its existing Maildir++ folder `.NAME/` (Dovecot's layout),
    /// where NAME equals `name` exactly as read from the mailbox directory's listing; `None` when there
    /// is no such folder (or `name` could not be one). The path is never built from `name`: what a
    /// client sent (`alice+./bob@`) can only select a folder that is already there.
    pub fn existing_folder(&self, mailbox: &MailboxId, name: &str) -> Option<MailboxId> {
        if !is_folder_name(name) {
            return None;
        }
        let inbox = mailbox.inbox();
        let entries = fs::read_dir(inbox.dir(self.mailboxes_dir())).ok()?;
        entries.flatten().find_map(|entry| {
            let listed = entry.file_name();
            let folder = listed.to_str()?.strip_prefix('.')?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            (folder == name && is_dir && is_folder_name(folder)).then(|| inbox.with_folder(folder))
        })
    }

    /// The mailbox's `Junk` folder (`.Junk/`, as Dovecot lays it out), made at commit when missing.
    pub fn junk(&self, mailbox: &MailboxId) -> MailboxId {
        mailbox.inbox().with_folder(JUNK_FOLDER)
    }

    /// The mailbox's `Sent` folder (`.Sent/`), made at commit when missing.
    pub fn sent(&self, mailbox: &MailboxId) -> MailboxId {
        mailbox.inbox().with_folder(SENT_FOLDER)
    }
}

/// The folder quarantined mail goes to: the name Dovecot's and most clients' special-use Junk has.
pub const JUNK_FOLDER: &str = "Junk";

/// The folder a copy of what a user sends from the web interface goes to: the name Dovecot's and most
/// clients' special-use Sent has.
pub const SENT_FOLDER: &str = "Sent";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incoming::Commit;
    use crate::intent::{IntentEntry, IntentLog};
    use std::fs;

    /// A data directory as a process killed mid-batch leaves it: the message's data file in tmp/, an
    /// intent record naming its mailboxes, and links in `linked` of them. Returns the final name.
    fn crashed_mid_batch(data: &Path, mailboxes: &[MailboxId], linked: usize) -> String {
        let store = Store::open(data).unwrap();
        let host = store.inner.intake.names.hostname().to_string();
        drop(store);
        // pid 4194305 is above any pid_max: that process is surely gone.
        let unique = format!("1700000000.M1P4194305Q7.{host}");
        let final_name = format!("{unique},S=5");
        fs::write(data.join("tmp").join(&unique), b"hello").unwrap();
        for m in &mailboxes[..linked] {
            let new = m.dir(&data.join("mailboxes")).join("new");
            fs::create_dir_all(&new).unwrap();
            fs::hard_link(data.join("tmp").join(&unique), new.join(&final_name)).unwrap();
        }
        let entry = IntentEntry {
            tmp_name: unique.clone(),
            final_name: final_name.clone(),
            mailboxes: mailboxes.to_vec(),
            spool: None,
        };
        fs::create_dir_all(data.join(INTENT_DIR)).unwrap(); // an older version made it
        let mut log = IntentLog::create(&data.join(INTENT_DIR), &format!("1700000000.M1P4194305Q0.{host}")).unwrap();
        log.arm(&[entry]).unwrap();
        std::mem::forget(log); // a crash: the record stays
        final_name
    }

    fn boxes(n: usize) -> Vec<MailboxId> {
        (0..n).map(|i| MailboxId::new_validated(format!("u{i}"), "example.test".into())).collect()
    }

    fn holds(data: &Path, m: &MailboxId, name: &str) -> bool {
        m.dir(&data.join("mailboxes")).join("new").join(name).exists()
    }

    #[test]
    fn open_completes_a_multi_recipient_commit_cut_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(5);
        let name = crashed_mid_batch(dir.path(), &mboxes, 2);
        let _store = Store::open(dir.path()).unwrap();
        for m in &mboxes {
            assert!(holds(dir.path(), m, &name), "{m} is missing the message");
            assert_eq!(fs::read(m.dir(&dir.path().join("mailboxes")).join("new").join(&name)).unwrap(), b"hello");
        }
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "the data file is gone");
        let records: Vec<_> = fs::read_dir(dir.path().join(INTENT_DIR)).unwrap().flatten().collect();
        assert!(records.is_empty(), "the old record is gone: {records:?}");
    }

    #[test]
    fn open_rolls_back_a_commit_it_cannot_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(3);
        let name = crashed_mid_batch(dir.path(), &mboxes, 1);
        // The last mailbox cannot take it: its new is a file.
        let broken = mboxes[2].dir(&dir.path().join("mailboxes"));
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join("new"), b"not a directory").unwrap();
        let _store = Store::open(dir.path()).unwrap();
        for m in &mboxes[..2] {
            assert!(!holds(dir.path(), m, &name), "{m} kept a partial delivery");
        }
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn open_completes_from_a_link_when_the_data_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(3);
        let name = crashed_mid_batch(dir.path(), &mboxes, 1);
        for e in fs::read_dir(dir.path().join("tmp")).unwrap().flatten() {
            fs::remove_file(e.path()).unwrap();
        }
        let _store = Store::open(dir.path()).unwrap();
        assert!(mboxes.iter().all(|m| holds(dir.path(), m, &name)));
    }

    /// Like [`crashed_mid_batch`] with a spool in the record: the sidecar staged in tmp/ (if
    /// `staged`), and the batch's progress: `linked` mailboxes, the message linked into the spool's msg
    /// dir (`msg_linked`) and the sidecar in place (`sidecar_placed`). Returns (final name, spool dirs).
    fn crashed_with_spool(
        data: &Path,
        mailboxes: &[MailboxId],
        linked: usize,
        (staged, msg_linked, sidecar_placed): (bool, bool, bool),
    ) -> (String, PathBuf, PathBuf) {
        let final_name = crashed_mid_batch(data, mailboxes, linked);
        let unique = final_name.split(',').next().unwrap().to_string();
        let (msg_dir, env_dir) = (data.join("queue/msg"), data.join("queue/env"));
        fs::create_dir_all(&msg_dir).unwrap();
        fs::create_dir_all(&env_dir).unwrap();
        if staged {
            fs::write(crate::spool::staged_sidecar(&data.join("tmp"), &unique), b"envelope").unwrap();
        }
        if msg_linked {
            fs::hard_link(data.join("tmp").join(&unique), msg_dir.join(&unique)).unwrap();
        }
        if sidecar_placed {
            fs::write(env_dir.join(&unique), b"envelope").unwrap();
        }
        let entry = IntentEntry {
            tmp_name: unique.clone(),
            final_name: final_name.clone(),
            mailboxes: mailboxes.to_vec(),
            spool: Some(crate::intent::SpoolIntent {
                name: unique.clone(),
                msg_dir: msg_dir.clone(),
                sidecar_dir: env_dir.clone(),
            }),
        };
        let host = crate::unique::UniqueNames::new().hostname().to_string();
        let mut log = IntentLog::create(&data.join(INTENT_DIR), &format!("1700000000.M1P4194305Q1.{host}")).unwrap();
        log.arm(&[entry]).unwrap();
        std::mem::forget(log);
        // The record of `crashed_mid_batch` (without the spool) must not decide: remove it.
        fs::remove_file(data.join(INTENT_DIR).join(format!("1700000000.M1P4194305Q0.{host}"))).unwrap();
        (final_name, msg_dir.join(&unique), env_dir.join(&unique))
    }

    #[test]
    fn open_completes_a_spool_commit_cut_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        let (name, msg, env) = crashed_with_spool(dir.path(), &mboxes, 1, (true, false, false));
        let _store = Store::open(dir.path()).unwrap();
        assert!(mboxes.iter().all(|m| holds(dir.path(), m, &name)), "mailboxes completed");
        assert_eq!(fs::read(&msg).unwrap(), b"hello", "message linked into the queue");
        assert_eq!(fs::read(&env).unwrap(), b"envelope", "sidecar placed");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "data file and staged sidecar gone");
    }

    #[test]
    fn open_completes_a_spool_only_commit_cut_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (_, msg, env) = crashed_with_spool(dir.path(), &[], 0, (true, true, false));
        let _store = Store::open(dir.path()).unwrap();
        assert_eq!(fs::read(&msg).unwrap(), b"hello");
        assert_eq!(fs::read(&env).unwrap(), b"envelope");
    }

    #[test]
    fn open_rolls_back_a_spool_commit_it_cannot_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        let (name, msg, env) = crashed_with_spool(dir.path(), &mboxes, 2, (true, false, false));
        // The queue's msg directory is gone: the message cannot be linked there.
        fs::remove_dir(msg.parent().unwrap()).unwrap();
        let _store = Store::open(dir.path()).unwrap();
        for m in &mboxes {
            assert!(!holds(dir.path(), m, &name), "{m} kept a copy while the queue entry failed");
        }
        assert!(!env.exists(), "no sidecar without its message");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_finished_spool_batch_replayed_is_left_alone() {
        // The batch completed and was acknowledged, the relay delivered and removed the queue entry,
        // then a crash lost the record's retirement: the mailbox copies must stay.
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        let (name, msg, env) = crashed_with_spool(dir.path(), &mboxes, 2, (false, false, false));
        let _store = Store::open(dir.path()).unwrap();
        assert!(mboxes.iter().all(|m| holds(dir.path(), m, &name)), "acknowledged copies were rolled back");
        assert!(!msg.exists() && !env.exists(), "a delivered queue entry came back");
    }

    #[test]
    fn a_placed_sidecar_is_never_rolled_back() {
        // The sidecar is the batch's last step: once it is in place the commit may have been
        // acknowledged. A mailbox that cannot be completed now must not take the queue entry with it.
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        let (name, msg, env) = crashed_with_spool(dir.path(), &mboxes, 1, (false, true, true));
        let broken = mboxes[1].dir(&dir.path().join("mailboxes"));
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join("new"), b"not a directory").unwrap();
        let _store = Store::open(dir.path()).unwrap();
        assert!(holds(dir.path(), &mboxes[0], &name));
        assert!(msg.exists() && env.exists(), "the queue entry was rolled back");
    }

    #[test]
    fn a_dead_processs_staged_sidecar_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let host = crate::unique::UniqueNames::new().hostname().to_string();
        let staged = dir.path().join("tmp").join(format!("1700000000.M1P4194305Q9.{host}.sidecar"));
        fs::write(&staged, b"envelope").unwrap();
        let _store = Store::open(dir.path()).unwrap();
        assert!(!staged.exists());
    }

    #[test]
    fn a_live_process_journal_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let running = Store::open(dir.path()).unwrap();
        let alice = MailboxId::new_validated("alice".into(), "example.test".into());
        let mut m = running.begin().unwrap();
        m.write(b"Subject: x\n\nhi\n").unwrap();
        m.commit(std::slice::from_ref(&alice)).wait().unwrap();
        let segments: Vec<_> =
            fs::read_dir(dir.path().join(JOURNAL_DIR)).unwrap().flatten().map(|e| e.path()).collect();
        assert_eq!(segments.len(), 1, "{segments:?}");
        let before = fs::read(&segments[0]).unwrap();
        let _other = Store::open(dir.path()).unwrap(); // e.g. `mailroom mailbox list` beside a server
        assert!(segments[0].exists(), "a running store's segment was taken");
        assert_eq!(fs::read(&segments[0]).unwrap().len(), before.len());
        drop(running);
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
