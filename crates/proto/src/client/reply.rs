//! Parsing server replies as a client reads them (RFC 5321 §4.2), with the RFC 3463 enhanced code of
//! RFC 2034 split off the text when present.
//!
//! The parser is incremental and bounded: it looks at one line at a time, never further than
//! [`MAX_REPLY_LINE`] octets ahead, and refuses a reply of more than [`MAX_REPLY_LINES`] lines, so a hostile
//! server can neither make the client buffer without end nor wait forever for a line end that the bound
//! already rules out. Anything outside the grammar is an error, never a guess.

use std::borrow::Cow;

use crate::reply::{Enhanced, Reply};

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including the reply code and CRLF.
pub const MAX_REPLY_LINE: usize = 512;

/// RFC 5321 §4.2.1 allows multi-line replies without saying how many lines; real EHLO replies have about
/// twenty. 128 leaves room for any honest server and stops a server that streams continuation lines forever.
pub const MAX_REPLY_LINES: usize = 128;

/// Why a reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {MAX_REPLY_LINE} octets (RFC 5321 §4.5.3.1.5)")]
    LineTooLong,
    #[error("reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("reply line does not start with a three-digit code 2xx-5xx: {0:?}")]
    BadCode(String),
    #[error("reply code is not followed by a space, a hyphen or the line end: {0:?}")]
    BadSeparator(String),
    #[error("multi-line reply mixes codes {first} and {other}")]
    MixedCodes { first: u16, other: u16 },
    #[error("reply line ends in a bare LF or holds a bare CR (RFC 5321 §2.3.8 requires CRLF)")]
    BareLineEnd,
    #[error("reply holds a NUL octet")]
    Nul,
}

/// One line of a reply: its code, whether more lines follow, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    code: u16,
    more: bool,
    text: String,
}

/// Collects reply lines until the last one (`code SP text` rather than `code - text`).
#[derive(Debug, Default)]
pub struct ReplyParser {
    lines: Vec<Line>,
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// True while part of a multi-line reply has been read.
    pub fn is_mid_reply(&self) -> bool {
        !self.lines.is_empty()
    }

    /// Reads complete lines from the front of `input`. Returns the bytes consumed and, when the last line
    /// of a reply was among them, the reply. `Ok((n, None))` means more bytes are needed after the first `n`.
    pub fn parse(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        let mut used = 0;
        loop {
            let Some((line, n)) = parse_line(&input[used..])? else {
                return Ok((used, None));
            };
            used += n;
            if let Some(first) = self.lines.first() {
                if first.code != line.code {
                    return Err(ReplyError::MixedCodes { first: first.code, other: line.code });
                }
            }
            if self.lines.len() >= MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            let more = line.more;
            self.lines.push(line);
            if !more {
                return Ok((used, Some(build(std::mem::take(&mut self.lines)))));
            }
        }
    }
}

/// Parses a whole reply held in `input` (for tests and one-shot callers): `Ok(None)` when incomplete.
pub fn parse_reply(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut p = ReplyParser::new();
    match p.parse(input)? {
        (n, Some(r)) => Ok(Some((r, n))),
        (_, None) => Ok(None),
    }
}

/// One line from the front of `input`, or `None` when its end has not arrived yet.
fn parse_line(input: &[u8]) -> Result<Option<(Line, usize)>, ReplyError> {
    let window = &input[..input.len().min(MAX_REPLY_LINE)];
    let lf = window.iter().position(|&b| b == b'\n');
    // Only this line's octets count: a NUL after its LF belongs to the next reply, so the result does not
    // depend on how the bytes were split.
    if window[..lf.map_or(window.len(), |i| i + 1)].contains(&0) {
        return Err(ReplyError::Nul);
    }
    let Some(lf) = lf else {
        if input.len() >= MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        // A bare CR followed by something other than LF can be refused before the line ends.
        let head_len = window.iter().position(|&b| b == b'\r').unwrap_or(window.len());
        if head_len + 1 < window.len() {
            return Err(ReplyError::BareLineEnd);
        }
        // Refuse a bad code as soon as its three octets are in, rather than waiting for a line end.
        if head_len >= 3 {
            check_code(&window[..3])?;
        }
        return Ok(None);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ReplyError::BareLineEnd);
    }
    let body = &window[..lf - 1];
    if body.contains(&b'\r') {
        return Err(ReplyError::BareLineEnd);
    }
    if body.len() < 3 {
        return Err(ReplyError::BadCode(lossy(body)));
    }
    check_code(&body[..3])?;
    let code = (body[0] - b'0') as u16 * 100 + (body[1] - b'0') as u16 * 10 + (body[2] - b'0') as u16;
    let (more, text) = match body.get(3) {
        None => (false, &body[3..]),
        Some(b' ') => (false, &body[4..]),
        Some(b'-') => (true, &body[4..]),
        Some(_) => return Err(ReplyError::BadSeparator(lossy(body))),
    };
    Ok(Some((Line { code, more, text: clean_text(text) }, lf + 1)))
}

/// RFC 5321 §4.2: `Reply-code = %x32-35 %x30-35 %x30-39`, checked on exactly three octets.
fn check_code(code: &[u8]) -> Result<(), ReplyError> {
    let ok = [b'2'..=b'5', b'0'..=b'5', b'0'..=b'9'];
    if code.iter().zip(ok.iter()).all(|(c, r)| r.contains(c)) {
        Ok(())
    } else {
        Err(ReplyError::BadCode(lossy(code)))
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reply text is meant for people: keep it as UTF-8 (lossily) and replace control characters, so that a
/// transcript printed to a terminal cannot be steered by escape sequences.
fn clean_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect()
}

/// Builds the reply, taking the enhanced code off the text when the first line carries one of the reply's
/// class (RFC 2034 §4: `250 2.1.0 Ok`), and off the later lines that repeat it.
fn build(lines: Vec<Line>) -> Reply {
    let code = lines[0].code;
    let split = |text: &str| -> Option<(Enhanced, usize)> {
        let end = text.find(' ').unwrap_or(text.len());
        let e = Enhanced::parse(&text[..end])?;
        (e.0 as u16 == code / 100).then_some((e, end))
    };
    let enhanced = split(&lines[0].text).map(|(e, _)| e);
    let lines = lines
        .into_iter()
        .map(|l| {
            let text = match (enhanced, split(&l.text)) {
                (Some(want), Some((got, end))) if want == got => l.text[end..].trim_start_matches(' ').to_owned(),
                _ => l.text,
            };
            Cow::Owned(text)
        })
        .collect();
    Reply { code, enhanced, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let (r, n) = parse_reply(b"250 2.1.0 Ok\r\nrest").unwrap().unwrap();
        assert_eq!((r.code, r.enhanced, n), (250, Some(Enhanced(2, 1, 0)), 14));
        assert_eq!(r.lines, vec!["Ok"]);
        let (r, _) = parse_reply(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n").unwrap().unwrap();
        assert_eq!(r.lines, vec!["mx", "PIPELINING", "SIZE 10"]);
        assert_eq!(r.enhanced, None);
    }

    #[test]
    fn round_trips_what_the_server_side_writes() {
        let r = Reply::new(550, Enhanced(5, 1, 1), "no such user").line("really");
        let (back, n) = parse_reply(&r.to_bytes()).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(n, r.to_bytes().len());
    }
}
