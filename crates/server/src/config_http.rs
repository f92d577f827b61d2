//! `[http]`: the web interface and JSON API listener (served by the mailroom-web crate in the same
//! process as the SMTP listeners). Only the settings live here, so that `Config` stays the one place
//! that reads the config file; the listener itself is the web crate's.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The listener's address when none is configured: loopback only (the UI is for this machine unless
/// an admin opts in), port 8025 as Mailpit/MailHog users expect.
pub const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8025));
/// Shortest `metrics_token` accepted: a bearer token that guards scrapes from other hosts should not be
/// guessable (32 characters of a random token carry well over 128 bits).
pub const MIN_METRICS_TOKEN: usize = 16;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Serve HTTP at all (`mailroom serve --no-http` turns it off).
    pub enabled: bool,
    /// Where to listen. Unset: [`DEFAULT_HTTP_LISTEN`], and a busy default port (a second server on the
    /// machine) only logs a warning; an address given here (or with `--http`) that cannot be bound is fatal.
    pub listen: Option<SocketAddr>,
    /// HTTPS with the server's certificate (`[tls]`, or the self-signed one in `<data-dir>/tls/`).
    pub tls: bool,
    /// Bearer token that `/metrics` requires from clients outside loopback; without it `/metrics` is
    /// loopback-only.
    pub metrics_token: Option<String>,
}

impl Default for HttpSection {
    fn default() -> HttpSection {
        HttpSection { enabled: true, listen: None, tls: false, metrics_token: None }
    }
}

impl HttpSection {
    /// The address to bind, and whether it was asked for explicitly (see [`HttpSection::listen`]).
    pub fn address(&self) -> (SocketAddr, bool) {
        match self.listen {
            Some(addr) => (addr, true),
            None => (DEFAULT_HTTP_LISTEN, false),
        }
    }

    /// What is wrong with the section, if anything (`Config::validate` reports it).
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(token) = &self.metrics_token {
            if token.len() < MIN_METRICS_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "http.metrics_token: at least {MIN_METRICS_TOKEN} printable ASCII characters, no spaces"
                ));
            }
        }
        Ok(())
    }
}
