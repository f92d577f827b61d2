//! mailroom-proto: SMTP without I/O.
//!
//! Addresses, commands, replies, ESMTP parameters, the line / DATA / BDAT decoders and the server and
//! client session state machines. No tokio, no sockets, no clock: time is passed in by the caller.
#![forbid(unsafe_code)]

pub mod address;
pub mod base64;
pub mod client;
pub mod command;
pub mod data;
pub mod date;
pub mod extension;
pub mod params;
pub mod reply;
pub mod sasl;
pub mod server;

pub use address::{Address, AddressError, Domain, ForwardPath, ReversePath};
pub use extension::Extension;
pub use reply::{Enhanced, Reply};
