//! The queued message as it leaves: the spool file without its first `Return-Path:` line (written for
//! final delivery only, RFC 5321 §4.4), and the few facts delivery decides on (hops, UTF-8 header).

use std::path::Path;

/// The message of one queue entry, ready to send (LF line ends: the client sends them as CRLF).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
}

impl Outgoing {
    /// Reads the spool file.
    pub async fn load(path: &Path) -> std::io::Result<Outgoing> {
        let bytes = tokio::fs::read(path).await?;
        Ok(Outgoing::from_spool(bytes))
    }

    /// The spool form: drops a leading `Return-Path:` header (with its continuation lines).
    pub fn from_spool(mut bytes: Vec<u8>) -> Outgoing {
        if bytes.len() >= 12 && bytes[..12].eq_ignore_ascii_case(b"return-path:") {
            let mut end = 0;
            loop {
                match bytes[end..].iter().position(|&b| b == b'\n') {
                    Some(p) => end += p + 1,
                    None => {
                        end = bytes.len();
                        break;
                    }
                }
                // A folded header goes on with a line that starts with white space.
                if !matches!(bytes.get(end), Some(b' ' | b'\t')) {
                    break;
                }
            }
            bytes.drain(..end);
        }
        Outgoing { bytes }
    }

    /// The header section (up to the first empty line).
    pub fn header(&self) -> &[u8] {
        let b = &self.bytes;
        let mut i = 0;
        while i < b.len() {
            let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p + 1);
            if matches!(&b[i..end], b"\n" | b"\r\n") {
                return &b[..i];
            }
            i = end;
        }
        b
    }

    /// How many `Received:` headers it carries (RFC 5321 §6.3 loop detection).
    pub fn hops(&self) -> usize {
        self.header()
            .split(|&c| c == b'\n')
            .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
            .count()
    }

    /// True when the header holds raw UTF-8 (RFC 6532), which only an SMTPUTF8 server may be sent.
    pub fn has_utf8_header(&self) -> bool {
        !self.header().is_ascii()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_path_is_stripped() {
        let o = Outgoing::from_spool(b"Return-Path: <a@b>\nReceived: x\n\tfolded\nSubject: s\n\nbody\n".to_vec());
        assert_eq!(o.bytes, b"Received: x\n\tfolded\nSubject: s\n\nbody\n");
        let o = Outgoing::from_spool(b"Return-Path: <a@b>\n  more\nSubject: s\n\nb\n".to_vec());
        assert_eq!(o.bytes, b"Subject: s\n\nb\n");
        let o = Outgoing::from_spool(b"Subject: s\n\nReturn-Path: x\n".to_vec());
        assert_eq!(o.bytes, b"Subject: s\n\nReturn-Path: x\n");
    }

    #[test]
    fn hops_and_utf8() {
        let o = Outgoing::from_spool(b"Received: a\nreceived: b\nSubject: s\n\nReceived: body\n".to_vec());
        assert_eq!(o.hops(), 2);
        assert!(!o.has_utf8_header());
        assert!(Outgoing::from_spool("Subject: ü\n\nx\n".as_bytes().to_vec()).has_utf8_header());
        assert!(!Outgoing::from_spool("Subject: u\n\nü\n".as_bytes().to_vec()).has_utf8_header());
    }
}
