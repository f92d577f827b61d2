//! Finding a connection for a destination: the MX hosts in order and each address of a host (RFC 5321
//! §5.1), the next one on a connection failure, a 4xx greeting or a TLS failure; opportunistic STARTTLS
//! retried once in plain text on the same address (RFC 7435 §4, as Postfix does); `tls = "required"`
//! never in plain text; the smarthost with its own TLS and AUTH settings.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mailroom_client::{Client, Tls};

use crate::deliver::Conn;
use crate::dns::{DnsError, Host, Resolver};
use crate::settings::{RelayhostTls, Settings, TlsPolicy};

/// Where the mail of a group goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A mail domain: its MX hosts (lower-cased; may be a U-label name).
    Domain(String),
    /// An address literal (`user@[192.0.2.1]`): that address, no DNS.
    Literal(IpAddr),
    /// `[delivery] relayhost`: everything goes there.
    Relayhost,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Domain(d) => f.write_str(d),
            Destination::Literal(ip) => write!(f, "[{ip}]"),
            Destination::Relayhost => f.write_str("relayhost"),
        }
    }
}

/// Why no connection could be had: the result every recipient of the group gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoConnection {
    pub permanent: bool,
    pub status: String,
    pub reply: String,
    /// The last host tried, `host[ip]:port`, for the log line.
    pub relay: Option<String>,
}

impl NoConnection {
    fn temporary(status: &str, reply: String, relay: Option<String>) -> NoConnection {
        NoConnection { permanent: false, status: status.into(), reply, relay }
    }
}

impl From<DnsError> for NoConnection {
    fn from(e: DnsError) -> NoConnection {
        NoConnection { permanent: e.is_permanent(), status: e.status().into(), reply: e.to_string(), relay: None }
    }
}

/// Opens connections. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    pub settings: Arc<Settings>,
    pub resolver: Resolver,
}

impl Connector {
    /// A connection ready for mail to `dest`, or why there is none.
    pub async fn connect(&self, dest: &Destination) -> Result<Conn, NoConnection> {
        let (hosts, port) = self.hosts(dest).await?;
        let mut last: Option<NoConnection> = None;
        let mut any_address = false;
        for host in &hosts {
            let addrs = match host_addresses(&self.resolver, host).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(NoConnection::temporary("4.4.3", e.to_string(), None));
                    continue;
                }
            };
            any_address |= !addrs.is_empty();
            for ip in addrs {
                let addr = SocketAddr::new(ip, port);
                match self.connect_addr(dest, &host.name, addr).await {
                    Ok(client) => return Ok(Conn { client, host: host.name.clone(), addr, uses: 0 }),
                    Err(e) => {
                        let relay = format!("{}[{}]:{}", host.name, ip, port);
                        tracing::info!(%dest, relay, error = %e, "connection failed; trying the next address");
                        last = Some(NoConnection::temporary("4.4.1", format!("{relay}: {e}"), Some(relay)));
                    }
                }
            }
        }
        if !any_address && hosts.len() == 1 && hosts[0].implicit && last.is_none() {
            // RFC 5321 §5.1: no MX and no address: the domain cannot take mail.
            return Err(NoConnection {
                permanent: true,
                status: "5.1.2".into(),
                reply: format!("{dest}: no MX record and no address for the domain"),
                relay: None,
            });
        }
        Err(last.unwrap_or_else(|| {
            NoConnection::temporary("4.4.4", format!("{dest}: no address for any of its mail hosts"), None)
        }))
    }

    /// The hosts to try and the port.
    async fn hosts(&self, dest: &Destination) -> Result<(Vec<Host>, u16), NoConnection> {
        let port = self.settings.port;
        match dest {
            Destination::Domain(d) => Ok((self.resolver.mx_hosts(d).await?, port)),
            Destination::Literal(ip) => Ok((vec![Host { name: ip.to_string(), preference: 0, implicit: false }], port)),
            Destination::Relayhost => {
                let Some(r) = &self.settings.relayhost else {
                    return Err(NoConnection::temporary("4.3.5", "no relayhost configured".into(), None));
                };
                let hosts = if r.mx_lookup {
                    self.resolver.mx_hosts(&r.host).await?
                } else {
                    vec![Host { name: r.host.clone(), preference: 0, implicit: false }]
                };
                Ok((hosts, r.port))
            }
        }
    }

    /// One address: the TLS the destination calls for; opportunistic STARTTLS that fails is tried once
    /// more in plain text.
    async fn connect_addr(
        &self,
        dest: &Destination,
        host: &str,
        addr: SocketAddr,
    ) -> Result<Client, mailroom_client::Error> {
        let builder = self.builder(dest, host, addr)?;
        let tls = builder_tls(&self.settings, dest);
        match builder.clone().tls(tls).connect().await {
            Err(e) if e.is_opportunistic_tls_failure() => {
                tracing::info!(host, %addr, error = %e, "STARTTLS failed; retrying once without TLS (RFC 7435)");
                builder.tls(Tls::None).connect().await
            }
            other => other,
        }
    }

    fn builder(
        &self,
        dest: &Destination,
        host: &str,
        addr: SocketAddr,
    ) -> Result<mailroom_client::ClientBuilder, mailroom_client::Error> {
        let s = &self.settings;
        // The host name (not the address) is the server: the name TLS checks, errors and logs show.
        let server = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{host}]:{}", addr.port()),
            _ => format!("{host}:{}", addr.port()),
        };
        let mut b = Client::builder(server)
            .address(addr)
            .helo_name(s.hostname.clone())
            .connect_timeout(s.connect_timeout)
            .command_timeout(s.command_timeout);
        if *dest == Destination::Relayhost {
            if let Some(ca) = &s.relayhost_cafile {
                b = b.cafile(ca);
            }
            if let (Some(user), Some(file)) = (&s.relayhost_user, &s.relayhost_password_file) {
                let file = file.clone();
                let source: mailroom_client::PasswordSource = Arc::new(move || {
                    // The first line is the password (as `check-config` checks it).
                    std::fs::read_to_string(&file)
                        .map(|p| p.lines().next().unwrap_or("").to_string())
                        .map_err(|e| format!("{}: {e}", file.display()))
                });
                // Plaintext AUTH only ever to a smarthost on a loopback address (the client checks the
                // peer); anywhere else AUTH needs TLS.
                b = b.credentials_with(user.clone(), source).allow_plaintext_auth(true);
            }
        } else if s.tls == TlsPolicy::Required {
            // "Required" means encrypted, as Postfix's `encrypt` level: MX certificates are not checked
            // (there is no name to check them against without DANE or MTA-STS).
            b = b.tls_config(mailroom_client::tls::opportunistic_config()?);
        }
        Ok(b)
    }
}

/// The TLS mode of a connection to `dest`.
fn builder_tls(s: &Settings, dest: &Destination) -> Tls {
    match (dest, s.tls, s.relayhost_tls) {
        (Destination::Relayhost, _, RelayhostTls::None) => Tls::None,
        (Destination::Relayhost, _, RelayhostTls::StartTls) => Tls::StartTls,
        (Destination::Relayhost, _, RelayhostTls::Tls) => Tls::Implicit,
        (_, TlsPolicy::Opportunistic, _) => Tls::Opportunistic,
        (_, TlsPolicy::Required, _) => Tls::StartTls,
    }
}

async fn host_addresses(resolver: &Resolver, host: &Host) -> Result<Vec<IpAddr>, DnsError> {
    if let Ok(ip) = host.name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    resolver.addresses(&host.name).await
}

/// The destination of a recipient address, or `None` for one that cannot be routed (`<postmaster>`
/// without a domain never reaches the relay).
pub fn destination_of(settings: &Settings, to: &mailroom_proto::ForwardPath) -> Option<Destination> {
    if settings.relayhost.is_some() {
        return Some(Destination::Relayhost);
    }
    let mailroom_proto::ForwardPath::Mailbox(a) = to else { return None };
    match a.domain() {
        mailroom_proto::Domain::Name(d) => Some(Destination::Domain(d.to_lowercase())),
        mailroom_proto::Domain::Literal(l) => literal_ip(l).map(Destination::Literal),
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn literal_ip(l: &str) -> Option<IpAddr> {
    let inner = l.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => inner[5..].parse().ok(),
        _ => inner.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(literal_ip("[192.0.2.1]"), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(literal_ip("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("[x]"), None);
    }
}
