//! The message as it leaves after DATA (RFC 5321 §4.1.1.4, §4.5.2).
//!
//! Every bare LF and bare CR of the input becomes CRLF first, and only then are lines that start with a dot
//! stuffed. The order matters: a message holding `\n.\n` or `\r.\r` must not be able to end the DATA early
//! on a server that treats a lone LF or CR as a line end, nor smuggle a second message after it (the
//! "SMTP smuggling" attacks of 2023 and the lettre advisory that followed). The encoder works on chunks of
//! any size and keeps only two flags between them, so the message can stream.

/// Streams message bytes into their DATA form.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    /// The next byte starts a line (true at the start of the message).
    at_line_start: bool,
    /// The previous chunk ended in CR, whose LF (if any) is still to come.
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder::new()
    }
}

impl DataEncoder {
    pub fn new() -> DataEncoder {
        DataEncoder { at_line_start: true, pending_cr: false }
    }

    /// Appends the DATA form of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 4);
        let mut start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            if self.pending_cr {
                self.pending_cr = false;
                // CR LF: the line end was written when the CR was seen.
                if b == b'\n' {
                    start = i + 1;
                    continue;
                }
            }
            match b {
                b'\r' | b'\n' => {
                    out.extend_from_slice(&chunk[start..i]);
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    self.pending_cr = b == b'\r';
                    start = i + 1;
                }
                b'.' if self.at_line_start => {
                    out.extend_from_slice(&chunk[start..i]);
                    out.push(b'.');
                    self.at_line_start = false;
                    start = i;
                }
                _ => self.at_line_start = false,
            }
        }
        out.extend_from_slice(&chunk[start..]);
    }

    /// Appends the end of the data: CRLF if the last line was not ended, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DataEncoder::new();
    }
}

/// Encodes a whole message at once.
pub fn encode_data(message: &[u8]) -> Vec<u8> {
    let mut e = DataEncoder::new();
    let mut out = Vec::new();
    e.encode(message, &mut out);
    e.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (input, want) in [
            (&b""[..], &b".\r\n"[..]),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b".x\r\n", b"..x\r\n.\r\n"),
            (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\n.\nMAIL FROM:<x>\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"x.y\r\n..z", b"x.y\r\n...z\r\n.\r\n"),
        ] {
            assert_eq!(encode_data(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
