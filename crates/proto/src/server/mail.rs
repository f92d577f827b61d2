//! MAIL FROM (RFC 5321 §4.1.1.2): starts a transaction once the shell accepts the sender.

use super::{Decision, Event, Pending, Session, Transaction};
use crate::address::ReversePath;
use crate::params::MailParams;
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    pub(super) fn handle_mail(&mut self, from: ReversePath, params: MailParams) {
        if !self.need_helo() {
            return;
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Nested MAIL command"));
        }
        if self.config.auth_required && self.authenticated.is_none() {
            // RFC 4954 §6: submission needs authentication before MAIL.
            return self.error(Reply::new(530, Enhanced(5, 7, 0), "Authentication required"));
        }
        if params.has_dsn() && !self.config.dsn {
            // RFC 3461 §4 via RFC 5321 §4.1.1.11: parameters of an extension not offered.
            return self.error(Reply::new(555, Enhanced(5, 5, 4), "Unsupported MAIL parameter"));
        }
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        if !extended && params != MailParams::default() {
            // Parameters are ESMTP: a client that said HELO may not use them.
            return self.error(Reply::new(555, Enhanced(5, 5, 4), "MAIL parameters need EHLO"));
        }
        if let Some(size) = params.size {
            if size > self.config.max_message_size {
                // RFC 1870 §6.1: refuse at MAIL when the declared size exceeds the fixed limit.
                return self.error(Reply::new(
                    552,
                    Enhanced(5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                ));
            }
        }
        if let ReversePath::Mailbox(a) = &from {
            if !a.is_ascii() && !params.smtputf8 {
                // RFC 6531 §3.5: a UTF-8 address needs the SMTPUTF8 parameter.
                return self.error(Reply::new(553, Enhanced(5, 6, 7), "Non-ASCII address requires SMTPUTF8"));
            }
        }
        self.wait(Pending::Mail { from: from.clone(), params: params.clone() }, Event::Mail { from, params });
    }

    pub(super) fn answer_mail(&mut self, from: ReversePath, params: MailParams, decision: Decision<R>) {
        let reply = decision.into_reply(|| Reply::new(250, Enhanced(2, 1, 0), "Sender OK"));
        if reply.is_positive() {
            self.tx = Some(Transaction::new(from, params));
        }
        self.reply(reply);
    }
}
