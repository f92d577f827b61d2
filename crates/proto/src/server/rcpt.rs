//! RCPT TO (RFC 5321 §4.1.1.3): the session checks order and the recipient limit; the shell decides
//! whether the recipient is ours.

use super::{Decision, Event, Pending, Session};
use crate::address::ForwardPath;
use crate::reply::{Enhanced, Reply};

impl Session {
    pub(super) fn handle_rcpt(&mut self, to: ForwardPath) {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Need MAIL before RCPT"));
        };
        if tx.chunking {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "RCPT after BDAT"));
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
        self.wait(Pending::Rcpt { to: to.clone() }, Event::Rcpt { to });
    }

    pub(super) fn answer_rcpt(&mut self, to: ForwardPath, decision: Decision) {
        match decision {
            Decision::Reply(r) if !r.is_positive() => self.reply(r),
            d => {
                if let Some(tx) = &mut self.tx {
                    tx.rcpts.push(to);
                }
                self.reply(match d {
                    Decision::Reply(r) => r,
                    Decision::Accept => Reply::new(250, Enhanced(2, 1, 5), "Recipient OK"),
                });
            }
        }
    }
}
