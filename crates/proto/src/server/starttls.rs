//! STARTTLS (RFC 3207).
//!
//! After our 220, every byte the client already sent in plaintext is thrown away: a command injected
//! behind STARTTLS must never run inside the TLS session (CVE-2011-0411 and the 2021 "Why TLS is better
//! without STARTTLS" findings). After the handshake the session forgets everything it learned in
//! plaintext and needs a new EHLO (RFC 3207 §4.2); STARTTLS is not offered again.

use std::time::Instant;

use super::{Event, Pending, Session};
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    pub(super) fn handle_starttls(&mut self) {
        if self.tls {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Already under TLS"));
        }
        if !self.config.starttls {
            return self.error(Reply::new(502, Enhanced(5, 5, 1), "STARTTLS not available"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "STARTTLS not allowed during a mail transaction"));
        }
        self.reply(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"));
        // Everything after STARTTLS<CRLF> was sent in plaintext: drop it.
        self.input.clear();
        self.pos = 0;
        self.wait(Pending::StartTls, Event::StartTls);
    }

    /// The TLS handshake succeeded: start over as a fresh session under TLS.
    pub fn handle_tls_established(&mut self, now: Instant) {
        if self.pending != Some(Pending::StartTls) {
            return;
        }
        self.pending = None;
        self.input.clear();
        self.pos = 0;
        self.helo = None;
        self.tx = None;
        self.authenticated = None;
        self.tls = true;
        self.touch(now);
        self.process();
    }
}
