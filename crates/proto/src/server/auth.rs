//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.
//!
//! Offered only under TLS unless `allow_plaintext_auth` is set; otherwise AUTH gets 538 5.7.11. The
//! shell checks the credentials; failures are counted and, at `max_auth_failures`, the session closes with
//! 421. Passwords travel in a [`Secret`] whose Debug output is redacted, so no log can print them.

use super::{Credentials, Decision, Event, Exchange, Mode, Pending, Session};
use crate::base64;
use crate::reply::{Enhanced, Reply};
use crate::sasl::{self, Mechanism, Secret, LOGIN_PASSWORD_PROMPT, LOGIN_USER_PROMPT};

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
        let (exchange, prompt) = match Mechanism::from_name(mech) {
            Some(Mechanism::Plain) => (Exchange::Plain, ""),
            Some(Mechanism::Login) => (Exchange::LoginUser, LOGIN_USER_PROMPT),
            None => return self.error(Reply::new(504, Enhanced(5, 5, 4), "Unrecognized authentication mechanism")),
        };
        match initial {
            Some(resp) => self.auth_response(exchange, resp.as_bytes()),
            None => {
                self.mode = Mode::Auth(exchange);
                self.reply(Reply::plain(334, prompt));
            }
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
                let Some((authz, user, pass)) = sasl::parse_plain(&decoded) else {
                    return self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed PLAIN response"));
                };
                if !authz.is_empty() && authz != user {
                    // Acting for someone else (authzid) is not supported.
                    return self.auth_failed();
                }
                self.ask_auth(Mechanism::Plain, user.to_owned(), pass);
            }
            Exchange::LoginUser => match String::from_utf8(decoded) {
                Ok(user) => {
                    self.mode = Mode::Auth(Exchange::LoginPassword(user));
                    self.reply(Reply::plain(334, LOGIN_PASSWORD_PROMPT));
                }
                Err(_) => self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed LOGIN response")),
            },
            Exchange::LoginPassword(user) => match String::from_utf8(decoded) {
                Ok(pass) => self.ask_auth(Mechanism::Login, user, Secret::new(pass)),
                Err(_) => self.error(Reply::new(501, Enhanced(5, 5, 2), "Malformed LOGIN response")),
            },
        }
    }

    fn ask_auth(&mut self, mechanism: Mechanism, username: String, password: Secret) {
        if username.is_empty() || username.chars().any(char::is_control) {
            return self.auth_failed();
        }
        let creds = Credentials { mechanism, username: username.clone(), password };
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
