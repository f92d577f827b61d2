//! Vacation auto-replies (RFC 3834): what is stored and what decides.
//!
//! Owns `<data-dir>/vacation/<domain>/<local>.toml` (a user's [`Vacation`]: subject, body, last day;
//! written atomically by [`VacationDirectory`], `mailroom vacation set/off`), the [`VacationCache`] a
//! running server consults at every delivery (a background thread looks for changes once a second, so a
//! lookup never touches the disk), `<data-dir>/vacation/<domain>/<local>.sent` (who was answered when:
//! one reply per sender per interval, durable, bounded to [`MAX_REPLIED`] senders), and the decision
//! whether a message gets a reply ([`HeaderFacts`], [`skip_reason`]). Building and sending the reply is
//! the server's (`crates/server/src/vacation.rs`).
//!
//! File names come from addresses validated like the user directory's (lowercase local part, canonical
//! domain), never from what a client sent.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::address::{validate_address, MailboxId};
use crate::domain::canonical_domain;
use crate::error::{io_err, StoreError};
use crate::fsync;

/// The directory under the data directory that holds vacation settings and records.
pub const VACATION_DIR: &str = "vacation";
/// The longest subject `vacation set` takes (RFC 5322 §2.1.1 keeps lines under 998 octets; the subject
/// is one header line).
pub const MAX_SUBJECT: usize = 900;
/// The largest reply body `vacation set` takes: a note, not a newsletter.
pub const MAX_BODY: usize = 64 * 1024;
/// Senders remembered per user (RFC 3834 §2 asks for a record of who was answered; beyond this many the
/// oldest are forgotten, so the file stays bounded: at worst such a sender gets a second reply).
pub const MAX_REPLIED: usize = 5000;
/// How often the cache looks for changed settings.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// One user's vacation reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vacation {
    pub subject: String,
    pub body: String,
    /// The last day (UTC, `YYYY-MM-DD`) replies are sent; none: until `vacation off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl Vacation {
    /// Checks the lengths and the date; the subject must be one line.
    pub fn validate(&self) -> Result<(), String> {
        if self.subject.len() > MAX_SUBJECT || self.subject.contains(['\r', '\n']) {
            return Err(format!("the subject must be one line of at most {MAX_SUBJECT} octets"));
        }
        if self.body.len() > MAX_BODY {
            return Err(format!("the body is larger than {MAX_BODY} octets"));
        }
        if let Some(until) = &self.until {
            parse_date(until).ok_or_else(|| format!("{until:?} is not a date (YYYY-MM-DD)"))?;
        }
        Ok(())
    }

    /// True while replies are due: no last day, or `now` not after it (UTC).
    pub fn is_active(&self, now: SystemTime) -> bool {
        let today = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400) as i64;
        self.until.as_deref().and_then(parse_date).is_none_or(|last| today <= last)
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (the proleptic Gregorian calendar).
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month[(m - 1) as usize] {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The key of a user's files and cache entry: `(lowercase local, canonical domain)`.
fn key_of(local: &str, domain: &str) -> Option<(String, String)> {
    Some((local.to_lowercase(), canonical_domain(domain).ok()?))
}

/// Reads and writes the vacation settings under `<data-dir>/vacation/`.
#[derive(Debug, Clone)]
pub struct VacationDirectory {
    dir: PathBuf,
}

impl VacationDirectory {
    pub fn new(data_dir: &Path) -> VacationDirectory {
        VacationDirectory { dir: data_dir.join(VACATION_DIR) }
    }

    fn paths(&self, address: &str) -> Result<(PathBuf, String), StoreError> {
        let (local, domain) = validate_address(address)?;
        let (local, domain) = key_of(&local, &domain).ok_or_else(|| StoreError::NoSuchMailbox(address.into()))?;
        Ok((self.dir.join(domain), local))
    }

    /// Turns the reply on (or replaces it): a temporary file, fsynced, renamed over, the directory fsynced.
    pub fn set(&self, address: &str, vacation: &Vacation) -> Result<(), StoreError> {
        let (dir, local) = self.paths(address)?;
        fsync::create_dir_all_synced(&dir).map_err(io_err("create", &dir))?;
        let text = toml::to_string(vacation).map_err(|e| StoreError::io("encode", &dir, io::Error::other(e)))?;
        let tmp = dir.join(format!("{local}.toml.tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
            fsync::sync_all(&f).map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, dir.join(format!("{local}.toml"))).map_err(io_err("rename", &tmp))?;
            fsync::sync_dir(&dir).map_err(io_err("fsync", &dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Turns the reply off and forgets who was answered; false when it was not on.
    pub fn remove(&self, address: &str) -> Result<bool, StoreError> {
        let (dir, local) = self.paths(address)?;
        let _ = fs::remove_file(dir.join(format!("{local}.sent")));
        let path = dir.join(format!("{local}.toml"));
        match fs::remove_file(&path) {
            Ok(()) => fsync::sync_dir(&dir).map_err(io_err("fsync", &dir)).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove", &path, e)),
        }
    }

    /// The reply of `address`, if on.
    pub fn get(&self, address: &str) -> Result<Option<Vacation>, StoreError> {
        let (dir, local) = self.paths(address)?;
        let path = dir.join(format!("{local}.toml"));
        match fs::read_to_string(&path) {
            Ok(text) => parse_settings(&path, &text).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    /// Every `<domain>/<local>.toml` with what identifies its version (a rename gives a new inode).
    fn stamps(&self) -> BTreeMap<PathBuf, (i64, i64, u64, u64)> {
        let mut stamps = BTreeMap::new();
        let Ok(domains) = fs::read_dir(&self.dir) else { return stamps };
        for domain in domains.flatten() {
            let Ok(files) = fs::read_dir(domain.path()) else { continue };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    if let Ok(m) = file.metadata() {
                        stamps.insert(path, (m.mtime(), m.mtime_nsec(), m.len(), m.ino()));
                    }
                }
            }
        }
        stamps
    }

    /// Every reply that is on, keyed `local@canonical-domain`; unreadable files are logged and skipped.
    fn load_all(&self, stamps: &BTreeMap<PathBuf, (i64, i64, u64, u64)>) -> HashMap<String, Arc<Vacation>> {
        let mut all = HashMap::new();
        for path in stamps.keys() {
            let (Some(local), Some(domain)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let loaded = fs::read_to_string(path).map_err(io_err("read", path)).and_then(|t| parse_settings(path, &t));
            match loaded {
                Ok(v) => {
                    all.insert(format!("{local}@{domain}"), Arc::new(v));
                }
                Err(error) => tracing::warn!(%error, "vacation settings skipped"),
            }
        }
        all
    }
}

fn parse_settings(path: &Path, text: &str) -> Result<Vacation, StoreError> {
    let bad = |e: String| StoreError::io("parse", path, io::Error::new(io::ErrorKind::InvalidData, e));
    let v: Vacation = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    v.validate().map_err(bad)?;
    Ok(v)
}

/// The vacation replies in force, for a running server: lookups take a short lock and clone an `Arc`;
/// a background thread lists the settings files once per [`RELOAD_INTERVAL`] and reloads when any
/// changed. It ends once the cache is dropped.
pub struct VacationCache {
    current: Mutex<Arc<HashMap<String, Arc<Vacation>>>>,
    directory: VacationDirectory,
    /// One writer of the `.sent` records at a time (two messages from one sender must not both pass).
    records: Mutex<()>,
}

impl VacationCache {
    pub fn start(data_dir: &Path) -> Result<Arc<VacationCache>, StoreError> {
        let directory = VacationDirectory::new(data_dir);
        let stamps = directory.stamps();
        let cache = Arc::new(VacationCache {
            current: Mutex::new(Arc::new(directory.load_all(&stamps))),
            directory,
            records: Mutex::new(()),
        });
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("mailroom-vacation".into())
            .spawn(move || reload_loop(&weak, stamps))
            .map_err(io_err("spawn the reload thread for", Path::new(VACATION_DIR)))?;
        Ok(cache)
    }

    /// The reply of `mailbox`'s user, if on. Never reads a file.
    pub fn get(&self, mailbox: &MailboxId) -> Option<Arc<Vacation>> {
        let (local, domain) = key_of(mailbox.local(), mailbox.domain())?;
        self.current.lock().unwrap_or_else(PoisonError::into_inner).get(&format!("{local}@{domain}")).cloned()
    }

    /// True when nobody has a reply on (the common case: nothing to collect while a message streams).
    pub fn is_empty(&self) -> bool {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Whether `sender` may be answered on behalf of `mailbox` now (not answered within `interval`), and
    /// if so records it durably (appended and fdatasynced) before returning true: a crash after it loses
    /// one reply rather than sending two. Blocking file I/O: call it off the async threads.
    pub fn check_and_record(
        &self,
        mailbox: &MailboxId,
        sender: &str,
        now: SystemTime,
        interval: Duration,
    ) -> Result<bool, StoreError> {
        self.check_and_record_bounded(mailbox, sender, (now, interval), MAX_REPLIED)
    }

    /// [`VacationCache::check_and_record`] keeping at most `max` senders (tests use a small bound).
    fn check_and_record_bounded(
        &self,
        mailbox: &MailboxId,
        sender: &str,
        (now, interval): (SystemTime, Duration),
        max: usize,
    ) -> Result<bool, StoreError> {
        let (dir, local) = self.directory.paths(&mailbox.address())?;
        let path = dir.join(format!("{local}.sent"));
        let sender = sender.to_lowercase();
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let since = now_s.saturating_sub(interval.as_secs());
        let _guard = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let mut entries = read_records(&path)?;
        if entries.iter().any(|(t, s)| *t >= since && *s == sender) {
            return Ok(false);
        }
        entries.push((now_s, sender.clone()));
        if entries.len() > max + max / 4 {
            // Compact: only the recent ones matter, and at most MAX_REPLIED of them.
            entries.retain(|(t, _)| *t >= since);
            let drop = entries.len().saturating_sub(max);
            entries.drain(..drop);
            rewrite_records(&dir, &path, &entries)?;
        } else {
            fsync::create_dir_all_synced(&dir).map_err(io_err("create", &dir))?;
            let mut f =
                OpenOptions::new().append(true).create(true).mode(0o600).open(&path).map_err(io_err("open", &path))?;
            f.write_all(format!("{now_s} {sender}\n").as_bytes()).map_err(io_err("append to", &path))?;
            fsync::sync_data(&f).map_err(io_err("fdatasync", &path))?;
        }
        Ok(true)
    }
}

/// `(unix seconds, sender)` lines; a malformed line (cut by a crash) is skipped.
fn read_records(path: &Path) -> Result<Vec<(u64, String)>, StoreError> {
    let mut text = String::new();
    match File::open(path) {
        // Bounded: a file over the compaction size has been tampered with; its head is enough.
        Ok(f) => f.take(MAX_REPLIED as u64 * 2 * 400).read_to_string(&mut text).map_err(io_err("read", path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (t, s) = l.split_once(' ')?;
            Some((t.parse().ok()?, s.to_string()))
        })
        .collect())
}

fn rewrite_records(dir: &Path, path: &Path, entries: &[(u64, String)]) -> Result<(), StoreError> {
    let text: String = entries.iter().map(|(t, s)| format!("{t} {s}\n")).collect();
    let tmp = path.with_extension("sent.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
    fsync::sync_all(&f).map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    fsync::sync_dir(dir).map_err(io_err("fsync", dir))
}

fn reload_loop(cache: &Weak<VacationCache>, mut stamps: BTreeMap<PathBuf, (i64, i64, u64, u64)>) {
    loop {
        std::thread::sleep(RELOAD_INTERVAL);
        let Some(directory) = cache.upgrade().map(|c| c.directory.clone()) else { return };
        let now = directory.stamps();
        if now == stamps {
            continue;
        }
        let loaded = directory.load_all(&now);
        stamps = now;
        let Some(cache) = cache.upgrade() else { return };
        tracing::info!(replies = loaded.len(), "reloaded vacation settings");
        *cache.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
    }
}

/// What the reply decision needs from a message's header section (RFC 3834 §2, §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// `Auto-Submitted` other than `no` (RFC 3834 §5).
    pub is_auto_submitted: bool,
    /// `Precedence: bulk`, `list` or `junk`.
    pub is_bulk: bool,
    /// Any `List-*` field (RFC 2369, RFC 2919 `List-Id`).
    pub is_list: bool,
    /// The addresses of `To` and `Cc`, lowercase.
    pub recipients: Vec<String>,
    pub message_id: Option<String>,
    /// `References` ids in order (without the message's own id).
    pub references: Vec<String>,
    pub subject: Option<String>,
}

impl HeaderFacts {
    /// Reads the facts from a header section (the bytes up to the empty line).
    pub fn parse(header: &[u8]) -> HeaderFacts {
        let Some(m) = mail_parser::MessageParser::default().parse_headers(header) else {
            return HeaderFacts::default();
        };
        let raw = |name: &str| m.header_raw(name).map(|v| v.trim().to_ascii_lowercase());
        let auto = raw("Auto-Submitted");
        let precedence = raw("Precedence");
        let mut recipients = Vec::new();
        for list in [m.to(), m.cc()].into_iter().flatten() {
            recipients.extend(list.iter().filter_map(|a| a.address()).map(str::to_lowercase));
        }
        let references = m.references().as_text_list().map(|l| l.iter().map(|s| s.to_string()).collect());
        HeaderFacts {
            // `Auto-Submitted: no (comment)` is still "no".
            is_auto_submitted: auto.is_some_and(|v| v.split([' ', '\t', ';', '(']).next() != Some("no")),
            is_bulk: precedence.is_some_and(|p| ["bulk", "list", "junk"].contains(&p.as_str())),
            is_list: m.headers().iter().any(|h| h.name().len() > 5 && h.name()[..5].eq_ignore_ascii_case("list-")),
            recipients,
            message_id: m.message_id().map(str::to_string),
            references: references
                .or_else(|| m.references().as_text().map(|s| vec![s.to_string()]))
                .unwrap_or_default(),
            subject: m.subject().map(str::to_string),
        }
    }
}

/// Why a message gets no vacation reply from `user`, or None when it gets one (RFC 3834 §2: never to
/// automatic mail, lists, the null sender or system addresses; only when the user was addressed
/// directly). The one-per-interval check is [`VacationCache::check_and_record`]'s.
pub fn skip_reason(facts: &HeaderFacts, sender: &str, user: &MailboxId) -> Option<&'static str> {
    let Some((local, domain)) = sender.rsplit_once('@') else {
        return Some("null or unqualified sender");
    };
    let local = local.to_ascii_lowercase();
    if local == "mailer-daemon" || local.starts_with("owner-") || local.ends_with("-request") {
        return Some("system or list address");
    }
    if facts.is_auto_submitted {
        return Some("Auto-Submitted");
    }
    if facts.is_bulk {
        return Some("Precedence bulk/list/junk");
    }
    if facts.is_list {
        return Some("List-* header");
    }
    let is_user = |address: &str| {
        address.rsplit_once('@').is_some_and(|(l, d)| {
            l.eq_ignore_ascii_case(user.local()) && crate::domain::is_same_domain(d, user.domain())
        })
    };
    if is_user(&format!("{local}@{domain}")) {
        return Some("sender is the user");
    }
    if !facts.recipients.iter().any(|a| is_user(a)) {
        return Some("user not in To/Cc");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> MailboxId {
        MailboxId::new_validated("alice".into(), "example.test".into())
    }

    fn facts(header: &str) -> HeaderFacts {
        HeaderFacts::parse(header.replace('\n', "\r\n").as_bytes())
    }

    const PLAIN: &str = "From: bob@example.org\nTo: Alice <Alice@Example.TEST>\nSubject: hi\nMessage-ID: <1@x>\n\n";

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("24-01-01"), None);
        let v = Vacation { subject: "s".into(), body: "b".into(), until: Some("2024-02-29".into()) };
        let day = |d: u64| UNIX_EPOCH + Duration::from_secs(d * 86_400 + 3600);
        assert!(v.is_active(day(19_782)));
        assert!(!v.is_active(day(19_783)));
    }

    #[test]
    fn facts_and_decisions() {
        let f = facts(PLAIN);
        assert_eq!(f.recipients, vec!["alice@example.test"]);
        assert_eq!(f.message_id.as_deref(), Some("1@x"));
        assert_eq!(skip_reason(&f, "bob@example.org", &alice()), None);
        assert_eq!(skip_reason(&f, "", &alice()), Some("null or unqualified sender"));
        for sender in ["MAILER-DAEMON@example.org", "owner-list@example.org", "list-request@example.org"] {
            assert_eq!(skip_reason(&f, sender, &alice()), Some("system or list address"), "{sender}");
        }
        let with = |extra: &str| facts(&format!("{extra}\n{PLAIN}"));
        assert_eq!(skip_reason(&with("Auto-Submitted: auto-replied"), "bob@x.org", &alice()), Some("Auto-Submitted"));
        assert_eq!(skip_reason(&with("Auto-Submitted: no"), "bob@x.org", &alice()), None);
        assert_eq!(skip_reason(&with("Precedence: Bulk"), "bob@x.org", &alice()), Some("Precedence bulk/list/junk"));
        assert_eq!(skip_reason(&with("List-Id: <l.example.org>"), "bob@x.org", &alice()), Some("List-* header"));
        assert_eq!(skip_reason(&with("List-Unsubscribe: <mailto:u@x>"), "bob@x.org", &alice()), Some("List-* header"));
        let bcc = facts("From: bob@example.org\nTo: carol@example.test\nCc: dave@example.test\n\n");
        assert_eq!(skip_reason(&bcc, "bob@x.org", &alice()), Some("user not in To/Cc"));
        let cc = facts("From: bob@example.org\nTo: carol@example.test\nCc: alice@example.test\n\n");
        assert_eq!(skip_reason(&cc, "bob@x.org", &alice()), None);
        assert_eq!(skip_reason(&f, "alice@example.test", &alice()), Some("sender is the user"));
    }

    #[test]
    fn one_reply_per_sender_per_interval_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let week = Duration::from_secs(7 * 86_400);
        let now = SystemTime::now();
        let cache = VacationCache::start(dir.path()).unwrap();
        assert!(cache.check_and_record(&alice(), "Bob@x.org", now, week).unwrap());
        assert!(!cache.check_and_record(&alice(), "bob@x.org", now, week).unwrap());
        assert!(cache.check_and_record(&alice(), "carol@x.org", now, week).unwrap());
        drop(cache);
        let cache = VacationCache::start(dir.path()).unwrap();
        assert!(!cache.check_and_record(&alice(), "bob@x.org", now + week / 2, week).unwrap());
        assert!(cache.check_and_record(&alice(), "bob@x.org", now + week + Duration::from_secs(1), week).unwrap());
    }

    #[test]
    fn the_record_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let week = Duration::from_secs(7 * 86_400);
        let now = SystemTime::now();
        let cache = VacationCache::start(dir.path()).unwrap();
        let max = 20;
        for i in 0..100 {
            assert!(cache.check_and_record_bounded(&alice(), &format!("s{i}@x.org"), (now, week), max).unwrap());
        }
        let path = dir.path().join("vacation/example.test/alice.sent");
        let lines = fs::read_to_string(path).unwrap().lines().count();
        assert!((max..=max + max / 4).contains(&lines), "{lines} records kept");
        // The newest are the ones kept.
        assert!(!cache.check_and_record_bounded(&alice(), "s99@x.org", (now, week), max).unwrap());
    }

    #[test]
    fn settings_round_trip_and_reach_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let vd = VacationDirectory::new(dir.path());
        let v = Vacation { subject: "Away".into(), body: "Back soon.\n".into(), until: None };
        vd.set("Alice@Example.test", &v).unwrap();
        assert_eq!(vd.get("alice@example.test").unwrap(), Some(v.clone()));
        let cache = VacationCache::start(dir.path()).unwrap();
        assert_eq!(cache.get(&alice()).as_deref(), Some(&v));
        assert!(vd.remove("alice@example.test").unwrap());
        assert!(!vd.remove("alice@example.test").unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cache.get(&alice()).is_some() {
            assert!(std::time::Instant::now() < deadline, "the cache never saw the removal");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
