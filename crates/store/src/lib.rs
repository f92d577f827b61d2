//! mailroom-store: what must survive a crash.
//!
//! - [`store`]: the [`Store`] (opening a data directory durably, recovery at start-up).
//! - [`incoming`]: `begin` a message, stream `write`s into a file under `<data-dir>/tmp/`, `commit`
//!   it to its recipients; the returned [`Commit`] future resolves once the message is in the
//!   fdatasynced commit journal; its file reaches `new/` of every recipient Maildir moments later.
//! - [`journal`]: the commit journal (segments, records, retire marks); its replay at open is in
//!   `journal_replay`. [`commit`]: the group commit through it (a leader appending and syncing a
//!   batch, a background stage placing the files), all-or-none across recipients; [`intent`]: reading
//!   an older version's intent records at an upgrade.
//! - [`spool`]: [`Spool`], a queue entry (message link + envelope sidecar) that a commit makes
//!   durable in the same batch as the Maildir links, all-or-none with them.
//! - [`fsync`]: every fsync, and directories created durably.
//! - [`modes`]: file modes and the store group (private by default; mailboxes shared with a group).
//! - [`address`]: [`MailboxId`] and the validation that keeps paths safe; [`domain`]: the canonical
//!   form of a domain (IDNA), used wherever domains are compared.
//! - [`users`]: the user directory (`<data-dir>/users.toml`) and its cached snapshot.
//! - [`quota`]: per-user quotas and the Maildir++ `maildirsize` usage file; [`usage`]: the store's
//!   entry points to them (a mailbox's usage, a delivery's delta).
//! - [`vacation`]: vacation auto-reply settings, the record of who was answered, and the decision.
//! - [`users`]: the user directory (`<data-dir>/users.toml`) and its cached snapshot; [`aliases`]: the
//!   alias directory (`<data-dir>/aliases.toml`), cached the same way.
//! - [`routing`]: where an address of a served domain goes (aliases, catch-all, subaddress folders,
//!   postmaster@/abuse@, SRS addresses); [`srs`]: the Sender Rewriting Scheme for forwarded mail.
//! - [`mailbox`]: reading a Maildir back (`mailroom mailbox list/show`).
//! - [`unique`]: Maildir unique names and the tmp/ cleanup of dead processes' files.
//!
//! On disk: `<data-dir>/mailboxes/<domain>/<local-part>/{tmp,new,cur}` is a standard Maildir.
#![forbid(unsafe_code)]

pub mod address;
pub mod aliases;
pub mod commit;
pub mod domain;
pub mod error;
pub mod fsync;
pub mod incoming;
pub mod intent;
pub mod journal;
mod journal_replay;
pub mod mailbox;
pub mod modes;
pub mod password;
pub mod quota;
pub mod routing;
pub mod spool;
pub mod srs;
pub mod store;
mod sync_pool;
pub mod unique;
pub mod usage;
pub mod users;
pub mod vacation;

pub use address::{validate_address, validate_domain, MailboxId};
pub use aliases::{Alias, AliasDirectory, Aliases};
pub use commit::Delivered;
pub use domain::canonical_domain;
pub use error::{AliasError, StoreError, UserError};
pub use incoming::{Commit, Incoming};
pub use mailbox::{Mailbox, MessageSummary};
pub use modes::Modes;
pub use quota::{Quota, Usage};
pub use routing::{Expansion, RouteError, Router, RoutingSettings};
pub use spool::Spool;
pub use srs::{Srs, SrsError};
pub use store::Store;
pub use users::{User, UserDirectory, Users};
