//! Quotas at the server: the RCPT check (452 4.2.2 when a mailbox is full, 552 5.2.2 when the declared
//! SIZE would not fit) and the usage update after a commit. The numbers live in each Maildir's
//! `maildirsize` (`mailroom_store::quota`); users without a quota cost nothing here, and a user with one
//! costs one small file read at RCPT (on the blocking pool), never a stat per message.

use mailroom_proto::{Enhanced, Reply};
use mailroom_store::quota::Room;
use mailroom_store::{MailboxId, Store};
use tracing::warn;

/// Whether `mailbox` has room for one more message of `declared` octets (MAIL FROM SIZE=, RFC 1870):
/// `Err((reply, reason))` when not. A message accepted here may take usage past the limit once its real
/// size is known (as Maildir++ and Dovecot's quota grace allow): refusing it at the end of data would
/// refuse it for every other recipient of the transaction too. Usage that cannot be read accepts (the
/// quota is a limit on users, not a reason to lose mail).
pub(crate) async fn check(
    store: &Store,
    mailbox: &MailboxId,
    declared: Option<u64>,
) -> Result<(), (Reply, &'static str)> {
    let quota = store.users().quota_of(mailbox);
    if quota.is_unlimited() {
        return Ok(());
    }
    let (store, mb) = (store.clone(), mailbox.clone());
    let usage = match tokio::task::spawn_blocking(move || store.quota_usage(&mb, quota)).await {
        Ok(Ok(usage)) => usage,
        Ok(Err(error)) => {
            warn!(%error, mailbox = %mailbox, "cannot read the quota usage: accepting");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    match quota.room(usage, declared) {
        Room::Fits => Ok(()),
        // RFC 3463 §3.3: X.2.2 mailbox full; temporary, since the user may make room.
        Room::Full => Err((Reply::new(452, Enhanced(4, 2, 2), "Mailbox full, try again later"), "mailbox full")),
        Room::TooLarge => Err((
            Reply::new(552, Enhanced(5, 2, 2), "Message too large for the recipient's remaining quota"),
            "over quota with the declared size",
        )),
    }
}

/// After a commit: one delta line per stored copy in the `maildirsize` of each mailbox whose user has a
/// quota (an in-memory check for everyone else). Failures are logged: the file is a cache.
pub(crate) fn handle_stored(store: &Store, locals: &[MailboxId], size: u64) {
    let users = store.users();
    let mut seen = std::collections::HashSet::new();
    for mailbox in locals.iter().filter(|m| seen.insert(*m)) {
        if users.quota_of(mailbox).is_unlimited() {
            continue;
        }
        if let Err(error) = store.record_quota(mailbox, size) {
            warn!(%error, %mailbox, "cannot update maildirsize");
        }
    }
}
