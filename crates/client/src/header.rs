//! The header section of a message as a program hands it to a sender (`sendmail` reads it on stdin):
//! where the section ends and which fields it holds, by the rules of RFC 5322. No I/O and no copies:
//! the fields are slices of the input, so `mailroom sendmail` can drop Bcc and keep the rest byte for
//! byte, and the fuzz target `header` can check every invariant against the input.
//!
//! - A field starts with its name, `1*ftext` (RFC 5322 §3.6.8: printable ASCII but the colon), then
//!   the colon; the obsolete syntax of §4.5.3 (`obs-optional`, and every `obs-` field) allows white
//!   space between the name and the colon (`Bcc : carol@example.org`, `Bcc<TAB>:`), which must be
//!   understood, or such a field would end the header section and land in the body.
//! - A line that starts with a space or a tab continues the field before it (folding, §2.2.3).
//! - The section ends at the first empty line (§2.1), or at the first line that is neither a field nor
//!   a continuation (then the body begins without its empty line; the sender adds it).
//! - A first line `From <sender> <date>` is the separator of an mbox file (`git format-patch` output,
//!   `cat x.patch | sendmail -t`), not a field: it is skipped, as Postfix and Exim do.
//! - A message whose first line is a continuation line has no field to continue: an error, rather
//!   than a guess at what it meant.

use std::fmt;

/// One header field: its name as written (without the white space before the colon) and the whole
/// field as it came, folded lines and line end included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, `1*ftext`.
    pub name: &'a [u8],
    /// The field from the first octet of its name to the end of its last line (line end included,
    /// when the input had one).
    pub raw: &'a [u8],
    /// Where the colon is in `raw`.
    pub colon: usize,
}

impl<'a> Field<'a> {
    /// True when the field's name is `name`, compared case-insensitively (RFC 5322 §1.2.2).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// Everything after the colon: the unstructured or structured body, folded lines and line end included.
    pub fn value(&self) -> &'a [u8] {
        &self.raw[self.colon + 1..]
    }

    /// True when the field uses the obsolete syntax of RFC 5322 §4.5.3: white space before the colon.
    pub fn is_obsolete_syntax(&self) -> bool {
        self.colon != self.name.len()
    }
}

/// The header section of a message: its fields, and where the rest (the empty line and the body, or the
/// body alone) begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSection<'a> {
    /// The fields in order.
    pub fields: Vec<Field<'a>>,
    /// Where the rest of the message begins in the input.
    pub body_start: usize,
    /// True when the section ended at an empty line (which is then at `body_start`); false when it ended
    /// at a line that is not a field, or at the end of the input.
    pub ended_by_empty_line: bool,
    /// The length of the mbox `From ` line that was skipped at the start, 0 when there was none.
    pub skipped: usize,
}

/// Why a header section could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The first line starts with white space: a continuation of no field (RFC 5322 §2.2.3).
    StartsWithContinuation,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::StartsWithContinuation => f.write_str(
                "the message starts with a line beginning with a space or tab, a continuation of no \
                 header field (RFC 5322 §2.2.3); the first line must be a header field or empty",
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// `ftext` of RFC 5322 §3.6.8: printable US-ASCII but the colon.
fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// The field name at the start of `line` and the position of its colon: `1*ftext *WSP ":"` (RFC 5322
/// §3.6.8, with the white space of the obsolete syntax, §4.5.3). `None` when the line is not a field.
pub fn field_name(line: &[u8]) -> Option<(&[u8], usize)> {
    let name_len = line.iter().position(|&b| !is_ftext(b)).unwrap_or(line.len());
    if name_len == 0 {
        return None;
    }
    let colon = name_len + line[name_len..].iter().position(|&b| b != b' ' && b != b'\t')?;
    (line[colon] == b':').then_some((&line[..name_len], colon))
}

/// The line starting at `pos`, with its line end (LF; a CR before it is part of the line).
fn line_at(input: &[u8], pos: usize) -> &[u8] {
    let end = input[pos..].iter().position(|&b| b == b'\n').map_or(input.len(), |p| pos + p + 1);
    &input[pos..end]
}

fn is_empty_line(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

/// The length of a first line that is an mbox separator (`From ` and not a `From :` field), else 0.
fn mbox_separator(input: &[u8]) -> usize {
    let first = line_at(input, 0);
    if first.starts_with(b"From ") && field_name(first).is_none() {
        first.len()
    } else {
        0
    }
}

/// Splits `input` into its header fields and the rest; see the module documentation for the rules.
pub fn split(input: &[u8]) -> Result<HeaderSection<'_>, HeaderError> {
    let skipped = mbox_separator(input);
    let mut fields: Vec<Field<'_>> = Vec::new();
    // The field being read: where it starts, and its name and colon.
    let mut open: Option<(usize, &[u8], usize)> = None;
    let mut pos = skipped;
    let mut ended_by_empty_line = false;
    while pos < input.len() {
        let line = line_at(input, pos);
        if is_empty_line(line) {
            ended_by_empty_line = true;
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            if open.is_none() {
                return Err(HeaderError::StartsWithContinuation);
            }
            pos += line.len();
            continue;
        }
        let Some((name, colon)) = field_name(line) else { break };
        if let Some((start, name, colon)) = open.take() {
            fields.push(Field { name, raw: &input[start..pos], colon });
        }
        open = Some((pos, name, colon));
        pos += line.len();
    }
    if let Some((start, name, colon)) = open {
        fields.push(Field { name, raw: &input[start..pos], colon });
    }
    Ok(HeaderSection { fields, body_start: pos, ended_by_empty_line, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(h: &HeaderSection<'a>) -> Vec<&'a str> {
        h.fields.iter().map(|f| std::str::from_utf8(f.name).unwrap()).collect()
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name(b"Subject: x\n"), Some((&b"Subject"[..], 7)));
        assert_eq!(field_name(b"Bcc : carol@example.org\n"), Some((&b"Bcc"[..], 4)));
        assert_eq!(field_name(b"Bcc\t:x"), Some((&b"Bcc"[..], 4)));
        assert_eq!(field_name(b"X-A.B_c~!: y"), Some((&b"X-A.B_c~!"[..], 9)));
        for not in
            [&b": no name"[..], b" Subject: x", b"Sub ject: x", b"Subject x", b"Subject", b"From a@b Mon 1 12:00:00"]
        {
            assert_eq!(field_name(not), None, "{:?}", String::from_utf8_lossy(not));
        }
        assert_eq!(field_name("Süb: x".as_bytes()), None, "8-bit octets are not ftext");
    }

    #[test]
    fn bcc_in_obsolete_syntax_stays_in_the_header_section() {
        let m = b"To: a@x\nBcc : carol@example.org\nBcc\t:\n dave@example.org\nSubject: s\n\nbody\n";
        let h = split(m).unwrap();
        assert_eq!(names(&h), ["To", "Bcc", "Bcc", "Subject"]);
        assert!(h.fields[1].is("bcc") && h.fields[1].is_obsolete_syntax());
        assert_eq!(h.fields[1].value(), b" carol@example.org\n");
        assert_eq!(h.fields[2].raw, b"Bcc\t:\n dave@example.org\n");
        assert!(h.ended_by_empty_line);
        assert_eq!(&m[h.body_start..], b"\nbody\n");
    }

    #[test]
    fn an_mbox_from_line_is_skipped() {
        let m = b"From 1234abcd Mon Sep 17 00:00:00 2001\nFrom: Me <me@x>\nSubject: [PATCH] y\n\ndiff\n";
        let h = split(m).unwrap();
        assert_eq!(h.skipped, 39);
        assert_eq!(names(&h), ["From", "Subject"]);
        // `From :` is a field in the obsolete syntax, not a separator.
        let h = split(b"From : me@x\n\nbody").unwrap();
        assert_eq!((h.skipped, names(&h)), (0, vec!["From"]));
    }

    #[test]
    fn a_message_starting_with_a_continuation_line_is_an_error() {
        assert_eq!(split(b" Subject: x\n\nbody\n"), Err(HeaderError::StartsWithContinuation));
        assert_eq!(split(b"From x Mon\n\tfolded\n"), Err(HeaderError::StartsWithContinuation));
        assert!(HeaderError::StartsWithContinuation.to_string().contains("continuation"));
    }

    #[test]
    fn ends_at_a_line_that_is_not_a_field() {
        let m = b"Subject: s\r\nnot a header\r\nBcc: x@y\r\n";
        let h = split(m).unwrap();
        assert_eq!((names(&h), h.ended_by_empty_line), (vec!["Subject"], false));
        assert_eq!(&m[h.body_start..], b"not a header\r\nBcc: x@y\r\n");
        let h = split(b"Subject: no line end").unwrap();
        assert_eq!((h.fields[0].raw, h.body_start), (&b"Subject: no line end"[..], 20));
        assert_eq!(split(b"").unwrap().fields, vec![]);
    }
}
