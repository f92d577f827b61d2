//! The commit intent record: what makes a multi-recipient delivery all-or-none across a crash.
//!
//! Linking one message into N mailboxes is N system calls; a crash between them would leave the
//! message in some mailboxes only, and the sender (who got no 250) retries, so those recipients get it
//! twice. So before the batch leader makes any link of a batch that holds a message for more than one
//! mailbox, it writes ONE record for the whole batch, naming for each such message its data file in
//! `<data-dir>/tmp/`, its final name and its mailboxes, and makes the record durable (one fdatasync).
//! After the batch is linked and its directories fsynced, the record is retired (its header zeroed). Messages
//! for a single mailbox need no record: one link is atomic.
//!
//! Each store has its own record file, `<data-dir>/intent/<unique name>`, created (64 KiB of zeros),
//! synced and fsynced into its directory once at open, and overwritten in place for every batch, so the
//! cost is one fdatasync of already allocated blocks per batch that needs it, none per message. At open, the record of every *dead* process
//! ([`crate::unique::is_dead_process_file`]) is read back and each message in it completed or rolled
//! back by the committer, before the data directory's tmp/ is cleaned and before a server opens its
//! listeners.
//!
//! Format (text, so that a human can read it): a header line `mailroom-intent 2 <body length>
//! <FNV-1a 64 of the body, hex>`, then one line per message: `<tmp name> TAB <final name> (TAB
//! <domain>/<local>[/.<folder>])... [TAB spool TAB <name> TAB <msg dir> TAB <sidecar dir>]`; bytes after it are
//! leftovers of longer records. The optional `spool` part names a queue entry ([`crate::Spool`]) made
//! in the same batch: a message with a spool always gets a record (it is at least two operations: the
//! message link and the sidecar rename). Version 1 records (no spool part) are still read. A file starting with a zero
//! byte holds no record. A record whose checksum does not match was torn by the crash while being
//! written, before any link of its batch was made: it is ignored.

use std::fs;
// The writer side (`IntentLog`) is an older version's: only tests still make records.
#[cfg(test)]
use std::fs::{File, OpenOptions};
#[cfg(test)]
use std::io::{self, Write};
#[cfg(test)]
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::address::{is_folder_name, validate_domain, validate_local, MailboxId};
#[cfg(test)]
use crate::fsync;
use crate::spool::{is_plain_name, is_safe_dir};

/// Name of the directory of intent records inside the data directory.
pub const INTENT_DIR: &str = "intent";
const MAGIC: &str = "mailroom-intent 2";
/// The header of records written before spools existed (read back at an upgrade).
const MAGIC_V1: &str = "mailroom-intent 1";
/// The field that starts a record line's spool part (never a mailbox: those contain a `/`).
const SPOOL_FIELD: &str = "spool";

/// One message of a batch: its data file, its final name, and every mailbox it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IntentEntry {
    /// File name under `<data-dir>/tmp/`.
    pub tmp_name: String,
    /// `<unique>,S=<size>`, the name in each `new/`.
    pub final_name: String,
    pub mailboxes: Vec<MailboxId>,
    /// The queue entry made in the same batch, if any.
    pub spool: Option<SpoolIntent>,
}

/// The names of a spool entry, as an intent record keeps them (the sidecar's content is in its
/// staging file, `<data-dir>/tmp/<tmp name>.sidecar`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpoolIntent {
    pub name: String,
    pub msg_dir: PathBuf,
    pub sidecar_dir: PathBuf,
}

/// Bytes of zeros a record file starts with, written and synced once at open, so that a record that
/// fits is an overwrite of allocated blocks: its fdatasync then has no size or allocation change to
/// commit to the journal, only the data. (A bigger record grows the file once.)
pub const INTENT_PREALLOCATE: usize = 64 * 1024;
/// What [`IntentLog::retire`] overwrites at offset 0: enough to destroy the header line.
#[cfg(test)]
const RETIRED: [u8; 32] = [0; 32];

/// A record file as an older version wrote it (kept so that tests can make one).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct IntentLog {
    path: PathBuf,
    file: File,
    /// True while a record is in the file (not yet retired).
    is_armed: bool,
}

#[cfg(test)]
impl IntentLog {
    /// Creates `<intent dir>/<name>` filled with [`INTENT_PREALLOCATE`] zeros, syncs it and fsyncs the
    /// directory, so later batches only overwrite and fdatasync the file.
    pub(crate) fn create(dir: &Path, name: &str) -> io::Result<IntentLog> {
        let path = dir.join(name);
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        let log = IntentLog { path, file, is_armed: false };
        log.file.write_all_at(&vec![0; INTENT_PREALLOCATE], 0)?;
        fsync::sync_all(&log.file)?;
        fsync::sync_dir(dir)?;
        Ok(log)
    }

    /// Writes the record of a batch over the previous one and makes it durable. Only then may its
    /// links be made. The header's length field tells where the record ends; older bytes after it are
    /// never read.
    pub(crate) fn arm(&mut self, entries: &[IntentEntry]) -> io::Result<()> {
        let record = encode(entries);
        self.is_armed = true;
        self.file.write_all_at(&record, 0)?;
        fsync::sync_data(&self.file)
    }

    /// The batch is done (linked and fsynced, or rolled back): zeros over the header mean nothing to
    /// recover. Not synced: replaying a finished batch is harmless (its data files are gone, its links
    /// exist).
    pub(crate) fn retire(&mut self) -> io::Result<()> {
        if !self.is_armed {
            return Ok(());
        }
        self.is_armed = false;
        self.file.write_all_at(&RETIRED, 0)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
impl Drop for IntentLog {
    /// The store is gone and every batch answered: nothing left to recover.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
fn encode(entries: &[IntentEntry]) -> Vec<u8> {
    let mut body = String::new();
    for e in entries {
        body.push_str(&e.tmp_name);
        body.push('\t');
        body.push_str(&e.final_name);
        for m in &e.mailboxes {
            body.push('\t');
            body.push_str(m.domain());
            body.push('/');
            body.push_str(m.local());
            if let Some(folder) = m.folder() {
                body.push_str("/.");
                body.push_str(folder);
            }
        }
        if let Some(sp) = &e.spool {
            // Checked by `Spool::validated` before the job reached the committer: no tabs or newlines.
            for field in [SPOOL_FIELD, &sp.name, &sp.msg_dir.to_string_lossy(), &sp.sidecar_dir.to_string_lossy()] {
                body.push('\t');
                body.push_str(field);
            }
        }
        body.push('\n');
    }
    let mut out = Vec::with_capacity(body.len() + 64);
    let _ = writeln!(out, "{MAGIC} {} {:016x}", body.len(), fnv1a64(body.as_bytes()));
    out.extend_from_slice(body.as_bytes());
    out
}

/// Whether a record file holds no record: empty, or retired (zeros where the header was).
pub(crate) fn is_retired(bytes: &[u8]) -> bool {
    bytes.first().is_none_or(|&b| b == 0)
}

/// The entries of a record; `None` if it is torn or not ours. Every name is checked again as
/// if it came from outside (a file name without separators, a mailbox that passes validation), so a
/// damaged record can never send a link somewhere else.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<IntentEntry>> {
    let newline = bytes.iter().take(128).position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut h = header.strip_prefix(MAGIC).or_else(|| header.strip_prefix(MAGIC_V1))?.split_whitespace();
    let len: usize = h.next()?.parse().ok()?;
    let sum = u64::from_str_radix(h.next()?, 16).ok()?;
    let body = bytes.get(newline + 1..)?.get(..len)?;
    if fnv1a64(body) != sum {
        return None;
    }
    let body = std::str::from_utf8(body).ok()?;
    let mut entries = Vec::new();
    for line in body.lines() {
        let mut fields = line.split('\t');
        let tmp_name = fields.next().filter(|s| is_plain_name(s))?.to_string();
        let final_name = fields.next().filter(|s| is_plain_name(s))?.to_string();
        let mut mailboxes = Vec::new();
        let mut spool = None;
        while let Some(m) = fields.next() {
            if m == SPOOL_FIELD {
                spool = Some(decode_spool(&mut fields)?);
                break;
            }
            let (domain, rest) = m.split_once('/')?;
            let (local, folder) = match rest.split_once("/.") {
                Some((local, folder)) => (local, Some(Some(folder).filter(|f| is_folder_name(f))?)),
                None => (rest, None),
            };
            let (domain, local) = (validate_domain(domain).ok()?, validate_local(local).ok()?);
            let inbox = MailboxId::new_validated(local, domain);
            mailboxes.push(match folder {
                Some(f) => inbox.with_folder(f),
                None => inbox,
            });
        }
        if fields.next().is_some() {
            return None;
        }
        entries.push(IntentEntry { tmp_name, final_name, mailboxes, spool });
    }
    Some(entries)
}

/// The three fields after `spool`, checked like everything else read back.
fn decode_spool<'a>(fields: &mut impl Iterator<Item = &'a str>) -> Option<SpoolIntent> {
    let name = fields.next().filter(|s| is_plain_name(s))?.to_string();
    let msg_dir = PathBuf::from(fields.next()?);
    let sidecar_dir = PathBuf::from(fields.next()?);
    if !is_safe_dir(&msg_dir) || !is_safe_dir(&sidecar_dir) {
        return None;
    }
    Some(SpoolIntent { name, msg_dir, sidecar_dir })
}

/// The records left by dead processes in `dir`, with their paths (to remove once recovered).
pub(crate) fn abandoned(dir: &Path, hostname: &str) -> Vec<(PathBuf, Vec<IntentEntry>)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let is_dead =
            entry.file_name().to_str().is_some_and(|n| crate::unique::is_dead_process_file(n, mtime, hostname));
        if !meta.is_file() || !is_dead {
            continue;
        }
        let record = match fs::read(entry.path()) {
            Ok(bytes) if is_retired(&bytes) => Vec::new(),
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %entry.path().display(), "ignoring a torn commit intent record (no link was made from it)");
                Vec::new()
            }),
            Err(error) => {
                tracing::warn!(path = %entry.path().display(), %error, "cannot read a commit intent record");
                continue;
            }
        };
        out.push((entry.path(), record));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tmp: &str, boxes: &[(&str, &str)]) -> IntentEntry {
        IntentEntry {
            tmp_name: tmp.into(),
            final_name: format!("{tmp},S=12"),
            mailboxes: boxes.iter().map(|(l, d)| MailboxId::new_validated(l.to_string(), d.to_string())).collect(),
            spool: None,
        }
    }

    #[test]
    fn folders_round_trip_and_are_checked() {
        let mut e = entry("1.M1P2Q6.h", &[("a", "example.test"), ("b", "example.test")]);
        e.mailboxes[1] = e.mailboxes[1].with_folder("Junk");
        let record = encode(std::slice::from_ref(&e));
        assert_eq!(decode(&record), Some(vec![e.clone()]));
        assert!(String::from_utf8_lossy(&record).contains("example.test/b/.Junk"));
        for bad in ["example.test/b/..", "example.test/b/.", "example.test/b/.x/y", "example.test/b/."] {
            let body = format!("1.M1P2Q6.h\t1.M1P2Q6.h,S=12\t{bad}\n");
            let mut forged = format!("{MAGIC} {} {:016x}\n", body.len(), fnv1a64(body.as_bytes())).into_bytes();
            forged.extend_from_slice(body.as_bytes());
            assert_eq!(decode(&forged), None, "{bad} must not decode");
        }
    }

    #[test]
    fn spool_parts_round_trip_and_are_checked() {
        let mut with_spool = entry("1.M1P2Q5.h", &[("a", "example.test")]);
        with_spool.spool = Some(SpoolIntent {
            name: "1.M1P2Q5.h".into(),
            msg_dir: "/data/queue/msg".into(),
            sidecar_dir: "/data/queue/env".into(),
        });
        let mut only_spool = with_spool.clone();
        only_spool.mailboxes.clear();
        let entries = vec![with_spool, only_spool, entry("1.M1P2Q6.h", &[("b", "example.test")])];
        assert_eq!(decode(&encode(&entries)), Some(entries));
        for tail in [
            "spool\tx\t/q/msg",
            "spool\t../x\t/q/msg\t/q/env",
            "spool\tx\tq/msg\t/q/env",
            "spool\tx\t/q/../m\t/q/env",
            "spool\tx\t/q/m\t/q/e\textra",
        ] {
            let body = format!("t\tf\td/a\t{tail}\n");
            let record = format!("{MAGIC} {} {:016x}\n{body}", body.len(), fnv1a64(body.as_bytes()));
            assert_eq!(decode(record.as_bytes()), None, "{tail:?}");
        }
        let body = "t\tf\td/a\n";
        let v1 = format!("{MAGIC_V1} {} {:016x}\n{body}", body.len(), fnv1a64(body.as_bytes()));
        assert_eq!(decode(v1.as_bytes()).map(|e| e.len()), Some(1), "version 1 records are still read");
    }

    #[test]
    fn records_round_trip_and_torn_ones_are_refused() {
        let entries = vec![
            entry("1.M1P2Q3.h", &[("a", "example.test"), ("b", "bücher.example")]),
            entry("1.M1P2Q4.h", &[("c", "example.test"), ("a", "example.test")]),
        ];
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes), Some(entries));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None, "torn");
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"older bytes after the record\n");
        assert_eq!(decode(&longer), decode(&bytes), "what follows the record is not read");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped), None, "checksum");
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&encode(&[])), Some(vec![]));
    }

    #[test]
    fn a_damaged_record_cannot_name_a_path_outside() {
        for line in ["../x\tf\td/a", "t\t../f\td/a", "t\tf\t../a/b", "t\tf\td/../a", "t\tf\td/a/b", "t\tf\t/etc"] {
            let body = format!("{line}\n");
            let record = format!("{MAGIC} {} {:016x}\n{body}", body.len(), fnv1a64(body.as_bytes()));
            assert_eq!(decode(record.as_bytes()), None, "{line:?}");
        }
    }

    #[test]
    fn arm_and_retire() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IntentLog::create(dir.path(), "1.M1P2Q3.h").unwrap();
        let long = vec![entry("1.M1P2Q3.h", &[("a", "example.test"), ("b", "example.test")]); 3];
        log.arm(&long).unwrap();
        let short = vec![entry("1.M1P2Q9.h", &[("a", "example.test"), ("b", "example.test")])];
        log.arm(&short).unwrap();
        let on_disk = fs::read(log.path()).unwrap();
        assert_eq!(decode(&on_disk), Some(short), "a shorter record replaces a longer one");
        assert_eq!(on_disk.len(), INTENT_PREALLOCATE, "overwritten in place");
        log.retire().unwrap();
        assert!(is_retired(&fs::read(log.path()).unwrap()));
        let path = log.path().to_path_buf();
        drop(log);
        assert!(!path.exists());
    }
}
