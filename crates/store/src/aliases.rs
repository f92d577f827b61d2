//! The alias directory: addresses that stand for other addresses.
//!
//! Owns `<data-dir>/aliases.toml` (reading, validating, atomically rewriting it under its own lock
//! file, as `users.toml` is), [`Aliases`], the immutable snapshot routing consults at every RCPT, and
//! [`AliasesCache`], which keeps the current snapshot and reloads it off the hot path (a background
//! thread stats the file once a second; readers clone an `Arc`).
//!
//! ```toml
//! [[alias]]
//! address = "sales@example.org"          # matched like a user: any case, domain in any IDN form
//! targets = ["alice@example.org", "bob@example.org", "carol@elsewhere.example"]
//! [[alias]]
//! address = "@example.org"               # catch-all: every unknown local part of the domain
//! targets = ["alice@example.org"]
//! ```
//! Targets are local users, other aliases or external addresses; what they mean is decided when mail
//! arrives ([`crate::routing`]), so an alias may name a user added later. A missing file is "no aliases";
//! an empty or unparsable one keeps the previous snapshot (an editor mid-save).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::address::validate_address;
use crate::domain::canonical_domain;
use crate::error::AliasError;
use crate::fsync::sync_dir;
use crate::users::{FileStamp, LockFile, DEFAULT_RELOAD_INTERVAL};

/// File name of the alias directory inside the data directory.
pub const ALIASES_FILE: &str = "aliases.toml";
/// Targets one alias may list: an alias is a short list of people, not a mailing list; the bound keeps
/// one RCPT's expansion small.
pub const MAX_TARGETS: usize = 1000;
/// The reload thread wakes at least this often to notice a changed interval or a dropped store.
const RELOAD_TICK: Duration = Duration::from_millis(100);

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AliasError + 'a {
    move |source| AliasError::Io { op, path: path.to_path_buf(), source }
}

/// One alias: its address (`local@domain`, or `@domain` for a catch-all) and its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    pub address: String,
    pub targets: Vec<String>,
}

/// The normalized form of an alias address: `local@domain` lowercased (as users are), or `@domain`.
pub fn normalize_alias(address: &str) -> Result<String, AliasError> {
    let bad = |e: String| AliasError::InvalidAddress(address.to_string(), e);
    match address.strip_prefix('@') {
        Some(domain) => Ok(format!("@{}", crate::address::validate_domain(domain).map_err(|e| bad(e.to_string()))?)),
        None => validate_address(address).map(|(l, d)| format!("{l}@{d}")).map_err(|e| bad(e.to_string())),
    }
}

/// The normalized form of a target: a full address (validated like a user's, lowercased).
pub fn normalize_target(target: &str) -> Result<String, AliasError> {
    validate_address(target)
        .map(|(l, d)| format!("{l}@{d}"))
        .map_err(|e| AliasError::InvalidTarget(target.to_string(), e.to_string()))
}

/// The lookup key: lowercase local part (or empty for a catch-all) `@` canonical domain.
fn key(local: &str, domain: &str) -> Option<String> {
    Some(format!("{}@{}", local.to_lowercase(), canonical_domain(domain).ok()?))
}

/// An immutable snapshot of the alias directory.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    /// Keyed by `local@<canonical domain>`, catch-alls by `@<canonical domain>`.
    by_key: BTreeMap<String, Alias>,
}

impl Aliases {
    fn from_aliases(path: &Path, aliases: Vec<Alias>) -> Result<Aliases, AliasError> {
        let mut snapshot = Aliases::default();
        for alias in aliases {
            let (local, domain) = alias.address.rsplit_once('@').unwrap_or(("", &alias.address));
            let k = key(local, domain).unwrap_or_else(|| alias.address.clone());
            if snapshot.by_key.contains_key(&k) {
                return Err(AliasError::Duplicate { path: path.to_path_buf(), address: alias.address });
            }
            snapshot.by_key.insert(k, alias);
        }
        Ok(snapshot)
    }

    /// The targets of the alias `local@domain` (any case, domain in any form), if there is one.
    pub fn get(&self, local: &str, domain: &str) -> Option<&[String]> {
        if local.is_empty() {
            return None;
        }
        self.by_key.get(&key(local, domain)?).map(|a| a.targets.as_slice())
    }

    /// The targets of the catch-all of `domain`, if it has one.
    pub fn catch_all(&self, domain: &str) -> Option<&[String]> {
        self.by_key.get(&key("", domain)?).map(|a| a.targets.as_slice())
    }

    /// All aliases, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = &Alias> + '_ {
        self.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The on-disk form of `aliases.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasesFile {
    #[serde(default, rename = "alias")]
    aliases: Vec<Alias>,
}

const FILE_HEADER: &str = "\
# mailroom aliases. Managed by `mailroom alias add/remove`; safe to edit by hand (a running server
# rereads it within a second). One [[alias]] table per address:
#   address = \"sales@example.test\"      (or \"@example.test\": catch-all for unknown local parts)
#   targets = [\"alice@example.test\", \"someone@elsewhere.example\"]
";

/// Reads and writes `<data-dir>/aliases.toml`.
#[derive(Debug, Clone)]
pub struct AliasDirectory {
    data_dir: PathBuf,
    path: PathBuf,
}

impl AliasDirectory {
    pub fn new(data_dir: &Path) -> AliasDirectory {
        AliasDirectory { data_dir: data_dir.to_path_buf(), path: data_dir.join(ALIASES_FILE) }
    }

    /// Path of `aliases.toml`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the directory as it is on disk now. A missing file means no aliases.
    pub fn load(&self) -> Result<Aliases, AliasError> {
        Aliases::from_aliases(&self.path, self.read()?)
    }

    /// All aliases, sorted by address.
    pub fn list(&self) -> Result<Vec<Alias>, AliasError> {
        let mut all: Vec<Alias> = self.load()?.iter().cloned().collect();
        all.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(all)
    }

    /// Adds `targets` to the alias `address` (created if new); targets it already has are kept once.
    /// Returns the alias as it is now.
    pub fn add(&self, address: &str, targets: &[String]) -> Result<Alias, AliasError> {
        let address = normalize_alias(address)?;
        let targets = targets.iter().map(|t| normalize_target(t)).collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(AliasError::NoTargets(address));
        }
        let mut result = None;
        self.modify(|aliases| {
            let i = match aliases.iter().position(|a| a.address == address) {
                Some(i) => i,
                None => {
                    aliases.push(Alias { address: address.clone(), targets: Vec::new() });
                    aliases.len() - 1
                }
            };
            let alias = &mut aliases[i];
            for t in &targets {
                if !alias.targets.contains(t) {
                    alias.targets.push(t.clone());
                }
            }
            result = Some(alias.clone());
            Ok(())
        })?;
        Ok(result.expect("set by modify"))
    }

    /// Removes `targets` from the alias `address`, or the whole alias when `targets` is empty (also
    /// when its last target goes).
    pub fn remove(&self, address: &str, targets: &[String]) -> Result<(), AliasError> {
        let address = normalize_alias(address)?;
        let targets = targets.iter().map(|t| normalize_target(t)).collect::<Result<Vec<_>, _>>()?;
        self.modify(|aliases| {
            let i = aliases
                .iter()
                .position(|a| a.address == address)
                .ok_or_else(|| AliasError::NotFound(address.clone()))?;
            for t in &targets {
                let alias = &mut aliases[i];
                let j = alias
                    .targets
                    .iter()
                    .position(|x| x == t)
                    .ok_or_else(|| AliasError::NoSuchTarget(address.clone(), t.clone()))?;
                alias.targets.remove(j);
            }
            if targets.is_empty() || aliases[i].targets.is_empty() {
                aliases.remove(i);
            }
            Ok(())
        })
    }

    fn read(&self) -> Result<Vec<Alias>, AliasError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => self.parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read", &self.path)(e)),
        }
    }

    /// Parses and validates (normalizing addresses and targets, so hand edits in any case work).
    fn parse(&self, text: &str) -> Result<Vec<Alias>, AliasError> {
        let file: AliasesFile =
            toml::from_str(text).map_err(|e| AliasError::Parse { path: self.path.clone(), message: e.to_string() })?;
        file.aliases
            .into_iter()
            .map(|a| {
                let address = normalize_alias(&a.address)?;
                if a.targets.is_empty() {
                    return Err(AliasError::NoTargets(address));
                }
                if a.targets.len() > MAX_TARGETS {
                    return Err(AliasError::TooManyTargets(address, MAX_TARGETS));
                }
                let targets = a.targets.iter().map(|t| normalize_target(t)).collect::<Result<_, _>>()?;
                Ok(Alias { address, targets })
            })
            .collect()
    }

    /// Read-modify-write under `aliases.toml.lock`, so concurrent `alias add`s do not lose each other.
    fn modify(&self, change: impl FnOnce(&mut Vec<Alias>) -> Result<(), AliasError>) -> Result<(), AliasError> {
        crate::fsync::create_dir_all_synced(&self.data_dir).map_err(io_err("create", &self.data_dir))?;
        let _lock = LockFile::acquire(self.data_dir.join(format!("{ALIASES_FILE}.lock")))?;
        let mut aliases = self.read()?;
        change(&mut aliases)?;
        if let Some(a) = aliases.iter().find(|a| a.targets.len() > MAX_TARGETS) {
            return Err(AliasError::TooManyTargets(a.address.clone(), MAX_TARGETS));
        }
        Aliases::from_aliases(&self.path, aliases.clone())?;
        self.write(&aliases)
    }

    /// Atomic replace: write a temporary file, fsync it, rename it over, fsync the directory.
    fn write(&self, aliases: &[Alias]) -> Result<(), AliasError> {
        let mut text = String::from(FILE_HEADER);
        if !aliases.is_empty() {
            let file = AliasesFile { aliases: aliases.to_vec() };
            let body = toml::to_string(&file).map_err(|e| AliasError::Parse {
                path: self.path.clone(),
                message: format!("cannot serialize: {e}"),
            })?;
            text.push('\n');
            text.push_str(&body);
        }
        let tmp = self.data_dir.join(format!("{ALIASES_FILE}.tmp.{}", std::process::id()));
        let result = (|| {
            // 0600 like users.toml: who forwards where is the users' business.
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
            crate::fsync::sync_all(&f).map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, &self.path).map_err(io_err("rename", &tmp))?;
            sync_dir(&self.data_dir).map_err(io_err("fsync", &self.data_dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// The current alias snapshot of a running store, and the thread that reloads it (the same scheme as
/// the user directory's cache: readers take a short lock to clone an `Arc`; the file is read and parsed
/// by the thread with no lock held).
pub(crate) struct AliasesCache {
    current: Mutex<Arc<Aliases>>,
    interval_ms: AtomicU64,
}

impl AliasesCache {
    /// Loads the directory and starts the reload thread, which ends once the cache is dropped. A file
    /// that does not parse is an error: a server should not start on a directory it cannot read.
    pub(crate) fn start(directory: AliasDirectory) -> Result<Arc<AliasesCache>, AliasError> {
        let stamp = FileStamp::of(directory.path());
        let aliases = directory.load()?;
        let cache = Arc::new(AliasesCache {
            current: Mutex::new(Arc::new(aliases)),
            interval_ms: AtomicU64::new(DEFAULT_RELOAD_INTERVAL.as_millis() as u64),
        });
        let weak = Arc::downgrade(&cache);
        std::thread::Builder::new()
            .name("mailroom-aliases".into())
            .spawn(move || reload_loop(&weak, &directory, stamp))
            .map_err(io_err("spawn the reload thread for", Path::new(ALIASES_FILE)))?;
        Ok(cache)
    }

    /// The current snapshot: a short lock and an `Arc` clone, never a file read.
    pub(crate) fn current(&self) -> Arc<Aliases> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }
}

/// The reload thread: stat once per interval, reload on change, swap. A missing file is "no aliases"
/// (they were all removed by hand); an empty or unparsable one keeps the previous snapshot.
fn reload_loop(cache: &Weak<AliasesCache>, directory: &AliasDirectory, mut stamp: Option<FileStamp>) {
    let mut checked = Instant::now();
    loop {
        let Some(interval) = cache.upgrade().map(|c| c.interval()) else { return };
        std::thread::sleep(interval.min(RELOAD_TICK));
        if checked.elapsed() < interval {
            continue;
        }
        checked = Instant::now();
        let now = FileStamp::of(directory.path());
        if now == stamp {
            continue;
        }
        stamp = now;
        let is_empty = fs::read(directory.path()).is_ok_and(|t| t.iter().all(u8::is_ascii_whitespace));
        let loaded = if is_empty { Err(None) } else { directory.load().map_err(Some) };
        let Some(cache) = cache.upgrade() else { return };
        match loaded {
            Ok(aliases) => {
                tracing::info!(aliases = aliases.len(), "reloaded {ALIASES_FILE}");
                *cache.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(aliases);
            }
            Err(None) => tracing::warn!("{ALIASES_FILE} is empty: keeping the previous aliases"),
            Err(Some(error)) => tracing::warn!(%error, "keeping the previous aliases"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_list_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = AliasDirectory::new(dir.path());
        assert!(d.list().unwrap().is_empty(), "no file, no aliases");
        d.add("Sales@Example.TEST", &strings(&["alice@example.test", "carol@elsewhere.test"])).unwrap();
        let a = d.add("sales@example.test", &strings(&["bob@example.test", "alice@example.test"])).unwrap();
        assert_eq!(a.targets, strings(&["alice@example.test", "carol@elsewhere.test", "bob@example.test"]));
        d.add("@example.test", &strings(&["alice@example.test"])).unwrap();
        let snapshot = d.load().unwrap();
        assert_eq!(snapshot.get("SALES", "example.test").unwrap().len(), 3);
        assert_eq!(snapshot.catch_all("EXAMPLE.test").unwrap(), &strings(&["alice@example.test"])[..]);
        assert!(snapshot.get("", "example.test").is_none(), "the catch-all is not an empty local part");
        d.remove("sales@example.test", &strings(&["carol@elsewhere.test"])).unwrap();
        assert_eq!(d.load().unwrap().get("sales", "example.test").unwrap().len(), 2);
        assert!(matches!(d.remove("sales@example.test", &strings(&["x@y.test"])), Err(AliasError::NoSuchTarget(..))));
        d.remove("sales@example.test", &[]).unwrap();
        assert!(matches!(d.remove("sales@example.test", &[]), Err(AliasError::NotFound(_))));
        assert_eq!(d.list().unwrap().len(), 1);
        d.remove("@example.test", &strings(&["alice@example.test"])).unwrap();
        assert!(d.list().unwrap().is_empty(), "the last target takes the alias with it");
        assert!(fs::read_to_string(d.path()).unwrap().starts_with("# mailroom aliases"));
    }

    #[test]
    fn bad_addresses_and_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = AliasDirectory::new(dir.path());
        assert!(d.add("../x@example.test", &strings(&["a@example.test"])).is_err());
        assert!(d.add("x@example.test", &strings(&["no-at-sign"])).is_err());
        assert!(d.add("x@example.test", &[]).is_err());
        fs::write(d.path(), "[[alias]]\naddress = \"a@example.test\"\ntargets = [\"b@example.test\"]\n[[alias]]\naddress = \"A@example.test\"\ntargets = [\"c@example.test\"]\n").unwrap();
        assert!(matches!(d.load(), Err(AliasError::Duplicate { .. })));
        fs::write(d.path(), "[[alias]]\naddress = \"a@example.test\"\ntargets = []\n").unwrap();
        assert!(matches!(d.load(), Err(AliasError::NoTargets(_))));
    }

    #[test]
    fn a_running_cache_sees_changes_and_keeps_the_old_snapshot_on_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = AliasDirectory::new(dir.path());
        let cache = AliasesCache::start(d.clone()).unwrap();
        cache.set_interval(Duration::from_millis(20));
        d.add("a@example.test", &strings(&["b@example.test"])).unwrap();
        let seen = |cache: &AliasesCache| cache.current().get("a", "example.test").is_some();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !seen(&cache) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(seen(&cache), "the change was not picked up");
        fs::write(d.path(), "not toml [").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(seen(&cache), "a broken file dropped the aliases");
        fs::write(d.path(), "").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(seen(&cache), "an empty file dropped the aliases");
        fs::remove_file(d.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen(&cache) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!seen(&cache), "a removed file means no aliases");
    }
}
