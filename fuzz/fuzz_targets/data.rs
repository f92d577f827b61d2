//! The body decoders of `mailroom_proto::data`: `DotDecoder` (DATA), `LineEndingCheck` (BDAT) and `ToLf`
//! (storage), each fed the same bytes whole and in chunks the input chooses.
//!
//! Input: 3 header bytes (split seed, split class), then the body bytes as the client sends them after 354.
//!
//! Invariants:
//! - DotDecoder: the same output, end position and bare-line-ending flag whatever the split; a call that
//!   does not finish consumes all it was given; and all of it equal to a plain reference decoder written
//!   from RFC 5321 §4.5.2: the data ends at the first `.CRLF` that starts a line (the input's start, or
//!   after a CRLF) — so no `<CRLF>.<CRLF>` in the input is ever missed, and no look-alike (`\n.\n`,
//!   `\r.\r`, `\n.\r\n`, ...) ever ends it; a dot that starts a line is removed; a bare CR or LF sets the flag.
//! - LineEndingCheck: the same verdict whatever the split, true exactly when the bytes hold a CR not
//!   followed by LF or an LF not after a CR.
//! - ToLf: the same output whatever the split; CRLF becomes LF and nothing else changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_fuzz::{chunks, has_bare_line_ending, lossy};
use mailroom_proto::data::{DotDecoder, LineEndingCheck, ToLf};

/// The reference: (body, where the data ends, bare CR/LF seen), reading only bytes whose meaning is known.
fn reference(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
    let mut out = Vec::new();
    let mut bare = false;
    let mut line_start = true;
    let mut i = 0;
    let n = input.len();
    while i < n {
        let b = input[i];
        if line_start && b == b'.' {
            if input[i + 1..].starts_with(b"\r\n") {
                return (out, Some(i + 3), bare);
            }
            if i + 1 == n || (input[i + 1] == b'\r' && i + 2 == n) {
                break; // `.` or `.\r` at the end: not known yet whether this is the end of data
            }
            // a stuffed dot: dropped
            line_start = false;
            i += 1;
            continue;
        }
        line_start = false;
        match b {
            b'\r' if i + 1 == n => break, // a CR whose successor has not arrived
            b'\r' if input[i + 1] == b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                line_start = true;
                continue;
            }
            b'\r' | b'\n' => {
                bare = true;
                out.push(b);
            }
            _ => out.push(b),
        }
        i += 1;
    }
    (out, None, bare)
}

fn decode_in(parts: &[&[u8]]) -> (Vec<u8>, Option<usize>, bool) {
    let mut d = DotDecoder::new();
    let mut out = Vec::new();
    let mut offset = 0;
    for p in parts {
        let r = d.decode(p, &mut out);
        assert!(r.consumed <= p.len());
        if r.done {
            return (out, Some(offset + r.consumed), d.saw_bare_line_ending());
        }
        assert_eq!(r.consumed, p.len(), "an unfinished decode left input unconsumed");
        offset += p.len();
    }
    (out, None, d.saw_bare_line_ending())
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let seed = u64::from(u16::from_le_bytes([data[0], data[1]]));
    let class = data[2];
    let body = &data[3..];
    let parts = chunks(body, seed, class);

    // DotDecoder
    let want = reference(body);
    let whole = decode_in(&[body]);
    assert_eq!(whole, want, "DotDecoder vs reference on {:?}", lossy(body));
    let split = decode_in(&parts);
    assert_eq!(split, want, "DotDecoder split {:?}", parts.iter().map(|p| lossy(p)).collect::<Vec<_>>());

    // LineEndingCheck
    let mut c = LineEndingCheck::default();
    for p in &parts {
        c.feed(p);
    }
    assert_eq!(c.finish(), has_bare_line_ending(body), "LineEndingCheck on {:?}", lossy(body));

    // ToLf
    let mut t = ToLf::default();
    let mut lf = Vec::new();
    for p in &parts {
        t.convert(p, &mut lf);
    }
    t.finish(&mut lf);
    let mut want_lf = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(b"\r\n") {
            want_lf.push(b'\n');
            i += 2;
        } else {
            want_lf.push(body[i]);
            i += 1;
        }
    }
    assert_eq!(lf, want_lf, "ToLf on {:?}", lossy(body));
});
