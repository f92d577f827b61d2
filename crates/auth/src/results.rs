//! The `Authentication-Results:` header field (RFC 8601): the writer for the one mailroom adds, and the
//! recogniser for incoming ones that claim mailroom's authserv-id (removed before storing, §5).
//!
//! Written form: the authserv-id, then one `method=result [reason="..."] ptype.property=value ...` per
//! line, each continuation line starting with a tab, lines kept under [`FOLD_AT`] octets where the
//! properties allow. Values that are not RFC 2045 tokens (or, for address-like properties, `local@domain`)
//! are written as quoted strings with `\` and `"` escaped; bytes outside printable US-ASCII become `?`.

use std::borrow::Cow;

/// The header field's name.
pub const FIELD: &str = "Authentication-Results";
/// Lines are folded before this length where possible (RFC 5322 §2.1.1: SHOULD NOT exceed 78 characters).
pub const FOLD_AT: usize = 78;

/// One method's result (RFC 8601 §2.2 `resinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResult {
    /// `spf`, `dkim`, `dmarc`, `arc`.
    pub method: &'static str,
    /// The result keyword the method's RFC names (`pass`, `fail`, `softfail`, `temperror`, ...).
    pub result: &'static str,
    /// A free-text reason, written as `reason="..."`.
    pub reason: Option<String>,
    /// `(ptype.property, value)`, e.g. `("smtp.mailfrom", "example.org")`.
    pub properties: Vec<(&'static str, String)>,
}

impl MethodResult {
    pub fn new(method: &'static str, result: &'static str) -> MethodResult {
        MethodResult { method, result, reason: None, properties: Vec::new() }
    }

    pub fn with(mut self, property: &'static str, value: impl Into<String>) -> MethodResult {
        self.properties.push((property, value.into()));
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> MethodResult {
        self.reason = Some(reason.into());
        self
    }
}

/// The whole field: who checked, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    pub results: Vec<MethodResult>,
}

impl AuthResults {
    /// The field with its name, folded, lines ending with `newline` (`"\r\n"` on the wire, `"\n"` in a
    /// Maildir file), the last one included.
    pub fn to_field(&self, newline: &str) -> String {
        let mut out = format!("{FIELD}: {};", value(&self.authserv_id));
        if self.results.is_empty() {
            // RFC 8601 §2.2: no method was applied.
            out.push_str(" none");
        }
        let last = self.results.len().saturating_sub(1);
        for (i, r) in self.results.iter().enumerate() {
            let mut words = vec![format!("{}={}", r.method, r.result)];
            if let Some(reason) = &r.reason {
                words.push(format!("reason={}", quoted(reason)));
            }
            for (p, v) in &r.properties {
                words.push(format!("{p}={}", property_value(v)));
            }
            if i < last {
                if let Some(w) = words.last_mut() {
                    w.push(';');
                }
            }
            out.push_str(newline);
            out.push('\t');
            let mut line_len = 1;
            for (j, w) in words.iter().enumerate() {
                if j > 0 {
                    if line_len + 1 + w.len() > FOLD_AT {
                        out.push_str(newline);
                        out.push('\t');
                        line_len = 1;
                    } else {
                        out.push(' ');
                        line_len += 1;
                    }
                }
                out.push_str(w);
                line_len += w.len();
            }
        }
        out.push_str(newline);
        out
    }
}

/// RFC 2045 `tspecials` and space: a value holding any of them (or a control byte) must be quoted.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

fn printable(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect())
    }
}

/// A `value` (RFC 8601 §2.2): a token as is, anything else quoted.
fn value(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(is_token_byte) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// A `pvalue`: also `[local-part] "@" domain` unquoted when both halves are tokens (RFC 8601 §2.2).
fn property_value(s: &str) -> String {
    if let Some((local, domain)) = s.rsplit_once('@') {
        let ok = |p: &str| p.bytes().all(is_token_byte);
        if !domain.is_empty() && ok(local) && ok(domain) {
            return s.to_string();
        }
    }
    value(s)
}

/// An RFC 5322 quoted-string: `\` and `"` escaped, everything else printable ASCII.
fn quoted(s: &str) -> String {
    let s = printable(s);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// True when `field` (one whole header field, name and folded value, any line endings) is an
/// Authentication-Results field whose authserv-id is `ours` (compared case-insensitively: it is a host
/// name). Comments and folding whitespace before the id are skipped; a quoted id is unquoted.
pub fn is_ours(field: &[u8], ours: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else { return false };
    let name = field[..colon].trim_ascii_end();
    if !name.eq_ignore_ascii_case(FIELD.as_bytes()) {
        return false;
    }
    match authserv_id(&field[colon + 1..]) {
        Some(id) => id.eq_ignore_ascii_case(ours.as_bytes()),
        None => false,
    }
}

/// The authserv-id at the start of a field value: after CFWS, a token up to whitespace, `;` or `(`, or
/// a quoted string.
fn authserv_id(v: &[u8]) -> Option<Cow<'_, [u8]>> {
    let i = skip_cfws(v, 0);
    if v.get(i) == Some(&b'"') {
        let mut out = Vec::new();
        let mut j = i + 1;
        while j < v.len() {
            match v[j] {
                b'\\' if j + 1 < v.len() => {
                    out.push(v[j + 1]);
                    j += 2;
                }
                b'"' => return Some(Cow::Owned(out)),
                b => {
                    out.push(b);
                    j += 1;
                }
            }
        }
        return None;
    }
    let end = v[i..].iter().position(|&b| b.is_ascii_whitespace() || b == b';' || b == b'(').map_or(v.len(), |n| i + n);
    (end > i).then(|| Cow::Borrowed(&v[i..end]))
}

/// Skips whitespace (folding included) and comments (nested, with quoted pairs), bounded by the input.
fn skip_cfws(v: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < v.len() {
        match v[i] {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b if b.is_ascii_whitespace() => {}
            _ if depth > 0 => {}
            _ => return i,
        }
        i += 1;
    }
    i
}

/// The header fields of `section` (a header section, CRLF or LF line endings, with or without its
/// terminating empty line) without those [`is_ours`] says are ours; how many were dropped.
pub fn strip_ours<'a>(section: &'a [u8], ours: &str) -> (Cow<'a, [u8]>, usize) {
    let fields = split_fields(section);
    let dropped = fields.iter().filter(|f| is_ours(f, ours)).count();
    if dropped == 0 {
        return (Cow::Borrowed(section), 0);
    }
    let mut out = Vec::with_capacity(section.len());
    for f in fields {
        if !is_ours(f, ours) {
            out.extend_from_slice(f);
        }
    }
    (Cow::Owned(out), dropped)
}

/// Cuts a header section into its fields: a field is a line and the continuation lines (starting with
/// a space or tab) after it, each with its line ending. What is left after the last field (the empty
/// line) is one piece of its own.
fn split_fields(section: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < section.len() {
        let line_end = section[i..].iter().position(|&b| b == b'\n').map_or(section.len(), |n| i + n + 1);
        let next_is_continuation = matches!(section.get(line_end), Some(b' ' | b'\t'));
        let is_empty_line = matches!(&section[i..line_end], b"\r\n" | b"\n");
        if is_empty_line || !next_is_continuation {
            fields.push(&section[start..line_end]);
            start = line_end;
        }
        i = line_end;
    }
    if start < section.len() {
        fields.push(&section[start..]);
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthResults {
        AuthResults {
            authserv_id: "mx.example.net".into(),
            results: vec![
                MethodResult::new("spf", "pass").with("smtp.mailfrom", "example.org"),
                MethodResult::new("dkim", "pass")
                    .with("header.d", "example.org")
                    .with("header.s", "s1")
                    .with("header.b", "ab/c+d=e"),
                MethodResult::new("dmarc", "pass").with("header.from", "example.org"),
                MethodResult::new("arc", "none"),
            ],
        }
    }

    #[test]
    fn writes_one_resinfo_per_line_with_quoted_values() {
        let f = sample().to_field("\r\n");
        assert_eq!(
            f,
            "Authentication-Results: mx.example.net;\r\n\tspf=pass smtp.mailfrom=example.org;\r\n\t\
             dkim=pass header.d=example.org header.s=s1 header.b=\"ab/c+d=e\";\r\n\t\
             dmarc=pass header.from=example.org;\r\n\tarc=none\r\n"
        );
    }

    #[test]
    fn reasons_are_escaped_and_long_lines_folded() {
        let mut r = sample();
        r.results[1].reason = Some("bad \"sig\" \\ \u{7}é".into());
        r.results[1].properties.push(("header.i", "x".repeat(70)));
        let f = r.to_field("\n");
        assert!(f.contains("reason=\"bad \\\"sig\\\" \\\\ ??\""), "{f}");
        assert!(f.lines().all(|l| l.len() <= FOLD_AT || !l.trim_start().contains(' ')), "{f}");
        assert!(f.lines().skip(1).all(|l| l.starts_with('\t')), "{f}");
    }

    #[test]
    fn no_results_is_none() {
        let r = AuthResults { authserv_id: "h".into(), results: vec![] };
        assert_eq!(r.to_field("\n"), "Authentication-Results: h; none\n");
    }

    #[test]
    fn recognises_our_id_in_every_spelling() {
        let ours = "mx.example.net";
        for f in [
            &b"Authentication-Results: mx.example.net; dkim=pass\r\n"[..],
            b"authentication-results:MX.Example.NET;dkim=pass\r\n",
            b"Authentication-Results : (comment (nested)) mx.example.net 1; spf=pass\r\n",
            b"Authentication-Results:\r\n\tmx.example.net;\r\n\tdkim=pass\r\n",
            b"Authentication-Results: \"mx.example.net\"; none\r\n",
        ] {
            assert!(is_ours(f, ours), "{}", String::from_utf8_lossy(f));
        }
        for f in [
            &b"Authentication-Results: mx.example.net.evil; dkim=pass\r\n"[..],
            b"Authentication-Results: other.example; dkim=pass header.d=mx.example.net\r\n",
            b"X-Authentication-Results: mx.example.net; dkim=pass\r\n",
            b"Authentication-Results: (mx.example.net) other; dkim=pass\r\n",
            b"Authentication-Results:",
        ] {
            assert!(!is_ours(f, ours), "{}", String::from_utf8_lossy(f));
        }
    }

    #[test]
    fn strips_only_our_fields_with_their_continuation_lines() {
        let section = b"Received: from a\r\n\tby b\r\nAuthentication-Results: mx.example.net;\r\n\tdkim=pass\r\n\
Subject: hi\r\nAuthentication-Results: other.example; spf=fail\r\nauthentication-results: MX.EXAMPLE.NET; spf=pass\r\n\r\n";
        let (out, n) = strip_ours(section, "mx.example.net");
        assert_eq!(n, 2);
        assert_eq!(
            &*out,
            &b"Received: from a\r\n\tby b\r\nSubject: hi\r\nAuthentication-Results: other.example; spf=fail\r\n\r\n"[..]
        );
        let (same, n) = strip_ours(b"Subject: x\r\n\r\n", "mx.example.net");
        assert_eq!((n, matches!(same, Cow::Borrowed(_))), (0, true));
    }
}
