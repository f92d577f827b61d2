//! Streaming DKIM body canonicalisation and hashing (RFC 6376 §3.4.3 simple, §3.4.4 relaxed, §3.5 `l=`).
//!
//! Chunks may split the body anywhere, also between the CR and the LF of a line end: the hasher keeps the
//! little it cannot decide yet (a CR, a run of white space, the empty lines seen so far) and writes the
//! rest straight into the digest. Never buffers the body.
//!
//! Relaxed follows dkimpy, the reference: white space at the end of a line goes, runs of white space
//! become one SP, and then every empty line at the end of the body goes, also the lines that were
//! white space only before the first step (mail-auth 0.13 keeps those, which breaks interoperability).

use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::dkim::Canonicalization;
use ring::digest;

/// How much canonical output is gathered before it goes into the digest (fewer, larger digest calls).
const OUT_BUFFER: usize = 8 * 1024;

/// A body hash: the digest (`bh=`) and how many canonical body octets went into it (`l=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyHash {
    pub digest: Vec<u8>,
    pub canonical_len: u64,
}

/// Streaming body canonicalisation plus hash for one (canonicalisation, hash algorithm, `l=`) triple.
///
/// Feed the body exactly as it travels (CRLF line ends, after SMTP dot-unstuffing) with
/// [`BodyHasher::handle_chunk`], in pieces of any size, then call [`BodyHasher::finish`]. Only CRLF ends
/// a line: a lone CR or LF is an ordinary octet, as in dkimpy.
pub struct BodyHasher {
    canon: Canonicalization,
    digest: digest::Context,
    /// `l=`: at most this many canonical octets are hashed (None: the whole body).
    limit: Option<u64>,
    /// Canonical octets produced so far (counted up to the limit).
    written: u64,
    out: Vec<u8>,
    /// A CR whose meaning (line end or content) depends on the next octet.
    pending_cr: bool,
    /// White space seen since the last content octet of the line (relaxed: one SP if content follows).
    pending_wsp: bool,
    /// Line ends not yet written: written only when content follows them (trailing empty lines go).
    pending_crlf: u64,
    /// Something other than a line end was read since the last CRLF (the last line is unterminated so far).
    mid_line: bool,
    /// Any content was written at all (relaxed: an all-empty body canonicalises to nothing).
    any_content: bool,
    /// Also keep the canonical output ([`canonical_body`]).
    capture: Option<Vec<u8>>,
}

impl BodyHasher {
    /// A hasher for `canon` and `hash`; `length_limit` is the signature's `l=` (0 or None: the whole body,
    /// as mail-auth's `body_hashes` requests say it).
    pub fn new(canon: Canonicalization, hash: HashAlgorithm, length_limit: Option<u64>) -> BodyHasher {
        let algorithm = match hash {
            HashAlgorithm::Sha256 => &digest::SHA256,
            HashAlgorithm::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        };
        BodyHasher {
            canon,
            digest: digest::Context::new(algorithm),
            limit: length_limit.filter(|l| *l > 0),
            written: 0,
            out: Vec::with_capacity(OUT_BUFFER),
            pending_cr: false,
            pending_wsp: false,
            pending_crlf: 0,
            mid_line: false,
            any_content: false,
            capture: None,
        }
    }

    /// The next piece of the body.
    pub fn handle_chunk(&mut self, chunk: &[u8]) {
        if self.is_full() {
            return;
        }
        let relaxed = self.canon == Canonicalization::Relaxed;
        let mut i = 0;
        while i < chunk.len() {
            // Fast path: nothing held back, so a run of ordinary octets goes out as it is.
            if !self.pending_cr && !self.pending_wsp && self.pending_crlf == 0 {
                let rest = &chunk[i..];
                let run = rest.iter().position(|&b| b == b'\r' || relaxed && (b == b' ' || b == b'\t'));
                let run = run.unwrap_or(rest.len());
                if run > 0 {
                    self.mid_line = true;
                    self.any_content = true;
                    self.emit(&rest[..run]);
                    i += run;
                    continue;
                }
            }
            self.handle_octet(chunk[i]);
            i += 1;
        }
        self.flush_out();
    }

    /// The digest of the canonical body (its first `l=` octets) and the number of octets hashed.
    pub fn finish(self) -> BodyHash {
        let h = self.finish_state();
        BodyHash { digest: h.digest.finish().as_ref().to_vec(), canonical_len: h.written }
    }

    /// Writes what the end of the body decides: the held-back CR, the last line's CRLF.
    fn finish_state(mut self) -> BodyHasher {
        if self.pending_cr {
            // A CR at the very end is content.
            self.pending_cr = false;
            self.content(b'\r');
        }
        if self.mid_line {
            // An unterminated last line: relaxed keeps a white-space run there as one SP (dkimpy does:
            // its trailing-space rule only matches before a CRLF), then the line gets its CRLF.
            if self.pending_wsp && self.canon == Canonicalization::Relaxed {
                self.flush_crlf();
                self.emit(b" ");
            }
            self.emit(b"\r\n");
        } else if self.any_content || self.canon == Canonicalization::Simple {
            // Trailing empty lines collapse into the one CRLF that ends the last line; a simple empty
            // body is a single CRLF (§3.4.3), a relaxed one stays empty (§3.4.4).
            self.emit(b"\r\n");
        }
        self.flush_out();
        self
    }

    fn handle_octet(&mut self, b: u8) {
        if self.pending_cr {
            self.pending_cr = false;
            if b == b'\n' {
                self.line_end();
                return;
            }
            self.content(b'\r');
        }
        match b {
            b'\r' => {
                self.pending_cr = true;
                self.mid_line = true;
            }
            b' ' | b'\t' if self.canon == Canonicalization::Relaxed => {
                self.pending_wsp = true;
                self.mid_line = true;
            }
            _ => self.content(b),
        }
    }

    /// A CRLF: relaxed drops the white space before it; it is written once content follows.
    fn line_end(&mut self) {
        self.pending_wsp = false;
        self.mid_line = false;
        self.pending_crlf += 1;
    }

    /// A content octet: the line ends held back, the white space before it (relaxed), then the octet.
    fn content(&mut self, b: u8) {
        self.flush_crlf();
        if self.pending_wsp {
            self.pending_wsp = false;
            self.emit(b" ");
        }
        self.mid_line = true;
        self.any_content = true;
        self.emit(&[b]);
    }

    fn flush_crlf(&mut self) {
        while self.pending_crlf > 0 {
            self.pending_crlf -= 1;
            self.emit(b"\r\n");
        }
    }

    fn is_full(&self) -> bool {
        self.limit.is_some_and(|l| self.written >= l)
    }

    /// Canonical output, cut at the `l=` limit.
    fn emit(&mut self, bytes: &[u8]) {
        let take = match self.limit {
            Some(l) => bytes.len().min(usize::try_from(l - self.written.min(l)).unwrap_or(usize::MAX)),
            None => bytes.len(),
        };
        self.out.extend_from_slice(&bytes[..take]);
        self.written += take as u64;
        if self.out.len() >= OUT_BUFFER {
            self.flush_out();
        }
    }

    fn flush_out(&mut self) {
        self.digest.update(&self.out);
        if let Some(c) = &mut self.capture {
            c.extend_from_slice(&self.out);
        }
        self.out.clear();
    }
}

/// The canonical body in one piece, for tests and for comparing with other implementations; the
/// hasher is the streaming form.
pub fn canonical_body(canon: Canonicalization, body: &[u8]) -> Vec<u8> {
    let mut h = BodyHasher::new(canon, HashAlgorithm::Sha256, None);
    h.capture = Some(Vec::with_capacity(body.len() + 2));
    h.handle_chunk(body);
    let mut h = h.finish_state();
    h.capture.take().unwrap_or_default()
}
