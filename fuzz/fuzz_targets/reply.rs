//! The client's reply parser (`client::ReplyParser`) on arbitrary server bytes, whole and in chunks the
//! input chooses, as the client reads them.
//!
//! Input: 3 header bytes (split seed, split class), then what the server sends.
//!
//! Invariants:
//! - no panic; bounded: after each read the client holds less than MAX_REPLY_LINE unconsumed octets
//!   (else the parser must have refused), a reply has at most MAX_REPLY_LINES lines, and the consumed
//!   count never exceeds what was offered;
//! - every reply has a code 200-559 and an enhanced code, if any, of the same class; its text holds no
//!   control character but tab;
//! - the replies read are the same whatever the split, up to an error: the shorter list is a prefix of
//!   the longer, and both runs end in an error if one does (the parser may refuse early, on a partial
//!   line, or look ahead within a line window);
//! - writing a parsed reply back with `Reply::write_to` and parsing it again gives the same reply (up to
//!   leading spaces of lines that follow an enhanced code).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{chunks, lossy};
use mailroom_proto::client::{parse_reply, ReplyParser, MAX_REPLY_LINE, MAX_REPLY_LINES};
use mailroom_proto::Reply;

/// Reads replies as a client does: append what arrived, parse as much as possible. Stops at an error.
fn read(parts: &[&[u8]]) -> (Vec<Reply>, bool) {
    let mut p = ReplyParser::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut replies = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match p.parse(&buf) {
                Err(_) => return (replies, true),
                Ok((n, r)) => {
                    assert!(n <= buf.len(), "consumed {n} of {}", buf.len());
                    buf.drain(..n);
                    match r {
                        Some(r) => replies.push(r),
                        None => break,
                    }
                }
            }
        }
        assert!(buf.len() < MAX_REPLY_LINE, "client holds {} unparsed octets", buf.len());
    }
    (replies, false)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let seed = u64::from(u16::from_le_bytes([data[0], data[1]]));
    let input = &data[3..];
    let (whole, whole_err) = read(&[input]);
    let (split, split_err) = read(&chunks(input, seed, data[2]));
    let n = whole.len().min(split.len());
    assert_eq!(whole[..n], split[..n], "replies differ with the split");
    if whole.len() != split.len() || whole_err != split_err {
        assert!(whole_err && split_err, "one run failed, the other not: {:?}", lossy(input));
    }
    for r in whole.iter().chain(&split) {
        assert!((200..=559).contains(&r.code), "code {}", r.code);
        assert!(!r.lines.is_empty() && r.lines.len() <= MAX_REPLY_LINES);
        if let Some(e) = r.enhanced {
            assert_eq!(u16::from(e.0), r.code / 100, "enhanced {e} in a {} reply", r.code);
        }
        for l in &r.lines {
            assert!(!l.chars().any(|c| c.is_control() && c != '\t'), "control character in {l:?}");
        }
        let wire = r.to_bytes();
        if wire.split(|&b| b == b'\n').any(|l| l.len() + 1 > MAX_REPLY_LINE) {
            continue; // restoring the enhanced code on a continuation line can make it too long
        }
        let (back, used) = parse_reply(&wire)
            .unwrap_or_else(|e| panic!("{:?} does not parse back: {e}", lossy(&wire)))
            .unwrap_or_else(|| panic!("{:?} parses back incomplete", lossy(&wire)));
        assert_eq!(used, wire.len());
        // A continuation line that lacked the enhanced code keeps its leading spaces when parsed; written
        // back it gets the code, after which spaces are separators. Compare without them.
        let mut want = r.clone();
        if want.enhanced.is_some() {
            for l in &mut want.lines {
                *l = l.trim_start_matches(' ').to_owned().into();
            }
        }
        assert_eq!(back, want, "round trip through {:?}", lossy(&wire));
    }
});
