//! Per-user quotas and the Maildir++ `maildirsize` file that keeps each Maildir's usage.
//!
//! Owns [`Quota`] (a user's limits, from `users.toml`), [`Usage`], and the `maildirsize` file at the
//! root of a user's Maildir, in the Maildir++ quota format that Dovecot's quota plugin (`quota =
//! maildir`) reads and writes too: the first line is the quota definition (`<bytes>S,<count>C`), every
//! further line a delta `<bytes> <count>` (a delivery adds one, a reader expunging mail may add negative
//! ones). Usage is the sum of the deltas, so reading it costs one small file read, never a stat per
//! message.
//!
//! The file is a cache. It is recalculated (every message file in `new/` and `cur/` of the inbox and of
//! each Maildir++ folder `.NAME/`, sizes from the `,S=` of the name) and replaced atomically when it is
//! missing or does not parse, when its definition line differs from the user's quota, when it has grown
//! to [`MAX_MAILDIRSIZE`] bytes, when a total is negative, or when it says "over quota" and is older than
//! [`STALE_AFTER`] (the Maildir++ rules: mail may have been removed by programs that do not write deltas).
//! A delivery appends its line after the commit; a crash between the two leaves usage one message low
//! until the next recalculation, never a message lost or refused. A recalculation that runs while another
//! delivery to the same Maildir is between its link and its append counts that message twice (the
//! Maildir++ race Dovecot has too); the file's growth to [`MAX_MAILDIRSIZE`] or the stale rule corrects it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{io_err, StoreError};

/// Name of the Maildir++ quota file at the root of a Maildir.
pub const MAILDIRSIZE: &str = "maildirsize";
/// Maildir++ quota spec: a `maildirsize` of this size or more is recalculated (it has collected enough
/// deltas that summing them costs more than starting over).
pub const MAX_MAILDIRSIZE: u64 = 5120;
/// Maildir++ quota spec: a `maildirsize` that says "over quota" and is older than this is recalculated
/// before it refuses anything (mail deleted by a reader that writes no deltas).
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// A user's limits; 0 is "no limit" for either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Octets of stored messages (the sum of their sizes as stored).
    pub bytes: u64,
    /// Number of messages.
    pub messages: u64,
}

/// What a Maildir holds: octets and messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

/// Whether one more message fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Fits,
    /// Usage is at or beyond a limit (RCPT: 452 4.2.2, temporary: the user may make room).
    Full,
    /// The declared size (MAIL FROM SIZE=) would take usage beyond the byte limit (552 5.2.2).
    TooLarge,
}

impl Quota {
    pub fn is_unlimited(&self) -> bool {
        self.bytes == 0 && self.messages == 0
    }

    /// The Maildir++ definition line, as Dovecot writes it: `<bytes>S,<count>C`, a limit of 0 left out.
    pub fn definition(&self) -> String {
        let mut parts = Vec::new();
        if self.bytes > 0 {
            parts.push(format!("{}S", self.bytes));
        }
        if self.messages > 0 {
            parts.push(format!("{}C", self.messages));
        }
        parts.join(",")
    }

    fn is_over(&self, usage: Usage) -> bool {
        (self.bytes > 0 && usage.bytes >= self.bytes) || (self.messages > 0 && usage.messages >= self.messages)
    }

    /// Whether a message fits beside `usage`: full when a limit is reached, too large when the declared
    /// size would cross the byte limit. The size actually received is not checked again: the message
    /// accepted at RCPT may take usage past the limit (Maildir++ and Dovecot's quota grace do the same),
    /// and the next one is refused.
    pub fn room(&self, usage: Usage, declared: Option<u64>) -> Room {
        if self.is_over(usage) {
            return Room::Full;
        }
        match declared {
            Some(size) if self.bytes > 0 && usage.bytes.saturating_add(size) > self.bytes => Room::TooLarge,
            _ => Room::Fits,
        }
    }
}

/// Parses a size as `mailroom user quota` takes it: octets, or with a K/M/G/T suffix (powers of 1024,
/// an optional trailing `B`); `0` is no limit.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').filter(|s| !s.is_empty()).unwrap_or(&t);
    let (digits, shift) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// Formats octets the way [`parse_size`] reads them back, exactly (`100M`, `1536K`, `1000`).
pub fn format_size(bytes: u64) -> String {
    for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes > 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Usage of the Maildir at `root` under `quota`; see the module doc for when it is recalculated.
pub fn usage(root: &Path, quota: Quota, now: SystemTime) -> Result<Usage, StoreError> {
    let path = root.join(MAILDIRSIZE);
    if let Some(usage) = read_cached(&path, quota, now) {
        return Ok(usage);
    }
    let usage = scan(root)?;
    if root.is_dir() {
        write_file(root, quota, usage)?;
    }
    Ok(usage)
}

/// The usage `maildirsize` states, when it is there, parses, matches `quota` and is not stale.
fn read_cached(path: &Path, quota: Quota, now: SystemTime) -> Option<Usage> {
    let mut file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    if meta.len() >= MAX_MAILDIRSIZE {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let (definition, bytes, messages) = parse(&text)?;
    if definition != quota.definition() || bytes < 0 || messages < 0 {
        return None;
    }
    let usage = Usage { bytes: bytes as u64, messages: messages as u64 };
    let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
    if quota.is_over(usage) && age > STALE_AFTER {
        return None;
    }
    Some(usage)
}

/// Like [`usage`], but never writes: a stale or missing file is recalculated in memory only. For
/// readers that may run as another user than the server (`mailroom user list`), so that they leave no
/// file the server cannot replace or append to.
pub fn peek(root: &Path, quota: Quota, now: SystemTime) -> Result<Usage, StoreError> {
    match read_cached(&root.join(MAILDIRSIZE), quota, now) {
        Some(usage) => Ok(usage),
        None => scan(root),
    }
}

/// The definition line and the summed deltas; None for anything malformed (a line cut by a crash).
fn parse(text: &str) -> Option<(&str, i64, i64)> {
    if !text.ends_with('\n') {
        return None;
    }
    let mut lines = text.lines();
    let definition = lines.next()?.trim();
    let (mut bytes, mut messages) = (0i64, 0i64);
    for line in lines {
        let mut fields = line.split_whitespace();
        let (b, m) = (fields.next()?.parse::<i64>().ok()?, fields.next()?.parse::<i64>().ok()?);
        if fields.next().is_some() {
            return None;
        }
        bytes = bytes.checked_add(b)?;
        messages = messages.checked_add(m)?;
    }
    Some((definition, bytes, messages))
}

/// Counts every message of the Maildir at `root`: `new/` and `cur/` of the inbox and of each Maildir++
/// folder (`.NAME/`). Sizes come from `,S=<size>` in the name when it is there (as Dovecot does), else
/// from a stat. A Maildir not created yet is empty.
pub fn scan(root: &Path) -> Result<Usage, StoreError> {
    let mut usage = Usage::default();
    count_folder(root, &mut usage)?;
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(usage),
        Err(e) => return Err(StoreError::io("read", root, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_folder = name.to_str().is_some_and(|n| n.starts_with('.') && n != "." && n != "..");
        if is_folder && entry.file_type().is_ok_and(|t| t.is_dir()) {
            count_folder(&entry.path(), &mut usage)?;
        }
    }
    Ok(usage)
}

fn count_folder(dir: &Path, usage: &mut Usage) -> Result<(), StoreError> {
    for sub in ["new", "cur"] {
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let size = match size_in_name(name) {
                Some(size) => size,
                // Removed meanwhile (a reader moved it to cur/): it is counted there, or gone.
                None => match entry.metadata() {
                    Ok(m) if m.is_file() => m.len(),
                    _ => continue,
                },
            };
            usage.bytes += size;
            usage.messages += 1;
        }
    }
    Ok(())
}

/// The `S=<size>` field of a Maildir file name (`unique,S=123:2,S` or `unique,S=123,W=130`).
fn size_in_name(name: &str) -> Option<u64> {
    let fields = name.split(':').next()?;
    fields.split(',').skip(1).find_map(|f| f.strip_prefix("S=")).and_then(|s| s.parse().ok())
}

/// Replaces `maildirsize` with the definition and one line of totals: a temporary file beside it, then a
/// rename (a reader sees the old file or the new one, never half of one).
fn write_file(root: &Path, quota: Quota, usage: Usage) -> Result<(), StoreError> {
    let text = format!("{}\n{} {}\n", quota.definition(), usage.bytes, usage.messages);
    let tmp = root.join(format!("{MAILDIRSIZE}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, root.join(MAILDIRSIZE)).map_err(io_err("rename", &tmp))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Appends a delivery's delta line, in one write(2) on an O_APPEND descriptor (Dovecot appends the
/// same way). Nothing when there is no file yet.
pub(crate) fn append(root: &Path, size: u64) -> Result<(), StoreError> {
    let path = root.join(MAILDIRSIZE);
    let mut file = match OpenOptions::new().append(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("open", &path, e)),
    };
    file.write_all(format!("{size} 1\n").as_bytes()).map_err(io_err("append to", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(root: &Path, sub: &str, name: &str, size: usize) {
        fs::create_dir_all(root.join(sub)).unwrap();
        fs::write(root.join(sub).join(name), vec![b'x'; size]).unwrap();
    }

    const Q: Quota = Quota { bytes: 1000, messages: 10 };

    #[test]
    fn sizes_and_definitions() {
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("512KB"), Some(512 << 10));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(format_size(100 << 20), "100M");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(Q.definition(), "1000S,10C");
        assert_eq!(Quota { bytes: 0, messages: 5 }.definition(), "5C");
        assert_eq!(size_in_name("1.M1P2Q3.h,S=123:2,S"), Some(123));
        assert_eq!(size_in_name("1.M1P2Q3.h,S=123,W=130"), Some(123));
        assert_eq!(size_in_name("1.M1P2Q3.h"), None);
    }

    #[test]
    fn a_missing_file_is_recalculated_from_every_folder_and_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        deliver(root, "new", "a,S=100", 100);
        deliver(root, "cur", "b,S=50:2,S", 50);
        deliver(root, ".shop/new", "c", 30); // no S=: stat
        deliver(root, "tmp", "d,S=999", 1); // tmp/ is not mail yet
        let u = usage(root, Q, SystemTime::now()).unwrap();
        assert_eq!(u, Usage { bytes: 180, messages: 3 });
        assert_eq!(fs::read_to_string(root.join(MAILDIRSIZE)).unwrap(), "1000S,10C\n180 3\n");
    }

    #[test]
    fn deltas_are_summed_without_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join(MAILDIRSIZE), "1000S,10C\n100 1\n").unwrap();
        append(root, 40).unwrap();
        fs::OpenOptions::new().append(true).open(root.join(MAILDIRSIZE)).unwrap().write_all(b"-20 -1\n").unwrap();
        // No message files at all: the numbers can only come from the file.
        assert_eq!(usage(root, Q, SystemTime::now()).unwrap(), Usage { bytes: 120, messages: 1 });
        assert_eq!(peek(root, Q, SystemTime::now()).unwrap(), Usage { bytes: 120, messages: 1 });
        // A definition that differs: counted, and left alone by peek.
        let other = Quota { bytes: 5, messages: 0 };
        assert_eq!(peek(root, other, SystemTime::now()).unwrap(), Usage::default());
        assert!(fs::read_to_string(root.join(MAILDIRSIZE)).unwrap().starts_with("1000S,10C\n"));
    }

    #[test]
    fn stale_or_foreign_files_are_recalculated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        deliver(root, "new", "a,S=10", 10);
        let now = SystemTime::now();
        let recalculated = Usage { bytes: 10, messages: 1 };
        for text in [
            "2000S,10C\n500 5\n".to_string(),               // another definition
            "1000S,10C\n500 5".to_string(),                 // a line cut short
            "1000S,10C\n-500 -5\n".to_string(),             // negative
            format!("1000S,10C\n{}", "1 0\n".repeat(2600)), // too large
        ] {
            fs::write(root.join(MAILDIRSIZE), &text).unwrap();
            assert_eq!(usage(root, Q, now).unwrap(), recalculated, "{:?}", &text[..text.len().min(30)]);
        }
        // Over quota: believed while fresh, recalculated once older than 15 minutes.
        fs::write(root.join(MAILDIRSIZE), "1000S,10C\n5000 5\n").unwrap();
        assert_eq!(usage(root, Q, now).unwrap().bytes, 5000);
        assert_eq!(usage(root, Q, now + STALE_AFTER + Duration::from_secs(1)).unwrap(), recalculated);
    }

    #[test]
    fn room_for_one_more() {
        let u = |bytes, messages| Usage { bytes, messages };
        assert_eq!(Q.room(u(999, 9), None), Room::Fits);
        assert_eq!(Q.room(u(1000, 0), None), Room::Full);
        assert_eq!(Q.room(u(0, 10), None), Room::Full);
        assert_eq!(Q.room(u(900, 0), Some(100)), Room::Fits);
        assert_eq!(Q.room(u(900, 0), Some(101)), Room::TooLarge);
        assert_eq!(Quota::default().room(u(u64::MAX, u64::MAX), Some(u64::MAX)), Room::Fits);
    }
}
