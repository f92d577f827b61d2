//! Message body decoders: DATA with dot-unstuffing (RFC 5321 §4.5.2) and BDAT chunks (RFC 3030), and the
//! CRLF-to-LF conversion used when storing.
//!
//! Smuggling (CVE-2023-51764 and kin): the data ends only at `<CRLF>.<CRLF>`, where the first CRLF is the
//! one that ended the previous line. A bare LF or bare CR never ends a line, so `<LF>.<LF>`,
//! `<LF>.<CRLF>`, `<CR>.<CR>` and friends are never an end of data. mailroom goes further: a message that
//! holds any bare CR or bare LF is refused as a whole with 550 5.5.2 once the real end of data arrives, so
//! nothing that another MTA might read differently is ever stored or relayed. The decoder reports it;
//! the session decides.

/// The state of the DATA decoder between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after a CRLF, or right after the 354).
    LineStart,
    /// Inside a line.
    Mid,
    /// Inside a line, a CR seen.
    Cr,
    /// A dot at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
}

/// What one call to [`DotDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of input consumed.
    pub consumed: usize,
    /// True when the terminating `.CRLF` was consumed: the message is complete.
    pub done: bool,
}

/// Dot-unstuffing decoder for DATA. Feeds canonical CRLF text out, bytes as sent otherwise.
#[derive(Debug, Clone)]
pub struct DotDecoder {
    state: State,
    bare_line_ending: bool,
}

impl Default for DotDecoder {
    fn default() -> Self {
        DotDecoder { state: State::LineStart, bare_line_ending: false }
    }
}

impl DotDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once a bare CR or bare LF was seen anywhere in the data.
    pub fn saw_bare_line_ending(&self) -> bool {
        self.bare_line_ending
    }

    /// Decodes `input`, appending message bytes to `out`; stops after the end-of-data marker.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Decoded {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Mid => {
                    // Fast path: copy the run up to the next CR or LF.
                    let run = input[i..].iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(input.len() - i);
                    out.extend_from_slice(&input[i..i + run]);
                    i += run;
                    if i == input.len() {
                        break;
                    }
                    if input[i] == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare_line_ending = true;
                        out.push(b'\n');
                    }
                    i += 1;
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.state = State::LineStart;
                        i += 1;
                    } else {
                        // A CR not followed by LF is data, not a line end.
                        self.bare_line_ending = true;
                        out.push(b'\r');
                        self.state = State::Mid;
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Dot => match input[i] {
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    // RFC 5321 §4.5.2: a leading dot is removed when the line holds more.
                    _ => self.state = State::Mid,
                },
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::LineStart;
                        return Decoded { consumed: i + 1, done: true };
                    }
                    // `.<CR>x`: the dot was stuffing, the CR is a bare CR in data.
                    self.bare_line_ending = true;
                    out.push(b'\r');
                    self.state = State::Mid;
                }
            }
        }
        Decoded { consumed: i, done: false }
    }
}

/// Scans BDAT chunk bytes (RFC 3030 §2: no dot-stuffing) for bare CR or LF, so that DATA and BDAT
/// refuse the same messages and store the same bytes. Carries a trailing CR across chunks.
#[derive(Debug, Clone, Default)]
pub struct LineEndingCheck {
    pending_cr: bool,
    bare: bool,
}

impl LineEndingCheck {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match (self.pending_cr, b) {
                (true, b'\n') => self.pending_cr = false,
                (true, b'\r') => self.bare = true,
                (true, _) => {
                    self.bare = true;
                    self.pending_cr = false;
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.bare = true,
                _ => {}
            }
        }
    }
    /// True if a bare line ending was seen; a CR still pending at the end of the message counts.
    pub fn finish(&self) -> bool {
        self.bare || self.pending_cr
    }
}

/// Streaming CRLF to LF conversion for storage in Maildir (the Unix convention that Dovecot, mutt and
/// Python's mailbox expect). Because bare CR and LF are refused, every LF stored stood for one CRLF, so
/// the conversion loses nothing.
#[derive(Debug, Clone, Default)]
pub struct ToLf {
    pending_cr: bool,
}

impl ToLf {
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + 1);
        let mut rest = input;
        if self.pending_cr {
            self.pending_cr = false;
            if rest.first() != Some(&b'\n') {
                out.push(b'\r');
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\r') {
            out.extend_from_slice(&rest[..pos]);
            match rest.get(pos + 1) {
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => self.pending_cr = true,
            }
            rest = &rest[pos + 1..];
        }
        out.extend_from_slice(rest);
    }

    /// Flushes a CR left over at the very end.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        let r = d.decode(input, &mut out);
        (out, r.done.then_some(r.consumed), d.saw_bare_line_ending())
    }

    /// input, body out, where the data ends (bytes consumed), bare line ending seen
    type Case = (&'static [u8], &'static [u8], Option<usize>, bool);
    const TABLE: &[Case] = &[
        (b".\r\n", b"", Some(3), false),
        (b"a\r\n.\r\n", b"a\r\n", Some(6), false),
        (b"a\r\n.\r\nMAIL", b"a\r\n", Some(6), false),
        (b"..x\r\n.\r\n", b".x\r\n", Some(8), false),
        (b".x\r\n.\r\n", b"x\r\n", Some(7), false),
        (b"...\r\n.\r\n", b"..\r\n", Some(8), false),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(10), false),
        // smuggling look-alikes: none ends the data
        (b"a\n.\nMAIL FROM:<x@y>\r\n", b"a\n.\nMAIL FROM:<x@y>\r\n", None, true),
        (b"a\n.\r\nMAIL", b"a\n.\r\nMAIL", None, true),
        (b"a\r\n.\nMAIL", b"a\r\n\nMAIL", None, true),
        (b"a\r.\rMAIL", b"a\r.\rMAIL", None, true),
        (b"a\r.\r\nMAIL", b"a\r.\r\nMAIL", None, true),
        (b"a\r\n.\rMAIL", b"a\r\n\rMAIL", None, true),
        (b"a\0\r\n.x", b"a\0\r\nx", None, false),
        (b"a\r\n\0.\r\n", b"a\r\n\0.\r\n", None, false),
        (b"a\r\n .\r\n", b"a\r\n .\r\n", None, false),
        // a bare LF earlier, then the real end
        (b"a\nb\r\n.\r\n", b"a\nb\r\n", Some(8), true),
    ];

    #[test]
    fn dot_decoder_table() {
        for &(input, body, end, bare) in TABLE {
            let (out, got_end, got_bare) = decode_all(input);
            assert_eq!(out, body, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(got_end, end, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(got_bare, bare, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn dot_decoder_split_at_every_byte() {
        for &(input, body, end, bare) in TABLE {
            for cut in 0..=input.len() {
                let mut d = DotDecoder::new();
                let mut out = Vec::new();
                let r1 = d.decode(&input[..cut], &mut out);
                let (consumed, done) = if r1.done {
                    (r1.consumed, true)
                } else {
                    let r2 = d.decode(&input[cut..], &mut out);
                    (cut + r2.consumed, r2.done)
                };
                assert_eq!(out, body, "cut {cut} of {:?}", String::from_utf8_lossy(input));
                assert_eq!(done.then_some(consumed), end, "cut {cut}");
                assert_eq!(d.saw_bare_line_ending(), bare, "cut {cut}");
            }
        }
    }

    #[test]
    fn to_lf_at_every_split() {
        let input = b"a\r\nb\r\n\r\nc\rd\r";
        for cut in 0..=input.len() {
            let mut c = ToLf::default();
            let mut out = Vec::new();
            c.convert(&input[..cut], &mut out);
            c.convert(&input[cut..], &mut out);
            c.finish(&mut out);
            assert_eq!(out, b"a\nb\n\nc\rd\r", "cut {cut}");
        }
    }

    #[test]
    fn line_ending_check() {
        for (chunks, bare) in [
            (&[&b"a\r\nb\r\n"[..]][..], false),
            (&[&b"a\r"[..], &b"\nb\r\n"[..]][..], false),
            (&[&b"a\nb"[..]][..], true),
            (&[&b"a\r"[..], &b"b"[..]][..], true),
            (&[&b"a\r"[..]][..], true),
            (&[&b"a\r\r\n"[..]][..], true),
        ] {
            let mut c = LineEndingCheck::default();
            for ch in chunks {
                c.feed(ch);
            }
            assert_eq!(c.finish(), bare, "{chunks:?}");
        }
    }
}

/// Watches the header section of a message as it streams by (up to the first empty line) and says when
/// it grows past its limits: the defence against endless header or continuation lines. It also counts
/// the `Received:` fields, for loop detection (RFC 5321 §6.3).
#[derive(Debug, Clone, Default)]
pub struct HeaderScan {
    done: bool,
    line_len: usize,
    lines: usize,
    bytes: usize,
    /// The current line's first bytes, lowercased, while they may still spell `received:`.
    prefix: [u8; RECEIVED.len()],
    received: usize,
}

/// The field name a trace header starts with (RFC 5322 §3.6.7), lowercased, with its colon.
const RECEIVED: &[u8] = b"received:";

impl HeaderScan {
    /// Feeds canonical (CRLF) body bytes; false once the header section exceeds `max_lines` lines or
    /// `max_bytes` octets.
    pub fn feed(&mut self, chunk: &[u8], max_lines: usize, max_bytes: usize) -> bool {
        if self.done {
            return true;
        }
        for &b in chunk {
            self.bytes += 1;
            if b == b'\n' {
                if self.line_len <= 1 {
                    // "\r\n" alone: the empty line that ends the header section.
                    self.done = true;
                    return self.bytes <= max_bytes;
                }
                self.lines += 1;
                self.line_len = 0;
            } else {
                if let Some(slot) = self.prefix.get_mut(self.line_len) {
                    *slot = b.to_ascii_lowercase();
                    if self.line_len + 1 == RECEIVED.len() && self.prefix == RECEIVED {
                        self.received += 1;
                    }
                }
                self.line_len += 1;
            }
            if self.lines > max_lines || self.bytes > max_bytes {
                return false;
            }
        }
        true
    }

    /// `Received:` fields seen so far in the header section (a field name at the start of a line; a
    /// continuation line never starts one).
    pub fn received(&self) -> usize {
        self.received
    }
}

#[cfg(test)]
mod header_tests {
    use super::HeaderScan;

    #[test]
    fn header_limits() {
        let mut h = HeaderScan::default();
        assert!(h.feed(b"A: 1\r\nB: 2\r\n\r\nbody\r\nmore body lines\r\n", 2, 100));
        let mut h = HeaderScan::default();
        assert!(!h.feed(b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 2, 100), "three lines, two allowed");
        let mut h = HeaderScan::default();
        assert!(h.feed(b"A: 1\r\n", 2, 100));
        assert!(h.feed(b" continued\r\n", 2, 100));
        assert!(!h.feed(b" again\r\n", 2, 100), "continuation lines count");
        let mut h = HeaderScan::default();
        assert!(!h.feed(&[b'x'; 200], 10, 100), "one endless line");
        let mut h = HeaderScan::default();
        assert!(h.feed(b"\r\n", 0, 2), "no header at all");
        assert!(h.feed(&[b'x'; 1000], 0, 2), "the body is not counted");
    }

    #[test]
    fn received_fields_are_counted_in_the_header_section_only() {
        let msg = b"Received: from a\r\nRECEIVED: from b\r\n\treceived: folded, not a field\r\nX-Received: no\r\n\
                    Receive: no\r\nreceived:x\r\n\r\nReceived: in the body\r\n";
        for cut in 0..=msg.len() {
            let mut h = HeaderScan::default();
            assert!(h.feed(&msg[..cut], usize::MAX, usize::MAX));
            assert!(h.feed(&msg[cut..], usize::MAX, usize::MAX));
            assert_eq!(h.received(), 3, "cut {cut}");
        }
    }
}
