//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1): one extension keyword per line after the
//! first, with optional parameters, read with [`Extension::parse`] (the type the server writes them with).

use crate::extension::Extension;
use crate::reply::Reply;

/// The service extensions the client cares about. A server that answered HELO offers none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The first line of the EHLO reply (usually the server's name and a greeting).
    pub server_name: String,
    /// RFC 1870: `SIZE` was offered. `Some(0)` means offered without a fixed limit (RFC 1870 §4).
    pub size: Option<u64>,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3030 (CHUNKING, BDAT).
    pub chunking: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// RFC 3461: DSN parameters may be passed on.
    pub dsn: bool,
    /// RFC 4954: the SASL mechanisms after `AUTH` (or the older `AUTH=` form), upper-cased.
    pub auth: Vec<String>,
    /// Every keyword line as offered, for callers that look for something else.
    pub extensions: Vec<String>,
}

impl Capabilities {
    /// Reads the capability lines of a positive EHLO reply.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities {
            server_name: reply.lines.first().map(|l| l.to_string()).unwrap_or_default(),
            ..Capabilities::default()
        };
        for line in reply.lines.iter().skip(1) {
            let Some(ext) = Extension::parse(line) else { continue };
            caps.extensions.push(line.trim().to_owned());
            match ext {
                Extension::Size(limit) => caps.size = Some(limit.unwrap_or(0)),
                Extension::Pipelining => caps.pipelining = true,
                Extension::EightBitMime => caps.eight_bit_mime = true,
                Extension::SmtpUtf8 => caps.smtputf8 = true,
                Extension::Chunking => caps.chunking = true,
                Extension::StartTls => caps.starttls = true,
                Extension::EnhancedStatusCodes => caps.enhanced_status_codes = true,
                Extension::Auth(mechs) => {
                    for m in mechs {
                        if !caps.auth.contains(&m) {
                            caps.auth.push(m);
                        }
                    }
                }
                Extension::Dsn => caps.dsn = true,
                Extension::Help | Extension::Other(_) => {}
            }
        }
        caps
    }

    /// The server's fixed message size limit, if it declared one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    /// True when the server offers the named SASL mechanism.
    pub fn has_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_list() {
        let r = Reply::plain(250, "mx.example greets you")
            .line("SIZE 35882577")
            .line("pipelining")
            .line("8BITMIME")
            .line("SMTPUTF8")
            .line("CHUNKING")
            .line("STARTTLS")
            .line("ENHANCEDSTATUSCODES")
            .line("AUTH PLAIN LOGIN")
            .line("AUTH=LOGIN CRAM-MD5")
            .line("DSN");
        let c = Capabilities::from_ehlo(&r);
        assert_eq!(c.server_name, "mx.example greets you");
        assert_eq!(c.size, Some(35882577));
        assert!(c.pipelining && c.eight_bit_mime && c.smtputf8 && c.chunking && c.starttls);
        assert!(c.enhanced_status_codes && c.dsn);
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(c.has_auth("plain"));
    }

    #[test]
    fn size_without_limit() {
        let c = Capabilities::from_ehlo(&Reply::plain(250, "x").line("SIZE"));
        assert_eq!((c.size, c.size_limit()), (Some(0), None));
        assert_eq!(Capabilities::from_ehlo(&Reply::plain(250, "x")).size, None);
        assert!(!Capabilities::from_ehlo(&Reply::plain(250, "x")).dsn);
    }
}
