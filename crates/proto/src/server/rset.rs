//! RSET (RFC 5321 §4.1.1.5): abort the transaction, keep the greeting.

use super::Session;
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    pub(super) fn handle_rset(&mut self) {
        self.reset_transaction();
        self.reply(Reply::new(250, Enhanced(2, 0, 0), "Reset OK"));
        self.transaction_over();
    }
}
