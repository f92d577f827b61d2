//! mailroom-queue: the outbound spool. Durable queue entries and the delivery state of each recipient;
//! no network (the relay delivers, this crate remembers).
//!
//! - [`envelope`]: [`Envelope`] and [`Recipient`], the TOML file of an entry, and the per-recipient
//!   [`State`].
//! - [`queue`]: [`Queue`], the files backend on `<data-dir>/queue/`: open (with quarantine of unreadable
//!   entries), what is due, claims, recording results, removal.
//! - [`backend`]: the narrow [`QueueBackend`] trait (enqueue, claim what is due, record a result) that a
//!   shared backend (PostgreSQL) can implement later.
//! - [`request`]: flush/delete/bounce requests that `mailroom queue` leaves for the running server.
//! - [`backoff`]: retry arithmetic ([`next_retry`]) and expiry ([`is_expired`]).
//! - `dirsync`: the group commit of `env/`'s fsyncs (concurrent removals and rewrites share one).
//! - [`lock`]: the marker of a running server, so the CLI knows whether it may act on its own.
//!
//! # On disk
//! ```text
//! <data-dir>/queue/msg/<id>        the message (a hard link of the file the store received)
//! <data-dir>/queue/env/<id>        the envelope and per-recipient state (TOML), replaced atomically
//! <data-dir>/queue/corrupt/        unreadable entries moved aside (<id>.env, <id>.msg)
//! <data-dir>/queue/requests/       <id>.flush | <id>.delete | <id>.bounce, left by the CLI
//! ```
//! `<id>` is the store's message id, the one in the 250 reply and in every log line.
//!
//! # Enqueueing
//! An entry is made by the store's commit path, not by this crate: [`Queue::spool_for`] turns an
//! envelope into a [`mailroom_store::Spool`], `Incoming::commit_with(locals, Some(spool))` makes the
//! message link and the envelope durable in the same group-commit batch as the local mailboxes
//! (all-or-none, also across a crash), and once that resolved, [`Queue::add_committed`] makes the entry
//! due at once. So the 250 comes only when the entry is on disk, and every entry on disk was committed.
//!
//! # The state machine of one recipient
//! ```text
//!              claim                   record(Delivered)
//!   pending ──────────▶ in flight ───────────────────────▶ delivered   (final)
//!      ▲                 │   │  record(Relayed)
//!      │                 │   └───────────────────────────▶ relayed     (final: the next hop has no DSN)
//!      │                 │      record(Bounced)
//!      │                 ├───────────────────────────────▶ bounced     (final)
//!      │                 │      record(Deferred{retry_at})
//!      │                 └───────────────────────────────▶ deferred ── retry_at passed ──▶ due again
//!      └── a claim dropped without record (or a crash): back to what it was
//! ```
//! "In flight" lives only in memory (a [`Claim`]); pending, deferred (with the next attempt, the last
//! reply, the remote MTA and the status) and the final states are in the envelope file. Each
//! [`Queue::record`] rewrites the whole envelope atomically (write `<id>.tmp`, fdatasync, rename over
//! `<id>`, fsync `env/` — one fsync shared by the rewrites and removals that happen meanwhile, `dirsync`) before it returns, and the entry (envelope first, then message) is removed when
//! every recipient is final.
//!
//! **At-least-once.** A result is durable before the relay moves on, so after a crash a recipient
//! whose delivery was recorded is never attempted again. The only repeat is the attempt in flight at
//! the crash: the remote server may have accepted the message, but the crash came before the result
//! was recorded, so the recipient is still pending or deferred and is delivered again. This is the
//! accepted duplicate (RFC 5321 §6.1 prefers a duplicate to a loss); nothing is ever lost: a
//! recipient leaves the queue only as delivered, relayed or bounced (with its DSN built by the
//! caller before it records the bounce).
#![forbid(unsafe_code)]

pub mod backend;
pub mod backoff;
mod dirsync;
pub mod envelope;
pub mod error;
pub mod lock;
pub mod queue;
pub mod request;

pub use backend::QueueBackend;
pub use backoff::{is_expired, next_retry};
pub use envelope::{Attempt, Envelope, Notify, Recipient, Ret, State};
pub use error::QueueError;
pub use queue::{Census, Claim, Entry, Outcome, Queue};
pub use request::Request;
