//! The handles of every series, registered once at install: recording is then an atomic operation on
//! a handle, with no key built, hashed or looked up per increment.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};

use crate::names::*;

/// Every series mailroom records, each label set registered up front (so each family shows its series
/// at zero before anything happened, and the hot path never registers).
pub(crate) struct Handles {
    pub(crate) sessions_total: Box<[Counter]>,
    pub(crate) sessions_active: Box<[Gauge]>,
    pub(crate) messages_received: Counter,
    pub(crate) received_bytes: Counter,
    pub(crate) replies: Box<[Counter]>,
    pub(crate) refusals: Box<[Counter]>,
    pub(crate) commit_seconds: Histogram,
    pub(crate) delivery_attempts: Box<[Counter]>,
    pub(crate) queue_recipients: Box<[Gauge]>,
    pub(crate) queue_messages: Gauge,
    pub(crate) queue_oldest_age: Gauge,
    pub(crate) smtp_auth_failures: Counter,
    pub(crate) tls_handshakes: Box<[Counter]>,
    pub(crate) tls_failures: Counter,
    /// Indexed by `method as usize * AuthResult::ALL.len() + result as usize`.
    pub(crate) auth_results: Box<[Counter]>,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// The handles, once [`crate::install`] registered them.
pub(crate) fn get() -> Option<&'static Handles> {
    HANDLES.get()
}

/// Registers every series with the recorder in force (the caller makes it so) and keeps the handles.
pub(crate) fn register() {
    HANDLES.get_or_init(Handles::register);
}

/// One counter per value of a label set.
macro_rules! per_label {
    ($macro:ident, $name:expr, $set:ty) => {
        <$set>::ALL.iter().map(|v| metrics::$macro!($name, <$set>::LABEL => v.as_str())).collect::<Box<[_]>>()
    };
}

impl Handles {
    fn register() -> Handles {
        let auth_results = AuthMethod::ALL
            .iter()
            .flat_map(|m| {
                AuthResult::ALL.iter().map(move |r| {
                    metrics::counter!(AUTH_RESULTS, AuthMethod::LABEL => m.as_str(), AuthResult::LABEL => r.as_str())
                })
            })
            .collect();
        Handles {
            sessions_total: per_label!(counter, SESSIONS_TOTAL, Listener),
            sessions_active: per_label!(gauge, SESSIONS_ACTIVE, Listener),
            messages_received: metrics::counter!(MESSAGES_RECEIVED),
            received_bytes: metrics::counter!(RECEIVED_BYTES),
            replies: per_label!(counter, SMTP_REPLIES, ReplyClass),
            refusals: per_label!(counter, REFUSALS, RefusalReason),
            commit_seconds: metrics::histogram!(STORE_COMMIT_SECONDS),
            delivery_attempts: per_label!(counter, DELIVERY_ATTEMPTS, DeliveryResult),
            queue_recipients: per_label!(gauge, QUEUE_RECIPIENTS, QueueState),
            queue_messages: metrics::gauge!(QUEUE_MESSAGES),
            queue_oldest_age: metrics::gauge!(QUEUE_OLDEST_AGE),
            smtp_auth_failures: metrics::counter!(SMTP_AUTH_FAILURES),
            tls_handshakes: per_label!(counter, TLS_HANDSHAKES, TlsVersion),
            tls_failures: metrics::counter!(TLS_HANDSHAKE_FAILURES),
            auth_results,
        }
    }
}
