//! [`QueueBackend`]: the narrow interface between the relay and the queue's storage (enqueue, claim
//! what is due, record a result), so that a shared backend (PostgreSQL, several mailroom hosts on one
//! queue) can be added beside the files backend ([`crate::Queue`]) without touching the relay.
//!
//! Enqueueing is two steps because the files backend makes the entry durable inside the store's
//! group commit: [`QueueBackend::spool_for`] gives what `Incoming::commit_with` writes, and
//! [`QueueBackend::add_committed`] announces it once that resolved. A database backend returns `None`
//! from `spool_for` and will need an enqueue of its own that is durable before the 250 (added to this
//! trait with it).

use std::path::PathBuf;
use std::time::SystemTime;

use mailroom_store::Spool;

use crate::envelope::Envelope;
use crate::error::QueueError;
use crate::queue::{Claim, Entry, Outcome, Queue};

/// The storage of the outbound queue, as the relay uses it.
pub trait QueueBackend: Send + Sync {
    /// The queue entry that the store's commit writes beside the local mailboxes, if this backend
    /// stores entries that way.
    fn spool_for(&self, envelope: &Envelope) -> Option<Spool>;
    /// The entry is durable: make it due.
    fn add_committed(&self, envelope: Envelope);
    /// Entries with recipients due at `now` and not in flight.
    fn due(&self, now: SystemTime) -> Vec<Entry>;
    /// When the next recipient is due (for the scheduler's sleep).
    fn next_due(&self) -> Option<SystemTime>;
    /// Marks recipients in flight; `None` if any is taken or final.
    fn claim(&self, id: &str, rcpts: &[usize]) -> Option<Claim>;
    /// Makes the results of an attempt durable (removing the entry once every recipient is final).
    fn record(&self, claim: Claim, results: Vec<(usize, Outcome)>) -> Result<(), QueueError>;
    /// Where the message of an entry can be read.
    fn message_path(&self, id: &str) -> PathBuf;
}

impl QueueBackend for Queue {
    fn spool_for(&self, envelope: &Envelope) -> Option<Spool> {
        Some(Queue::spool_for(self, envelope))
    }

    fn add_committed(&self, envelope: Envelope) {
        Queue::add_committed(self, envelope)
    }

    fn due(&self, now: SystemTime) -> Vec<Entry> {
        Queue::due(self, now)
    }

    fn next_due(&self) -> Option<SystemTime> {
        Queue::next_due(self)
    }

    fn claim(&self, id: &str, rcpts: &[usize]) -> Option<Claim> {
        Queue::claim(self, id, rcpts)
    }

    fn record(&self, claim: Claim, results: Vec<(usize, Outcome)>) -> Result<(), QueueError> {
        Queue::record(self, claim, results)
    }

    fn message_path(&self, id: &str) -> PathBuf {
        Queue::message_path(self, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_files_backend_works_behind_the_trait() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Queue>();
        let dir = tempfile::tempdir().unwrap();
        let store = mailroom_store::Store::open(dir.path()).unwrap();
        let backend: Arc<dyn QueueBackend> = Arc::new(Queue::open(dir.path()).unwrap());
        let mut incoming = store.begin().unwrap();
        incoming.write(b"Subject: x\n\nbody\n").unwrap();
        let env = Envelope::new(incoming.id(), "a@example.org", SystemTime::now(), 17, &["b@remote.example"]);
        incoming.commit_with(&[], backend.spool_for(&env)).wait().unwrap();
        backend.add_committed(env.clone());
        let due = backend.due(SystemTime::now());
        assert_eq!(due.len(), 1);
        let claim = backend.claim(&env.id, &due[0].due).unwrap();
        assert!(backend.message_path(&env.id).exists());
        let delivered = Outcome::Delivered { reply: "250 2.0.0 ok".into(), remote_mta: "mx".into() };
        backend.record(claim, vec![(0, delivered)]).unwrap();
        assert!(backend.due(SystemTime::now()).is_empty() && backend.next_due().is_none());
        assert!(!backend.message_path(&env.id).exists(), "removed once final");
    }
}
