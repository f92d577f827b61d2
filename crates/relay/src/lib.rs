//! mailroom-relay: outbound delivery.
#![forbid(unsafe_code)]
pub mod connect;
pub mod deliver;
pub mod dns;
pub mod dsn;
pub mod message;
pub mod notify;
pub mod pool;
pub mod relay;
pub mod settings;
pub use relay::Relay;
