//! The message as `mailroom sendmail` receives it on stdin: find the header section (the splitting is
//! [`mailroom_client::header`]'s, so the fuzz target covers it), read the recipients for `-t`, drop
//! Bcc, and add the From, Date and Message-ID that RFC 5322 §3.6 requires when missing.
//! The body is left as it came; line ends become CRLF on the way out (the client session does that).

use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::Header;
use mailroom_client::header::{self, Field, HeaderError};
use mailroom_proto::ReversePath;

use crate::send::util::{id_domain, make_message_id};

/// sendmail without `-i`: a line holding only `.` ends the message.
pub fn cut_at_lone_dot(input: &mut Vec<u8>) {
    let mut start = 0;
    while start < input.len() {
        let end = input[start..].iter().position(|&b| b == b'\n').map(|p| start + p + 1).unwrap_or(input.len());
        let line = &input[start..end];
        if line == b".\n" || line == b".\r\n" || line == b"." {
            input.truncate(start);
            return;
        }
        start = end;
    }
}

/// A message split at the end of its header section.
#[derive(Debug)]
pub struct Incoming {
    /// Header fields kept (each with its folded lines and its line end), Bcc removed.
    fields: Vec<Vec<u8>>,
    /// The blank line and the body; or the body alone when the header ended at a non-header line.
    rest: Vec<u8>,
    /// The header section ended at a line that is not a field: the empty line must be added.
    needs_separator: bool,
    has_from: bool,
    has_date: bool,
    has_message_id: bool,
    /// The From header's first address.
    pub from: Option<String>,
    /// The addresses of every To, Cc and Bcc field, for `-t`.
    pub recipients: Vec<String>,
}

/// The addresses of one field, parsed by mail-parser as a tiny message of that field alone (so it
/// unfolds it and handles groups and encoded names). The name is written as `name:` whatever white space
/// stood before the colon (RFC 5322 §4.5.3), so the obsolete syntax parses like the current one.
fn addresses(name: &str, field: &Field<'_>) -> Vec<String> {
    let mut mini = format!("{name}:").into_bytes();
    mini.extend_from_slice(field.value());
    if !mini.ends_with(b"\n") {
        mini.extend_from_slice(b"\r\n");
    }
    mini.extend_from_slice(b"\r\n");
    let Some(m) = mail_parser::MessageParser::default().parse(&mini) else { return vec![] };
    let list = match name {
        "to" => m.to(),
        "cc" => m.cc(),
        "bcc" => m.bcc(),
        "from" => m.from(),
        _ => None,
    };
    list.map(|l| l.iter().filter_map(|a| a.address().map(str::to_owned)).collect()).unwrap_or_default()
}

impl Incoming {
    /// Splits the message at the end of its header section ([`mailroom_client::header`]: obsolete field
    /// syntax understood, a leading mbox `From ` line skipped), takes the recipients and drops Bcc.
    /// A message that starts with a continuation line is an error.
    pub fn parse(input: &[u8]) -> Result<Incoming, HeaderError> {
        let section = header::split(input)?;
        let mut out = Incoming {
            fields: Vec::new(),
            rest: input[section.body_start..].to_vec(),
            needs_separator: !section.ended_by_empty_line && section.body_start < input.len(),
            has_from: false,
            has_date: false,
            has_message_id: false,
            from: None,
            recipients: Vec::new(),
        };
        for field in &section.fields {
            let name = String::from_utf8_lossy(field.name).to_ascii_lowercase();
            match name.as_str() {
                "to" | "cc" => out.recipients.extend(addresses(&name, field)),
                // RFC 5322 §3.6.3: Bcc recipients get the message, never the header.
                "bcc" => {
                    out.recipients.extend(addresses(&name, field));
                    continue;
                }
                "resent-bcc" => continue,
                "from" => {
                    out.has_from = true;
                    out.from = addresses("from", field).into_iter().next();
                }
                "date" => out.has_date = true,
                "message-id" => out.has_message_id = true,
                _ => {}
            }
            // Written back in the current syntax: the name, then the colon right after it.
            let mut kept = field.name.to_vec();
            kept.extend_from_slice(&field.raw[field.colon..]);
            if !kept.ends_with(b"\n") {
                kept.extend_from_slice(b"\r\n");
            }
            out.fields.push(kept);
        }
        Ok(out)
    }

    /// The message to send: the kept fields, the missing ones added, then the body.
    pub fn finish(self, sender: &ReversePath, full_name: Option<&str>) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.rest.len() + 1024);
        for f in &self.fields {
            m.extend_from_slice(f);
        }
        let sender_addr = match sender {
            ReversePath::Mailbox(a) => Some(a),
            ReversePath::Null => None,
        };
        if !self.has_from {
            if let Some(a) = sender_addr {
                m.extend_from_slice(b"From: ");
                MbAddress::new_address(full_name.map(str::to_owned), a.to_string()).write_header(&mut m, 6);
            }
        }
        if !self.has_date {
            m.extend_from_slice(b"Date: ");
            m.extend_from_slice(mail_builder::headers::date::Date::now().to_rfc822().as_bytes());
            m.extend_from_slice(b"\r\n");
        }
        if !self.has_message_id {
            let domain = sender_addr.map(id_domain).unwrap_or_else(|| "localhost".into());
            m.extend_from_slice(format!("Message-ID: <{}>\r\n", make_message_id(&domain)).as_bytes());
        }
        if self.needs_separator || self.rest.is_empty() {
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(&self.rest);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_proto::Address;

    fn sender() -> ReversePath {
        ReversePath::Mailbox(Address::parse("me@example.org").unwrap())
    }

    #[test]
    fn extracts_recipients_and_drops_bcc() {
        let m = b"To: a@x, \"B\" <b@y>\nCc: c@z\nBcc: d@w,\n  e@v\nSubject: s\n\nbody\nBcc: not a header\n";
        let inc = Incoming::parse(m).unwrap();
        assert_eq!(inc.recipients, vec!["a@x", "b@y", "c@z", "d@w", "e@v"]);
        let out = String::from_utf8(inc.finish(&sender(), None)).unwrap();
        assert!(!out.contains("e@v"), "{out}");
        assert!(out.contains("\nBcc: not a header"), "the body is untouched: {out}");
        assert!(out.contains("From: <me@example.org>") && out.contains("Date: ") && out.contains("Message-ID: <"));
        assert!(out.contains("Subject: s\nFrom:"), "{out}");
    }

    #[test]
    fn keeps_what_is_there() {
        let m = b"From: Me <me@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nhi\r\n";
        let inc = Incoming::parse(m).unwrap();
        assert_eq!(inc.from.as_deref(), Some("me@example.org"));
        assert_eq!(inc.finish(&sender(), None), m.to_vec());
    }

    #[test]
    fn body_without_header() {
        let inc = Incoming::parse(b"just text\n").unwrap();
        let out = String::from_utf8(inc.finish(&sender(), Some("Jöran"))).unwrap();
        assert!(out.starts_with("From: "), "{out}");
        assert!(out.contains("=?"), "non-ASCII names are encoded: {out}");
        assert!(out.ends_with("\r\n\r\njust text\n"), "{out}");
    }

    #[test]
    fn obsolete_syntax_is_written_back_in_the_current_one() {
        let inc = Incoming::parse(b"From 1 Mon\nSubject : s\nBcc\t: c@x\nTo : a@x\n\nbody\n").unwrap();
        assert_eq!(inc.recipients, vec!["c@x", "a@x"]);
        let out = String::from_utf8(inc.finish(&sender(), None)).unwrap();
        assert!(out.starts_with("Subject: s\nTo: a@x\n"), "{out}");
        assert!(!out.contains("c@x") && out.ends_with("\n\nbody\n"), "{out}");
        assert!(Incoming::parse(b"\tSubject: s\n\nbody\n").is_err());
    }

    #[test]
    fn lone_dot() {
        let mut m = b"a\n.\nb\n".to_vec();
        cut_at_lone_dot(&mut m);
        assert_eq!(m, b"a\n");
        let mut m = b"a\n..\nb".to_vec();
        cut_at_lone_dot(&mut m);
        assert_eq!(m, b"a\n..\nb");
    }
}
