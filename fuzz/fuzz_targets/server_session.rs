//! A whole `server::Session` fed the fuzz input as client bytes, in chunks the input chooses, with every
//! event answered (accept, or one of several refusals, possibly a few reads late).
//!
//! Input: an 8-byte header (see `mailroom_fuzz::Knobs`: split, limits, repetition, end action, answers),
//! then the client's bytes.
//!
//! Invariants (asserted by `mailroom_fuzz::Driver` after every call into the session):
//! - no panic; output is whole replies, every line `DDD[ -]text\r\n`, 2xx-5xx, no control characters,
//!   multi-line replies keep one code, the first is the 220 greeting, nothing after Close;
//! - Data events only between an accepted DataStart and DataEnd/DataAborted, never empty, never more
//!   than max_message_size in total; a message reaching DataEnd holds no bare CR or LF;
//! - an event that needs an answer comes alone and the session then is_waiting(), with no timeout;
//!   wants_input() is false only while waiting (or closed);
//! - the input buffer stays bounded: at most one command line while nothing waits, about
//!   MAX_BUFFERED_INPUT while an answer is pending; nothing once closed;
//! - a Close event comes exactly when is_closed(), after DataAborted for an open message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{check_replies, repeated, Driver, Knobs, HEADER};

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let knobs = Knobs::parse(&data[..HEADER]);
    let stream = repeated(&data[HEADER..], knobs);
    let mut d = Driver::new(knobs);
    d.run(&stream);
    check_replies(&d.t.output);
});
