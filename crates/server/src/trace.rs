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

/// The header block (LF line endings, as stored) prepended to every delivered message.
pub fn trace_headers(t: &TraceInfo<'_>) -> String {
    let helo: String =
        t.helo.chars().map(|c| if c.is_alphanumeric() || ".-_:[]".contains(c) { c } else { '?' }).take(255).collect();
    let mut h = format!("Return-Path: {}\n", t.from);
    if let Some(to) = t.delivered_to {
        h.push_str(&format!("Delivered-To: {to}\n"));
    }
    h.push_str(&format!(
        "Received: from {helo} ([{}])\n\tby {} (mailroom) with {} id {}",
        t.peer, t.hostname, t.protocol, t.id
    ));
    // RFC 5321 §7.2: naming every recipient would disclose Bcc recipients; name one only when alone.
    if let [only] = t.rcpts {
        h.push_str(&format!("\n\tfor {only}"));
    }
    h.push_str(&format!(";\n\t{}\n", rfc5322_date(t.now)));
    h
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
}
