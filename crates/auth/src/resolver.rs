//! DNS for the checks of inbound mail: a `mail_auth::MessageAuthenticator` asking mailroom's resolvers
//! (`[dns] servers`, or the system's), the caches its lookups go through, and the time budget a message's
//! lookups share.
//!
//! - Answers are kept for their TTL in bounded caches ([`MAX_CACHE_ENTRIES`] per record type).
//! - A TXT lookup that failed (SERVFAIL, REFUSED, no answer in time) is remembered for
//!   [`FAILURE_CACHE_TTL`]: the next check asking for the same name gets `temperror` at once instead of
//!   waiting again, so a resolver that does not answer costs the first message its budget, not every one.
//! - Every check of one message runs under one [`Budget`] (`[inbound] dns_budget`).
//! - Per check, the lookups are journalled ([`Lookups`]): what was asked and what came back, from which
//!   the SPF void-lookup limit (RFC 7208 §4.6.4) is counted, which mail-auth 0.13 does not do.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{DnsError, MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt, MX};

/// How long one DNS query waits before it is sent again (or the next server is asked). Shorter than the
/// relay's: a client is waiting, and the message's [`Budget`] caps the whole anyway.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a query is sent before the lookup counts as failed.
pub const QUERY_ATTEMPTS: usize = 2;
/// The default time all lookups of one message may take together (`[inbound] dns_budget`).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// How long a failed TXT lookup is answered from the cache as a failure (RFC 2308 §7.1 allows caching
/// server failures for up to five minutes; short, so a resolver that comes back is used soon).
pub const FAILURE_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a TXT name that does not exist (NXDOMAIN) or has no TXT record is remembered as such
/// (RFC 2308 §5 negative caching; a fixed, short time, since the SOA's negative TTL is not handed over):
/// a sender without SPF or DMARC records must not cost every one of its messages the same lookups.
pub const VOID_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries per cache (one cache per record type, plus the failures): a bound against a flood of distinct
/// names. When full, expired entries go first, then the cache is emptied.
pub const MAX_CACHE_ENTRIES: usize = 8192;
/// Lookups journalled per check; SPF makes at most 10 DNS-querying terms plus their address lookups.
const MAX_JOURNAL: usize = 256;

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver setup: {0}")]
pub struct ResolverError(String);

/// A bounded map from a name to a value valid until an instant.
struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache { map: Mutex::new(HashMap::new()) }
    }

    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).filter(|(_, until)| *until > Instant::now()).map(|(v, _)| v.clone())
    }

    fn insert(&self, key: K, value: V, until: Instant) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_CACHE_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= MAX_CACHE_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, until));
    }
}

/// The caches every check shares.
struct Caches {
    txt: TtlCache<Box<str>, Txt>,
    mx: TtlCache<Box<str>, RecordSet<MX>>,
    ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
    /// TXT names whose lookup failed recently (by keyed hash: the cache trait hands over a borrowed name
    /// of unknown type), and until when that is remembered.
    failed_txt: TtlCache<u64, ()>,
    /// TXT names that came back void (NXDOMAIN, NODATA) recently, by the same keyed hash.
    void_txt: TtlCache<u64, ()>,
    hasher: RandomState,
}

/// The DNS side of the inbound checks. Share it (`Arc`) between sessions: the caches are its point.
pub struct Resolver {
    authenticator: MessageAuthenticator,
    caches: Caches,
    budget: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("budget", &self.budget).finish_non_exhaustive()
    }
}

impl Resolver {
    /// Asks `servers` (UDP, then TCP for truncated answers), or the system's resolvers
    /// (`/etc/resolv.conf`) when the list is empty, as the relay does; `budget` is the time all lookups of
    /// one message may take.
    pub fn new(servers: &[SocketAddr], budget: Duration) -> Result<Resolver, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| ResolverError(e.to_string()))?
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
        let inner = builder.build().map_err(|e| ResolverError(e.to_string()))?;
        let caches = Caches {
            txt: TtlCache::new(),
            mx: TtlCache::new(),
            ipv4: TtlCache::new(),
            ipv6: TtlCache::new(),
            ptr: TtlCache::new(),
            failed_txt: TtlCache::new(),
            void_txt: TtlCache::new(),
            hasher: RandomState::new(),
        };
        Ok(Resolver { authenticator: MessageAuthenticator(inner), caches, budget })
    }

    /// The authenticator (mail-auth's entry point) asking these resolvers.
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    /// A new budget for one message's lookups.
    pub fn budget(&self) -> Budget {
        Budget::new(self.budget)
    }

    /// A journal for one check's lookups through the shared caches.
    pub fn lookups(&self) -> Lookups<'_> {
        Lookups { caches: &self.caches, journal: Mutex::new(Vec::new()) }
    }
}

/// DMARC, the check whose failure refuses mail, always gets at least this share (1/N) of the budget: a
/// sender whose own SPF or DKIM key records answer slowly must not spend it all and so turn a forged From
/// into `temperror` (accepted under `temperror = "accept"`). A message's lookups may so take up to 4/3 of
/// the budget.
pub const POLICY_RESERVE_DIVISOR: u32 = 3;

/// The time left for one message's lookups: each check spends from it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    left: Duration,
    full: Duration,
}

impl Budget {
    /// A budget of `left`.
    pub fn new(left: Duration) -> Budget {
        Budget { left, full: left }
    }

    /// Before DMARC: tops what is left up to the reserve ([`POLICY_RESERVE_DIVISOR`]).
    pub fn reserve_for_policy(&mut self) {
        self.left = self.left.max(self.full / POLICY_RESERVE_DIVISOR);
    }

    /// Runs `f` in what is left of the budget and spends the time it took; None when the budget ran out
    /// first (a DNS timeout: `temperror`).
    pub async fn run<F: Future>(&mut self, f: F) -> Option<F::Output> {
        let start = Instant::now();
        let out = tokio::time::timeout(self.left, f).await.ok();
        self.left = self.left.saturating_sub(start.elapsed());
        out
    }

    /// What is left.
    pub fn left(&self) -> Duration {
        self.left
    }

    /// True when nothing is left: a check then answers `temperror` without asking, and remembers no
    /// failure (no name was really tried).
    pub fn is_spent(&self) -> bool {
        self.left.is_zero()
    }
}

/// One lookup a check made, as seen through the cache: asked (a miss) and whether an answer came back.
#[derive(Debug, Clone, Copy)]
struct Entry {
    is_txt: bool,
    key: u64,
    answered: bool,
    /// A void answered from [`VOID_CACHE_TTL`]'s cache (it still counts as a void lookup).
    cached: bool,
}

/// One check's view of the shared caches: journals every lookup that missed them and whether an answer
/// was stored afterwards. mail-auth stores every answer it got and nothing for NXDOMAIN, NODATA or a
/// failure, so a miss without an answer is a void lookup or a failure.
pub struct Lookups<'a> {
    caches: &'a Caches,
    journal: Mutex<Vec<Entry>>,
}

/// The caches of one record type for one check (what mail-auth's `Parameters` takes).
pub struct Tracked<'a, K, V> {
    lookups: &'a Lookups<'a>,
    cache: &'a TtlCache<K, V>,
    is_txt: bool,
}

/// mail-auth's `Parameters` with every cache a [`Tracked`] one.
pub type Params<'a, P> = Parameters<
    'a,
    P,
    Tracked<'a, Box<str>, Txt>,
    Tracked<'a, Box<str>, RecordSet<MX>>,
    Tracked<'a, Box<str>, RecordSet<Ipv4Addr>>,
    Tracked<'a, Box<str>, RecordSet<Ipv6Addr>>,
    Tracked<'a, IpAddr, RecordSet<Box<str>>>,
>;

/// The per-type caches of one check; build [`Params`] from them with [`Lookups::params`].
pub struct TrackedCaches<'a> {
    txt: Tracked<'a, Box<str>, Txt>,
    mx: Tracked<'a, Box<str>, RecordSet<MX>>,
    ipv4: Tracked<'a, Box<str>, RecordSet<Ipv4Addr>>,
    ipv6: Tracked<'a, Box<str>, RecordSet<Ipv6Addr>>,
    ptr: Tracked<'a, IpAddr, RecordSet<Box<str>>>,
}

impl<'a> Lookups<'a> {
    /// The caches to hand to mail-auth for this check.
    pub fn caches(&'a self) -> TrackedCaches<'a> {
        let c = self.caches;
        TrackedCaches {
            txt: Tracked { lookups: self, cache: &c.txt, is_txt: true },
            mx: Tracked { lookups: self, cache: &c.mx, is_txt: false },
            ipv4: Tracked { lookups: self, cache: &c.ipv4, is_txt: false },
            ipv6: Tracked { lookups: self, cache: &c.ipv6, is_txt: false },
            ptr: Tracked { lookups: self, cache: &c.ptr, is_txt: false },
        }
    }

    /// Lookups that got no answer: void lookups (NXDOMAIN, NODATA) or failures.
    pub fn unanswered(&self) -> usize {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|e| !e.answered).count()
    }

    /// The check failed for want of DNS (a temperror, or the budget ran out): the TXT name asked last
    /// without an answer is the one that failed; remember it for [`FAILURE_CACHE_TTL`].
    pub fn remember_failure(&self) {
        let journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = journal.iter().rev().find(|e| e.is_txt && !e.answered) {
            self.caches.failed_txt.insert(e.key, (), Instant::now() + FAILURE_CACHE_TTL);
        }
    }

    /// The check ended without a DNS failure: every TXT name it asked that got no answer was void;
    /// remember them for [`VOID_CACHE_TTL`].
    pub fn remember_voids(&self) {
        let journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let until = Instant::now() + VOID_CACHE_TTL;
        for e in journal.iter().filter(|e| e.is_txt && !e.answered && !e.cached) {
            self.caches.void_txt.insert(e.key, (), until);
        }
    }

    fn note_miss(&self, is_txt: bool, key: u64, cached: bool) {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        if journal.len() < MAX_JOURNAL {
            journal.push(Entry { is_txt, key, answered: false, cached });
        }
    }

    fn note_answer(&self, key: u64) {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = journal.iter_mut().rev().find(|e| e.key == key && !e.answered) {
            e.answered = true;
        }
    }
}

impl<'a> TrackedCaches<'a> {
    /// mail-auth's parameters for `p`, through these caches.
    pub fn params<P>(&'a self, p: P) -> Params<'a, P> {
        Parameters::new(p)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }

    /// The TXT cache alone (for mail-auth calls that take only it).
    pub fn txt(&self) -> &Tracked<'a, Box<str>, Txt> {
        &self.txt
    }
}

impl<K: Hash + Eq, V: Clone + 'static> ResolverCache<K, V> for Tracked<'_, K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.cache.get(name) {
            return Some(v);
        }
        let key = self.lookups.caches.hasher.hash_one(name);
        if self.is_txt && self.lookups.caches.failed_txt.get(&key).is_some() {
            // Answered from the failure cache: no lookup, so nothing to journal. A typed value is needed
            // here; only TXT has an error variant, which mail-auth turns into `temperror`.
            return cached_txt::<V>(DnsError::Resolver("recent failure (cached)".into()));
        }
        if self.is_txt && self.lookups.caches.void_txt.get(&key).is_some() {
            // A void lookup all the same (RFC 7208 §4.6.4 counts it): journalled, unanswered.
            self.lookups.note_miss(true, key, true);
            return cached_txt::<V>(DnsError::RecordNotFound(ResponseCode::NXDomain));
        }
        self.lookups.note_miss(self.is_txt, key, false);
        None
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.cache.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.lookups.note_answer(self.lookups.caches.hasher.hash_one(&key));
        self.cache.insert(key, value, valid_until);
    }
}

/// A cached failure or void as a value of the TXT cache's type: `Txt::Error`. For any other value type
/// (never asked: only TXT names enter these caches) nothing.
fn cached_txt<V: Clone + 'static>(error: DnsError) -> Option<V> {
    let value = Txt::Error(mail_auth::Error::Dns(error));
    (&value as &dyn std::any::Any).downcast_ref::<V>().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_times_out_at_once_and_dmarc_still_gets_its_reserve() {
        let mut b = Budget::new(Duration::from_millis(300));
        let slow = b.run(tokio::time::sleep(Duration::from_secs(5))).await;
        assert!(slow.is_none() && b.is_spent());
        let start = Instant::now();
        assert!(b.run(tokio::time::sleep(Duration::from_millis(50))).await.is_none());
        assert!(start.elapsed() < Duration::from_millis(40), "nothing left: no wait");
        b.reserve_for_policy();
        assert_eq!(b.left(), Duration::from_millis(100));
        assert!(b.run(tokio::time::sleep(Duration::from_millis(20))).await.is_some());
    }

    #[test]
    fn the_ttl_cache_expires_entries_and_stays_bounded() {
        let c: TtlCache<u64, u64> = TtlCache::new();
        let now = Instant::now();
        c.insert(1, 10, now + Duration::from_secs(60));
        c.insert(2, 20, now - Duration::from_secs(1));
        assert_eq!((c.get(&1), c.get(&2)), (Some(10), None));
        for k in 0..(MAX_CACHE_ENTRIES as u64 * 2) {
            c.insert(k + 100, k, now + Duration::from_secs(60));
        }
        assert!(c.map.lock().unwrap().len() <= MAX_CACHE_ENTRIES);
    }
}
