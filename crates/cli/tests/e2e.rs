//! End-to-end tests over TCP against the real `mailroom serve` binary, one test binary with one shared
//! harness (`common/mod.rs`: a server on a fresh data directory and a free port, an SMTP line client).
//!
//! | what                                                   | file                          |
//! |--------------------------------------------------------|-------------------------------|
//! | pipelining, BDAT against DATA, size, hostile lines      | `e2e/protocol.rs`             |
//! | Python's smtplib as the client, `mailbox.Maildir` reads | `e2e/smtplib.rs`              |
//! | users changing under a running server, SIGTERM, caps    | `e2e/lifecycle.rs`            |
//! | peak memory with a 20 MiB message                       | `e2e/memory.rs`               |
//! | a STARTTLS client that never reads                      | `e2e/starttls_never_reads.rs` |
//!
//! Run: `cargo test -p mailroom --test e2e`.

mod common;

#[path = "e2e/protocol.rs"]
mod protocol;

#[path = "e2e/smtplib.rs"]
mod smtplib;

#[path = "e2e/lifecycle.rs"]
mod lifecycle;

#[path = "e2e/memory.rs"]
mod memory;

#[path = "e2e/starttls_never_reads.rs"]
mod starttls_never_reads;
