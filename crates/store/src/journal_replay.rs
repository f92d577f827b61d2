//! Replay of the commit journal at open, before anything is served: every valid, unretired record of
//! a segment no live process holds is made true on disk, idempotently, then retired.
//!
//! Per record, for each mailbox: a file `new/<unique>*` or `cur/<unique>*` (a reader may have moved
//! it) with exactly the record's message is left alone; otherwise — missing, or present with other or
//! short content (a name that became durable before its data, after a power cut) — the file is
//! written from the record into the Maildir's `tmp/`, fdatasynced, renamed into place, and the
//! directory fsynced. The queue entry (message and sidecar) the same way. Only then is the record
//! retired. A cut during replay leaves records live: the next open replays them again. A record that
//! cannot be replayed (its mailbox cannot take it) stays live and is logged; its segment is left for
//! the next open.
//!
//! Segments replayed completely are kept for reuse (or removed, beyond [`MAX_SEGMENTS`] or when
//! larger than a segment). Logs `journal replayed records=N` at INFO after replay, and `journal
//! replay record=<unique>` at DEBUG per record.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::commit::Committer;
use crate::error::{io_err, StoreError};
use crate::fsync;
use crate::journal::{self, Journal, RecordMeta, Segment, MAX_SEGMENTS, REPLAY_PAUSE_ENV, SEGMENT_SIZE};

/// Replays the segments of dead processes in `dir` and returns this store's journal (with the
/// segments it could reuse).
pub(crate) fn open(dir: &Path, committer: &Committer, data_tmp: &Path) -> Result<Journal, StoreError> {
    // Held while scanning, so that no segment another process is creating (not yet locked) is taken.
    let dir_lock = File::open(dir).map_err(io_err("open", dir))?;
    if let Err(error) = dir_lock.lock() {
        tracing::warn!(dir = %dir.display(), %error, "cannot lock the journal directory");
    }
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .flatten()
        .filter_map(|e| Some((journal::parse_segment_name(e.file_name().to_str()?)?, e.path())))
        .collect();
    segments.sort();
    let max_seq = segments.last().map_or(0, |(seq, _)| *seq);
    let pause = journal::test_delay(REPLAY_PAUSE_ENV);
    let mut replay = Replay { committer, data_tmp, pause, listings: HashMap::new(), records: 0 };
    let mut adopted = Vec::new();
    let mut removed = false;
    for (seq, path) in segments {
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else { continue };
        if !journal::try_lock(&file) {
            continue; // a live process writes it
        }
        match replay.segment(&file, &path) {
            Ok(true) if adopted.len() < MAX_SEGMENTS && file.metadata().is_ok_and(|m| m.len() == SEGMENT_SIZE) => {
                let generation = journal::new_generation();
                let file = Arc::new(file);
                // Offset at the end: the next record starts it over under a new generation.
                adopted
                    .push((seq, Segment { path, file, size: SEGMENT_SIZE, generation, offset: SEGMENT_SIZE, live: 0 }));
            }
            Ok(true) => {
                let _ = fs::remove_file(&path);
                removed = true;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read a journal segment; left for the next start")
            }
        }
    }
    if removed {
        fsync::sync_dir(dir).map_err(io_err("fsync", dir))?;
    }
    tracing::info!("journal replayed records={}", replay.records);
    drop(dir_lock);
    Ok(Journal::new(dir.to_path_buf(), adopted, max_seq))
}

struct Replay<'a> {
    committer: &'a Committer,
    data_tmp: &'a Path,
    pause: Option<std::time::Duration>,
    /// Per `new/` or `cur/` directory: unique name -> file names (listed once per replay).
    listings: HashMap<PathBuf, HashMap<String, Vec<String>>>,
    records: usize,
}

/// Records replayed together: their files written, then synced in parallel, linked, and each
/// directory fsynced once (a 100-recipient record costs one file sync, not a hundred).
const REPLAY_CHUNK: usize = 64;

/// What one record needs done, found by looking at the disk.
struct Pending<'r> {
    offset: u64,
    meta: &'r RecordMeta,
    data: &'r [u8],
    /// `<data-dir>/tmp/<unique>` holding the message, linked to where it is missing.
    staged: PathBuf,
    /// Mailbox directories without the message.
    missing: Vec<PathBuf>,
    spool_missing: (bool, bool),
    error: Option<StoreError>,
}

impl Replay<'_> {
    /// Replays the live records of one segment and retires them; true if nothing is left live.
    fn segment(&mut self, file: &File, path: &Path) -> io::Result<bool> {
        let size = file.metadata()?.len();
        let scanned = journal::scan(file, size)?;
        let mut is_clean = true;
        let mut done = Vec::new();
        let mut live = Vec::new();
        for s in scanned.iter().filter(|s| s.is_live) {
            match &s.record {
                Some((meta, data)) => live.push((s.offset, meta, &data[..])),
                None => {
                    tracing::warn!(path = %path.display(), offset = s.offset, "a journal record with invalid names; ignored");
                    done.push(s.offset);
                }
            }
        }
        for chunk in live.chunks(REPLAY_CHUNK) {
            for p in self.chunk(chunk) {
                match p.error {
                    None => {
                        self.records += 1;
                        done.push(p.offset);
                    }
                    Some(error) => {
                        tracing::error!(id = %p.meta.unique, %error, "cannot replay an acknowledged message; it stays in the journal for the next start");
                        is_clean = false;
                    }
                }
            }
        }
        for offset in &done {
            journal::retire_at(file, *offset)?;
        }
        if !done.is_empty() {
            fsync::sync_data(file)?;
        }
        Ok(is_clean)
    }

    /// Replays up to [`REPLAY_CHUNK`] records; each comes back with its error, if any.
    fn chunk<'r>(&mut self, records: &[(u64, &'r RecordMeta, &'r [u8])]) -> Vec<Pending<'r>> {
        // 1. What is missing where; the message written once to tmp/ (not yet synced).
        let mut pending: Vec<Pending<'r>> =
            records.iter().map(|&(offset, meta, data)| self.look(offset, meta, data)).collect();
        // 2. Those files' data durable, in parallel.
        crate::commit::parallel(&mut pending, |p| {
            if p.error.is_none() && (!p.missing.is_empty() || p.spool_missing.0) {
                if let Err(e) = File::open(&p.staged).and_then(|f| fsync::sync_data(&f)) {
                    p.error = Some(StoreError::io("fsync", &p.staged, e));
                }
            }
        });
        // 3. Then the names.
        let mut dirs = BTreeSet::new();
        for p in pending.iter_mut().filter(|p| p.error.is_none()) {
            tracing::debug!("journal replay record={}", p.meta.unique);
            if let Err(e) = self.place(p, &mut dirs) {
                p.error = Some(e);
            }
            if let Some(pause) = self.pause {
                std::thread::sleep(pause);
            }
        }
        // 4. Each directory fsynced once.
        for dir in &dirs {
            if let Err(e) = fsync::sync_dir(dir) {
                let error = StoreError::io("fsync", dir, e);
                for p in pending.iter_mut().filter(|p| p.error.is_none()) {
                    p.error = Some(error.duplicate());
                }
            }
        }
        for p in &pending {
            let _ = fs::remove_file(&p.staged);
        }
        pending
    }

    /// Finds where the record's message is missing (or there with other content: rewritten at once)
    /// and writes it to its staging file if anything lacks it.
    fn look<'r>(&mut self, offset: u64, meta: &'r RecordMeta, data: &'r [u8]) -> Pending<'r> {
        // The dead process's own name (so that a crash now leaves it for the start-up cleaning), as a
        // fresh inode: the old file under it may be linked into a mailbox already.
        let staged = self.data_tmp.join(&meta.unique);
        let mut p =
            Pending { offset, meta, data, staged, missing: Vec::new(), spool_missing: (false, false), error: None };
        if let Err(e) = self.look_into(&mut p) {
            p.error = Some(e);
        }
        p
    }

    fn look_into(&mut self, p: &mut Pending<'_>) -> Result<(), StoreError> {
        let c = self.committer;
        let final_name = p.meta.final_name(p.data.len() as u64);
        for m in &p.meta.mailboxes {
            let mbox = m.dir(&c.mailboxes);
            c.ensure_maildir(&mbox)?;
            let found = self.copies(&mbox, &p.meta.unique, &final_name);
            if found.iter().any(|f| has_content(f, p.data)) {
                continue;
            }
            match found.into_iter().next() {
                // A name without its data (a power cut): rewritten in place, synced.
                Some(wrong) => {
                    write_into_place(&mbox.join("tmp").join(&p.meta.unique), &wrong, p.data, c.modes.message_mode())?;
                    fsync::sync_dir(wrong.parent().unwrap_or(&mbox)).map_err(io_err("fsync", &mbox))?;
                }
                None => p.missing.push(mbox),
            }
        }
        if let Some(sp) = &p.meta.spool {
            p.spool_missing = (!has_content(&sp.msg_path(), p.data), !has_content(&sp.sidecar_path(), &sp.sidecar));
        }
        if !p.missing.is_empty() || p.spool_missing.0 {
            // A fresh inode: an earlier replay's staging file may be linked into a mailbox already.
            remove_if_there(&p.staged)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(c.modes.message_mode())
                .open(&p.staged)
                .map_err(io_err("create", &p.staged))?;
            file.write_all(p.data).map_err(io_err("write", &p.staged))?;
        }
        Ok(())
    }

    /// Links the synced staging file where the message is missing; the queue's sidecar last.
    fn place(&self, p: &Pending<'_>, dirs: &mut BTreeSet<PathBuf>) -> Result<(), StoreError> {
        let final_name = p.meta.final_name(p.data.len() as u64);
        for mbox in &p.missing {
            let dest = self.committer.deliver_one(&p.staged, mbox, &p.meta.unique, &final_name)?;
            dirs.extend(dest.parent().map(Path::to_path_buf));
        }
        let Some(sp) = &p.meta.spool else { return Ok(()) };
        let (msg, sidecar) = (sp.msg_path(), sp.sidecar_path());
        if p.spool_missing.0 {
            if msg.exists() {
                let staging = crate::spool::staged_sidecar(self.data_tmp, &p.meta.unique);
                write_into_place(&staging, &msg, p.data, self.committer.modes.message_mode())?;
            } else {
                fs::hard_link(&p.staged, &msg).map_err(io_err("link", &msg))?;
            }
            dirs.extend(msg.parent().map(Path::to_path_buf));
        }
        if p.spool_missing.1 {
            let staging = crate::spool::staged_sidecar(self.data_tmp, &p.meta.unique);
            write_into_place(&staging, &sidecar, &sp.sidecar, 0o600)?;
            dirs.extend(sidecar.parent().map(Path::to_path_buf));
        }
        Ok(())
    }

    /// Files of this message in the Maildir: `new/<final name>` first, then any `new/<unique>*` or
    /// `cur/<unique>*`.
    fn copies(&mut self, mbox: &Path, unique: &str, final_name: &str) -> Vec<PathBuf> {
        let exact = mbox.join("new").join(final_name);
        if exact.exists() {
            return vec![exact];
        }
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = mbox.join(sub);
            let listing = self.listings.entry(dir.clone()).or_insert_with(|| list_by_unique(&dir));
            out.extend(listing.get(unique).into_iter().flatten().map(|name| dir.join(name)));
        }
        out
    }
}

/// The files of a Maildir directory by unique name (the part before `,` or `:`).
fn list_by_unique(dir: &Path) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let unique = name.split([',', ':']).next().unwrap_or_default().to_string();
        map.entry(unique).or_default().push(name);
    }
    map
}

/// Whether `path` holds exactly `bytes`.
fn has_content(path: &Path, bytes: &[u8]) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() == bytes.len() as u64) && fs::read(path).is_ok_and(|b| b == bytes)
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `staging`, fdatasyncs it and renames it over `target` (the caller fsyncs the
/// directory).
fn write_into_place(staging: &Path, target: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    // Never truncate in place: a staging name left by a crash may be a link of a delivered file.
    remove_if_there(staging)?;
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(staging).map_err(io_err("create", staging))?;
    file.write_all(bytes).map_err(io_err("write", staging))?;
    fsync::sync_data(&file).map_err(io_err("fsync", staging))?;
    drop(file);
    fs::rename(staging, target).map_err(io_err("rename into", target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::MailboxId;
    use crate::journal::{encode_record, segment_name, JOURNAL_DIR};
    use crate::spool::Spool;
    use crate::Store;

    const UNIQUE: &str = "1700000000.M1P4194305Q7.host";

    fn boxes(n: usize) -> Vec<MailboxId> {
        (0..n).map(|i| MailboxId::new_validated(format!("u{i}"), "example.test".into())).collect()
    }

    /// A data directory as a process cut after its journal sync leaves it: the segment holds the
    /// records, nothing else was done. Returns the segment's path.
    fn crashed_after_journal_sync(data: &Path, records: &[Vec<u8>]) -> PathBuf {
        drop(Store::open(data).unwrap());
        let path = data.join(JOURNAL_DIR).join(segment_name(0x10));
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(r);
            bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        }
        bytes.resize(bytes.len() + 4096, 0);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn record(mailboxes: &[MailboxId], data: &[u8]) -> Vec<u8> {
        encode_record(42, &RecordMeta { unique: UNIQUE.into(), mailboxes: mailboxes.to_vec(), spool: None }, data)
    }

    fn new_file(data: &Path, m: &MailboxId, size: usize) -> PathBuf {
        m.dir(&data.join("mailboxes")).join("new").join(format!("{UNIQUE},S={size}"))
    }

    fn message_files(data: &Path, m: &MailboxId) -> Vec<PathBuf> {
        let dir = m.dir(&data.join("mailboxes"));
        ["new", "cur"]
            .iter()
            .flat_map(|s| fs::read_dir(dir.join(s)).into_iter().flatten().flatten())
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn replay_of_a_multi_mailbox_record_completes_all() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(3);
        let mut folder = mboxes.clone();
        folder.push(mboxes[0].with_folder("Junk"));
        crashed_after_journal_sync(dir.path(), &[record(&folder, b"hello\n")]);
        drop(Store::open(dir.path()).unwrap());
        for m in &folder {
            assert_eq!(fs::read(new_file(dir.path(), m, 6)).unwrap(), b"hello\n", "{m}");
        }
        assert!(mboxes[0].dir(&dir.path().join("mailboxes")).join(".Junk/maildirfolder").exists());
    }

    #[test]
    fn replay_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        let segment = crashed_after_journal_sync(dir.path(), &[record(&mboxes, b"once\n")]);
        let live = fs::read(&segment).unwrap();
        drop(Store::open(dir.path()).unwrap());
        // The reader moved one copy to cur/ meanwhile; then a cut lost the retire mark.
        let first = new_file(dir.path(), &mboxes[0], 5);
        let moved = first.parent().unwrap().parent().unwrap().join("cur").join(format!("{UNIQUE},S=5:2,S"));
        fs::rename(&first, &moved).unwrap();
        fs::write(&segment, &live).unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(message_files(dir.path(), &mboxes[0]), vec![moved], "no second copy");
        assert_eq!(message_files(dir.path(), &mboxes[1]).len(), 1);
        // And once retired, a third open does not replay it.
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(message_files(dir.path(), &mboxes[1]).len(), 1);
    }

    #[test]
    fn replay_rewrites_a_name_that_became_durable_without_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        crashed_after_journal_sync(dir.path(), &[record(&mboxes, b"the whole message\n")]);
        // The power cut kept the link in new/ (directory fsynced) but not the file's data.
        let target = new_file(dir.path(), &mboxes[0], 18);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, b"").unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(fs::read(&target).unwrap(), b"the whole message\n");
        assert_eq!(message_files(dir.path(), &mboxes[0]).len(), 1);
        assert_eq!(fs::read(new_file(dir.path(), &mboxes[1], 18)).unwrap(), b"the whole message\n");
    }

    #[test]
    fn replay_never_rewrites_a_delivered_copy_through_its_old_tmp_name() {
        // The background stage had linked the tmp file into the first mailbox when the process died:
        // the tmp name and that copy are one inode. Replay must not write through that name.
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        crashed_after_journal_sync(dir.path(), &[record(&mboxes, b"complete\n")]);
        let tmp = dir.path().join("tmp").join(UNIQUE);
        fs::write(&tmp, b"complete\n").unwrap();
        let first = new_file(dir.path(), &mboxes[0], 9);
        fs::create_dir_all(first.parent().unwrap()).unwrap();
        fs::hard_link(&tmp, &first).unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = inode(&first);
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(inode(&first), before, "the delivered copy was replaced");
        assert_eq!(fs::read(&first).unwrap(), b"complete\n");
        assert_eq!(fs::read(new_file(dir.path(), &mboxes[1], 9)).unwrap(), b"complete\n");
        assert_ne!(inode(&new_file(dir.path(), &mboxes[1], 9)), before, "written from the record, not the old name");
        assert!(!tmp.exists(), "the dead process's tmp name is cleaned");
    }

    #[test]
    fn a_torn_tail_record_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(1);
        let whole = record(&mboxes, b"acknowledged\n");
        let other =
            RecordMeta { unique: "1700000000.M1P4194305Q8.host".into(), mailboxes: mboxes.clone(), spool: None };
        let mut torn = encode_record(42, &other, b"never answered\n");
        let n = torn.len();
        torn[n - 3..].fill(0); // its last bytes never reached the disk
        crashed_after_journal_sync(dir.path(), &[whole, torn]);
        drop(Store::open(dir.path()).unwrap());
        let files = message_files(dir.path(), &mboxes[0]);
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(fs::read(&files[0]).unwrap(), b"acknowledged\n");
    }

    #[test]
    fn replay_places_a_queue_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (msg_dir, env_dir) = (dir.path().join("queue/msg"), dir.path().join("queue/env"));
        fs::create_dir_all(&msg_dir).unwrap();
        fs::create_dir_all(&env_dir).unwrap();
        let spool = Spool {
            msg_dir: msg_dir.clone(),
            sidecar_dir: env_dir.clone(),
            name: UNIQUE.into(),
            sidecar: b"env\n".to_vec(),
        };
        let meta = RecordMeta { unique: UNIQUE.into(), mailboxes: boxes(1), spool: Some(spool) };
        crashed_after_journal_sync(dir.path(), &[encode_record(42, &meta, b"relayed\n")]);
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(fs::read(msg_dir.join(UNIQUE)).unwrap(), b"relayed\n");
        assert_eq!(fs::read(env_dir.join(UNIQUE)).unwrap(), b"env\n");
        assert_eq!(fs::read(new_file(dir.path(), &boxes(1)[0], 8)).unwrap(), b"relayed\n");
    }

    #[test]
    fn a_record_that_cannot_be_replayed_stays_for_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let mboxes = boxes(2);
        let segment = crashed_after_journal_sync(dir.path(), &[record(&mboxes, b"later\n")]);
        let broken = mboxes[1].dir(&dir.path().join("mailboxes"));
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join("new"), b"not a directory").unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert!(segment.exists(), "the record was dropped");
        fs::remove_file(broken.join("new")).unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert!(mboxes.iter().all(|m| new_file(dir.path(), m, 6).exists()));
    }

    #[test]
    fn commits_go_through_the_journal_and_reach_every_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (msg_dir, env_dir) = (dir.path().join("queue/msg"), dir.path().join("queue/env"));
        fs::create_dir_all(&msg_dir).unwrap();
        fs::create_dir_all(&env_dir).unwrap();
        let mboxes = boxes(2);
        let mut ids = Vec::new();
        for i in 0..20 {
            let mut m = store.begin().unwrap();
            m.write(format!("message {i}\n").as_bytes()).unwrap();
            let id = m.id().to_string();
            let spool = (i % 5 == 0).then(|| Spool {
                msg_dir: msg_dir.clone(),
                sidecar_dir: env_dir.clone(),
                name: id.clone(),
                sidecar: b"env\n".to_vec(),
            });
            let d = m.commit_with(&mboxes, spool).wait().unwrap();
            if i % 5 == 0 {
                // A queue entry is answered once in place: the queue reads it at once.
                assert_eq!(fs::read(env_dir.join(&id)).unwrap(), b"env\n");
                assert!(msg_dir.join(&id).exists());
            }
            ids.push((d.id, d.size));
        }
        let segments: Vec<_> = fs::read_dir(dir.path().join(JOURNAL_DIR)).unwrap().flatten().collect();
        assert_eq!(segments.len(), 1, "one preallocated segment");
        assert_eq!(segments[0].metadata().unwrap().len(), SEGMENT_SIZE);
        drop(store); // waits for the background stage
        for m in &mboxes {
            assert_eq!(message_files(dir.path(), m).len(), 20);
        }
        for (id, size) in &ids {
            assert!(new_file_named(dir.path(), &mboxes[0], id, *size).exists());
        }
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "tmp files removed");
        let file = File::open(segments[0].path()).unwrap();
        let scanned = journal::scan(&file, SEGMENT_SIZE).unwrap();
        assert_eq!(scanned.len(), 20);
        assert!(scanned.iter().all(|s| !s.is_live), "every record retired");
    }

    fn new_file_named(data: &Path, m: &MailboxId, id: &str, size: u64) -> PathBuf {
        m.dir(&data.join("mailboxes")).join("new").join(format!("{id},S={size}"))
    }
}
