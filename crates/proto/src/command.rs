//! SMTP command lines (RFC 5321 §4.1.1) parsed into [`Command`]s. A line arrives without its CRLF.
//!
//! Verbs are case-insensitive. `MAIL FROM:` and `RCPT TO:` tolerate spaces after the colon, as deployed
//! clients send them, but the path itself must be in angle brackets.

use std::fmt;

use crate::address::{parse_forward_path, parse_reverse_path, AddressError, ForwardPath, ReversePath};
use crate::extension::keyword;
use crate::params::{parse_mail_params, parse_rcpt_params, MailParams, RcptParams};
use crate::reply::{Enhanced, Reply};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// RFC 1870 §3: SIZE adds 26 octets to the MAIL command line limit.
pub const SIZE_ALLOWANCE: usize = 26;
/// RFC 4954 §5: AUTH= adds 500 octets to the MAIL command line limit.
pub const AUTH_ALLOWANCE: usize = 500;
/// RFC 3461 §5: RET and ENVID add 110 octets to the MAIL command line limit.
pub const DSN_MAIL_ALLOWANCE: usize = 110;
/// RFC 3461 §5: NOTIFY and ORCPT add 515 octets to the RCPT command line limit.
pub const DSN_RCPT_ALLOWANCE: usize = 515;
/// The longest MAIL line: every allowance of the extensions we offer.
pub const MAX_MAIL_LINE: usize = MAX_COMMAND_LINE + SIZE_ALLOWANCE + AUTH_ALLOWANCE + DSN_MAIL_ALLOWANCE;
/// The longest RCPT line.
pub const MAX_RCPT_LINE: usize = MAX_COMMAND_LINE + DSN_RCPT_ALLOWANCE;
/// The longest line accepted at all (MAIL's limit is the largest).
pub const MAX_LINE: usize = if MAX_MAIL_LINE > MAX_RCPT_LINE { MAX_MAIL_LINE } else { MAX_RCPT_LINE };

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
        params: RcptParams,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth(String),
    /// Known from older RFCs but not offered (TURN, ETRN, SEND, SOML, SAML): 502.
    NotImplemented,
}

impl Command {
    /// Parses one command line (CRLF already removed); the same as [`parse`].
    pub fn parse(line: &[u8]) -> Result<Command, Reply> {
        parse(line)
    }
}

/// The wire form of the command, without CRLF: what [`parse`] reads back as the same command. Commands that
/// carry nothing we keep (VRFY, EXPN, HELP, NOOP arguments; the old verbs) are written bare.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Helo(name) => write!(f, "HELO {name}"),
            Command::Ehlo(name) => write!(f, "EHLO {name}"),
            Command::Mail { from, params } if *params == MailParams::default() => write!(f, "MAIL FROM:{from}"),
            Command::Mail { from, params } => write!(f, "MAIL FROM:{from} {params}"),
            Command::Rcpt { to, params } if *params == RcptParams::default() => write!(f, "RCPT TO:{to}"),
            Command::Rcpt { to, params } => write!(f, "RCPT TO:{to} {params}"),
            Command::Data => f.write_str("DATA"),
            Command::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Command::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
            Command::Rset => f.write_str("RSET"),
            Command::Noop => f.write_str("NOOP"),
            Command::Quit => f.write_str("QUIT"),
            Command::Vrfy => f.write_str("VRFY"),
            Command::Expn => f.write_str("EXPN"),
            Command::Help => f.write_str(keyword::HELP),
            Command::StartTls => f.write_str(keyword::STARTTLS),
            Command::Auth(args) if args.is_empty() => f.write_str(keyword::AUTH),
            Command::Auth(args) => write!(f, "{} {args}", keyword::AUTH),
            Command::NotImplemented => f.write_str(NOT_IMPLEMENTED[0]),
        }
    }
}

/// Verbs of older RFCs that we know but do not offer (RFC 5321 §4.1.5 retired SEND, SOML, SAML; TURN and
/// ATRN need authentication we do not have; ETRN is a relay feature): 502.
const NOT_IMPLEMENTED: [&str; 6] = ["TURN", "ETRN", "SEND", "SOML", "SAML", "ATRN"];

fn syntax(text: &'static str) -> Reply {
    Reply::new(501, Enhanced(5, 5, 4), text)
}

/// RFC 3463: X.1.7 is a bad sender address, X.1.3 a bad destination address.
fn address_error(e: AddressError, sender: bool) -> Reply {
    let code = if sender { Enhanced(5, 1, 7) } else { Enhanced(5, 1, 3) };
    Reply::new(501, code, format!("Bad address syntax: {e}"))
}

/// Parses one command line (CRLF already removed). Errors are the reply to send.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Reply::new(500, Enhanced(5, 5, 2), "Command line is not valid UTF-8"));
    };
    // Unicode controls too (C1, U+0080-U+009F: NEL is a line break to some readers, CSI starts a
    // terminal escape), so nothing that reaches a header or a log can carry one.
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Reply::new(500, Enhanced(5, 5, 2), "Control characters in command line"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let is = |v: &str| verb.eq_ignore_ascii_case(v);
    let no_args = |cmd: Command, name: &'static str| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(name))
        }
    };
    if is("HELO") || is("EHLO") {
        let arg = rest.trim_matches(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(Reply::new(
                501,
                Enhanced(5, 5, 4),
                if is("HELO") { "Syntax: HELO hostname" } else { "Syntax: EHLO hostname" },
            ));
        }
        Ok(if is("HELO") { Command::Helo(arg.to_owned()) } else { Command::Ehlo(arg.to_owned()) })
    } else if is("MAIL") {
        let arg = strip_keyword(rest, "FROM:").ok_or_else(|| syntax("Syntax: MAIL FROM:<address> [parameters]"))?;
        let (from, used) = parse_reverse_path(arg.as_bytes()).map_err(|e| address_error(e, true))?;
        let tail = &arg[used..];
        if !tail.is_empty() && !tail.starts_with(' ') {
            return Err(syntax("Syntax: MAIL FROM:<address> [parameters]"));
        }
        let params = parse_mail_params(tail)?;
        Ok(Command::Mail { from, params })
    } else if is("RCPT") {
        let arg = strip_keyword(rest, "TO:").ok_or_else(|| syntax("Syntax: RCPT TO:<address>"))?;
        let (to, used) = parse_forward_path(arg.as_bytes()).map_err(|e| address_error(e, false))?;
        let tail = &arg[used..];
        if !tail.is_empty() && !tail.starts_with(' ') {
            return Err(syntax("Syntax: RCPT TO:<address> [parameters]"));
        }
        // RFC 3461 parameters are parsed whatever is offered; the session refuses them when DSN is off.
        let params = parse_rcpt_params(tail)?;
        Ok(Command::Rcpt { to, params })
    } else if is("DATA") {
        no_args(Command::Data, "Syntax: DATA")
    } else if is("BDAT") {
        let mut it = rest.split(' ').filter(|s| !s.is_empty());
        let size = it.next().ok_or_else(|| syntax("Syntax: BDAT size [LAST]"))?;
        if size.len() > crate::params::MAX_SIZE_DIGITS || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax("Syntax: BDAT size [LAST]"));
        }
        let size: u64 = size.parse().map_err(|_| syntax("Syntax: BDAT size [LAST]"))?;
        let last = match it.next() {
            None => false,
            Some(l) if l.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return Err(syntax("Syntax: BDAT size [LAST]")),
        };
        if it.next().is_some() {
            return Err(syntax("Syntax: BDAT size [LAST]"));
        }
        Ok(Command::Bdat { size, last })
    } else if is("RSET") {
        no_args(Command::Rset, "Syntax: RSET")
    } else if is("NOOP") {
        // RFC 5321 §4.1.1.9: NOOP may carry a string, which is ignored.
        Ok(Command::Noop)
    } else if is("QUIT") {
        no_args(Command::Quit, "Syntax: QUIT")
    } else if is("VRFY") {
        Ok(Command::Vrfy)
    } else if is("EXPN") {
        Ok(Command::Expn)
    } else if is(keyword::HELP) {
        Ok(Command::Help)
    } else if is(keyword::STARTTLS) {
        no_args(Command::StartTls, "Syntax: STARTTLS")
    } else if is(keyword::AUTH) {
        Ok(Command::Auth(rest.to_owned()))
    } else if NOT_IMPLEMENTED.iter().any(|v| is(v)) {
        Ok(Command::NotImplemented)
    } else {
        Err(Reply::new(500, Enhanced(5, 5, 2), "Command unrecognized"))
    }
}

/// Strips `FROM:` / `TO:` (case-insensitive) and any spaces after it.
fn strip_keyword<'a>(rest: &'a str, kw: &str) -> Option<&'a str> {
    let rest = rest.trim_start();
    if rest.len() < kw.len() || !rest.as_bytes()[..kw.len()].eq_ignore_ascii_case(kw.as_bytes()) {
        return None;
    }
    Some(rest[kw.len()..].trim_start_matches(' '))
}

/// The longest line a verb may use: MAIL gets the SIZE, AUTH and DSN allowances, RCPT the DSN one, the
/// others 512 octets.
pub fn line_limit(line: &[u8]) -> usize {
    let verb = |v: &[u8]| line.len() >= 4 && line[..4].eq_ignore_ascii_case(v);
    if verb(b"MAIL") {
        MAX_MAIL_LINE
    } else if verb(b"RCPT") {
        MAX_RCPT_LINE
    } else {
        MAX_COMMAND_LINE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;

    #[test]
    fn good_commands() {
        assert_eq!(parse(b"EHLO client.example").unwrap(), Command::Ehlo("client.example".into()));
        assert_eq!(parse(b"helo [127.0.0.1]").unwrap(), Command::Helo("[127.0.0.1]".into()));
        assert_eq!(parse(b"DATA").unwrap(), Command::Data);
        assert_eq!(parse(b"data").unwrap(), Command::Data);
        assert_eq!(parse(b"RSET").unwrap(), Command::Rset);
        assert_eq!(parse(b"NOOP anything").unwrap(), Command::Noop);
        assert_eq!(parse(b"QUIT").unwrap(), Command::Quit);
        assert_eq!(parse(b"VRFY root").unwrap(), Command::Vrfy);
        assert_eq!(parse(b"BDAT 100 LAST").unwrap(), Command::Bdat { size: 100, last: true });
        assert_eq!(parse(b"BDAT 0").unwrap(), Command::Bdat { size: 0, last: false });
        let Command::Mail { from, params } = parse(b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME").unwrap() else {
            panic!()
        };
        assert_eq!(from, ReversePath::Mailbox(Address::parse("a@b.example").unwrap()));
        assert_eq!(params.size, Some(10));
        assert_eq!(
            parse(b"mail from: <>").unwrap(),
            Command::Mail { from: ReversePath::Null, params: MailParams::default() }
        );
        assert_eq!(
            parse(b"RCPT TO:<Postmaster>").unwrap(),
            Command::Rcpt { to: ForwardPath::Postmaster, params: RcptParams::default() }
        );
    }

    #[test]
    fn bad_commands() {
        for (line, code, enh) in [
            (&b"FOO"[..], 500, Enhanced(5, 5, 2)),
            (b"", 500, Enhanced(5, 5, 2)),
            (b"EHLO", 501, Enhanced(5, 5, 4)),
            (b"HELO ", 501, Enhanced(5, 5, 4)),
            (b"MAIL <a@b>", 501, Enhanced(5, 5, 4)),
            (b"MAIL FROM:a@b", 501, Enhanced(5, 1, 7)),
            (b"MAIL FROM:<a@b>SIZE=1", 501, Enhanced(5, 5, 4)),
            (b"MAIL FROM:<a@b> FOO=1", 555, Enhanced(5, 5, 4)),
            (b"RCPT TO:<a@b> X-FOO", 555, Enhanced(5, 5, 4)),
            (b"RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", 555, Enhanced(5, 5, 4)),
            (b"RCPT TO:<a@b>NOTIFY=NEVER", 501, Enhanced(5, 5, 4)),
            (b"RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", 501, Enhanced(5, 5, 4)),
            (b"RCPT TO:<>", 501, Enhanced(5, 1, 3)),
            (b"RCPT FROM:<a@b>", 501, Enhanced(5, 5, 4)),
            (b"DATA x", 501, Enhanced(5, 5, 4)),
            (b"BDAT", 501, Enhanced(5, 5, 4)),
            (b"BDAT -1", 501, Enhanced(5, 5, 4)),
            (b"BDAT 99999999999999999999999", 501, Enhanced(5, 5, 4)),
            (b"BDAT 1 FIRST", 501, Enhanced(5, 5, 4)),
            (b"MAIL FROM:<a\0@b>", 500, Enhanced(5, 5, 2)),
            (b"NOOP \xff", 500, Enhanced(5, 5, 2)),
            (b"RCPT TO:<a@b>\nMAIL", 500, Enhanced(5, 5, 2)),
        ] {
            let r = parse(line).unwrap_err();
            assert_eq!((r.code, r.enhanced), (code, Some(enh)), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn line_limits() {
        assert_eq!(line_limit(b"MAIL FROM:<a@b>"), MAX_LINE);
        assert_eq!(line_limit(b"MAIL FROM:<a@b>"), 512 + 26 + 500 + 110);
        assert_eq!(line_limit(b"rcpt TO:<a@b>"), 512 + 515);
        assert_eq!(line_limit(b"NOOP"), MAX_COMMAND_LINE);
    }
}
