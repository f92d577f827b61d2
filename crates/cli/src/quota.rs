//! `mailroom user quota` and the usage column of `mailroom user list`: quotas live in users.toml, usage
//! in each Maildir's `maildirsize` (read, or counted afresh when it is missing or stale, by the rules the
//! server and Dovecot's quota plugin follow; the CLI leaves rewriting the file to them).

use std::path::Path;

use mailroom_store::quota::{self, format_size, parse_size, Quota, Usage};
use mailroom_store::UserDirectory;

/// `user quota ADDRESS SIZE [--messages N]`.
pub fn set(dir: &UserDirectory, address: &str, size: &str, messages: u64) -> anyhow::Result<()> {
    let bytes = parse_size(size).ok_or_else(|| anyhow::anyhow!("{size:?} is not a size (like 500K, 100M, 1G or 0)"))?;
    let q = Quota { bytes, messages };
    dir.set_quota(address, q)?;
    println!("quota of {address}: {}", describe(q));
    Ok(())
}

/// `user list`: each user, its usage, and its quota when it has one.
pub fn list(data_dir: &Path, dir: &UserDirectory) -> anyhow::Result<()> {
    for u in dir.list()? {
        let root = data_dir.join("mailboxes").join(&u.domain).join(&u.local);
        // Users without a quota have no maildirsize to keep: their mailbox is counted (not the hot path).
        let usage = if u.quota.is_unlimited() {
            quota::scan(&root)
        } else {
            // Read, never rewritten here: the CLI may run as another user than the server.
            quota::peek(&root, u.quota, std::time::SystemTime::now())
        };
        match usage {
            Ok(Usage { bytes, messages }) => {
                println!("{}  {bytes} bytes, {messages} messages  (quota: {})", u.address, describe(u.quota));
            }
            Err(e) => println!("{}  usage unknown: {e}  (quota: {})", u.address, describe(u.quota)),
        }
    }
    Ok(())
}

fn describe(q: Quota) -> String {
    let bytes = if q.bytes == 0 {
        "no size limit".to_string()
    } else {
        format!("{} bytes ({})", q.bytes, format_size(q.bytes))
    };
    let messages = if q.messages == 0 { "no message limit".to_string() } else { format!("{} messages", q.messages) };
    format!("{bytes}, {messages}")
}
