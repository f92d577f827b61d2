//! What a mail transaction needs to know before it starts: the envelope (RFC 5321 §2.3.1) with its DSN
//! requests (RFC 3461), and the few facts about the message that decide the MAIL parameters (SIZE, BODY,
//! SMTPUTF8).

use crate::address::{ForwardPath, ReversePath};
use crate::params::{RcptParams, Ret};

/// The reverse path and the forward paths of one transaction, with the sender's DSN requests. The DSN
/// parameters are passed on only to a server that offers DSN ([`super::Outcome::dsn_dropped`] says when
/// they were not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: ReversePath,
    pub to: Vec<ForwardPath>,
    /// RFC 3461 §4.3 `RET=` for MAIL.
    pub ret: Option<Ret>,
    /// RFC 3461 §4.4 `ENVID=` for MAIL (decoded; xtext-encoded on the wire).
    pub envid: Option<String>,
    /// NOTIFY / ORCPT of each recipient, in the order of `to`; recipients past its end have none.
    pub rcpt_params: Vec<RcptParams>,
}

impl Envelope {
    pub fn new(from: ReversePath, to: Vec<ForwardPath>) -> Envelope {
        Envelope { from, to, ret: None, envid: None, rcpt_params: Vec::new() }
    }

    /// Sets MAIL's RET and ENVID.
    pub fn with_dsn(mut self, ret: Option<Ret>, envid: Option<String>) -> Envelope {
        self.ret = ret;
        self.envid = envid;
        self
    }

    /// Sets the RCPT parameters, one per recipient in the order of `to`.
    pub fn with_rcpt_params(mut self, params: Vec<RcptParams>) -> Envelope {
        self.rcpt_params = params;
        self
    }

    /// The RCPT parameters of recipient `i` (none when not given).
    pub fn rcpt_params(&self, i: usize) -> RcptParams {
        self.rcpt_params.get(i).cloned().unwrap_or_default()
    }

    /// True when any DSN parameter is set (RET, ENVID, or a recipient's NOTIFY / ORCPT).
    pub fn has_dsn(&self) -> bool {
        self.ret.is_some() || self.envid.is_some() || self.rcpt_params.iter().any(RcptParams::has_dsn)
    }

    /// True when an address holds UTF-8, which only SMTPUTF8 allows on the wire (RFC 6531 §3.2).
    pub fn needs_smtputf8(&self) -> bool {
        let from = match &self.from {
            ReversePath::Mailbox(a) => !a.is_ascii(),
            ReversePath::Null => false,
        };
        from || self.to.iter().any(|t| matches!(t, ForwardPath::Mailbox(a) if !a.is_ascii()))
    }
}

/// Facts about the message body that decide the MAIL FROM parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its size in octets, declared with SIZE= when the server offers SIZE (RFC 1870 §3).
    pub size: Option<u64>,
    /// Whether it holds octets above 127: `Some(true)` needs 8BITMIME (RFC 6152), `None` means unknown
    /// (a stream not read yet), for which BODY=8BITMIME is declared whenever the server offers it.
    pub eight_bit: Option<bool>,
    /// Whether its header holds raw UTF-8 (RFC 6532), which calls for SMTPUTF8 when offered.
    pub utf8_headers: bool,
}

impl MessageInfo {
    /// Looks at a whole message.
    pub fn scan(message: &[u8]) -> MessageInfo {
        let header_end = find_header_end(message);
        MessageInfo {
            size: Some(wire_size(message)),
            eight_bit: Some(!message.is_ascii()),
            utf8_headers: !message[..header_end].is_ascii(),
        }
    }

    /// Nothing known but perhaps the size.
    pub fn unknown(size: Option<u64>) -> MessageInfo {
        MessageInfo { size, eight_bit: None, utf8_headers: false }
    }
}

/// RFC 1870 §3: the size counts line ends as CRLF pairs, so each bare CR or LF adds one octet.
fn wire_size(m: &[u8]) -> u64 {
    let mut n = m.len() as u64;
    for (i, &b) in m.iter().enumerate() {
        let bare_lf = b == b'\n' && (i == 0 || m[i - 1] != b'\r');
        let bare_cr = b == b'\r' && m.get(i + 1) != Some(&b'\n');
        if bare_lf || bare_cr {
            n += 1;
        }
    }
    n
}

/// The offset of the blank line that ends the header section (or the whole length when there is none).
fn find_header_end(m: &[u8]) -> usize {
    let mut i = 0;
    while i < m.len() {
        let line_end = m[i..].iter().position(|&b| b == b'\n').map(|p| i + p + 1).unwrap_or(m.len());
        let line = &m[i..line_end];
        if line == b"\n" || line == b"\r\n" {
            return i;
        }
        i = line_end;
    }
    m.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan() {
        let m = MessageInfo::scan(b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(m, MessageInfo { size: Some(21), eight_bit: Some(false), utf8_headers: false });
        assert_eq!(MessageInfo::scan(b"a\nb\rc\r\n").size, Some(9));
        let m = MessageInfo::scan("Subject: ü\n\nbody\n".as_bytes());
        assert!(m.utf8_headers && m.eight_bit == Some(true));
        let m = MessageInfo::scan("Subject: u\n\nbödy\n".as_bytes());
        assert!(!m.utf8_headers && m.eight_bit == Some(true));
    }
}
