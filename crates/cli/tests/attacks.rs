//! The attack suite: what has gone wrong in Postfix, Exim, OpenSMTPD and sendmail over the years, each a
//! test against the real `mailroom serve` over TCP. Read it as a catalogue: one file per class, one test
//! per known attack, named after it, with a doc comment naming the CVE, advisory or history.
//!
//! | class                          | file                          |
//! |--------------------------------|-------------------------------|
//! | SMTP smuggling (end-of-data)   | `attacks/smuggling.rs`        |
//! | STARTTLS command / response injection | `attacks/starttls.rs`  |
//! | Open relay probes              | `attacks/open_relay.rs`       |
//! | Hostile addresses & parameters | `attacks/hostile_input.rs`    |
//! | Resource exhaustion & limits   | `attacks/exhaustion.rs`       |
//! | Address harvesting             | `attacks/harvesting.rs`       |
//!
//! Every case asserts the exact reply (code and enhanced status code) and then
//! [`support::assert_still_serves`]: a normal message to a known user still gets 250 and lands in its
//! Maildir. Cases with hostile bytes also check that nothing unexpected appeared in the data directory
//! and that the server's log holds no raw CR, LF or NUL from the input.
//!
//! Run: `cargo test -p mailroom --test attacks` (add `-- --nocapture` to see the figures some cases print).

mod common;

#[path = "attacks/support.rs"]
mod support;

#[path = "attacks/smuggling.rs"]
mod smuggling;

#[path = "attacks/starttls.rs"]
mod starttls;

#[path = "attacks/open_relay.rs"]
mod open_relay;

#[path = "attacks/hostile_input.rs"]
mod hostile_input;

#[path = "attacks/exhaustion.rs"]
mod exhaustion;

#[path = "attacks/harvesting.rs"]
mod harvesting;
