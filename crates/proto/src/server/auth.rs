//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.
//!
//! Offered only under TLS unless `allow_plaintext_auth` is set; otherwise AUTH gets 538 5.7.11. The
//! shell checks the credentials; failures are counted and, at `max_auth_failures`, the session closes with
//! 421. Passwords travel in a [`Secret`] whose Debug output is redacted, so no log can print them.

use std::fmt;

use super::{Decision, Event, Mode, Pending, Session};
use crate::base64;
use crate::reply::{Enhanced, Reply};

/// RFC 4954 §4: a SASL response line may be up to 12288 octets.
pub const MAX_RESPONSE_LINE: usize = 12288;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
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

/// What a client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

/// Where a SASL exchange stands.
#[derive(Debug)]
pub(super) enum Exchange {
    Plain,
    LoginUser,
    LoginPassword(String),
}

impl<R> Session<R> {
    pub(super) fn is_auth_offered(&self) -> bool {
        self.config.auth && (self.tls || self.config.allow_plaintext_auth) && self.authenticated.is_none()
    }

    pub(super) fn handle_auth(&mut self, args: String) {
        if !self.config.auth {
            return self.error(Reply::new(502, Enhanced(5, 5, 1), "AUTH not available"));
        }
        if !self.tls && !self.config.allow_plaintext_auth {
            return self.error(Reply::new(
                538,
                Enhanced(5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ));
        }
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Send EHLO first"));
        }
        if self.authenticated.is_some() {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "Already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, Enhanced(5, 5, 1), "AUTH not allowed during a mail transaction"));
        }
        let mut it = args.split(' ').filter(|s| !s.is_empty());
        let mech = it.next().unwrap_or("");
        let initial = it.next();
        if it.next().is_some() {
            return self.error(Reply::new(501, Enhanced(5, 5, 4), "Syntax: AUTH mechanism [initial-response]"));
        }
        if mech.eq_ignore_ascii_case("PLAIN") {
            match initial {
                Some(resp) => self.auth_response(Exchange::Plain, resp.as_bytes()),
                None => {
                    self.mode = Mode::Auth(Exchange::Plain);
                    self.reply(Reply::plain(334, ""));
                }
            }
        } else if mech.eq_ignore_ascii_case("LOGIN") {
            match initial {
                Some(resp) => self.auth_response(Exchange::LoginUser, resp.as_bytes()),
                None => {
                    self.mode = Mode::Auth(Exchange::LoginUser);
                    self.reply(Reply::plain(334, "VXNlcm5hbWU6")); // "Username:"
                }
            }
        } else {
            self.error(Reply::new(504, Enhanced(5, 5, 4), "Unrecognized authentication mechanism"))
        }
    }

    /// A line during the exchange.
    pub(super) fn handle_auth_response(&mut self, line: &[u8]) {
        let Mode::Auth(exchange) = std::mem::replace(&mut self.mode, Mode::Command) else { return };
        self.auth_response(exchange, line);
    }

    fn auth_response(&mut self, exchange: Exchange, line: &[u8]) {
        if line == b"*" {
            // RFC 4954 §4: the client cancelled.
            return self.error(Reply::new(501, Enhanced(5, 0, 0), "Authentication cancelled"));
        }
        let decoded =
            if line == b"=" { Some(Vec::new()) } else { std::str::from_utf8(line).ok().and_then(base64::decode) };
        let Some(decoded) = decoded else {
            return self.error(Reply::new(501, Enhanced(5, 5, 2), "Cannot decode response"));
        };
        match exchange {
            Exchange::Plain => {
                // RFC 4616 §2: [authzid] NUL authcid NUL passwd
                let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
                let [authz, user, pass] = parts[..] else {
                    return self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed PLAIN response"));
                };
                let (Ok(authz), Ok(user), Ok(pass)) =
                    (std::str::from_utf8(authz), std::str::from_utf8(user), std::str::from_utf8(pass))
                else {
                    return self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed PLAIN response"));
                };
                if !authz.is_empty() && authz != user {
                    // Acting for someone else (authzid) is not supported.
                    return self.auth_failed();
                }
                self.ask_auth(Mechanism::Plain, user.to_owned(), pass.to_owned());
            }
            Exchange::LoginUser => match String::from_utf8(decoded) {
                Ok(user) => {
                    self.mode = Mode::Auth(Exchange::LoginPassword(user));
                    self.reply(Reply::plain(334, "UGFzc3dvcmQ6")); // "Password:"
                }
                Err(_) => self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed LOGIN response")),
            },
            Exchange::LoginPassword(user) => match String::from_utf8(decoded) {
                Ok(pass) => self.ask_auth(Mechanism::Login, user, pass),
                Err(_) => self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed LOGIN response")),
            },
        }
    }

    fn ask_auth(&mut self, mechanism: Mechanism, username: String, password: String) {
        if username.is_empty() || username.chars().any(char::is_control) {
            return self.auth_failed();
        }
        let creds = Credentials { mechanism, username: username.clone(), password: Secret(password) };
        self.wait(Pending::Auth(username), Event::Auth(creds));
    }

    pub(super) fn answer_auth(&mut self, user: String, decision: Decision<R>) {
        let reply = decision.into_reply(|| Reply::new(235, Enhanced(2, 7, 0), "Authentication successful"));
        let ok = reply.is_positive();
        self.reply(reply);
        if ok {
            self.authenticated = Some(user);
        } else {
            self.count_auth_failure();
        }
    }

    fn auth_failed(&mut self) {
        self.reply(Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"));
        self.count_auth_failure();
    }

    fn count_auth_failure(&mut self) {
        self.auth_failures += 1;
        if self.auth_failures >= self.config.max_auth_failures {
            self.reply(Reply::new(
                421,
                Enhanced(4, 7, 0),
                format!("{} Too many authentication failures", self.config.hostname),
            ));
            self.close();
        }
    }
}
