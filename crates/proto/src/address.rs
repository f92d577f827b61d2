//! Mailbox addresses and paths by the grammar of RFC 5321 §4.1.2, widened for UTF-8 by RFC 6531 §3.3.
//!
//! Parsing is bounded by the size limits of RFC 5321 §4.5.3.1 and never allocates more than the input.
//! The parsed local part is kept in its decoded form (quotes and backslashes removed), so `"abc"@x` and
//! `abc@x` name the same mailbox (RFC 5321 §4.1.2: the quoted form is equivalent when not needed).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 §4.5.3.1.1: 64 octets for the local part.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: 255 octets for the domain.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3: 256 octets for a path, including the angle brackets.
pub const MAX_PATH: usize = 256;
/// RFC 1035 §2.3.4: 63 octets per label.
pub const MAX_LABEL: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be enclosed in <>")]
    MissingBrackets,
    #[error("malformed local part")]
    BadLocalPart,
    #[error("local part longer than 64 octets")]
    LocalPartTooLong,
    #[error("malformed domain")]
    BadDomain,
    #[error("domain longer than 255 octets")]
    DomainTooLong,
    #[error("path longer than 256 octets")]
    PathTooLong,
    #[error("malformed address literal")]
    BadLiteral,
    #[error("missing @domain")]
    MissingDomain,
}

/// The part after `@`: a host name or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A domain name as sent (may hold U-labels under SMTPUTF8).
    Name(String),
    /// An address literal with its brackets, e.g. `[192.0.2.1]` or `[IPv6:::1]`.
    Literal(String),
}

impl Domain {
    pub fn as_str(&self) -> &str {
        match self {
            Domain::Name(s) | Domain::Literal(s) => s,
        }
    }
    pub fn is_literal(&self) -> bool {
        matches!(self, Domain::Literal(_))
    }
}

/// `local-part@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: Domain,
}

impl Address {
    /// The decoded local part (quotes removed).
    pub fn local(&self) -> &str {
        &self.local
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
    /// True when the address holds only ASCII (false means SMTPUTF8 is needed, RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.as_str().is_ascii()
    }

    /// Parses a bare `local@domain` (no brackets) as a person types it.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let bytes = s.as_bytes();
        let (addr, used) = parse_mailbox(bytes)?;
        if used != bytes.len() {
            return Err(AddressError::BadDomain);
        }
        Ok(addr)
    }
}

impl fmt::Display for Address {
    /// The wire form: the local part re-quoted when it is not a dot-string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(self.local.as_bytes()) {
            write!(f, "{}@{}", self.local, self.domain.as_str())
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain.as_str())
        }
    }
}

/// The argument of MAIL FROM: an address, or the null path `<>` of bounces (RFC 5321 §4.5.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Address),
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// The argument of RCPT TO: an address, or the bare `<Postmaster>` of RFC 5321 §4.1.1.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    Postmaster,
    Mailbox(Address),
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// Parses `<...>` at the start of `input`, returning the path and the bytes consumed.
pub fn parse_reverse_path(input: &[u8]) -> Result<(ReversePath, usize), AddressError> {
    if input.starts_with(b"<>") {
        return Ok((ReversePath::Null, 2));
    }
    let (addr, used) = parse_path(input)?;
    Ok((ReversePath::Mailbox(addr), used))
}

/// Parses `<...>` at the start of `input` for RCPT TO.
pub fn parse_forward_path(input: &[u8]) -> Result<(ForwardPath, usize), AddressError> {
    const PM: &[u8] = b"<postmaster>";
    if input.len() >= PM.len() && input[..PM.len()].eq_ignore_ascii_case(PM) {
        return Ok((ForwardPath::Postmaster, PM.len()));
    }
    let (addr, used) = parse_path(input)?;
    Ok((ForwardPath::Mailbox(addr), used))
}

/// `Path = "<" [ A-d-l ":" ] Mailbox ">"`. A source route is accepted and ignored (RFC 5321 §4.1.1.3,
/// Appendix C: servers "SHOULD ignore" it), so `<@evil:user@here>` is simply `user@here`.
fn parse_path(input: &[u8]) -> Result<(Address, usize), AddressError> {
    if input.first() != Some(&b'<') {
        return Err(AddressError::MissingBrackets);
    }
    let mut i = 1;
    if input.get(i) == Some(&b'@') {
        // A-d-l = At-domain *( "," At-domain ), then ":".
        loop {
            if input.get(i) != Some(&b'@') {
                return Err(AddressError::BadDomain);
            }
            i += 1;
            let n = parse_domain_name(&input[i..])?;
            i += n;
            match input.get(i) {
                Some(b',') => i += 1,
                Some(b':') => {
                    i += 1;
                    break;
                }
                _ => return Err(AddressError::BadDomain),
            }
        }
    }
    let (addr, used) = parse_mailbox(&input[i..])?;
    i += used;
    if input.get(i) != Some(&b'>') {
        return Err(AddressError::MissingBrackets);
    }
    i += 1;
    if i > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    Ok((addr, i))
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )`, stopping at the first byte that cannot belong.
fn parse_mailbox(input: &[u8]) -> Result<(Address, usize), AddressError> {
    let (local, mut i) = if input.first() == Some(&b'"') { parse_quoted(input)? } else { parse_dot_string(input)? };
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong);
    }
    if input.get(i) != Some(&b'@') {
        return Err(AddressError::MissingDomain);
    }
    i += 1;
    let rest = &input[i..];
    let (domain, n) = if rest.first() == Some(&b'[') {
        let n = parse_literal(rest)?;
        (Domain::Literal(utf8(&rest[..n])?), n)
    } else {
        let n = parse_domain_name(rest)?;
        (Domain::Name(utf8(&rest[..n])?), n)
    };
    Ok((Address { local, domain }, i + n))
}

fn utf8(b: &[u8]) -> Result<String, AddressError> {
    std::str::from_utf8(b).map(str::to_owned).map_err(|_| AddressError::BadDomain)
}

/// RFC 5322 atext, plus UTF-8 non-ASCII (RFC 6531 §3.3), checked for well-formedness by the caller.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn is_dot_string(b: &[u8]) -> bool {
    !b.is_empty() && b.split(|&c| c == b'.').all(|atom| !atom.is_empty() && atom.iter().all(|&c| is_atext(c)))
}

fn parse_dot_string(input: &[u8]) -> Result<(String, usize), AddressError> {
    let mut i = 0;
    loop {
        let start = i;
        while i < input.len() && is_atext(input[i]) {
            i += 1;
            if i > MAX_LOCAL_PART {
                return Err(AddressError::LocalPartTooLong);
            }
        }
        if i == start {
            return Err(AddressError::BadLocalPart);
        }
        if input.get(i) == Some(&b'.') {
            i += 1;
        } else {
            break;
        }
    }
    let s = std::str::from_utf8(&input[..i]).map_err(|_| AddressError::BadLocalPart)?;
    if s.chars().any(char::is_control) {
        return Err(AddressError::BadLocalPart);
    }
    Ok((s.to_owned(), i))
}

/// `Quoted-string = DQUOTE *QcontentSMTP DQUOTE`; returns the decoded content.
fn parse_quoted(input: &[u8]) -> Result<(String, usize), AddressError> {
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        let Some(&b) = input.get(i) else {
            return Err(AddressError::BadLocalPart);
        };
        match b {
            b'"' => {
                i += 1;
                break;
            }
            b'\\' => {
                // quoted-pairSMTP = %d92 %d32-126
                match input.get(i + 1) {
                    Some(&c) if (32..=126).contains(&c) => out.push(c),
                    _ => return Err(AddressError::BadLocalPart),
                }
                i += 2;
            }
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 (RFC 6531)
            32..=126 | 0x80..=0xff => {
                out.push(b);
                i += 1;
            }
            _ => return Err(AddressError::BadLocalPart),
        }
        if out.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
    }
    let s = String::from_utf8(out).map_err(|_| AddressError::BadLocalPart)?;
    if s.chars().any(char::is_control) {
        return Err(AddressError::BadLocalPart);
    }
    Ok((s, i))
}

/// `Domain = sub-domain *("." sub-domain)`, `sub-domain = Let-dig [Ldh-str]` or a U-label.
fn parse_domain_name(input: &[u8]) -> Result<usize, AddressError> {
    let is_ldh = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80;
    let mut i = 0;
    loop {
        let start = i;
        while i < input.len() && is_ldh(input[i]) {
            i += 1;
        }
        let label = &input[start..i];
        if label.is_empty() || label.len() > MAX_LABEL || label[0] == b'-' || label[label.len() - 1] == b'-' {
            return Err(AddressError::BadDomain);
        }
        if i > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong);
        }
        if input.get(i) == Some(&b'.') && input.get(i + 1).is_some_and(|&b| is_ldh(b)) {
            i += 1;
        } else {
            break;
        }
    }
    let name = std::str::from_utf8(&input[..i]).map_err(|_| AddressError::BadDomain)?;
    if name.chars().any(char::is_control) {
        return Err(AddressError::BadDomain);
    }
    Ok(i)
}

/// `address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General-address-literal ) "]"` (RFC 5321 §4.1.3).
fn parse_literal(input: &[u8]) -> Result<usize, AddressError> {
    let end = input.iter().take(MAX_DOMAIN).position(|&b| b == b']').ok_or(AddressError::BadLiteral)?;
    let inner = std::str::from_utf8(&input[1..end]).map_err(|_| AddressError::BadLiteral)?;
    let ok = if let Some(v6) = strip_prefix_ci(inner, "IPv6:") {
        v6.parse::<Ipv6Addr>().is_ok()
    } else if let Some((tag, content)) = inner.split_once(':') {
        // General-address-literal = Standardized-tag ":" 1*dcontent
        !tag.is_empty()
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !content.is_empty()
            && content.bytes().all(|b| (33..=90).contains(&b) || (94..=126).contains(&b))
    } else {
        inner.parse::<Ipv4Addr>().is_ok()
    };
    if ok {
        Ok(end + 1)
    } else {
        Err(AddressError::BadLiteral)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(s: &str) -> Result<ReversePath, AddressError> {
        let (p, n) = parse_reverse_path(s.as_bytes())?;
        assert_eq!(n, s.len(), "consumed all of {s}");
        Ok(p)
    }
    fn fwd(s: &str) -> Result<ForwardPath, AddressError> {
        let (p, n) = parse_forward_path(s.as_bytes())?;
        assert_eq!(n, s.len(), "consumed all of {s}");
        Ok(p)
    }

    #[test]
    fn good_paths() {
        for (input, local, domain) in [
            ("<a@b>", "a", "b"),
            ("<first.last@example.org>", "first.last", "example.org"),
            ("<\"john doe\"@example.org>", "john doe", "example.org"),
            ("<\"a\\\"b\"@x.y>", "a\"b", "x.y"),
            ("<user@[192.0.2.1]>", "user", "[192.0.2.1]"),
            ("<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]"),
            ("<@relay.example,@r2.example:user@dest.example>", "user", "dest.example"),
            ("<jöran@bücher.example>", "jöran", "bücher.example"),
            ("<a+tag@sub-1.example.com>", "a+tag", "sub-1.example.com"),
        ] {
            match rev(input) {
                Ok(ReversePath::Mailbox(a)) => {
                    assert_eq!(a.local(), local, "{input}");
                    assert_eq!(a.domain().as_str(), domain, "{input}");
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn null_and_postmaster() {
        assert_eq!(rev("<>").unwrap(), ReversePath::Null);
        assert_eq!(fwd("<Postmaster>").unwrap(), ForwardPath::Postmaster);
        assert_eq!(fwd("<POSTMASTER>").unwrap(), ForwardPath::Postmaster);
        assert!(matches!(fwd("<postmaster@x>").unwrap(), ForwardPath::Mailbox(_)));
        assert!(fwd("<>").is_err(), "RCPT TO:<> is not a forward path");
    }

    #[test]
    fn bad_paths() {
        let long_local = format!("<{}@x>", "a".repeat(65));
        let long_label = format!("<a@{}.com>", "b".repeat(64));
        let long_domain = format!("<a@{}com>", "abcdefghi.".repeat(26));
        for (input, err) in [
            ("a@b", AddressError::MissingBrackets),
            ("<a@b", AddressError::MissingBrackets),
            ("<a>", AddressError::MissingDomain),
            ("<@b>", AddressError::BadDomain),
            ("<a..b@c>", AddressError::BadLocalPart),
            ("<.a@c>", AddressError::BadLocalPart),
            ("<a.@c>", AddressError::BadLocalPart),
            ("<a b@c>", AddressError::MissingDomain),
            ("<a@-b.com>", AddressError::BadDomain),
            ("<a@b-.com>", AddressError::BadDomain),
            ("<a@b..com>", AddressError::MissingBrackets),
            ("<a@[300.1.1.1]>", AddressError::BadLiteral),
            ("<a@[IPv6:zz]>", AddressError::BadLiteral),
            ("<\"a\rb\"@c>", AddressError::BadLocalPart),
            ("<\"a\0b\"@c>", AddressError::BadLocalPart),
            ("<\"unterminated@c>", AddressError::BadLocalPart),
            (long_local.as_str(), AddressError::LocalPartTooLong),
            (long_label.as_str(), AddressError::BadDomain),
            (long_domain.as_str(), AddressError::DomainTooLong),
        ] {
            assert_eq!(rev(input).unwrap_err(), err, "{input:?}");
        }
    }

    #[test]
    fn unicode_controls_are_refused() {
        assert_eq!(rev("<a\u{85}b@x.org>").unwrap_err(), AddressError::BadLocalPart);
        assert_eq!(rev("<a@ex\u{9b}ample.org>").unwrap_err(), AddressError::BadDomain);
        assert_eq!(rev("<\"a\u{89}b\"@x.org>").unwrap_err(), AddressError::BadLocalPart);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(parse_reverse_path(b"<a\xff@b>").is_err());
        assert!(parse_reverse_path(b"<a@b\xc3>").is_err());
    }

    #[test]
    fn display_requotes_when_needed() {
        let ReversePath::Mailbox(a) = rev("<\"john doe\"@x>").unwrap() else { panic!() };
        assert_eq!(a.to_string(), "\"john doe\"@x");
        let ReversePath::Mailbox(a) = rev("<\"plain\"@x>").unwrap() else { panic!() };
        assert_eq!(a.to_string(), "plain@x", "unneeded quotes are dropped");
        assert!(Address::parse("ä@x").is_ok_and(|a| !a.is_ascii()));
    }
}
