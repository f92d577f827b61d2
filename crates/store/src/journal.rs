//! The commit journal: what a 250 stands on.
//!
//! Every accepted message (and queue entry) is appended to the journal, `<data-dir>/journal/`, as one
//! record holding everything needed to deliver it again: its unique name, every mailbox it goes to
//! (Maildir++ folders included), its optional [`Spool`] (sidecar bytes included), and the message
//! bytes. The batch leader ([`crate::commit`]) appends a whole batch and fdatasyncs the segment ONCE;
//! only then are the waiters answered. The Maildir files are made durable afterwards, in the
//! background, and only then are the records retired.
//!
//! Segments are files named `<16 lowercase hex digits>.jnl` (a sequence number), [`SEGMENT_SIZE`]
//! bytes of zeros written, synced and fsynced into the directory once when created, and then
//! overwritten in place, so that a batch's fdatasync has no allocation or size change to commit, only
//! data. A segment whose records are all retired is reused from its start with a new random
//! generation (records of an earlier use carry the old one, so a scan never reads them as live, and
//! bytes inside an old message can never pass for a record). A record larger than a segment gets a
//! segment of its own, removed once retired.
//!
//! Record layout (little endian): [`HEADER_LEN`] bytes of header — magic `MRJ1`, a state byte
//! ([`LIVE`] or [`RETIRED`], the only byte ever rewritten), 3 zero bytes, the segment generation (u64),
//! the body length (u64), CRC-32 of generation, length and body (u32), 4 zero bytes — then the body:
//! unique name (u16 length + bytes), mailbox count (u16), each `<domain>/<local>[/.<folder>]` (u16 +
//! bytes), a spool flag byte and, if 1, its name, msg dir, sidecar dir (u16 + bytes each) and sidecar
//! (u32 + bytes), then the message length (u64) and the message. Records start at multiples of 8.
//!
//! A scan of a segment stops at the first record that is not whole (bad magic, checksum or
//! generation): a torn tail, which never got its 250 (the fdatasync that would have answered it did
//! not return, and no later one did either). Every name read back is validated again as if it came
//! from outside. Each segment is held under an exclusive `flock` by the process that writes it, so a
//! second process opening the same data directory (`mailroom mailbox list` beside a running server)
//! only replays the segments of dead processes.
//!
//! TEST-ONLY hooks, read from the environment and logged loudly: [`HOLD_ENV`] delays the background
//! stage after each journal sync, [`REPLAY_PAUSE_ENV`] sleeps after each record replayed at open.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::address::{is_folder_name, validate_domain, validate_local, MailboxId};
use crate::fsync;
use crate::spool::{is_plain_name, is_safe_dir, Spool};

/// Name of the journal directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";
/// Suffix of a segment file.
pub const SEGMENT_SUFFIX: &str = ".jnl";
/// Size of a segment: preallocated with zeros once, then overwritten in place. 1 MiB holds about 700
/// records of 1 KiB messages (several batches) and stays small beside a small data directory; a record
/// larger than this gets a segment of its own.
pub const SEGMENT_SIZE: u64 = 1 << 20;
/// Segments of [`SEGMENT_SIZE`] a store keeps at most (32 MiB). When every one holds unretired
/// records, a commit waits for the background stage to retire some (never more memory or disk).
pub const MAX_SEGMENTS: usize = 32;
/// How long a commit waits for journal space before it fails (451 4.3.0 rather than a hang).
pub const JOURNAL_FULL_WAIT: Duration = Duration::from_secs(30);
/// Bytes a leader collects before one write(2) into the segment, and the piece size when a large
/// message is copied from its tmp file into the journal (bounds the memory of a batch).
pub const WRITE_CHUNK: usize = 256 * 1024;
/// Length of a record header.
pub const HEADER_LEN: usize = 32;
const MAGIC: [u8; 4] = *b"MRJ1";
/// State byte of a record still to be made durable in its mailboxes.
pub const LIVE: u8 = b'L';
/// State byte of a record whose message is durable everywhere.
pub const RETIRED: u8 = b'R';
const STATE_OFFSET: u64 = 4;

/// TEST-ONLY: milliseconds the background stage waits after a journal sync before it touches the
/// message files (opens the window between the journal's sync and the files' sync).
pub const HOLD_ENV: &str = "MAILROOM_TEST_JOURNAL_HOLD_MS";
/// TEST-ONLY: milliseconds replay sleeps after each record (so that a cut can land during replay).
pub const REPLAY_PAUSE_ENV: &str = "MAILROOM_TEST_REPLAY_PAUSE_MS";

/// A test-only delay from the environment, logged loudly when set.
pub(crate) fn test_delay(var: &str) -> Option<Duration> {
    let ms: u64 = std::env::var(var).ok()?.parse().ok().filter(|&ms| ms > 0)?;
    tracing::warn!("{var}={ms}: TEST-ONLY delay in the commit journal; never set this in production");
    Some(Duration::from_millis(ms))
}

/// What a record says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    /// The Maildir unique name; the file is `<unique>,S=<size>` in each `new/`.
    pub unique: String,
    pub mailboxes: Vec<MailboxId>,
    pub spool: Option<Spool>,
}

impl RecordMeta {
    pub(crate) fn final_name(&self, size: u64) -> String {
        format!("{},S={size}", self.unique)
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Names are short (validated): a u16 length always fits; longer ones are cut by the check below.
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
}

fn mailbox_field(m: &MailboxId) -> String {
    match m.folder() {
        Some(f) => format!("{}/{}/.{f}", m.domain(), m.local()),
        None => format!("{}/{}", m.domain(), m.local()),
    }
}

/// The body of a record up to (and including) the message length; the message bytes follow it.
pub(crate) fn encode_meta(meta: &RecordMeta, data_len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_str16(&mut out, &meta.unique);
    out.extend_from_slice(&(meta.mailboxes.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for m in meta.mailboxes.iter().take(u16::MAX as usize) {
        put_str16(&mut out, &mailbox_field(m));
    }
    match &meta.spool {
        None => out.push(0),
        Some(sp) => {
            out.push(1);
            put_str16(&mut out, &sp.name);
            put_str16(&mut out, &sp.msg_dir.to_string_lossy());
            put_str16(&mut out, &sp.sidecar_dir.to_string_lossy());
            out.extend_from_slice(&(sp.sidecar.len() as u32).to_le_bytes());
            out.extend_from_slice(&sp.sidecar);
        }
    }
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

/// The header of a record whose body (meta and data) has `body_len` bytes and checksum `crc`.
pub(crate) fn encode_header(generation: u64, body_len: u64, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = LIVE;
    h[8..16].copy_from_slice(&generation.to_le_bytes());
    h[16..24].copy_from_slice(&body_len.to_le_bytes());
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A checksum over what the header binds: generation, body length, then the body (fed in pieces).
pub(crate) fn start_crc(generation: u64, body_len: u64) -> crc32fast::Hasher {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&generation.to_le_bytes());
    crc.update(&body_len.to_le_bytes());
    crc
}

/// A whole record in memory (tests).
#[cfg(test)]
pub(crate) fn encode_record(generation: u64, meta: &RecordMeta, data: &[u8]) -> Vec<u8> {
    let body_meta = encode_meta(meta, data.len() as u64);
    let body_len = (body_meta.len() + data.len()) as u64;
    let mut crc = start_crc(generation, body_len);
    crc.update(&body_meta);
    crc.update(data);
    let mut out = Vec::with_capacity(HEADER_LEN + body_len as usize + 8);
    out.extend_from_slice(&encode_header(generation, body_len, crc.finalize()));
    out.extend_from_slice(&body_meta);
    out.extend_from_slice(data);
    out
}

/// Bytes a record with this body takes in a segment (the next one starts 8-aligned).
pub(crate) fn record_span(body_len: u64) -> u64 {
    (HEADER_LEN as u64 + body_len).div_ceil(8) * 8
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<usize> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize)
    }
    fn str16(&mut self) -> Option<&'a str> {
        let n = self.u16()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

fn decode_mailbox(m: &str) -> Option<MailboxId> {
    let (domain, rest) = m.split_once('/')?;
    let (local, folder) = match rest.split_once("/.") {
        Some((local, folder)) => (local, Some(Some(folder).filter(|f| is_folder_name(f))?)),
        None => (rest, None),
    };
    let inbox = MailboxId::new_validated(validate_local(local).ok()?, validate_domain(domain).ok()?);
    Some(match folder {
        Some(f) => inbox.with_folder(f),
        None => inbox,
    })
}

/// The meta and message bytes of a record body, every name checked again; `None` if malformed.
pub(crate) fn decode_body(body: &[u8]) -> Option<(RecordMeta, &[u8])> {
    let mut r = Reader(body);
    let unique = r.str16().filter(|s| is_plain_name(s) && !s.contains(','))?.to_string();
    let count = r.u16()?;
    let mut mailboxes = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        mailboxes.push(decode_mailbox(r.str16()?)?);
    }
    let spool = match r.take(1)?[0] {
        0 => None,
        1 => {
            let name = r.str16().filter(|s| is_plain_name(s))?.to_string();
            let msg_dir = PathBuf::from(r.str16()?);
            let sidecar_dir = PathBuf::from(r.str16()?);
            if !is_safe_dir(&msg_dir) || !is_safe_dir(&sidecar_dir) {
                return None;
            }
            let n = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
            Some(Spool { msg_dir, sidecar_dir, name, sidecar: r.take(n)?.to_vec() })
        }
        _ => return None,
    };
    let len = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let data = r.take(usize::try_from(len).ok()?)?;
    if !r.0.is_empty() {
        return None;
    }
    Some((RecordMeta { unique, mailboxes, spool }, data))
}

/// One record found by a scan.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub offset: u64,
    pub is_live: bool,
    /// `None`: whole (checksum right) but not decodable; skipped, never replayed.
    pub record: Option<(RecordMeta, Vec<u8>)>,
}

/// Reads the records of a segment from its start, up to the first one that is not whole or not of
/// the generation of the first. Memory: one record at a time (bounded by the message size limit).
pub(crate) fn scan(file: &File, size: u64) -> io::Result<Vec<Scanned>> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut generation = None;
    while offset + HEADER_LEN as u64 <= size {
        let mut h = [0u8; HEADER_LEN];
        file.read_exact_at(&mut h, offset)?;
        let gen = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        let body_len = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(h[24..28].try_into().unwrap_or_default());
        let is_ours = h[..4] == MAGIC && matches!(h[4], LIVE | RETIRED) && generation.is_none_or(|g| g == gen);
        if !is_ours || body_len > size - offset - HEADER_LEN as u64 {
            break;
        }
        let mut body = vec![0u8; body_len as usize];
        file.read_exact_at(&mut body, offset + HEADER_LEN as u64)?;
        let mut sum = start_crc(gen, body_len);
        sum.update(&body);
        if sum.finalize() != crc {
            break;
        }
        generation = Some(gen);
        let is_live = h[4] == LIVE;
        let record = if is_live { decode_body(&body).map(|(m, d)| (m, d.to_vec())) } else { None };
        out.push(Scanned { offset, is_live, record });
        offset += record_span(body_len);
    }
    Ok(out)
}

/// Marks the record at `offset` retired (one byte, rewritten in place).
pub(crate) fn retire_at(file: &File, offset: u64) -> io::Result<()> {
    file.write_all_at(&[RETIRED], offset + STATE_OFFSET)
}

/// A random generation for a segment's next use (unpredictable, so that no message content can be
/// made to look like a record of a later use).
pub(crate) fn new_generation() -> u64 {
    let rng = ring::rand::SystemRandom::new();
    ring::rand::generate::<[u8; 8]>(&rng).map(|g| u64::from_le_bytes(g.expose())).unwrap_or_else(|_| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    })
}

/// Takes the exclusive lock of a segment without waiting: `Ok(false)` when another process holds it.
/// A file system without `flock` is used unlocked (logged once).
pub(crate) fn try_lock(file: &File) -> bool {
    match file.try_lock() {
        Ok(()) => true,
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(error)) => {
            tracing::warn!(%error, "cannot lock a journal segment; using it unlocked");
            true
        }
    }
}

/// The sequence number of a segment file name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

/// One segment this store writes.
pub(crate) struct Segment {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    pub generation: u64,
    /// Where the next record goes.
    pub offset: u64,
    /// Records written and not yet retired.
    pub live: usize,
}

/// Where a record is: its segment and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub seq: u64,
    pub offset: u64,
}

/// This store's segments, shared by the leader (appends) and the background stage (retires).
pub(crate) struct Journal {
    pub dir: PathBuf,
    state: Mutex<Ring>,
    retired: Condvar,
}

struct Ring {
    segments: BTreeMap<u64, Segment>,
    current: Option<u64>,
    next_seq: u64,
}

/// Space reserved for one record.
pub(crate) struct Reserved {
    pub place: Place,
    pub file: Arc<File>,
    pub generation: u64,
}

impl Journal {
    /// A journal in `dir` (which exists) starting with `adopted` segments (replayed, all retired) and
    /// numbering new ones after `max_seq`.
    pub(crate) fn new(dir: PathBuf, adopted: Vec<(u64, Segment)>, max_seq: u64) -> Journal {
        let segments: BTreeMap<u64, Segment> = adopted.into_iter().collect();
        Journal {
            dir,
            state: Mutex::new(Ring { segments, current: None, next_seq: max_seq + 1 }),
            retired: Condvar::new(),
        }
    }

    /// Reserves `span` bytes for a record: in the current segment, else a reused or new one. With
    /// `may_wait` false it returns `Ok(None)` instead of waiting for space (the leader first syncs and
    /// answers what it already wrote); with true it waits up to [`JOURNAL_FULL_WAIT`].
    pub(crate) fn reserve(&self, span: u64, may_wait: bool) -> io::Result<Option<Reserved>> {
        let deadline = Instant::now() + JOURNAL_FULL_WAIT;
        let mut ring = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = ring.take_room(span) {
                return Ok(Some(r));
            }
            if span > SEGMENT_SIZE {
                // A segment of its own, never current: removed once its one record is retired.
                let seq = ring.next_seq;
                ring.next_seq += 1;
                let mut segment = create_segment(&self.dir, seq, span.div_ceil(4096) * 4096)?;
                segment.offset = span;
                segment.live = 1;
                let r = Reserved {
                    place: Place { seq, offset: 0 },
                    file: segment.file.clone(),
                    generation: segment.generation,
                };
                ring.segments.insert(seq, segment);
                return Ok(Some(r));
            }
            if ring.full_size_count() < MAX_SEGMENTS {
                let seq = ring.next_seq;
                ring.next_seq += 1;
                let segment = create_segment(&self.dir, seq, SEGMENT_SIZE)?;
                ring.segments.insert(seq, segment);
                ring.current = Some(seq);
                continue;
            }
            if !may_wait {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::other("the commit journal is full (the background stage is behind)"));
            }
            ring = self.retired.wait_timeout(ring, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Undoes reservations of a batch that failed before its sync (never answered 250): marks them
    /// retired (best effort) and stops writing into their segment, since a record there may be torn,
    /// and a scan stops at a torn record: nothing acknowledged may follow one. The segment is reused
    /// from its start once its other records are retired.
    pub(crate) fn abandon(&self, places: &[Place]) {
        {
            let mut ring = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if places.iter().any(|p| Some(p.seq) == ring.current) {
                ring.current = None;
            }
        }
        self.retire(places);
    }

    /// Retires records (their state byte rewritten) and frees segments with nothing live left; returns
    /// the files written, for the caller to sync outside the lock.
    pub(crate) fn retire(&self, places: &[Place]) -> Vec<Arc<File>> {
        let mut touched: Vec<Arc<File>> = Vec::new();
        let mut ring = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for p in places {
            let Some(seg) = ring.segments.get_mut(&p.seq) else { continue };
            if let Err(error) = retire_at(&seg.file, p.offset) {
                // Left live: replayed (idempotently) at the next open.
                tracing::warn!(path = %seg.path.display(), %error, "cannot retire a journal record");
            }
            seg.live = seg.live.saturating_sub(1);
            if !touched.iter().any(|f| Arc::ptr_eq(f, &seg.file)) {
                touched.push(seg.file.clone());
            }
        }
        // A segment of its own for one large record goes once done.
        let done: Vec<u64> =
            ring.segments.iter().filter(|(_, s)| s.live == 0 && s.size != SEGMENT_SIZE).map(|(seq, _)| *seq).collect();
        for seq in done {
            if let Some(seg) = ring.segments.remove(&seq) {
                touched.retain(|f| !Arc::ptr_eq(f, &seg.file));
                let _ = fs::remove_file(&seg.path);
            }
        }
        drop(ring);
        self.retired.notify_all();
        touched
    }
}

impl Ring {
    fn full_size_count(&self) -> usize {
        self.segments.values().filter(|s| s.size == SEGMENT_SIZE).count()
    }

    fn take_room(&mut self, span: u64) -> Option<Reserved> {
        let fits = |s: &Segment| s.offset + span <= s.size;
        let seq = match self.current.filter(|c| self.segments.get(c).is_some_and(fits)) {
            Some(c) => c,
            None => {
                // Reuse a segment with nothing live, from its start, under a new generation.
                let (&seq, seg) = self.segments.iter_mut().find(|(_, s)| s.live == 0 && s.size == SEGMENT_SIZE)?;
                seg.offset = 0;
                seg.generation = new_generation();
                self.current = Some(seq);
                seq
            }
        };
        let seg = self.segments.get_mut(&seq)?;
        let place = Place { seq, offset: seg.offset };
        seg.offset += span;
        seg.live += 1;
        Some(Reserved { place, file: seg.file.clone(), generation: seg.generation })
    }
}

/// Creates segment `seq` of `size` bytes of zeros, synced, fsynced into the directory, and locked.
fn create_segment(dir: &Path, seq: u64, size: u64) -> io::Result<Segment> {
    let path = dir.join(segment_name(seq));
    // Under the directory's lock, so that a process replaying at open never sees it unlocked.
    let dir_lock = File::open(dir)?;
    if let Err(error) = dir_lock.lock() {
        tracing::warn!(dir = %dir.display(), %error, "cannot lock the journal directory");
    }
    let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    try_lock(&file);
    drop(dir_lock);
    let result = (|| {
        let zeros = vec![0u8; WRITE_CHUNK];
        let mut written = 0u64;
        while written < size {
            let n = (size - written).min(WRITE_CHUNK as u64) as usize;
            file.write_all_at(&zeros[..n], written)?;
            written += n as u64;
        }
        fsync::sync_all(&file)?;
        fsync::sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    tracing::debug!(path = %path.display(), size, "journal segment created");
    Ok(Segment { path, file: Arc::new(file), size, generation: new_generation(), offset: 0, live: 0 })
}

/// Collects consecutive record bytes for one write(2) at `start` of a segment.
pub(crate) struct Appender {
    pub file: Arc<File>,
    pub start: u64,
    pub buf: Vec<u8>,
}

impl Appender {
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.start)?;
            self.start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Write for Appender {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Appender::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(unique: &str, boxes: &[(&str, &str)]) -> RecordMeta {
        RecordMeta {
            unique: unique.into(),
            mailboxes: boxes.iter().map(|(l, d)| MailboxId::new_validated(l.to_string(), d.to_string())).collect(),
            spool: None,
        }
    }

    fn segment_with(records: &[Vec<u8>]) -> (tempfile::TempDir, File, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(r);
            bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        }
        bytes.resize(64 * 1024, 0);
        fs::write(&path, &bytes).unwrap();
        (dir, File::open(&path).unwrap(), bytes.len() as u64)
    }

    #[test]
    fn records_round_trip_with_folders_and_spool() {
        let mut m = meta("1.M1P2Q3.h", &[("a", "example.test"), ("b", "bücher.example")]);
        m.mailboxes[1] = m.mailboxes[1].with_folder("Junk");
        m.spool = Some(Spool {
            msg_dir: "/data/queue/msg".into(),
            sidecar_dir: "/data/queue/env".into(),
            name: "1.M1P2Q3.h".into(),
            sidecar: b"envelope = 1\n".to_vec(),
        });
        let rec = encode_record(7, &m, b"Subject: hi\n\nbody\n");
        let (_dir, file, size) = segment_with(&[rec.clone(), encode_record(7, &meta("2.M1P2Q4.h", &[]), b"x")]);
        let found = scan(&file, size).unwrap();
        assert_eq!(found.len(), 2);
        let (got, data) = found[0].record.clone().unwrap();
        assert_eq!(got, m);
        assert_eq!(data, b"Subject: hi\n\nbody\n");
        assert!(found[0].is_live);
        assert_eq!(found[1].offset, record_span((rec.len() - HEADER_LEN) as u64));
    }

    #[test]
    fn a_torn_tail_is_ignored_and_ends_the_scan() {
        let a = encode_record(7, &meta("1.M1P2Q3.h", &[("a", "example.test")]), b"first");
        let mut b = encode_record(7, &meta("1.M1P2Q4.h", &[("a", "example.test")]), b"second message");
        let last = b.len() - 2;
        b[last] ^= 0x55; // the end of the message never reached the disk
        let c = encode_record(7, &meta("1.M1P2Q5.h", &[("a", "example.test")]), b"third");
        let (_dir, file, size) = segment_with(&[a, b, c]);
        let found = scan(&file, size).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].record.as_ref().unwrap().1, b"first");
    }

    #[test]
    fn records_of_another_generation_end_the_scan() {
        // A reused segment: new records (generation 9) over older ones (generation 7).
        let new = encode_record(9, &meta("1.M1P2Q8.h", &[("a", "example.test")]), b"new");
        let old = encode_record(7, &meta("1.M1P2Q1.h", &[("a", "example.test")]), b"old, live in its day");
        let (_dir, file, size) = segment_with(&[new, old]);
        let found = scan(&file, size).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].record.as_ref().unwrap().1, b"new");
    }

    #[test]
    fn retired_records_are_skipped_not_replayed() {
        let a = encode_record(7, &meta("1.M1P2Q3.h", &[("a", "example.test")]), b"first");
        let b = encode_record(7, &meta("1.M1P2Q4.h", &[("a", "example.test")]), b"second");
        let (dir, _, size) = segment_with(&[a, b]);
        let path = dir.path().join(segment_name(1));
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        retire_at(&file, 0).unwrap();
        let found = scan(&file, size).unwrap();
        assert_eq!(found.len(), 2);
        assert!(!found[0].is_live && found[0].record.is_none());
        assert!(found[1].is_live);
    }

    #[test]
    fn damaged_names_never_decode() {
        for bad in ["example.test/../x", "example.test/b/..", "../a/b", "example.test/b/.x/y", "d/a/b"] {
            let mut body = Vec::new();
            put_str16(&mut body, "1.M1P2Q3.h");
            body.extend_from_slice(&1u16.to_le_bytes());
            put_str16(&mut body, bad);
            body.push(0);
            body.extend_from_slice(&0u64.to_le_bytes());
            assert!(decode_body(&body).is_none(), "{bad}");
        }
        let mut m = meta("1.M1P2Q3.h", &[]);
        m.spool =
            Some(Spool { msg_dir: "q/msg".into(), sidecar_dir: "/q/env".into(), name: "x".into(), sidecar: vec![] });
        let body = encode_meta(&m, 0);
        assert!(decode_body(&body).is_none(), "a relative spool directory");
        assert!(decode_body(&encode_meta(&meta("../x", &[]), 0)).is_none());
    }

    #[test]
    fn segment_names_parse() {
        assert_eq!(parse_segment_name(&segment_name(0x2a)), Some(0x2a));
        assert_eq!(segment_name(1), "0000000000000001.jnl");
        assert_eq!(parse_segment_name("000000000000002A.jnl"), None);
        assert_eq!(parse_segment_name("2a.jnl"), None);
        assert_eq!(parse_segment_name("0000000000000001.tmp"), None);
    }

    #[test]
    fn full_segments_are_reused_and_a_full_journal_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_path_buf(), Vec::new(), 0);
        let big = SEGMENT_SIZE / 2 + 8;
        let mut places = Vec::new();
        for _ in 0..MAX_SEGMENTS {
            places.push(journal.reserve(big, false).unwrap().unwrap().place);
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), MAX_SEGMENTS, "one segment per record");
        assert!(journal.reserve(big, false).unwrap().is_none(), "full: the leader must wait");
        let first = places[0];
        let touched = journal.retire(&[first]);
        assert_eq!(touched.len(), 1);
        let again = journal.reserve(big, false).unwrap().unwrap();
        assert_eq!(again.place, Place { seq: first.seq, offset: 0 }, "the retired segment is reused");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), MAX_SEGMENTS, "no new file");
        let oversized = journal.reserve(SEGMENT_SIZE + 1, false).unwrap().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), MAX_SEGMENTS + 1);
        journal.retire(&[oversized.place]);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            MAX_SEGMENTS,
            "a segment of its own goes once its record is retired"
        );
    }
}
