//! Interoperability with real peers: mailroom's server with Python's smtplib/ssl and swaks (TLS, AUTH,
//! submission), and mailroom's client (`send`, `sendmail`) against Python's aiosmtpd.
//!
//! Run: `cargo test -p mailroom --test interop`. The peers come from Debian (`python3-aiosmtpd`, `swaks`);
//! `scripts/install-test-deps` installs them. A missing peer fails the test unless its opt-out variable is set.

mod common;

#[path = "send_support/mod.rs"]
mod send_support;

#[path = "interop/tls.rs"]
mod tls;

#[path = "interop/aiosmtpd.rs"]
mod aiosmtpd;
