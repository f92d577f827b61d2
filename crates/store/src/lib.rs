//! mailroom-store: what must survive a crash.
//!
//! - [`users`]: the user directory (`<data-dir>/users.toml`) and address validation, so that only
//!   addresses the directory holds ever become paths.
//! - [`maildir`]: the [`Store`] and durable delivery: `begin` a message, stream `write`s into a file
//!   under `<data-dir>/tmp/`, `commit` it to its recipients; the returned [`Commit`] future resolves
//!   once the message is fsynced and linked into `new/` of every recipient Maildir and those
//!   directories are fsynced (DESIGN.md "Durability"). Commits are group-committed by a dedicated
//!   thread, so the store needs no async runtime.
//! - [`mailbox`]: reading a Maildir back (`mailroom mailbox list/show`).
//!
//! On disk: `<data-dir>/mailboxes/<domain>/<local-part>/{tmp,new,cur}` is a standard Maildir.
#![forbid(unsafe_code)]

pub mod fsync;
pub mod mailbox;
pub mod maildir;
pub mod password;
pub mod users;

pub use mailbox::{Mailbox, MessageSummary};
pub use maildir::{Commit, Delivered, Incoming, MailboxId, Store, StoreError};
pub use users::{validate_address, validate_domain, User, UserDirectory, UserError, Users};
