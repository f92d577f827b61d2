//! The small commands: NOOP, QUIT, VRFY, EXPN and HELP.

use super::Session;
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    /// RFC 5321 §4.1.1.9.
    pub(super) fn handle_noop(&mut self) {
        self.reply(Reply::new(250, Enhanced(2, 0, 0), "OK"));
    }

    /// RFC 5321 §4.1.1.10: 221, then close.
    pub(super) fn handle_quit(&mut self) {
        self.reset_transaction();
        let r = Reply::new(221, Enhanced(2, 0, 0), format!("{} closing connection", self.config.hostname));
        self.reply(r);
        self.close();
    }

    /// RFC 5321 §3.5.3: 252 reveals nothing about which users exist (no address harvesting).
    pub(super) fn handle_vrfy(&mut self) {
        self.reply(Reply::new(
            252,
            Enhanced(2, 5, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        ));
    }

    /// RFC 5321 §3.5.2: lists are not expanded for strangers.
    pub(super) fn handle_expn(&mut self) {
        self.reply(Reply::new(502, Enhanced(5, 5, 1), "EXPN not available"));
    }

    /// RFC 5321 §4.1.1.8.
    pub(super) fn handle_help(&mut self) {
        self.reply(
            Reply::new(214, Enhanced(2, 0, 0), "mailroom: commands are")
                .line("HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP")
                .line("See RFC 5321"),
        );
    }
}
