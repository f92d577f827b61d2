//! The store's quota entry points: a mailbox's usage under its user's quota and the delta a delivery
//! adds, on top of [`crate::quota`]'s `maildirsize` handling (kept apart so that the user directory,
//! which holds quotas, does not depend on the store).

use std::path::PathBuf;
use std::time::SystemTime;

use crate::address::MailboxId;
use crate::error::StoreError;
use crate::quota::{append, usage, Quota, Usage};
use crate::store::Store;

impl Store {
    /// The root of `mailbox`'s Maildir (where `maildirsize` lives, above any folder).
    fn maildir_root(&self, mailbox: &MailboxId) -> PathBuf {
        self.mailboxes_dir().join(mailbox.domain()).join(mailbox.local())
    }

    /// The usage of `mailbox` under `quota`, from its `maildirsize` (recalculated and rewritten when it
    /// is missing or stale, see [`crate::quota`]). Blocking file I/O: call it off the async threads.
    pub fn quota_usage(&self, mailbox: &MailboxId, quota: Quota) -> Result<Usage, StoreError> {
        usage(&self.maildir_root(mailbox), quota, SystemTime::now())
    }

    /// Records a stored message of `size` octets in `mailbox`'s `maildirsize`, when it has one (without
    /// one the next read recalculates, counting the message). One small append, no fsync: the file is a
    /// cache (see [`crate::quota`]).
    pub fn record_quota(&self, mailbox: &MailboxId, size: u64) -> Result<(), StoreError> {
        append(&self.maildir_root(mailbox), size)
    }
}
