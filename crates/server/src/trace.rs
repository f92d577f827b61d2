//! Trace headers written at delivery: `Return-Path:` (RFC 5321 §4.4), `Delivered-To:` (the recipient
//! address as given, as Postfix and Dovecot write it) and `Received:` (RFC 5321 §4.4, RFC 5322 §3.6.7),
//! with the protocol keywords of RFC 3848 and RFC 6531 §3.7.3.
//!
//! Everything here comes from values the protocol layer already validated (addresses, the HELO name,
//! both free of control characters); the HELO name is still reduced to characters that cannot end a
//! header comment, because a client chooses it.

use std::net::IpAddr;
use std::time::SystemTime;

use mailroom_proto::{ForwardPath, ReversePath};

pub struct TraceInfo<'a> {
    pub helo: &'a str,
    pub peer: IpAddr,
    pub hostname: &'a str,
    pub protocol: &'a str,
    pub id: &'a str,
    pub from: &'a ReversePath,
    pub rcpts: &'a [ForwardPath],
    /// `Delivered-To:` (the recipient address as given), written after `Return-Path:`; see
    /// `connection::delivered_to` for when there is one.
    pub delivered_to: Option<&'a str>,
    pub now: SystemTime,
}

/// Room for a typical trace block (Return-Path, Delivered-To, Received with its date), so that building
/// it takes one allocation.
const TRACE_CAPACITY: usize = 512;

/// The longest HELO name written into the `Received:` field (a domain name is at most 255 octets, RFC 1035
/// §2.3.4; the session bounds the command line anyway).
const MAX_HELO_IN_TRACE: usize = 255;

/// The header block (LF line endings, as stored) prepended to every delivered message. Written into one
/// string (no intermediate ones): it is built for every message.
pub fn trace_headers(t: &TraceInfo<'_>) -> String {
    use std::fmt::Write as _;
    let mut h = String::with_capacity(TRACE_CAPACITY);
    // Writing into a String cannot fail.
    let _ = writeln!(h, "Return-Path: {}", t.from);
    if let Some(to) = t.delivered_to {
        let _ = writeln!(h, "Delivered-To: {to}");
    }
    h.push_str("Received: from ");
    h.extend(t.helo.chars().take(MAX_HELO_IN_TRACE).map(|c| if is_comment_safe(c) { c } else { '?' }));
    let _ = write!(h, " ([{}])\n\tby {} (mailroom) with {} id {}", t.peer, t.hostname, t.protocol, t.id);
    // RFC 5321 §7.2: naming every recipient would disclose Bcc recipients; name one only when alone.
    if let [only] = t.rcpts {
        let _ = write!(h, "\n\tfor {only}");
    }
    let _ = writeln!(h, ";\n\t{}", rfc5322_date(t.now));
    h
}

/// Whether a HELO name's character may stand in the `Received:` field as it is: letters, digits and
/// the few marks of host names and address literals; anything else could end the comment or the field.
fn is_comment_safe(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
}

/// `Sat, 28 Nov 2026 14:31:46 +0000` (RFC 5322 §3.3), in UTC: proto's one definition.
pub use mailroom_proto::date::rfc5322 as rfc5322_date;

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_proto::Address;
    use std::time::UNIX_EPOCH;

    #[test]
    fn for_clause_only_with_one_recipient() {
        let a = ForwardPath::Mailbox(Address::parse("a@x.test").unwrap());
        let b = ForwardPath::Mailbox(Address::parse("b@x.test").unwrap());
        let from = ReversePath::Null;
        let mut t = TraceInfo {
            helo: "client (evil) ;x",
            peer: "127.0.0.1".parse().unwrap(),
            hostname: "mx.test",
            protocol: "ESMTP",
            id: "ID1",
            from: &from,
            rcpts: std::slice::from_ref(&a),
            delivered_to: None,
            now: UNIX_EPOCH,
        };
        let one = trace_headers(&t);
        assert_eq!(
            one,
            "Return-Path: <>\nReceived: from client??evil???x ([127.0.0.1])\n\tby mx.test (mailroom) with ESMTP id ID1\n\tfor <a@x.test>;\n\tThu, 1 Jan 1970 00:00:00 +0000\n"
        );
        let both = [a.clone(), b];
        t.rcpts = &both;
        assert!(!trace_headers(&t).contains("for "));
    }

    /// The block written in one string is the same as field by field: Delivered-To after Return-Path,
    /// and a long HELO name cut at 255 characters.
    #[test]
    fn delivered_to_and_a_long_helo() {
        let a = ForwardPath::Mailbox(Address::parse("a@x.test").unwrap());
        let from = ReversePath::Mailbox(Address::parse("s@y.test").unwrap());
        let helo = "h".repeat(300);
        let t = TraceInfo {
            helo: &helo,
            peer: "::1".parse().unwrap(),
            hostname: "mx.test",
            protocol: "ESMTPS",
            id: "ID2",
            from: &from,
            rcpts: std::slice::from_ref(&a),
            delivered_to: Some("a+tag@x.test"),
            now: UNIX_EPOCH,
        };
        let expected = format!(
            "Return-Path: <s@y.test>\nDelivered-To: a+tag@x.test\nReceived: from {} ([::1])\n\tby mx.test (mailroom) with ESMTPS id ID2\n\tfor <a@x.test>;\n\tThu, 1 Jan 1970 00:00:00 +0000\n",
            "h".repeat(255)
        );
        assert_eq!(trace_headers(&t), expected);
    }
}
