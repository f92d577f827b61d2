//! Outbound delivery end to end (issue 11): `mailroom serve` relays its users' mail to the world, against
//! a real DNS server (Debian's `knotd`, serving the zone `test.` on loopback) and real receiving servers on
//! other loopback addresses (127.0.0.2, 127.0.0.3 ...: Python's aiosmtpd scripted by
//! `tests/outbound/receiver.py`, and Postfix), all on one port that the test sets as `[delivery] port`.
//!
//! Run: `cargo test -p mailroom --test outbound`. Needs `knot`, `python3-aiosmtpd` and `postfix` from
//! Debian (`scripts/install-test-deps` installs them; the Postfix tests run a private instance and need
//! root). A missing tool fails the test unless `MAILROOM_SKIP_OUTBOUND=1` is set.

mod common;

#[path = "outbound/support.rs"]
mod support;

#[path = "outbound/mx.rs"]
mod mx;

#[path = "outbound/dsn.rs"]
mod dsn;

#[path = "outbound/refusals.rs"]
mod refusals;

#[path = "outbound/queue_cli.rs"]
mod queue_cli;

#[path = "outbound/crash.rs"]
mod crash;

#[path = "outbound/postfix.rs"]
mod postfix;

#[path = "outbound/smarthost.rs"]
mod smarthost;
