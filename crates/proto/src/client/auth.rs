//! AUTH as a client says it (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.
//!
//! This file owns the choice of mechanism and the responses of each; the session sends them and matches
//! the replies. PLAIN is preferred: one round trip, and the same secret either way. The password lives in a
//! [`Secret`], and every line that carries it is shown as [`HIDDEN`] in the session's `Event::Sent`, so
//! neither a transcript nor a `Debug` print of the session can reveal it.

use std::fmt;

use super::error::Error;
use crate::base64;
use crate::command::Command;
use crate::sasl::{plain_response, Mechanism, Secret};

/// What a transcript shows instead of a SASL response.
pub const HIDDEN: &str = "********";

/// RFC 4954 §4: the AUTH command with its initial response is still bound by the command line limit of
/// RFC 5321 §4.5.3.1.4 (512 octets with CRLF); a longer one must wait for the server's empty 334.
pub const MAX_AUTH_LINE: usize = 512;

/// The mechanism to use with a server offering `offered` (upper-cased names from EHLO): PLAIN when offered,
/// else LOGIN ([`Mechanism::ALL`] is in order of preference). `Ok(None)` when the server offers no AUTH at
/// all: the caller may still try, and the server's refusal (e.g. 538 5.7.11 without TLS) explains more than a
/// guess here would.
pub fn choose(offered: &[String]) -> Result<Option<Mechanism>, Error> {
    if offered.is_empty() {
        return Ok(None);
    }
    let has = |m: Mechanism| offered.iter().any(|o| o.eq_ignore_ascii_case(m.name()));
    match Mechanism::ALL.into_iter().find(|&m| has(m)) {
        Some(m) => Ok(Some(m)),
        None => Err(Error::MissingExtension {
            extension: "AUTH PLAIN or LOGIN",
            reason: "a user name was given, and the server offers only other SASL mechanisms",
        }),
    }
}

/// One AUTH exchange in progress: the responses still to send, each after a 334.
pub(super) struct Exchange {
    pub(super) mechanism: Mechanism,
    /// The responses to the server's challenges, in order (base64 lines that carry the secret).
    responses: std::collections::VecDeque<Secret>,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism)
            .field("responses_left", &self.responses.len())
            .finish()
    }
}

impl Exchange {
    /// The AUTH command line and the exchange that follows it. `mechanism` `None` means the server
    /// offered none: PLAIN is tried without an initial response, so nothing secret leaves before the server
    /// has said 334.
    pub(super) fn start(
        mechanism: Option<Mechanism>,
        user: &str,
        password: &Secret,
    ) -> Result<(Secret, String, Exchange), Error> {
        // RFC 4616 §2: authcid and passwd are UTF-8 without NUL; a CR or LF could never be typed as one
        // either and would only confuse a line-based server, so refuse them all up front.
        let bad = |s: &str| s.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n');
        if user.is_empty() || bad(user) {
            return Err(Error::InvalidCredentials("the user name is empty or holds NUL, CR or LF"));
        }
        if bad(password.expose()) {
            return Err(Error::InvalidCredentials("the password holds NUL, CR or LF"));
        }
        let mut responses = std::collections::VecDeque::new();
        let (line, shown, mechanism) = match mechanism.unwrap_or(Mechanism::Plain) {
            Mechanism::Plain => {
                let blob = plain_response(user, password);
                let with_initial = format!("{} {}", auth_command(Mechanism::Plain), blob.expose());
                if mechanism.is_some() && with_initial.len() + 2 <= MAX_AUTH_LINE {
                    (with_initial, format!("{} {HIDDEN}", auth_command(Mechanism::Plain)), Mechanism::Plain)
                } else {
                    responses.push_back(blob);
                    (auth_command(Mechanism::Plain), auth_command(Mechanism::Plain), Mechanism::Plain)
                }
            }
            Mechanism::Login => {
                responses.push_back(Secret::new(base64::encode(user.as_bytes())));
                responses.push_back(Secret::new(base64::encode(password.expose().as_bytes())));
                (auth_command(Mechanism::Login), auth_command(Mechanism::Login), Mechanism::Login)
            }
        };
        Ok((Secret::new(line), shown, Exchange { mechanism, responses }))
    }

    /// The response to the next 334, or `None` when the mechanism has nothing more to say.
    pub(super) fn next_response(&mut self) -> Option<Secret> {
        self.responses.pop_front()
    }
}

/// `AUTH <mechanism>` without an initial response, as [`Command`] writes it.
fn auth_command(m: Mechanism) -> String {
    Command::Auth(m.name().to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Secret {
        Secret::new(x.to_string())
    }

    #[test]
    fn choice() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(&v(&["LOGIN", "PLAIN"])).unwrap(), Some(Mechanism::Plain));
        assert_eq!(choose(&v(&["CRAM-MD5", "LOGIN"])).unwrap(), Some(Mechanism::Login));
        assert_eq!(choose(&[]).unwrap(), None);
        assert!(choose(&v(&["CRAM-MD5", "XOAUTH2"])).is_err());
    }

    #[test]
    fn plain_initial_response() {
        let (line, shown, mut ex) = Exchange::start(Some(Mechanism::Plain), "tim", &s("tanstaaftanstaaf")).unwrap();
        // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
        assert_eq!(line.expose(), "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        assert_eq!(shown, "AUTH PLAIN ********");
        assert!(ex.next_response().is_none());
        assert!(!format!("{ex:?}").contains("AHRpbQ"));
    }

    #[test]
    fn plain_too_long_for_one_line_waits_for_334() {
        let long = "p".repeat(600);
        let (line, shown, mut ex) = Exchange::start(Some(Mechanism::Plain), "u", &s(&long)).unwrap();
        assert_eq!((line.expose(), shown.as_str()), ("AUTH PLAIN", "AUTH PLAIN"));
        let r = ex.next_response().unwrap();
        assert_eq!(base64::decode(r.expose()).unwrap(), [b"\0u\0".as_slice(), long.as_bytes()].concat());
    }

    #[test]
    fn login_and_probe() {
        let (line, _, mut ex) = Exchange::start(Some(Mechanism::Login), "u@x", &s("pw")).unwrap();
        assert_eq!(line.expose(), "AUTH LOGIN");
        assert_eq!(ex.next_response().unwrap().expose(), base64::encode(b"u@x"));
        assert_eq!(ex.next_response().unwrap().expose(), base64::encode(b"pw"));
        assert!(ex.next_response().is_none());
        // Nothing offered: PLAIN without the secret on the command line.
        let (line, _, _) = Exchange::start(None, "u", &s("pw")).unwrap();
        assert_eq!(line.expose(), "AUTH PLAIN");
    }

    #[test]
    fn refuses_what_cannot_be_encoded() {
        assert!(Exchange::start(None, "", &s("pw")).is_err());
        assert!(Exchange::start(None, "a\0b", &s("pw")).is_err());
        assert!(Exchange::start(None, "a", &s("p\r\nw")).is_err());
    }
}
