//! What the hot paths call: one function per event, each an atomic operation on a handle registered at
//! [`crate::install`] (nothing at all before it). Label values are enum variants, so every label set
//! stays as small as its enum.

use std::time::Duration;

use crate::handles;
use crate::names::{
    AuthMethod, AuthResult, DeliveryResult, Listener, QueueState, RefusalReason, ReplyClass, TlsVersion,
};

/// A session counted as active until this is dropped (at the end of the session, however it ends).
#[must_use = "the session counts as active until this is dropped"]
#[derive(Debug)]
pub struct ActiveSession {
    listener: Listener,
}

impl Drop for ActiveSession {
    fn drop(&mut self) {
        if let Some(h) = handles::get() {
            h.sessions_active[self.listener as usize].decrement(1.0);
        }
    }
}

/// A session opened on `listener`: counted, and active until the returned guard drops.
pub fn session_opened(listener: Listener) -> ActiveSession {
    if let Some(h) = handles::get() {
        h.sessions_total[listener as usize].increment(1);
        h.sessions_active[listener as usize].increment(1.0);
    }
    ActiveSession { listener }
}

/// A message made durable (250 after the end of data), `bytes` as stored.
pub fn message_received(bytes: u64) {
    if let Some(h) = handles::get() {
        h.messages_received.increment(1);
        h.received_bytes.increment(bytes);
    }
}

/// Counts the replies in bytes about to be written to a client: each reply's last line (`NNN ` or a
/// bare `NNN`; RFC 5321 §4.2.1) by the class of its code. Continuation lines (`NNN-`) are not replies
/// of their own.
pub fn replies(out: &[u8]) {
    let Some(h) = handles::get() else { return };
    for line in out.split(|&b| b == b'\n') {
        let is_last_line = matches!(line, [_, _, _, b' ', ..] | [_, _, _, b'\r'] | [_, _, _]);
        if !is_last_line || !line[..3].iter().all(u8::is_ascii_digit) {
            continue;
        }
        if let Some(class) = ReplyClass::of_digit(line[0]) {
            h.replies[class as usize].increment(1);
        }
    }
}

/// A connection, sender, recipient or message refused.
pub fn refusal(reason: RefusalReason) {
    if let Some(h) = handles::get() {
        h.refusals[reason as usize].increment(1);
    }
}

/// How long one commit took, from the end of data until durable.
pub fn commit_duration(elapsed: Duration) {
    if let Some(h) = handles::get() {
        h.commit_seconds.record(elapsed.as_secs_f64());
    }
}

/// One outbound delivery attempt for one recipient.
pub fn delivery_attempt(result: DeliveryResult) {
    if let Some(h) = handles::get() {
        h.delivery_attempts[result as usize].increment(1);
    }
}

/// The outbound queue as it stands now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueGauges {
    /// Recipients not final, by [`QueueState`] (indexed by `state as usize`).
    pub recipients: [u64; 3],
    /// Entries (messages) in the queue.
    pub messages: u64,
    /// Age of the oldest entry; zero when the queue is empty.
    pub oldest_age: Duration,
}

impl QueueGauges {
    /// Adds one recipient in `state`.
    pub fn add(&mut self, state: QueueState) {
        self.recipients[state as usize] += 1;
    }
}

/// Sets the queue gauges (the relay calls it when it looks at the queue anyway, at most once a second).
pub fn queue(gauges: &QueueGauges) {
    let Some(h) = handles::get() else { return };
    for state in QueueState::ALL {
        h.queue_recipients[*state as usize].set(gauges.recipients[*state as usize] as f64);
    }
    h.queue_messages.set(gauges.messages as f64);
    h.queue_oldest_age.set(gauges.oldest_age.as_secs_f64());
}

/// An SMTP AUTH attempt that failed (wrong password, unknown user).
pub fn smtp_auth_failure() {
    if let Some(h) = handles::get() {
        h.smtp_auth_failures.increment(1);
    }
}

/// A TLS handshake that completed with `version`.
pub fn tls_handshake(version: TlsVersion) {
    if let Some(h) = handles::get() {
        h.tls_handshakes[version as usize].increment(1);
    }
}

/// A TLS handshake that failed, timed out or was cut short.
pub fn tls_handshake_failed() {
    if let Some(h) = handles::get() {
        h.tls_failures.increment(1);
    }
}

/// One result of an inbound authentication check (one per DKIM signature, one SPF, one DMARC, one ARC
/// per message checked).
pub fn auth_result(method: AuthMethod, result: AuthResult) {
    if let Some(h) = handles::get() {
        h.auth_results[method as usize * AuthResult::ALL.len() + result as usize].increment(1);
    }
}
