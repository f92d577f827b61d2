//! SASL as SMTP uses it (RFC 4954), for both directions: the mechanisms mailroom speaks, PLAIN (RFC 4616)
//! and LOGIN, their messages and prompts, and [`Secret`], the wrapper that keeps passwords out of every
//! `Debug` print and log.

use std::fmt;

use crate::base64;

/// RFC 4954 §4: a SASL response line may be up to 12288 octets.
pub const MAX_RESPONSE_LINE: usize = 12288;

/// The server's LOGIN prompt for the user name: base64 of "Username:".
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// The server's LOGIN prompt for the password: base64 of "Password:".
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// The SASL mechanisms mailroom speaks, as a server and as a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login): user name and password, each after a 334.
    Login,
}

impl Mechanism {
    /// Every mechanism, in the order of preference (PLAIN: one round trip, and the same secret either way).
    pub const ALL: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

    /// The name on the wire (EHLO's AUTH line, the AUTH command).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// The mechanism of this name (SASL names are case-insensitive, RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that must never be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// RFC 4616 §2: the PLAIN message `[authzid] NUL authcid NUL passwd`, base64-encoded, with no authzid
/// (the client acts as itself).
pub fn plain_response(user: &str, password: &Secret) -> Secret {
    let mut raw = Vec::with_capacity(user.len() + password.expose().len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.expose().as_bytes());
    Secret::new(base64::encode(&raw))
}

/// A decoded PLAIN message split into authzid, authcid and password; `None` when it is not three UTF-8
/// parts separated by NUL (RFC 4616 §2).
pub fn parse_plain(decoded: &[u8]) -> Option<(&str, &str, Secret)> {
    let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
    let [authz, user, pass] = parts[..] else { return None };
    let (Ok(authz), Ok(user), Ok(pass)) =
        (std::str::from_utf8(authz), std::str::from_utf8(user), std::str::from_utf8(pass))
    else {
        return None;
    };
    Some((authz, user, Secret::new(pass.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trip_and_redaction() {
        let pw = Secret::new("tanstaaftanstaaf".into());
        // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
        let r = plain_response("tim", &pw);
        assert_eq!(r.expose(), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        let raw = base64::decode(r.expose()).unwrap();
        let (authz, user, pass) = parse_plain(&raw).unwrap();
        assert_eq!((authz, user, &pass), ("", "tim", &pw));
        assert_eq!(format!("{pass:?}"), "Secret(***)");
        assert!(parse_plain(b"a\0b").is_none());
        assert!(parse_plain(b"\0a\0b\0c").is_none());
    }

    #[test]
    fn names() {
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("LOGIN"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
        assert_eq!(base64::decode(LOGIN_USER_PROMPT).unwrap(), b"Username:");
        assert_eq!(base64::decode(LOGIN_PASSWORD_PROMPT).unwrap(), b"Password:");
    }
}
