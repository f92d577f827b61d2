//! Maildir unique names (`<secs>.M<usecs>P<pid>Q<counter>.<host>`), and whether the process that made
//! one is gone, which decides what start-up may clean up or recover.
//!
//! Every file the store creates while receiving (`<data-dir>/tmp/`, a mailbox's own `tmp/` for a
//! cross-device copy, `<data-dir>/intent/`) is named this way, so another process opening the same
//! data directory (`mailroom mailbox list` next to a running server) can tell a live process's files
//! from those of a crashed one.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Files in a tmp/ directory older than this are removed at open whatever their origin: the Maildir
/// convention (qmail's maildir(5)) for abandoned tmp files.
pub const TMP_ABANDONED_AFTER: Duration = Duration::from_secs(36 * 3600);

/// When the first store of this process was opened: files carrying our pid but older than this were
/// left by an earlier process that had the same pid (common in containers, where it is 1).
static PROCESS_OPENED: OnceLock<SystemTime> = OnceLock::new();

/// Records the moment this process first opened a store (see [`is_dead_process_file`]).
pub(crate) fn mark_process_opened() {
    PROCESS_OPENED.get_or_init(SystemTime::now);
}

/// Makes unique names for one store.
#[derive(Debug)]
pub(crate) struct UniqueNames {
    hostname: String,
    counter: AtomicU64,
}

impl UniqueNames {
    pub(crate) fn new() -> UniqueNames {
        UniqueNames { hostname: hostname(), counter: AtomicU64::new(0) }
    }

    pub(crate) fn hostname(&self) -> &str {
        &self.hostname
    }

    /// A Maildir unique name (maildir(5) and the Courier/Dovecot extensions: M = microseconds,
    /// P = pid, Q = per-store counter).
    pub(crate) fn next(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.M{}P{}Q{}.{}", now.as_secs(), now.subsec_micros(), std::process::id(), n, self.hostname)
    }
}

/// The host name for unique names, sanitized as maildir(5) says (`/` -> `\057`, `:` -> `\072`);
/// we also escape `,` (it starts the `,S=` field) and drop anything unprintable.
fn hostname() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string());
    sanitize_hostname(&raw)
}

fn sanitize_hostname(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_control() || c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() || out.starts_with('.') {
        out.insert_str(0, "localhost");
    }
    out
}

/// `(pid, hostname)` of a unique name we made.
pub(crate) fn parse_unique(name: &str) -> Option<(u32, &str)> {
    let (_secs, rest) = name.split_once('.')?;
    let (mpq, host) = rest.split_once('.')?;
    let (_, pq) = mpq.strip_prefix('M')?.split_once('P')?;
    let (pid, _) = pq.split_once('Q')?;
    Some((pid.parse().ok()?, host))
}

/// True when `name` is a unique name of this host whose process is gone: another pid that no longer
/// runs, or our own pid on a file older than this process's first open (an earlier process that had
/// our pid). Files of other hosts, of live processes, or not named by us are never "dead".
pub(crate) fn is_dead_process_file(name: &str, mtime: SystemTime, hostname: &str) -> bool {
    let opened = PROCESS_OPENED.get().copied().unwrap_or_else(SystemTime::now);
    match parse_unique(name) {
        Some((pid, host)) if host == hostname => {
            if pid == std::process::id() {
                mtime < opened
            } else {
                Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
            }
        }
        _ => false,
    }
}

/// Removes the files in a tmp/ directory that no live process is writing: those of a dead process of
/// this host ([`is_dead_process_file`]) and anything older than [`TMP_ABANDONED_AFTER`]. Removing
/// *every* file would be wrong: `mailroom mailbox list` opens the store while a server may be
/// receiving, and a mail reader may keep its own files in a mailbox's tmp/.
pub(crate) fn clean_tmp_dir(tmp: &Path, hostname: &str) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
        let name = entry.file_name();
        // A sidecar staged for a spool is named after its message: it lives and dies with it.
        let owner = name.to_str().map(|n| n.strip_suffix(crate::spool::SIDECAR_SUFFIX).unwrap_or(n));
        let stale = age > TMP_ABANDONED_AFTER || owner.is_some_and(|n| is_dead_process_file(n, mtime, hostname));
        if stale {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed an unacknowledged message from tmp/"),
                Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove a stale tmp file"),
            }
        }
    }
}

/// [`clean_tmp_dir`] for the tmp/ of every Maildir under `mailboxes/<domain>/<local>/`: a copy staged
/// there for a recipient on another file system by a process that crashed. Directory entries are only
/// walked, never built from input.
pub(crate) fn clean_mailbox_tmps(mailboxes: &Path, hostname: &str) {
    let Ok(domains) = fs::read_dir(mailboxes) else { return };
    for domain in domains.flatten() {
        let Ok(users) = fs::read_dir(domain.path()) else { continue };
        for user in users.flatten() {
            // A symlinked Maildir (another file system) is exactly the case: follow it.
            if user.path().is_dir() {
                clean_tmp_dir(&user.path().join("tmp"), hostname);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_sanitized_as_maildir_says() {
        assert_eq!(sanitize_hostname("mail.example"), "mail.example");
        assert_eq!(sanitize_hostname("a/b:c,d"), "a\\057b\\072c\\054d");
        assert_eq!(sanitize_hostname(" \n"), "localhost");
        assert_eq!(sanitize_hostname(".hidden"), "localhost.hidden");
    }

    #[test]
    fn unique_names_parse_back() {
        assert_eq!(parse_unique("1700000000.M123456P42Q7.host.example"), Some((42, "host.example")));
        assert_eq!(parse_unique("1700000000.M1P42Q7.h,S=12"), Some((42, "h,S=12")));
        assert_eq!(parse_unique("garbage"), None);
        assert_eq!(parse_unique("1.Mx.h"), None);
        let names = UniqueNames::new();
        let a = names.next();
        assert_eq!(parse_unique(&a), Some((std::process::id(), names.hostname())));
        assert_ne!(a, names.next());
    }
}
