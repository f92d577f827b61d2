//! BDAT (RFC 3030) through a whole server session: the input is a list of operations (BDAT chunks with
//! arbitrary payloads, MAIL+RCPT, RSET, NOOP, EHLO) that the target turns into a correctly framed,
//! pipelined client stream after `EHLO`, `MAIL`, `RCPT`, fed in chunks, events answered as in
//! `server_session`.
//!
//! Input: an 8-byte header (`mailroom_fuzz::Knobs`; max_errors forced high, no end action), then ops
//! (`mailroom_fuzz::parse_bdat_ops`: op byte, and for a chunk a length byte and the payload).
//!
//! Invariants, on top of all of `server_session`'s:
//! - exactly one reply per command: chunk payloads (which may hold `\r\nRSET\r\n`, `MAIL FROM`...) are
//!   never read as commands, and no command goes unanswered, accepted or refused;
//! - a message reaching DataEnd is exactly the concatenation of the payloads of consecutive BDAT
//!   commands, the last of them with LAST: nothing dropped, added or reordered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{bdat_stream, check_replies, lossy, parse_bdat_ops, Driver, Knobs, HEADER};

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let mut knobs = Knobs::parse(&data[..HEADER]);
    knobs.end = 0;
    knobs.repeat = 0;
    knobs.config &= !0x40;
    let ops = parse_bdat_ops(&data[HEADER..]);
    let (stream, commands, chunks) = bdat_stream(&ops);
    let mut config = knobs.config();
    config.max_errors = usize::MAX;
    let mut d = Driver::with_config(knobs, config);
    d.run(&stream);
    assert!(d.t.fed_all && !d.t.closed, "session closed without QUIT");
    let replies = check_replies(&d.t.output);
    assert_eq!(replies, commands + 1, "replies (with the greeting) vs commands sent");

    // Each message is the payloads of a run of chunks ending in LAST, later than the previous message.
    let mut from = 0;
    for (msg, _) in &d.t.messages {
        let found = (from..chunks.len()).filter(|&j| chunks[j].1).find_map(|j| {
            let mut acc: Vec<u8> = Vec::new();
            for i in (from..=j).rev() {
                if i < j && chunks[i].1 {
                    break;
                }
                let mut joined = chunks[i].0.clone();
                joined.extend_from_slice(&acc);
                acc = joined;
                if acc == *msg {
                    return Some(j + 1);
                }
                if acc.len() > msg.len() {
                    break;
                }
            }
            None
        });
        from = found.unwrap_or_else(|| panic!("message {:?} is no run of chunk payloads", lossy(msg)));
    }
});
