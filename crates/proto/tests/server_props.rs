//! Property tests: whatever bytes arrive, in whatever pieces, the session never panics, every reply it
//! writes is well formed, and the DATA decoder inverts dot-stuffing.

use std::sync::Arc;
use std::time::Instant;

use mailroom_proto::data::DotDecoder;
use mailroom_proto::server::{Config, Decision, Event, Session};
use proptest::prelude::*;

/// Feeds `input` in the given pieces, answering every event; returns all output.
fn drive(input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let now = Instant::now();
    let cfg = Config { max_message_size: 2000, max_recipients: 5, ..Config::default() };
    let mut s = Session::new(Arc::new(cfg), now);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(input.len());
    for end in bounds {
        if end < start {
            continue;
        }
        s.handle_input(&input[start..end], now);
        start = end;
        loop {
            let mut any = false;
            while let Some(ev) = s.poll_event() {
                any = true;
                match ev {
                    Event::Mail { .. } | Event::Rcpt { .. } | Event::DataStart | Event::DataEnd => {
                        s.answer(Decision::Accept)
                    }
                    _ => {}
                }
            }
            if let Some(b) = s.poll_transmit() {
                out.extend_from_slice(&b);
            }
            // The error tarpit: let each delay pass at once, so the rest of the input is read too.
            if s.poll_delay().is_some() {
                s.handle_delay_elapsed(now);
                any = true;
            }
            if !any {
                break;
            }
        }
        if s.is_closed() {
            break;
        }
    }
    out
}

fn assert_well_formed(out: &[u8]) {
    assert!(out.is_empty() || out.ends_with(b"\r\n"), "output ends in CRLF");
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").expect("every line ends in CRLF");
        assert!(line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit), "{:?}", String::from_utf8_lossy(line));
        assert!(line[3] == b' ' || line[3] == b'-');
        assert!(!line.contains(&b'\r') && !line.contains(&0), "no stray CR or NUL");
    }
}

fn smtp_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"EHLO x\r\n".to_vec()),
        Just(b"HELO x\r\n".to_vec()),
        Just(b"MAIL FROM:<a@b>\r\n".to_vec()),
        Just(b"MAIL FROM:<a@b> SIZE=100\r\n".to_vec()),
        Just(b"RCPT TO:<c@d>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"BDAT 5\r\n".to_vec()),
        Just(b"BDAT 3 LAST\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b"\n.\n".to_vec()),
        Just(b"QUIT\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..3000), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        assert_well_formed(&drive(&input, &cuts));
    }

    #[test]
    fn smtp_like_input_never_panics_and_splitting_changes_nothing(input in smtp_ish(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let whole = drive(&input, &[]);
        assert_well_formed(&whole);
        prop_assert_eq!(drive(&input, &cuts), whole);
    }

    #[test]
    fn dot_decoder_inverts_stuffing(lines in prop::collection::vec("[ -~]{0,20}", 0..20), cut in any::<usize>()) {
        let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let stuffed: String = lines.iter().map(|l| if l.starts_with('.') { format!(".{l}\r\n") } else { format!("{l}\r\n") }).collect();
        let wire = format!("{stuffed}.\r\nNEXT");
        let cut = cut % (wire.len() + 1);
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        let r1 = d.decode(&wire.as_bytes()[..cut], &mut out);
        let consumed = if r1.done { r1.consumed } else {
            let r2 = d.decode(&wire.as_bytes()[cut..], &mut out);
            prop_assert!(r2.done);
            cut + r2.consumed
        };
        prop_assert_eq!(out, body.as_bytes());
        prop_assert_eq!(&wire[consumed..], "NEXT");
    }
}
