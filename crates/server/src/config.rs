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
//!
//! [delivery]                     # outbound mail (relaying); see README.md
//! relay_networks = []            # CIDR blocks that may relay without AUTH
//! max_queue_lifetime = "5d"
//!
//! [dns]
//! servers = []                   # ["IP:PORT", ...]; empty: the system's resolvers
//! ```
//! (and more: see README.md's configuration reference.) Every duration and size is range-checked by
//! [`Config::validate`] (see [`ranges`]), which `check-config`, `serve` and `Server::bind` all run.
//! A `[client]` section (used by `mailroom sendmail`) may sit in the same file; the server ignores it.
//! Every section derives `Serialize` as well ([`Config::to_toml`], what `check-config` prints): a new
//! section must too, its durations written with [`write_duration`] so that the output reads back the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub limits: Limits,
    pub tls: TlsSection,
    pub auth: AuthSection,
    pub delivery: Delivery,
    pub dns: Dns,
    /// `[http]`: the web interface and API listener.
    pub http: crate::config_http::HttpSection,
    /// `[vacation]`: vacation replies (crate::config_vacation).
    pub vacation: crate::config_vacation::VacationSection,
    /// `[routing]`: aliases, subaddresses, postmaster@, SRS (see `config_routing`).
    pub routing: crate::config_routing::RoutingSection,
    /// `[inbound]`: SPF, DKIM, DMARC and ARC checks of mail on the smtp listener.
    pub inbound: crate::config_inbound::Inbound,
    /// File modes of the data directory ([`crate::config_store`]).
    pub store: crate::config_store::StoreSection,
    /// `mailroom sendmail`'s settings; read by the CLI, not the server.
    pub client: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// `smtp` listeners (port-25 style): anyone may deliver to local users; STARTTLS offered. Written
    /// `IP:PORT` or `HOST:PORT` (a host name listens on every address it resolves to; see [`resolve_listen`]).
    #[serde(deserialize_with = "listen_addrs")]
    pub listen: Vec<SocketAddr>,
    /// `submission` listeners (port-587 style, RFC 6409): STARTTLS, then AUTH before MAIL.
    #[serde(deserialize_with = "listen_addrs")]
    pub submission: Vec<SocketAddr>,
    /// `submissions` listeners (port-465 style, RFC 8314): TLS from the first byte, AUTH before MAIL.
    #[serde(deserialize_with = "listen_addrs")]
    pub submissions: Vec<SocketAddr>,
    pub domains: Vec<String>,
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub shutdown_grace: Duration,
    /// Started as root: the user to run as once the listeners are bound ([`crate::config_store`]).
    pub user: Option<String>,
    /// With `user`: the group to run as; default: the user's primary group.
    pub group: Option<String>,
}

/// `[limits]`: every bound on what a client may make the server do.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub command_timeout: Duration,
    /// Idle time waiting for message data before 421 4.4.2.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
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
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub error_delay: Duration,
    /// How long a TLS handshake (STARTTLS or implicit TLS) may take from the first byte we wait for to
    /// the finished handshake. Short, and separate from `command_timeout`: a client that sends a few bytes
    /// of a ClientHello and stalls must not hold a connection slot for minutes.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub tls_handshake_timeout: Duration,
}

/// Default `tls_handshake_timeout`: a real handshake takes a few round trips (well under a second even
/// across continents); 30 s leaves room for a slow or lossy link.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// `[tls]`: the certificate and key (PEM). Without them a self-signed pair is made in `<data-dir>/tls/`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[auth]`: how AUTH behaves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Offer AUTH without TLS. Only for development on loopback: passwords would cross the wire in clear.
    pub allow_plaintext_auth: bool,
    /// How long a failed AUTH waits before its 535, to slow down password guessing.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub failure_delay: Duration,
}

/// `[delivery]`: outbound mail — who may relay, and how the relay delivers (the relay reads these through
/// the command line's mapping; the server itself uses `relay_networks` and `max_hops`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Client networks (CIDR) that may relay without AUTH, e.g. `["127.0.0.1/32"]`. Empty by default:
    /// behind a local proxy every client would look like the proxy's address, so listing it opens the relay.
    pub relay_networks: Vec<String>,
    /// Destination port of MX delivery (RFC 5321 §4.5.4: 25); tests point it elsewhere.
    pub port: u16,
    /// STARTTLS to MX hosts: opportunistic (RFC 7435, no certificate checks) or required.
    pub tls: TlsPolicy,
    /// `"[host]:port"` (brackets: no MX lookup) or `"host:port"`: send every outbound message there.
    pub relayhost: Option<String>,
    /// How to talk to the relayhost: `none`, `starttls` or `tls` (implicit, RFC 8314).
    pub relayhost_tls: RelayhostTls,
    /// CA certificates (PEM) to verify the relayhost with, instead of the system's roots.
    pub relayhost_cafile: Option<PathBuf>,
    /// AUTH user at the relayhost.
    pub relayhost_user: Option<String>,
    /// File holding the relayhost password (first line), so it stays out of the config file.
    pub relayhost_password_file: Option<PathBuf>,
    /// First retry delay of a deferred recipient; doubles per attempt up to `max_backoff`.
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub min_backoff: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub max_backoff: Duration,
    /// A recipient still deferred this long after arrival is bounced (RFC 5321 §4.5.4.1: 4-5 days).
    #[serde(deserialize_with = "duration", serialize_with = "write_duration")]
    pub max_queue_lifetime: Duration,
    /// Send a "delayed" DSN once a recipient has been deferred this long; absent or `"off"`: never.
    #[serde(deserialize_with = "optional_duration", serialize_with = "write_optional_duration")]
    pub delay_warning: Option<Duration>,
    /// Concurrent connections to one destination (MX domain or relayhost).
    pub max_connections_per_destination: usize,
    /// Concurrent outbound connections in all.
    pub max_connections: usize,
    /// More Received headers than this is a loop (RFC 5321 §6.3): 554 5.4.6 at receipt, a 5.4.6 bounce
    /// in the relay.
    pub max_hops: usize,
}

/// `[delivery] tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS when offered, without certificate checks; plaintext when not (RFC 7435).
    Opportunistic,
    /// Never send in plaintext: a host without working STARTTLS is a temporary failure.
    Required,
}

/// `[delivery] relayhost_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayhostTls {
    None,
    /// STARTTLS required, certificate verified.
    Starttls,
    /// TLS from the first byte (RFC 8314), certificate verified.
    Tls,
}

/// A parsed `relayhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayhost {
    pub host: String,
    pub port: u16,
    /// Written without brackets: the host is a mail domain whose MX records are looked up.
    pub mx_lookup: bool,
}

/// Port of a relayhost written without one (RFC 5321 §4.5.4: SMTP's port).
pub const DEFAULT_RELAYHOST_PORT: u16 = 25;

impl Delivery {
    /// The relayhost, parsed; None when unset. Errors name the setting.
    pub fn relayhost(&self) -> Result<Option<Relayhost>, ConfigError> {
        let Some(raw) = self.relayhost.as_deref() else { return Ok(None) };
        let bad =
            || ConfigError::Invalid(format!("delivery.relayhost = {raw:?}: expected \"[host]:port\" or \"host:port\""));
        let (host, rest, mx_lookup) = match raw.strip_prefix('[') {
            Some(r) => {
                let (h, rest) = r.split_once(']').ok_or_else(bad)?;
                (h, rest, false)
            }
            None => match raw.rsplit_once(':') {
                Some((h, _)) => (h, &raw[h.len()..], true),
                None => (raw, "", true),
            },
        };
        let port = match rest {
            "" => DEFAULT_RELAYHOST_PORT,
            r => r.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).filter(|&p| p != 0).ok_or_else(bad)?,
        };
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        if host.is_empty() || (!is_ip && mailroom_store::users::validate_domain(host).is_err()) {
            return Err(bad());
        }
        Ok(Some(Relayhost { host: host.to_owned(), port, mx_lookup: mx_lookup && !is_ip }))
    }

    /// `relay_networks`, parsed.
    pub fn relay_networks(&self) -> Result<Vec<crate::limits::Cidr>, ConfigError> {
        self.relay_networks
            .iter()
            .map(|n| n.parse().map_err(|e| ConfigError::Invalid(format!("delivery.relay_networks: {e}"))))
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use ranges::*;
        let bad = |s: &str| Err(ConfigError::Invalid(s.into()));
        self.relay_networks()?;
        let relayhost = self.relayhost()?;
        number_in("delivery.port", self.port, 1, u16::MAX)?;
        duration_in("delivery.min_backoff", self.min_backoff, MIN_BACKOFF, MAX_BACKOFF)?;
        duration_in("delivery.max_backoff", self.max_backoff, self.min_backoff, MAX_BACKOFF)?;
        duration_in("delivery.max_queue_lifetime", self.max_queue_lifetime, MIN_BACKOFF, MAX_QUEUE_LIFETIME)?;
        if let Some(w) = self.delay_warning {
            duration_in("delivery.delay_warning", w, MIN_BACKOFF, self.max_queue_lifetime)?;
        }
        number_in(
            "delivery.max_connections_per_destination",
            self.max_connections_per_destination,
            1,
            self.max_connections,
        )?;
        number_in("delivery.max_connections", self.max_connections, 1, MAX_OUTBOUND_CONNECTIONS)?;
        number_in("delivery.max_hops", self.max_hops, 1, MAX_HOPS)?;
        let relay_keys =
            self.relayhost_cafile.is_some() || self.relayhost_user.is_some() || self.relayhost_password_file.is_some();
        if relayhost.is_none() && relay_keys {
            return bad("delivery.relayhost_cafile/_user/_password_file need delivery.relayhost");
        }
        if self.relayhost_user.is_some() != self.relayhost_password_file.is_some() {
            return bad("delivery.relayhost_user and delivery.relayhost_password_file go together");
        }
        if self.relayhost_user.is_some() && self.relayhost_tls == RelayhostTls::None {
            // The password would cross the network in clear.
            return bad("delivery.relayhost_user needs relayhost_tls = \"starttls\" or \"tls\"");
        }
        if self.relayhost_cafile.is_some() && self.relayhost_tls == RelayhostTls::None {
            return bad("delivery.relayhost_cafile needs relayhost_tls = \"starttls\" or \"tls\"");
        }
        Ok(())
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            relay_networks: Vec::new(),
            port: 25,
            tls: TlsPolicy::Opportunistic,
            relayhost: None,
            relayhost_tls: RelayhostTls::Starttls,
            relayhost_cafile: None,
            relayhost_user: None,
            relayhost_password_file: None,
            min_backoff: Duration::from_secs(5 * 60),
            max_backoff: Duration::from_secs(60 * 60),
            max_queue_lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_warning: None,
            max_connections_per_destination: 20,
            max_connections: 100,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }
}

/// Default `max_hops`: RFC 5321 §6.3 suggests a loop limit of at least 100 Received headers.
pub const DEFAULT_MAX_HOPS: usize = 100;

/// `[dns]`: every DNS lookup mailroom makes (MX and addresses for delivery, the null-MX check at RCPT).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Resolvers to ask, as `"IP:PORT"`; empty (the default): the system's (/etc/resolv.conf).
    pub servers: Vec<SocketAddr>,
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
            user: None,
            group: None,
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
        if self.dns.servers.len() > ranges::MAX_DNS_SERVERS {
            return bad(format!("dns.servers: more than {} servers", ranges::MAX_DNS_SERVERS));
        }
        self.delivery.validate()?;
        self.http.validate().map_err(ConfigError::Invalid)?;
        self.vacation.validate().map_err(ConfigError::Invalid)?;
        self.routing.validate().map_err(ConfigError::Invalid)?;
        self.inbound.validate().map_err(ConfigError::Invalid)?;
        crate::config_store::validate(self.server.user.as_deref(), self.server.group.as_deref(), &self.store)
            .map_err(ConfigError::Invalid)?;
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

    /// The whole configuration as TOML that [`Config::load`] reads back to the same settings (durations
    /// written as `30s`, host names of listeners as the addresses they resolved to). Generic over the
    /// sections: every section derives `Serialize`, so a new one prints without code here.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Invalid(format!("cannot print the configuration: {e}")))
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
    /// Shortest `[delivery] min_backoff`, `max_queue_lifetime` and `delay_warning`: a second (tests use
    /// short ones); retrying faster would hammer a remote server that just said "try later".
    pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
    /// Longest `min_backoff`/`max_backoff`: a day between attempts already outlasts most outages.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
    /// Longest `max_queue_lifetime` (30 days): RFC 5321 §4.5.4.1 asks for 4-5 days; beyond a month the
    /// sender's answer is long overdue.
    pub const MAX_QUEUE_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
    /// Largest `[delivery] max_connections` (and so `max_connections_per_destination`): each is a socket
    /// and a task.
    pub const MAX_OUTBOUND_CONNECTIONS: usize = 100_000;
    /// Largest `max_hops`: far past any real path (RFC 5321 §6.3 suggests 100); a header section with
    /// more Received lines is a loop.
    pub const MAX_HOPS: usize = 10_000;
    /// Most `[dns] servers`: resolvers are tried in turn; more than a handful only adds timeouts.
    pub const MAX_DNS_SERVERS: usize = 16;

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

/// Parses durations written like `30s`, `5m`, `1h`, `5d`, `250ms`, `1.5s` or a bare number of seconds (the one
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
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m, h or d)")),
    };
    if !(secs.is_finite() && (0.0..1e9).contains(&secs)) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest unit that is exact (`5d`, `1h`,
/// `30s`, `250ms`), so that `check-config`'s output reads back to the same value.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", d.as_secs_f64());
    }
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// `#[serde(serialize_with = "crate::config::write_duration")]` for a section's `Duration` field (read
/// with `deserialize_with = "crate::config::duration"`): written as [`format_duration`] does.
pub fn write_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// `"off"` for None, as [`optional_duration`] reads it.
pub fn write_optional_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.map_or_else(|| "off".to_owned(), format_duration))
}

/// A listener address, `IP:PORT` (`[::1]:25` for IPv6) or `HOST:PORT`: a host name is resolved (the
/// hosts file, then DNS) and stands for every address it has, duplicates removed, so `localhost:2525`
/// listens where local clients connect. Errors name the address.
pub fn resolve_listen(text: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let bad = |why: String| ConfigError::Invalid(format!("listener address {text:?}: {why}"));
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT or IP:PORT".into()))?;
    port.parse::<u16>().map_err(|_| bad(format!("{port:?} is not a port number")))?;
    if host.is_empty() || mailroom_store::users::validate_domain(host).is_err() {
        return Err(bad("expected HOST:PORT or IP:PORT".into()));
    }
    let mut found: Vec<SocketAddr> = Vec::new();
    for addr in text.to_socket_addrs().map_err(|e| bad(format!("cannot resolve {host}: {e}")))? {
        if !found.contains(&addr) {
            found.push(addr);
        }
    }
    if found.is_empty() {
        return Err(bad(format!("{host} has no address")));
    }
    Ok(found)
}

fn listen_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let mut out = Vec::new();
    for text in Vec::<String>::deserialize(d)? {
        out.extend(resolve_listen(&text).map_err(serde::de::Error::custom)?);
    }
    Ok(out)
}

/// Reads a duration field: a number of seconds or a string [`parse_duration`] takes.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

/// A duration that may be off: absent, `"off"` or 0 is None.
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    let v = match Raw::deserialize(d)? {
        Raw::Text(s) if s.trim() == "off" => return Ok(None),
        Raw::Secs(n) => Duration::from_secs(n),
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom)?,
    };
    Ok(Some(v).filter(|v| !v.is_zero()))
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
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(5 * 86400));
    }

    #[test]
    fn durations_are_written_as_they_are_read() {
        for (d, text) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5 * 86400), "5d"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0ms"),
            (Duration::from_secs(90), "90s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
        }
        let odd = Duration::from_nanos(1_500_000_001);
        assert_eq!(parse_duration(&format_duration(odd)).unwrap(), odd);
    }

    #[test]
    fn listener_host_names_resolve_and_bad_ones_are_named() {
        assert_eq!(resolve_listen("127.0.0.1:25").unwrap(), vec!["127.0.0.1:25".parse::<SocketAddr>().unwrap()]);
        assert_eq!(resolve_listen("[::1]:25").unwrap(), vec!["[::1]:25".parse::<SocketAddr>().unwrap()]);
        let local = resolve_listen("localhost:2525").unwrap();
        assert!(!local.is_empty() && local.iter().all(|a| a.ip().is_loopback() && a.port() == 2525), "{local:?}");
        for bad in ["localhost", "localhost:x", ":25", "bad host:25", "localhost:70000"] {
            assert!(resolve_listen(bad).unwrap_err().to_string().contains(bad), "{bad}");
        }
        let cfg: Config = toml::from_str("[server]\nlisten = [\"localhost:2525\"]\n").unwrap();
        assert!(cfg.server.listen.iter().all(|a| a.port() == 2525));
        assert!(toml::from_str::<Config>("[server]\nlisten = [\"no-such-host.invalid:25\"]\n").is_err());
    }

    #[test]
    fn printed_config_reads_back_the_same() {
        let cfg: Config = toml::from_str(
            "[server]\nshutdown_grace = \"45s\"\n[limits]\ncommand_timeout = \"2m\"\n[delivery]\n\
             delay_warning = \"4h\"\ntls = \"required\"\n[client]\nserver = \"x:25\"\n",
        )
        .unwrap();
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("shutdown_grace = \"45s\"") && text.contains("delay_warning = \"4h\""), "{text}");
        let again: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.to_toml().unwrap(), text);
        let off: Config = toml::from_str("").unwrap();
        assert!(off.to_toml().unwrap().contains("delay_warning = \"off\""));
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

    #[test]
    fn delivery_and_dns_defaults() {
        let cfg: Config = toml::from_str("").unwrap();
        let d = &cfg.delivery;
        assert!(d.relay_networks.is_empty(), "nobody relays without AUTH by default");
        assert_eq!(d.port, 25);
        assert_eq!(d.tls, TlsPolicy::Opportunistic);
        assert_eq!(d.relayhost().unwrap(), None);
        assert_eq!(d.min_backoff, Duration::from_secs(300));
        assert_eq!(d.max_backoff, Duration::from_secs(3600));
        assert_eq!(d.max_queue_lifetime, Duration::from_secs(5 * 86400));
        assert_eq!(d.delay_warning, None);
        assert_eq!((d.max_connections_per_destination, d.max_connections, d.max_hops), (20, 100, 100));
        assert!(cfg.dns.servers.is_empty());
    }

    #[test]
    fn delivery_and_dns_keys_are_read() {
        let cfg: Config = toml::from_str(
            "[delivery]\nrelay_networks = [\"127.0.0.0/8\", \"::1\"]\nport = 2526\ntls = \"required\"\n\
             relayhost = \"[smart.example]:587\"\nrelayhost_tls = \"tls\"\nrelayhost_user = \"u\"\n\
             relayhost_password_file = \"/p\"\nmin_backoff = \"1s\"\nmax_backoff = \"2s\"\n\
             max_queue_lifetime = \"1d\"\ndelay_warning = \"4h\"\nmax_connections_per_destination = 2\n\
             max_connections = 3\nmax_hops = 30\n[dns]\nservers = [\"127.0.0.1:5353\"]\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let d = &cfg.delivery;
        assert_eq!(d.relay_networks().unwrap().len(), 2);
        assert_eq!((d.port, d.tls, d.relayhost_tls), (2526, TlsPolicy::Required, RelayhostTls::Tls));
        let rh = d.relayhost().unwrap().unwrap();
        assert_eq!(rh, Relayhost { host: "smart.example".into(), port: 587, mx_lookup: false });
        assert_eq!(d.max_queue_lifetime, Duration::from_secs(86400));
        assert_eq!(d.delay_warning, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(cfg.dns.servers, vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        let off: Config = toml::from_str("[delivery]\ndelay_warning = \"off\"\n").unwrap();
        assert_eq!(off.delivery.delay_warning, None);
    }

    #[test]
    fn relayhost_forms() {
        let parse = |s: &str| Delivery { relayhost: Some(s.into()), ..Delivery::default() }.relayhost();
        let rh = |host: &str, port, mx_lookup| Some(Relayhost { host: host.into(), port, mx_lookup });
        assert_eq!(parse("smart.example").unwrap(), rh("smart.example", 25, true));
        assert_eq!(parse("smart.example:2525").unwrap(), rh("smart.example", 2525, true));
        assert_eq!(parse("[smart.example]").unwrap(), rh("smart.example", 25, false));
        assert_eq!(parse("[127.0.0.1]:587").unwrap(), rh("127.0.0.1", 587, false));
        assert_eq!(parse("[::1]:587").unwrap(), rh("::1", 587, false));
        for bad in ["", "[smart.example", "smart.example:0", "smart.example:x", "[a]b", "bad host:25", "[h]:99999"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("delivery.relayhost"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn delivery_values_out_of_range_or_inconsistent_are_refused_by_name() {
        for (text, key) in [
            ("[delivery]\nport = 0\n", "delivery.port"),
            ("[delivery]\nmin_backoff = \"0s\"\n", "delivery.min_backoff"),
            ("[delivery]\nmin_backoff = \"2h\"\nmax_backoff = \"1h\"\n", "delivery.max_backoff"),
            ("[delivery]\nmax_queue_lifetime = \"400d\"\n", "delivery.max_queue_lifetime"),
            ("[delivery]\nmax_queue_lifetime = \"1h\"\ndelay_warning = \"2h\"\n", "delivery.delay_warning"),
            ("[delivery]\nmax_connections = 0\n", "delivery.max_connections"),
            ("[delivery]\nmax_connections_per_destination = 101\n", "delivery.max_connections_per_destination"),
            ("[delivery]\nmax_hops = 0\n", "delivery.max_hops"),
            ("[delivery]\nrelay_networks = [\"10.0.0.0/33\"]\n", "delivery.relay_networks"),
            ("[delivery]\nrelayhost_user = \"u\"\n", "delivery.relayhost"),
            ("[delivery]\nrelayhost = \"[h.example]\"\nrelayhost_user = \"u\"\n", "relayhost_password_file"),
            (
                "[delivery]\nrelayhost = \"[h.example]\"\nrelayhost_tls = \"none\"\nrelayhost_user = \"u\"\nrelayhost_password_file = \"/p\"\n",
                "relayhost_tls",
            ),
        ] {
            let cfg: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} -> {e}");
        }
        let many = format!("[dns]\nservers = [{}]\n", vec!["\"127.0.0.1:53\""; 17].join(","));
        let e = toml::from_str::<Config>(&many).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("dns.servers"), "{e}");
    }

    #[test]
    fn unknown_or_malformed_delivery_and_dns_keys_are_errors() {
        for text in [
            "[delivery]\nrelay_network = []\n",
            "[delivery]\ntls = \"sometimes\"\n",
            "[delivery]\nrelayhost_tls = \"ssl\"\n",
            "[delivery]\nport = 70000\n",
            "[delivery]\nmax_backoff = \"soon\"\n",
            "[dns]\nserver = []\n",
            "[dns]\nservers = [\"127.0.0.1\"]\n",
        ] {
            assert!(toml::from_str::<Config>(text).is_err(), "{text:?} accepted");
        }
    }
}
