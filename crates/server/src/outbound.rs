//! The server's window on outbound delivery: the [`Outbound`] trait that the relay (wired by the command
//! line, since the server does not depend on it) implements. The server asks it about null MX at RCPT and
//! wakes it after a message was queued; everything else about delivery lives in the relay.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

/// The longest the RCPT-time null-MX check may hold a session: past it the recipient is accepted and the
/// relay decides later (a slow resolver must not stall submission). Implementations bound themselves
/// too; the server enforces this in any case.
pub const NULL_MX_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server needs from the outbound delivery agent.
pub trait Outbound: Send + Sync {
    /// RFC 7505: does `domain` publish a null MX (a single MX record of preference 0 and target `.`)?
    /// true: the recipient is refused with 556 5.1.10 at RCPT. Errors and timeouts answer false (accept:
    /// the relay decides later).
    fn null_mx(&self, domain: &str) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;

    /// Something was queued: start delivery now (the first attempt within a second of the 250).
    fn wake(&self);

    /// A message reached local mailboxes of recipients whose sender asked for a success notice (RFC 3461
    /// NOTIFY=SUCCESS): send the "delivered" DSN (RFC 3464 §2.3.3). Called after the 250; the default does
    /// nothing (no delivery agent, no reports).
    fn delivered(&self, notice: DeliveredNotice) {
        let _ = notice;
    }
}

/// What a "delivered" DSN needs to know about the original message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredNotice {
    /// The store's id of the message (as in the 250 reply).
    pub id: String,
    /// The envelope sender, who gets the report.
    pub from: String,
    /// RFC 3461 ENVID (decoded) and RET of the original.
    pub envid: Option<String>,
    pub ret_full: bool,
    pub arrival: SystemTime,
    /// The recipients delivered: address, and ORCPT as `type;address` (decoded) when given.
    pub recipients: Vec<(String, Option<String>)>,
    /// One stored copy, for the original's headers (a reader may have moved it already: then none).
    pub message: PathBuf,
}
