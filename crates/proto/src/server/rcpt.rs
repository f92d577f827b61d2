//! RCPT TO (RFC 5321 §4.1.1.3): the session checks order and the recipient limit; the shell decides
//! whether the recipient is ours.

use super::{Decision, Event, Pending, Session};
use crate::address::ForwardPath;
use crate::params::RcptParams;
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    pub(super) fn handle_rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Need MAIL before RCPT"));
        };
        if tx.chunking {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "RCPT after BDAT"));
        }
        if params.has_dsn() && !self.config.dsn {
            // RFC 3461 §4 via RFC 5321 §4.1.1.11: parameters of an extension not offered.
            return self.error(Reply::new(555, Enhanced(5, 5, 4), "Unsupported RCPT parameter"));
        }
        if params.has_dsn() && !self.helo.as_ref().is_some_and(|h| h.extended) {
            return self.error(Reply::new(555, Enhanced(5, 5, 4), "RCPT parameters need EHLO"));
        }
        if tx.rcpts.len() >= self.config.max_recipients {
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients, so the client retries the rest later.
            return self.reply(Reply::new(452, Enhanced(4, 5, 3), "Too many recipients"));
        }
        if let ForwardPath::Mailbox(a) = &to {
            if !a.is_ascii() && !tx.params.smtputf8 {
                return self.error(Reply::new(553, Enhanced(5, 6, 7), "Non-ASCII address requires SMTPUTF8"));
            }
        }
        self.wait(Pending::Rcpt { to: to.clone(), params: params.clone() }, Event::Rcpt { to, params });
    }

    pub(super) fn answer_rcpt(&mut self, to: ForwardPath, params: RcptParams, decision: Decision<R>) {
        let standard = || Reply::new(250, Enhanced(2, 1, 5), "Recipient OK");
        let (route, reply) = match decision {
            Decision::AcceptRcpt(route) => (route, standard()),
            Decision::Reply(r) if !r.is_positive() => {
                // A refused recipient is an error like a refused command: Postfix's smtpd counts every
                // rejected command, 4xx and 5xx alike, towards smtpd_soft_error_limit (the tarpit) and
                // smtpd_hard_error_limit (421 and close). Without that, guessing addresses costs nothing
                // (harvesting: a million RCPTs answered on one connection). A temporary refusal counts too:
                // it is still a recipient the client may not use now, and a harvester would pick the
                // listener that answers 4xx. The session's own 452 for too many recipients is not counted,
                // as in Postfix (smtpd_recipient_overshoot_limit): an honest client sends the rest later.
                return self.error(r);
            }
            d => match self.unrouted {
                Some(unrouted) => (unrouted(), d.into_reply(standard)),
                // Accepted without a route by a shell that routes: its bug. Refuse for now rather than
                // accept a recipient no one knows where to deliver.
                None => return self.reply(Reply::new(451, Enhanced(4, 3, 0), "Recipient not routed, try again later")),
            },
        };
        if let Some(tx) = &mut self.tx {
            tx.push_recipient(to, params, route);
        }
        self.reply(reply);
    }
}
