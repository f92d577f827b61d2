//! Splits a message streaming in (CRLF line ends, any chunking) into its header section, kept in memory
//! up to a bound, and its body, passed through.

/// The header section a verifier or signer keeps in memory by default: the server's default
/// `[limits] max_header_size` (RFC 5322 sets none; the SMTP session bounds it in any case).
pub const DEFAULT_MAX_HEADER_SECTION: usize = 1024 * 1024;

/// The end of the header section: CRLF CRLF, the first CRLF ending the last header line.
const BOUNDARY: &[u8; 4] = b"\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the header section; how many octets of [`BOUNDARY`] the input just matched.
    Header(usize),
    Body,
    /// The header section grew past its bound: nothing more is kept.
    TooLarge,
}

/// The message seen so far: the header section with the blank line that ends it, then the body.
#[derive(Debug)]
pub(crate) struct Splitter {
    header: Vec<u8>,
    state: State,
    max: usize,
}

impl Splitter {
    /// At the start of a message, as if after a line end: a message starting with CRLF has an empty
    /// header section.
    pub(crate) fn new(max: usize) -> Splitter {
        Splitter { header: Vec::new(), state: State::Header(2), max }
    }

    /// Takes the next chunk; returns the part of it that belongs to the body (empty while in the header
    /// section, or once it was too large).
    pub(crate) fn handle_chunk<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        let State::Header(mut matched) = self.state else {
            return if self.state == State::Body { chunk } else { &[] };
        };
        for (i, &b) in chunk.iter().enumerate() {
            matched = match (matched, b) {
                (m, _) if BOUNDARY[m] == b => m + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if matched == BOUNDARY.len() {
                return self.take_header(&chunk[..=i], &chunk[i + 1..]);
            }
        }
        self.keep(chunk);
        if let State::Header(_) = self.state {
            self.state = State::Header(matched);
        }
        &[]
    }

    fn take_header<'a>(&mut self, head: &[u8], body: &'a [u8]) -> &'a [u8] {
        self.keep(head);
        if self.state == State::TooLarge {
            return &[];
        }
        // A message that starts with CRLF: the "header section" is that blank line alone.
        self.state = State::Body;
        body
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.state == State::TooLarge {
            return;
        }
        if self.header.len() + bytes.len() > self.max {
            self.state = State::TooLarge;
            self.header = Vec::new();
            return;
        }
        self.header.extend_from_slice(bytes);
    }

    /// At the end of the message: the header section ending with its blank line (one is added when the
    /// message had no body), or None when it was over the bound.
    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        match self.state {
            State::TooLarge => None,
            State::Body => Some(self.header),
            State::Header(matched) => {
                // No blank line: all of it is header; complete the line end and add the blank line.
                let tail: &[u8] = match matched {
                    2 => b"\r\n",
                    1 => b"\n\r\n",
                    3 => b"\n",
                    _ => b"\r\n\r\n",
                };
                self.header.extend_from_slice(tail);
                Some(self.header)
            }
        }
    }

    /// The header section once it is complete (with its blank line).
    pub(crate) fn header(&self) -> Option<&[u8]> {
        (self.state == State::Body).then_some(&self.header[..])
    }

    /// True while the header section is still coming.
    pub(crate) fn is_in_header(&self) -> bool {
        matches!(self.state, State::Header(_))
    }

    /// True when the header section was larger than the bound.
    pub(crate) fn is_too_large(&self) -> bool {
        self.state == State::TooLarge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(msg: &[u8], at: usize) -> (Option<Vec<u8>>, Vec<u8>) {
        let mut s = Splitter::new(DEFAULT_MAX_HEADER_SECTION);
        let mut body = s.handle_chunk(&msg[..at]).to_vec();
        body.extend_from_slice(s.handle_chunk(&msg[at..]));
        (s.finish(), body)
    }

    #[test]
    fn splits_at_every_byte() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n";
        for at in 0..=msg.len() {
            let (h, b) = split_all(msg, at);
            assert_eq!(h.as_deref(), Some(&b"A: 1\r\nB: 2\r\n\r\n"[..]), "split at {at}");
            assert_eq!(b, b"body\r\n\r\nmore\r\n", "split at {at}");
        }
    }

    #[test]
    fn empty_header_section_and_no_body() {
        assert_eq!(split_all(b"\r\nbody\r\n", 1), (Some(b"\r\n".to_vec()), b"body\r\n".to_vec()));
        assert_eq!(split_all(b"A: 1\r\n", 3), (Some(b"A: 1\r\n\r\n".to_vec()), vec![]));
        assert_eq!(split_all(b"A: 1", 3), (Some(b"A: 1\r\n\r\n".to_vec()), vec![]));
        assert_eq!(split_all(b"A: 1\r", 3), (Some(b"A: 1\r\n\r\n".to_vec()), vec![]));
    }

    #[test]
    fn header_over_the_bound_is_dropped() {
        let mut s = Splitter::new(8);
        assert!(s.handle_chunk(b"Subject: long\r\n\r\nbody").is_empty());
        assert!(s.is_too_large());
        assert_eq!(s.finish(), None);
    }
}
