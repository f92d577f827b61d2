//! BDAT (RFC 3030 CHUNKING): `BDAT <size> [LAST]` then exactly `size` octets, no dot-stuffing.
//!
//! The chunk's octets always follow the command, whatever we reply, so even a refused BDAT reads and
//! drops them: treating them as commands would let a client smuggle a transaction inside a chunk.

use super::data::refusal;
use super::{AbortReason, Decision, Event, Mode, Pending, Session};
use crate::reply::{Enhanced, Reply};

impl<R> Session<R> {
    pub(super) fn handle_bdat(&mut self, size: u64, last: bool) {
        let refuse = |code, e, text: &'static str| Some(Reply::new(code, e, text));
        let refusal = if self.helo.is_none() {
            refuse(503, Enhanced(5, 5, 1), "Send HELO/EHLO first")
        } else if let Some(tx) = &self.tx {
            if tx.rcpts.is_empty() {
                refuse(554, Enhanced(5, 5, 1), "No valid recipients")
            } else {
                None
            }
        } else {
            refuse(503, Enhanced(5, 5, 1), "Need MAIL command")
        };
        if let Some(r) = refusal {
            // Counted towards max_errors when sent, after the chunk (see process_bdat).
            self.mode = Mode::Bdat { remaining: size, last, refusal: Some(r) };
            return;
        }
        let tx = self.tx.as_mut().expect("checked above");
        if !tx.chunking {
            tx.chunking = true;
            self.wait(Pending::BdatStart { size, last }, Event::DataStart);
        } else {
            self.start_chunk(size, last);
        }
    }

    pub(super) fn answer_bdat_start(&mut self, size: u64, last: bool, decision: Decision<R>) {
        match decision {
            Decision::Reply(r) if !r.is_positive() => {
                // The store could not take it: drop this chunk, refuse, and end the transaction.
                self.bdat_failed = Some(AbortReason::Reset);
                self.mode = Mode::Bdat { remaining: size, last: true, refusal: Some(r) };
            }
            _ => {
                self.begin_body();
                self.start_chunk(size, last);
            }
        }
    }

    fn start_chunk(&mut self, size: u64, last: bool) {
        let tx = self.tx.as_mut().expect("BDAT has a transaction");
        tx.size = tx.size.saturating_add(size);
        if self.bdat_failed.is_none() && tx.size > self.config.max_message_size {
            self.bdat_failed = Some(AbortReason::TooBig);
            self.abort_data(AbortReason::TooBig);
        }
        self.mode = Mode::Bdat { remaining: size, last, refusal: None };
    }

    /// Moves chunk bytes from the buffer; false when it needs more input.
    pub(super) fn process_bdat(&mut self) -> bool {
        let Mode::Bdat { remaining, last, refusal: chunk_refusal } = &mut self.mode else {
            return false;
        };
        let avail = self.input.len() - self.pos;
        let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(avail);
        if take > 0 {
            let bytes = &self.input[self.pos..self.pos + take];
            if chunk_refusal.is_none() && self.bdat_failed.is_none() {
                self.bdat_check.feed(bytes);
                if self.header_scan.feed(bytes, self.config.max_header_lines, self.config.max_header_size) {
                    self.events.push_back(Event::Data(bytes.to_vec()));
                } else {
                    // Dropped like any aborted body; abort_data's event, inlined (self.mode is borrowed).
                    self.bdat_failed = Some(AbortReason::HeaderTooLarge);
                    if std::mem::take(&mut self.data_open) {
                        self.events.push_back(Event::DataAborted(AbortReason::HeaderTooLarge));
                    }
                }
            }
            self.pos += take;
            *remaining -= take as u64;
        }
        if *remaining > 0 {
            return take > 0;
        }
        let last = *last;
        let chunk_refusal = chunk_refusal.take();
        self.mode = Mode::Command;
        if let Some(r) = chunk_refusal {
            if self.bdat_failed.is_some() {
                // The store refused the message: not the client's fault.
                self.reply(r);
                self.reset_transaction();
                self.transaction_over();
            } else {
                // Out of sequence: an error like any other, so a flood of them meets max_errors.
                self.error(r);
            }
            return true;
        }
        if let Some(reason) = self.bdat_failed {
            // RFC 3030 §2: a failed chunk fails the transaction; the client must start again.
            self.reply(refusal(reason));
            self.reset_transaction();
            self.transaction_over();
            return true;
        }
        if last {
            let failed = if self.bdat_check.finish() { Some(AbortReason::BareLineEnding) } else { None };
            if let Some(reason) = failed {
                self.abort_data(reason);
            }
            self.end_of_data(failed);
        } else {
            let size = self.tx.as_ref().map_or(0, |t| t.size);
            self.reply(Reply::new(250, Enhanced(2, 0, 0), format!("{size} octets received")));
        }
        true
    }
}
