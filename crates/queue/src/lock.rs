//! The lock of a running server: `<data-dir>/queue/server.pid`, holding `<pid> <hostname>`, exclusively
//! locked (`flock`) by the serving process for its lifetime.
//!
//! The kernel drops the lock when the process ends, however it ends, so a crash leaves no stale lock and
//! a pid reused by another process after a reboot means nothing: only the lock counts, the pid is there
//! for the messages. `mailroom queue delete` acts on the files directly only when no server holds it (a
//! running server holds the entries in memory and must do it itself), and a second `mailroom serve` on
//! the same data directory is refused.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// File name of the lock inside `<data-dir>/queue/`.
pub const LOCK_FILE: &str = "server.pid";

/// Held by the serving process; the lock goes with the open file (on drop, exit or crash).
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
    path: PathBuf,
}

impl ServerLock {
    /// Locks the data directory for this process. Fails (`AddrInUse`) if another process holds it,
    /// naming that process.
    pub fn acquire(data_dir: &Path) -> io::Result<ServerLock> {
        let dir = data_dir.join("queue");
        mailroom_store::fsync::create_dir_all_synced(&dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file).unwrap_or_else(|| "another process".into());
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{holder} already serves this data directory ({})", path.display()),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{} {}", std::process::id(), hostname())?;
        Ok(ServerLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether a process holds the lock of `data_dir` now.
pub fn is_server_running(data_dir: &Path) -> bool {
    let Ok(file) = File::open(data_dir.join("queue").join(LOCK_FILE)) else {
        return false;
    };
    // A shared lock is refused exactly while a server holds its exclusive one; ours is released at once.
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// "process <pid> on <host>", from the lock file's content.
fn read_holder(file: &mut File) -> Option<String> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let mut fields = text.split_whitespace();
    let pid = fields.next()?;
    Some(match fields.next() {
        Some(host) => format!("process {pid} on {host}"),
        None => format!("process {pid}"),
    })
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_counts_not_the_pid_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_server_running(dir.path()));
        let lock = ServerLock::acquire(dir.path()).unwrap();
        assert!(is_server_running(dir.path()));
        let second = ServerLock::acquire(dir.path()).expect_err("a second server is refused");
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        assert!(second.to_string().contains(&std::process::id().to_string()), "names the holder: {second}");
        drop(lock);
        assert!(!is_server_running(dir.path()));
        // A file left by a crash names a pid that is alive (ours, as a reused pid would be): no lock, no server.
        fs::write(dir.path().join("queue").join(LOCK_FILE), format!("{} {}\n", std::process::id(), hostname()))
            .unwrap();
        assert!(!is_server_running(dir.path()), "a stale file with a live pid");
        let _again = ServerLock::acquire(dir.path()).expect("a stale file does not keep a server out");
        assert!(is_server_running(dir.path()));
    }
}
