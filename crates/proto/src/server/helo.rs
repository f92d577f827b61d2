//! HELO and EHLO (RFC 5321 §4.1.1.1): greet, reset any transaction, list the extensions we offer.

use super::Session;
use crate::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_helo(&mut self, name: String, extended: bool) {
        // RFC 5321 §4.1.4: a HELO/EHLO in the middle of a transaction resets it, like RSET.
        self.reset_transaction();
        if self.shutting_down {
            // Draining: a new greeting starts no new transaction.
            return self.shutdown_now();
        }
        let host = self.config.hostname.clone();
        let reply = if extended {
            let r = Reply::plain(250, host)
                .line(format!("SIZE {}", self.config.max_message_size))
                .line("PIPELINING")
                .line("8BITMIME")
                .line("SMTPUTF8")
                .line("ENHANCEDSTATUSCODES")
                .line("CHUNKING");
            let r = if self.config.starttls && !self.tls { r.line("STARTTLS") } else { r };
            let r = if self.is_auth_offered() { r.line("AUTH PLAIN LOGIN") } else { r };
            r.line("HELP")
        } else {
            Reply::plain(250, host)
        };
        self.helo = Some(super::Helo { name, extended });
        self.reply(reply);
    }
}
