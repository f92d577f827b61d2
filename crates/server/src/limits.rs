//! Per-client-address limits: concurrent connections, connections per minute and messages per minute
//! (Postfix's smtpd_client_connection_count_limit, _connection_rate_limit and _message_rate_limit), with
//! trusted networks exempt.
//!
//! State is one small entry per address with live connections or unspent rate; the table is pruned when
//! it grows, so a flood of distinct addresses cannot grow it without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Entries kept before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

/// An address block like `192.0.2.0/24` or `::1/128` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max).ok_or(format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The limits, from `[limits]`; 0 turns a limit off.
#[derive(Debug, Clone, Default)]
pub struct IpLimits {
    pub max_connections_per_ip: usize,
    pub max_connection_rate_per_ip: u32,
    pub max_message_rate_per_ip: u32,
    pub trusted_networks: Vec<Cidr>,
}

/// A token bucket holding up to `per_minute` tokens, refilled evenly over a minute.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(per_minute), at: now }
    }
    fn refill(&mut self, per_minute: u32, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * f64::from(per_minute) / 60.0).min(f64::from(per_minute));
        self.at = now;
    }
    fn take(&mut self, per_minute: u32, now: Instant) -> bool {
        self.refill(per_minute, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
    fn is_full(&mut self, per_minute: u32, now: Instant) -> bool {
        self.refill(per_minute, now);
        self.tokens >= f64::from(per_minute)
    }
}

#[derive(Debug)]
struct Entry {
    connections: usize,
    connect_rate: Bucket,
    message_rate: Bucket,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyConnections,
    ConnectionRate,
}

impl Refused {
    /// The reason as a plain word for the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::TooManyConnections => "too-many-connections",
            Refused::ConnectionRate => "connection-rate",
        }
    }
}

pub struct PerIp {
    limits: IpLimits,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// Holds one connection's place; gives it back on drop.
pub struct ConnectionSlot {
    owner: Option<(Arc<PerIp>, IpAddr)>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.owner.take() {
            let mut t = per_ip.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = t.get_mut(&ip) {
                e.connections = e.connections.saturating_sub(1);
            }
        }
    }
}

impl PerIp {
    pub fn new(limits: IpLimits) -> Arc<PerIp> {
        Arc::new(PerIp { limits, table: Mutex::new(HashMap::new()) })
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.limits.trusted_networks.iter().any(|n| n.contains(ip))
    }

    fn is_off(&self) -> bool {
        let l = &self.limits;
        l.max_connections_per_ip == 0 && l.max_connection_rate_per_ip == 0 && l.max_message_rate_per_ip == 0
    }

    /// A new connection from `ip`: its slot, or why not.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnectionSlot, Refused> {
        if self.is_off() || self.is_trusted(ip) {
            return Ok(ConnectionSlot { owner: None });
        }
        let l = &self.limits;
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= PRUNE_AT {
            t.retain(|_, e| {
                e.connections > 0
                    || !e.connect_rate.is_full(l.max_connection_rate_per_ip, now)
                    || !e.message_rate.is_full(l.max_message_rate_per_ip, now)
            });
        }
        let e = t.entry(ip).or_insert_with(|| Entry {
            connections: 0,
            connect_rate: Bucket::full(l.max_connection_rate_per_ip, now),
            message_rate: Bucket::full(l.max_message_rate_per_ip, now),
        });
        if l.max_connections_per_ip > 0 && e.connections >= l.max_connections_per_ip {
            return Err(Refused::TooManyConnections);
        }
        if l.max_connection_rate_per_ip > 0 && !e.connect_rate.take(l.max_connection_rate_per_ip, now) {
            return Err(Refused::ConnectionRate);
        }
        e.connections += 1;
        Ok(ConnectionSlot { owner: Some((self.clone(), ip)) })
    }

    /// A new message (MAIL) from `ip`: false when it is over its rate.
    pub fn message(&self, ip: IpAddr, now: Instant) -> bool {
        let rate = self.limits.max_message_rate_per_ip;
        if rate == 0 || self.is_trusted(ip) {
            return true;
        }
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let e = t.entry(ip).or_insert_with(|| Entry {
            connections: 0,
            connect_rate: Bucket::full(self.limits.max_connection_rate_per_ip, now),
            message_rate: Bucket::full(rate, now),
        });
        e.message_rate.take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cidr() {
        let n: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(n.contains("192.0.2.77".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.0.2.5".parse().unwrap()), "v4-mapped v6");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()) && !one.contains("::2".parse().unwrap()));
        for bad in ["", "1.2.3.4/33", "x/8", "::1/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_count_and_trust() {
        let p = PerIp::new(IpLimits {
            max_connections_per_ip: 2,
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        });
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = p.connect(ip, now).unwrap();
        let _b = p.connect(ip, now).unwrap();
        assert_eq!(p.connect(ip, now).err(), Some(Refused::TooManyConnections));
        assert!(p.connect("192.0.2.2".parse().unwrap(), now).is_ok(), "other addresses are separate");
        drop(a);
        assert!(p.connect(ip, now).is_ok(), "a closed connection frees its place");
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        let held: Vec<_> = (0..10).map(|_| p.connect(trusted, now).unwrap()).collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn rates_refill_over_a_minute() {
        let p =
            PerIp::new(IpLimits { max_connection_rate_per_ip: 3, max_message_rate_per_ip: 2, ..Default::default() });
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..3 {
            drop(p.connect(ip, t0).unwrap());
        }
        assert_eq!(p.connect(ip, t0).err(), Some(Refused::ConnectionRate));
        assert!(p.connect(ip, t0 + Duration::from_secs(20)).is_ok(), "one token back after 20 s at 3/min");
        assert!(p.message(ip, t0) && p.message(ip, t0));
        assert!(!p.message(ip, t0));
        assert!(p.message(ip, t0 + Duration::from_secs(30)));
    }
}
