//! The ESMTP service extensions mailroom speaks (RFC 5321 §4.1.1.1): one [`Extension`] per line of an EHLO
//! reply after the first. The server writes its EHLO reply from these values ([`fmt::Display`]) and the
//! client reads a server's reply back into them ([`Extension::parse`]), so each keyword is spelled once,
//! in [`keyword`].

use std::fmt;

/// The keywords on the wire. Some double as command verbs (STARTTLS, AUTH, HELP) or MAIL parameters (SIZE,
/// SMTPUTF8, AUTH, and 8BITMIME as a BODY value) of the extension that defines them.
pub mod keyword {
    /// RFC 1870.
    pub const SIZE: &str = "SIZE";
    /// RFC 2920.
    pub const PIPELINING: &str = "PIPELINING";
    /// RFC 6152.
    pub const EIGHT_BIT_MIME: &str = "8BITMIME";
    /// RFC 6531.
    pub const SMTPUTF8: &str = "SMTPUTF8";
    /// RFC 2034.
    pub const ENHANCEDSTATUSCODES: &str = "ENHANCEDSTATUSCODES";
    /// RFC 3030.
    pub const CHUNKING: &str = "CHUNKING";
    /// RFC 3207.
    pub const STARTTLS: &str = "STARTTLS";
    /// RFC 4954.
    pub const AUTH: &str = "AUTH";
    /// RFC 3461: delivery status notifications (RET, ENVID on MAIL; NOTIFY, ORCPT on RCPT).
    pub const DSN: &str = "DSN";
    /// RFC 5321 §4.1.1.8: not an extension, but listed by many servers (and by mailroom).
    pub const HELP: &str = "HELP";
}

/// One line of an EHLO reply after the greeting line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    /// RFC 1870: `SIZE n`, the fixed maximum message size; `None` (`SIZE` alone) and `Some(0)` declare no
    /// fixed limit (§4).
    Size(Option<u64>),
    Pipelining,
    EightBitMime,
    SmtpUtf8,
    EnhancedStatusCodes,
    Chunking,
    StartTls,
    /// RFC 4954: the SASL mechanisms offered, upper-cased; kept as names because a server may offer ones
    /// mailroom does not speak. The older `AUTH=PLAIN` form parses to this too.
    Auth(Vec<String>),
    Help,
    /// RFC 3461.
    Dsn,
    /// A keyword mailroom does not use, with its parameters, as offered.
    Other(String),
}

impl Extension {
    /// Reads one capability line; `None` for an empty line. Keywords are case-insensitive (RFC 5321 §2.4).
    pub fn parse(line: &str) -> Option<Extension> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let (word, params) = match line.find([' ', '=']) {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        let is = |k: &str| word.eq_ignore_ascii_case(k);
        Some(if is(keyword::SIZE) {
            Extension::Size(params.split_whitespace().next().map(|p| p.parse().unwrap_or(0)))
        } else if is(keyword::PIPELINING) {
            Extension::Pipelining
        } else if is(keyword::EIGHT_BIT_MIME) {
            Extension::EightBitMime
        } else if is(keyword::SMTPUTF8) {
            Extension::SmtpUtf8
        } else if is(keyword::ENHANCEDSTATUSCODES) {
            Extension::EnhancedStatusCodes
        } else if is(keyword::CHUNKING) {
            Extension::Chunking
        } else if is(keyword::STARTTLS) {
            Extension::StartTls
        } else if is(keyword::AUTH) {
            Extension::Auth(params.split_whitespace().map(str::to_ascii_uppercase).collect())
        } else if is(keyword::HELP) {
            Extension::Help
        } else if is(keyword::DSN) {
            Extension::Dsn
        } else {
            Extension::Other(line.to_owned())
        })
    }
}

/// The line as the server writes it.
impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extension::Size(None) => f.write_str(keyword::SIZE),
            Extension::Size(Some(n)) => write!(f, "{} {n}", keyword::SIZE),
            Extension::Pipelining => f.write_str(keyword::PIPELINING),
            Extension::EightBitMime => f.write_str(keyword::EIGHT_BIT_MIME),
            Extension::SmtpUtf8 => f.write_str(keyword::SMTPUTF8),
            Extension::EnhancedStatusCodes => f.write_str(keyword::ENHANCEDSTATUSCODES),
            Extension::Chunking => f.write_str(keyword::CHUNKING),
            Extension::StartTls => f.write_str(keyword::STARTTLS),
            Extension::Auth(mechs) => {
                f.write_str(keyword::AUTH)?;
                mechs.iter().try_for_each(|m| write!(f, " {m}"))
            }
            Extension::Help => f.write_str(keyword::HELP),
            Extension::Dsn => f.write_str(keyword::DSN),
            Extension::Other(line) => f.write_str(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_extension_round_trips() {
        for e in [
            Extension::Size(None),
            Extension::Size(Some(0)),
            Extension::Size(Some(26214400)),
            Extension::Pipelining,
            Extension::EightBitMime,
            Extension::SmtpUtf8,
            Extension::EnhancedStatusCodes,
            Extension::Chunking,
            Extension::StartTls,
            Extension::Auth(vec!["PLAIN".into(), "LOGIN".into()]),
            Extension::Auth(vec![]),
            Extension::Help,
            Extension::Dsn,
            Extension::Other("XCLIENT NAME ADDR".into()),
            Extension::Other("X-FOO bar baz".into()),
        ] {
            assert_eq!(Extension::parse(&e.to_string()), Some(e.clone()), "{e}");
        }
    }

    #[test]
    fn lenient_forms() {
        assert_eq!(Extension::parse(" pipelining "), Some(Extension::Pipelining));
        assert_eq!(
            Extension::parse("AUTH=login cram-md5"),
            Some(Extension::Auth(vec!["LOGIN".into(), "CRAM-MD5".into()]))
        );
        assert_eq!(Extension::parse("SIZE x"), Some(Extension::Size(Some(0))));
        assert_eq!(Extension::parse(""), None);
        assert_eq!(Extension::parse("dsn"), Some(Extension::Dsn));
        assert_eq!(Extension::Size(Some(10)).to_string(), "SIZE 10");
        assert_eq!(Extension::Auth(vec!["PLAIN".into(), "LOGIN".into()]).to_string(), "AUTH PLAIN LOGIN");
    }
}
