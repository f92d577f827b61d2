//! DATA (RFC 5321 §4.1.1.4): 354, then the dot-stuffed body until `<CRLF>.<CRLF>`.

use super::{AbortReason, Decision, Event, Mode, Pending, Session};
use crate::data::DotDecoder;
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    pub(super) fn handle_data(&mut self) {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Need MAIL command"));
        };
        if tx.chunking {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "DATA after BDAT"));
        }
        if tx.rcpts.is_empty() {
            // RFC 5321 §3.3 / RFC 2920 §3.1: 554 when every RCPT was refused.
            return self.error(Reply::new(554, Enhanced(5, 5, 1), "No valid recipients"));
        }
        self.wait(Pending::DataStart, Event::DataStart);
    }

    pub(super) fn answer_data_start(&mut self, decision: Decision<R>) {
        match decision {
            Decision::Reply(r) if !r.is_positive() => self.reply(r),
            _ => {
                self.begin_body();
                self.mode = Mode::Data { decoder: DotDecoder::new(), failed: None };
                self.reply(Reply::plain(354, "Start mail input; end with <CRLF>.<CRLF>"));
            }
        }
    }

    /// Decodes buffered body bytes; false when it needs more input.
    pub(super) fn process_data(&mut self) -> bool {
        let Mode::Data { decoder, failed } = &mut self.mode else {
            return false;
        };
        if self.pos == self.input.len() {
            return false;
        }
        // Sized for the whole buffered input (the body is never longer than its stuffed form): one
        // allocation per chunk, not a doubling series.
        let mut chunk = Vec::with_capacity(self.input.len() - self.pos);
        let r = decoder.decode(&self.input[self.pos..], &mut chunk);
        self.pos += r.consumed;
        let tx = self.tx.as_mut().expect("DATA mode has a transaction");
        tx.size += chunk.len() as u64;
        let mut abort = None;
        if failed.is_none() {
            if tx.size > self.config.max_message_size {
                *failed = Some(AbortReason::TooBig);
                abort = *failed;
            } else if decoder.saw_bare_line_ending() {
                *failed = Some(AbortReason::BareLineEnding);
                abort = *failed;
            } else if !self.header_scan.feed(&chunk, self.config.max_header_lines, self.config.max_header_size) {
                *failed = Some(AbortReason::HeaderTooLarge);
                abort = *failed;
            }
        }
        let failed = *failed;
        if let Some(reason) = abort {
            self.abort_data(reason);
        } else if failed.is_none() && !chunk.is_empty() {
            self.emit(Event::Data(chunk));
        }
        if r.done {
            self.mode = Mode::Command;
            self.end_of_data(failed);
        }
        true
    }

    /// The real end of data (DATA's final dot, or BDAT LAST): ask the store, or refuse.
    pub(super) fn end_of_data(&mut self, failed: Option<AbortReason>) {
        match failed {
            None => self.wait(Pending::DataEnd, Event::DataEnd),
            Some(reason) => {
                self.reply(refusal(reason));
                self.reset_transaction();
                self.transaction_over();
            }
        }
    }

    /// The store took the message: the body begins now.
    pub(super) fn begin_body(&mut self) {
        self.data_open = true;
        self.data_started = self.now;
        self.data_octets = 0;
        self.header_scan = Default::default();
    }

    pub(super) fn answer_data_end(&mut self, decision: Decision<R>) {
        self.data_open = false;
        self.reply(decision.into_reply(|| Reply::new(250, Enhanced(2, 0, 0), "Message accepted")));
        self.reset_transaction();
        self.transaction_over();
    }
}

/// The reply for a body that will not be stored.
pub(super) fn refusal(reason: AbortReason) -> Reply {
    match reason {
        AbortReason::TooBig => Reply::new(552, Enhanced(5, 3, 4), "Message size exceeds fixed maximum message size"),
        AbortReason::BareLineEnding => {
            Reply::new(550, Enhanced(5, 5, 2), "Bare CR or LF in message data is not allowed; use CRLF line endings")
        }
        AbortReason::HeaderTooLarge => Reply::new(552, Enhanced(5, 3, 4), "Message header section too large"),
        AbortReason::Reset => Reply::new(451, Enhanced(4, 3, 0), "Message aborted"),
    }
}
