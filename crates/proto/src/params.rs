//! ESMTP parameters of MAIL FROM (RFC 5321 §4.1.2 `Mail-parameters`): SIZE (RFC 1870), BODY (RFC 6152),
//! SMTPUTF8 (RFC 6531) and AUTH (RFC 4954 §5), with xtext decoding (RFC 3461 §4).

use std::fmt;

use crate::extension::keyword;
use crate::reply::{Enhanced, Reply};

/// RFC 6152 §2: the MAIL parameter that declares the body type, and its value for plain 7-bit text.
const BODY: &str = "BODY";
const SEVEN_BIT: &str = "7BIT";

/// RFC 1870 §4: SIZE takes at most 20 digits; we refuse anything that does not fit a u64.
pub const MAX_SIZE_DIGITS: usize = 20;

/// BODY= of RFC 6152 (RFC 3030's BINARYMIME is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

/// The parameters of one MAIL command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    /// `AUTH=` decoded from xtext; `Some(None)` is `AUTH=<>`.
    pub auth: Option<Option<String>>,
}

/// The wire form: `SIZE=n BODY=.. SMTPUTF8 AUTH=xtext`, space-separated, in that order; empty when none is
/// set. [`parse_mail_params`] reads it back as the same value.
impl fmt::Display for MailParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        if let Some(n) = self.size {
            items.push(format!("{}={n}", keyword::SIZE));
        }
        match self.body {
            Some(Body::SevenBit) => items.push(format!("{BODY}={SEVEN_BIT}")),
            Some(Body::EightBitMime) => items.push(format!("{BODY}={}", keyword::EIGHT_BIT_MIME)),
            None => {}
        }
        if self.smtputf8 {
            items.push(keyword::SMTPUTF8.to_owned());
        }
        match &self.auth {
            Some(None) => items.push(format!("{}=<>", keyword::AUTH)),
            Some(Some(a)) => items.push(format!("{}={}", keyword::AUTH, encode_xtext(a))),
            None => {}
        }
        f.write_str(&items.join(" "))
    }
}

fn bad(text: &'static str) -> Reply {
    Reply::new(501, Enhanced(5, 5, 4), text)
}

fn unknown() -> Reply {
    Reply::new(555, Enhanced(5, 5, 4), "Unsupported MAIL parameter")
}

/// Parses the text after the path: space-separated `keyword[=value]` items.
pub fn parse_mail_params(rest: &str) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    for item in rest.split(' ').filter(|s| !s.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        if key.eq_ignore_ascii_case(keyword::SIZE) {
            let v = value.ok_or_else(|| bad("SIZE needs a value"))?;
            if p.size.is_some() {
                return Err(bad("Duplicate SIZE parameter"));
            }
            if v.is_empty() || v.len() > MAX_SIZE_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("Bad SIZE value"));
            }
            p.size = Some(v.parse().map_err(|_| bad("Bad SIZE value"))?);
        } else if key.eq_ignore_ascii_case(BODY) {
            let v = value.ok_or_else(|| bad("BODY needs a value"))?;
            if p.body.is_some() {
                return Err(bad("Duplicate BODY parameter"));
            }
            p.body = Some(if v.eq_ignore_ascii_case(SEVEN_BIT) {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case(keyword::EIGHT_BIT_MIME) {
                Body::EightBitMime
            } else {
                return Err(Reply::new(555, Enhanced(5, 5, 4), "Unsupported BODY type"));
            });
        } else if key.eq_ignore_ascii_case(keyword::SMTPUTF8) {
            if value.is_some() {
                return Err(bad("SMTPUTF8 takes no value"));
            }
            p.smtputf8 = true;
        } else if key.eq_ignore_ascii_case(keyword::AUTH) {
            let v = value.ok_or_else(|| bad("AUTH needs a value"))?;
            if p.auth.is_some() {
                return Err(bad("Duplicate AUTH parameter"));
            }
            p.auth = Some(if v == "<>" {
                None
            } else if v.is_empty() {
                return Err(bad("AUTH needs a value"));
            } else {
                Some(decode_xtext(v).ok_or_else(|| bad("Bad xtext in AUTH"))?)
            });
        } else {
            return Err(unknown());
        }
    }
    Ok(p)
}

/// RFC 3461 §4 xtext: `+XX` hex escapes. A decoded value holding control bytes (CR, LF, NUL...) is refused,
/// so no parameter can smuggle a line break into a header or log (Exim's 21Nails).
pub fn decode_xtext(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)) {
                    return None;
                }
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            c @ 33..=126 if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    let s = String::from_utf8(out).ok()?;
    if s.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(s)
}

/// RFC 3461 §4 xtext: every octet outside `!`..`~`, and `+` and `=`, as `+XX`.
pub fn encode_xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_table() {
        let ok = |s: &str| parse_mail_params(s).unwrap();
        assert_eq!(ok("").size, None);
        assert_eq!(ok("SIZE=1000").size, Some(1000));
        assert_eq!(ok("size=0").size, Some(0));
        assert_eq!(ok("BODY=8BITMIME").body, Some(Body::EightBitMime));
        assert_eq!(ok("body=7bit").body, Some(Body::SevenBit));
        assert!(ok("SMTPUTF8").smtputf8);
        assert_eq!(ok("AUTH=<>").auth, Some(None));
        assert_eq!(ok("AUTH=joe+40example.org").auth, Some(Some("joe@example.org".into())));
        assert_eq!(ok("SIZE=18446744073709551615").size, Some(u64::MAX));
        for (s, code) in [
            ("SIZE=18446744073709551616", 501),
            ("SIZE=-1", 501),
            ("SIZE=1e9", 501),
            ("SIZE=", 501),
            ("SIZE", 501),
            ("SIZE=1 SIZE=2", 501),
            ("SIZE=000000000000000000001", 501),
            ("BODY=BINARYMIME", 555),
            ("SMTPUTF8=yes", 501),
            ("RET=FULL", 555),
            ("X-FOO", 555),
            ("AUTH=a+0Db", 501),
            ("AUTH=a+0D+0Ab", 501),
            ("AUTH=a+00", 501),
            ("AUTH=a+4", 501),
            ("AUTH=a+zz", 501),
        ] {
            assert_eq!(parse_mail_params(s).unwrap_err().code, code, "{s}");
        }
    }
}
