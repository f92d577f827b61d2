//! SMTP replies as the server writes them (RFC 5321 §4.2) with RFC 3463 enhanced status codes (RFC 2034).
//!
//! A reply's text never carries CR, LF or other control bytes: anything a client sent that we echo back is
//! scrubbed here, so a hostile address can never inject a reply line of its own.

use std::borrow::Cow;
use std::fmt;

/// RFC 3463 enhanced status code `class.subject.detail`, e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Enhanced {
    /// Parses `2.1.0` (RFC 3463 §2: class 2, 4 or 5; subject and detail 1-3 digits).
    pub fn parse(s: &str) -> Option<Enhanced> {
        let mut it = s.split('.');
        let class: u8 = it.next()?.parse().ok()?;
        let subject = it.next()?;
        let detail = it.next()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        let ok = |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        if !ok(subject) || !ok(detail) {
            return None;
        }
        Some(Enhanced(class, subject.parse().ok()?, detail.parse().ok()?))
    }
}

/// One SMTP reply: a three-digit code, an optional enhanced code and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<Enhanced>,
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply with an enhanced code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { code, enhanced: Some(enhanced), lines: vec![scrub(text.into())] }
    }

    /// A reply without an enhanced code (greeting, HELO/EHLO: RFC 2034 §3 exempts them).
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply { code, enhanced: None, lines: vec![scrub(text.into())] }
    }

    /// Adds a further line (multi-line replies, e.g. the EHLO capability list).
    pub fn line(mut self, text: impl Into<Cow<'static, str>>) -> Reply {
        self.lines.push(scrub(text.into()));
        self
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Appends the wire form: `250-first`, ..., `250 last`, each line ending in CRLF.
    /// Written in place (no string per line): every reply of every session goes through here.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let n = self.lines.len().max(1);
        // Code, separator, enhanced code and its space, CRLF: about 16 octets per line besides the text.
        out.reserve(self.lines.iter().map(|l| l.len() + 16).sum::<usize>().max(16));
        for i in 0..n {
            let text = self.lines.get(i).map(|s| s.as_ref()).unwrap_or("");
            let sep = if i + 1 < n { '-' } else { ' ' };
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                let _ = write!(out, "{e}");
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for l in &self.lines {
            write!(f, " {l}")?;
        }
        Ok(())
    }
}

/// Replaces control characters (CR, LF, NUL, ...) so that text can never end a reply line early.
fn scrub(text: Cow<'static, str>) -> Cow<'static, str> {
    if text.chars().any(|c| c.is_control()) {
        Cow::Owned(text.chars().map(|c| if c.is_control() { '?' } else { c }).collect())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let r = Reply::new(550, Enhanced(5, 1, 1), "no such user");
        assert_eq!(r.to_bytes(), b"550 5.1.1 no such user\r\n");
    }

    #[test]
    fn multi_line_uses_dash_until_the_last() {
        let r = Reply::plain(250, "mx.example").line("PIPELINING").line("SIZE 10");
        assert_eq!(r.to_bytes(), b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    /// Every line carries the enhanced code; an empty line gets no space after it; a reply appends to
    /// what is already queued.
    #[test]
    fn multi_line_with_enhanced_code_appends() {
        let r = Reply::new(451, Enhanced(4, 3, 0), "first").line("").line("last");
        let mut out = b"250 ok\r\n".to_vec();
        r.write_to(&mut out);
        assert_eq!(out, b"250 ok\r\n451-4.3.0 first\r\n451-4.3.0\r\n451 4.3.0 last\r\n");
    }

    #[test]
    fn echoed_text_cannot_inject_lines() {
        let r = Reply::new(250, Enhanced(2, 1, 0), String::from("ok <a\r\n250 b>"));
        assert_eq!(r.to_bytes(), b"250 2.1.0 ok <a??250 b>\r\n");
    }

    #[test]
    fn enhanced_parse_table() {
        for (s, want) in [
            ("2.1.0", Some(Enhanced(2, 1, 0))),
            ("5.7.11", Some(Enhanced(5, 7, 11))),
            ("4.999.999", Some(Enhanced(4, 999, 999))),
            ("3.1.0", None),
            ("5.1", None),
            ("5.1.1.1", None),
            ("5..1", None),
            ("5.1000.1", None),
            ("x.1.1", None),
        ] {
            assert_eq!(Enhanced::parse(s), want, "{s}");
        }
    }
}
