//! The relay's settings: the `[delivery]` section of the server's configuration, mapped by the cli (the
//! relay does not depend on the server crate). Defaults are the documented ones.

use std::path::PathBuf;
use std::time::Duration;

/// `[delivery] tls`: how MX delivery protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// STARTTLS when offered, certificates not checked, plain text otherwise (RFC 7435).
    #[default]
    Opportunistic,
    /// STARTTLS or nothing: a host without it (or whose handshake fails) is not sent the mail.
    Required,
}

/// `[delivery] relayhost_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayhostTls {
    /// Plain text (a smarthost on a trusted network).
    None,
    /// STARTTLS, required, with the certificate verified.
    #[default]
    StartTls,
    /// TLS from the first byte (RFC 8314, port 465), certificate verified.
    Tls,
}

/// `[delivery] relayhost = "[host]:port"` or `"host:port"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayhost {
    pub host: String,
    pub port: u16,
    /// Without brackets the host is a mail domain whose MX records are looked up (as in Postfix).
    pub mx_lookup: bool,
}

/// The port of a relayhost given without one (RFC 5321 §4.5.4.2: 25; Postfix's default too).
pub const RELAYHOST_DEFAULT_PORT: u16 = 25;

impl Relayhost {
    /// Reads `[host]:port`, `[host]`, `host:port` or `host`; `[IPv6]` only in brackets.
    pub fn parse(s: &str) -> Result<Relayhost, String> {
        let bad = || format!("relayhost {s:?}: want [host]:port or host:port");
        let s = s.trim();
        let (host, rest, mx_lookup) = match s.strip_prefix('[') {
            Some(inner) => {
                let (host, rest) = inner.split_once(']').ok_or_else(bad)?;
                (host, rest, false)
            }
            None => match s.split_once(':') {
                Some((h, p)) => (h, &s[h.len()..][..p.len() + 1], true),
                None => (s, "", true),
            },
        };
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
            None if rest.is_empty() => RELAYHOST_DEFAULT_PORT,
            None => return Err(bad()),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Relayhost { host: host.to_string(), port, mx_lookup })
    }
}

/// Everything the relay is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our name: EHLO, the Reporting-MTA of DSNs, MAILER-DAEMON@hostname.
    pub hostname: String,
    /// The destination port of MX delivery (25; tests use another).
    pub port: u16,
    pub tls: TlsPolicy,
    pub relayhost: Option<Relayhost>,
    pub relayhost_tls: RelayhostTls,
    /// Trust anchors for the relayhost's certificate instead of the system's.
    pub relayhost_cafile: Option<PathBuf>,
    pub relayhost_user: Option<String>,
    /// The file holding the relayhost password (read at each connection, never logged).
    pub relayhost_password_file: Option<PathBuf>,
    /// The first retry delay; each further one doubles, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A recipient still undelivered this long after arrival is bounced (RFC 5321 §4.5.4.1: 4-5 days).
    pub max_queue_lifetime: Duration,
    /// After this long undelivered, a "delayed" DSN is sent once (RFC 3464); `None`: never.
    pub delay_warning: Option<Duration>,
    pub max_connections_per_destination: usize,
    pub max_connections: usize,
    /// RFC 5321 §6.3: more Received headers than this is a loop: bounce 5.4.6.
    pub max_hops: usize,
    /// TCP connect timeout per address.
    pub connect_timeout: Duration,
    /// Per SMTP command (RFC 5321 §4.5.3.2 recommends minutes; one bound for all).
    pub command_timeout: Duration,
    /// The local mailbox double bounces (failed mail with a null sender) go to.
    pub postmaster: String,
}

/// RFC 5321 §4.5.3.2.1 recommends 5 minutes for the greeting; a relay with other mail waiting uses less.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 §4.5.3.2: the shortest recommended command timeout (2 minutes, DATA initiation).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            hostname: "localhost".into(),
            port: 25,
            tls: TlsPolicy::Opportunistic,
            relayhost: None,
            relayhost_tls: RelayhostTls::StartTls,
            relayhost_cafile: None,
            relayhost_user: None,
            relayhost_password_file: None,
            min_backoff: Duration::from_secs(5 * 60),
            max_backoff: Duration::from_secs(60 * 60),
            max_queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_warning: None,
            max_connections_per_destination: 20,
            max_connections: 100,
            max_hops: 100,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            postmaster: "postmaster".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayhost_forms() {
        let r = Relayhost::parse("[smtp.example]:587").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.mx_lookup), ("smtp.example", 587, false));
        let r = Relayhost::parse("example.org").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.mx_lookup), ("example.org", 25, true));
        let r = Relayhost::parse("example.org:2525").unwrap();
        assert_eq!((r.port, r.mx_lookup), (2525, true));
        let r = Relayhost::parse("[::1]:25").unwrap();
        assert_eq!((r.host.as_str(), r.mx_lookup), ("::1", false));
        for bad in ["", "[x", "[x]:", "x:0", "x:y", "[x]z", "a b:25"] {
            assert!(Relayhost::parse(bad).is_err(), "{bad}");
        }
    }
}
