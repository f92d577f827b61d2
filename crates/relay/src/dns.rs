//! DNS for delivery: where mail for a domain goes (RFC 5321 §5.1) and the addresses of a host, through
//! hickory-resolver, with the system's resolvers (`/etc/resolv.conf`) or the `[dns] servers` given.
//!
//! MX hosts are sorted by preference, hosts of equal preference shuffled (§5.1: "randomize them to spread
//! the load"); a domain that exists without MX records is its own implicit MX (preference 0); a domain that
//! does not exist is a permanent failure (5.1.2); a resolver that fails or does not answer is a temporary
//! one; a null MX (RFC 7505: one MX record with the root as exchange) says the domain takes no mail (5.1.10).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// How long one DNS query waits for an answer before it is sent again (or the next server is asked).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a query is sent before the lookup counts as failed (temporarily).
pub const QUERY_ATTEMPTS: usize = 2;
/// The whole null-MX check at RCPT time: the client is waiting, so it is short; on timeout the RCPT is
/// accepted and the relay decides later.
pub const NULL_MX_TIMEOUT: Duration = Duration::from_secs(3);
/// After a null-MX check at RCPT time failed (no answer, SERVFAIL), the same domain is not asked again for
/// this long: a resolver that does not answer must cost one client the wait, not every RCPT of a burst
/// (RFC 2308 §7.1 lets a resolver cache server failures for up to five minutes).
pub const NULL_MX_FAILURE_CACHE: Duration = Duration::from_secs(30);
/// Domains remembered by that failure cache at most (a bound against a flood of distinct domains).
pub const NULL_MX_FAILURE_CACHE_SIZE: usize = 4096;
/// At most this many MX hosts are tried per domain (Postfix's smtp_mx_address_limit is 5 addresses; a
/// bound keeps a hostile zone from making one delivery try hundreds of hosts).
pub const MAX_MX_HOSTS: usize = 10;

/// Why a destination cannot be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN: the domain does not exist (RFC 3463 5.1.2, bad destination system address).
    #[error("domain {0} does not exist")]
    NoSuchDomain(String),
    /// RFC 7505 null MX: the domain accepts no mail (5.1.10).
    #[error("domain {0} accepts no mail (null MX)")]
    NullMx(String),
    /// SERVFAIL, a timeout, no resolver reachable: try again later (4.4.3).
    #[error("DNS lookup for {name} failed: {reason}")]
    Temporary { name: String, reason: String },
    /// The name cannot be looked up at all (not a valid domain name).
    #[error("{0} is not a valid domain name")]
    BadName(String),
    /// The resolver could not be set up (unreadable resolv.conf).
    #[error("DNS resolver setup: {0}")]
    Setup(String),
}

impl DnsError {
    /// The RFC 3463 status code of a delivery that failed this way.
    pub fn status(&self) -> &'static str {
        match self {
            DnsError::NoSuchDomain(_) | DnsError::BadName(_) => "5.1.2",
            DnsError::NullMx(_) => "5.1.10",
            DnsError::Temporary { .. } | DnsError::Setup(_) => "4.4.3",
        }
    }

    /// True when trying again will not help.
    pub fn is_permanent(&self) -> bool {
        self.status().starts_with('5')
    }
}

/// One host that takes mail for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host name, without the final dot.
    pub name: String,
    pub preference: u16,
    /// True when the domain has no MX record and this is the domain itself (RFC 5321 §5.1 implicit MX).
    pub implicit: bool,
}

/// The resolver every lookup of the relay goes through. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    /// Domains whose null-MX check failed recently, and when (see [`NULL_MX_FAILURE_CACHE`]).
    null_mx_failures: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `servers` (UDP, then TCP for truncated answers), or the system's resolvers when
    /// the list is empty.
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| DnsError::Setup(e.to_string()))?
        } else {
            let mut config = ResolverConfig::default();
            for s in servers {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                config.add_name_server(NameServerConfig::new(s.ip(), true, vec![udp, tcp]));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_ATTEMPTS;
        let inner = builder.build().map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver { inner, null_mx_failures: Arc::default() })
    }

    /// The hosts to try for `domain`, in order (RFC 5321 §5.1). `domain` may be a U-label name: it is
    /// looked up as its A-label.
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<Host>, DnsError> {
        let name = fqdn(domain)?;
        match self.inner.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let records = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_utf8())),
                        _ => None,
                    })
                    .collect();
                order_mx(domain, records)
            }
            Err(e) if e.is_nx_domain() => Err(DnsError::NoSuchDomain(domain.to_string())),
            // The name exists with other records but no MX: it is its own mail host.
            Err(e) if e.is_no_records_found() => {
                Ok(vec![Host { name: trim_dot(&name).to_string(), preference: 0, implicit: true }])
            }
            Err(e) => Err(temporary(domain, &e)),
        }
    }

    /// The IPv6 and IPv4 addresses of `host`, IPv6 first. Empty when the host has none; `Err` only for a
    /// lookup that failed and may work later, or a host that does not exist.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = fqdn(host)?;
        let (v4, v6) = tokio::join!(self.inner.ipv4_lookup(name.as_str()), self.inner.ipv6_lookup(name.as_str()));
        let mut out = Vec::new();
        let mut failure = None;
        for result in [v6, v4] {
            match result {
                Ok(lookup) => out.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) if e.is_nx_domain() => failure = Some(DnsError::NoSuchDomain(host.to_string())),
                Err(e) if e.is_no_records_found() => {}
                Err(e) => failure = Some(temporary(host, &e)),
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// RFC 7505: does `domain` publish a null MX? False on any failure or after [`NULL_MX_TIMEOUT`]: the
    /// caller (RCPT) accepts, and the relay finds out at delivery.
    pub async fn null_mx(&self, domain: &str) -> bool {
        let key = domain.to_ascii_lowercase();
        if self.recently_failed(&key) {
            return false;
        }
        match tokio::time::timeout(NULL_MX_TIMEOUT, self.mx_hosts(domain)).await {
            Ok(Err(DnsError::NullMx(_))) => true,
            Ok(Err(DnsError::Temporary { .. })) | Err(_) => {
                self.remember_failure(key);
                false
            }
            _ => false,
        }
    }

    fn recently_failed(&self, domain: &str) -> bool {
        let failures = self.null_mx_failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.get(domain).is_some_and(|at| at.elapsed() < NULL_MX_FAILURE_CACHE)
    }

    fn remember_failure(&self, domain: String) {
        let mut failures = self.null_mx_failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= NULL_MX_FAILURE_CACHE_SIZE {
            failures.retain(|_, at| at.elapsed() < NULL_MX_FAILURE_CACHE);
            if failures.len() >= NULL_MX_FAILURE_CACHE_SIZE {
                failures.clear();
            }
        }
        failures.insert(domain, Instant::now());
    }
}

/// The MX records of `domain` as hosts to try: RFC 7505 null MX recognised, sorted by preference, equal
/// preferences shuffled, at most [`MAX_MX_HOSTS`].
pub fn order_mx(domain: &str, records: Vec<(u16, String)>) -> Result<Vec<Host>, DnsError> {
    let is_root = |name: &str| name.is_empty() || name == ".";
    // RFC 7505 §3: a null MX is the only MX record; one mixed with real ones is ignored (§4.3 leaves it
    // to the client; the real ones are more useful than a contradiction).
    if records.len() == 1 && is_root(&records[0].1) {
        return Err(DnsError::NullMx(domain.to_string()));
    }
    let mut hosts: Vec<Host> = records
        .into_iter()
        .filter(|(_, name)| !is_root(name))
        .map(|(preference, name)| Host { name: trim_dot(&name).to_string(), preference, implicit: false })
        .collect();
    if hosts.is_empty() {
        return Err(DnsError::NullMx(domain.to_string()));
    }
    fastrand::shuffle(&mut hosts);
    // A stable sort keeps the shuffled order among equal preferences.
    hosts.sort_by_key(|h| h.preference);
    hosts.dedup_by(|a, b| a.name.eq_ignore_ascii_case(&b.name));
    hosts.truncate(MAX_MX_HOSTS);
    Ok(hosts)
}

fn trim_dot(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// The A-label form of `domain`, fully qualified (a final dot: no search list applies to mail domains).
fn fqdn(domain: &str) -> Result<String, DnsError> {
    let ascii = to_a_label(domain).ok_or_else(|| DnsError::BadName(domain.to_string()))?;
    Ok(format!("{}.", trim_dot(&ascii)))
}

/// The A-label (punycode) form of a domain name (RFC 5890), lower-cased; `None` when it is not a valid IDN.
pub fn to_a_label(domain: &str) -> Option<String> {
    idna::domain_to_ascii(domain).ok().filter(|s| !s.is_empty())
}

fn temporary(name: &str, e: &NetError) -> DnsError {
    DnsError::Temporary { name: name.to_string(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[Host]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn sorted_by_preference() {
        let hosts = order_mx("d", vec![(20, "b.d.".into()), (10, "a.d.".into()), (30, "c.d.".into())]).unwrap();
        assert_eq!(names(&hosts), ["a.d", "b.d", "c.d"]);
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let records: Vec<(u16, String)> = (0..6).map(|i| (10, format!("h{i}.d."))).collect();
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let hosts = order_mx("d", records.clone()).unwrap();
            assert_eq!(hosts.len(), 6);
            firsts.insert(hosts[0].name.clone());
        }
        assert!(firsts.len() > 1, "equal preferences always in one order: {firsts:?}");
    }

    #[test]
    fn null_mx() {
        assert_eq!(order_mx("d", vec![(0, ".".into())]), Err(DnsError::NullMx("d".into())));
        assert_eq!(order_mx("d", vec![(0, "".into())]).unwrap_err().status(), "5.1.10");
        // Mixed with a real one: the real one is used.
        assert_eq!(names(&order_mx("d", vec![(0, ".".into()), (10, "mx.d.".into())]).unwrap()), ["mx.d"]);
    }

    #[test]
    fn a_labels() {
        assert_eq!(to_a_label("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(to_a_label("Example.ORG").unwrap(), "example.org");
        assert_eq!(fqdn("example.org.").unwrap(), "example.org.");
    }
}
