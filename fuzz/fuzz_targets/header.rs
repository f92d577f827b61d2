//! The header-section splitter of `mailroom sendmail` (`mailroom_client::header`) on arbitrary messages.
//!
//! Input: the message as a program would pipe it to sendmail.
//!
//! Invariants:
//! - no panic; an error exactly when the first line (after a skipped mbox `From ` line) starts with a
//!   space or a tab;
//! - the skipped line, the fields and the rest tile the input: the fields are consecutive slices of it
//!   from `skipped` to `body_start`, nothing lost or repeated;
//! - each field starts with its name (`1*ftext`, RFC 5322 §3.6.8), then only spaces or tabs up to its
//!   colon (§4.5.3); every further line of a field starts with a space or a tab; no field holds an empty
//!   line;
//! - the section ends at an empty line (`ended_by_empty_line`, the rest then starts with it) or at a line
//!   that is neither a field nor a continuation, or at the end of the input;
//! - the result equals a reference splitter written separately from RFC 5322 over `split_inclusive`;
//! - the fields written again with a CRLF empty line after them split into the same names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_client::header::{split, HeaderError};
use mailroom_fuzz::lossy;

fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// RFC 5322 §3.6.8 / §4.5.3 from scratch: `1*ftext *WSP ":"`; the length of the name.
fn reference_name(line: &[u8]) -> Option<usize> {
    let n = line.iter().take_while(|&&b| is_ftext(b)).count();
    let rest = &line[n..];
    let after_ws = rest.iter().skip_while(|&&b| b == b' ' || b == b'\t').next();
    (n > 0 && after_ws == Some(&b':')).then_some(n)
}

/// (field names, field lengths, body_start, ended_by_empty_line, skipped), or None for an error.
type Reference = (Vec<Vec<u8>>, Vec<usize>, usize, bool, usize);

fn reference(input: &[u8]) -> Option<Reference> {
    let mut lines = input.split_inclusive(|&b| b == b'\n').peekable();
    let mut pos = 0;
    let mut skipped = 0;
    if let Some(first) = lines.peek() {
        if first.starts_with(b"From ") && reference_name(first).is_none() {
            skipped = first.len();
            pos = skipped;
            lines.next();
        }
    }
    let (mut names, mut lens) = (Vec::new(), Vec::new());
    for line in lines {
        if line == b"\n" || line == b"\r\n" {
            return Some((names, lens, pos, true, skipped));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            *lens.last_mut()? += line.len();
        } else if let Some(n) = reference_name(line) {
            names.push(line[..n].to_vec());
            lens.push(line.len());
        } else {
            break;
        }
        pos += line.len();
    }
    Some((names, lens, pos, false, skipped))
}

fuzz_target!(|input: &[u8]| {
    let want = reference(input);
    let h = match split(input) {
        Err(HeaderError::StartsWithContinuation) => {
            assert!(want.is_none(), "error where the reference splits: {:?}", lossy(input));
            return;
        }
        Ok(h) => h,
    };
    let Some((names, lens, body_start, ended, skipped)) = want else {
        panic!("split where the reference refuses: {:?}", lossy(input));
    };
    assert_eq!(h.fields.iter().map(|f| f.name.to_vec()).collect::<Vec<_>>(), names, "{:?}", lossy(input));
    assert_eq!(h.fields.iter().map(|f| f.raw.len()).collect::<Vec<_>>(), lens);
    assert_eq!((h.body_start, h.ended_by_empty_line, h.skipped), (body_start, ended, skipped));

    // The fields tile input[skipped..body_start].
    let base = input.as_ptr() as usize;
    let mut at = h.skipped;
    for f in &h.fields {
        assert_eq!(f.raw.as_ptr() as usize - base, at, "fields are consecutive slices of the input");
        at += f.raw.len();
        assert!(!f.name.is_empty() && f.name.iter().all(|&b| is_ftext(b)));
        assert!(f.raw.starts_with(f.name));
        assert!(f.raw[f.name.len()..f.colon].iter().all(|&b| b == b' ' || b == b'\t'));
        assert_eq!(f.raw[f.colon], b':');
        for (i, line) in f.raw.split_inclusive(|&b| b == b'\n').enumerate() {
            assert!(line != b"\n" && line != b"\r\n", "empty line inside a field");
            if i > 0 {
                assert!(line[0] == b' ' || line[0] == b'\t', "a field line that is no continuation");
            }
        }
    }
    assert_eq!(at, h.body_start);
    let rest = &input[h.body_start..];
    if h.ended_by_empty_line {
        assert!(rest.starts_with(b"\n") || rest.starts_with(b"\r\n"));
    }

    // Written again (each field ending in a line end) with an empty line: the same names.
    let mut again: Vec<u8> = Vec::new();
    for f in &h.fields {
        again.extend_from_slice(f.raw);
        if !f.raw.ends_with(b"\n") {
            again.extend_from_slice(b"\r\n");
        }
    }
    if h.skipped == 0 || !again.starts_with(b"From ") {
        again.extend_from_slice(b"\r\nbody\r\n");
        let h2 = split(&again).expect("fields written again split");
        let n2: Vec<&[u8]> = h2.fields.iter().map(|f| f.name).collect();
        let n1: Vec<&[u8]> = h.fields.iter().map(|f| f.name).collect();
        assert_eq!(n1, n2, "{:?}", lossy(&again));
        assert!(h2.ended_by_empty_line);
    }
});
