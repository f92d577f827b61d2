//! mailroom-relay
#![forbid(unsafe_code)]
pub mod dns;
