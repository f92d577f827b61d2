//! The marker of a running server: `<data-dir>/queue/server.pid`, holding `<pid> <hostname>`.
//!
//! `mailroom queue delete` acts on the files directly only when no server runs (a running server
//! holds the entries in memory and must do it itself). A server that holds a [`ServerLock`] for its
//! lifetime is seen by [`is_server_running`]; a marker left by a dead process (its pid is gone) counts
//! as no server. Without any marker the CLI cannot tell, and acts directly.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// File name of the marker inside `<data-dir>/queue/`.
pub const LOCK_FILE: &str = "server.pid";

/// Held by the serving process; removes the marker when dropped.
#[derive(Debug)]
pub struct ServerLock {
    path: PathBuf,
}

impl ServerLock {
    /// Writes the marker for this process. Fails if another live process holds it.
    pub fn acquire(data_dir: &Path) -> io::Result<ServerLock> {
        let dir = data_dir.join("queue");
        mailroom_store::fsync::create_dir_all_synced(&dir)?;
        let path = dir.join(LOCK_FILE);
        if let Some(pid) = holder(&path).filter(|&p| p != std::process::id()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("process {pid} already serves this data directory ({})", path.display()),
            ));
        }
        let tmp = dir.join(format!("{LOCK_FILE}.{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        writeln!(f, "{} {}", std::process::id(), hostname())?;
        drop(f);
        fs::rename(&tmp, &path)?;
        Ok(ServerLock { path })
    }
}

impl Drop for ServerLock {
    fn drop(&mut self) {
        if holder(&self.path) == Some(std::process::id()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Whether a live process of this host holds the marker of `data_dir`.
pub fn is_server_running(data_dir: &Path) -> bool {
    holder(&data_dir.join("queue").join(LOCK_FILE)).is_some()
}

/// The pid in the marker, if that process runs on this host.
fn holder(path: &Path) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace();
    let pid: u32 = fields.next()?.parse().ok()?;
    let host = fields.next().unwrap_or("");
    if host != hostname() {
        // Another host's process (a shared file system): we cannot check it, so assume it runs.
        return Some(pid);
    }
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_of_a_live_process_counts_and_a_dead_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_server_running(dir.path()));
        let lock = ServerLock::acquire(dir.path()).unwrap();
        assert!(is_server_running(dir.path()));
        drop(lock);
        assert!(!is_server_running(dir.path()));
        // pid 4194305 is above any pid_max: surely gone.
        fs::write(dir.path().join("queue").join(LOCK_FILE), format!("4194305 {}\n", hostname())).unwrap();
        assert!(!is_server_running(dir.path()), "a dead server's marker");
        let _again = ServerLock::acquire(dir.path()).unwrap();
        assert!(is_server_running(dir.path()));
    }
}
