//! mailroom-relay: outbound delivery, run inside `mailroom serve`.
//!
//! - [`dns`]: [`dns::Resolver`] (hickory-resolver; the system's resolvers or `[dns] servers`), MX
//!   selection per RFC 5321 §5.1, null MX (RFC 7505), A and AAAA.
//! - [`settings`]: [`settings::Settings`], the `[delivery]` section as the relay takes it.
//! - [`connect`]: from a destination (MX domain, address literal, smarthost) to a ready connection:
//!   hosts and addresses in order, opportunistic or required STARTTLS, smarthost TLS and AUTH.
//! - [`deliver`]: one message to one destination over one connection: SIZE / SMTPUTF8 / 8BITMIME checks,
//!   transactions split on 452, a result per recipient.
//! - [`pool`]: connection limits (per destination, in total) and reuse of idle connections (RSET).
//! - [`relay`]: [`Relay`], the scheduler over the queue: claims, backoff, expiry, DSNs, log lines.
//! - [`notify`]: where a DSN goes (a local Maildir, the queue with a null sender, the postmaster).
//! - [`dsn`]: building RFC 3464 delivery status notifications.
//! - [`message`]: the queued message as it leaves (our `Return-Path:` line dropped).
//! - [`metrics`]: delivery attempts by result and the queue gauges (`mailroom-metrics`).
//!
//! The crate does not depend on the server: the cli maps the server's configuration to [`Settings`]
//! and connects the server's `Outbound` hooks to [`Relay::waker`] and [`dns::Resolver::null_mx`].
#![forbid(unsafe_code)]

pub mod connect;
pub mod deliver;
pub mod dns;
pub mod dsn;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod pool;
pub mod relay;
pub mod settings;

pub use dns::Resolver;
pub use relay::Relay;
pub use settings::Settings;
