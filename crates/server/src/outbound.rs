//! The server's window on outbound delivery: the [`Outbound`] trait that the relay (wired by the command
//! line, since the server does not depend on it) implements. The server asks it about null MX at RCPT and
//! wakes it after a message was queued; everything else about delivery lives in the relay.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

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
}
