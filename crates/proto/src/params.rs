//! ESMTP parameters of MAIL FROM and RCPT TO (RFC 5321 §4.1.2 `Mail-parameters`, `Rcpt-parameters`):
//! SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), AUTH (RFC 4954 §5), and the DSN parameters of
//! RFC 3461 (RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT), with xtext (RFC 3461 §4) and the
//! utf-8-addr-xtext of RFC 6533 §3.

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

/// RFC 3461 §4: the DSN parameters' keywords.
const RET: &str = "RET";
const ENVID: &str = "ENVID";
const NOTIFY: &str = "NOTIFY";
const ORCPT: &str = "ORCPT";

/// RFC 3461 §4.4: the ENVID value (as sent, xtext) is at most 100 characters.
pub const MAX_ENVID_LEN: usize = 100;
/// RFC 3461 §4.2: the ORCPT value (address type, `;` and xtext) is at most 500 characters.
pub const MAX_ORCPT_LEN: usize = 500;

/// RFC 3461 §4.3 `RET=`: return the full message or only its headers in a failure DSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    /// `FULL` or `HDRS`, case-insensitive.
    pub fn parse(s: &str) -> Option<Ret> {
        if s.eq_ignore_ascii_case("FULL") {
            Some(Ret::Full)
        } else if s.eq_ignore_ascii_case("HDRS") {
            Some(Ret::Hdrs)
        } else {
            None
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        })
    }
}

/// RFC 3461 §4.1 `NOTIFY=`: which DSNs the sender wants for a recipient. All three false is `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify { success: false, failure: false, delay: false };
    /// What an MTA does when NOTIFY is absent (RFC 3461 §4.1): failures and delays, not successes.
    pub const DEFAULT: Notify = Notify { success: false, failure: true, delay: true };

    pub fn is_never(&self) -> bool {
        *self == Notify::NEVER
    }

    /// `NEVER`, or a comma-separated list of SUCCESS, FAILURE, DELAY (each once), case-insensitive.
    pub fn parse(s: &str) -> Option<Notify> {
        if s.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::NEVER);
        }
        let mut n = Notify::NEVER;
        for word in s.split(',') {
            let slot = if word.eq_ignore_ascii_case("SUCCESS") {
                &mut n.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut n.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut n.delay
            } else {
                return None; // NEVER in a list, an empty item, or an unknown word
            };
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        Some(n)
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let words = [(self.success, "SUCCESS"), (self.failure, "FAILURE"), (self.delay, "DELAY")];
        let list: Vec<&str> = words.iter().filter(|(on, _)| *on).map(|(_, w)| *w).collect();
        f.write_str(&list.join(","))
    }
}

/// The address type of an ORCPT (RFC 3461 §4.2, the IANA "Address Types" registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrType {
    /// `rfc822`: an RFC 5322 address, xtext-encoded.
    Rfc822,
    /// `utf-8` (RFC 6533 §3): a UTF-8 address, non-ASCII as `\x{HEX}` (or raw under SMTPUTF8).
    Utf8,
    /// Another registered type, as given (an atom); its value is plain xtext.
    Other(String),
}

impl AddrType {
    fn parse(s: &str) -> Option<AddrType> {
        if s.eq_ignore_ascii_case("rfc822") {
            Some(AddrType::Rfc822)
        } else if s.eq_ignore_ascii_case("utf-8") {
            Some(AddrType::Utf8)
        } else if !s.is_empty() && s.bytes().all(is_atext) {
            Some(AddrType::Other(s.to_owned()))
        } else {
            None
        }
    }
}

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrType::Rfc822 => "rfc822",
            AddrType::Utf8 => "utf-8",
            AddrType::Other(s) => s,
        })
    }
}

/// RFC 5322 §3.2.3 atext (ASCII part): what an atom (the address type) is made of.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// RFC 3461 §4.2 `ORCPT=addr-type;xtext`: the recipient as the sender first gave it, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    pub addr_type: AddrType,
    /// The decoded address (no xtext or `\x{}` escapes left); never holds control characters.
    pub address: String,
}

impl Orcpt {
    /// Reads an ORCPT value: `rfc822;bob+40example.org`, `utf-8;j\x{F6}ran@example.org`.
    pub fn parse(value: &str) -> Option<Orcpt> {
        if value.len() > MAX_ORCPT_LEN {
            return None;
        }
        let (t, text) = value.split_once(';')?;
        let addr_type = AddrType::parse(t)?;
        let address = match addr_type {
            AddrType::Utf8 => decode_utf8_addr(text)?,
            _ => decode_xtext(text)?,
        };
        if address.is_empty() {
            return None;
        }
        let orcpt = Orcpt { addr_type, address };
        // Raw UTF-8 (unitext) is longer once escaped: what we would pass on must fit the limit too.
        if orcpt.to_string().len() > MAX_ORCPT_LEN {
            return None;
        }
        Some(orcpt)
    }
}

/// The wire form `type;value`, what [`Orcpt::parse`] reads back. An `utf-8` address is written as
/// utf-8-addr-xtext (ASCII only), so it needs no SMTPUTF8 on the next hop.
impl fmt::Display for Orcpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr_type {
            AddrType::Utf8 => write!(f, "{};{}", self.addr_type, encode_utf8_addr(&self.address)),
            _ => write!(f, "{};{}", self.addr_type, encode_xtext(&self.address)),
        }
    }
}

/// The parameters of one RCPT command (RFC 3461 §4.1, §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `None`: NOTIFY absent (the default of [`Notify::DEFAULT`] applies).
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

impl RcptParams {
    /// True when a DSN parameter is set.
    pub fn has_dsn(&self) -> bool {
        self.notify.is_some() || self.orcpt.is_some()
    }

    /// What the sender asked for, with the default applied.
    pub fn effective_notify(&self) -> Notify {
        self.notify.unwrap_or(Notify::DEFAULT)
    }
}

/// `NOTIFY=.. ORCPT=..`, in that order; empty when none is set.
impl fmt::Display for RcptParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        if let Some(n) = self.notify {
            items.push(format!("{NOTIFY}={n}"));
        }
        if let Some(o) = &self.orcpt {
            items.push(format!("{ORCPT}={o}"));
        }
        f.write_str(&items.join(" "))
    }
}

/// Parses the text after the forward path of RCPT TO.
pub fn parse_rcpt_params(rest: &str) -> Result<RcptParams, Reply> {
    let mut p = RcptParams::default();
    for (key, value) in items(rest) {
        if key.eq_ignore_ascii_case(NOTIFY) {
            if p.notify.is_some() {
                return Err(bad("Duplicate NOTIFY parameter"));
            }
            p.notify = Some(Notify::parse(value.unwrap_or("")).ok_or_else(|| malformed("Bad NOTIFY value"))?);
        } else if key.eq_ignore_ascii_case(ORCPT) {
            if p.orcpt.is_some() {
                return Err(bad("Duplicate ORCPT parameter"));
            }
            p.orcpt = Some(Orcpt::parse(value.unwrap_or("")).ok_or_else(|| malformed("Bad ORCPT value"))?);
        } else {
            return Err(Reply::new(555, Enhanced(5, 5, 4), "Unsupported RCPT parameter"));
        }
    }
    Ok(p)
}

/// The parameters of one MAIL command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    /// `AUTH=` decoded from xtext; `Some(None)` is `AUTH=<>`.
    pub auth: Option<Option<String>>,
    /// RFC 3461 §4.3 `RET=`: how much of the message a failure DSN returns.
    pub ret: Option<Ret>,
    /// RFC 3461 §4.4 `ENVID=`, decoded from xtext: printable US-ASCII, echoed in DSNs.
    pub envid: Option<String>,
}

impl MailParams {
    /// True when a DSN parameter (RET, ENVID) is set: only allowed when DSN is offered.
    pub fn has_dsn(&self) -> bool {
        self.ret.is_some() || self.envid.is_some()
    }
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
        if let Some(ret) = self.ret {
            items.push(format!("{RET}={ret}"));
        }
        if let Some(envid) = &self.envid {
            items.push(format!("{ENVID}={}", encode_xtext(envid)));
        }
        f.write_str(&items.join(" "))
    }
}

fn bad(text: &'static str) -> Reply {
    Reply::new(501, Enhanced(5, 5, 4), text)
}

/// RFC 3461 §4: a DSN parameter with a bad value is refused like an unknown one, 555 5.5.4.
fn malformed(text: &'static str) -> Reply {
    Reply::new(555, Enhanced(5, 5, 4), text)
}

fn unknown() -> Reply {
    Reply::new(555, Enhanced(5, 5, 4), "Unsupported MAIL parameter")
}

/// Splits the text after the path into `keyword[=value]` items.
fn items(rest: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    rest.split(' ').filter(|s| !s.is_empty()).map(|item| match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    })
}

/// Parses the text after the path: space-separated `keyword[=value]` items. DSN parameters are parsed
/// whatever the server offers; the session refuses them when DSN is not offered.
pub fn parse_mail_params(rest: &str) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    for (key, value) in items(rest) {
        let is = |k: &str| key.eq_ignore_ascii_case(k);
        if is(keyword::SIZE) {
            parse_size(&mut p, value)?;
        } else if is(BODY) {
            parse_body(&mut p, value)?;
        } else if is(keyword::SMTPUTF8) {
            if value.is_some() {
                return Err(bad("SMTPUTF8 takes no value"));
            }
            p.smtputf8 = true;
        } else if is(keyword::AUTH) {
            parse_auth(&mut p, value)?;
        } else if is(RET) {
            if p.ret.is_some() {
                return Err(bad("Duplicate RET parameter"));
            }
            p.ret = Some(Ret::parse(value.unwrap_or("")).ok_or_else(|| malformed("Bad RET value"))?);
        } else if is(ENVID) {
            if p.envid.is_some() {
                return Err(bad("Duplicate ENVID parameter"));
            }
            p.envid = Some(parse_envid(value.unwrap_or(""))?);
        } else {
            return Err(unknown());
        }
    }
    Ok(p)
}

fn parse_size(p: &mut MailParams, value: Option<&str>) -> Result<(), Reply> {
    let v = value.ok_or_else(|| bad("SIZE needs a value"))?;
    if p.size.is_some() {
        return Err(bad("Duplicate SIZE parameter"));
    }
    if v.is_empty() || v.len() > MAX_SIZE_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Bad SIZE value"));
    }
    p.size = Some(v.parse().map_err(|_| bad("Bad SIZE value"))?);
    Ok(())
}

fn parse_body(p: &mut MailParams, value: Option<&str>) -> Result<(), Reply> {
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
    Ok(())
}

fn parse_auth(p: &mut MailParams, value: Option<&str>) -> Result<(), Reply> {
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
    Ok(())
}

/// RFC 3461 §4.4: ENVID is xtext of at most [`MAX_ENVID_LEN`] characters, whose decoded value is printable
/// US-ASCII (it goes into the Original-Envelope-Id field of DSNs).
fn parse_envid(v: &str) -> Result<String, Reply> {
    if v.is_empty() || v.len() > MAX_ENVID_LEN {
        return Err(malformed("Bad ENVID value"));
    }
    let envid = decode_xtext(v).ok_or_else(|| malformed("Bad xtext in ENVID"))?;
    if !envid.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(malformed("ENVID must be printable US-ASCII"));
    }
    Ok(envid)
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

/// RFC 6533 §3 utf-8-addr-xtext / utf-8-addr-unitext: QCHAR (printable ASCII but `+`, `=`, `\`), raw
/// non-ASCII UTF-8 (unitext, under SMTPUTF8) and `\x{HEX}` escapes of 2 to 6 hex digits.
fn decode_utf8_addr(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("\\x{") {
            let end = tail.find('}')?;
            let hex = &tail[..end];
            if !(2..=6).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
            rest = &tail[end + 1..];
            continue;
        }
        let qchar = c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\');
        if !qchar && c.is_ascii() {
            return None;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if out.chars().any(|c| c.is_control()) {
        return None;
    }
    Some(out)
}

/// RFC 6533 §3 utf-8-addr-xtext: QCHAR as is, everything else as `\x{HEX}` (upper case).
fn encode_utf8_addr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:02X}}}", c as u32));
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
        assert_eq!(ok("ret=full").ret, Some(Ret::Full));
        assert_eq!(ok("RET=HDRS").ret, Some(Ret::Hdrs));
        assert_eq!(ok("ENVID=a+20b+2Bc").envid.as_deref(), Some("a b+c"));
        assert!(ok("RET=HDRS").has_dsn() && !ok("SIZE=1 SMTPUTF8").has_dsn());
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
            ("RET=FOO", 555),
            ("RET=", 555),
            ("RET=FULL ret=hdrs", 501),
            ("ENVID=", 555),
            ("ENVID=a+7Fb", 555),
            ("ENVID=a+C3+A4", 555),
            ("ENVID=a ENVID=b", 501),
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

    #[test]
    fn rcpt_params_table() {
        let ok = |s: &str| parse_rcpt_params(s).unwrap();
        assert_eq!(ok(""), RcptParams::default());
        assert_eq!(ok("NOTIFY=NEVER").notify, Some(Notify::NEVER));
        assert_eq!(ok("notify=delay,success").notify, Some(Notify { success: true, failure: false, delay: true }));
        assert_eq!(ok("NOTIFY=FAILURE").effective_notify(), Notify { success: false, failure: true, delay: false });
        assert_eq!(ok("").effective_notify(), Notify::DEFAULT);
        let o = |s: &str| ok(s).orcpt.unwrap();
        assert_eq!(
            o("ORCPT=rfc822;bob+40x.example"),
            Orcpt { addr_type: AddrType::Rfc822, address: "bob@x.example".into() }
        );
        assert_eq!(o("ORCPT=RFC822;b@x").addr_type, AddrType::Rfc822);
        assert_eq!(o("ORCPT=UTF-8;j\\x{F6}ran@x").address, "jöran@x");
        // RFC 6533 utf-8-addr-unitext: raw UTF-8 (the client uses SMTPUTF8).
        assert_eq!(o("ORCPT=utf-8;jöran@x").address, "jöran@x");
        assert_eq!(o("ORCPT=utf-8;\\x{1F600}@x").address, "\u{1F600}@x");
        assert_eq!(o("ORCPT=x400;a+3Bb").addr_type, AddrType::Other("x400".into()));
        for (s, code) in [
            ("NOTIFY", 555),
            ("NOTIFY=", 555),
            ("NOTIFY=NEVER,DELAY", 555),
            ("NOTIFY=DELAY,DELAY", 555),
            ("NOTIFY=SOMETIMES", 555),
            ("NOTIFY=,FAILURE", 555),
            ("NOTIFY=NEVER notify=NEVER", 501),
            ("ORCPT", 555),
            ("ORCPT=rfc822", 555),
            ("ORCPT=;a@b", 555),
            ("ORCPT=rfc 822;a@b", 555),
            ("ORCPT=rfc822;a+0Db", 555),
            ("ORCPT=utf-8;a+b", 555),
            ("ORCPT=utf-8;a\\x{D800}b", 555),
            ("ORCPT=utf-8;a\\x{0}b", 555),
            ("ORCPT=utf-8;a\\x{1234567}b", 555),
            ("ORCPT=utf-8;a\\x{85}b", 555),
            ("ORCPT=utf-8;a\\x{41", 555),
            ("ORCPT=rfc822;a ORCPT=rfc822;b", 501),
            ("SIZE=1", 555),
        ] {
            assert_eq!(parse_rcpt_params(s).unwrap_err().code, code, "{s}");
        }
        let long = format!("ORCPT=rfc822;{}", "a".repeat(MAX_ORCPT_LEN));
        assert_eq!(parse_rcpt_params(&long).unwrap_err().code, 555);
        // 100 raw "ö" are 206 octets here but 606 as utf-8-addr-xtext, which is what goes on: refused.
        let unitext = format!("ORCPT=utf-8;{}", "ö".repeat(100));
        assert_eq!(parse_rcpt_params(&unitext).unwrap_err().code, 555);
        let fits = format!("ORCPT=utf-8;{}", "ö".repeat(82));
        assert_eq!(o(&fits).to_string().len(), 498);
    }
}
