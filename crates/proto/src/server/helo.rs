//! HELO and EHLO (RFC 5321 §4.1.1.1): greet, reset any transaction, list the extensions we offer.

use super::Session;
use crate::extension::Extension;
use crate::reply::Reply;
use crate::sasl::Mechanism;

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
            self.extensions().iter().fold(Reply::plain(250, host), |r, e| r.line(e.to_string()))
        } else {
            Reply::plain(250, host)
        };
        self.helo = Some(super::Helo { name, extended });
        self.reply(reply);
    }

    /// What this session offers now, in the order of the EHLO reply.
    fn extensions(&self) -> Vec<Extension> {
        let mut v = vec![
            Extension::Size(Some(self.config.max_message_size)),
            Extension::Pipelining,
            Extension::EightBitMime,
            Extension::SmtpUtf8,
            Extension::EnhancedStatusCodes,
            Extension::Chunking,
        ];
        if self.config.dsn {
            v.push(Extension::Dsn);
        }
        if self.config.starttls && !self.tls {
            v.push(Extension::StartTls);
        }
        if self.is_auth_offered() {
            v.push(Extension::Auth(Mechanism::ALL.iter().map(|m| m.name().to_owned()).collect()));
        }
        v.push(Extension::Help);
        v
    }
}
