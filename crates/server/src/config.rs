//! The configuration file (TOML): every key has a default, the command line overrides the file.
//!
//! ```toml
//! [server]
//! hostname = "mx.example.org"    # default: the machine's host name
//! data_dir = "./mailroom-data"
//! listen = ["127.0.0.1:2525"]
//! domains = ["localhost"]
//! shutdown_grace = "30s"
//!
//! [limits]
//! max_message_size = 26214400
//! max_recipients = 100
//! max_connections = 1000
//! max_errors = 20
//! command_timeout = "5m"
//! data_timeout = "5m"
//! ```
//! (and more: see README.md's configuration reference.) Every duration and size is range-checked by
//! [`Config::validate`] (see [`ranges`]), which `check-config`, `serve` and `Server::bind` all run.
//! A `[client]` section (used by `mailroom sendmail`) may sit in the same file; the server ignores it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub limits: Limits,
    pub tls: TlsSection,
    pub auth: AuthSection,
    /// `mailroom sendmail`'s settings; read by the CLI, not the server.
    pub client: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// `smtp` listeners (port-25 style): anyone may deliver to local users; STARTTLS offered.
    pub listen: Vec<SocketAddr>,
    /// `submission` listeners (port-587 style, RFC 6409): STARTTLS, then AUTH before MAIL.
    pub submission: Vec<SocketAddr>,
    /// `submissions` listeners (port-465 style, RFC 8314): TLS from the first byte, AUTH before MAIL.
    pub submissions: Vec<SocketAddr>,
    pub domains: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

/// `[limits]`: every bound on what a client may make the server do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Octets; advertised as SIZE (RFC 1870). 552 5.3.4 beyond it.
    pub max_message_size: u64,
    /// Recipients per transaction; 452 4.5.3 beyond it (RFC 5321 §4.5.3.1.10).
    pub max_recipients: usize,
    /// Concurrent sessions; 421 4.7.0 at connect beyond it.
    pub max_connections: usize,
    /// Bad commands per session before 421 4.7.0 and close.
    pub max_errors: usize,
    /// Idle time waiting for a command before 421 4.4.2 (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    #[serde(deserialize_with = "duration")]
    pub command_timeout: Duration,
    /// Idle time waiting for message data before 421 4.4.2.
    #[serde(deserialize_with = "duration")]
    pub data_timeout: Duration,
    /// Failed AUTH attempts per session before 421 4.7.0 and close.
    pub max_auth_failures: usize,
    /// Concurrent sessions from one address; 421 4.7.0 at connect beyond it; 0 is off.
    pub max_connections_per_ip: usize,
    /// New connections per minute from one address; 421 4.7.0 beyond it; 0 (the default) is off.
    pub max_connection_rate_per_ip: u32,
    /// Messages (MAIL commands) per minute from one address; 450 4.7.1 beyond it; 0 (the default) is off.
    pub max_message_rate_per_ip: u32,
    /// Addresses exempt from the per-address limits, e.g. `["127.0.0.0/8", "::1/128", "192.0.2.0/24"]`.
    pub trusted_networks: Vec<String>,
    /// Bytes per second a client must average once `data_timeout` has passed since DATA began; 0 is off.
    pub min_data_rate: u64,
    /// Lines in a message's header section (continuation lines count); 552 5.3.4 beyond it.
    pub max_header_lines: usize,
    /// Octets in a message's header section; 552 5.3.4 beyond it.
    pub max_header_size: usize,
    /// How long each error reply waits once a session has made half of `max_errors`.
    #[serde(deserialize_with = "duration")]
    pub error_delay: Duration,
    /// How long a TLS handshake (STARTTLS or implicit TLS) may take from the first byte we wait for to
    /// the finished handshake. Short, and separate from `command_timeout`: a client that sends a few bytes
    /// of a ClientHello and stalls must not hold a connection slot for minutes.
    #[serde(deserialize_with = "duration")]
    pub tls_handshake_timeout: Duration,
}

/// Default `tls_handshake_timeout`: a real handshake takes a few round trips (well under a second even
/// across continents); 30 s leaves room for a slow or lossy link.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// `[tls]`: the certificate and key (PEM). Without them a self-signed pair is made in `<data-dir>/tls/`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[auth]`: how AUTH behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Offer AUTH without TLS. Only for development on loopback: passwords would cross the wire in clear.
    pub allow_plaintext_auth: bool,
    /// How long a failed AUTH waits before its 535, to slow down password guessing.
    #[serde(deserialize_with = "duration")]
    pub failure_delay: Duration,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection { allow_plaintext_auth: false, failure_delay: Duration::from_secs(1) }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            hostname: system_hostname(),
            data_dir: PathBuf::from("./mailroom-data"),
            listen: vec!["127.0.0.1:2525".parse().expect("valid address")],
            submission: Vec::new(),
            submissions: Vec::new(),
            domains: vec!["localhost".into()],
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        use mailroom_proto::server as p;
        Limits {
            max_message_size: p::DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: p::DEFAULT_MAX_RECIPIENTS,
            max_connections: 1000,
            max_errors: p::DEFAULT_MAX_ERRORS,
            command_timeout: p::DEFAULT_COMMAND_TIMEOUT,
            data_timeout: p::DEFAULT_DATA_TIMEOUT,
            max_auth_failures: p::DEFAULT_MAX_AUTH_FAILURES,
            max_connections_per_ip: 50,
            max_connection_rate_per_ip: 0,
            max_message_rate_per_ip: 0,
            trusted_networks: Vec::new(),
            min_data_rate: 0,
            max_header_lines: p::DEFAULT_MAX_HEADER_LINES,
            max_header_size: p::DEFAULT_MAX_HEADER_SIZE,
            error_delay: p::DEFAULT_ERROR_DELAY,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot: non-empty lists, sane limits, domain names that are safe as paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.server.listen.is_empty() && self.server.submission.is_empty() && self.server.submissions.is_empty() {
            return bad("no listeners: server.listen, server.submission and server.submissions are all empty".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key go together".into());
        }
        if self.server.domains.is_empty() {
            return bad("server.domains is empty".into());
        }
        for d in &self.server.domains {
            if mailroom_store::users::validate_domain(d).is_err() {
                return bad(format!("server.domains: {d:?} is not a domain name"));
            }
        }
        if self.server.hostname.is_empty() || self.server.hostname.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return bad(format!("server.hostname: {:?} is not a host name", self.server.hostname));
        }
        for n in &self.limits.trusted_networks {
            n.parse::<crate::limits::Cidr>()
                .map_err(|e| ConfigError::Invalid(format!("limits.trusted_networks: {e}")))?;
        }
        self.check_ranges()
    }

    /// Every duration and size against its range (see [`ranges`]): a value outside could overflow the
    /// clock arithmetic (`now + timeout`), hang a session or exhaust memory, so it never reaches a session.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        use ranges::*;
        let (s, a, l) = (&self.server, &self.auth, &self.limits);
        duration_in("server.shutdown_grace", s.shutdown_grace, Duration::ZERO, MAX_SHUTDOWN_GRACE)?;
        duration_in("auth.failure_delay", a.failure_delay, Duration::ZERO, MAX_DELAY)?;
        duration_in("limits.command_timeout", l.command_timeout, MIN_TIMEOUT, MAX_SESSION_TIMEOUT)?;
        duration_in("limits.data_timeout", l.data_timeout, MIN_TIMEOUT, MAX_SESSION_TIMEOUT)?;
        duration_in("limits.error_delay", l.error_delay, Duration::ZERO, MAX_DELAY)?;
        duration_in("limits.tls_handshake_timeout", l.tls_handshake_timeout, MIN_TIMEOUT, MAX_HANDSHAKE_TIMEOUT)?;
        number_in("limits.max_message_size", l.max_message_size, 1, MAX_MESSAGE_SIZE)?;
        number_in("limits.max_recipients", l.max_recipients, 1, MAX_RECIPIENTS)?;
        number_in("limits.max_connections", l.max_connections, 1, MAX_CONNECTIONS)?;
        number_in("limits.max_errors", l.max_errors, 1, MAX_ERRORS)?;
        number_in("limits.max_auth_failures", l.max_auth_failures, 1, MAX_AUTH_FAILURES)?;
        number_in("limits.max_connections_per_ip", l.max_connections_per_ip, 0, MAX_CONNECTIONS)?;
        number_in("limits.max_connection_rate_per_ip", l.max_connection_rate_per_ip, 0, MAX_RATE)?;
        number_in("limits.max_message_rate_per_ip", l.max_message_rate_per_ip, 0, MAX_RATE)?;
        number_in("limits.min_data_rate", l.min_data_rate, 0, MAX_MIN_DATA_RATE)?;
        number_in("limits.max_header_lines", l.max_header_lines, 1, MAX_HEADER_LINES)?;
        number_in("limits.max_header_size", l.max_header_size, 1, MAX_HEADER_SIZE)?;
        Ok(())
    }

    /// Served domains, lowercased.
    pub fn domains(&self) -> Vec<String> {
        self.server.domains.iter().map(|d| d.to_lowercase()).collect()
    }
}

/// The accepted range of every duration and size in the config, each with why it is bounded there.
/// Lower bounds of 1 are where 0 would mean "refuse everything"; keys where 0 means "off" start at 0.
pub mod ranges {
    use std::time::Duration;

    use super::ConfigError;

    /// Shortest `command_timeout`, `data_timeout` and `tls_handshake_timeout`: below a second a normal
    /// client on a slow link would be cut off mid-command.
    pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
    /// Longest `command_timeout` and `data_timeout`: RFC 5321 §4.5.3.2 asks for minutes (5 for commands,
    /// 10 for the end of data); an hour is far beyond any real client, and keeps every deadline the session
    /// computes (`now + timeout`) well inside what the clock can represent.
    pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Longest `tls_handshake_timeout`: a handshake is a few round trips; past 5 minutes a stalled one
    /// only holds a slot.
    pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(300);
    /// Longest `error_delay` and `[auth] failure_delay`: a tarpit slows a client down; a delay longer
    /// than a minute would only hold the session (and its slot) open for the attacker's benefit.
    pub const MAX_DELAY: Duration = Duration::from_secs(60);
    /// Longest `shutdown_grace`: a stop that waits longer than an hour is a hang to the service manager.
    pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
    /// Largest `max_message_size` (4 GiB): the store streams messages to disk, but larger messages are
    /// beyond what any other MTA will relay, and SIZE (RFC 1870) values beyond it are more likely typos.
    pub const MAX_MESSAGE_SIZE: u64 = 4 * 1024 * 1024 * 1024;
    /// Largest `max_recipients`: RFC 5321 §4.5.3.1.8 asks for at least 100; each accepted recipient is
    /// kept in memory for the transaction.
    pub const MAX_RECIPIENTS: usize = 100_000;
    /// Largest `max_connections` and `max_connections_per_ip`: each session holds a file descriptor and a
    /// task; a million is past any descriptor limit a host is configured with.
    pub const MAX_CONNECTIONS: usize = 1_000_000;
    /// Largest `max_errors`: the counter exists to end abusive sessions.
    pub const MAX_ERRORS: usize = 10_000;
    /// Largest `max_auth_failures`: it bounds password guessing per session.
    pub const MAX_AUTH_FAILURES: usize = 100;
    /// Largest per-minute rate (`max_connection_rate_per_ip`, `max_message_rate_per_ip`): beyond
    /// ~16,000 a second, a limit is no limit.
    pub const MAX_RATE: u32 = 1_000_000;
    /// Largest `min_data_rate` (1 GiB/s): beyond what a network link delivers, it would cut off everyone.
    pub const MAX_MIN_DATA_RATE: u64 = 1024 * 1024 * 1024;
    /// Largest `max_header_lines`.
    pub const MAX_HEADER_LINES: usize = 1_000_000;
    /// Largest `max_header_size` (64 MiB): the header section is scanned in memory-bounded steps, but a
    /// header section that large is no mail.
    pub const MAX_HEADER_SIZE: usize = 64 * 1024 * 1024;

    pub(super) fn duration_in(key: &str, v: Duration, min: Duration, max: Duration) -> Result<(), ConfigError> {
        if v < min || v > max {
            return Err(ConfigError::Invalid(format!("{key} = {v:?} is out of range ({min:?} to {max:?})")));
        }
        Ok(())
    }

    pub(super) fn number_in<T>(key: &str, v: T, min: T, max: T) -> Result<(), ConfigError>
    where
        T: PartialOrd + std::fmt::Display,
    {
        if v < min || v > max {
            return Err(ConfigError::Invalid(format!("{key} = {v} is out of range ({min} to {max})")));
        }
        Ok(())
    }
}

/// The machine's host name, for the greeting and trace headers; `localhost` if it cannot be read.
pub fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        .unwrap_or_else(|| "localhost".into())
}

/// Parses durations written like `30s`, `5m`, `1h`, `250ms`, `1.5s` or a bare number of seconds (the one
/// parser for the config file and every command-line flag).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like \"30s\" or \"5m\""))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m or h)")),
    };
    if !(secs.is_finite() && (0.0..1e9).contains(&secs)) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("1e400").is_err());
    }

    #[test]
    fn defaults_are_in_range_and_out_of_range_values_name_their_key() {
        Config::default().validate().expect("the defaults pass their own checks");
        let huge: Config = toml::from_str("[limits]\ncommand_timeout = 9223372036854775807\n").unwrap();
        let e = huge.validate().unwrap_err().to_string();
        assert!(e.contains("limits.command_timeout") && e.contains("out of range"), "{e}");
        let zero: Config = toml::from_str("[limits]\ntls_handshake_timeout = 0\n").unwrap();
        assert!(zero.validate().unwrap_err().to_string().contains("limits.tls_handshake_timeout"));
    }

    #[test]
    fn no_domains_and_bad_trusted_networks_are_refused_by_name() {
        let none: Config = toml::from_str("[server]\ndomains = []\n").unwrap();
        assert!(none.validate().unwrap_err().to_string().contains("server.domains"));
        let bad: Config = toml::from_str("[limits]\ntrusted_networks = [\"127.0.0.0/8\", \"10.0.0.0/33\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("limits.trusted_networks"));
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let cfg: Config = toml::from_str(
            "[server]\ndomains = [\"Example.TEST\"]\n[limits]\nmax_message_size = 1048576\ncommand_timeout = \"2m\"\n[client]\nserver = \"x:25\"\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.limits.max_message_size, 1048576);
        assert_eq!(cfg.limits.max_recipients, 100);
        assert_eq!(cfg.limits.command_timeout, Duration::from_secs(120));
        assert_eq!(cfg.domains(), vec!["example.test"]);
        assert!(toml::from_str::<Config>("[limits]\nmax_mesage_size = 1\n").is_err(), "typos are errors");
        let bad: Config = toml::from_str("[server]\ndomains = [\"../etc\"]\n").unwrap();
        assert!(bad.validate().is_err());
    }
}
