//! Group commit of one directory's fsync: every caller that changed the directory (removed or
//! renamed an entry) needs that change durable before it returns, but callers that arrive while a
//! sync runs can all share the next one. Without this each finished queue entry cost its own fsync
//! of `env/`, and on a file system where a directory fsync writes its block synchronously that was
//! most of the relay's per-message cost.

use std::io;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use mailroom_store::fsync;

/// One directory and the generations of its changes.
pub(crate) struct DirSyncer {
    dir: PathBuf,
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Default)]
struct State {
    /// Changes announced so far (each caller takes the next number).
    announced: u64,
    /// Every change up to this one is durable.
    durable: u64,
    /// Whether a caller is running the fsync now.
    is_running: bool,
}

impl DirSyncer {
    pub(crate) fn new(dir: PathBuf) -> DirSyncer {
        DirSyncer { dir, state: Mutex::new(State::default()), finished: Condvar::new() }
    }

    /// Returns once the directory has been fsynced after this call began (so a change the caller made
    /// before calling is durable). A caller that finds no sync running runs one for everyone announced
    /// so far; the others wait for it. A failed fsync is returned to the caller that ran it; the
    /// callers it would have covered then try again themselves.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.announced += 1;
        let mine = s.announced;
        loop {
            if s.durable >= mine {
                return Ok(());
            }
            if !s.is_running {
                s.is_running = true;
                let covers = s.announced;
                drop(s);
                let result = fsync::sync_dir(&self.dir);
                s = self.lock();
                s.is_running = false;
                if result.is_ok() {
                    s.durable = s.durable.max(covers);
                }
                self.finished.notify_all();
                result?;
                continue;
            }
            s = self.finished.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_caller_is_covered_by_a_finished_sync() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Arc::new(DirSyncer::new(dir.path().to_path_buf()));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let s = syncer.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        s.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = syncer.lock();
        assert_eq!(s.announced, 800);
        assert_eq!(s.durable, 800, "every announced change is covered by a finished sync");
        assert!(!s.is_running);
    }

    #[test]
    fn a_failed_sync_is_an_error_and_the_next_call_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let syncer = DirSyncer::new(gone.clone());
        assert!(syncer.sync().is_err(), "fsync of a missing directory fails");
        std::fs::create_dir(&gone).unwrap();
        syncer.sync().unwrap();
        assert_eq!(syncer.lock().durable, 2);
    }
}
